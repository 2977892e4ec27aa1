"""Stage ``train`` (method stage 7): every method of ``pipeline.methods`` and every seed, each
run reused by its key, and the results table ``results.json``."""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np

from llmhni_local.core.io import write_json
from llmhni_local.core.processes import die_with_parent
from llmhni_local.core.progress import progress_bar
from llmhni_local.graph.adjacency import bipartite_adjacency
from llmhni_local.stages.context import Run
from llmhni_local.stages.methods import METHOD_TABLE, train_method
from llmhni_local.stages.plan import TUNE_SUMMARY
from llmhni_local.stages.train_store import (
    METHOD_KEY_FILE,
    TRAIN_STORE,
    finished,
    method_key,
    replace_tree,
)
from llmhni_local.train.run import PER_USER_FILE, load_trained, save_per_user_test
from llmhni_local.verdicts.decide import COUNTS_FILE
from llmhni_local.weights.registry import KNOWN, is_probe_folder


def run_stage(run: Run) -> dict:
    todo: list[tuple[str, int, Path, str]] = []
    for method in run.cfg.pipeline.methods:
        for seed in run.cfg.pipeline.seeds:
            out = run.dir / "train" / method / f"seed{seed}"
            mkey = method_key(run, method, seed)
            stored = run.dir / TRAIN_STORE / mkey[:32]
            if finished(out, mkey):
                run.log(f"[train] {method} seed {seed}: unchanged, reused")
            elif finished(stored, mkey):
                # The bench's curves and choices retrain LLMHNI under other settings in the
                # same folder; a run whose settings come back is copied, not retrained.
                run.log(f"[train] {method} seed {seed}: reused from {TRAIN_STORE}/")
                replace_tree(stored, out)
            elif method == "bpr" and seed == run.cfg.train.seed:
                # Rec_pre *is* this baseline (same backbone, BPR, same seed): copy, do not retrain.
                replace_tree(run.dir / "rec_pre", out)
                if not (out / PER_USER_FILE).is_file():  # a Rec_pre trained before they were kept
                    _per_user_from_model(run, out)
                _keep(run, out, mkey)
            else:
                (out / METHOD_KEY_FILE).unlink(missing_ok=True)  # no stale key if it fails
                todo.append((method, seed, out, mkey))
    if run.cfg.pipeline.jobs > 1 and len(todo) > 1:
        _train_in_parallel(run, todo)
    else:
        for method, seed, out, mkey in todo:
            run.log(f"[train] {method} seed {seed}")
            train_method(run, method, seed, out)
            _keep(run, out, mkey)
    results: dict[str, Any] = {}
    for method in run.cfg.pipeline.methods:
        per_seed = []
        for seed in run.cfg.pipeline.seeds:
            metrics = json.loads((run.dir / "train" / method / f"seed{seed}" / "metrics.json")
                                 .read_text())
            per_seed.append({"seed": seed, "test": metrics["test"], "val": metrics["val"],
                             "best_epoch": metrics["best_epoch"],
                             "epoch_seconds": metrics["epoch_seconds"]})
        results[method] = {"seeds": per_seed, **_mean_std(per_seed)}
    write_json(run.dir / "results.json", {"methods": results,
                                          "simulated_rater": run.cfg.pipeline.rater == "simulated",
                                          "rater": rater_info(run)})
    return {m: {k: v for k, v in r.items() if k != "seeds"} for m, r in results.items()}


def _keep(run: Run, out: Path, mkey: str) -> None:
    """Mark ``out`` finished under ``mkey`` (the key file last) and copy it to the store."""
    (out / METHOD_KEY_FILE).write_text(mkey)
    replace_tree(out, run.dir / TRAIN_STORE / mkey[:32])


def worker_threads(train_threads: int, jobs: int, cores: int | None = None) -> int:
    """Torch threads of one of ``jobs`` parallel trainings: ``train.threads`` when set, else
    the cores shared out (at least one each)."""
    return train_threads or max(1, (cores or os.cpu_count() or 1) // jobs)


def _train_in_parallel(run: Run, todo: list[tuple[str, int, Path, str]]) -> None:
    """Train the ``todo`` cells ``pipeline.jobs`` at a time, each in a fresh process (spawned:
    a forked child of a process that has run OpenMP can hang). A cell that fails stops the
    stage with its error once the running ones end; the cells that finished are kept."""
    jobs = min(run.cfg.pipeline.jobs, len(todo))
    threads = worker_threads(run.cfg.train.threads, jobs)
    cfg = dataclasses.replace(run.cfg, pipeline=dataclasses.replace(
        run.cfg.pipeline, out=str(run.dir.resolve())))
    run.log(f"[train] {len(todo)} trainings, {jobs} at a time, {threads} thread(s) each")
    ctx = multiprocessing.get_context("spawn")
    errors: list[BaseException] = []
    with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx,
                             initializer=die_with_parent,
                             initargs=(os.getpid(),)) as pool, \
            progress_bar("train", len(todo), enabled=run.progress) as bar:
        futures = {pool.submit(_train_cell, cfg, m, s, str(out.resolve()), threads): (m, s, out, k)
                   for m, s, out, k in todo}
        for fut in as_completed(futures):
            method, seed, out, mkey = futures[fut]
            if fut.cancelled():
                continue
            try:
                seconds = fut.result()
            except Exception as exc:  # noqa: BLE001 - any error of a worker; the running ones are kept
                errors.append(exc)
                for other in futures:
                    other.cancel()
                continue
            _keep(run, out, mkey)
            run.log(f"[train] {method} seed {seed}: {seconds:.0f} s")
            bar.advance(1)
    if errors:
        raise errors[0]


def _train_cell(cfg, method: str, seed: int, out: str, threads: int) -> float:
    """One training in a worker process; returns its wall seconds."""
    import torch

    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    train_method(Run(cfg, progress=False, log=lambda _: None), method, seed, Path(out))
    return time.perf_counter() - t0


def stale(run: Run) -> list[str]:
    """The ``train/METHOD/seedN`` folders that do not hold the run the settings now ask for
    (another cell of a shared folder trained there since, or a run stopped part-way): the
    stage is not reused while any is listed."""
    return [f"train/{m}/seed{s}" for m in run.cfg.pipeline.methods for s in run.cfg.pipeline.seeds
            if not finished(run.dir / "train" / m / f"seed{s}", method_key(run, m, s))]


def _model_name(model: str) -> str:
    """A rater model as a reader knows it: the registry's model name, else the folder's."""
    if model in KNOWN:
        return KNOWN[model].description.split(" (")[0]
    return Path(model).name or model


def _guard_note(counts: dict[str, Any]) -> str:
    """What the import guards did, for the rater line ('' when they did nothing)."""
    held, kept = counts.get("held_out") or {}, counts.get("users_kept") or {}
    notes = []
    n_held = int(held.get("validation", 0)) + int(held.get("test", 0))
    if n_held:
        notes.append(f"{n_held} validation or test pairs judged hard "
                     f"{'added anyway (verdicts.keep_held_out)' if held.get('kept_as_adds') else 'not added'}")
    if kept.get("users"):
        notes.append(f"{kept['users']} users kept the edges the file would have removed")
    return "; " + "; ".join(notes) if notes else ""


def rater_info(run: Run) -> dict[str, Any]:
    """How results.json, report.md and the closing table name the rater whose verdicts the
    methods in ``methods`` read: ``description`` always, ``tag`` (a mark on those methods'
    rows) when the rater was tuned inside the run on simulated labels, so no reader takes it
    for a zero-shot or a human-audited rater."""
    methods = [m for m in run.cfg.pipeline.methods if METHOD_TABLE[m].reads_verdicts]
    pipe = run.cfg.pipeline
    counts = _read_json(run.dir / COUNTS_FILE)
    if counts.get("imported") is True:  # made elsewhere (verdicts/imported.py): name where
        return {"kind": "imported", "methods": methods, "source": counts.get("source"),
                "file": counts.get("file"), "sha256": counts.get("sha256"),
                "description": f"verdicts imported from {counts.get('source')} "
                               f"({Path(str(counts.get('file'))).name}, sha256 "
                               f"{str(counts.get('sha256'))[:12]}{_guard_note(counts)})"}
    judged = counts.get("judgments") or {}
    if judged.get("imported") is True:  # judgments made elsewhere, decided here: name both
        rule = (counts.get("verdict_rule") or {}).get("rule", "argmax")
        return {"kind": "imported_judgments", "methods": methods, "source": judged.get("source"),
                "file": judged.get("file"), "sha256": judged.get("sha256"), "rule": rule,
                "description": f"judgments imported from {judged.get('source')} "
                               f"({Path(str(judged.get('file'))).name}, sha256 "
                               f"{str(judged.get('sha256'))[:12]}{_guard_note(counts)}), "
                               f"decided here by the {rule} rule"}
    if pipe.rater == "simulated" and pipe.simulated_auc is not None:
        v, summary = run.cfg.verdicts, _read_json(run.dir / COUNTS_FILE)
        rule = (f"threshold at share {v.target_share:g} kept" if v.tau_source == "share"
                else "taus from audits")
        realised = summary.get("realised_auc")
        return {"kind": "simulated", "methods": methods, "auc": pipe.simulated_auc,
                "realised_auc": realised, "share_noisy": summary.get("share_noisy"),
                "description": f"SIMULATED rater (AUC {pipe.simulated_auc:g}"
                               + (f", realised {realised:.3f}" if realised is not None else "")
                               + f", binormal scores, {rule}; reads the ground-truth noise "
                                 "flags)"}
    if pipe.rater == "simulated":
        return {"kind": "simulated", "methods": methods,
                "description": "SIMULATED rater (reads the ground-truth noise flags, error rate "
                               f"{pipe.simulated_error:g})"}
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
        kind = "probe" if is_probe_folder(adapter) else "LoRA adapter"
        info["description"] = f"{name} + {kind} {Path(adapter).name} (see its card for its labels)"
    else:
        info["description"] = f"{name} (zero-shot)"
    if counts.get("rater_constant"):
        # a rater that says one thing is named wherever its rows are, not only in the log
        info["constant"] = counts.get("constant", {})
        info["constant_note"] = CONSTANT_NOTE
    return info


#: How a constant rater (verdicts.json ``rater_constant``) is marked in reports and tables.
CONSTANT_NOTE = "constant: its verdicts carry no information"


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def _per_user_from_model(run: Run, out: Path) -> None:
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
