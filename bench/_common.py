"""Helpers shared by the ``bench/`` scripts: paths, a plain-text table, mean ± std and the
final JSON line every bench script prints.

Bench scripts run as ``python bench/NAME.py`` from a checkout (the package need not be
installed): importing this module puts the repository root on ``sys.path``.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # so `python bench/x.py` imports the checkout's package
    sys.path.insert(0, str(REPO_ROOT))

SHARED = REPO_ROOT.parent / "shared"


def shared_path(*parts: str) -> Path:
    """A path under ``../shared/`` (relative to the repository root)."""
    return SHARED.joinpath(*parts)


def require_dir(path: str | Path, what: str, files: Iterable[str] = ()) -> Path:
    """Return ``path`` if it is a folder holding ``files``; otherwise print one line naming
    what is missing and exit with status 2 (the CLI's code for a user error)."""
    path = Path(path)
    if not path.is_dir():
        fail(f"{path}: {what} not found (pass --data PATH)")
    missing = [f for f in files if not (path / f).is_file()]
    if missing:
        fail(f"{path}: {what} lacks {', '.join(missing)}")
    return path


def fail(message: str, code: int = 2) -> None:
    """Print ``error: message`` to stderr and exit with ``code``."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(code)


def run_main(main: Callable[[], Any]) -> None:
    """Run a bench's ``main``: bad data or settings (``UserError``) are one line and exit
    status 2, as the CLI's are; an int it returns is the exit status."""
    from llmhni_local.core.errors import UserError

    try:
        code = main()
    except UserError as exc:
        fail(str(exc))
    sys.exit(code if isinstance(code, int) else 0)


def float_list(flag: str, text: str, lo: float | None = None, hi: float | None = None) -> list[float]:
    """A non-empty comma-separated list of numbers given to ``flag``, each in ``[lo, hi]``;
    otherwise :func:`fail` with one line naming the flag."""
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        fail(f"{flag}: not a comma-separated list of numbers: {text!r}")
    if not values:
        fail(f"{flag} must list at least one value")
    if (lo is not None and min(values) < lo) or (hi is not None and max(values) > hi):
        bounds = f"in [{lo:g}, {hi:g}]" if hi is not None else f">= {lo:g}"
        fail(f"{flag} must be {bounds}, got {text!r}")
    return values


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1). The std of a single value is undefined:
    NaN, which :func:`emit_json` writes as ``null``."""
    if not values:
        return math.nan, math.nan
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else math.nan
    return mean, std


def median(values: Sequence[float]) -> float:
    """Median, or NaN for no values."""
    return statistics.median(values) if values else math.nan


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """``(fn(), seconds)`` measured with ``time.perf_counter``."""
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def fmt(value: Any, digits: int = 4) -> str:
    """A table cell: floats with ``digits`` decimals, everything else as ``str``."""
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], digits: int = 4) -> str:
    """A Markdown table with aligned columns.

    >>> print(format_table(["a", "b"], [[1, 0.5]]))
    | a | b      |
    | - | ------ |
    | 1 | 0.5000 |
    """
    cells = [[str(h) for h in headers]] + [[fmt(v, digits) for v in row] for row in rows]
    widths = [max(len(r[c]) for r in cells) for c in range(len(headers))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |" for r in cells]
    lines.insert(1, "| " + " | ".join("-" * w for w in widths) + " |")
    return "\n".join(lines)


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], title: str | None = None,
                digits: int = 4) -> None:
    """Print :func:`format_table`, with an optional title line above it."""
    if title:
        print(f"\n{title}")
    print(format_table(headers, rows, digits), flush=True)


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN / inf
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        return _jsonable(value.item())
    return value


def emit_json(result: dict[str, Any]) -> None:
    """Print ``result`` as one JSON object on one line: the last line of every bench script."""
    sys.stdout.flush()
    print(json.dumps(_jsonable(result), sort_keys=False), flush=True)


#: Flags that say where or how fast a bench runs, not what it measures, and whether each takes a
#: value: left out of the command a docs block shows, so the block names no machine's paths.
PLACE_FLAGS = {"--out": True, "--records": True, "--jobs": True, "--no-docs": False}


def docs_command(script: str, argv: Sequence[str] | None = None) -> str:
    """The command a docs block names: ``python bench/SCRIPT`` with ``argv`` (default: this
    process's) less :data:`PLACE_FLAGS` and their values (``--out X`` or ``--out=X``)."""
    kept, rest = [], iter(sys.argv[1:] if argv is None else argv)
    for arg in rest:
        name, eq, _ = arg.partition("=")
        if name not in PLACE_FLAGS:
            kept.append(arg)
        elif PLACE_FLAGS[name] and not eq:
            next(rest, None)  # its value
    return shlex.join(["python", f"bench/{script}", *kept])


def written_from(provenance: str, seconds: float) -> str:
    """The sentence that opens a docs block built from records: where its trainings came from
    (:meth:`_records.Records.provenance`) and what this invocation computed."""
    return (f"Tables written {time.strftime('%Y-%m-%d')} from {provenance}; this invocation took "
            f"{seconds / 60:.0f} minutes on {os.cpu_count()} CPU cores (the minutes count what "
            "it computed).")


def write_docs_block(bench: str, block: str, path: Path | None = None) -> None:
    """Put ``block`` between ``<!-- bench/BENCH:begin -->`` and ``:end -->`` in
    docs/BENCHMARKS.md (``path``), replacing what was there, or append it with its markers."""
    import re

    path = path or REPO_ROOT / "docs" / "BENCHMARKS.md"
    begin, end = f"<!-- bench/{bench}:begin -->", f"<!-- bench/{bench}:end -->"
    text = path.read_text() if path.is_file() else "# Benchmarks\n"
    body = f"{begin}\n{block.strip()}\n{end}"
    if begin in text:
        text = re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda _: body, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + body + "\n"
    path.write_text(text)


def add_pipeline_args(p, out: str, epochs: int = 150) -> None:
    """The flags of a bench that runs the pipeline: ``--config``, ``--epochs``, ``--max-users``,
    ``--jobs``, ``--out``, ``--estimate`` and ``--no-docs``."""
    p.add_argument("--config", default=str(REPO_ROOT / "configs" / "ml100k.toml"))
    p.add_argument("--epochs", type=int, default=epochs, help="train.epochs (early-stopped)")
    p.add_argument("--max-users", type=int, default=0, help="data.max_users (smoke runs)")
    p.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                   help="trainings at once (pipeline.jobs; default min(2, cores))")
    p.add_argument("--out", default=str(REPO_ROOT / "runs" / out))
    p.add_argument("--estimate", action="store_true", help="print the estimate and stop")
    p.add_argument("--no-docs", action="store_true", help="do not write docs/")


def check_jobs(jobs: int) -> None:
    if jobs < 1:
        fail(f"--jobs must be >= 1, got {jobs}")


def pipeline_settings(args, **changes: Any) -> dict:
    """The ``--config`` file as dotted settings, without ``pipeline.out``, with the flags of
    :func:`add_pipeline_args` (untuned rater) and ``changes`` on top."""
    from llmhni_local.core.config import read_toml

    base = {f"{t}.{k}": v for t, tab in read_toml(args.config).items() for k, v in tab.items()}
    base.pop("pipeline.out", None)
    base.update({"train.epochs": args.epochs, "tune.kind": "none",
                 "data.max_users": args.max_users, "pipeline.jobs": args.jobs, **changes})
    return base


def mean_pm(values: Sequence[float]) -> str:
    """``mean ± std`` over seeds (the mean alone for one seed; ``-`` where a value is missing)."""
    if not values or any(not math.isfinite(v) for v in values):
        return "-"
    mean, std = mean_std(list(values))
    return f"{mean:.4f}" + (f" ± {std:.4f}" if len(values) > 1 else "")



def per_user(run_dir: Path) -> tuple[Any, Any]:
    """``(users, Recall@20 per user)`` of one training's clean test."""
    from llmhni_local.train.run import load_per_user_test

    d = load_per_user_test(run_dir)
    return d["users"], d["recall@20"]


def paired(a: Sequence[dict], b: Sequence[dict], what: str) -> dict[str, float]:
    """``a`` - ``b`` (seed lists of ``{"per_user": (users, values)}``, the same seeds) over
    the same users, with a 95% bootstrap interval over users
    (:func:`llmhni_local.eval.gains.paired_bootstrap`); ``what`` names the pair in the error
    raised when the users differ."""
    import numpy as np

    from llmhni_local.eval.gains import paired_bootstrap

    if len(a) != len(b) or any(not np.array_equal(x["per_user"][0], y["per_user"][0])
                               for x, y in zip(a, b)):
        raise RuntimeError(f"{what}: not tested on the same seeds and users")
    return paired_bootstrap(np.stack([x["per_user"][1] for x in a]),
                            np.stack([y["per_user"][1] for y in b]), n_boot=2000, seed=0)


def ci_cell(c: dict[str, float] | None) -> str:
    """``+0.0012 [-0.0008, +0.0031]`` (``-`` for none)."""
    return f"{c['diff']:+.4f} [{c['lo']:+.4f}, {c['hi']:+.4f}]" if c else "-"
