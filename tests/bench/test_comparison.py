"""bench/comparison.py's command line: the estimate, parallel jobs, and one-line refusals."""

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def bench(*args):
    return subprocess.run([sys.executable, str(ROOT / "bench" / "comparison.py"), *args],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)


def hours(out: str) -> float:
    return float(re.search(r"estimated ([\d.]+) h", out).group(1))


def test_the_estimate_counts_parallel_jobs():
    one, two = bench("--estimate", "--jobs", "1"), bench("--estimate", "--jobs", "2")
    assert one.returncode == two.returncode == 0
    if (os.cpu_count() or 1) >= 2:
        assert hours(two.stdout) < 0.7 * hours(one.stdout)


def test_bad_settings_are_one_line_and_exit_2(tmp_path):
    for args, needle in ((["--config", str(tmp_path / "none.toml")], "none.toml"),
                         (["--jobs", "0"], "--jobs must be >= 1"),
                         (["--noise", "0.1"], "--noise must include 0")):
        r = bench("--quick", "--no-docs", "--out", str(tmp_path / "out"), *args)
        assert r.returncode == 2, r.stderr
        assert needle in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
