"""``llmhni finetune-rater`` and ``llmhni adapters validate``.

Settings: ``--set finetune.key=value`` > flags > ``--config`` TOML file (table ``[finetune]``,
see ``configs/finetune.toml``) > the defaults of ``FinetuneSettings``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from llmhni_local.cli.options import ConfigOption, QuietOption, SetOption


def finetune_rater(
    run: Path = typer.Argument(..., help="Run folder with audited labels (audit import)."),
    out: Path = typer.Option(..., "--out", help="Adapter folder to write, e.g. adapters/NAME."),
    base: Optional[str] = typer.Option(None, "--base", help="Base rater: registry name or model "
                                                            "folder (default smollm2)."),
    config: ConfigOption = None,
    set_: SetOption = None,
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Passes over the labels."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Peak learning rate."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Examples per step."),
    r: Optional[int] = typer.Option(None, "--r", help="LoRA rank."),
    last_layers: Optional[int] = typer.Option(None, "--last-layers",
                                              help="LoRA in the last N layers only (0: all)."),
    val_share: Optional[float] = typer.Option(None, "--val-share",
                                              help="Share of labels held out for validation."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed."),
    force: bool = typer.Option(False, "--force", help="Replace an existing adapter folder."),
    quiet: QuietOption = False,
    kind: str = typer.Option("lora", "--kind", help="lora: LoRA-tune the rater (resumes after "
                                                    "the last finished epoch); probe: fit a "
                                                    "linear head on its hidden states."),
) -> None:
    """Tune the rater on RUN's audited labels: a LoRA adapter or a probe (--kind)."""
    from llmhni_local.core.config import parse_sets
    from llmhni_local.core.runlock import run_lock
    from llmhni_local.tune.finetune import finetune_run, load_finetune_settings
    from llmhni_local.tune.probe import check_kind

    # RUN's audit store records which pairs trained the adapter: one writer at a time.
    with run_lock(run, f"finetune-rater --kind {kind}"):
        if check_kind(kind) == "probe":
            lora_only = {"--epochs": epochs, "--lr": lr, "--r": r, "--last-layers": last_layers,
                         "--val-share": val_share}
            _probe(run, out, config, set_, base=base, batch_size=batch_size, seed=seed,
                   force=force, progress=not quiet,
                   lora_only=[k for k, v in lora_only.items() if v is not None])
            return
        settings = load_finetune_settings(config, {
            "finetune.base": base, "finetune.epochs": epochs, "finetune.lr": lr,
            "finetune.batch_size": batch_size, "finetune.r": r, "finetune.last_layers": last_layers,
            "finetune.val_share": val_share, "finetune.seed": seed, **parse_sets(set_ or [])})
        card = finetune_run(run, out, settings, progress=not quiet, force=force)
        val = card["validation"]
        before = val.get("before_tuning") or {}
        print(f"finetune-rater: adapter -> {out} ({card['labels']['n']} labels, split by "
              f"{card['split']['by']}); validation kappa {_f(val.get('kappa'))} (before tuning "
              f"{_f(before.get('kappa'))}), {card['training']['wall_seconds']:.0f} s; rate with "
              f"`rate {run} --adapter {out}`")


def _probe(run: Path, out: Path, config, sets, *, base, batch_size, seed, force: bool,
           progress: bool, lora_only: list[str]) -> None:
    from llmhni_local.cli.options import load
    from llmhni_local.core.errors import UserError
    from llmhni_local.tune.probe import ProbeConfig, probe_run

    if lora_only:
        raise UserError(f"{', '.join(lora_only)}: LoRA settings; --kind probe does not take them")
    settings = load(ProbeConfig, config, sets, {"probe.base": base, "probe.seed": seed,
                                                "probe.batch_size": batch_size}).probe
    card = probe_run(run, out, settings, force=force, progress=progress)
    views = "; ".join(f"{v} view layer {f['layer']}, kappa {_f(f['kappa'])}, AUC(Low) "
                      f"{_f(f['auc_low'])}" for v, f in card["cv"]["per_view"].items())
    print(f"finetune-rater: probe -> {out} ({card['labels']['n']} labels; {card['cv']['folds']}-"
          f"fold CV by user: {views}), {card['timing']['wall_seconds']:.0f} s; rate with "
          f"`rate {run} --adapter {out}`")


def _f(x) -> str:
    return "n/a" if x is None or x != x else f"{x:.3f}"


adapters_app = typer.Typer(no_args_is_help=True,
                           help="Check adapters (LoRA or probe) before rating with them.")


@adapters_app.command("validate")
def validate(
    path: Path = typer.Argument(..., help="Adapter folder."),
    max_lora_rank: int = typer.Option(16, "--max-lora-rank",
                                      help="The serving engine's max_lora_rank (vLLM's default "
                                           "16; the in-process backend sets it from the adapter)."),
    base: Optional[str] = typer.Option(None, "--base", help="Also check that the card names this "
                                                            "base model (by content hash)."),
    no_card: bool = typer.Option(False, "--no-card", help="Accept an adapter without card.json."),
) -> None:
    """Check an adapter: a LoRA one vLLM can serve (task type, bias, rank, files) or a probe."""
    from llmhni_local.weights.adapters import AdapterRefused, validate_adapter

    try:
        info = validate_adapter(path, max_lora_rank=max_lora_rank, require_card=not no_card,
                                base=base)
    except AdapterRefused as exc:
        for p in exc.problems:
            print(f"  {p}", file=sys.stderr)
        raise
    if info.get("kind") == "probe":
        heads = "; ".join(f"{v}: layer {h['layer']}, C {h['C']:g}, CV kappa {_f(h['kappa'])}"
                          for v, h in info["heads"].items())
        print(f"adapters validate: {path} OK (probe on {info['base']}, {info['labels']} labels; "
              f"{heads})")
        return
    extra = ""
    if "validation_kappa" in info:
        extra = (f"; tuned on {info['labels']} labels, validation kappa "
                 f"{_f(info['validation_kappa'])}")
    print(f"adapters validate: {path} OK (r {info['r']}, alpha {info['alpha']}, modules "
          f"{', '.join(info['target_modules'] or [])}, layers {_layers(info['layers'])}{extra})")


def _layers(layers) -> str:
    if layers == "all":
        return "all"
    return f"{min(layers)}-{max(layers)}" if isinstance(layers, list) and layers else str(layers)

