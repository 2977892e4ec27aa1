"""``audit export``: a stratified sample of rated pairs, profiles in, labels blank."""

from __future__ import annotations

import pandas as pd
import pytest

from llmhni_local.audit.export import (
    FILL_COLUMNS,
    MODEL_COLUMNS,
    export_sample,
    rated_pairs,
    write_table,
)
from llmhni_local.audit.importer import import_labels
from llmhni_local.core.errors import UserError
from llmhni_local.text.profiles import load_profiles


def test_sample_is_stratified_and_blank(rated_run):
    table, _ = rated_pairs(rated_run)
    pool = table[table["verdict"].isin(["hard", "noisy", "failed"])]
    frame, info = export_sample(rated_run, 30, seed=1)
    assert len(frame) == 30 and frame[["user", "item"]].duplicated().sum() == 0
    strata = (pool["kind"] + "/" + pool["verdict"]).value_counts()
    assert info["strata"] == {k: int(v) for k, v in strata.sort_index().items()}
    assert sum(info["drawn"].values()) == 30
    for name, k in info["drawn"].items():  # proportional, to within one pair
        assert abs(k - 30 * info["strata"][name] / len(pool)) < 1.0
    # every sampled pair is a rated candidate, with the stratum the draw says
    merged = frame.merge(pool, on=["user", "item", "kind"], how="left")
    assert merged["verdict"].notna().all()
    got = (merged["kind"] + "/" + merged["verdict"]).value_counts().to_dict()
    assert got == {k: v for k, v in info["drawn"].items() if v}
    # labels blank, model labels hidden, profiles as the run has them
    assert all((frame[c] == "").all() for c in FILL_COLUMNS)
    assert not set(MODEL_COLUMNS) & set(frame.columns)
    prof = load_profiles(rated_run)
    r = frame.iloc[0]
    assert r["user_profile"] == prof.users[r["user"]] and r["item_profile"] == prof.items[r["item"]]
    # rows are shuffled, not grouped by stratum
    kinds = merged["kind"].tolist()
    assert kinds != sorted(kinds) and kinds != sorted(kinds, reverse=True)


def test_model_labels_only_on_request(rated_run):
    frame, _ = export_sample(rated_run, 12, show_model_labels=True)
    assert set(MODEL_COLUMNS) <= set(frame.columns)
    table, _ = rated_pairs(rated_run)
    merged = frame.merge(table, on=["user", "item"], suffixes=("", "_t"))
    assert (merged["verdict"] == merged["verdict_t"]).all()
    shown = merged["model_label_user"]
    assert ((shown == merged["label_user"]) | (shown == "(failed)")).all()


def test_equal_allocation_and_already_audited_pairs(rated_run, tmp_path):
    frame, info = export_sample(rated_run, 12, allocation="equal")
    sizes = [v for k, v in info["drawn"].items() if info["strata"][k] >= 12 // len(info["strata"])]
    assert len(set(sizes)) == 1  # strata large enough all get the same count
    # label the sample and import it: a second export offers only other pairs
    frame["label"] = "Medium"
    path = write_table(frame, tmp_path / "sample.csv")
    assert import_labels(rated_run, path).rows == 12
    again, _ = export_sample(rated_run, 500)
    done = set(zip(frame["user"], frame["item"]))
    assert not done & set(zip(again["user"], again["item"]))
    both, _ = export_sample(rated_run, 500, include_audited=True)
    assert len(both) == len(again) + 12


def test_round_trip_through_jsonl(rated_run, tmp_path):
    frame, _ = export_sample(rated_run, 8, seed=3)
    path = write_table(frame, tmp_path / "sample.jsonl")
    back = pd.read_json(path, lines=True)
    assert back["user"].tolist() == frame["user"].tolist()
    assert back["item_profile"].tolist() == frame["item_profile"].tolist()


def test_bad_requests(rated_run, tmp_path):
    with pytest.raises(UserError, match="--n must be > 0"):
        export_sample(rated_run, 0)
    with pytest.raises(UserError, match="no profiles here"):
        export_sample(tmp_path, 5)
    (rated_run / "rating.json").unlink()
    with pytest.raises(UserError, match="no rating manifest"):
        export_sample(rated_run, 5)
