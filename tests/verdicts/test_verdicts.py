"""Verdict rules: argmax (today's), threshold (taus from audits or a share), stacked.

Pure functions on hand-made numbers, then ``write_verdicts`` on a synthetic run folder (no LLM):
candidates, stored judgments whose High probability carries a signal, audited labels.
"""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest

from llmhni_local.core.errors import ConfigError, UserError
from llmhni_local.eval.stats import binary_kappa, group_folds
from llmhni_local.verdicts.decide import compute_verdicts, load_verdicts, write_verdicts
from llmhni_local.verdicts.rules import (
    VerdictSettings,
    batch_calibrate,
    choose_model,
    fit_logistic,
    high_score,
    logistic_cv,
    predict_logistic,
    tau_from_share,
    taus_by_kappa,
    threshold_cv,
)


# ---------------------------------------------------------------------------- pure functions
def test_batch_calibration_by_hand():
    probs = np.array([[0.9, 0.05, 0.05], [0.7, 0.2, 0.1]])
    cal, means = batch_calibrate(probs)
    assert means == pytest.approx([0.8, 0.125, 0.075])
    first = np.array([0.9 / 0.8, 0.05 / 0.125, 0.05 / 0.075])
    assert cal[0] == pytest.approx(first / first.sum())
    assert cal.sum(axis=1) == pytest.approx([1.0, 1.0])
    # the model's prior for High is gone: the first row is no longer High by argmax
    assert cal[0].argmax() == 0 and cal[1].argmax() == 1
    # means over a subset only (e.g. leaving out adapter-training pairs)
    _, sub = batch_calibrate(probs, fit=np.array([True, False]))
    assert sub == pytest.approx(probs[0])


def decide(run, *args, **kwargs):
    """``write_verdicts`` with the run's audits, as every entry point passes them."""
    from llmhni_local.audit.records import load_audits

    return write_verdicts(run, *args, audits=load_audits(run), **kwargs)


def test_high_score_is_high_against_the_rest():
    s = high_score(np.array([[0.5, 0.25, 0.25], [0.8, 0.1, 0.1], [1.0, 0.0, 0.0]]))
    assert s[0] == pytest.approx(0.0)
    assert s[1] == pytest.approx(math.log(4.0))
    assert np.isfinite(s[2]) and s[2] > 20  # saturated, still finite and ordered


def test_tau_from_target_share():
    scores = np.arange(1, 11) / 10.0
    tau, share = tau_from_share(scores, 0.8)
    assert tau == pytest.approx(0.3) and share == pytest.approx(0.8)
    tau, share = tau_from_share(np.array([1.0, 1.0, 1.0, 0.0]), 0.5)  # ties all say High
    assert tau == 1.0 and share == pytest.approx(0.75)
    assert tau_from_share(scores, 1.0)[0] == pytest.approx(0.1)


def test_taus_by_kappa_hand_case():
    # the user view separates the first two pairs, the item view the last two: only the
    # joint taus (2, 2) make every verdict right
    su = np.array([1.0, 3.0, 3.0, 3.0])
    si = np.array([3.0, 1.0, 3.0, 3.0])
    hard = np.array([False, False, True, True])
    tu, ti, kappa = taus_by_kappa(su, si, hard)
    assert (tu, ti) == (3.0, 3.0) and kappa == pytest.approx(1.0)


def test_taus_by_kappa_matches_brute_force():
    rng = np.random.default_rng(3)
    su, si = rng.integers(0, 12, 80).astype(float), rng.integers(0, 9, 80).astype(float)
    hard = (su + si + rng.normal(0, 3, 80)) > 10
    tu, ti, kappa = taus_by_kappa(su, si, hard)
    best = -np.inf
    for a, b in itertools.product([*np.unique(su), np.inf], [*np.unique(si), np.inf]):
        k = binary_kappa((su >= a) & (si >= b), hard)
        if not math.isnan(k) and k > best:
            best = k
    assert kappa == pytest.approx(best)
    assert binary_kappa((su >= tu) & (si >= ti), hard) == pytest.approx(best)


def test_class_balanced_logistic():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 2))
    y = x[:, 0] - 0.5 * x[:, 1] + rng.normal(0, 0.5, 400) > 1.0  # about 1 in 5 positive
    m = fit_logistic(x, y, l2=1.0)
    assert m["coef"][0] > 0 > m["coef"][1]
    p = predict_logistic(m, x)
    # class-balanced (free intercept): the classes' mean P average to 1/2, whatever the prior
    assert y.mean() < 0.3
    assert 0.5 * (p[y].mean() + p[~y].mean()) == pytest.approx(0.5, abs=1e-6)
    unbalanced = 1 / (1 + np.exp(-(np.log(y.mean() / (1 - y.mean())))))
    assert unbalanced < 0.3  # what an unweighted intercept-only model would say
    const = fit_logistic(np.column_stack([x[:, 0], np.ones(400)]), y)  # constant column: weight 0
    assert const["coef"][1] == 0.0


def _two_signals(n=600, seed=1):
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=n), rng.normal(size=n)
    y = a + b + rng.normal(0, 0.7, n) > 0
    llm = np.column_stack([a + rng.normal(0, 0.3, n), rng.normal(size=n)])
    non = np.column_stack([b + rng.normal(0, 0.3, n), rng.normal(size=n)])
    return llm, non, y


def test_stacked_beats_each_part_when_both_carry_signal():
    llm, non, y = _two_signals()
    users = np.arange(len(y)) // 4
    cv = logistic_cv({"llm": llm, "non_llm": non, "stacked": np.column_stack([llm, non])}, y,
                     users, folds=5, l2=1.0)
    for part in ("llm", "non_llm"):
        assert cv["stacked"]["auc"] > cv[part]["auc"] + 0.05
        assert cv["stacked"]["kappa"] > cv[part]["kappa"]
    assert 0.65 < cv["llm"]["auc"] < 0.9 and 0.65 < cv["non_llm"]["auc"] < 0.9


def test_choose_model_takes_the_best_auc_and_the_simpler_on_ties():
    def cv(llm, non, both):
        return {"llm": {"auc": llm}, "non_llm": {"auc": non}, "stacked": {"auc": both}}

    assert choose_model(cv(0.7, 0.6, 0.65))[0] == "llm"
    assert choose_model(cv(0.6, 0.6, 0.6))[0] == "non_llm"
    assert choose_model(cv(0.7, 0.6, 0.7))[0] == "llm"
    assert choose_model(cv(0.6, 0.6, 0.6 + 1e-15))[0] == "non_llm"  # float noise is a tie
    assert choose_model(cv(0.6, 0.6, 0.61))[0] == "stacked"
    assert choose_model(cv(math.nan, 0.52, 0.5))[0] == "non_llm"
    _, why = choose_model(cv(0.7, 0.6, 0.65))
    assert "llm 0.700" in why and "non_llm 0.600" in why and "stacked 0.650" in why


def test_settings_are_checked():
    with pytest.raises(ConfigError, match="verdicts.target_share"):
        VerdictSettings(target_share=0.0)
    with pytest.raises(ConfigError, match="verdicts.folds"):
        VerdictSettings(folds=1)


# ---------------------------------------------------------------------------- a run folder
MODEL, ADAPTER, HASHES = "fake@0", "", {"user": "hu", "item": "hi"}


def _make_run(tmp_path, n_pairs=240, seed=0, fail_every=23, llm_signal=1.0, score_weight=0.8):
    """Candidates and stored judgments: a pair's latent relevance (``score_weight`` times the
    recommender's score plus noise) lifts P(High) in both views by ``llm_signal`` (0: the
    probabilities are noise); every ``fail_every``-th pair has a failed user view. Returns
    (run, candidates, latent hard flags, train)."""
    from llmhni_local.judgments.plan import RATING_MANIFEST
    from llmhni_local.judgments.store import COLUMNS, JudgmentStore
    from llmhni_local.llmhni.candidates import CANDIDATE_DTYPE, CANDIDATES_FILE, save_candidates

    rng = np.random.default_rng(seed)
    users, items = np.arange(n_pairs) // 6, np.arange(n_pairs) % 6 + 10 * (np.arange(n_pairs) % 5)
    kind = np.where(np.arange(n_pairs) % 2 == 0, "observed", "unobserved")
    score = rng.normal(size=n_pairs)
    latent = rng.normal(size=n_pairs) + score_weight * score
    hard = latent > 0.3
    cands = np.array(list(zip(users, items, kind, np.zeros(n_pairs), score)), dtype=CANDIDATE_DTYPE)
    run = tmp_path / "run"
    run.mkdir()
    save_candidates(run / CANDIDATES_FILE, cands)
    (run / RATING_MANIFEST).write_text(json.dumps({
        "model_id": MODEL, "adapter": ADAPTER, "status": "done",
        "views": {v: {"prompt_hash": h} for v, h in HASHES.items()}}))
    rows = []
    for r in range(n_pairs):
        for view in ("user", "item"):
            # every answer is High by argmax (p_high > 0.5), as a zero-shot small model gives
            ph = 0.9 + 0.09 * np.tanh(llm_signal * latent[r] + rng.normal(0, 0.5))
            pm = (1 - ph) * 0.5
            failed = view == "user" and r % fail_every == 0
            label = None if failed else "High"
            rows.append(dict(user=int(users[r]), item=int(items[r]), view=view, model_id=MODEL,
                             adapter=ADAPTER, prompt_hash=HASHES[view], kind=str(kind[r]),
                             text=label or "Relevance is", label=label, p_high=ph, p_medium=pm,
                             p_low=1 - ph - pm, label_mass=0.9, ok=int(not failed),
                             created_at="t"))
    with JudgmentStore(run) as store:
        # columns the fixture does not set (a newer store's, e.g. a reader's score) stay empty
        store.add_rows([tuple(row.get(c) for c in COLUMNS) for row in rows])
    train = np.column_stack([rng.integers(0, users.max() + 1, 2000),
                             rng.choice(items, 2000)])
    return run, cands, hard, train


def _audit(run, cands, labels_of, pairs, trained=()):
    from llmhni_local.audit.records import AuditStore

    with AuditStore(run) as store:
        store.add_labels([{"user": int(cands["user"][r]), "item": int(cands["item"][r]),
                           "label": labels_of(r)} for r in pairs],
                         source_file="audit.csv", source_sha256="0" * 64)
        if trained:
            store.mark_finetune([(int(cands["user"][r]), int(cands["item"][r]))
                                 for r in trained], "adapter-x", "train")


def test_default_rule_is_todays_argmax(tmp_path):
    from llmhni_local.judgments.store import JudgmentStore

    run, cands, _, _ = _make_run(tmp_path)
    counts = decide(run)
    with JudgmentStore(run, create=False) as store:
        expected = compute_verdicts(cands, store.frame())
    got = load_verdicts(run)
    assert got["verdict"].tolist() == expected["verdict"].tolist()
    assert set(got["verdict"]) == {"hard", "failed"}  # every answer High: nothing is noisy
    stored = json.loads((run / "verdicts.json").read_text())
    assert stored["verdict_rule"] == {"rule": "argmax", "calibration": "none"}
    assert stored["rule"] == counts["rule"] == ("hard iff both views say High; a failed view "
                                                "gives no verdict")


def test_threshold_from_target_share(tmp_path):
    run, cands, hard, _ = _make_run(tmp_path)
    s = VerdictSettings(rule="threshold", tau_source="share", target_share=0.6,
                        calibration="batch")
    counts = decide(run, s)
    info = json.loads((run / "verdicts.json").read_text())["verdict_rule"]
    assert info["tau_source"] == "share" and set(info["tau"]) == {"user", "item"}
    assert set(info["calibration_means"]) == {"user", "item"}
    for view in ("user", "item"):
        assert 0.6 <= info["realised_share_high"][view] < 0.62
    v = load_verdicts(run)
    judged = v[v["verdict"].isin(["hard", "noisy"])]
    says = ((judged["score_user"] >= info["tau"]["user"])
            & (judged["score_item"] >= info["tau"]["item"]))
    assert (judged["verdict"] == np.where(says, "hard", "noisy")).all()
    assert counts["observed"]["failed"] + counts["unobserved"]["failed"] == 11  # unchanged
    assert counts["observed"]["noisy"] > 0 and counts["actions"]["remove"] > 0


def test_threshold_from_audits_leaves_trained_pairs_out(tmp_path):
    run, cands, hard, _ = _make_run(tmp_path)
    audited = list(range(1, 200))
    trained = audited[:40]
    # the trained pairs carry the opposite label: were they fitted on, kappa would drop
    _audit(run, cands, lambda r: ("Low" if hard[r] else "High") if r in trained
           else ("High" if hard[r] else "Low"), audited, trained)
    decide(run, VerdictSettings(rule="threshold"))
    info = json.loads((run / "verdicts.json").read_text())["verdict_rule"]
    assert info["tau_source"] == "audits"
    a = info["audits"]
    assert a["audited"] == 199 and a["trained_left_out"] == 40
    assert a["usable"] + a["not_judged_candidates"] == 159
    assert a["not_judged_candidates"] == sum(1 for r in audited[40:] if r % 23 == 0)
    clean = [r for r in audited[40:] if r % 23]
    v = load_verdicts(run).iloc[clean]
    kappa = binary_kappa(v["verdict"] == "hard", hard[clean])
    assert info["kappa_in_sample"] == pytest.approx(kappa) and kappa > 0.3
    # taus chosen on the other folds still work on a signal: the honest figure stays high
    assert 0.3 < info["kappa_cross_fitted"] <= kappa + 0.05
    assert info["cross_fitting"]["folds"] == 5
    from llmhni_local.audit.report import llm_share_lines
    text = "\n".join(llm_share_lines(info))
    assert f"kappa {kappa:.3f} in-sample, {info['kappa_cross_fitted']:.3f} cross-fitted" in text


def test_cross_fitted_kappa_is_near_zero_on_noise():
    in_sample, cross = [], []
    users = np.arange(120) // 4
    for seed in range(20):  # 20 seeded noise fixtures: the means are safe, one draw is not
        rng = np.random.default_rng(seed)
        su, si, hard = rng.normal(size=120), rng.normal(size=120), rng.random(120) < 0.4
        in_sample.append(taus_by_kappa(su, si, hard)[2])
        cross.append(threshold_cv(su, si, hard, users, folds=5, seed=seed))
    in_sample, cross = np.array(in_sample), np.array(cross)
    # choosing two taus on the judged pairs finds agreement in noise; judged out of fold, none
    assert (in_sample > 0).all() and in_sample.mean() > 0.1
    assert abs(cross.mean()) < 0.08  # ~3 standard errors of the mean of 20 at kappa 0
    assert (in_sample - cross).mean() > 0.1
    # a perfect signal is kept by cross-fitting
    rng = np.random.default_rng(0)
    s = rng.normal(size=100)
    assert threshold_cv(s, s, s > 0.2, np.arange(100) // 5, folds=5) > 0.8


def test_threshold_on_noise_reports_both_kappas(tmp_path):
    run, cands, hard, _ = _make_run(tmp_path, llm_signal=0.0)  # probabilities are pure noise
    _audit(run, cands, lambda r: "High" if hard[r] else "Low", range(1, 200))
    info = decide(run, VerdictSettings(rule="threshold"))["verdict_rule"]
    stored = json.loads((run / "verdicts.json").read_text())["verdict_rule"]
    assert stored["kappa_in_sample"] == pytest.approx(info["kappa_in_sample"])
    assert info["kappa_in_sample"] > 0
    assert info["kappa_cross_fitted"] < info["kappa_in_sample"] - 0.05  # seeded fixture
    assert abs(info["kappa_cross_fitted"]) < 0.15


def test_threshold_from_audits_without_audits_is_one_line_error(tmp_path):
    run, *_ = _make_run(tmp_path)
    with pytest.raises(UserError, match=r"verdicts.tau_source = 'audits': 0 usable audited pairs"
                                        r".*verdicts.min_audits = 50"):
        decide(run, VerdictSettings(rule="threshold"))


def test_stacked_reports_each_part_and_needs_two_classes(tmp_path):
    run, cands, hard, train = _make_run(tmp_path)
    _audit(run, cands, lambda r: "High" if hard[r] else "Medium", range(1, 200), trained=[1, 2])
    counts = decide(run, VerdictSettings(rule="stacked"), train=train)
    info = counts["verdict_rule"]
    cv = info["cross_validated"]
    assert set(cv) == {"llm", "non_llm", "stacked", "argmax_rule"}
    assert all(0.0 <= cv[k]["auc"] <= 1.0 for k in ("llm", "non_llm", "stacked"))
    assert cv["stacked"]["auc"] >= max(cv["llm"]["auc"], cv["non_llm"]["auc"]) - 0.02
    assert cv["argmax_rule"]["kappa"] == 0.0  # argmax says hard everywhere: chance level
    assert info["llm_share"]["auc_gain_over_non_llm"] == pytest.approx(
        cv["stacked"]["auc"] - cv["non_llm"]["auc"])
    assert info["audits"]["trained_left_out"] == 2
    v = load_verdicts(run)
    judged = v["verdict"].isin(["hard", "noisy"])
    assert v.loc[judged, "p_stacked"].notna().all() and v.loc[~judged, "p_stacked"].isna().all()
    assert ((v.loc[judged, "p_stacked"] >= 0.5) == (v.loc[judged, "verdict"] == "hard")).all()

    one = tmp_path / "one"
    one.mkdir()
    run2, cands2, _, train2 = _make_run(one)
    _audit(run2, cands2, lambda r: "High", range(1, 120))
    with pytest.raises(UserError, match=r"verdicts.rule = 'stacked': 0 of 114 usable audited "
                                        r"pairs are noisy"):
        decide(run2, VerdictSettings(rule="stacked"), train=train2)


@pytest.mark.parametrize("llm_signal, score_weight, want", [
    (0.0, 1.5, {"non_llm"}),  # the LLM's probabilities are pure noise
    (1.5, 0.0, {"llm", "stacked"}),  # only the LLM's probabilities carry the label
])
def test_stacked_uses_the_candidate_with_the_best_cv_auc(tmp_path, llm_signal, score_weight,
                                                         want):
    run, cands, hard, train = _make_run(tmp_path, n_pairs=300, llm_signal=llm_signal,
                                        score_weight=score_weight)
    _audit(run, cands, lambda r: "High" if hard[r] else "Low", range(1, 300))
    info = decide(run, VerdictSettings(rule="stacked"), train=train)["verdict_rule"]
    cv = info["cross_validated"]
    assert info["model"] in want, (info["model"], cv)
    aucs = {k: cv[k]["auc"] for k in ("llm", "non_llm", "stacked")}
    assert all(0.0 <= a <= 1.0 for a in aucs.values())
    assert aucs[info["model"]] == max(aucs.values())  # never worse in CV than either part
    best_part = "non_llm" if llm_signal == 0 else "llm"
    assert aucs[best_part] > 0.7 and min(aucs.values()) < aucs[best_part]
    # the refitted model is the chosen one: its features and nothing else
    from llmhni_local.verdicts.decide import MODEL_FEATURES
    assert list(info["coefficients"]) == list(MODEL_FEATURES[info["model"]])
    assert info["model"] in info["chosen_by"] and "best cross-validated AUC" in info["chosen_by"]
    # the LLM's share is reported whatever model is used
    assert info["llm_share"]["auc_gain_over_non_llm"] == pytest.approx(
        aucs["stacked"] - aucs["non_llm"])
    v = load_verdicts(run)
    judged = v["verdict"].isin(["hard", "noisy"])
    assert ((v.loc[judged, "p_stacked"] >= 0.5) == (v.loc[judged, "verdict"] == "hard")).all()


def _spy_folds(monkeypatch):
    """Record every call of the fold function the verdict rules use."""
    from llmhni_local.verdicts import rules

    calls = []
    real = rules.group_folds

    def spy(groups, y, k, seed=0):
        folds = real(groups, y, k, seed)
        calls.append((np.asarray(groups).copy(), folds))
        return folds

    monkeypatch.setattr(rules, "group_folds", spy)
    return calls


def _one_fold_per_user(groups, folds):
    return all(len(set(folds[groups == u].tolist())) == 1 for u in np.unique(groups))


@pytest.mark.parametrize("rule", ["stacked", "threshold"])
def test_cross_fitting_folds_keep_each_users_pairs_together(tmp_path, monkeypatch, rule):
    run, cands, hard, train = _make_run(tmp_path)  # 6 candidates per user
    audited = range(1, 200)
    _audit(run, cands, lambda r: "High" if hard[r] else "Low", audited)
    calls = _spy_folds(monkeypatch)
    info = decide(run, VerdictSettings(rule=rule), train=train)["verdict_rule"]
    assert len(calls) == 1  # the same folds for every candidate model
    groups, folds = calls[0]
    # the groups are the users of the usable audited pairs (a failed user view: not usable)
    usable = [r for r in audited if r % 23]
    assert sorted(groups.tolist()) == sorted(cands["user"][usable].tolist())
    assert len(np.unique(groups)) < len(groups)  # users give several pairs: grouping matters
    assert _one_fold_per_user(groups, folds)
    assert len(np.unique(folds)) == 5
    where = info if rule == "stacked" else info["cross_fitting"]
    assert where["grouped_by"] == "user"


def test_grouped_folds_do_not_learn_who_a_user_is():
    # the label is a property of the user, the features only say who the user is (one column
    # per user): out of fold on new users that is worth nothing, on a user's other pairs a lot
    users = np.repeat(np.arange(40), 6)
    y = np.repeat(np.random.default_rng(0).random(40) < 0.5, 6)
    who = np.eye(40)[users]
    grouped = logistic_cv({"who": who}, y, users, folds=5, l2=1.0)["who"]
    by_pair = logistic_cv({"who": who}, y, np.arange(len(y)), folds=5, l2=1.0)["who"]
    assert by_pair["auc"] > 0.95  # pairs as the unit: the leak the grouped folds close
    # an unseen user's column is constant (0) in training, so it gets no weight: every pair
    # of a held-out fold gets the same score, and the pooled AUC is chance (0.458 here)
    assert abs(grouped["auc"] - 0.5) < 0.1 and grouped["n"] == len(y)


def test_a_fold_whose_training_side_has_one_class_is_left_out():
    # user 0 holds every positive: the fold that holds user 0 trains on negatives only
    users = np.repeat(np.arange(10), 4)
    y = users == 0
    x = np.random.default_rng(1).normal(size=(40, 2))
    cv = logistic_cv({"x": x}, y, users, folds=5, l2=1.0)["x"]
    folds = group_folds(users, y, 5)
    assert cv["n"] == len(y) - (folds == folds[0]).sum()  # user 0's whole fold is left out
    assert np.isnan(cv["auc"])  # only negatives left to score


def test_audit_report_shows_the_rule_and_the_llms_share(tmp_path):
    from llmhni_local.audit.report import write_report

    run, cands, hard, train = _make_run(tmp_path)
    _audit(run, cands, lambda r: "High" if hard[r] else "Low", range(1, 200))
    counts = decide(run, VerdictSettings(rule="stacked"), train=train)
    result = write_report(run)
    assert result["verdict_rule"] == counts["verdict_rule"]
    md = (run / "audit" / "report.md").read_text()
    cv = counts["verdict_rule"]["cross_validated"]
    assert "### The LLM's share" in md
    assert f"The rule uses `{counts['verdict_rule']['model']}`" in md
    for key in ("llm", "non_llm", "stacked"):
        assert f"| {cv[key]['auc']:.3f} | {cv[key]['kappa']:.3f} |" in md
    decide(run, VerdictSettings(rule="threshold", tau_source="share"))
    md = (run / "audit" / "report.md").read_text()
    assert "The LLM's share" in md  # the report file is only rewritten by `audit report`
    write_report(run)
    md = (run / "audit" / "report.md").read_text()
    assert "The LLM's share" not in md and "taus from target share 0.80" in md


def test_cli_verdicts_takes_the_rule(tmp_path):
    import typer
    from typer.testing import CliRunner

    from llmhni_local.cli import llm

    app = typer.Typer()
    llm.mount(app)
    run, *_ = _make_run(tmp_path)
    res = CliRunner().invoke(app, ["verdicts", "decide", str(run), "--rule", "threshold",
                                   "--set", "verdicts.tau_source=share",
                                   "--set", "verdicts.target_share=0.5"])
    assert res.exit_code == 0, (res.output, res.exception)
    assert "rule threshold: tau user" in res.output and "from share" in res.output
    info = json.loads((run / "verdicts.json").read_text())["verdict_rule"]
    assert info["target_share"] == 0.5
    res = CliRunner().invoke(app, ["verdicts", "decide", str(run), "--rule", "magic"])
    assert res.exit_code != 0 and "magic" in str(res.output) + str(res.exception)


def test_argmax_after_batch_calibration(tmp_path):
    run, *_ = _make_run(tmp_path)
    counts = decide(run, VerdictSettings(calibration="batch"))
    info = counts["verdict_rule"]
    assert info["rule"] == "argmax" and info["calibration"] == "batch"
    # every stored label is High; calibrated, the pairs below the mean P(High) lose it
    assert 0 < counts["observed"]["noisy"] < counts["observed"]["total"]
    assert info["calibration_means"]["user"]["High"] == pytest.approx(
        load_verdicts(run)["p_high_user"][load_verdicts(run)["ok_user"]].mean())


# ---------------------------------------------------------------------------- constant raters
def test_constant_views_by_hand():
    from llmhni_local.verdicts.rules import constant_views

    counts = {"user": {"High": 95, "Low": 5}, "item": {"High": 94, "Medium": 6},
              "both": {"Low": 100}}
    got = constant_views(counts, 0.95)
    assert got == {"user": {"label": "High", "share": 0.95, "answered": 100},
                   "both": {"label": "Low", "share": 1.0, "answered": 100}}
    assert set(constant_views(counts, 0.94)) == {"user", "item", "both"}
    assert constant_views(counts, 1.0) == {"both": {"label": "Low", "share": 1.0, "answered": 100}}
    # judgments with no label (failed, or a score-mode reader's numbers) are no answers here
    assert constant_views({"user": {None: 500}, "item": {}}, 0.95) == {}
    assert constant_views({"user": {None: 500, "Low": 2, "High": 1}}, 0.6)["user"]["share"] == (
        pytest.approx(2 / 3))


def test_constant_share_is_checked():
    for bad in (0.5, 0.3, 1.01):
        with pytest.raises(ConfigError, match="verdicts.constant_share") as info:
            VerdictSettings(constant_share=bad)
        assert "\n" not in str(info.value)
    assert VerdictSettings().constant_share == 0.95 and VerdictSettings(constant_share=1.0)


def test_an_all_high_rater_is_recorded_constant(tmp_path):
    # _make_run's rater answers High to every pair in both views (as zero-shot SmolLM2 did)
    run, *_ = _make_run(tmp_path)
    counts = decide(run)
    stored = json.loads((run / "verdicts.json").read_text())
    assert stored["rater_constant"] is True and counts["rater_constant"] is True
    assert set(stored["constant"]) == {"user", "item"}
    assert stored["constant"]["user"]["label"] == "High"
    assert stored["constant"]["user"]["share"] == 1.0
    assert stored["constant"]["user"]["answered"] == 240 - 11  # 11 failed user views
    assert stored["labels"]["item"] == {"High": 240}
    # every answer is High, so even the strictest setting names it
    assert decide(run, VerdictSettings(constant_share=1.0))["rater_constant"] is True
    # the threshold rule reads the probabilities: the labels are constant, the verdicts not
    thr = decide(run, VerdictSettings(rule="threshold", tau_source="share", target_share=0.6))
    assert set(thr["constant"]) == {"user", "item"} and thr["rater_constant"] is False


def test_constant_rater_rule():
    from llmhni_local.verdicts.decide import constant_rater

    argmax = VerdictSettings()
    high = {"label": "High", "share": 1.0, "answered": 10}
    low = {"label": "Low", "share": 1.0, "answered": 10}
    assert constant_rater({"user": high, "item": high}, argmax)
    assert constant_rater({"item": low}, argmax)  # every verdict noisy
    assert not constant_rater({"user": high}, argmax)  # the item view still decides
    assert not constant_rater({}, argmax)
    assert not constant_rater({"user": high, "item": high}, VerdictSettings(calibration="batch"))


def test_label_counts_skip_missing_labels():
    import pandas as pd

    from llmhni_local.verdicts.decide import verdict_counts

    table = pd.DataFrame({"kind": ["observed"] * 3, "verdict": ["noisy"] * 3,
                          "action": ["remove"] * 3, "label_user": [None, None, None],
                          "label_item": ["High", None, "Low"]})
    counts = verdict_counts(table)
    assert counts["labels"] == {"user": {}, "item": {"High": 1, "Low": 1}}


def test_rate_run_warns_in_one_line_when_the_rater_is_constant(tmp_path, monkeypatch):
    from llmhni_local.engine.settings import RaterSettings
    from llmhni_local.judgments.plan import RateReport, RateSettings
    from llmhni_local.stages import rate as rate_module
    from llmhni_local.stages.rate import constant_rating, rate_run

    run, *_ = _make_run(tmp_path)
    # the judgments are in the store already: no model is loaded, nothing is rated
    monkeypatch.setattr(rate_module, "checked_rater_id", lambda *a, **k: (MODEL, ADAPTER))
    monkeypatch.setattr(rate_module, "rate_candidates", lambda *a, **k: RateReport())
    logs = []
    rate_run(run, RaterSettings(), RateSettings(), progress=False, log=logs.append)
    warned = [m for m in logs if "warning" in m]
    assert len(warned) == 1 and "\n" not in warned[0]
    assert "High for 100.0% of the user view's 229 answered judgments" in warned[0]
    assert "verdicts.constant_share = 0.95" in warned[0]
    logs.clear()
    assert set(constant_rating(run, 0.95)) == {"user", "item"}
    # no label reaches the share: no warning
    monkeypatch.setattr(rate_module, "constant_rating", lambda *a: {})
    rate_run(run, RaterSettings(), RateSettings(), progress=False, log=logs.append)
    assert logs == []
