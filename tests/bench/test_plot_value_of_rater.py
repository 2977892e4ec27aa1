"""bench/plot_value_of_rater.py redraws the curve from a saved JSON line, without training."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_it_draws_the_points_of_the_json_line_and_marks_assessed_raters(tmp_path):
    fig = {f"natural/lightgcn/value_of_rater/main/auc{a}/recall@20_mean": 0.2 + 0.01 * k
           for k, a in enumerate(("0.5", "0.7", "1"))}
    fig.update({"natural/lightgcn/value_of_rater/bpr/recall@20_mean": 0.19,
                "natural/lightgcn/value_of_rater/oracle/recall@20_mean": 0.24})
    log = tmp_path / "log.txt"
    log.write_text("table lines\n" + json.dumps({"bench": "denoise", **fig}) + "\n")
    assess = tmp_path / "assess.json"
    assess.write_text(json.dumps({"rater": {"model_id": "m@1", "adapter": ""},
                                  "both_views": {"natural": {"cross_fitted": {"llm": 0.55}}}}))
    out = tmp_path / "v.png"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "plot_value_of_rater.py"),
                           str(log), str(out), "--assess", str(assess)],
                          capture_output=True, text=True, cwd=ROOT / "bench", timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["points"] == 3 and result["marked"] == {"m": 0.55}
    assert out.stat().st_size > 1000


def test_a_log_without_figures_is_one_line(tmp_path):
    log = tmp_path / "log.txt"
    log.write_text(json.dumps({"bench": "denoise"}) + "\n")
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "plot_value_of_rater.py"),
                           str(log), str(tmp_path / "v.png")], capture_output=True, text=True,
                          cwd=ROOT / "bench", timeout=120)
    assert proc.returncode != 0 and "no value_of_rater figures" in proc.stderr
