"""The whole method, stage by stage, in one run folder.

Stages, in order (``python cli.py run --config configs/ml100k.toml``)::

    data -> profiles -> embed -> align -> rec_pre -> candidates -> tune -> rate
         -> verdicts -> train -> report

``tune`` does nothing unless ``tune.kind`` asks it to fit a probe on simulated audit labels
(:class:`~llmhni_local.llm.settings.TuneSettings`); the rate stage then rates with that probe.

Each stage records in ``RUN/stages/<stage>.json`` a key: the hash of the settings it reads and
of the keys of the stages it reads from. A stage whose key is unchanged and whose outputs exist
is reused without doing any work; ``--from STAGE`` runs that stage and every later one again.
``RUN/manifest.json`` records models (with hashes), prompt hashes, settings, versions and seeds.

Run folder layout::

    RUN/profiles/  RUN/embeddings/  RUN/align/z.npz  RUN/rec_pre/ (a train run)
    RUN/candidates.parquet  RUN/tune/ (tune.kind = "probe")  RUN/judgments.sqlite  RUN/rating.json
    RUN/verdicts.parquet  RUN/verdicts.json  RUN/train/<method>/seed<k>/ (train runs)
    RUN/train_store/<key>/ (every finished train run, by its key: a setting changed back is free)
    RUN/results.json  RUN/report.md  RUN/plots/*.png
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np

from llmhni_local.config import (ConfigError, DataSettings, EvalSettings, ModelSettings,
                                 TrainConfig, TrainSettings, load_config, to_dict)
from llmhni_local.errors import UserError
from llmhni_local.io import sha256_text, write_json
from llmhni_local.llm.profiles import ProfileSettings
from llmhni_local.llm.rate import RateSettings
from llmhni_local.llm.settings import EmbedderSettings, EmbedSettings, RaterSettings, TuneSettings
from llmhni_local.verdicts.rules import VerdictSettings
from llmhni_local.method.candidates import CandidateSettings
from llmhni_local.method.settings import LLMHNISettings
from llmhni_local.stages import TUNE_PROBE_DIR, TUNE_SUMMARY, missing_outputs

STAGES: tuple[str, ...] = ("data", "profiles", "embed", "align", "rec_pre", "candidates",
                           "tune", "rate", "verdicts", "train", "report")

#: LLMHNI's ablations: method name -> the ``[llmhni]`` switch it turns off.
_ABLATIONS = {"llmhni-no-semneg": "semantic_negatives", "llmhni-no-align": "alignment",
              "llmhni-no-denoise": "denoise", "llmhni-no-hal": "hal"}


@dataclass(frozen=True)
class PipelineSettings:
    """What the pipeline runs and where.

    Args:
        out: the run folder. (default: ``"runs/ml100k"``)
        methods: methods trained in the ``train`` stage; ``bpr`` is the pretrained recommender
            itself (Rec_pre is LightGCN/NGCF with BPR, early-stopped on validation), so it costs
            nothing extra for the first seed. One of :data:`METHODS` each.
            (default: ``("bpr", "tce", "sgl", "llmhni")``)
        seeds: training seeds; results are reported as mean ± std over them. (default: ``(0,)``)
        rater: ``llm`` (the configured local model) or ``simulated`` (reads the ground-truth
            noise flags and errs at ``simulated_error``; for studies only, marked as simulated
            everywhere). (default: ``"llm"``)
        simulated_error: error rate of the simulated rater. (default: ``0.0``)
    """

    out: str = "runs/ml100k"
    methods: tuple[str, ...] = ("bpr", "tce", "sgl", "llmhni")
    seeds: tuple[int, ...] = (0,)
    rater: Literal["llm", "simulated"] = "llm"
    simulated_error: float = 0.0

    def __post_init__(self) -> None:
        bad = [m for m in self.methods if m not in METHODS]
        if bad:
            raise ConfigError(f"pipeline.methods: unknown method {bad[0]!r} (known: {', '.join(METHODS)})")
        if not self.methods:
            raise ConfigError("pipeline.methods must not be empty")
        if not self.seeds:
            raise ConfigError("pipeline.seeds must not be empty (give at least one seed)")
        if not 0.0 <= self.simulated_error <= 1.0:
            raise ConfigError(f"pipeline.simulated_error must be in [0, 1], got {self.simulated_error}")


@dataclass(frozen=True)
class RunConfig:
    """Every setting of a pipeline run, one table per stage (see each class for defaults)."""

    pipeline: PipelineSettings = field(default_factory=PipelineSettings)
    data: DataSettings = field(default_factory=DataSettings)
    model: ModelSettings = field(default_factory=ModelSettings)
    train: TrainSettings = field(default_factory=TrainSettings)
    eval: EvalSettings = field(default_factory=EvalSettings)
    profiles: ProfileSettings = field(default_factory=ProfileSettings)
    embedder: EmbedderSettings = field(default_factory=EmbedderSettings)
    embed: EmbedSettings = field(default_factory=EmbedSettings)
    candidates: CandidateSettings = field(default_factory=CandidateSettings)
    rater: RaterSettings = field(default_factory=RaterSettings)
    tune: TuneSettings = field(default_factory=TuneSettings)
    rate: RateSettings = field(default_factory=RateSettings)
    llmhni: LLMHNISettings = field(default_factory=LLMHNISettings)
    verdicts: VerdictSettings = field(default_factory=VerdictSettings)

    def __post_init__(self) -> None:
        if self.tune.kind == "none":
            return
        if self.rater.adapter:
            raise ConfigError(f"tune.kind = {self.tune.kind!r} rates with the probe it fits; "
                              f"rater.adapter ({self.rater.adapter}) must then be unset")
        if self.pipeline.rater == "simulated":
            raise ConfigError(f"tune.kind = {self.tune.kind!r} tunes the LLM rater; "
                              "pipeline.rater = 'simulated' uses none (set tune.kind = 'none')")

    def train_config(self, **train_changes) -> TrainConfig:
        return TrainConfig(data=self.data, model=self.model,
                           train=dataclasses.replace(self.train, **train_changes), eval=self.eval)


#: Tables of a shared settings file that belong to other commands (``finetune-rater``, LoRA or
#: probe).
OTHER_TABLES: tuple[str, ...] = ("finetune", "probe")


def load_run_config(path: str | Path | None, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Defaults < TOML file < overrides (:func:`llmhni_local.config.load_config`)."""
    return load_config(RunConfig, path, overrides, ignore=OTHER_TABLES)


# ---------------------------------------------------------------------------- stage keys
#: Settings tables (dotted paths into RunConfig) each stage reads, and the stages it reads from.
_READS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "data": (("data",), ()),
    "profiles": (("profiles",), ("data",)),
    "embed": (("embedder",), ("profiles",)),  # not [embed]: the engine leaves the vectors
    "align": (("llmhni.align", "train.seed"), ("embed",)),
    "rec_pre": (("model", "train", "eval"), ("data",)),
    "candidates": (("candidates",), ("rec_pre",)),
    # with tune.kind = "none" it reads only [tune], and rate does not read it (_reads)
    "tune": (("tune", "rater.model", "rate.max_liked"), ("candidates", "profiles")),
    "rate": (("rater", "rate", "pipeline.rater", "pipeline.simulated_error"), ("candidates", "profiles")),
    "verdicts": (("verdicts",), ("rate",)),
    "train": (("model", "train", "eval", "llmhni", "pipeline.methods", "pipeline.seeds"),
              ("verdicts", "align", "rec_pre")),
    "report": ((), ("train",)),
}


def _reads(cfg: RunConfig, stage: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """:data:`_READS` of ``stage`` under ``cfg``: an untuned run's keys are those of a run
    without a tune stage, and a tuned run's rate key holds the tune key (a new probe re-rates)."""
    settings, upstream = _READS[stage]
    if stage == "tune" and cfg.tune.kind == "none":
        return ("tune",), ()
    if stage == "rate" and cfg.tune.kind != "none":
        return settings, (*upstream, "tune")
    return settings, upstream


def _get(cfg: RunConfig, dotted: str) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        node = getattr(node, part)
    return to_dict(node) if dataclasses.is_dataclass(node) else node


class Run:
    """One pipeline run: its settings, folder, stage records and shared state."""

    def __init__(self, cfg: RunConfig, *, progress: bool = True,
                 log: Callable[[str], None] = print) -> None:
        self.cfg = cfg
        self.dir = Path(cfg.pipeline.out)
        self.progress = progress
        self.log = log
        self.keys: dict[str, str] = {}
        self.ran: dict[str, bool] = {}
        self._data = None
        self.extra_keys: dict[str, str] = {}  # content that keys depend on (data, models)

    # -------------------------------------------------------------- helpers
    @property
    def data(self):
        if self._data is None:
            from llmhni_local.data import load_data

            self._data = load_data(self.cfg.data)
        return self._data

    def key(self, stage: str) -> str:
        settings, upstream = _reads(self.cfg, stage)
        payload = {"stage": stage, "settings": {s: _get(self.cfg, s) for s in settings},
                   "upstream": {u: self.keys[u] for u in upstream},
                   "extra": self.extra_keys.get(stage, "")}
        return sha256_text(json.dumps(payload, sort_keys=True, default=str))

    @property
    def rater(self) -> RaterSettings:
        """The rater the rate stage uses: ``[rater]``, with the tune stage's probe as its
        adapter when ``tune.kind = "probe"``."""
        if self.cfg.tune.kind == "probe":
            return dataclasses.replace(self.cfg.rater, adapter=str(self.dir / TUNE_PROBE_DIR))
        return self.cfg.rater

    def record_path(self, stage: str) -> Path:
        return self.dir / "stages" / f"{stage}.json"

    def record(self, stage: str) -> dict | None:
        p = self.record_path(stage)
        return json.loads(p.read_text()) if p.is_file() else None


# ---------------------------------------------------------------------------- the stages
def _stage_data(run: Run) -> dict:
    data = run.data
    data_key = sha256_text(json.dumps(data.sources, sort_keys=True))
    # Summaries depend on the rater model too (its id is empty when profiles.summarize is off).
    run.extra_keys["profiles"] = data_key + run.extra_keys.get("summarizer", "")
    run.extra_keys["rec_pre"] = data_key
    return data.info()


def _stage_profiles(run: Run) -> dict:
    from llmhni_local.stages import build_profiles

    profiles = build_profiles(run.dir, run.data, data_settings=run.cfg.data,
                              settings=run.cfg.profiles, rater=run.cfg.rater)
    return {"hash": profiles.hash, "users": len(profiles.users), "items": len(profiles.items),
            "summarized": bool(profiles.info.get("summarized"))}


def _embedder_id(run: Run) -> str:
    from llmhni_local.llm.embed import embedder_model_id

    return embedder_model_id(run.cfg.embedder)


def _rater_id(run: Run, settings: RaterSettings | None = None) -> tuple[str, str]:
    """``(model_id, adapter)`` as every entry point stores judgments under them (of
    ``settings``, by default ``[rater]`` as configured)."""
    from llmhni_local.llm.rate import rater_model_id

    return rater_model_id(settings or run.cfg.rater)


def _stage_embed(run: Run) -> dict:
    from llmhni_local.stages import embed_run

    emb = embed_run(run.dir, run.cfg.embedder, progress=run.progress, embed=run.cfg.embed)
    return {"dim": int(emb.users.shape[1]), "model_id": emb.meta.get("model_id"),
            "reused_vectors": emb.reused}


def _stage_align(run: Run) -> dict:
    from llmhni_local.io import atomic_path
    from llmhni_local.llm.embed import load_embeddings
    from llmhni_local.method.align import similarity_vectors

    emb = load_embeddings(run.dir)
    out: dict[str, Any] = {}
    folder = run.dir / "align"
    folder.mkdir(parents=True, exist_ok=True)
    # Both similarity spaces are stored: aligned z' (LLMHNI) and raw x (no-alignment ablation).
    for name, on in (("aligned", True), ("raw", False)):
        s = dataclasses.replace(run.cfg.llmhni, alignment=on)
        zu, zi, history = similarity_vectors(emb.users, emb.items, run.data.train, s,
                                             seed=run.cfg.train.seed)
        with atomic_path(folder / f"{name}.npz") as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, users=zu, items=zi)
        if history:
            write_json(folder / "history.json", history)
            out["final_loss"] = history[-1].get("loss")
        out[name] = {"dim": int(zu.shape[1])}
    return out


def _load_z(run: Run, aligned: bool) -> tuple[np.ndarray, np.ndarray]:
    z = np.load(run.dir / "align" / ("aligned.npz" if aligned else "raw.npz"))
    return z["users"], z["items"]


def _stage_rec_pre(run: Run) -> dict:
    from llmhni_local.train.run import train_run

    cfg = run.cfg.train_config(loss="bpr")
    run.log(f"[rec_pre] {cfg.model.name} + BPR on {run.data.name}")
    r = train_run(cfg, run.data, run.dir / "rec_pre", progress=run.progress)
    return {"best_epoch": r.best_epoch, "test": r.test, "val": r.val,
            "epoch_seconds": r.epoch_seconds}


def _stage_candidates(run: Run) -> dict:
    from llmhni_local.llm.rate import CANDIDATES_FILE
    from llmhni_local.method.candidates import coverage, load_candidates
    from llmhni_local.stages import choose_candidates, score_fn_from_run

    info = choose_candidates(run.dir, score_fn_from_run(run.dir / "rec_pre", run.data), run.data,
                             run.cfg.candidates, source=str(run.dir / "rec_pre"))
    cands = load_candidates(run.dir / CANDIDATES_FILE)
    cov = coverage(cands, run.data.train, run.data.train_noise)
    return {"pairs": info["pairs"], **info["counts"], **({"coverage": cov} if cov else {})}


def _stage_tune(run: Run) -> dict:
    if run.cfg.tune.kind == "none":
        return {"kind": "none"}
    from llmhni_local.stages import tune_run

    run.log(f"[tune] {run.cfg.tune.kind} on {run.cfg.tune.labels} simulated audit labels "
            "(training pairs that are not candidates)")
    return tune_run(run.dir, run.data, run.cfg.tune, base=run.cfg.rater.model,
                    max_liked=run.cfg.rate.max_liked, log=run.log)


def _stage_rate(run: Run) -> dict:
    if run.cfg.pipeline.rater == "simulated":
        return {"simulated": True, "skipped": "the simulated rater reads noise flags, no LLM"}
    from llmhni_local.stages import rate_run

    report, rid, adapter = rate_run(run.dir, run.rater, run.cfg.rate, progress=run.progress)
    return {"model_id": rid, "adapter": adapter, **report.as_dict()}


def _stage_verdicts(run: Run) -> dict:
    if run.cfg.pipeline.rater == "simulated":
        from llmhni_local.llm.rate import CANDIDATES_FILE
        from llmhni_local.method.candidates import load_candidates
        from llmhni_local.method.simulated_rater import simulate_verdicts, write_simulated_verdicts

        data = run.data
        if data.train_noise is None:
            raise UserError(f"pipeline.rater = 'simulated' needs ground-truth noise flags; "
                            f"{data.name} has none (use data.synthetic_noise)")
        v, summary = simulate_verdicts(load_candidates(run.dir / CANDIDATES_FILE), data.train,
                                       data.train_noise, error_rate=run.cfg.pipeline.simulated_error,
                                       seed=run.cfg.train.seed)
        write_simulated_verdicts(run.dir / "verdicts.parquet", v, summary)
        return summary
    from llmhni_local.audit.records import load_audits
    from llmhni_local.verdicts.decide import write_verdicts

    return write_verdicts(run.dir, run.cfg.verdicts, audits=load_audits(run.dir),
                          train=run.data.train)


def _verdict_table(run: Run):
    """Pairs with a verdict; those with a failed or unrated view change nothing in G'."""
    from llmhni_local.verdicts.decide import load_verdicts

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
    from llmhni_local.method.denoise import oracle_edges
    from llmhni_local.train.objectives import RecObjective

    data = run.data
    clean = oracle_edges(data.train, data.train_noise)
    return {"objective": RecObjective(clean, data.n_users, data.n_items, cfg.train),
            "extra_manifest": {"oracle": {"edges": len(clean),
                                          "removed": len(data.train) - len(clean)}}}


def _llmhni_run(run: "Run", name: str, cfg: TrainConfig) -> dict:
    from llmhni_local.method.denoise import denoised_edges
    from llmhni_local.method.objective import LLMHNIObjective

    data, s = run.data, run.cfg.llmhni
    if name in _ABLATIONS:
        s = dataclasses.replace(s, **{_ABLATIONS[name]: False})
    edges_gp, report = denoised_edges(data.train, _verdict_table(run))
    zu, zi = _load_z(run, aligned=s.alignment)
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
       for name, switch in _ABLATIONS.items()},
    "oracle": Method(build=_oracle_run, help="BPR on G without the flagged edges (ceiling)"),
}
METHODS: tuple[str, ...] = tuple(METHOD_TABLE)


def method_train_settings(run: Run, method: str, seed: int) -> TrainSettings:
    return dataclasses.replace(run.cfg.train, loss=METHOD_TABLE[method].loss, seed=seed)


def train_method(run: Run, method: str, seed: int, out: Path):
    """Train one method with one seed into ``out``; returns the FitResult."""
    from llmhni_local.train.run import train_run

    cfg = run.cfg.train_config()
    cfg = dataclasses.replace(cfg, train=method_train_settings(run, method, seed))
    spec = METHOD_TABLE[method]
    kwargs = spec.build(run, method, cfg) if spec.build is not None else {}
    return train_run(cfg, run.data, out, progress=run.progress, **kwargs)


def _method_key(run: Run, method: str, seed: int) -> str:
    """What one (method, seed) training run depends on: a run whose folder records the same
    key is reused, so cells of a benchmark that share a data set and settings share their
    baselines (only LLMHNI reads the verdicts and the alignment)."""
    payload: dict[str, Any] = {"method": method, "seed": seed, "data": run.keys["data"],
                               "rec_pre": run.keys["rec_pre"],
                               "settings": {s: _get(run.cfg, s) for s in ("model", "train", "eval")}}
    if METHOD_TABLE[method].reads_verdicts:
        payload.update(llmhni=_get(run.cfg, "llmhni"), verdicts=run.keys["verdicts"],
                       align=run.keys["align"])
    return sha256_text(json.dumps(payload, sort_keys=True, default=str))


_METHOD_KEY_FILE = "method_key.txt"
TRAIN_STORE = "train_store"


def _finished(folder: Path, mkey: str) -> bool:
    """``folder`` holds a finished train run whose key is ``mkey``."""
    from llmhni_local.train.run import PER_USER_FILE

    done = [folder / f for f in (_METHOD_KEY_FILE, "metrics.json", PER_USER_FILE)]
    return all(p.is_file() for p in done) and done[0].read_text() == mkey


def _replace_tree(src: Path, dst: Path) -> None:
    """Copy ``src`` to ``dst`` through a temporary sibling, so an interrupted copy never
    leaves a ``dst`` that looks finished."""
    import shutil

    tmp = dst.with_name(dst.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    shutil.rmtree(dst, ignore_errors=True)
    tmp.rename(dst)


def _stage_train(run: Run) -> dict:
    from llmhni_local.train.run import PER_USER_FILE

    results: dict[str, Any] = {}
    for method in run.cfg.pipeline.methods:
        per_seed = []
        for seed in run.cfg.pipeline.seeds:
            out = run.dir / "train" / method / f"seed{seed}"
            mkey = _method_key(run, method, seed)
            stored = run.dir / TRAIN_STORE / mkey[:32]
            if _finished(out, mkey):
                run.log(f"[train] {method} seed {seed}: unchanged, reused")
            elif _finished(stored, mkey):
                # The bench's curves and choices retrain LLMHNI under other settings in the
                # same folder; a run whose settings come back is copied, not retrained.
                run.log(f"[train] {method} seed {seed}: reused from {TRAIN_STORE}/")
                _replace_tree(stored, out)
            else:
                if method == "bpr" and seed == run.cfg.train.seed:
                    # Rec_pre *is* this baseline (same backbone, BPR, same seed): copy, do not retrain.
                    _replace_tree(run.dir / "rec_pre", out)
                    if not (out / PER_USER_FILE).is_file():  # a Rec_pre trained before they were kept
                        _per_user_from_model(run, out)
                else:
                    run.log(f"[train] {method} seed {seed}")
                    (out / _METHOD_KEY_FILE).unlink(missing_ok=True)  # no stale key if it fails
                    train_method(run, method, seed, out)
                (out / _METHOD_KEY_FILE).write_text(mkey)
                _replace_tree(out, stored)
            metrics = json.loads((out / "metrics.json").read_text())
            per_seed.append({"seed": seed, "test": metrics["test"], "val": metrics["val"],
                             "best_epoch": metrics["best_epoch"],
                             "epoch_seconds": metrics["epoch_seconds"]})
        results[method] = {"seeds": per_seed, **_mean_std(per_seed)}
    write_json(run.dir / "results.json", {"methods": results,
                                          "simulated_rater": run.cfg.pipeline.rater == "simulated",
                                          "rater": rater_info(run)})
    return {m: {k: v for k, v in r.items() if k != "seeds"} for m, r in results.items()}


def _model_name(model: str) -> str:
    """A rater model as a reader knows it: the registry's model name, else the folder's."""
    from llmhni_local.llm.registry import KNOWN

    if model in KNOWN:
        return KNOWN[model].description.split(" (")[0]
    return Path(model).name or model


def rater_info(run: Run) -> dict[str, Any]:
    """How results.json, report.md and the closing table name the rater whose verdicts the
    methods in ``methods`` read: ``description`` always, ``tag`` (a mark on those methods'
    rows) when the rater was tuned inside the run on simulated labels, so no reader takes it
    for a zero-shot or a human-audited rater."""
    methods = [m for m in run.cfg.pipeline.methods if METHOD_TABLE[m].reads_verdicts]
    if run.cfg.pipeline.rater == "simulated":
        return {"kind": "simulated", "methods": methods,
                "description": "SIMULATED rater (reads the ground-truth noise flags, error rate "
                               f"{run.cfg.pipeline.simulated_error:g})"}
    name, adapter = _model_name(run.cfg.rater.model), run.cfg.rater.adapter
    info: dict[str, Any] = {"kind": "llm", "model": run.cfg.rater.model, "methods": methods}
    if run.cfg.tune.kind == "probe":
        tune = json.loads((run.dir / TUNE_SUMMARY).read_text())
        info.update(tuned={k: tune[k] for k in ("kind", "labels", "counts", "pool", "rule",
                                                "simulated")},
                    tag="simulated-audit-tuned rater",
                    description=f"{name} + probe tuned on {tune['labels']} SIMULATED audit "
                                f"labels ({tune['pool']}; read off ratings {tune['rule']}, not "
                                "given by a person)")
    elif adapter:
        from llmhni_local.llm.probe import is_probe_folder

        kind = "probe" if is_probe_folder(adapter) else "LoRA adapter"
        info["description"] = f"{name} + {kind} {Path(adapter).name} (see its card for its labels)"
    else:
        info["description"] = f"{name} (zero-shot)"
    return info


def _per_user_from_model(run: Run, out: Path) -> None:
    from llmhni_local.graph.adjacency import bipartite_adjacency
    from llmhni_local.train.run import PER_USER_FILE, load_trained, save_per_user_test

    data = run.data
    save_per_user_test(out / PER_USER_FILE, load_trained(out, data),
                       bipartite_adjacency(data.train, data.n_users, data.n_items), data,
                       run.cfg.eval)


def _mean_std(per_seed: list[dict]) -> dict:
    keys = per_seed[0]["test"].keys()
    out = {}
    for k in keys:
        vals = np.array([p["test"][k] for p in per_seed])
        out[f"{k}_mean"] = float(vals.mean())
        out[f"{k}_std"] = float(vals.std(ddof=1)) if len(vals) > 1 else 0.0
    return out


def _stage_report(run: Run) -> dict:
    from llmhni_local.report import write_report

    return write_report(run.dir, run.data)


_RUNNERS: dict[str, Callable[[Run], dict]] = {
    "data": _stage_data, "profiles": _stage_profiles, "embed": _stage_embed,
    "align": _stage_align, "rec_pre": _stage_rec_pre, "candidates": _stage_candidates,
    "tune": _stage_tune, "rate": _stage_rate, "verdicts": _stage_verdicts, "train": _stage_train,
    "report": _stage_report,
}

def _model_keys(run: Run) -> None:
    """Model content hashes enter the keys of the stages that use the models."""
    needs_llm = run.cfg.pipeline.rater == "llm"
    run.extra_keys["embed"] = _embedder_id(run)
    if needs_llm and run.cfg.tune.kind == "none":  # a tuned rater's id: _tuned_rater_key
        run.extra_keys["rate"] = ":".join(_rater_id(run))
    if run.cfg.tune.kind != "none":
        from llmhni_local.llm.prompts import VIEW_TEMPLATES, load_templates

        # the probe reads the base model's states on the rating prompts
        hashes = [t.hash for t in load_templates(tuple(VIEW_TEMPLATES.values())).values()]
        run.extra_keys["tune"] = ":".join([_rater_id(run)[0], *hashes])
    if run.cfg.profiles.summarize:
        run.extra_keys["summarizer"] = ":summarized-by:" + ":".join(_rater_id(run))


def run_pipeline(cfg: RunConfig, *, start: str | None = None, progress: bool = True,
                 log: Callable[[str], None] = print) -> Run:
    """Run every stage in order, reusing those whose key and outputs are unchanged.

    Args:
        cfg: the run's settings.
        start: run this stage and every later one even if unchanged (``--from``).
        progress: progress bars.
        log: where one-line stage messages go.
    """
    from llmhni_local.manifest import build_manifest

    if start is not None and start not in STAGES:
        raise ConfigError(f"--from: unknown stage {start!r} (stages: {', '.join(STAGES)})")
    run = Run(cfg, progress=progress, log=log)
    run.dir.mkdir(parents=True, exist_ok=True)
    _check_inputs_early(run)
    _model_keys(run)
    forced = False
    for stage in STAGES:
        forced = forced or stage == start
        if stage == "data":
            _stage_data(run)  # cheap, and sets the data hash the later keys read
        if stage == "rate" and run.cfg.tune.kind != "none":
            # the tuned rater's id holds the probe folder's hash, known once tune is done
            run.extra_keys["rate"] = ":".join(_rater_id(run, run.rater))
        key = run.key(stage)
        run.keys[stage] = key
        rec = run.record(stage)
        missing = missing_outputs(run.dir, stage, simulated=run.cfg.pipeline.rater == "simulated",
                                  tune=run.cfg.tune.kind)
        if not forced and rec is not None and rec.get("key") == key and not missing:
            run.ran[stage] = False
            log(f"[{stage}] unchanged, reused")
            continue
        # Outputs lost since the last run: what later stages read from them may differ too.
        forced = forced or (rec is not None and bool(missing))
        t0 = time.perf_counter()
        log(f"[{stage}] running" + (f" ({', '.join(missing)} missing)"
                                     if rec is not None and missing else ""))
        summary = _RUNNERS[stage](run)
        seconds = time.perf_counter() - t0
        run.ran[stage] = True
        write_json(run.record_path(stage), {"stage": stage, "key": key, "seconds": seconds,
                                            "summary": summary})
        log(f"[{stage}] done in {seconds:.1f} s")
    write_json(run.dir / "manifest.json", _manifest(run, build_manifest))
    return run


def _check_inputs_early(run: Run) -> None:
    """Everything that can be checked before an engine starts or a model trains."""
    from llmhni_local.llm.prompts import VIEW_TEMPLATES, load_templates
    from llmhni_local.llm.registry import resolve_checked
    from llmhni_local.stages import check_can_summarize

    load_templates(("user_profile", "item_profile", *VIEW_TEMPLATES.values()))
    check_can_summarize(run.cfg.profiles, run.cfg.rater)
    needs_flags = [why for why, on in (
        ("pipeline.methods has 'oracle'", "oracle" in run.cfg.pipeline.methods),
        ("pipeline.rater = 'simulated'", run.cfg.pipeline.rater == "simulated")) if on]
    if needs_flags and run.data.train_noise is None:
        raise ConfigError(f"{needs_flags[0]} needs ground-truth noise flags; {run.data.name} has "
                          "none (set data.synthetic_noise)")
    if run.cfg.tune.kind != "none" and run.data.train_rating is None:
        raise ConfigError(f"tune.kind = {run.cfg.tune.kind!r} fits on simulated audit labels "
                          f"read off explicit ratings; {run.data.name} has none (set tune.kind "
                          "= 'none')")
    resolve_checked(run.cfg.embedder.model, ("weights", "config", "tokenizer"))
    if run.cfg.pipeline.rater == "llm" or run.cfg.profiles.summarize:
        resolve_checked(run.cfg.rater.model, ("weights", "config", "tokenizer"))


def _manifest(run: Run, build_manifest) -> dict:
    from llmhni_local.llm.prompts import VIEW_TEMPLATES, load_templates

    templates = load_templates(("user_profile", "item_profile", *VIEW_TEMPLATES.values()))
    models = {"embedder": {"name": run.cfg.embedder.model, "id": run.extra_keys.get("embed")}}
    if run.cfg.pipeline.rater == "llm":
        models["rater"] = {"name": run.cfg.rater.model, "adapter": run.rater.adapter,
                           "id": run.extra_keys.get("rate")}
        if run.cfg.tune.kind == "probe":
            from llmhni_local.llm.registry import model_hash

            folder = run.dir / TUNE_PROBE_DIR
            models["rater"]["tuned"] = {"kind": "probe", "folder": str(folder),
                                        "sha256": model_hash(folder), "simulated_labels": True,
                                        "summary": TUNE_SUMMARY}
    else:
        models["rater"] = {"simulated": True, "error_rate": run.cfg.pipeline.simulated_error}
    return build_manifest(
        settings=to_dict(run.cfg), data_sources=run.data.sources,
        seeds={"train": list(run.cfg.pipeline.seeds), "data": run.cfg.data.seed,
               "candidates": run.cfg.candidates.seed},
        models=models, prompts={n: t.hash for n, t in templates.items()},
        extra={"stages": {s: {"key": run.keys.get(s), "ran": run.ran.get(s)} for s in STAGES}})
