"""Stage ``verdicts`` (method stage 6): hard or noisy for each candidate pair, from the
judgments (and the run's audited labels) or from the simulated rater.
"""

from __future__ import annotations

from llmhni_local.audit.records import load_audits
from llmhni_local.core.errors import UserError
from llmhni_local.llmhni.candidates import CANDIDATES_FILE, load_candidates
from llmhni_local.stages.context import Run
from llmhni_local.verdicts.decide import write_verdicts
from llmhni_local.verdicts.simulated import (
    simulate_auc_verdicts,
    simulate_verdicts,
    threshold_decider,
    write_simulated_verdicts,
)


def run_stage(run: Run) -> dict:
    """Verdicts from the judgments by the ``[verdicts]`` rule, or drawn by the simulated rater
    (``pipeline.rater = "simulated"``)."""
    if run.cfg.pipeline.rater == "simulated":
        data, sim_auc = run.data, run.cfg.pipeline.simulated_auc
        if data.train_noise is None:
            raise UserError(f"pipeline.rater = 'simulated' needs ground-truth noise flags; "
                            f"{data.name} has none (use data.synthetic_noise)")
        cands = load_candidates(run.dir / CANDIDATES_FILE)
        if sim_auc is None:
            v, summary = simulate_verdicts(cands, data.train, data.train_noise,
                                           error_rate=run.cfg.pipeline.simulated_error,
                                           seed=run.cfg.train.seed)
        else:
            v, summary = simulate_auc_verdicts(cands, data.train, data.train_noise, auc=sim_auc,
                                               seed=run.cfg.train.seed,
                                               decide=threshold_decider(run.cfg.verdicts,
                                                                        load_audits(run.dir)))
        write_simulated_verdicts(run.dir / "verdicts.parquet", v, summary)
        return summary
    return write_verdicts(run.dir, run.cfg.verdicts, audits=load_audits(run.dir),
                          train=run.data.train)
