"""``rater assess`` as a library (``llmhni_local/assess/``): held-out users, the sample, the
figures against hand-made numbers, the constant rater, bad input, resumability. No real
model: the fake rater of ``run_fixtures.py`` rates."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from llmhni_local.assess.figures import (
    add_times,
    constant_view,
    coverage_costs,
    judgment_scores,
    task_figures,
    threshold_figures,
)
from llmhni_local.assess.plot import roc_points
from llmhni_local.assess.run import assess_run
from llmhni_local.assess.sample import held_out_users, tuning_pairs
from llmhni_local.assess.settings import CONSTANT_TEXT, MIN_PER_CLASS, AssessSettings
from llmhni_local.core.errors import ConfigError, UserError
from llmhni_local.data.dataset import Interactions
from llmhni_local.engine.api import LABELS, Judgment, Rater, unserved

N_USERS, N_ITEMS = 40, 30


@pytest.fixture
def data(synth_data):
    return synth_data(n_users=N_USERS, n_items=N_ITEMS, per_user=10, seed=3)


def _scores(data):
    return np.random.default_rng(1).normal(size=(data.n_users, data.n_items))


def _build(folder: Path, data, rater, *, rate: bool = True) -> Path:
    """Profiles, candidates and (with ``rate``) the fake rater's judgments of ``data``."""
    from llmhni_local.judgments.plan import RateSettings
    from llmhni_local.judgments.run import rate_candidates
    from llmhni_local.llmhni.candidates import CANDIDATES_FILE, save_candidates, select_candidates
    from llmhni_local.text.profiles import make_profiles, save_profiles

    save_profiles(folder, make_profiles(data))
    scores = _scores(data)
    c = select_candidates(lambda u: scores[u], data.user_item_lists("train"), data.n_items,
                          k_neg=2, k_pos=2)
    save_candidates(folder / CANDIDATES_FILE, c)
    if rate:
        rate_candidates(folder, rater, model_id=rater.model_id,
                        settings=RateSettings(max_failure_share=1.0), progress=False)
    return folder


def _rate_with(rater):
    """``rate(folder, on_batch)`` through the toolkit's rating loop with a fake rater."""
    from llmhni_local.judgments.plan import RateSettings
    from llmhni_local.judgments.run import rate_candidates

    def rate(folder, on_batch):
        return rate_candidates(folder, rater, model_id=rater.model_id,
                               settings=RateSettings(max_failure_share=1.0, batch_size=32),
                               progress=False, on_batch=on_batch)
    return rate


def _never(folder, on_batch):
    raise AssertionError("the rater was started on bad input")


@pytest.fixture
def run(tmp_path, data, fake_rater):
    return _build(tmp_path / "run", data, fake_rater)


def _assess(run, data, rater, **settings):
    s = AssessSettings(**{"sample": 20, "users": N_USERS, "folds": 3, **settings})
    sc = _scores(data)
    return assess_run(run, _rate_with(rater), s, data=data, batch_size=32,
                      score_fn=lambda u: sc[u])


class ConstantRater(Rater):
    """Says High to everything, nearly sure: what zero-shot SmolLM2 does."""

    model_id = "constant@0"
    loglikelihood = unserved("loglikelihood")

    def judge(self, requests):
        probs = {"High": 0.97, "Medium": 0.02, "Low": 0.01}
        return [Judgment("High", "High", probs, 0.9) for _ in requests]


class ScoreReader(Rater):
    """A likelihood reader's rows: a score per judgment, no label, no probabilities."""

    model_id = "reader@0"
    fixed: float | None = None
    loglikelihood = unserved("loglikelihood")

    def judge(self, requests):
        import hashlib

        out = []
        for r in requests:
            h = hashlib.sha256(json.dumps(r.messages, sort_keys=True).encode()).digest()
            s = self.fixed if self.fixed is not None else (h[0] - 128) / 32.0
            out.append(Judgment("", None, None, decided_by="pmi", score=s))
        return out


class FixedScoreReader(ScoreReader):
    model_id = "reader-fixed@0"
    fixed = 0.25


# ---------------------------------------------------------------------------- held out
def test_held_out_users_are_disjoint_from_every_tuning_set(run, data, fake_rater, tmp_path):
    from llmhni_local.audit.records import AuditStore

    with AuditStore(run) as store:
        store.mark_finetune([(0, int(data.train[0, 1]))], "lora-a", "train")
        store.mark_finetune([(1, int(data.train[10, 1]))], "lora-a", "validation")
    (run / "tune" / "probe").mkdir(parents=True)
    (run / "tune" / "probe" / "pairs.json").write_text(json.dumps({"train": [[2, 5], [3, 7]]}))
    adapter = tmp_path / "my-probe"
    adapter.mkdir()
    (adapter / "pairs.json").write_text(json.dumps({"train": [[4, 1]], "validation": [[5, 2]]}))

    tuning = tuning_pairs(run, str(adapter))
    tuned_users = {u for pairs in tuning.values() for u, _ in pairs}
    assert tuned_users == {0, 1, 2, 3, 4, 5}
    assert set(held_out_users(data, tuning).tolist()) == set(range(6, N_USERS))

    sc = _scores(data)
    result = assess_run(run, _rate_with(fake_rater), AssessSettings(sample=20, users=N_USERS,
                                                                     folds=3),
                        data=data, adapter=str(adapter), score_fn=lambda u: sc[u])
    sample = pd.read_parquet(result.folder / "sample.parquet")
    assert not set(sample["user"]) & tuned_users
    held = result.figures["held_out"]
    assert held["held_out_users"] == N_USERS - 6
    assert held["tuning_users"] == {"audit store finetune_pairs": 2,
                                    "tune/probe/pairs.json": 2, "my-probe/pairs.json": 2}


def test_sample_classes_labels_and_synthetic_pairs(run, data, fake_rater):
    result = _assess(run, data, fake_rater)
    sample = pd.read_parquet(result.folder / "sample.parquet")
    assert (sample["cls"].value_counts() == 20).all() and len(sample) == 60
    rating = {(int(u), int(i)): float(r) for (u, i), r in zip(data.train, data.train_rating)}
    for row in sample.itertuples():
        if row.cls == "synthetic":  # seen in no split, a user of the clean sample
            assert (row.user, row.item) not in rating and pd.isna(row.label)
        else:
            r = rating[(row.user, row.item)]
            assert (r <= 2) == (row.cls == "noisy")
            assert row.label == ("High" if r >= 4 else "Medium" if r == 3 else "Low")
            assert row.simulated
    clean_users = set(sample.loc[sample["cls"] == "clean", "user"])
    assert set(sample.loc[sample["cls"] == "synthetic", "user"]) <= clean_users
    f = result.figures
    assert f["simulated"] is True and f["labels"]["simulated_from_ratings"] == 40
    assert (result.folder / "assess.png").stat().st_size > 1000
    on_disk = json.loads((result.folder / "assess.json").read_text())
    assert on_disk["views"]["user"]["natural"]["pairs"] == 40
    for view in ("user", "item"):
        assert sum(on_disk["views"][view]["labels"].values()) == 60
        for task in ("natural", "synthetic"):
            cf = on_disk["views"][view][task]["cross_fitted"]
            assert set(cf) >= {"llm", "non_llm", "stacked"}


def test_audited_labels_take_precedence_and_are_not_simulated(run, data, fake_rater):
    from llmhni_local.audit.records import AuditStore

    clean = [(int(u), int(i)) for (u, i), r in zip(data.train, data.train_rating) if r >= 3]
    with AuditStore(run) as store:
        store.add_labels([{"user": u, "item": i, "label": "Low", "annotator": "ann"}
                          for u, i in clean[:5]], source_file="f.csv", source_sha256="x")
    result = _assess(run, data, fake_rater)
    sample = pd.read_parquet(result.folder / "sample.parquet")
    audited = sample[sample["label_source"] == "audit"]
    assert len(audited) == 5 and (audited["label"] == "Low").all()
    assert not audited["simulated"].any()
    assert result.figures["labels"]["audited"] == 5
    assert result.figures["simulated"] is True  # the other 35 labels come from ratings


# ---------------------------------------------------------------------------- resumable
def test_second_run_rates_nothing_new(run, data, fake_rater):
    first = _assess(run, data, fake_rater)
    assert first.figures["judgments"]["rated"] == 120
    speed = first.figures["speed"]["judgments_per_s"]
    second = _assess(run, data, fake_rater)
    j = second.figures["judgments"]
    assert j["rated"] == 0 and j["skipped"] == 120 and j["engine_started"] is False
    assert second.figures["speed"]["judgments_per_s"] == speed  # the earlier call's
    for view in ("user", "item"):
        assert second.figures["views"][view]["natural"]["auc"] == \
            first.figures["views"][view]["natural"]["auc"]


# ---------------------------------------------------------------------------- constant
def test_constant_rater_is_named_first(run, data):
    from llmhni_local.cli.rater import summary_lines

    result = _assess(run, data, ConstantRater)
    assert result.constant == ["user", "item"]
    c = result.figures["views"]["user"]["constant"]
    assert c["value"] == "High" and c["share"] == 1.0
    lines = summary_lines(result.figures)
    assert lines[0].startswith(CONSTANT_TEXT) and lines[1].startswith(CONSTANT_TEXT)
    assert not any(CONSTANT_TEXT in line for line in lines[2:])


def test_a_varied_rater_is_not_constant(run, data, fake_rater):
    from llmhni_local.cli.rater import summary_lines

    result = _assess(run, data, fake_rater)
    assert result.constant == []
    lines = summary_lines(result.figures)
    assert not lines[0].startswith(CONSTANT_TEXT)
    t = result.figures["verdict_threshold"]
    assert t["pairs"] > 0 and -1.0 <= t["share"]["kappa"] <= 1.0
    assert any(line.startswith(f"threshold rule on the scores ({t['pairs']} pairs)")
               for line in lines)


@pytest.mark.parametrize("counts, expected", [
    ({"High": 95, "Medium": 5, "Low": 0, "failed": 0}, True),
    ({"High": 94, "Medium": 6, "Low": 0, "failed": 0}, False),
    ({"High": 95, "Medium": 5, "Low": 0, "failed": 50}, True),  # failures are no answer
    ({"High": 40, "Medium": 30, "Low": 30, "failed": 0}, False),
])
def test_constant_share(counts, expected):
    counts = {**counts, "scored": 0}
    assert constant_view(counts, np.zeros(0), 0.95)["constant"] is expected


def test_constant_score_only_view():
    none = {"High": 0, "Medium": 0, "Low": 0, "scored": 100, "failed": 0}
    assert constant_view(none, np.full(100, 0.3), 0.95)["constant"] is True
    assert constant_view(none, np.linspace(0, 1, 100), 0.95)["constant"] is False


def test_likelihood_rows_are_read_by_their_score(run, data):
    from llmhni_local.eval.stats import auc
    from llmhni_local.judgments.store import JudgmentStore

    result = _assess(run, data, ScoreReader)
    f = result.figures
    for view in ("user", "item"):
        assert f["views"][view]["labels"] == {"High": 0, "Medium": 0, "Low": 0, "scored": 60,
                                              "failed": 0}
        assert f["views"][view]["constant"]["constant"] is False
        assert f["views"][view]["agreement"]["n_labelled"] == 0  # no label: no kappa
    with JudgmentStore(result.folder, create=False) as store:
        rows = store.frame()
    assert rows["label"].isna().all() and rows["score"].notna().all()
    sample = pd.read_parquet(result.folder / "sample.parquet")
    user = rows[rows["view"] == "user"].merge(sample, on=["user", "item"])
    nat = user[user["cls"].isin(["clean", "noisy"])]
    expected = auc(-nat["score"].to_numpy(), (nat["cls"] == "noisy").to_numpy())
    assert f["views"]["user"]["natural"]["auc"] == pytest.approx(expected)


def test_a_score_only_rater_with_one_score_is_constant(run, data):
    result = _assess(run, data, FixedScoreReader)
    assert result.constant == ["user", "item"]
    assert result.figures["views"]["item"]["constant"]["value"] == 0.25


# ---------------------------------------------------------------------------- figures
def test_score_is_the_verdict_rules_high_score_or_the_judgments_own():
    frame = pd.DataFrame({"p_high": [0.5, 0.8, np.nan, np.nan],
                          "p_medium": [0.25, 0.1, np.nan, np.nan],
                          "p_low": [0.25, 0.1, np.nan, np.nan]})
    s = judgment_scores(frame)
    assert s[0] == pytest.approx(0.0) and s[1] == pytest.approx(math.log(4.0))
    assert np.isnan(s[2:]).all()
    # the likelihood mode: a numeric score and no label probabilities; it wins where present
    frame["score"] = [None, 2.5, -1.0, None]
    s = judgment_scores(frame)
    assert s[0] == pytest.approx(0.0) and s[1] == 2.5 and s[2] == -1.0 and np.isnan(s[3])


def test_task_auc_ranks_by_minus_the_score():
    # clean pairs scored higher than noisy ones but one: AUC (noisy vs clean) 5/6
    table = pd.DataFrame({"user": [0, 0, 1, 1, 2, 2], "item": range(6),
                          "cls": ["clean", "clean", "clean", "noisy", "noisy", "synthetic"],
                          "score_user": [3.0, 2.0, 0.5, 1.0, 0.0, -5.0]})
    non_llm = np.zeros((6, 3))
    fig = task_figures(table, "natural", ["score_user"], non_llm, AssessSettings(folds=2))
    assert fig["pairs"] == 5 and fig["positives"] == 2
    assert fig["auc"] == pytest.approx(5 / 6)
    lo, hi = fig["auc_ci95"]  # users resampled: user 1 alone ranks its pairs the wrong way
    assert lo < 5 / 6 <= hi <= 1.0
    syn = task_figures(table, "synthetic", ["score_user"], non_llm, AssessSettings(folds=2))
    assert syn["auc"] == 1.0 and syn["pairs"] == 4 and syn["auc_ci95"] == [1.0, 1.0]


def test_cross_fitted_auc_hand_made():
    from llmhni_local.verdicts.rules import logistic_cv

    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(20), 6)
    y = np.tile([True, False, False, True, False, False], 20)
    separating = np.where(y, 1.0, -1.0) + 0.01 * rng.normal(size=len(y))
    noise = rng.normal(size=len(y))
    out = logistic_cv({"sep": separating, "noise": noise, "minus": -separating}, y,
                      users, folds=5, l2=1.0, seed=0)
    assert out["sep"]["auc"] == 1.0 and out["minus"]["auc"] == 1.0  # a fitted sign
    assert abs(out["noise"]["auc"] - 0.5) < 0.2


def _threshold_table(score_user, score_item, labels, users):
    n = len(labels)
    return pd.DataFrame({"user": users, "item": range(n), "label": labels,
                         "judged_user": True, "judged_item": True,
                         "score_user": score_user, "score_item": score_item})


def test_threshold_rule_kappa_hand_made():
    users = np.repeat(np.arange(20), 5)
    labels = np.tile(["High", "High", "High", "High", "Low"], 20)  # 80% High
    sep = np.where(labels == "High", 1.0, -1.0)
    out = threshold_figures(_threshold_table(sep, sep, labels, users), AssessSettings())
    assert out["pairs"] == 100 and out["share"]["kappa"] == 1.0
    assert out["share"]["realised_share_hard"] == 0.8
    assert out["audits_cv"]["kappa"] == 1.0
    # a noise item view: taus at 80% per view call some High pairs noisy; the taus chosen on
    # the labels learn to ignore that view (its lowest tau in the training folds, which a
    # held-out pair's score can still fall below)
    noise = np.random.default_rng(0).normal(size=100)
    out = threshold_figures(_threshold_table(sep, noise, labels, users), AssessSettings())
    assert out["share"]["kappa"] < 0.8 < 0.9 < out["audits_cv"]["kappa"]


def test_threshold_rule_kappa_of_a_constant_score_and_of_one_class():
    users = np.repeat(np.arange(10), 4)
    labels = np.tile(["High", "Medium", "High", "Low"], 10)
    const = np.zeros(40)  # ties at tau all say High: every pair hard, kappa 0
    out = threshold_figures(_threshold_table(const, const, labels, users), AssessSettings())
    assert out["share"]["realised_share_hard"] == 1.0 and out["share"]["kappa"] == 0.0
    one = threshold_figures(_threshold_table(const, const, np.full(40, "High"), users),
                            AssessSettings())
    assert one["audits_cv"] is None  # nothing to choose taus against
    failed = _threshold_table(np.full(40, np.nan), const, labels, users)
    assert threshold_figures(failed, AssessSettings()) == {
        "pairs": 0, "target_share": 0.8, "share": None, "audits_cv": None}


def test_cross_fitting_folds_are_grouped_by_user(monkeypatch):
    from llmhni_local.verdicts import rules

    seen = {}
    real = rules.group_folds

    def spy(groups, y, k, seed=0):
        folds = real(groups, y, k, seed)
        seen["groups"], seen["folds"] = np.asarray(groups), folds
        return folds

    monkeypatch.setattr(rules, "group_folds", spy)
    table = pd.DataFrame({"user": np.repeat(np.arange(15), 4), "item": range(60),
                          "cls": np.tile(["noisy", "clean", "clean", "clean"], 15),
                          "score_user": np.arange(60, dtype=float)})
    task_figures(table, "natural", ["score_user"], np.zeros((60, 3)), AssessSettings(folds=3))
    assert np.array_equal(seen["groups"], table["user"].to_numpy())
    for u in np.unique(seen["groups"]):  # every user's pairs in one fold
        assert len(set(seen["folds"][seen["groups"] == u].tolist())) == 1
    assert len(set(seen["folds"].tolist())) == 3


def test_roc_points_hand_made():
    fpr, tpr = roc_points(np.array([0.9, 0.8, 0.8, 0.1]), np.array([1, 1, 0, 0]))
    assert fpr.tolist() == [0.0, 0.0, 0.5, 1.0] and tpr.tolist() == [0.0, 0.5, 1.0, 1.0]


def test_coverage_costs_hand_made():
    # user 0: items 0-3 ranked 0..3 by ascending score; user 1: items 4, 5 ranked 0, 1
    scores = np.array([[0.1, 0.2, 0.3, 0.4, 9.0, 9.0], [9.0, 9.0, 9.0, 9.0, 0.1, 0.2]])
    train = np.array([[0, 0], [0, 1], [0, 2], [0, 3], [1, 4], [1, 5]])
    flags = np.array([False, False, True, False, True, True])  # ranks 2, 0, 1
    empty = np.zeros((0, 2), dtype=np.int64)
    data = Interactions(name="hand", n_users=2, n_items=6, train=train, val=empty, test=empty,
                        train_noise=flags)
    costs = coverage_costs(lambda u: scores[u], data, (0.2, 0.5, 0.8))
    assert costs["flagged"] == 3
    rows = costs["targets"]
    # 0.2: k_pos 1 -> 1 + 1 = 2 pairs (share 0.5 would take 2 + 1 = 3)
    assert rows[0]["observed_pairs"] == 2 and rows[0]["pairs_by_share"] == 3
    assert rows[0]["settings"] == {"candidates.k_pos": 1, "candidates.k_pos_share": 0.0}
    # 0.5: two flagged pairs: k_pos 2 -> 2 + 2 = 4 (share 0.75 -> 3 + 2 = 5)
    assert rows[1]["observed_pairs"] == 4 and rows[1]["pairs_by_share"] == 5
    # 0.8: all three: k_pos 3 -> 3 + 2 = 5 (share 1 -> 6)
    assert rows[2]["observed_pairs"] == 5 and rows[2]["pairs_by_share"] == 6
    assert [r["coverage_reached"] for r in rows] == pytest.approx([1 / 3, 2 / 3, 1.0])
    add_times(costs, speed=10.0, start_s=3.0, unobserved=5)
    assert rows[0]["judgments_observed"] == 4 and rows[0]["seconds_observed"] == 3.4
    assert rows[2]["judgments_with_unobserved"] == 20 and rows[2]["seconds_with_unobserved"] == 5.0


# ---------------------------------------------------------------------------- bad input
def test_run_without_candidates(tmp_path, data):
    with pytest.raises(UserError, match="candidates.parquet: no candidates"):
        assess_run(tmp_path, _never, AssessSettings(sample=20), data=data)


def test_run_without_judgments(tmp_path, data, fake_rater):
    run = _build(tmp_path / "run", data, fake_rater, rate=False)
    with pytest.raises(UserError, match="judgments.sqlite: no judgments"):
        assess_run(run, _never, AssessSettings(sample=20), data=data)


def test_sample_below_the_floor():
    with pytest.raises(ConfigError, match=f"--sample 5 .* {MIN_PER_CLASS}"):
        AssessSettings(sample=5)


def test_too_few_pairs_of_a_class(run, data):
    sc = _scores(data)
    with pytest.raises(UserError, match=r"leaves \d+ (clean|noisy) pairs among the 2 "
                                        r"held-out users drawn, fewer than the 20"):
        assess_run(run, _never, AssessSettings(sample=20, users=2), data=data,
                   score_fn=lambda u: sc[u])
    assert not (run / "assess").exists()


def test_no_held_out_users_left(run, data):
    from llmhni_local.audit.records import AuditStore

    with AuditStore(run) as store:
        store.mark_finetune([(u, int(data.user_item_lists()[u][0])) for u in range(N_USERS)],
                            "all", "train")
    with pytest.raises(UserError, match=f"no held-out users left: all {N_USERS} users"):
        assess_run(run, _never, AssessSettings(sample=20), data=data)


def test_other_data(run, fake_rater, synth_data):
    with pytest.raises(UserError, match="not the data the profiles were built from"):
        assess_run(run, _never, AssessSettings(sample=20), data=synth_data())


def test_labels_in_order():
    assert LABELS == ("High", "Medium", "Low")  # the score reads columns in this order
