"""Stage ``report``: ``report.md``, the results table and the plots of a finished run.
"""

from __future__ import annotations

from llmhni_local.report import write_report
from llmhni_local.stages.context import Run


def run_stage(run: Run) -> dict:
    return write_report(run.dir, run.data, ran=run.ran)  # ran: which stages were reused
