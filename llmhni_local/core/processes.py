"""Worker processes that do not outlive the process that started them.

A bench killed while its train stage runs parallel trainings (``pipeline.jobs``) would
otherwise leave the trainings running, their results kept by no one, and the machine busy.
"""

from __future__ import annotations

import ctypes
import os
import signal

_PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int) -> None:
    """A worker initializer: end this process when ``parent_pid`` ends (Linux:
    ``PR_SET_PDEATHSIG``), and at once if it has already ended (the worker started after the
    parent was killed, before it could ask). Elsewhere the worker outlives a killed parent."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent_pid:
        os._exit(1)
