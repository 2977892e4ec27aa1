"""The trainable methods of the ``train`` stage, one row each in :data:`METHOD_TABLE`.

A new method is a row here (and its objective in its own module under ``baselines/``,
``llmhni/`` or ``train/``); its ``build`` returns the objective, sampler and manifest extras that
:func:`llmhni_local.train.run.train_run` takes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from llmhni_local.baselines.bod import BODObjective
from llmhni_local.baselines.dns import DNSObjective
from llmhni_local.baselines.rlmrec import RLMRecConObjective, RLMRecGenObjective
from llmhni_local.baselines.simgcl import SimGCLObjective
from llmhni_local.baselines.wbpr import popularity_sampler
from llmhni_local.baselines.xsimgcl import XSimGCLObjective
from llmhni_local.core.config import TrainConfig, TrainSettings, to_dict
from llmhni_local.core.errors import ConfigError
from llmhni_local.llmhni.denoise import denoised_edges, oracle_edges
from llmhni_local.llmhni.objective import LLMHNIObjective
from llmhni_local.llmhni.text_free import TEXT_FIELDS, has_item_text
from llmhni_local.train.objectives import RecObjective
from llmhni_local.train.run import train_run
from llmhni_local.verdicts.decide import ACTIONS, load_verdicts

# ``run`` below is a :class:`llmhni_local.stages.context.Run`; it is not imported, since
# the run's settings check method names against this table.
Run = Any


#: LLMHNI's ablations: method name -> the ``[llmhni]`` switch it turns off.
ABLATIONS = {"llmhni-no-semneg": "semantic_negatives", "llmhni-no-align": "alignment",
              "llmhni-no-denoise": "denoise", "llmhni-no-hal": "hal"}

#: LLMHNI under other ``[llmhni]`` values, with a name of their own. ``llmhni-dns``: the pool's
#: highest-scoring candidate with no similarity test (the ``combined`` rule at ``beta = 0``),
#: i.e. dynamic negative sampling inside LLMHNI; beside ``llmhni`` it measures what the text
#: adds to the negatives (docs/BASELINES.md).
VARIANTS: dict[str, dict[str, Any]] = {"llmhni-dns": {"similarity_rule": "combined", "beta": 0.0}}


def load_z(run: Run, aligned: bool) -> tuple[np.ndarray, np.ndarray]:
    z = np.load(run.dir / "align" / ("aligned.npz" if aligned else "raw.npz"))
    return z["users"], z["items"]


def verdict_table(run: Run):
    """Pairs with a verdict; those with a failed or unrated view change nothing in G', nor
    do those whose action is not their verdict's (an imported verdict held back:
    ``verdicts/imported.py``)."""
    v = load_verdicts(run.dir)
    v = v[v["verdict"].isin(["hard", "noisy"])]
    if "action" in v.columns:
        own = np.array([ACTIONS.get((k, d)) for k, d in zip(v["kind"], v["verdict"])], object)
        v = v[v["action"].to_numpy(object) == own]
    return v


@dataclass(frozen=True)
class Method:
    """One trainable method of the ``train`` stage (a row of :data:`METHOD_TABLE`).

    Args:
        loss: the ``train.loss`` its runs use (the plain objectives' loss; the other methods
            build their own objective on BPR).
        build: ``build(run, name, cfg) -> train_run keyword arguments`` (objective, sampler,
            manifest extras); ``None`` trains the plain objective of ``loss`` on G.
        reads_verdicts: its runs read the verdicts (they enter its key).
        reads_profiles: its runs read the profile embeddings (``align/raw.npz``; LLMHNI reads
            the aligned ones too); the data must have item text to make profiles from.
        needs_text: refused on data without item text (no profile would carry any).
        settings: the dotted path of its own settings table (``"baselines.simgcl"``,
            ``"llmhni"``), which enters its key.
        help: one line for docs and error messages.
    """

    loss: str = "bpr"
    build: Callable[[Any, str, TrainConfig], dict] | None = None
    reads_verdicts: bool = False
    reads_profiles: bool = False
    needs_text: bool = False
    settings: str | None = None
    help: str = ""

    @property
    def needs_run(self) -> bool:
        """Trained from a pipeline run folder (its verdicts or profile embeddings)."""
        return self.reads_verdicts or self.reads_profiles


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
    s = dataclasses.replace(s, **VARIANTS.get(name, {}))
    edges_gp, report = denoised_edges(data.train, verdict_table(run))
    # without semantic negatives nothing reads the vectors (data without text has none)
    zu, zi = load_z(run, aligned=s.alignment) if s.semantic_negatives else (None, None)
    objective = LLMHNIObjective(data.train, edges_gp, data.n_users, data.n_items, cfg.train, s,
                                z_user=zu, z_item=zi)
    return {"objective": objective, "sampler": objective.make_sampler(),
            "extra_manifest": {"llmhni": to_dict(s), **_rater_extra(run, report)}}


def _rater_extra(run: "Run", report) -> dict:
    return {"denoise": report.to_dict(), "rater": run.cfg.pipeline.rater,
            "simulated": run.cfg.pipeline.rater == "simulated"}


def _bpr_gprime_run(run: "Run", name: str, cfg: TrainConfig) -> dict:
    """Plain BPR on G' (the graph the verdicts make), none of LLMHNI's other terms."""
    data = run.data
    edges_gp, report = denoised_edges(data.train, verdict_table(run))
    return {"objective": RecObjective(edges_gp, data.n_users, data.n_items, cfg.train),
            "extra_manifest": _rater_extra(run, report)}


def own_settings(run: "Run", name: str):
    """The settings table a method reads beside ``[train]`` (``Method.settings``)."""
    node = run.cfg
    for part in METHOD_TABLE[name].settings.split("."):
        node = getattr(node, part)
    return node


def _wbpr_run(run: "Run", name: str, cfg: TrainConfig) -> dict:
    data, b = run.data, own_settings(run, name)
    return {"sampler": popularity_sampler(data.train, data.n_items, b),
            "extra_manifest": {name: to_dict(b)}}


def _objective_run(cls) -> Callable[[Any, str, TrainConfig], dict]:
    """Build a baseline whose objective takes ``(edges, users, items, [train], its settings)``."""
    def build(run: "Run", name: str, cfg: TrainConfig) -> dict:
        data, b = run.data, own_settings(run, name)
        objective = cls(data.train, data.n_users, data.n_items, cfg.train, b)
        return {"objective": objective, "extra_manifest": {name: to_dict(b)}}
    return build


def _dns_run(run: "Run", name: str, cfg: TrainConfig) -> dict:
    data, b = run.data, own_settings(run, name)
    objective = DNSObjective(data.train, data.n_users, data.n_items, cfg.train, b)
    return {"objective": objective, "sampler": objective.make_sampler(),
            "extra_manifest": {name: to_dict(b)}}


def _rlmrec_run(run: "Run", name: str, cfg: TrainConfig) -> dict:
    data, b = run.data, own_settings(run, name)
    su, si = load_z(run, aligned=False)  # the profile embeddings LLMHNI reads, before alignment
    cls = RLMRecConObjective if name == "rlmrec-con" else RLMRecGenObjective
    out_dim = backbone_width(cfg.model)
    extra = {"dim": cfg.model.dim} if name == "rlmrec-gen" else {}  # its mask token's width
    objective = cls(data.train, data.n_users, data.n_items, cfg.train, b, su, si, out_dim,
                    **extra)
    return {"objective": objective, "extra_manifest": {name: to_dict(b)}}


def backbone_width(m) -> int:
    """The width of the backbone's final embeddings (NGCF concatenates its layers)."""
    return m.dim * (m.layers + 1) if m.name == "ngcf" else m.dim


#: The trainable methods, one row each: the baselines in the same trainer (docs/BASELINES.md),
#: LLMHNI and its ablations, and ``oracle``, the reference ceiling (BPR on the training data with
#: every ground-truth noisy edge removed; needs noise flags: natural noise or
#: ``data.synthetic_noise``). A new method is a row here (and its objective in its own module).
METHOD_TABLE: dict[str, Method] = {
    "bpr": Method("bpr", help="BPR on G"),
    "wbpr": Method(build=_wbpr_run, settings="baselines.wbpr",
                   help="WBPR: negatives drawn by popularity"),
    "dns": Method(build=_dns_run, settings="baselines.dns",
                  help="DNS: the hardest of a pool of uniform negatives"),
    "tce": Method("tce", help="T-CE: drop the largest-loss pairs"),
    "rce": Method("rce", help="R-CE: down-weight large-loss pairs"),
    "bod": Method(build=_objective_run(BODObjective), settings="baselines.bod",
                  help="BOD: interaction weights learnt by bi-level optimisation"),
    "sgl": Method("sgl", help="SGL: BPR plus edge-drop contrast"),
    "simgcl": Method(build=_objective_run(SimGCLObjective), settings="baselines.simgcl",
                     help="SimGCL: contrast of noise-perturbed views"),
    "xsimgcl": Method(build=_objective_run(XSimGCLObjective), settings="baselines.xsimgcl",
                      help="XSimGCL: cross-layer contrast in one perturbed propagation"),
    "rlmrec-con": Method(build=_rlmrec_run, reads_profiles=True, needs_text=True,
                         settings="baselines.rlmrec_con",
                         help="RLMRec-Con: contrastive alignment with the profile embeddings"),
    "rlmrec-gen": Method(build=_rlmrec_run, reads_profiles=True, needs_text=True,
                         settings="baselines.rlmrec_gen",
                         help="RLMRec-Gen: masked reconstruction of the profile embeddings"),
    "bpr-gprime": Method(build=_bpr_gprime_run, reads_verdicts=True,
                         help="BPR on G' (the verdicts' graph, no other LLMHNI term)"),
    "llmhni": Method(build=_llmhni_run, reads_verdicts=True, reads_profiles=True,
                     settings="llmhni", help="LLMHNI on G'"),
    **{name: Method(build=_llmhni_run, reads_verdicts=True, reads_profiles=True,
                    settings="llmhni", help=f"LLMHNI without {switch}")
       for name, switch in ABLATIONS.items()},
    "llmhni-dns": Method(build=_llmhni_run, reads_verdicts=True, reads_profiles=True,
                         settings="llmhni",
                         help="LLMHNI with DNS negatives (no similarity test)"),
    "oracle": Method(build=_oracle_run, help="BPR on G without the flagged edges (ceiling)"),
}


METHODS: tuple[str, ...] = tuple(METHOD_TABLE)


def check_methods(methods: tuple[str, ...] | list[str], data) -> None:
    """Refuse, in one line, a method whose inputs ``data`` cannot give."""
    unknown = [m for m in methods if m not in METHOD_TABLE]
    if unknown:
        raise ConfigError(f"unknown method {unknown[0]!r} (known: {', '.join(METHOD_TABLE)})")
    if has_item_text(data):
        return
    for m in methods:
        if METHOD_TABLE[m].needs_text:
            raise ConfigError(f"{m} aligns the recommender with profile embeddings; {data.name} "
                              "has no item text to write profiles from (item_text or item_meta)")
        # an LLMHNI row that changes only what data without text has off trains llmhni itself
        changed = {ABLATIONS[m]} if m in ABLATIONS else set(VARIANTS.get(m, {}))
        if changed and changed <= TEXT_FIELDS:
            raise ConfigError(f"{m} changes llmhni.{', llmhni.'.join(sorted(changed))}, which "
                              f"{data.name} (no item text or metadata) has off already: it would "
                              "train what llmhni trains")


def check_run_inputs(run: Run, name: str) -> None:
    """The run folder holds what ``name`` reads (verdicts, profile embeddings), or one line
    says which stage to run."""
    spec = METHOD_TABLE[name]
    needed = [("verdicts.parquet", "verdicts")] if spec.reads_verdicts else []
    # without item text LLMHNI reads no profile embeddings (llmhni/text_free.py)
    text = not (spec.settings == "llmhni" and not has_item_text(run.data))
    needed += [("align/raw.npz", "align")] if spec.reads_profiles and text else []
    needed += [("align/aligned.npz", "align")] if spec.settings == "llmhni" and text else []
    for rel, stage in needed:
        if not (run.dir / rel).is_file():
            raise ConfigError(f"{run.dir / rel}: {name} reads it and it is missing (run the "
                              f"pipeline through the {stage} stage first)")


def method_train_settings(run: Run, method: str, seed: int) -> TrainSettings:
    return dataclasses.replace(run.cfg.train, loss=METHOD_TABLE[method].loss, seed=seed)


def train_method(run: Run, method: str, seed: int, out: Path):
    """Train one method with one seed into ``out``; returns the FitResult."""
    cfg = run.cfg.train_config()
    cfg = dataclasses.replace(cfg, train=method_train_settings(run, method, seed))
    spec = METHOD_TABLE[method]
    kwargs = spec.build(run, method, cfg) if spec.build is not None else {}
    kwargs["extra_manifest"] = {"method": method, **kwargs.get("extra_manifest", {})}
    return train_run(cfg, run.data, out, progress=run.progress, **kwargs)
