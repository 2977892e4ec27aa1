"""Stage ``data``: the interactions that ``[data]`` names, loaded once per run.

Its key holds the hash of the source files (:func:`llmhni_local.stages.key.content_hash`), so
an edited file re-runs every stage that reads the data.
"""

from __future__ import annotations

from llmhni_local.stages.context import Run


def run_stage(run: Run) -> dict:
    """Counts, sparsity and flagged noise of the run's data (its summary)."""
    return run.data.info()
