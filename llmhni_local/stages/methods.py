"""The trainable methods of the ``train`` stage, one row each in :data:`METHOD_TABLE`.

A new method is a row here (and its objective in its own module under ``method/`` or
``train/``); its ``build`` returns the objective, sampler and manifest extras that
:func:`llmhni_local.train.run.train_run` takes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from llmhni_local.core.config import TrainConfig, TrainSettings, to_dict
from llmhni_local.llmhni.denoise import denoised_edges, oracle_edges
from llmhni_local.llmhni.objective import LLMHNIObjective
from llmhni_local.train.objectives import RecObjective
from llmhni_local.train.run import train_run
from llmhni_local.verdicts.decide import load_verdicts

# ``run`` below is a :class:`llmhni_local.stages.context.Run`; it is not imported, since
# the run's settings check method names against this table.
Run = Any


#: LLMHNI's ablations: method name -> the ``[llmhni]`` switch it turns off.
ABLATIONS = {"llmhni-no-semneg": "semantic_negatives", "llmhni-no-align": "alignment",
              "llmhni-no-denoise": "denoise", "llmhni-no-hal": "hal"}


def load_z(run: Run, aligned: bool) -> tuple[np.ndarray, np.ndarray]:
    z = np.load(run.dir / "align" / ("aligned.npz" if aligned else "raw.npz"))
    return z["users"], z["items"]


def verdict_table(run: Run):
    """Pairs with a verdict; those with a failed or unrated view change nothing in G'."""
    v = load_verdicts(run.dir)
    return v[v["verdict"].isin(["hard", "noisy"])]


@dataclass(frozen=True)
class Method:
    """One trainable method of the ``train`` stage (a row of :data:`METHOD_TABLE`).

    Args:
        loss: the ``train.loss`` its runs use (the plain objectives' loss; LLMHNI and the
            oracle build their own objective on BPR).
        build: ``build(run, name, cfg) -> train_run keyword arguments`` (objective, sampler,
            manifest extras); ``None`` trains the plain objective of ``loss`` on G.
        reads_verdicts: its runs read the verdicts and the alignment (they enter its key).
        help: one line for docs and error messages.
    """

    loss: str = "bpr"
    build: Callable[[Any, str, TrainConfig], dict] | None = None
    reads_verdicts: bool = False
    help: str = ""


def _oracle_run(run: "Run", name: str, cfg: TrainConfig) -> dict:
    data = run.data
    clean = oracle_edges(data.train, data.train_noise)
    return {"objective": RecObjective(clean, data.n_users, data.n_items, cfg.train),
            "extra_manifest": {"oracle": {"edges": len(clean),
                                          "removed": len(data.train) - len(clean)}}}


def _llmhni_run(run: "Run", name: str, cfg: TrainConfig) -> dict:
    data, s = run.data, run.cfg.llmhni
    if name in ABLATIONS:
        s = dataclasses.replace(s, **{ABLATIONS[name]: False})
    edges_gp, report = denoised_edges(data.train, verdict_table(run))
    zu, zi = load_z(run, aligned=s.alignment)
    objective = LLMHNIObjective(data.train, edges_gp, data.n_users, data.n_items, cfg.train, s,
                                z_user=zu, z_item=zi)
    extra = {"llmhni": to_dict(s), "denoise": report.to_dict(),
             "rater": run.cfg.pipeline.rater,
             "simulated": run.cfg.pipeline.rater == "simulated"}
    return {"objective": objective, "sampler": objective.make_sampler(), "extra_manifest": extra}


#: The trainable methods, one row each: baselines in the same trainer, LLMHNI and its
#: ablations, and ``oracle``, the reference ceiling (BPR on the training data with every
#: ground-truth noisy edge removed; needs noise flags: natural noise or
#: ``data.synthetic_noise``). A new method is a row here (and its objective in its own module).
METHOD_TABLE: dict[str, Method] = {
    "bpr": Method("bpr", help="BPR on G"),
    "tce": Method("tce", help="T-CE: drop the largest-loss pairs"),
    "rce": Method("rce", help="R-CE: down-weight large-loss pairs"),
    "sgl": Method("sgl", help="SGL: BPR plus edge-drop contrast"),
    "llmhni": Method(build=_llmhni_run, reads_verdicts=True, help="LLMHNI on G'"),
    **{name: Method(build=_llmhni_run, reads_verdicts=True, help=f"LLMHNI without {switch}")
       for name, switch in ABLATIONS.items()},
    "oracle": Method(build=_oracle_run, help="BPR on G without the flagged edges (ceiling)"),
}


METHODS: tuple[str, ...] = tuple(METHOD_TABLE)


def method_train_settings(run: Run, method: str, seed: int) -> TrainSettings:
    return dataclasses.replace(run.cfg.train, loss=METHOD_TABLE[method].loss, seed=seed)


def train_method(run: Run, method: str, seed: int, out: Path):
    """Train one method with one seed into ``out``; returns the FitResult."""
    cfg = run.cfg.train_config()
    cfg = dataclasses.replace(cfg, train=method_train_settings(run, method, seed))
    spec = METHOD_TABLE[method]
    kwargs = spec.build(run, method, cfg) if spec.build is not None else {}
    return train_run(cfg, run.data, out, progress=run.progress, **kwargs)
