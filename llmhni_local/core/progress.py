"""One progress display for the whole toolkit (rating, embedding, fine-tuning, training).

On a terminal it is a rich bar with the caller's fields (loss, failures, ...). When stdout is
not a terminal (a log file, CI, a pipe) a bar's redraws would each become a line, so it
prints one plain line at each tenth of the way instead (and at the end). Disabled, it prints
nothing::

    with progress_bar("rating", total=len(work), enabled=show) as bar:
        for batch in batches:
            ...
            bar.advance(len(batch), failures=bad)
"""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from typing import Any, Iterator, TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class ProgressBar:
    """What a caller advances. ``advance(n, **fields)``: ``n`` more done; ``fields`` are shown
    beside the count (their latest values)."""

    def advance(self, n: int = 1, **fields: Any) -> None:  # pragma: no cover - interface
        raise NotImplementedError


class _Silent(ProgressBar):
    def advance(self, n: int = 1, **fields: Any) -> None:
        pass


class _Lines(ProgressBar):
    """Plain lines at every ``step`` share of ``total`` (and at the end): a log stays short."""

    def __init__(self, label: str, total: int, done: int, stream: TextIO, step: float) -> None:
        self.label, self.total, self.done, self.stream = label, max(0, total), done, stream
        self.step = max(1, int(round(self.total * step))) if self.total else 0
        self.next = (done // self.step + 1) * self.step if self.step else 0
        self.fields: dict[str, Any] = {}
        self.t0 = time.perf_counter()

    def advance(self, n: int = 1, **fields: Any) -> None:
        self.done += n
        self.fields.update(fields)
        if self.step and (self.done >= self.next or self.done >= self.total):
            self.next = (self.done // self.step + 1) * self.step
            self.emit()

    def emit(self) -> None:
        share = f" ({self.done / self.total:.0%})" if self.total else ""
        extra = "".join(f", {k} {_fmt(v)}" for k, v in self.fields.items())
        print(f"{self.label}: {self.done}/{self.total}{share}{extra}, "
              f"{time.perf_counter() - self.t0:.0f} s", file=self.stream, flush=True)


class _Rich(ProgressBar):
    def __init__(self, bar, task) -> None:
        self.bar, self.task = bar, task

    def advance(self, n: int = 1, **fields: Any) -> None:
        self.bar.update(self.task, advance=n, **{k: _fmt(v) for k, v in fields.items()})


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


@contextmanager
def progress_bar(label: str, total: int, *, enabled: bool = True, done: int = 0,
                 fields: tuple[str, ...] = (), stream: TextIO | None = None,
                 line_step: float = 0.1) -> Iterator[ProgressBar]:
    """A progress display over ``total`` units.

    Args:
        label: what is being done (``"rating"``, ``"train"``).
        total: units in all.
        enabled: False shows nothing. (default: ``True``)
        done: units already done (a resumed job). (default: ``0``)
        fields: names of the fields ``advance`` will pass, shown beside the count on a
            terminal. (default: ``()``)
        stream: where to write; default ``sys.stdout`` (its ``isatty`` decides the form).
        line_step: without a terminal, a line every this share of ``total``. (default: ``0.1``)
    """
    stream = stream or sys.stdout
    if not enabled:
        yield _Silent()
        return
    if not (hasattr(stream, "isatty") and stream.isatty()):
        yield _Lines(label, total, done, stream, line_step)
        return

    columns = [TextColumn(label), BarColumn(), MofNCompleteColumn(),
               *(TextColumn(f"{name} {{task.fields[{name}]}}") for name in fields),
               TimeElapsedColumn(), TimeRemainingColumn()]
    with Progress(*columns, console=Console(file=stream), transient=False) as bar:
        task = bar.add_task(label, total=total, completed=done, **{f: "-" for f in fields})
        yield _Rich(bar, task)
