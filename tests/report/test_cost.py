"""The LLM's cost table: stage times and the LLM share read off stage records, reused stages
marked, and the time of each noise coverage at the last rating call's speed."""

import json

import numpy as np
import pytest

from llmhni_local.core.errors import UserError
from llmhni_local.data.dataset import Interactions
from llmhni_local.report.cost import cost_section, rating_speed, stage_times

SECONDS = {"data": 0.5, "profiles": 1.0, "embed": 2.0, "align": 3.0, "rec_pre": 5.0,
           "candidates": 0.5, "tune": 0.0, "rate": 4.0, "verdicts": 0.25, "train": 2.0}


def _records(run, seconds=SECONDS):
    (run / "stages").mkdir(parents=True, exist_ok=True)
    for stage, s in {**seconds, "report": 99.0}.items():
        (run / "stages" / f"{stage}.json").write_text(json.dumps(
            {"stage": stage, "key": f"k-{stage}", "seconds": s, "summary": {}}))


def _rating(run, rated=20, seconds=10.0):
    (run / "rating.json").write_text(json.dumps(
        {"model_id": "fake@0", "last_call": {"rated": rated, "seconds": seconds}}))


def _data(flags=True):
    # the hand-made case of tests/assess/test_assess.py: coverages 0.2 / 0.5 / 0.8 need
    # 2 / 4 / 5 observed pairs under these scores
    train = np.array([[0, 0], [0, 1], [0, 2], [0, 3], [1, 4], [1, 5]])
    empty = np.zeros((0, 2), dtype=np.int64)
    noise = np.array([False, False, True, False, True, True]) if flags else None
    return Interactions(name="hand", n_users=2, n_items=6, train=train, val=empty, test=empty,
                        train_noise=noise)


SCORES = np.array([[0.1, 0.2, 0.3, 0.4, 9.0, 9.0], [9.0, 9.0, 9.0, 9.0, 0.1, 0.2]])


def test_stage_times_share_and_order(tmp_path):
    _records(tmp_path)
    t = stage_times(tmp_path)
    assert [r["stage"] for r in t["stages"]] == list(SECONDS)  # the plan's order, no report
    assert (t["llm_seconds"], t["recommender_seconds"]) == (10.0, 7.0)  # 1+2+3+0+4, 5+2
    assert t["llm_share"] == pytest.approx(10 / 17)
    groups = {r["stage"]: r["group"] for r in t["stages"]}
    assert groups["align"] == "LLM" and groups["train"] == "recommender"
    assert groups["candidates"] == "other"
    assert not any(r["reused"] for r in t["stages"])  # no manifest, no `ran`: not known


def test_reused_stages_from_the_pipeline_or_the_manifest(tmp_path):
    _records(tmp_path)
    ran = {s: s == "train" for s in SECONDS}
    fresh = [r["stage"] for r in stage_times(tmp_path, ran)["stages"] if not r["reused"]]
    assert fresh == ["train"]
    # the manifest counts only where its key is the record's (else the record is newer)
    (tmp_path / "manifest.json").write_text(json.dumps({"stages": {
        "embed": {"key": "k-embed", "ran": False}, "align": {"key": "old", "ran": False},
        "train": {"key": "k-train", "ran": True}}}))
    reused = [r["stage"] for r in stage_times(tmp_path)["stages"] if r["reused"]]
    assert reused == ["embed"]
    lines, _ = cost_section(tmp_path, _data(), lambda u: SCORES[u])
    assert "| embed | LLM | 2.0 | reused |" in lines and "| align | LLM | 3.0 |  |" in lines


def test_coverage_times_at_the_rating_speed(tmp_path):
    _records(tmp_path)
    _rating(tmp_path, rated=20, seconds=10.0)  # 2 judgments/s
    assert rating_speed(tmp_path)["judgments_per_s"] == 2.0
    lines, out = cost_section(tmp_path, _data(), lambda u: SCORES[u])
    rows = out["coverage_costs"]["targets"]
    assert [r["observed_pairs"] for r in rows] == [2, 4, 5]
    assert [r["judgments_observed"] for r in rows] == [4, 8, 10]  # two views per pair
    assert [r["seconds_observed"] for r in rows] == [2.0, 4.0, 5.0]
    # the train stage took 2 s: 1x, 2x, 2.5x
    assert "| 0.2 | 2 | 4 | 2 | 1.0 |" in lines
    assert "| 0.8 | 5 | 10 | 5 | 2.5 |" in lines
    assert any("LLM stages took 58.8%" in line for line in lines)
    assert any("2.00 judgments/s (20 judgments of fake@0" in line for line in lines)


def test_what_cannot_be_computed_is_said(tmp_path):
    _records(tmp_path)
    lines, out = cost_section(tmp_path, _data(flags=False), None)
    assert "| 0.5 | hand has no ground-truth noise flags | | | |" in lines
    assert any("not measured" in line for line in lines) and out["speed"] is None
    lines, _ = cost_section(tmp_path, _data(), None)  # flags but no Rec_pre
    assert "| 0.2 | no rec_pre/model.pt in this run folder | | | |" in lines
    lines, _ = cost_section(tmp_path, _data(), lambda u: SCORES[u])  # no speed: pairs only
    assert "| 0.2 | 2 | 4 | - | - |" in lines
    _rating(tmp_path, rated=0, seconds=0.0)  # a call that found everything stored
    assert rating_speed(tmp_path) is None
    assert cost_section(tmp_path / "nothing", _data(), None) == ([], {})


def test_a_bad_record_is_named(tmp_path):
    _records(tmp_path, {**SECONDS, "embed": "slow"})
    with pytest.raises(UserError, match=r"stages/embed\.json: 'seconds' is 'slow'"):
        stage_times(tmp_path)
    (tmp_path / "stages" / "embed.json").write_text("{torn")
    with pytest.raises(UserError, match=r"stages/embed\.json: not a readable JSON file"):
        stage_times(tmp_path)
