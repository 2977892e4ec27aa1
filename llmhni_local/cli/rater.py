"""``llmhni rater assess RUN``: how well a rater reads noise on users held out from every tuning
set (docs/DESIGN.md, "Assessing a rater"; the work is :func:`llmhni_local.assess.assess_run`).

Settings: ``--set`` > the flags > the ``--config`` file > defaults, as on every command; with
no ``--config`` the run's own recorded settings (``RUN/manifest.json``: its data, rater, rate,
tune and verdicts tables) take the file's place, so ``rater assess RUN`` assesses the rater
the run used (its tuned probe too, with ``tune.kind = "probe"``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Optional

import typer

from llmhni_local.cli.options import ConfigOption, QuietOption, SetOption, run_config
from llmhni_local.core.runlock import run_lock

app = typer.Typer(no_args_is_help=True, help="Assess a rater on users held out from every "
                                             "tuning set.")
RUN_HELP = "Run folder with candidates and judgments (profiles/, candidates.parquet, judgments.sqlite)."


@app.command("assess")
def assess(
    run: Path = typer.Argument(..., help=RUN_HELP),
    config: ConfigOption = None,
    set_: SetOption = None,
    sample: int = typer.Option(200, "--sample", help="Pairs per class (clean, noisy, synthetic) of held-out users; 200 (1,200 judgments) stays within 10 minutes on 2 cores with SmolLM2-135M."),
    users: int = typer.Option(150, "--users", help="Held-out users drawn, whose pairs make the sample."),
    seed: int = typer.Option(0, "--seed", help="Seed of the users, the pairs and the folds."),
    rater_model: Optional[str] = typer.Option(None, "--rater-model", help="Registry name, model folder or prepared GGUF (rater.model)."),
    adapter: Optional[str] = typer.Option(None, "--adapter", help="peft LoRA adapter or probe folder (rater.adapter); its pairs.json users are left out."),
    prompts: Optional[Path] = typer.Option(None, "--prompts", help="Folder of prompt templates (default: prompts/)."),
    quiet: QuietOption = False,
) -> None:
    """Rate a sample of held-out users' pairs (resumable) and report, per view, label shares,
    AUC on natural and synthetic noise, kappas, the LLM's share and the time coverage costs
    -> RUN/assess/assess.json and assess.png."""
    from llmhni_local.assess.run import assess_run, default_rate
    from llmhni_local.assess.sample import assessed_rater, check_run, run_overrides
    from llmhni_local.assess.settings import AssessSettings
    from llmhni_local.stages.profiles import profiles_data

    check_run(run)  # before settings that may name a missing model
    flags: dict[str, Any] = {"rater.model": rater_model, "rater.adapter": adapter}
    if adapter is not None:
        flags["tune.kind"] = "none"  # the adapter given is the rater: no tuned probe of the run
    if config is None:
        flags = {**run_overrides(run), **{k: v for k, v in flags.items() if v is not None}}
    cfg = run_config(config, set_, flags)
    settings = AssessSettings(sample=sample, users=users, seed=seed,
                              constant_share=cfg.verdicts.constant_share,
                              target_share=cfg.verdicts.target_share)
    rater = assessed_rater(run, cfg.rater, cfg.tune.kind)
    rate = default_rate(rater, dataclasses.replace(cfg.rate, max_failure_share=1.0),
                        prompts_dir=prompts, progress=not quiet)
    with run_lock(run, "rater assess"):
        result = assess_run(run, rate, settings, data=profiles_data(run, cfg.data),
                            adapter=rater.adapter, batch_size=cfg.rate.batch_size,
                            rater_info={"settings": dataclasses.asdict(rater)},
                            log=(lambda m: None) if quiet else print)
    for line in summary_lines(result.figures):
        print(line)


def summary_lines(f: dict[str, Any]) -> list[str]:
    """What ``rater assess`` prints: a constant view first, then the figures."""
    lines = []
    for view in f["constant"]:
        c = f["views"][view]["constant"]
        lines.append(f"{f['constant_text']} ({view} view: {c['value']} on {c['share']:.1%} of "
                     f"{c['judgments']} answered judgments; threshold {c['threshold']:g})")
    tag = "SIMULATED labels" if f["simulated"] else "audited labels"
    h, s = f["held_out"], f["sample"]["counts"]
    tuned = ", ".join(f"{n} users in {k}" for k, n in h["tuning_users"].items()) or "no tuning set"
    lines.append(f"rater assess: {f['rater']['model_id']}"
                 + (f" [{f['rater']['adapter']}]" if f["rater"]["adapter"] else "")
                 + f" on {h['drawn_users']} of {h['held_out_users']} held-out users "
                 f"(left out: {tuned}); "
                 f"{s['clean']} clean, {s['noisy']} noisy, {s['synthetic']} synthetic pairs; "
                 f"{tag} ({f['labels']['pairs']} pairs: {f['labels']['audited']} audited, "
                 f"{f['labels']['simulated_from_ratings']} from ratings)")
    sp, j = f["speed"], f["judgments"]
    lines.append(f"judgments: {j['rated']} rated, {j['skipped']} stored before; "
                 f"{_num(sp.get('judgments_per_s'), '.1f')} judgments/s "
                 f"(steady {_num(sp.get('judgments_per_s_steady'), '.1f')}/s, "
                 f"{sp.get('measured')})")
    lines.append("view | High Medium Low failed | AUC natural [95% over users] | "
                 "AUC synthetic [95%] | kappa | cross-fitted AUC natural llm / non-LLM / "
                 "stacked | synthetic llm / non-LLM / stacked")
    for view in ("user", "item"):
        v = f["views"][view]
        lab, nat, syn = v["labels"], v["natural"], v["synthetic"]
        scored = f" (+{lab['scored']} scored, no label)" if lab.get("scored") else ""
        lines.append(f"{view} | {lab['High']} {lab['Medium']} {lab['Low']} {lab['failed']}"
                     f"{scored} | "
                     f"{_roc_cell(nat)} | {_roc_cell(syn)} | "
                     f"{_num(v['agreement']['kappa'])} | {_share(nat)} | {_share(syn)}")
    b = f["both_views"]
    lines.append(f"both views | | | | verdict kappa {_num(f['verdict']['kappa'])} | "
                 f"{_share(b['natural'])} | {_share(b['synthetic'])}")
    t = f["verdict_threshold"]
    if t["share"]:
        cv = t.get("audits_cv") or {}
        lines.append(f"threshold rule on the scores ({t['pairs']} pairs): verdict kappa "
                     f"{_num(t['share']['kappa'])} with taus at {t['target_share']:.0%} High "
                     f"per view, {_num(cv.get('kappa'))} with taus chosen on the labels "
                     f"(cross-fitted, folds by user)")
    costs = f["coverage_costs"]
    if costs.get("available"):
        for row in costs["targets"]:
            lines.append(f"coverage {row['coverage']:.1f}: {row['observed_pairs']:,} observed "
                         f"pairs ({_settings(row['settings'])}), {row['judgments_observed']:,} "
                         f"judgments, {_duration(row['seconds_observed'])} on this machine "
                         f"({_duration(row['seconds_with_unobserved'])} with the run's "
                         "unobserved candidates)")
    else:
        lines.append(f"coverage costs: not available ({costs.get('why')})")
    lines.append(f"-> {f['folder']}/assess.json, {f['plot']}")
    return lines


def _roc_cell(task: dict[str, Any]) -> str:
    """The raw AUC and its interval over users: ``0.598 [0.541, 0.652]``."""
    ci = task.get("auc_ci95")
    if task.get("auc") is None or not ci or any(c is None or c != c for c in ci):
        return _num(task.get("auc"))
    return f"{task['auc']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"


def _num(x: Any, fmt: str = ".3f") -> str:
    return "-" if x is None else format(x, fmt)


def _share(task: dict[str, Any]) -> str:
    cf = task["cross_fitted"]
    return " / ".join(_num(cf[k]) for k in ("llm", "non_llm", "stacked"))


def _settings(way: dict[str, Any]) -> str:
    if way["candidates.k_pos"]:
        return f"candidates.k_pos = {way['candidates.k_pos']}"
    return f"candidates.k_pos_share = {way['candidates.k_pos_share']:.3f}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown time"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
