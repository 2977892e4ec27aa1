"""Nothing outlives a stopped run: open backends are closed and engine processes ended.

A backend that holds an engine (vLLM starts an ``EngineCore`` process, and on several devices
``Worker`` processes under it) registers itself here when it is built (:func:`track`; the
base classes in ``engine/api.py`` do it). The command line installs
:func:`install_stop_handlers`: on SIGTERM or SIGINT it

1. notes every descendant process (a worker whose parent dies is re-parented and would be
   lost from the tree later),
2. closes every open backend (each ``close()`` in a helper thread, all of them within
   ``2 * grace_s`` seconds: a close stuck behind the interrupted code cannot hold the exit
   up),
3. raises ``SystemExit(128 + signal)`` (``KeyboardInterrupt`` for SIGINT) in the main thread,
   so ``finally`` blocks run as after any error (stores closed, run locks released, a Ray
   cluster this process started shut down),

and at exit ends the noted processes still alive, and any descendant left: SIGTERM, then
SIGKILL after ``grace_s`` seconds (vLLM's ``EngineCore`` only notes a SIGTERM that comes
while it loads the model and goes on loading), and a process that made a process group of
its own gets the signal to the whole group. A watchdog ends them and the process at once if
the unwinding takes longer than ``4 * grace_s``. A second signal does the same.

Python's default SIGTERM ends the interpreter without running any of this: an engine started
by the killed process was left running, minutes after.
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
import threading
import time
import weakref
from collections.abc import Iterable
from typing import Any

#: Open backends by id (weak: a backend nobody holds is no longer tracked).
_OPEN: weakref.WeakValueDictionary[int, Any] = weakref.WeakValueDictionary()
_LOCK = threading.Lock()

#: Processes spared when the descendants are ended: they exit by themselves once this process
#: has, and clean up after it (shared memory, semaphores) as they do.
_SPARED = ("multiprocessing.resource_tracker", "multiprocessing.forkserver")


def track(obj: Any) -> None:
    """Close ``obj`` (a backend) if the process is stopped while it is open."""
    with _LOCK:
        _OPEN[id(obj)] = obj


def untrack(obj: Any) -> None:
    with _LOCK:
        if _OPEN.get(id(obj)) is obj:
            del _OPEN[id(obj)]


def open_objects() -> list[Any]:
    """The tracked objects still open, oldest first."""
    with _LOCK:
        return [obj for obj in _OPEN.values() if obj is not None]  # in the order tracked


def close_open(timeout_s: float = 5.0) -> list[str]:
    """Close every tracked object, within ``timeout_s`` seconds in all; returns one line per
    close that failed or did not finish in time."""
    problems: list[str] = []
    objs = open_objects()
    if not objs:
        return problems

    def close_all() -> None:
        for obj in objs:
            try:
                obj.close()
            except Exception as exc:  # noqa: BLE001 - one failure must not keep the rest open
                problems.append(f"{type(obj).__name__}.close: {type(exc).__name__}: {exc}")
            untrack(obj)

    worker = threading.Thread(target=close_all, name="llmhni-close", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive():
        problems.append(f"closing {len(objs)} backend(s) took more than {timeout_s:g} s")
    return problems


# ---------------------------------------------------------------------------- processes
def _children_map() -> dict[int, list[int]]:
    """Parent pid -> child pids of every process on the machine, from ``/proc`` (Linux, where
    engines run; elsewhere nothing is known and nothing is ended)."""
    out: dict[int, list[int]] = {}
    if not os.path.isdir("/proc"):
        return out
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces and parentheses
        fields = stat[stat.rfind(b")") + 2:].split()
        if len(fields) > 1:
            out.setdefault(int(fields[1]), []).append(int(name))
    return out


def descendants(pid: int | None = None) -> list[int]:
    """Every process under ``pid`` (default: this process), parents before children."""
    root = os.getpid() if pid is None else pid
    children = _children_map()
    out: list[int] = []
    todo = list(children.get(root, []))
    while todo:
        p = todo.pop(0)
        if p not in out:
            out.append(p)
            todo += children.get(p, [])
    return out


def _alive(pid: int) -> bool:
    if os.path.isdir("/proc"):
        try:
            with open(f"/proc/{pid}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            return False
        return stat[stat.rfind(b")") + 2:][:1] not in (b"Z", b"X")  # a zombie has ended
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _signal(pid: int, sig: int) -> None:
    try:
        group = os.getpgid(pid)
    except OSError:
        group = None
    try:
        if group is not None and group == pid and group != os.getpgrp():
            os.killpg(group, sig)  # the process leads a group of its own: all of it
        else:
            os.kill(pid, sig)
    except OSError:
        pass


def end_processes(pids: Iterable[int], grace_s: float = 5.0) -> list[int]:
    """SIGTERM to each process of ``pids`` still alive (spared ones aside), SIGKILL to those
    alive ``grace_s`` seconds later; returns the pids that got SIGKILL."""
    me = os.getpid()
    pids = [p for p in dict.fromkeys(pids) if p != me and _alive(p)
            and not any(s in _cmdline(p) for s in _SPARED)]
    for p in pids:
        _signal(p, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.1)
    killed = [p for p in pids if _alive(p)]
    for p in killed:
        _signal(p, signal.SIGKILL)
    return killed


# ---------------------------------------------------------------------------- signals
class _State:
    installed_by: int | None = None
    grace_s: float = 5.0
    stopping: int | None = None  # the signal that stopped the process
    noted: tuple[int, ...] = ()  # the process tree when the signal came
    finished = False  # the command is done: the interpreter is on its way out


def install_stop_handlers(grace_s: float = 5.0) -> None:
    """On SIGTERM and SIGINT close the open backends and end their processes (module
    docstring). For the command line's main process; forked children that inherit the
    handlers get the default action instead."""
    if _State.installed_by == os.getpid():
        return
    _State.installed_by, _State.grace_s = os.getpid(), grace_s
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _on_stop)
    atexit.register(_at_exit)


def finished() -> None:
    """The command has returned (the interpreter is exiting): a stop signal from now on
    closes and ends what is left but raises nothing (there is no command left to stop)."""
    _State.finished = True


def _on_stop(signum: int, frame: Any) -> None:
    if os.getpid() != _State.installed_by:  # a forked child: what it would have done
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    if _State.stopping is not None:  # a second signal: no more waiting
        end_processes([*_State.noted, *descendants()], grace_s=0.5)
        os._exit(128 + signum)
    _State.stopping = signum
    _State.noted = tuple(descendants())
    threading.Thread(target=_watchdog, args=(signum,), name="llmhni-stop-watchdog",
                     daemon=True).start()
    for line in close_open(2 * _State.grace_s):  # vLLM waits 5 s before it kills its engine
        print(f"warning: {line}", file=sys.stderr)
    if _State.finished:  # exit handlers are running: let them finish, end the rest after
        return
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise SystemExit(128 + signum)


def _watchdog(signum: int) -> None:
    time.sleep(4 * _State.grace_s)
    end_processes([*_State.noted, *descendants()], grace_s=1.0)
    os._exit(128 + signum)


def _at_exit() -> None:
    """At interpreter exit: close what is still open; after a stop signal, end what is left
    of the process tree too."""
    if os.getpid() != _State.installed_by:
        return
    close_open(_State.grace_s)
    if _State.stopping is not None:
        end_processes([*_State.noted, *descendants()], grace_s=_State.grace_s)
