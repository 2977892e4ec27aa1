"""The progress helper: nothing when disabled, sparse lines off a terminal, a bar on one."""

from __future__ import annotations

import io

from llmhni_local.core.progress import progress_bar


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_disabled_prints_nothing():
    out = io.StringIO()
    with progress_bar("rating", 100, enabled=False, stream=out) as bar:
        for _ in range(100):
            bar.advance(1, failures=0)
    assert out.getvalue() == ""


def test_not_a_terminal_gives_a_line_per_tenth():
    out = io.StringIO()
    with progress_bar("train", 1000, stream=out) as bar:
        for k in range(1000):
            bar.advance(1, loss=1.0 / (k + 1))
    lines = out.getvalue().splitlines()
    assert len(lines) == 10, lines
    assert lines[0].startswith("train: 100/1000 (10%), loss ")
    assert lines[-1].startswith("train: 1000/1000 (100%)")


def test_resumed_and_uneven_steps_still_end_with_the_total():
    out = io.StringIO()
    with progress_bar("finetune", 7, done=3, stream=out) as bar:
        bar.advance(2)
        bar.advance(2)
    lines = out.getvalue().splitlines()
    assert lines[-1].startswith("finetune: 7/7 (100%)") and len(lines) <= 4


def test_a_terminal_gets_a_rich_bar():
    out = Tty()
    with progress_bar("rating", 4, stream=out, fields=("failures",)) as bar:
        bar.advance(4, failures=1)
    text = out.getvalue()
    assert "rating" in text and "4/4" in text and "failures 1" in text
