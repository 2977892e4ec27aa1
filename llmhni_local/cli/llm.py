"""LLM stages on a run folder: ``profiles``, ``embed``, ``candidates``, ``rate``,
``verdicts decide|import`` and ``judgments stats|export|import|repair``.

Each command reads and writes ``RUN`` (the run folder) through the stage functions of
:mod:`llmhni_local.stages`, which ``llmhni run`` calls too; a command only gathers settings and
prints. A command that writes ``RUN`` holds its lock (:mod:`llmhni_local.core.runlock`). Settings: ``--set`` > flags > the ``--config`` file > defaults
(:mod:`llmhni_local.cli.options`); the file may hold every table of ``llmhni run``.
Heavy imports happen inside the commands.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from llmhni_local.backends import EMBEDDING_BACKENDS, RATING_BACKENDS, backend_help
from llmhni_local.cli.options import ConfigOption, DataOption, SetOption, run_config
from llmhni_local.core.errors import UserError
from llmhni_local.core.runlock import run_lock

RUN_HELP = "Run folder (profiles/, candidates.parquet, judgments.sqlite, ...)."


# ---------------------------------------------------------------------------- profiles
def profiles(
    run: Path = typer.Argument(..., help=RUN_HELP),
    config: ConfigOption = None,
    set_: SetOption = None,
    data: DataOption = None,
    max_users: Optional[int] = typer.Option(None, "--max-users", help="Keep only the first N users."),
    summarize: bool = typer.Option(False, "--summarize", help="Rewrite user profiles with the rater LLM (RLMRec style)."),
    prompts: Optional[Path] = typer.Option(None, "--prompts", help="Folder of prompt templates (default: prompts/)."),
) -> None:
    """Build user and item text profiles from TRAINING data (and demographics) into RUN/profiles/."""
    from llmhni_local.data import load_data
    from llmhni_local.stages.profiles import build_profiles, check_can_summarize

    cfg = run_config(config, set_, {"data.source": data, "data.max_users": max_users,
                                   "profiles.summarize": True if summarize else None})
    check_can_summarize(cfg.profiles, cfg.rater)  # before loading data or starting anything
    with run_lock(run, "profiles"):
        prof = build_profiles(run, load_data(cfg.data), data_settings=cfg.data,
                              settings=cfg.profiles, rater=cfg.rater, prompts_dir=prompts,
                              progress=True)
    print(f"profiles: {len(prof.users)} users ({prof.info['user_source']}), {len(prof.items)} "
          f"items ({prof.info['item_source']}) -> {Path(run) / 'profiles'} "
          f"[sha256 {prof.hash[:12]}]")


# ---------------------------------------------------------------------------- embed
def embed(
    run: Path = typer.Argument(..., help=RUN_HELP),
    config: ConfigOption = None,
    set_: SetOption = None,
    backend: Optional[str] = typer.Option(None, "--backend", help=backend_help(EMBEDDING_BACKENDS)),
    model: Optional[str] = typer.Option(None, "--model", help="Registry name or model folder."),
    force: bool = typer.Option(False, "--force", help="Embed even when saved vectors match."),
    ray: bool = typer.Option(False, "--ray", help="Embed as a Ray Data job (embed.engine = ray) on the cluster at embed.ray_address or RAY_ADDRESS, else on a local one."),
) -> None:
    """Embed every user and item profile into RUN/embeddings/ (reused when nothing changed)."""
    from llmhni_local.stages.embed import embed_run

    cfg = run_config(config, set_, {"embedder.backend": backend, "embedder.model": model,
                                   "embed.engine": "ray" if ray else None})
    with run_lock(run, "embed"):
        result = embed_run(run, cfg.embedder, force=force, progress=False, embed=cfg.embed)
    how = "reused (no engine started)" if result.reused else "computed"
    print(f"embeddings {how}: {result.users.shape[0]} users, {result.items.shape[0]} items, "
          f"dim {result.users.shape[1]}, model {result.meta['model_id']}")


# ---------------------------------------------------------------------------- candidates
def candidates(
    run: Path = typer.Argument(..., help=RUN_HELP),
    from_run: Optional[Path] = typer.Option(None, "--from-run", help="Run folder of the pretrained recommender (model.pt)."),
    scores: Optional[Path] = typer.Option(None, "--scores", help="Instead: a .npy (users x items) score matrix."),
    config: ConfigOption = None,
    set_: SetOption = None,
    k_neg: Optional[int] = typer.Option(None, "--k-neg", help="Highest-scored unobserved items per user."),
    k_pos: Optional[int] = typer.Option(None, "--k-pos", help="Lowest-scored observed items per user."),
    budget: Optional[int] = typer.Option(None, "--budget", help="Most pairs in all (0: no cap)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed of the user order under the budget."),
) -> None:
    """Choose candidate pairs from a pretrained recommender into RUN/candidates.parquet."""
    from llmhni_local.stages.candidates import choose_candidates
    from llmhni_local.stages.profiles import profiles_data
    from llmhni_local.stages.rec_pre import score_fn_from_matrix, score_fn_from_run

    if (from_run is None) == (scores is None):
        raise UserError("candidates: give exactly one of --from-run RUN or --scores FILE.npy")
    cfg = run_config(config, set_, {"candidates.k_neg": k_neg, "candidates.k_pos": k_pos,
                                   "candidates.budget": budget, "candidates.seed": seed})
    with run_lock(run, "candidates"):
        dataset = profiles_data(run, cfg.data)
        if from_run is not None:
            score_fn = score_fn_from_run(from_run, dataset)
        else:
            score_fn = score_fn_from_matrix(scores, dataset)
        info = choose_candidates(run, score_fn, dataset, cfg.candidates, str(from_run or scores))
    counts = info["counts"]
    print(f"candidates: {info['pairs']} pairs ({counts['unobserved']} unobserved, "
          f"{counts['observed']} observed) over {info['users']} users")


# ---------------------------------------------------------------------------- rate
def rate(
    run: Path = typer.Argument(..., help=RUN_HELP),
    config: ConfigOption = None,
    set_: SetOption = None,
    backend: Optional[str] = typer.Option(None, "--backend", help=backend_help(RATING_BACKENDS)),
    model: Optional[str] = typer.Option(None, "--model", help="Registry name, model folder or prepared GGUF."),
    adapter: Optional[str] = typer.Option(None, "--adapter", help="peft LoRA adapter folder."),
    lora_mode: Optional[str] = typer.Option(None, "--lora-mode", help="vllm: auto, request (LoRARequest) or merged (adapter folded into a cached copy of the weights; auto on CPU)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Prompts per backend call and per stored transaction."),
    prompts: Optional[Path] = typer.Option(None, "--prompts", help="Folder of prompt templates (default: prompts/)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    ray: bool = typer.Option(False, "--ray", help="Rate as a Ray Data job (rate.engine = ray) on the cluster at rate.ray_address or RAY_ADDRESS, else on a local one."),
) -> None:
    """Rate every candidate pair in both views (user- and item-centric): judge answers, or
    likelihood scores with --set rate.mode=likelihood; resumable."""
    from llmhni_local.stages.rate import rate_run

    cfg = run_config(config, set_, {"rater.backend": backend, "rater.model": model,
                                   "rater.adapter": adapter, "rater.lora_mode": lora_mode,
                                   "rate.batch_size": batch_size,
                                   "rate.engine": "ray" if ray else None})
    note = unlike_the_run(run, cfg)
    if note:
        print(f"rate: note: {note}")
    with run_lock(run, "rate --ray" if cfg.rate.engine == "ray" else "rate"):
        report, mid, _ = rate_run(run, cfg.rater, cfg.rate, prompts_dir=prompts,
                                  progress=not quiet)
    speed = f", {report.rated / report.seconds:.1f} judgments/s" if report.seconds > 0 else ""
    print(f"rate: {report.rated} answers stored ({report.failures} not a label), "
          f"{report.skipped} already stored{speed}; model {mid}")


def unlike_the_run(run: Path, cfg) -> str:
    """'' or one line naming where this call's reader (``rate.mode``, ``rater.backend``,
    ``rater.model``) differs from the one ``RUN/manifest.json`` records: ``rate`` reads its
    settings from defaults, ``--config`` and ``--set``, not from the run, so a run set up with
    a config file and stopped before rating (``run --until candidates``) is otherwise rated
    with the defaults without a word."""
    from llmhni_local.assess.sample import run_overrides

    saved = run_overrides(run)
    used = {"rate.mode": cfg.rate.mode, "rater.backend": cfg.rater.backend,
            "rater.model": cfg.rater.model}
    diff = [f"{k} = {used[k]!r} (the run's: {saved[k]!r})" for k in used
            if k in saved and saved[k] != used[k]]
    if not diff:
        return ""
    return (f"rating {run} otherwise than it was set up: {'; '.join(diff)}; pass its config "
            "file (--config) or --set to rate as the run was set up")


# ---------------------------------------------------------------------------- verdicts
verdicts_app = typer.Typer(no_args_is_help=True,
                           help="Hard or noisy per pair: decided from the run's judgments, or "
                                "imported from a file made elsewhere.")


@verdicts_app.command("decide")
def verdicts_decide(
    run: Path = typer.Argument(..., help=RUN_HELP),
    config: ConfigOption = None,
    set_: SetOption = None,
    rule: Optional[str] = typer.Option(None, "--rule", help="argmax, threshold or stacked (the rest of the [verdicts] table via --config/--set)."),
    source: Optional[str] = typer.Option(None, "--source", help="Decide from the judgments imported under this name (judgments import), over the pairs they name; default: the last rating run."),
) -> None:
    """Hard or noisy per candidate pair under the verdict rule (verdicts.rule and the rest of its
    table) -> RUN/verdicts.parquet and .json."""
    from llmhni_local.audit.records import load_audits
    from llmhni_local.verdicts.decide import write_verdicts

    cfg = run_config(config, set_, {"verdicts.rule": rule})
    with run_lock(run, "verdicts decide"):
        data = None
        if cfg.verdicts.rule == "stacked" or source is not None:
            # stacked: item popularity and user activity; a source: the held-out guard
            from llmhni_local.stages.profiles import profiles_data

            data = profiles_data(run, cfg.data)
        counts = write_verdicts(run, cfg.verdicts, audits=load_audits(run),
                                train=None if data is None else data.train, source=source,
                                data=data)
    a = counts["actions"]
    print(f"verdicts: observed keep {a['keep']}, remove {a['remove']}; unobserved add {a['add']}, "
          f"nothing {a['nothing']}; no verdict (failed or unrated view) {counts['no_verdict']}")
    if "judgments" in counts:
        j = counts["judgments"]
        print(f"from source {j['source']} ({j['pairs']} pairs; {j['user_view_only']} judged in "
              f"the user view only, {j['item_view_only']} in the item view only: no verdict; "
              f"{j['not_candidates_of_run']} are not candidates of this run)")
        h, kept = counts["held_out"], counts["users_kept"]
        print(f"held-out pairs judged hard: validation {h['validation']}, test {h['test']} "
              f"({'added anyway: verdicts.keep_held_out' if h['kept_as_adds'] else 'not added'}); "
              f"users kept their last edges: {kept['users']} ({kept['edges']} removals undone)")
    info = counts["verdict_rule"]
    if "tau" in info:
        print(f"rule threshold: tau user {info['tau']['user']:.4g}, item {info['tau']['item']:.4g} "
              f"from {info['tau_source']}; calibration {info['calibration']}")
    if "cross_validated" in info:
        cv = info["cross_validated"]
        print("rule stacked, cross-validated AUC: " + ", ".join(
            f"{k} {cv[k]['auc']:.3f}" for k in ("llm", "non_llm", "stacked"))
            + f"; uses {info['model']}")


@verdicts_app.command("import")
def verdicts_import(
    run: Path = typer.Argument(..., help=RUN_HELP),
    file: Path = typer.Argument(..., help="CSV, TSV, Parquet or JSON Lines file of user, item, verdict (hard/noisy) in the data's raw ids (docs/IMPORTING.md)."),
    source: str = typer.Option(..., "--source", help="Where the verdicts were made (a rater, a lab); recorded and named in the report."),
    skip_unknown: bool = typer.Option(False, "--skip-unknown", help="Drop rows whose user or item id is not in the data (counted) instead of refusing the file."),
    keep_held_out: bool = typer.Option(False, "--keep-held-out", help="Add hard pairs that are validation or test pairs too (by default counted and not added)."),
) -> None:
    """Verdicts made elsewhere, from a file, checked row by row -> RUN/verdicts.parquet and .json
    (nothing is written unless every row passes)."""
    from llmhni_local.stages.verdicts import import_into

    with run_lock(run, "verdicts import"):
        c = import_into(run, file, source=source, skip_unknown=skip_unknown,
                        keep_held_out=keep_held_out)
    a, held, kept = c["actions"], c["held_out"], c["users_kept"]
    print(f"verdicts import: {c['pairs']} pairs from {c['rows']} rows of {file} (source "
          f"{c['source']}; {c['duplicates_collapsed']} identical repeats collapsed)")
    print(f"verdicts: observed keep {a['keep']}, remove {a['remove']}; unobserved add {a['add']}, "
          f"nothing {a['nothing']}")
    if skip_unknown:
        d = c["dropped_unknown"]
        print(f"dropped: {d['unknown_user']} rows of unknown users, {d['unknown_item']} of "
              "unknown items")
    n_held = held["validation"] + held["test"]
    if n_held and held["kept_as_adds"]:
        print(f"warning: {n_held} added pairs are held-out answers ({held['validation']} "
              f"validation, {held['test']} test), kept as adds (--keep-held-out)")
    elif n_held:
        print(f"held out: {n_held} hard pairs are validation ({held['validation']}) or test "
              f"({held['test']}) pairs; not added (--keep-held-out adds them)")
    if kept["users"]:
        print(f"users kept: {kept['users']} users would have lost every training edge; their "
              f"{kept['edges']} removals are kept as edges")


# ---------------------------------------------------------------------------- judgments
judgments_app = typer.Typer(no_args_is_help=True,
                            help="Inspect the judgment store of a run, export it, import "
                                 "judgments made elsewhere, or salvage a damaged store.")


@judgments_app.command("stats")
def judgments_stats(
    run: Path = typer.Argument(..., help=RUN_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Counts per model, view, candidate kind and label; failure shares."""
    from llmhni_local.judgments.store import JudgmentStore

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
    raw_ids: bool = typer.Option(False, "--raw-ids", help="user and item as the data's raw ids (indices in user_index, item_index): a file `judgments import` reads as it is."),
    last: bool = typer.Option(False, "--last", help="Only the last rating run's judgments (rating.json's model and prompts)."),
    source: Optional[str] = typer.Option(None, "--source", help="Only the judgments imported under this name."),
) -> None:
    """Write every stored judgment (raw answers included) as csv or parquet."""
    # No run lock: it only reads the store (SQLite lets it read while `rate` writes) and
    # writes one file of its own, atomically.
    from llmhni_local.judgments.store import VIEWS, JudgmentStore, Key

    if fmt not in ("csv", "parquet"):
        raise UserError(f"judgments export: --format must be csv or parquet, got {fmt!r}")
    if last and source is not None:
        raise UserError("judgments export: give --last or --source NAME, not both")
    views = None
    if last or source is not None:
        from llmhni_local.judgments.imported import read_source
        from llmhni_local.judgments.plan import read_rating_manifest

        m = read_source(run, source) if source is not None else read_rating_manifest(run)
        views = {v: Key(m["model_id"], m["adapter"], m["views"][v]["prompt_hash"]) for v in VIEWS}
    ids = None
    if raw_ids:
        from llmhni_local.stages.verdicts import run_data

        data = run_data(run)
        ids = (data.user_ids, data.item_ids)
        if not data.user_ids or not data.item_ids:
            raise UserError(f"{data.name}: the data has no raw ids (export without --raw-ids)")
    out = out or Path(run) / f"judgments.{fmt}"
    with JudgmentStore(run, create=False) as store:
        n = store.export(out, fmt, views=views, raw_ids=ids)
    print(f"judgments: {n} rows -> {out}" + (" (raw ids)" if raw_ids else ""))


@judgments_app.command("import")
def judgments_import(
    run: Path = typer.Argument(..., help=RUN_HELP),
    file: Path = typer.Argument(..., help="CSV, TSV, Parquet or JSON Lines file of user, item, view (user/item) and label (High/Medium/Low) and/or score, in the data's raw ids (docs/IMPORTING.md)."),
    source: str = typer.Option(..., "--source", help="Where the judgments were made (a rater, a lab): the name they are stored under; letters, digits, '.', '-', '_'."),
    skip_unknown: bool = typer.Option(False, "--skip-unknown", help="Drop rows whose user or item id is not in the data (counted) instead of refusing the file."),
) -> None:
    """Judgments made elsewhere, from a file, checked row by row -> the judgment store under
    the source's own key and RUN/ratings/SOURCE.json (nothing is written unless every row
    passes); then `verdicts decide RUN --source SOURCE`."""
    from llmhni_local.stages.rate import import_judgments_into

    with run_lock(run, "judgments import"):
        m = import_judgments_into(run, file, source=source, skip_unknown=skip_unknown)
    reads = " and ".join(w for w, on in (("labels", m["labels"]), ("scores", m["scores"])) if on)
    print(f"judgments import: {m['judgments']} judgments of {m['pairs']} pairs from {m['rows']} "
          f"rows of {file} (source {m['source']}; {reads or 'failures only'}; "
          f"{m['duplicates_collapsed']} identical repeats collapsed; {m['failures']} failed; "
          f"{m['replaced']} earlier rows of the source replaced)")
    print(f"pairs: {m['both_views']} judged in both views, {m['user_view_only']} in the user "
          f"view only, {m['item_view_only']} in the item view only (no verdict); "
          f"{m['kinds']['observed']} observed, {m['kinds']['unobserved']} unobserved")
    if skip_unknown:
        d = m["dropped_unknown"]
        print(f"dropped: {d['unknown_user']} rows of unknown users, {d['unknown_item']} of "
              "unknown items")
    print(f"decide verdicts from them: verdicts decide {run} --source {m['source']}")


@judgments_app.command("repair")
def judgments_repair(run: Path = typer.Argument(..., help=RUN_HELP)) -> None:
    """Copy every readable row of a damaged store into a fresh one (the damaged file is kept
    beside it as judgments.sqlite.damaged-TIME); rating again then rates only the rows lost."""
    from llmhni_local.judgments.repair import repair_store

    with run_lock(run, "judgments repair"):
        r = repair_store(run)
    if r.healthy:
        print(f"judgments repair: {r.path} is healthy (quick_check ok, {r.kept} rows); nothing "
              "changed")
        return
    lost = (f"{r.lost} lost of {r.recorded}" if r.lost is not None
            else "lost unknown (the damaged store's row count was unreadable too)")
    print(f"judgments repair: {r.path} was damaged ({r.problem}); {r.kept} rows kept, {lost}; "
          f"the damaged file is kept as {r.damaged}")
    if r.lost != 0:
        aside = f"; rating.json was set aside as {r.rating_manifest}" if r.rating_manifest else ""
        print(f"  rate again (`rate {run}`, or `run`): only the rows lost are rated{aside}")


def mount(app: typer.Typer) -> None:
    """Mount every command of this module on ``app``."""
    for name, fn in (("profiles", profiles), ("embed", embed), ("candidates", candidates),
                     ("rate", rate)):
        app.command(name, help=fn.__doc__)(fn)
    app.add_typer(verdicts_app, name="verdicts")
    app.add_typer(judgments_app, name="judgments")
