"""A probe rater: a linear head on the base model's hidden state at the answer position.

The rater's label tokens carry little about relevance, but its hidden state at the answer
position carries more (docs/BENCHMARKS.md). ``finetune-rater --kind probe`` reads that state,
for both views' prompts of every audited pair (simulated audits count, and the card says so),
from a few candidate layers (:func:`~llmhni_local.backends.probe_states.candidate_layers`) and fits
a 3-class logistic head (:mod:`llmhni_local.tune.probe_head`) per view, choosing the layer and
the regularisation ``C`` by cross-validation grouped by user.

**One head per view**, not one head with the view as a feature: the two views' prompts differ
in their whole text, so their states differ in where the information sits (different best
layers were measured per view), and a head per view can choose its own layer; every pair
gives one example to each head, so neither head has fewer labels than a joint one would.

The folder (``adapters/NAME``) holds ``probe.safetensors`` (per view: the standardisation and
the weights), ``card.json`` (kind ``probe``, base model sha256, layer and ``C`` per view,
label sha256, the cross-validation figures, the seconds), ``README.md`` and ``pairs.json``
(every labelled pair trained the heads; the cross-validation figures are out-of-fold). It is
rated with through ``rate --adapter`` / ``rater.adapter``, served by
:class:`llmhni_local.backends.probe_backend.ProbeRater` in the dtype it was fitted in.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from safetensors.numpy import save_file

from llmhni_local.audit.records import AuditStore, labels_hash
from llmhni_local.backends.probe_states import (
    answer_states,
    candidate_layers,
    load_base,
    state_dtype,
    view_tails,
)
from llmhni_local.core.errors import ConfigError, UserError
from llmhni_local.core.io import publish_folder, write_json, write_text
from llmhni_local.core.progress import progress_bar
from llmhni_local.engine.api import LABELS
from llmhni_local.engine.chat import encode_prompts, load_tokenizer, render_prompts
from llmhni_local.engine.prompts import VIEW_TEMPLATES, load_templates
from llmhni_local.eval.stats import group_folds
from llmhni_local.judgments.plan import run_max_liked, view_messages
from llmhni_local.text.profiles import load_profiles
from llmhni_local.tune.finetune import checked_labels
from llmhni_local.tune.probe_head import balanced_weights, fit_head, grid_cv
from llmhni_local.weights.probe import (
    CARD_FILE,
    PROBE_FORMAT,
    card_pairs,
    head_tensors,
    probe_problems,
)
from llmhni_local.weights.registry import (
    PROBE_FILE,
    RATER_NEEDS,
    model_hash,
    model_id,
    resolve_checked,
    resolve_model,
)

KINDS = ("lora", "probe")


@dataclass(frozen=True)
class ProbeSettings:
    """Fitting a probe rater (``configs/finetune.toml``, table ``[probe]``).

    Args:
        base: the rater whose states are read: registry name or model folder; the same model
            must then rate with the probe. (default: ``"smollm2"``)
        layer_step: candidate layers are every ``layer_step``-th decoder layer, the middle one
            and the final norm's output. (default: ``4``)
        cs: the inverse regularisation strengths tried (sklearn's ``C`` on standardised
            states); the smallest is below what 250 simulated ML-100K labels chose (0.001), so
            the choice is not pinned to the grid's edge. (default:
            ``(0.0001, 0.001, 0.01, 0.1, 1.0)``)
        folds: cross-validation folds, grouped by user; every label needs at least this many
            pairs and the labels this many users. (default: ``5``)
        views: the views that get a head (rating needs both). (default: ``("user", "item")``)
        batch_size: prompts per forward pass of the base model. (default: ``16``)
        dtype: the base model's dtype for the states; ``auto``: what the rating backends
            resolve for this CPU (bfloat16 with AVX-512 BF16 or AMX), else float32. The
            probe is served in the same dtype. (default: ``"auto"``)
        max_liked: L of the item-centric prompt; ``None``: the run's rating setting.
            (default: ``None``)
        seed: seed of the fold assignment. (default: ``0``)
        threads: torch CPU threads (0: torch's default). (default: ``0``)
    """

    base: str = "smollm2"
    layer_step: int = 4
    cs: tuple[float, ...] = (0.0001, 0.001, 0.01, 0.1, 1.0)
    folds: int = 5
    views: tuple[str, ...] = ("user", "item")
    batch_size: int = 16
    dtype: str = "auto"
    max_liked: int | None = None
    seed: int = 0
    threads: int = 0

    def __post_init__(self) -> None:
        checks = [
            (self.layer_step >= 0, f"probe.layer_step must be >= 0, got {self.layer_step}"),
            (len(self.cs) > 0 and all(c > 0 for c in self.cs),
             f"probe.cs must be positive numbers, got {list(self.cs)}"),
            (self.folds >= 2, f"probe.folds must be >= 2, got {self.folds}"),
            (set(self.views) == {"user", "item"} and len(self.views) == 2,
             f"probe.views must be the two views user and item, got {list(self.views)}"),
            (self.batch_size > 0, f"probe.batch_size must be > 0, got {self.batch_size}"),
            (self.dtype in ("auto", "float32", "bfloat16"),
             f"probe.dtype must be auto, float32 or bfloat16, got {self.dtype!r}"),
            (self.max_liked is None or self.max_liked >= 0,
             f"probe.max_liked must be >= 0, got {self.max_liked}"),
            (self.threads >= 0, f"probe.threads must be >= 0, got {self.threads}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)


def check_kind(kind: str) -> str:
    """``finetune-rater --kind``: ``lora`` or ``probe``."""
    if kind not in KINDS:
        raise UserError(f"--kind {kind!r}: unknown kind; choose one of {', '.join(KINDS)}")
    return kind


# ---------------------------------------------------------------------------- labels
def check_labels(labels, folds: int) -> tuple[Any, np.ndarray]:
    """The labels sorted by pair and their class indices; every problem a one-line error
    naming the count (single class, too few labels per class or users for ``folds``)."""
    labels = checked_labels(labels, empty="no labels to fit a probe on; run `audit import` "
                                          "(or `audit simulate`)")
    y = np.asarray([LABELS.index(x) for x in labels["label"]], dtype=np.int64)
    counts = np.bincount(y, minlength=len(LABELS))
    present = [LABELS[k] for k in range(len(LABELS)) if counts[k]]
    if len(present) == 1:
        raise UserError(f"all {len(y)} labels are {present[0]}: a probe needs labels of "
                        "every class")
    short = [(LABELS[k], int(counts[k])) for k in range(len(LABELS)) if counts[k] < folds]
    if short:
        shown = ", ".join(f"{lab} {n}" for lab, n in short)
        raise UserError(f"too few labels per class for {folds}-fold cross-validation: {shown} "
                        f"(need >= {folds} each; lower probe.folds or audit more pairs)")
    n_users = int(labels["user"].nunique())
    if n_users < folds:
        raise UserError(f"the labels come from {n_users} users; {folds}-fold cross-validation "
                        "grouped by user needs at least as many users as folds")
    return labels, y


# ---------------------------------------------------------------------------- prompts, states
@dataclass
class ProbeInputs:
    """What the fit reads: model, tokenizer, templates and each view's prompt token ids."""

    spec: Any
    base_sha: str
    tokenizer: Any
    templates: dict
    tails: dict[str, str]
    ids: dict[str, list[list[int]]] = field(default_factory=dict)


def prepare_inputs(profiles, labels, settings: ProbeSettings, max_liked: int,
                   prompts_dir: str | Path | None = None) -> ProbeInputs:
    """Every check and every prompt before the model loads (prompts through ``chat.py``)."""
    spec = resolve_checked(settings.base, RATER_NEEDS)
    templates = load_templates(tuple(VIEW_TEMPLATES.values()), prompts_dir)
    tokenizer = load_tokenizer(spec.path)
    users = labels["user"].astype(np.int64).to_numpy()
    items = labels["item"].astype(np.int64).to_numpy()
    if users.max() >= len(profiles.users) or items.max() >= len(profiles.items) \
            or users.min() < 0 or items.min() < 0:
        raise UserError("labels name users or items the run's profiles do not have")
    tails = view_tails(tokenizer, templates, max_liked)
    if len(set(tails.values())) < len(tails) or not all(tails.values()):
        raise UserError("the two views' prompts end with the same text; a probe cannot tell "
                        "which view a prompt is at rating time (make the templates' endings "
                        "differ)")
    inputs = ProbeInputs(spec=spec, base_sha=model_hash(spec.path), tokenizer=tokenizer,
                         templates=templates, tails=tails)
    for view in settings.views:
        tpl = templates[VIEW_TEMPLATES[view]]
        msgs = [view_messages(view, int(u), int(i), profiles, tpl, max_liked)
                for u, i in zip(users, items)]
        inputs.ids[view] = encode_prompts(tokenizer, render_prompts(tokenizer, msgs))
    return inputs


def compute_states(inputs: ProbeInputs, settings: ProbeSettings, dtype: str,
                   memo: dict | None = None, progress: bool = False,
                   ) -> tuple[dict[str, np.ndarray], list[int], int]:
    """Per view ``(n, layers, hidden)`` states, the candidate layers and how many prompts'
    states came from ``memo`` (a dict a caller keeps across fits on nested label sets; keyed by
    base model, dtype, layers and prompt ids, so it is never wrong). ``progress``: a bar over
    the prompts read (most of a fit's time: 2,000 prompts took 20 minutes with a 0.5B model on
    2 cores)."""
    import torch

    if settings.threads:
        torch.set_num_threads(settings.threads)
    memo = memo if memo is not None else {}
    model = None
    pad_id = inputs.tokenizer.pad_token_id if inputs.tokenizer.pad_token_id is not None else 0
    n_layers = _n_layers(inputs.spec.path)
    layers = candidate_layers(n_layers, settings.layer_step)
    key0 = (inputs.base_sha, dtype, tuple(layers))
    todo = {view: [k for k, r in enumerate(rows) if (key0, tuple(r)) not in memo]
            for view, rows in inputs.ids.items()}
    reused = sum(len(rows) - len(todo[view]) for view, rows in inputs.ids.items())
    out = {}
    with progress_bar("probe states", sum(map(len, todo.values())), enabled=progress) as bar:
        for view, rows in inputs.ids.items():
            if todo[view]:
                model = model if model is not None else load_base(str(inputs.spec.path), dtype)
                got = answer_states(model, [rows[k] for k in todo[view]], layers, pad_id,
                                    settings.batch_size, advance=bar.advance)
                for k, s in zip(todo[view], got):
                    memo[(key0, tuple(rows[k]))] = s
            out[view] = np.stack([memo[(key0, tuple(r))] for r in rows])
    return out, layers, reused


def _n_layers(path: Path) -> int:
    cfg = json.loads((Path(path) / "config.json").read_text())
    cfg = cfg.get("text_config", cfg)
    return int(cfg["num_hidden_layers"])


# ---------------------------------------------------------------------------- choosing, fitting
def select_heads(states: dict[str, np.ndarray], y: np.ndarray, users: np.ndarray,
                 layers: Sequence[int], settings: ProbeSettings) -> tuple[dict, dict]:
    """Per view, the (layer, C) with the lowest out-of-fold log-loss and the head fitted on
    every label with them; returns ``(heads, cv)`` (the card's figures)."""
    folds = group_folds(users, y, settings.folds, settings.seed)
    heads, cv = {}, {"folds": settings.folds, "grouped_by": "user",
                     "chosen_by": "lowest class-weighted out-of-fold log-loss",
                     "fold_sizes": np.bincount(folds, minlength=settings.folds).tolist(),
                     "per_view": {}, "grid": []}
    for view, x in states.items():
        rows = grid_cv(x, y, folds, settings.cs)
        best = min(rows, key=lambda r: r["log_loss"])
        j = best["layer_pos"]
        heads[view] = (layers[j], best["C"], fit_head(x[:, j], y, best["C"], balanced_weights(y)))
        cv["per_view"][view] = {"layer": layers[j], "C": best["C"], **_cv_figures(best)}
        cv["grid"] += [{"view": view, "layer": layers[r["layer_pos"]], "C": r["C"],
                        "log_loss": r["log_loss"], "kappa": r["kappa"], "auc_low": r["auc_low"]}
                       for r in rows]
    return heads, cv


def _cv_figures(row: dict) -> dict:
    """A cross-validation row without its arrays and search keys (what the card keeps)."""
    return {k: v for k, v in row.items() if k not in ("probs", "layer_pos", "C")}


# ---------------------------------------------------------------------------- the fit
def fit_probe(profiles, labels, out: str | Path, settings: ProbeSettings | None = None, *,
              prompts_dir: str | Path | None = None, max_liked: int = 10,
              label_sources: Sequence[dict] = (), run_dir: str | Path | None = None,
              force: bool = False, state_memo: dict | None = None,
              log: Callable[[str], None] = print, progress: bool = False) -> dict[str, Any]:
    """Fit a probe on ``labels`` (DataFrame: user, item, label, optionally simulated) and
    write its folder to ``out``; returns the card. Every input check runs before the model
    loads. ``state_memo`` and ``progress``: see :func:`compute_states`."""
    settings = settings or ProbeSettings()
    out = Path(out)
    if out.exists() and not force:
        raise UserError(f"{out} exists; choose another --out or pass --force to replace it")
    t0 = time.perf_counter()
    labels, y = check_labels(labels, settings.folds)
    inputs = prepare_inputs(profiles, labels, settings, max_liked, prompts_dir)
    dtype = state_dtype() if settings.dtype == "auto" else settings.dtype
    states, layers, reused = compute_states(inputs, settings, dtype, state_memo, progress)
    t_states = time.perf_counter() - t0
    users = labels["user"].astype(np.int64).to_numpy()
    heads, cv = select_heads(states, y, users, layers, settings)
    t_total = time.perf_counter() - t0
    for view, fig in cv["per_view"].items():
        log(f"probe: {view} view: layer {fig['layer']}, C {fig['C']:g}; cross-validated kappa "
            f"{fig['kappa']:.3f}, AUC(Low) {fig['auc_low']:.3f} on {fig['n']} labels")
    card = probe_card(out.name, settings, inputs, labels, y, heads, cv, dtype=dtype,
                      layers=layers, max_liked=max_liked, profiles_hash=profiles.hash,
                      label_sources=label_sources, run_dir=run_dir,
                      timing={"states_seconds": t_states, "fit_seconds": t_total - t_states,
                              "wall_seconds": t_total, "states_reused": int(reused)})
    pairs = {"train": labels[["user", "item"]].astype(int).values.tolist(), "validation": [],
             "split": "none (every label fitted the heads; the figures are out-of-fold)"}
    write_probe(out, heads, card, pairs)
    return json.loads((out / CARD_FILE).read_text())


def probe_card(name: str, settings: ProbeSettings, inputs: ProbeInputs, labels, y: np.ndarray,
               heads: dict, cv: dict, *, dtype: str, layers: list[int], max_liked: int,
               profiles_hash: str, label_sources: Sequence[dict], run_dir,
               timing: dict) -> dict[str, Any]:
    """The card (``card.json``): what the probe is, what it was fitted on, how it did."""
    import torch
    import transformers

    spec = inputs.spec
    return {
        "format": PROBE_FORMAT, "kind": "probe", "name": name,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "base_model": {"name": settings.base, "path": str(spec.path), "sha256": inputs.base_sha,
                       "kind": spec.kind, "source": str(spec.source) if spec.source else None},
        "labels": {"sha256": labels_hash(labels), "n": int(len(labels)),
                   "counts": {lab: int((y == k).sum()) for k, lab in enumerate(LABELS)},
                   "simulated": bool(labels["simulated"].astype(bool).all())
                   if "simulated" in labels else False,
                   "users": int(labels["user"].nunique()),
                   "sources": list(label_sources), "run": str(run_dir) if run_dir else None},
        "dtype": dtype,
        "heads": {view: {"layer": int(layer), "C": float(c), "hidden_size":
                         int(head.weight.shape[1])} for view, (layer, c, head) in heads.items()},
        "candidate_layers": list(layers),
        "cv": cv,
        "prompts": {"templates": {n: t.hash for n, t in inputs.templates.items()},
                    "max_liked": max_liked, "profiles_sha256": profiles_hash,
                    "views": list(settings.views), "tails": inputs.tails,
                    "answer_position": "the rendered prompt's last token"},
        "settings": dataclasses.asdict(settings),
        "timing": timing,
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
    }


def write_probe(out: Path, heads: dict, card: dict, pairs: dict) -> None:
    """Assemble the folder in a temporary sibling, check it, rename it into place."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        save_file(head_tensors({v: h for v, (_, _, h) in heads.items()}), str(tmp / PROBE_FILE))
        write_json(tmp / CARD_FILE, card)
        write_text(tmp / "README.md", probe_markdown(card))
        (tmp / "pairs.json").write_text(json.dumps(pairs) + "\n")
        problems = probe_problems(tmp)
        if problems:
            raise UserError(f"the fitted probe would not load: {problems[0]}")
        publish_folder(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def probe_markdown(card: dict[str, Any]) -> str:
    base, labels, cv = card["base_model"], card["labels"], card["cv"]
    lines = [f"# Probe {card['name']}", "",
             f"Probe rater for LLMHNI: a linear head per view on `{base['name']}`'s hidden state "
             f"at the answer position, fitted with `llmhni finetune-rater --kind probe` "
             f"({card['created']}).", "",
             f"- Base model: `{base['name']}` (sha256 `{base['sha256'][:16]}...`), states in "
             f"{card['dtype']}",
             f"- Labels: {labels['n']} audited pairs of {labels['users']} users (High "
             f"{labels['counts']['High']}, Medium {labels['counts']['Medium']}, Low "
             f"{labels['counts']['Low']}), sha256 `{labels['sha256'][:16]}...`"
             + (" — **SIMULATED from ratings**" if labels.get("simulated") else "")]
    for view, fig in cv["per_view"].items():
        lines.append(f"- {view} view: layer {fig['layer']}, C {fig['C']:g}; {cv['folds']}-fold "
                     f"CV by user: kappa {fig['kappa']:.3f}, AUC(Low) {fig['auc_low']:.3f}, "
                     f"log-loss {fig['log_loss']:.3f}")
    lines += [f"- Fitted in {card['timing']['wall_seconds']:.0f} s (hidden states "
              f"{card['timing']['states_seconds']:.0f} s).", "",
              "Rate with it: `python cli.py rate RUN --adapter adapters/" + card["name"] + "`.",
              "", "The full card is `card.json`.", ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------- a run's labels
@dataclass(frozen=True)
class ProbeConfig:
    """A settings file for ``finetune-rater --kind probe``: the table ``[probe]``."""

    probe: ProbeSettings = field(default_factory=ProbeSettings)


def probe_run(run_dir: str | Path, out: str | Path, settings: ProbeSettings | None = None,
              **kwargs: Any) -> dict[str, Any]:
    """:func:`fit_probe` on every audited label of ``RUN`` (``RUN/audit/audit.sqlite``,
    simulated ones included and marked); the pairs are recorded there as the probe's training
    pairs, so ``audit report`` leaves them out."""
    settings = settings or ProbeSettings()
    run_dir = Path(run_dir)
    profiles = load_profiles(run_dir)
    with AuditStore(run_dir, create=False) as store:
        labels = store.labels()
        sources = [{"file": r["file"], "sha256": r["sha256"], "rows": r["rows"],
                    "simulated": r["simulated"]} for r in store.imports()]
    max_liked = run_max_liked(run_dir, settings.max_liked)
    card = fit_probe(profiles, labels, out, settings, max_liked=max_liked,
                     label_sources=sources, run_dir=run_dir, **kwargs)
    adapter_id = model_id(resolve_model(settings.base), out)
    with AuditStore(run_dir) as store:
        store.mark_finetune([tuple(p) for p in card_pairs(out)], adapter_id, "train")
    card["adapter_id"] = adapter_id
    return card
