"""What does the embedder buy LLMHNI? Three sentence encoders, each on template and on
LLM-written user profiles, with the verdicts held fixed (docs/DESIGN.md, "Profile quality").

1. A base run (``OUT/base``: the demo config, MovieLens-100K as given, template profiles,
   MiniLM, the config's reader) gets the verdicts, written as a verdicts file in raw ids
   (``profile_quality.base_verdicts``); every cell brings them in through ``verdicts.file``,
   so G' is the same in every cell and only the text side changes. It runs at every start:
   the records are keyed by the file's sha256.
2. Prompt choice (``--choose-prompts``, on unless ``--gemma-prompts`` names the pair):
   EmbeddingGemma on template profiles, seed 0, ``llmhni`` only, under each (user, item)
   prompt pair of :data:`PROMPT_GRID`; the pair with the best *validation* Recall@20 (the
   test split is not read) is used in every EmbeddingGemma cell, whose ``llmhni`` seed 0 it is.
3. One cell per (embedder, profiles): ``embedder.model = NAME`` on the sentence-transformers
   backend for all three (vLLM has no MPNet model; one backend keeps the times comparable);
   ``llm`` profiles set ``profiles.summarize`` with ``rater.model = --summarizer`` (user
   profiles rewritten by the model's free generation; item profiles stay the template's).
   ``llmhni`` and ``llmhni-dns`` (DNS negatives: the similarity weighed at nothing, so it reads
   no text; a control that should not move) train for every seed, in ``OUT/cells/CELL``.
   Every finished training (the grid's too) is a line of ``bench/records/embedders.jsonl``
   (``--records``; bench/_records.py) with its cell's pseudo-label precision and stage
   seconds, so a killed bench resumes on any machine, and a cell all recorded runs no stage.
   Rec_pre and the candidates (the same key in every cell) are copied from the base run, the
   summaries from the first cell that wrote them; the runner checks each copied stage's key
   and recomputes it if it differs.

Reported per cell: test Recall@20 of both rows (mean ± std over seeds); each cell's ``llmhni``
against MiniLM-with-template-profiles' ``llmhni`` and against its own ``llmhni-dns`` as paired
differences over the same seeds and test users with a 95% bootstrap interval; the alignment's
pseudo-label precision (the share of each user's top-N pseudo-positives, N =
``llmhni.align.n_pseudo``, that the user rated >= 4, against the share of the user's training
items rated >= 4, both averaged over users; also over the users with more than N training items,
the only ones for whom the cosine chooses); the seconds of the embed stage and of the profiles
stage with summaries, as their stage records say (kept in the records). Writes
docs/BENCHMARKS.md (between markers) and docs/embedders.png; ends with one JSON line.

    python bench/embedders.py --quick        # MiniLM and EmbeddingGemma, template, 1 seed
    python bench/embedders.py                # 3 embedders x {template, llm}, 3 seeds
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from _common import (
    REPO_ROOT,
    add_pipeline_args,
    check_jobs,
    ci_cell,
    docs_command,
    emit_json,
    fail,
    format_table,
    mean_pm,
    paired,
    per_user,
    pipeline_settings,
    print_table,
    run_main,
    write_docs_block,
    written_from,
)
from _records import Records, add_records_arg, pin_rater_dtype, record_key, records_path
from profile_quality import base_verdicts

EMBEDDERS = "minilm,all-mpnet-base-v2,embeddinggemma-300m"
QUICK_EMBEDDERS = "minilm,embeddinggemma-300m"
GEMMA = "embeddinggemma-300m"
PROFILES = ("template", "llm")
METHODS = ("llmhni", "llmhni-dns")
REFERENCE = ("minilm", "template")
SUMMARIZER = "qwen2.5-coder-0.5b"
BACKEND = "sentence-transformers"  # vLLM 0.32 cannot load MPNet (docs/DESIGN.md)
#: EmbeddingGemma's (user, item) prompt names tried on validation; ``None``: no prompt.
PROMPT_GRID = ((None, None), ("query", "document"), ("STS", "STS"), ("Clustering", "Clustering"))
LIKED = 4.0  # a rating this high is "liked" (profiles.like_min_rating's default)
VERDICTS_SOURCE = "the config's reader on template profiles embedded by MiniLM"
RECORDS = REPO_ROOT / "bench" / "records" / "embedders.jsonl"
#: Seconds on a 2-core CPU, for the estimate only: one LLMHNI training (profile_quality's
#: figure), the alignment of one cell, the base run (Rec_pre, embedding, 1,000 readings), and
#: embedding MovieLens-100K's 2,625 profiles (MiniLM: the demo's 39 s; the other two scaled
#: from this bench's smoke run, 40 users and all 1,682 items, on a loaded machine).
TRAIN_S, ALIGN_S, BASE_S = 110, 20, 420
EMBED_S = {"minilm": 40, "all-mpnet-base-v2": 240, "embeddinggemma-300m": 600}
#: Summarising 943 user profiles, by summarizer (smollm2 scaled from the smoke run; the Qwen
#: figure is smollm2's times the parameter ratio, 494M / 135M: computed, not measured).
SUMMARIZE_S = {"smollm2": 600, "qwen2.5-coder-0.5b": 2200}


@dataclass(frozen=True)
class Cell:
    """One (embedder, profiles, prompts) setting; ``prompts`` are the embedder's (user, item)
    prompt names, ``None`` for none."""

    embedder: str
    profiles: str
    prompts: tuple[str | None, str | None] = (None, None)

    @property
    def name(self) -> str:
        """The folder name: ``embeddinggemma-300m-template-query-document``."""
        named = [p or "none" for p in self.prompts] if any(self.prompts) else []
        return "-".join([Path(self.embedder).name, self.profiles, *named])

    @property
    def label(self) -> str:
        return (f"{self.embedder} ({'/'.join(p or 'none' for p in self.prompts)})"
                if any(self.prompts) else self.embedder)

    def settings(self, summarizer: str) -> dict:
        out = {"embedder.backend": BACKEND, "embedder.model": self.embedder,
               "profiles.summarize": self.profiles == "llm"}
        if self.profiles == "llm":
            out["rater.model"] = summarizer  # the rater only writes summaries here
        for field, name in zip(("user_prompt", "item_prompt"), self.prompts):
            if name is not None:
                out[f"embedder.{field}"] = name
        return out


def names(flag: str, text: str) -> list[str]:
    """A comma-separated list without repeats; one line naming ``flag`` otherwise."""
    out = [x.strip() for x in text.split(",") if x.strip()]
    if not out:
        fail(f"{flag} must list at least one name")
    if len(set(out)) != len(out):
        fail(f"{flag} lists a name twice: {text!r}")
    return out


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help=f"1 seed, {QUICK_EMBEDDERS}, template profiles (flags given win)")
    p.add_argument("--seeds", type=int, default=None, help="training seeds (default 3; 1 quick)")
    p.add_argument("--embedders", default=None, help=f"embedders (default {EMBEDDERS})")
    p.add_argument("--profiles", default=None,
                   help="template, llm or both (default template,llm; template quick)")
    p.add_argument("--summarizer", default=SUMMARIZER,
                   help=f"rater.model that writes the llm profiles (default {SUMMARIZER})")
    p.add_argument("--gemma-prompts", default=None, metavar="USER,ITEM",
                   help="EmbeddingGemma's prompt names, e.g. query,document or none,none "
                        "(default: chosen on validation)")
    p.add_argument("--choose-prompts", action=argparse.BooleanOptionalAction, default=None,
                   help="choose EmbeddingGemma's prompts on validation (default: on unless "
                        "--gemma-prompts)")
    add_records_arg(p, RECORDS)
    add_pipeline_args(p, "bench-embedders")
    a = p.parse_args(argv)
    a.records = records_path(a, RECORDS)
    a.seeds = a.seeds if a.seeds is not None else (1 if a.quick else 3)
    if a.seeds < 1:
        fail(f"--seeds must be >= 1, got {a.seeds}")
    a.embedders = names("--embedders", a.embedders or (QUICK_EMBEDDERS if a.quick else EMBEDDERS))
    a.profiles = names("--profiles", a.profiles or ("template" if a.quick else "template,llm"))
    bad = [x for x in a.profiles if x not in PROFILES]
    if bad:
        fail(f"--profiles: unknown kind {bad[0]!r} (known: {', '.join(PROFILES)})")
    a.prompts = gemma_prompts(a)
    check_jobs(a.jobs)
    return a


def gemma_prompts(a: argparse.Namespace) -> tuple[str | None, str | None] | None:
    """``--gemma-prompts`` as a pair (``None``: choose on validation); sets ``a.choose``."""
    gemma = GEMMA in a.embedders
    if a.gemma_prompts is None:
        a.choose = gemma and a.choose_prompts is not False
        if gemma and not a.choose:
            fail("--no-choose-prompts needs --gemma-prompts USER,ITEM (e.g. none,none)")
        return None
    if a.choose_prompts:
        fail("--choose-prompts and --gemma-prompts both say how to pick the prompts; set one")
    if not gemma:
        fail(f"--gemma-prompts is for {GEMMA}, which --embedders does not list")
    pair = [x.strip() for x in a.gemma_prompts.split(",")]
    if len(pair) != 2 or not all(pair):
        fail(f"--gemma-prompts takes two names, USER,ITEM (none for no prompt), got "
             f"{a.gemma_prompts!r}")
    a.choose = False
    return tuple(None if x.lower() == "none" else x for x in pair)


def estimate_s(args) -> float:
    """Wall seconds if nothing is reused (the constants above)."""
    par = min(args.jobs, os.cpu_count() or 1)
    total = BASE_S
    if args.choose:  # the grid's chosen cell is then a main cell: one seed-0 training reused
        total += len(PROMPT_GRID) * (EMBED_S[GEMMA] + ALIGN_S + TRAIN_S) - TRAIN_S
    for e in args.embedders:
        for kind in args.profiles:
            grid_cell = args.choose and e == GEMMA and kind == "template"
            total += 0 if grid_cell else EMBED_S.get(e, EMBED_S[GEMMA]) + ALIGN_S
            total += len(METHODS) * args.seeds * TRAIN_S / par
    if "llm" in args.profiles:  # written once, copied into the other llm cells
        total += SUMMARIZE_S.get(args.summarizer, SUMMARIZE_S[SUMMARIZER])
    return total


def check_models(args) -> None:
    """Every embedder and the summarizer is installed, and EmbeddingGemma has the prompts
    asked for: one line naming ``python cli.py models install NAME`` otherwise, before
    anything trains."""
    from llmhni_local.engine.settings import EmbedderSettings
    from llmhni_local.text.embed import profile_prompts
    from llmhni_local.weights.registry import resolve_model

    for name in args.embedders + ([args.summarizer] if "llm" in args.profiles else []):
        resolve_model(name)
    if GEMMA in args.embedders:
        for up, ip in [args.prompts] if args.prompts else PROMPT_GRID:
            profile_prompts(EmbedderSettings(model=GEMMA, user_prompt=up, item_prompt=ip))


def seed_stage(src: Path, dst: Path, stage: str) -> None:
    """Copy ``stage``'s outputs and record from run folder ``src`` into ``dst`` when ``dst``
    has no record of it; the runner reuses them only if the record's key is the one ``dst``'s
    settings give, so a stage that differs is recomputed, never taken on trust."""
    from llmhni_local.stages.plan import OUTPUTS

    record = Path("stages") / f"{stage}.json"
    tops = {Path(o).parts[0] for o in OUTPUTS[stage]}
    if (dst / record).is_file() or not all((src / p).exists() for p in (record, *tops)):
        return
    for top in tops:
        if (src / top).is_dir():
            shutil.rmtree(dst / top, ignore_errors=True)
            shutil.copytree(src / top, dst / top)
        else:
            shutil.copy2(src / top, dst / top)
    (dst / "stages").mkdir(parents=True, exist_ok=True)
    shutil.copy2(src / record, dst / record)  # last: a killed copy leaves no record


def pseudo_precision(run) -> dict:
    """Per user, the share of the alignment's top-N pseudo-positives (raw cosine) rated >=
    :data:`LIKED`, against the share of the user's training items rated so; both averaged
    over users, and over the users with more than N training items (for the others the
    pseudo-positives are all their items). ``{}`` when the data has no ratings."""
    from llmhni_local.llmhni.align import pseudo_labels
    from llmhni_local.text.embed import load_embeddings

    data = run.data
    if data.train_rating is None:
        return {}
    emb, n = load_embeddings(run.dir), run.cfg.llmhni.align.n_pseudo
    m = np.int64(data.n_items)
    train = data.train.astype(np.int64)
    rated = train[data.train_rating >= LIKED]
    liked = np.unique(rated[:, 0] * m + rated[:, 1])
    pairs = np.unique(train, axis=0)
    labels = pseudo_labels(emb.users, emb.items, train, n)

    def share(p: np.ndarray) -> np.ndarray:  # per user: liked among p's pairs (NaN: none)
        hit = np.isin(p[:, 0] * m + p[:, 1], liked)
        count = np.bincount(p[:, 0], minlength=data.n_users)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.bincount(p[:, 0], weights=hit, minlength=data.n_users) / count

    top, base = share(labels), share(pairs)
    choosing = np.bincount(pairs[:, 0], minlength=data.n_users) > n
    return {"n_pseudo": n, "precision": float(np.nanmean(top)),
            "base_rate": float(np.nanmean(base)), "users_choosing": int(choosing.sum()),
            "precision_choosing": float(np.mean(top[choosing])) if choosing.any() else np.nan,
            "base_choosing": float(np.mean(base[choosing])) if choosing.any() else np.nan}


def run_cell(args, settings: dict, cell: Cell, methods, seeds):
    """Run one cell's pipeline for ``methods`` and ``seeds`` (every stage reused by key)."""
    from llmhni_local.pipeline.runner import run_pipeline
    from llmhni_local.stages.settings import load_run_config

    out = Path(args.out)
    folder = out / "cells" / cell.name
    print(f"== {cell.name}: {', '.join(methods)}, seeds {', '.join(map(str, seeds))}", flush=True)
    cfg = load_run_config(None, {**settings, "pipeline.out": str(folder),
                                 "pipeline.methods": list(methods), "pipeline.seeds": list(seeds)})
    folder.mkdir(parents=True, exist_ok=True)
    for stage in ("rec_pre", "candidates"):  # the same BPR model in every cell
        seed_stage(out / "base", folder, stage)
    if cell.profiles == "llm":  # one set of summaries, whoever wrote it first
        for other in sorted((out / "cells").glob("*-llm*")):
            seed_stage(other, folder, "profiles")
    return run_pipeline(cfg, progress=False, log=lambda msg: print("   ", msg, flush=True))


def trainings(args, ctx: dict, cell: Cell, methods, seeds) -> dict[str, list[dict]]:
    """Per method, the cell's trainings, one per seed, as ``ctx["records"]`` holds them; those
    missing run first (the cell's pipeline, for the methods and seeds missing) and are recorded.
    Every record repeats its cell's pseudo-label precision and stage seconds, as measured then."""
    records = ctx["records"]
    settings = {**ctx["base"], **cell.settings(args.summarizer),
                "verdicts.source": VERDICTS_SOURCE}
    keyed = {**settings, "verdicts.file": ctx["sha"]}  # the verdicts' bytes, not their path
    keys = {(m, s): record_key(keyed, m, s) for m in methods for s in seeds}
    todo = [ms for ms, key in keys.items() if records.get(key) is None]
    if not todo:
        print(f"== {cell.name}: every training recorded", flush=True)
    else:
        run = run_cell(args, {**settings, "verdicts.file": str(ctx["verdicts"])}, cell,
                       [m for m in methods if any(t[0] == m for t in todo)],
                       sorted({s for _, s in todo}))
        # as the stages' records say: written when a stage runs; a copied stage brings its own
        seconds = {st: run.record(st)["seconds"] for st in ("embed", "profiles")}
        pseudo = pseudo_precision(run)
        for m, s in todo:
            folder = run.dir / "train" / m / f"seed{s}"
            met = json.loads((folder / "metrics.json").read_text())
            records.add(keys[m, s], {"cell": cell.name, "method": m, "seed": s},
                        {"seed": s, "recall@20": met["test"]["recall@20"],
                         "val_recall@20": met["val"]["recall@20"],
                         "best_epoch": met["best_epoch"], "per_user": per_user(folder),
                         "pseudo": pseudo, "seconds": seconds})
    return {m: [records.get(keys[m, s]) for s in seeds] for m in methods}


def choose_prompts(args, ctx: dict, bar) -> tuple[tuple, list[list]]:
    """EmbeddingGemma's prompt pair with the best validation Recall@20 of ``llmhni`` (seed 0,
    template profiles), and the grid's rows."""
    rows = []
    for pair in PROMPT_GRID:
        r = trainings(args, ctx, Cell(GEMMA, "template", pair), ("llmhni",), (0,))["llmhni"][0]
        rows.append([pair[0] or "none", pair[1] or "none", r["val_recall@20"], r["best_epoch"]])
        print(f"  prompts {rows[-1][0]}/{rows[-1][1]}: val Recall@20 {rows[-1][2]:.4f}", flush=True)
        bar.advance(1)
    best = max(range(len(rows)), key=lambda k: rows[k][2])  # ties: the earlier pair
    return PROMPT_GRID[best], [r + ["<-" if k == best else ""] for k, r in enumerate(rows)]


def run_all(args) -> dict:
    from llmhni_local.core.io import sha256_file
    from llmhni_local.core.progress import progress_bar

    base = pin_rater_dtype(pipeline_settings(args, **{"embedder.backend": BACKEND}))
    records = Records(args.records)
    print(f"embedders: {len(records)} trainings already in {args.records}", flush=True)
    print("== base: verdicts of the config's reader, template profiles, MiniLM", flush=True)
    verdicts = base_verdicts(args, base)
    ctx = {"records": records, "base": base, "verdicts": verdicts,
           "sha": "sha256:" + sha256_file(verdicts)}
    cells = [(e, kind) for e in args.embedders for kind in args.profiles]
    out: dict = {"cells": {}, "grid": []}
    with progress_bar("embedders", len(cells) + (len(PROMPT_GRID) if args.choose else 0)) as bar:
        prompts = args.prompts
        if args.choose:
            prompts, out["grid"] = choose_prompts(args, ctx, bar)
        out["prompts"] = prompts
        for e, kind in cells:
            cell = Cell(e, kind, prompts if e == GEMMA else (None, None))
            methods = trainings(args, ctx, cell, METHODS, range(args.seeds))
            first = methods[METHODS[0]][0]  # the cell's figures, as its llmhni seed 0 recorded
            out["cells"][(e, kind)] = {"cell": cell, "pseudo": first["pseudo"],
                                       "seconds": first["seconds"], "methods": methods}
            bar.advance(1)
    out["provenance"] = records.provenance()
    return out


def recall_table(cells: dict) -> list[list]:
    ref = cells.get(REFERENCE)
    rows = []
    for key, r in cells.items():
        a, dns = r["methods"]["llmhni"], r["methods"]["llmhni-dns"]
        vs_ref = "-" if ref is None or key == REFERENCE else ci_cell(
            paired(a, ref["methods"]["llmhni"], f"{r['cell'].name} and the reference"))
        rows.append([r["cell"].label, key[1], mean_pm([s["recall@20"] for s in a]), vs_ref,
                     mean_pm([s["recall@20"] for s in dns]),
                     ci_cell(paired(a, dns, f"{r['cell'].name}'s llmhni and llmhni-dns"))])
    return rows


def secs(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def cost_table(cells: dict) -> list[list]:
    rows = []
    for (_, kind), r in cells.items():
        p, t = r["pseudo"], r["seconds"]
        rows.append([r["cell"].label, kind, p.get("precision", np.nan), p.get("base_rate", np.nan),
                     p.get("precision_choosing", np.nan), p.get("base_choosing", np.nan),
                     p.get("users_choosing", "-"), secs(t["embed"]),
                     secs(t["profiles"]) if kind == "llm" else "-"])
    return rows


def plot(cells: dict, embedders: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2.4 + 2.2 * len(embedders), 4))
    bars = [(kind, m) for kind in PROFILES for m in METHODS]
    width = 0.8 / len(bars)
    for k, (kind, method) in enumerate(bars):
        xs, means, stds = [], [], []
        for g, e in enumerate(embedders):
            if (e, kind) not in cells:
                continue
            v = [s["recall@20"] for s in cells[(e, kind)]["methods"][method]]
            xs.append(g - 0.4 + width * (k + 0.5))
            means.append(np.mean(v))
            stds.append(np.std(v, ddof=1) if len(v) > 1 else 0.0)
        if xs:
            ax.bar(xs, means, width, yerr=stds, capsize=3, label=f"{method}, {kind} profiles",
                   color="tab:blue" if kind == "template" else "tab:orange",
                   hatch="//" if method == "llmhni-dns" else None, edgecolor="black")
    ax.set_xticks(range(len(embedders)), embedders)
    ax.set_ylabel("test Recall@20 (mean ± std over seeds)")
    ax.set_ylim(bottom=0)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


RECALL_HEADERS = ["embedder", "profiles", "llmhni Recall@20", "vs MiniLM/template llmhni",
                  "llmhni-dns Recall@20", "llmhni - llmhni-dns"]
COST_HEADERS = ["embedder", "profiles", "top-N rated >= 4", "all rated >= 4",
                "top-N, users > N", "all, users > N", "users > N", "embed s", "summarize s"]
GRID_HEADERS = ["user prompt", "item prompt", "val Recall@20 (llmhni, seed 0)", "best epoch",
                "chosen"]


def main(args) -> dict:
    est = estimate_s(args)
    print(f"embedders: {len(args.embedders)} embedders x {len(args.profiles)} profile kinds x "
          f"{len(METHODS)} methods x {args.seeds} seeds"
          + (f", {len(PROMPT_GRID)} EmbeddingGemma prompt pairs" if args.choose else "")
          + f"; estimated {est / 3600:.1f} h on a 2-core CPU if nothing is reused", flush=True)
    if args.estimate:
        return {"estimate_s": est}
    check_models(args)
    t0 = time.perf_counter()
    out = run_all(args)
    seconds = time.perf_counter() - t0
    cells = out["cells"]
    n = next((r["pseudo"]["n_pseudo"] for r in cells.values() if r["pseudo"]), "N")
    notes = (f"Backend {BACKEND} for every embedder (vLLM cannot load MPNet; one backend keeps "
             f"the times comparable); llm profiles: user profiles summarised by "
             f"{args.summarizer} (item profiles stay the template's).")
    print(notes)
    if out["grid"]:
        print_table(GRID_HEADERS, out["grid"], "EmbeddingGemma's prompts, chosen on validation")
    recall = recall_table(cells)
    title = "Test Recall@20, verdicts held fixed (paired diffs over seeds and test users, 95% CI)"
    print_table(RECALL_HEADERS, recall, title)
    cost = cost_table(cells)
    cost_title = (f"The alignment's pseudo-positives (each user's top {n} training items by raw "
                  "cosine) rated >= 4, against all training items, mean over users; stage seconds")
    print_table(COST_HEADERS, cost, cost_title)
    figures: dict = {"prompts": list(out["prompts"]) if out["prompts"] else None,
                     "grid": {f"{r[0]}/{r[1]}": r[2] for r in out["grid"]}}
    for (e, kind), r in cells.items():
        for method, seeds in r["methods"].items():
            figures[f"{e}/{kind}/{method}"] = float(np.mean([s["recall@20"] for s in seeds]))
        figures.update({f"{e}/{kind}/{k}": v for k, v in r["pseudo"].items()})
        figures.update({f"{e}/{kind}/{k}_s": v for k, v in r["seconds"].items()})
    if not args.no_docs:
        docs = REPO_ROOT / "docs"
        plot(cells, args.embedders, docs / "embedders.png")
        cmd = docs_command("embedders.py")
        grid = ("\n### EmbeddingGemma's prompts\n\nChosen on validation Recall@20 of `llmhni` "
                "(seed 0, template profiles); the chosen pair is used in every EmbeddingGemma "
                "cell.\n\n" + format_table(GRID_HEADERS, out["grid"]) + "\n"
                if out["grid"] else "")
        write_docs_block("embedders.py", (
            f"## What the embedder buys (`{cmd}`)\n\n"
            f"{written_from(out['provenance'], seconds)} MovieLens-100K as given, LightGCN, "
            f"{args.seeds} seed(s); verdicts of {VERDICTS_SOURCE}, brought "
            f"into every cell through `verdicts.file` (the same G'). {notes} `llmhni-dns` "
            "reads no text (a control). Differences are paired over the same seeds and test "
            "users, 95% bootstrap interval.\n" + grid + f"\n### {title}\n\n"
            + format_table(RECALL_HEADERS, recall) + "\n\n![embedders](embedders.png)\n\n"
            f"### Pseudo-labels and time\n\n{cost_title}. \"users > N\": only the users "
            f"with more than {n} training items, for whom the cosine chooses (for the others "
            "the pseudo-positives are all their items). Seconds of the embed stage and of the "
            "profiles stage with summaries, when they ran.\n\n"
            + format_table(COST_HEADERS, cost) + "\n"))
    result = {"bench": "embedders", "seeds": args.seeds, "backend": BACKEND,
              "summarizer": args.summarizer if "llm" in args.profiles else None,
              "seconds": seconds, **figures}
    emit_json(result)
    return result


if __name__ == "__main__":
    run_main(lambda: main(parse_args()))
