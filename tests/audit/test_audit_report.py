"""``audit report``: per view and verdict, against figures recomputed from the store."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from llmhni_local.audit.agreement import agreement
from llmhni_local.audit.export import export_sample, write_table
from llmhni_local.audit.importer import import_labels
from llmhni_local.audit.records import AuditStore, audit_dir, trained_pairs
from llmhni_local.audit.report import write_report
from llmhni_local.core.errors import UserError
from llmhni_local.judgments.store import JudgmentStore
from llmhni_local.verdicts.rules import audit_verdict, model_verdict


def _label_sample(run, tmp_path, n=40, simulated=False):
    frame, _ = export_sample(run, n, seed=5)
    cycle = ["High", "Medium", "Low", "High"]
    frame["label"] = [cycle[k % 4] for k in range(len(frame))]
    frame["annotator"] = "simulated (test)" if simulated else "ana"
    import_labels(run, write_table(frame, tmp_path / "labels.csv"))
    return frame


def test_verdict_rules():
    assert audit_verdict("High") == "hard" and audit_verdict("Medium") == "noisy"
    assert model_verdict("High", "High") == "hard" and model_verdict("High", "Low") == "noisy"
    assert model_verdict(None, "High") is None


def test_report_matches_figures_recomputed_from_the_store(rated_run, tmp_path):
    labels = _label_sample(rated_run, tmp_path)
    result = write_report(rated_run)
    assert result["evaluated_pairs"] == 40 and result["excluded_finetune_pairs"] == 0
    assert not result["simulated"]
    (rater,) = result["raters"]
    assert rater["model_id"] == "fake@0" and rater["adapter"] == ""
    with JudgmentStore(rated_run) as s:
        rows = s.frame()
    truth = dict(zip(zip(labels["user"], labels["item"]), labels["label"]))
    got = {}
    for view in ("user", "item"):
        part = rows[rows["view"] == view]
        got[view] = {(u, i): (lab if ok else None) for u, i, lab, ok in
                     zip(part["user"], part["item"], part["label"], part["ok"]) if (u, i) in truth}
        pairs = sorted(got[view])
        expect = agreement([truth[p] for p in pairs], [got[view][p] for p in pairs])
        assert rater["views"][view]["confusion"] == expect["confusion"]
        assert rater["views"][view]["kappa"] == pytest.approx(expect["kappa"], nan_ok=True)
        assert rater["views"][view]["failed"] == expect["failed"]
    pairs = sorted(truth)
    verdict = agreement([audit_verdict(truth[p]) for p in pairs],
                        [model_verdict(got["user"][p], got["item"][p]) for p in pairs],
                        ("hard", "noisy"))
    assert rater["views"]["verdict"]["confusion"] == verdict["confusion"]
    assert rater["views"]["verdict"]["weighted_kappa"] == pytest.approx(verdict["kappa"],
                                                                        nan_ok=True)
    # files next to each other in RUN/audit/
    folder = audit_dir(rated_run)
    md = (folder / "report.md").read_text()
    assert "fake@0" in md and "combined verdict" in md and "confusion.png" in md
    assert "SIMULATED" not in md
    assert (folder / "confusion.png").stat().st_size > 5000
    assert (folder / "confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    dis = pd.read_csv(folder / "disagreements.csv")
    assert len(dis) == rater["n_disagreements"] > 0
    first = dis.iloc[0]
    assert first["audit"] == truth[(first["user"], first["item"])]
    saved = json.loads((folder / "report.json").read_text())
    assert saved["raters"][0]["views"]["user"]["n"] == rater["views"]["user"]["n"]


def test_finetune_pairs_are_left_out_of_every_evaluation(rated_run, tmp_path):
    labels = _label_sample(rated_run, tmp_path, simulated=True)
    trained = list(zip(labels["user"][:15], labels["item"][:15]))
    with AuditStore(rated_run) as store:
        store.mark_finetune(trained, "some-adapter", "train")
        store.mark_finetune(list(zip(labels["user"][15:20], labels["item"][15:20])),
                            "some-adapter", "validation")
    assert trained_pairs(rated_run) == {(int(u), int(i)) for u, i in trained}
    result = write_report(rated_run)
    assert result["excluded_finetune_pairs"] == 15 and result["evaluated_pairs"] == 25
    assert result["simulated"]
    assert result["raters"][0]["views"]["user"]["n"] <= 25
    listed = {(d["user"], d["item"]) for d in result["disagreements"]}
    assert not listed & set(trained)
    assert "SIMULATED" in (audit_dir(rated_run) / "report.md").read_text()


def test_report_needs_labels(rated_run):
    assert trained_pairs(rated_run) == set()
    with pytest.raises(UserError, match="no audited labels"):
        write_report(rated_run)


def test_identification_rows_leave_out_trained_pairs(rated_run):
    import pandas as pd

    from llmhni_local.audit.records import without_trained_pairs

    frame = pd.DataFrame({"user": [0, 0, 1, 2], "item": [1, 2, 3, 4], "verdict": ["hard"] * 4})
    assert without_trained_pairs(frame, rated_run)[1] == 0  # no audit store: nothing left out
    with AuditStore(rated_run) as store:
        store.mark_finetune([(0, 2), (2, 4)], "probe-x", "train")
        store.mark_finetune([(1, 3)], "probe-x", "validation")  # measured, not trained on
    kept, n = without_trained_pairs(frame, rated_run)
    assert n == 2 and list(zip(kept["user"], kept["item"])) == [(0, 1), (1, 3)]
