"""Typed, frozen settings for every stage, loaded from TOML.

Priority rule: command-line flags > the TOML file given with ``--config`` > the defaults
below (the method's own values: docs/METHOD.md). Unknown keys, in a file or as a flag, are
errors that name the key.

A TOML file has one table per section, e.g.::

    [data]
    source = "ml100k"

    [train]
    epochs = 300
"""

from __future__ import annotations

import copy
import dataclasses
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Literal, get_args, get_origin

from llmhni_local.core.errors import ConfigError

#: The accepted spellings of ``train.device``.
DEVICE_SPELLING = re.compile(r"auto|cpu|cuda(:[0-9]+)?")


@dataclass(frozen=True)
class DataSettings:
    """Which data to load.

    Args:
        source: ``ml100k`` (embedded default), ``rlmrec:PATH`` or ``files:PATH``.
            (default: ``"ml100k"``)
        synthetic_noise: share of extra random unobserved pairs added to training and flagged
            as noise (they alone become the ground-truth flags), relative to the training size, in [0, 0.5] (docs/METHOD.md's protocol uses
            5-20%; past a half the "noise" outnumbers the data); 0 disables. (default: ``0.0``)
        max_users: keep only the first N users (quick runs and tests); 0 keeps all.
            (default: ``0``)
        seed: seed of the random split (plain files without timestamps) and of noise
            injection. (default: ``0``)
    """

    source: str = "ml100k"
    synthetic_noise: float = 0.0
    max_users: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.synthetic_noise <= 0.5:
            raise ConfigError(f"data.synthetic_noise must be in [0, 0.5], got {self.synthetic_noise}")
        if self.max_users < 0:
            raise ConfigError(f"data.max_users must be >= 0, got {self.max_users}")


@dataclass(frozen=True)
class ModelSettings:
    """The graph recommender.

    Args:
        name: backbone, ``lightgcn`` or ``ngcf``. (default: ``"lightgcn"``)
        dim: embedding size. (default: ``64``)
        layers: propagation layers. (default: ``3``)
        ngcf_dropout: NGCF message dropout. (default: ``0.1``)
        init: embedding initialisation: ``normal`` (std ``init_std``, as LightGCN's own code)
            or ``xavier`` (uniform, as RLMRec's code). (default: ``"normal"``)
        init_std: standard deviation of the ``normal`` initialisation. With Xavier's much
            smaller vectors (about 0.03 per entry here), a contrastive term on normalised
            vectors (SGL, LLMHNI) has gradients two orders of magnitude above BPR's at the
            start, and Adam then barely moves BPR (docs/DESIGN.md). (default: ``0.1``)
    """

    name: Literal["lightgcn", "ngcf"] = "lightgcn"
    dim: int = 64
    layers: int = 3
    ngcf_dropout: float = 0.1
    init: Literal["normal", "xavier"] = "normal"
    init_std: float = 0.1

    def __post_init__(self) -> None:
        if self.dim <= 0 or self.layers < 0:
            raise ConfigError("model.dim must be > 0 and model.layers >= 0")


@dataclass(frozen=True)
class TrainSettings:
    """The training loop.

    Args:
        loss: ``bpr``, ``tce`` (truncated loss, pairwise form), ``rce`` (reweighted loss) or
            ``sgl`` (BPR + edge-drop contrast). (default: ``"bpr"``)
        epochs: maximum epochs. (default: ``300``)
        batch_size: positive pairs per batch. (default: ``2048``)
        lr: Adam learning rate. (default: ``1e-3``)
        l2: weight of the L2 penalty on the batch's layer-0 embeddings. (default: ``1e-4``)
        eval_every: epochs between validation evaluations. (default: ``5``)
        patience: evaluations without a better validation Recall@20 before stopping; with
            ``eval_every=5`` this waits 50 epochs, which outlasts the flat stretches of
            LightGCN's validation curve seen on MovieLens-100K. (default: ``10``)
        min_epochs: never stop before this epoch. (default: ``50``)
        seed: seed of initialisation, sampling and dropout. (default: ``0``)
        tce_max_drop: T-CE's final drop rate. (default: ``0.1``)
        tce_warmup: epochs over which T-CE's drop rate rises to its maximum. (default: ``30``)
        rce_alpha: R-CE's exponent alpha. (default: ``0.25``)
        ssl_weight: weight of the SGL contrastive term. (default: ``0.1``)
        ssl_temp: InfoNCE temperature tau. (default: ``0.2``)
        ssl_warmup: epochs over which SGL's contrastive weight rises linearly from 0 to
            ``ssl_weight`` (epoch ``e`` uses ``min(1, (e - 1) / W)`` of it), as LLMHNI's
            ``llmhni.contrast_warmup`` does for its two terms, so the two compare fairly; at
            full weight from a random start SGL's BPR part stalled for about 15 epochs on
            MovieLens-100K (docs/DESIGN.md). 0: full weight from the start. (default: ``10``)
        edge_drop: edge-drop rate rho of contrastive views. (default: ``0.1``)
        threads: torch CPU threads; 0 uses torch's default. (default: ``0``)
        device: where the model, graphs and losses live: ``auto`` (CUDA when torch sees a
            GPU, else the CPU), ``cpu``, ``cuda`` (the current CUDA device) or ``cuda:N``.
            Sampling stays on the CPU either way (docs/DESIGN.md, Trainer, "Devices"); a
            CUDA request on a machine without one is an error before any training.
            (default: ``"auto"``)
    """

    loss: Literal["bpr", "tce", "rce", "sgl"] = "bpr"
    epochs: int = 300
    batch_size: int = 2048
    lr: float = 1e-3
    l2: float = 1e-4
    eval_every: int = 5
    patience: int = 10
    min_epochs: int = 50
    seed: int = 0
    tce_max_drop: float = 0.1
    tce_warmup: int = 30
    rce_alpha: float = 0.25
    ssl_weight: float = 0.1
    ssl_temp: float = 0.2
    ssl_warmup: int = 10
    edge_drop: float = 0.1
    threads: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        # Only the spelling is checked here (no torch import in the settings layer); whether
        # the machine has that device is llmhni_local.core.device.resolve_device's question.
        if not DEVICE_SPELLING.fullmatch(self.device):
            raise ConfigError(f"train.device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        if self.epochs <= 0 or self.batch_size <= 0 or self.eval_every <= 0:
            raise ConfigError("train.epochs, train.batch_size and train.eval_every must be > 0")
        if self.patience <= 0:
            raise ConfigError(f"train.patience must be > 0, got {self.patience}")
        if not 0.0 <= self.tce_max_drop < 1.0:
            raise ConfigError(f"train.tce_max_drop must be in [0, 1), got {self.tce_max_drop}")
        if self.ssl_warmup < 0:
            raise ConfigError(f"train.ssl_warmup must be >= 0, got {self.ssl_warmup}")
        if not 0.0 <= self.edge_drop < 1.0:
            raise ConfigError(f"train.edge_drop must be in [0, 1), got {self.edge_drop}")


@dataclass(frozen=True)
class EvalSettings:
    """Full-ranking evaluation.

    Args:
        ks: cut-offs of Recall@K and NDCG@K. (default: ``(10, 20)``)
        batch_users: users scored at once (bounds memory to batch x items). (default: ``1024``)
    """

    ks: tuple[int, ...] = (10, 20)
    batch_users: int = 1024

    def __post_init__(self) -> None:
        if not self.ks or min(self.ks) <= 0:
            raise ConfigError(f"eval.ks must be positive cut-offs, got {self.ks}")


@dataclass(frozen=True)
class TrainConfig:
    """Everything ``llmhni train`` needs."""

    data: DataSettings = field(default_factory=DataSettings)
    model: ModelSettings = field(default_factory=ModelSettings)
    train: TrainSettings = field(default_factory=TrainSettings)
    eval: EvalSettings = field(default_factory=EvalSettings)


# ---------------------------------------------------------------------------- loading
def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = get_origin(tp)
    if origin is Literal:
        if value not in get_args(tp):
            raise ConfigError(f"{where}: {value!r} is not one of {list(get_args(tp))}")
        return value
    if origin in (typing.Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(value, args[0], where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        inner = get_args(tp)[0]
        return tuple(_coerce(v, inner, where) for v in value)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {value!r}")
        return build(tp, value, where)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        try:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected an integer, got {value!r}") from None
    if tp is float:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if tp is str:
        return str(value)
    return value


def build(cls: type, values: dict[str, Any], where: str = "") -> Any:
    """Build settings ``cls`` from a (possibly nested) dict; unknown keys are errors."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(f"unknown setting {prefix}{unknown[0]} (known: {', '.join(sorted(names))})")
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}" if where else k) for k, v in values.items()}
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{where or cls.__name__}: {exc}") from None


def read_toml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: settings file not found")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None


def merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``overrides`` (dotted keys allowed: ``{"train.epochs": 5}``) into a copy of
    ``base``; neither argument is changed. ``None`` values are skipped (an unset flag).

    >>> base = {"train": {"epochs": 3}}
    >>> merge(base, {"train.epochs": 5, "train.lr": None}), base
    ({'train': {'epochs': 5}}, {'train': {'epochs': 3}})
    """
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        if value is None:
            continue
        parts = key.split(".")
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"setting {key}: {p} is not a table")
        node[parts[-1]] = copy.deepcopy(value)
    return out


def load_config(cls: type, path: str | Path | None = None,
                overrides: dict[str, Any] | None = None, *, ignore: Iterable[str] = ()) -> Any:
    """Defaults < TOML file < overrides, as one frozen settings object of type ``cls``.

    The one loader of every command and of the pipeline.

    Args:
        cls: the settings dataclass, one field per TOML table (e.g. ``RunConfig``).
        path: the TOML file, or None for defaults and overrides only.
        overrides: command-line values, dotted (``{"train.epochs": 5}``); None values are
            skipped.
        ignore: tables of the file that belong to other commands (one file serves them all);
            any other table or key ``cls`` does not know is an error naming it and the file.
    """
    values = read_toml(path) if path else {}
    skip = set(ignore)
    values = merge({k: v for k, v in values.items() if k not in skip}, overrides or {})
    try:
        return build(cls, values)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}" if path else str(exc)) from None


def parse_sets(items: Iterable[str]) -> dict[str, Any]:
    """``--set table.key=value`` items as dotted overrides; values are TOML (``5``, ``[1, 2]``,
    ``true``), anything else a bare string.

    >>> parse_sets(["train.epochs=5", "data.source=files:x.csv", "pipeline.seeds=[0, 1]"])
    {'train.epochs': 5, 'data.source': 'files:x.csv', 'pipeline.seeds': [0, 1]}
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or "." not in key.strip():
            raise ConfigError(f"--set {item!r}: expected table.key=value")
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw  # a bare string
        out[key.strip()] = value
    return out


def to_dict(settings: Any) -> dict[str, Any]:
    """Settings as plain data (for manifests and metrics.json)."""
    return dataclasses.asdict(settings)
