"""Report figures: the BPR -> oracle column only on a gap above noise, a constant rater marked
in the results table, and the break-even of a curve with its bootstrap interval."""

import json
from types import SimpleNamespace

import numpy as np
import pytest

from llmhni_local.eval.gains import break_even, crossing
from llmhni_local.report import GAP_NA, gap_recovered, oracle_gap, rater_line, results_table


def _results(bpr, oracle, llmhni, rater=None):
    def method(values):
        seeds = [{"seed": s, "test": {"recall@20": v, "ndcg@20": v / 2, "recall@10": v / 2,
                                      "ndcg@10": v / 3}, "epoch_seconds": 1.0}
                 for s, v in enumerate(values)]
        out = {"seeds": seeds}
        for k in seeds[0]["test"]:
            vals = np.array([s["test"][k] for s in seeds])
            out[f"{k}_mean"] = float(vals.mean())
            out[f"{k}_std"] = float(vals.std(ddof=1)) if len(vals) > 1 else 0.0
        return out

    return {"methods": {"bpr": method(bpr), "oracle": method(oracle), "llmhni": method(llmhni)},
            "rater": rater or {}}


def test_oracle_gap_needs_more_than_its_spread_and_the_floor():
    assert oracle_gap([0.20, 0.21, 0.20], [0.22, 0.23, 0.22])["real"]  # gap 0.02, spread 0
    spread = oracle_gap([0.20, 0.22], [0.23, 0.21])  # gaps +0.03 and -0.01: mean 0.01
    assert spread["gap"] == pytest.approx(0.01) and spread["spread"] > 0.01 and not spread["real"]
    assert not oracle_gap([0.2000], [0.2040])["real"]  # one seed: the floor alone
    assert oracle_gap([0.2000], [0.2060])["real"]
    assert not oracle_gap([0.21], [0.20])["real"]  # the oracle below BPR
    with pytest.raises(ValueError, match="must match"):
        oracle_gap([0.2, 0.3], [0.2])


def test_results_table_shows_the_gap_figure_only_above_noise():
    # a 15-epoch run: oracle 0.0003 above BPR made LLMHNI "+65.13"
    tiny = results_table(_results([0.1000], [0.1003], [0.1196]))
    assert [r[-1] for r in tiny] == [GAP_NA] * 3
    real = results_table(_results([0.20, 0.21], [0.24, 0.25], [0.22, 0.23]))
    assert [r[-1] for r in real] == ["+0.00", "+1.00", "+0.50"]
    no_oracle = _results([0.2], [0.3], [0.25])
    del no_oracle["methods"]["oracle"]
    assert [r[-1] for r in results_table(no_oracle)] == ["-", "-"]


def test_a_constant_rater_is_marked_in_rows_and_line():
    rater = {"kind": "llm", "methods": ["llmhni"], "description": "SmolLM2 (zero-shot)",
             "constant": {"user": {"label": "High", "share": 0.99, "answered": 100}},
             "constant_note": "constant: its verdicts carry no information"}
    rows = results_table(_results([0.2], [0.3], [0.25], rater))
    assert rows[2][0] == "llmhni (constant rater)" and rows[0][0] == "bpr"
    line = rater_line(_results([0.2], [0.3], [0.25], rater))
    assert "constant: its verdicts carry no information" in line and "user view High 99.0%" in line
    both = results_table(_results([0.2], [0.3], [0.25], {**rater, "tag": "tuned"}))
    assert both[2][0] == "llmhni (tuned; constant rater)"


def test_no_rater_is_named_when_no_method_read_verdicts():
    rater = {"kind": "llm", "methods": [], "description": "SmolLM2 (zero-shot)"}
    assert rater_line(_results([0.2], [0.3], [0.25], rater)) == ""
    assert rater_line(_results([0.2], [0.3], [0.25], {**rater, "methods": ["llmhni"]})) == (
        "Rater of llmhni: SmolLM2 (zero-shot).")


def test_rater_info_reads_the_constant_flag(tmp_path):
    from llmhni_local.stages.settings import load_run_config
    from llmhni_local.stages.train import rater_info

    cfg = load_run_config(None, {"pipeline.methods": ["bpr", "llmhni"]})
    run = SimpleNamespace(cfg=cfg, dir=tmp_path)
    assert "constant_note" not in rater_info(run)  # no verdicts.json yet
    constant = {"user": {"label": "High", "share": 1.0, "answered": 10}}
    (tmp_path / "verdicts.json").write_text(json.dumps({"rater_constant": True,
                                                         "constant": constant}))
    info = rater_info(run)
    assert info["constant"] == constant and "no information" in info["constant_note"]
    (tmp_path / "verdicts.json").write_text(json.dumps({"rater_constant": False,
                                                         "constant": constant}))
    assert "constant_note" not in rater_info(run)
    sim = load_run_config(None, {"pipeline.rater": "simulated", "pipeline.simulated_auc": 0.8,
                                 "verdicts.rule": "threshold", "verdicts.tau_source": "share"})
    (tmp_path / "verdicts.json").write_text(json.dumps({"realised_auc": 0.7912}))
    described = rater_info(SimpleNamespace(cfg=sim, dir=tmp_path))["description"]
    assert described.startswith("SIMULATED rater (AUC 0.8, realised 0.791, binormal scores, "
                                "threshold at share 0.8 kept")


def test_crossing_by_hand():
    xs = np.array([0.5, 0.6, 0.7, 0.8])
    d = np.array([[-0.03, -0.01, 0.01, 0.02],   # between 0.6 and 0.7, half way
                  [0.00, 0.01, 0.02, 0.03],     # at the first point already
                  [-0.03, -0.02, -0.01, -0.01],  # never
                  [-0.02, 0.02, -0.01, 0.03]])  # the lowest crossing counts
    assert crossing(xs, d) == pytest.approx([0.65, 0.5, np.inf, 0.55])


def test_break_even_interval_covers_and_is_paired():
    rng = np.random.default_rng(0)
    xs = np.array([0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
    ref = rng.normal(0.2, 0.1, 2000)
    # each user's metric rises with the rater's AUC; the mean crosses the reference at 0.75
    curve = ref[None, :] + (xs[:, None] - 0.75) * 0.1 + rng.normal(0, 0.01, (len(xs), 2000))
    r = break_even(xs, curve, ref, n_boot=1000, seed=1)
    assert r["x"] == pytest.approx(0.75, abs=0.01) and r["reached"]
    assert r["lo"] < r["x"] < r["hi"] and r["hi"] - r["lo"] < 0.02  # paired: a narrow band
    assert r["unreached_share"] == 0.0 and (r["n_users"], r["n_boot"]) == (2000, 1000)
    again = break_even(xs, curve, ref, n_boot=1000, seed=1)
    assert again == r  # seeded
    never = break_even(xs, curve - 1.0, ref, n_boot=100)
    assert not never["reached"] and np.isinf(never["x"]) and never["unreached_share"] == 1.0
    start = break_even(xs, curve + 1.0, ref, n_boot=100)
    assert start["at_grid_start"] and start["x"] == 0.5


def test_break_even_refuses_bad_shapes():
    with pytest.raises(ValueError, match="must be"):
        break_even(np.array([0.5, 1.0]), np.zeros((3, 4)), np.zeros(4))
    with pytest.raises(ValueError, match="increase"):
        break_even(np.array([1.0, 0.5]), np.zeros((2, 4)), np.zeros(4))


def test_closing_table_names_a_constant_rater_and_the_gap_rule(tmp_path, capsys):
    from llmhni_local.report import print_run_summary

    rater = {"kind": "llm", "methods": ["llmhni"], "description": "SmolLM2 (zero-shot)",
             "constant": {"user": {"label": "High", "share": 0.99, "answered": 100}},
             "constant_note": "constant: its verdicts carry no information"}
    (tmp_path / "results.json").write_text(json.dumps(_results([0.2], [0.2001], [0.25], rater)))
    print_run_summary(tmp_path)
    printed = " ".join(capsys.readouterr().out.split())  # rich wraps the title and caption
    assert "[constant: its verdicts carry no information]" in printed
    assert "llmhni (constant rater)" in printed and GAP_NA in printed
    assert "exceeds both its seed spread" in printed


def test_gap_recovered():
    assert gap_recovered(0.3, 0.2, 0.4) == pytest.approx(0.5)
    assert gap_recovered(0.4, 0.2, 0.4) == pytest.approx(1.0)
    assert gap_recovered(0.1, 0.2, 0.4) == pytest.approx(-0.5)
    assert np.isnan(gap_recovered(0.3, 0.2, 0.2))  # no gap to recover
