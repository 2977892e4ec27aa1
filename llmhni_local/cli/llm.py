"""LLM stages on a run folder: ``profiles``, ``embed``, ``candidates``, ``rate``, ``verdicts``,
and ``judgments stats|export``.

Each command reads and writes ``RUN`` (the run folder); settings come from flags > the TOML file
given with ``--config`` > defaults. The TOML file may hold the tables ``[data]``,
``[profiles]``, ``[embedder]``, ``[rater]``, ``[candidates]`` and ``[rate]`` (and the tables of
the training and pipeline commands, ``[model]``, ``[train]``, ``[eval]``, ``[pipeline]``,
``[llmhni]``, which these commands ignore, so one file serves every command); any other table
or key is an error. Heavy imports happen inside the commands.

The lead mounts them, e.g.::

    app.command("profiles")(llm.profiles)
    app.add_typer(llm.judgments_app, name="judgments")
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import typer

from llmhni_local.config import DataSettings
from llmhni_local.errors import ConfigError, UserError
from llmhni_local.llm.profiles import ProfileSettings
from llmhni_local.llm.rate import RateSettings
from llmhni_local.llm.settings import EmbedderSettings, RaterSettings
from llmhni_local.method.candidates import CandidateSettings

#: Tables of a shared settings file that belong to other commands (ignored here).
OTHER_TABLES = frozenset({"model", "train", "eval", "pipeline", "llmhni"})


@dataclass(frozen=True)
class LLMConfig:
    """Settings of the LLM stages (one table each in a TOML file)."""

    data: DataSettings = field(default_factory=DataSettings)
    profiles: ProfileSettings = field(default_factory=ProfileSettings)
    embedder: EmbedderSettings = field(default_factory=EmbedderSettings)
    rater: RaterSettings = field(default_factory=RaterSettings)
    candidates: CandidateSettings = field(default_factory=CandidateSettings)
    rate: RateSettings = field(default_factory=RateSettings)


def load_llm_config(path: Optional[Path], overrides: dict[str, Any] | None = None) -> LLMConfig:
    """Defaults < TOML file < flags (``{"rate.batch_size": 64}``; None values are skipped)."""
    from llmhni_local.config import build, merge, read_toml

    values = read_toml(path) if path else {}
    values = {k: v for k, v in values.items() if k not in OTHER_TABLES}
    values = merge(values, overrides or {})
    try:
        return build(LLMConfig, values)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}" if path else str(exc)) from None


CONFIG_HELP = "TOML settings file (flags override it)."
RUN_HELP = "Run folder (profiles/, candidates.parquet, judgments.sqlite, ...)."


# ---------------------------------------------------------------------------- profiles
def profiles(
    run: Path = typer.Argument(..., help=RUN_HELP),
    config: Optional[Path] = typer.Option(None, "--config", help=CONFIG_HELP),
    data: Optional[str] = typer.Option(None, "--data", help="ml100k, rlmrec:PATH or files:PATH."),
    max_users: Optional[int] = typer.Option(None, "--max-users", help="Keep only the first N users."),
    summarize: bool = typer.Option(False, "--summarize", help="Rewrite user profiles with the rater LLM (RLMRec style)."),
    prompts: Optional[Path] = typer.Option(None, "--prompts", help="Folder of prompt templates (default: prompts/)."),
) -> None:
    """Build user and item text profiles from TRAINING data (and demographics) into RUN/profiles/."""
    from llmhni_local.data import load_data
    from llmhni_local.llm.profiles import make_profiles, save_profiles

    cfg = load_llm_config(config, {"data.source": data, "data.max_users": max_users,
                                   "profiles.summarize": True if summarize else None})
    if cfg.profiles.summarize:
        _check_can_generate(cfg.rater)  # before loading data or starting anything
    dataset = load_data(cfg.data)
    prof = make_profiles(dataset, cfg.profiles, prompts)
    prof.info["data_settings"] = dataclasses.asdict(cfg.data)
    if cfg.profiles.summarize:
        from llmhni_local.llm.backends import make_rating_backend
        from llmhni_local.llm.profiles import summarize_users

        backend = make_rating_backend(cfg.rater)
        try:
            prof = summarize_users(prof, backend.generate, cfg.profiles, prompts,
                                   model_id=backend.model_id)
        finally:
            backend.close()
    folder = save_profiles(run, prof)
    print(f"profiles: {len(prof.users)} users ({prof.info['user_source']}), {len(prof.items)} "
          f"items ({prof.info['item_source']}) -> {folder} [sha256 {prof.hash[:12]}]")


def _check_can_generate(rater: RaterSettings) -> None:
    """``--summarize`` needs the rating backend's free generation (``generate``); checked
    before any data is loaded or engine started."""
    import importlib

    module, cls = {"vllm": ("vllm_backend", "VllmRater"),
                   "transformers": ("transformers_backend", "TransformersRater"),
                   "openai": ("openai_backend", "OpenAIRater")}[rater.backend]
    backend_cls = getattr(importlib.import_module(f"llmhni_local.llm.backends.{module}"), cls)
    if not callable(getattr(backend_cls, "generate", None)):
        raise UserError(f"profiles --summarize is not implemented yet: the {rater.backend} "
                        "rating backend has no free-generation method (generate(prompts, "
                        "max_tokens) -> texts); build profiles without --summarize")


# ---------------------------------------------------------------------------- embed
def embed(
    run: Path = typer.Argument(..., help=RUN_HELP),
    config: Optional[Path] = typer.Option(None, "--config", help=CONFIG_HELP),
    backend: Optional[str] = typer.Option(None, "--backend", help="vllm, sentence-transformers or openai."),
    model: Optional[str] = typer.Option(None, "--model", help="Registry name or model folder."),
    force: bool = typer.Option(False, "--force", help="Embed even when saved vectors match."),
) -> None:
    """Embed every user and item profile into RUN/embeddings/ (reused when nothing changed)."""
    from llmhni_local.llm.embed import embed_profiles, embedder_model_id

    cfg = load_llm_config(config, {"embedder.backend": backend, "embedder.model": model})
    result = embed_profiles(run, cfg.embedder, model_id=embedder_model_id(cfg.embedder),
                            force=force)
    how = "reused (no engine started)" if result.reused else "computed"
    print(f"embeddings {how}: {result.users.shape[0]} users, {result.items.shape[0]} items, "
          f"dim {result.users.shape[1]}, model {result.meta['model_id']}")


# ---------------------------------------------------------------------------- candidates
def candidates(
    run: Path = typer.Argument(..., help=RUN_HELP),
    from_run: Optional[Path] = typer.Option(None, "--from-run", help="Run folder of the pretrained recommender (model.pt)."),
    scores: Optional[Path] = typer.Option(None, "--scores", help="Instead: a .npy (users x items) score matrix."),
    config: Optional[Path] = typer.Option(None, "--config", help=CONFIG_HELP),
    k_neg: Optional[int] = typer.Option(None, "--k-neg", help="Highest-scored unobserved items per user."),
    k_pos: Optional[int] = typer.Option(None, "--k-pos", help="Lowest-scored observed items per user."),
    budget: Optional[int] = typer.Option(None, "--budget", help="Most pairs in all (0: no cap)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed of the user order under the budget."),
) -> None:
    """Choose candidate pairs from a pretrained recommender into RUN/candidates.parquet."""
    import numpy as np

    from llmhni_local.io import write_json
    from llmhni_local.llm.profiles import data_fingerprint, load_profiles
    from llmhni_local.llm.rate import CANDIDATES_FILE
    from llmhni_local.method.candidates import count_kinds, save_candidates, select_candidates

    if (from_run is None) == (scores is None):
        raise UserError("candidates: give exactly one of --from-run RUN or --scores FILE.npy")
    cfg = load_llm_config(config, {"candidates.k_neg": k_neg, "candidates.k_pos": k_pos,
                                   "candidates.budget": budget, "candidates.seed": seed})
    prof = load_profiles(run)
    dataset = _profiles_data(prof, cfg)
    if from_run is not None:
        score_fn = score_fn_from_run(from_run, dataset)
    else:
        matrix = np.load(scores, mmap_mode="r")
        if matrix.shape != (dataset.n_users, dataset.n_items):
            raise UserError(f"{scores}: shape {matrix.shape}, expected "
                            f"({dataset.n_users}, {dataset.n_items})")
        score_fn = lambda users: np.asarray(matrix[users])  # noqa: E731
    c = cfg.candidates
    cands = select_candidates(score_fn, dataset.user_item_lists("train"), dataset.n_items,
                              k_neg=c.k_neg, k_pos=c.k_pos, budget=c.budget, seed=c.seed,
                              batch_users=c.batch_users)
    save_candidates(Path(run) / CANDIDATES_FILE, cands)
    counts = count_kinds(cands)
    write_json(Path(run) / "candidates.json", {
        "settings": dataclasses.asdict(c), "counts": counts, "pairs": int(len(cands)),
        "users": int(len(np.unique(cands["user"]))), "data": data_fingerprint(dataset),
        "source": str(from_run or scores)})
    print(f"candidates: {len(cands)} pairs ({counts['unobserved']} unobserved, "
          f"{counts['observed']} observed) over {len(np.unique(cands['user']))} users")


def _profiles_data(prof, cfg: LLMConfig):
    """The data the profiles were built from (checked by its fingerprint)."""
    from llmhni_local.config import build
    from llmhni_local.data import load_data
    from llmhni_local.llm.profiles import data_fingerprint

    saved = prof.info.get("data_settings")
    settings = build(DataSettings, saved, "data") if saved else cfg.data
    dataset = load_data(settings)
    if data_fingerprint(dataset) != prof.info.get("data"):
        raise UserError("candidates: the data does not match the one the profiles were built "
                        "from; run `profiles` again")
    return dataset


def score_fn_from_run(pretrained: Path, dataset):
    """``score_fn(users) -> scores`` of a trained recommender run (s = <e_u, e_i>)."""
    import torch

    from llmhni_local.graph.adjacency import bipartite_adjacency
    from llmhni_local.train.run import load_trained

    model = load_trained(pretrained, dataset)
    adj = bipartite_adjacency(dataset.train, dataset.n_users, dataset.n_items)
    with torch.no_grad():
        u, i = model(adj)
    u, i = u.float(), i.float()

    def score_fn(users):
        with torch.no_grad():
            return (u[torch.as_tensor(users)] @ i.T).numpy()

    return score_fn


# ---------------------------------------------------------------------------- rate
def rate(
    run: Path = typer.Argument(..., help=RUN_HELP),
    config: Optional[Path] = typer.Option(None, "--config", help=CONFIG_HELP),
    backend: Optional[str] = typer.Option(None, "--backend", help="vllm, transformers or openai."),
    model: Optional[str] = typer.Option(None, "--model", help="Registry name, model folder or prepared GGUF."),
    adapter: Optional[str] = typer.Option(None, "--adapter", help="peft LoRA adapter folder."),
    lora_mode: Optional[str] = typer.Option(None, "--lora-mode", help="vllm: auto, request (LoRARequest) or merged (adapter folded into a cached copy of the weights; auto on CPU)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Prompts per backend call and per stored transaction."),
    prompts: Optional[Path] = typer.Option(None, "--prompts", help="Folder of prompt templates (default: prompts/)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
) -> None:
    """Rate every candidate pair in both views (user- and item-centric); resumable."""
    from llmhni_local.llm.prompts import VIEW_TEMPLATES, load_templates
    from llmhni_local.llm.rate import rate_candidates, rater_model_id

    cfg = load_llm_config(config, {"rater.backend": backend, "rater.model": model,
                                   "rater.adapter": adapter, "rater.lora_mode": lora_mode,
                                   "rate.batch_size": batch_size})
    load_templates(tuple(VIEW_TEMPLATES.values()), prompts)  # fail fast, before model checks
    mid, adapter_id = rater_model_id(cfg.rater)

    def make_backend():
        from llmhni_local.llm.backends import make_rating_backend

        return make_rating_backend(cfg.rater)

    report = rate_candidates(run, make_backend, model_id=mid, adapter=adapter_id,
                             settings=cfg.rate, prompts_dir=prompts, progress=not quiet)
    speed = f", {report.rated / report.seconds:.1f} judgments/s" if report.seconds > 0 else ""
    print(f"rate: {report.rated} answers stored ({report.failures} not a label), "
          f"{report.skipped} already stored{speed}; model {mid}")


# ---------------------------------------------------------------------------- verdicts
def verdicts(run: Path = typer.Argument(..., help=RUN_HELP)) -> None:
    """Hard (both views High) or noisy per candidate pair -> RUN/verdicts.parquet and .json."""
    from llmhni_local.llm.verdicts import write_verdicts

    counts = write_verdicts(run)
    a = counts["actions"]
    print(f"verdicts: observed keep {a['keep']}, remove {a['remove']}; unobserved add {a['add']}, "
          f"nothing {a['nothing']}; no verdict (failed or unrated view) {counts['no_verdict']}")


# ---------------------------------------------------------------------------- judgments
judgments_app = typer.Typer(no_args_is_help=True, help="Inspect the judgment store of a run.")


@judgments_app.command("stats")
def judgments_stats(
    run: Path = typer.Argument(..., help=RUN_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Counts per model, view, candidate kind and label; failure shares."""
    from llmhni_local.llm.store import JudgmentStore

    with JudgmentStore(run, create=False) as store:
        st = store.stats()
    if as_json:
        print(json.dumps(st))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"judgments: {st['rows']} rows, {st['failures']} not a label "
                        f"({st['failure_share']:.1%})")
    for col in ("model", "view", "prompt", "kind", "High", "Medium", "Low", "failed"):
        table.add_column(col)
    for r in st["runs"]:
        model = r["model_id"] + (f" [{r['adapter']}]" if r["adapter"] else "")
        for kind, labels in r["kinds"].items():
            table.add_row(model, r["view"], r["prompt_hash"][:10], kind,
                          *(str(labels[k]) for k in ("High", "Medium", "Low", "failed")))
    Console().print(table)


@judgments_app.command("export")
def judgments_export(
    run: Path = typer.Argument(..., help=RUN_HELP),
    fmt: str = typer.Option("csv", "--format", help="csv or parquet."),
    out: Optional[Path] = typer.Option(None, "--out", help="File to write (default RUN/judgments.FORMAT)."),
) -> None:
    """Write every stored judgment (raw answers included) as csv or parquet."""
    from llmhni_local.llm.store import JudgmentStore

    if fmt not in ("csv", "parquet"):
        raise UserError(f"judgments export: --format must be csv or parquet, got {fmt!r}")
    out = out or Path(run) / f"judgments.{fmt}"
    with JudgmentStore(run, create=False) as store:
        n = store.export(out, fmt)
    print(f"judgments: {n} rows -> {out}")


def mount(app: typer.Typer) -> None:
    """Mount every command of this module on ``app`` (a convenience for the lead)."""
    for name, fn in (("profiles", profiles), ("embed", embed), ("candidates", candidates),
                     ("rate", rate), ("verdicts", verdicts)):
        app.command(name, help=fn.__doc__)(fn)
    app.add_typer(judgments_app, name="judgments")
