"""User-supplied files: every format, the split protocol, and a clear error for each bad input."""

import json

import numpy as np
import pandas as pd
import pytest

from llmhni_local.core.errors import DataError
from llmhni_local.data.files import load_files

FORMATS = ["csv", "tsv", "jsonl", "parquet"]


def _write(path, frame):
    """Write ``frame`` in the format its suffix names (jsonl keeps each value's JSON type)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    kind = path.suffix[1:]
    if kind == "csv":
        frame.to_csv(path, index=False)
    elif kind == "tsv":
        frame.to_csv(path, index=False, sep="\t")
    elif kind == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in frame.to_dict("records")))
    else:
        frame.to_parquet(path, index=False)
    return path


def _log(n_users=6, per_user=10, seed=0, rating=True, timestamp=True):
    """A small log: ids with leading zeros, ratings 1-5, distinct timestamps."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        items = rng.choice(40, size=per_user, replace=False)
        times = rng.permutation(per_user)  # distinct, not in file order
        for k, i in enumerate(items):
            row = {"user": f"0{u}", "item": f"i{i:03d}"}
            if rating:
                row["rating"] = int(rng.integers(1, 6))
            if timestamp:
                row["timestamp"] = 1000 * u + int(times[k])
            rows.append(row)
    return pd.DataFrame(rows)


def _pairs(d, split):
    return {(d.user_ids[u], d.item_ids[i]) for u, i in getattr(d, split).tolist()}


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_gives_the_same_data(tmp_path, fmt):
    log = _log()
    ref = load_files(_write(tmp_path / "ref" / "interactions.csv", log))
    d = load_files(_write(tmp_path / fmt / f"interactions.{fmt}", log))
    assert d.name == "interactions"
    assert d.user_ids == ref.user_ids == [f"0{u}" for u in range(6)]  # strings, leading zero kept
    assert d.item_ids == ref.item_ids
    for split in ("train", "val", "test"):
        assert np.array_equal(getattr(d, split), getattr(ref, split))
    assert np.array_equal(d.train_rating, ref.train_rating)
    assert list(d.sources) == [f"interactions.{fmt}"]


def test_natural_noise_protocol_and_time_order(tmp_path):
    log = _log(n_users=8, per_user=20)
    d = load_files(_write(tmp_path / "interactions.csv", log))
    rating = {(r.user, r.item): r.rating for r in log.itertuples()}
    time = {(r.user, r.item): r.timestamp for r in log.itertuples()}
    train = [(d.user_ids[u], d.item_ids[i]) for u, i in d.train.tolist()]
    assert len(train) == 8 * 16  # every training interaction kept, whatever its rating
    assert d.train_rating.tolist() == [rating[p] for p in train]
    assert d.train_noise.tolist() == [rating[p] <= 2 for p in train]
    assert d.train_noise.any() and not d.train_noise.all()
    held = _pairs(d, "val") | _pairs(d, "test")
    assert held and all(rating[p] >= 4 for p in held)
    # every held-out interaction rated >= 4 is kept: per user, the last 4 by time
    for user in log["user"].unique():
        rows = log[log["user"] == user].sort_values("timestamp")
        last = rows.iloc[16:]
        assert {(user, i) for i, r in zip(last["item"], last["rating"]) if r >= 4} == \
            {p for p in held if p[0] == user}
        train_times = [time[p] for p in train if p[0] == user]
        assert max(train_times) < last["timestamp"].min()
    assert not (_pairs(d, "val") & _pairs(d, "test"))
    assert any("by time" in n for n in d.notes)


def test_no_rating_no_timestamp_uses_seeded_random_split(tmp_path):
    log = _log(rating=False, timestamp=False)
    path = _write(tmp_path / "interactions.tsv", log)
    a, b, c = load_files(path, seed=1), load_files(path, seed=1), load_files(path, seed=2)
    assert a.train_rating is None and a.train_noise is None
    assert len(a.train) + len(a.val) + len(a.test) == len(log)  # nothing filtered out
    assert np.array_equal(a.train, b.train) and np.array_equal(a.test, b.test)
    assert _pairs(a, "train") != _pairs(c, "train")
    assert any("seed 1" in n for n in a.notes)


def test_date_timestamps(tmp_path):
    log = _log(per_user=10)
    days = pd.to_datetime(log["timestamp"], unit="D", origin="2001-01-01")
    log = log.assign(timestamp=days.dt.strftime("%Y-%m-%dT%H:%M:%S"))
    ref = load_files(_write(tmp_path / "n" / "interactions.csv", _log(per_user=10)))
    d = load_files(_write(tmp_path / "d" / "interactions.csv", log))
    for split in ("train", "val", "test"):
        assert np.array_equal(getattr(d, split), getattr(ref, split))


def test_folder_with_profiles(tmp_path):
    log = _log()
    _write(tmp_path / "shop" / "interactions.jsonl", log)
    _write(tmp_path / "shop" / "users.csv", pd.DataFrame({"id": ["01", "00"],
                                                          "text": ["likes, commas", "quiet"]}))
    items = sorted(log["item"].unique())
    _write(tmp_path / "shop" / "items.parquet",
           pd.DataFrame({"id": items, "text": [f"about {i}" for i in items]}))
    d = load_files(tmp_path / "shop")
    assert d.name == "shop"
    assert d.user_text[:3] == ["quiet", "likes, commas", ""]
    assert d.item_text == [f"about {i}" for i in d.item_ids]
    assert set(d.sources) == {"shop/interactions.jsonl", "shop/users.csv", "shop/items.parquet"}
    assert any("users.csv: 4 users have no profile" in n for n in d.notes)


def test_duplicates_dropped_keeping_the_first(tmp_path):
    log = _log()
    first = log.iloc[[3]].assign(rating=1, timestamp=-5)
    dup = pd.concat([log.iloc[:3], first, log.iloc[3:]], ignore_index=True)  # row 3 twice
    dup = pd.concat([dup, dup.iloc[[0]]], ignore_index=True)                 # row 0 twice
    d = load_files(_write(tmp_path / "interactions.csv", dup))
    assert "interactions.csv: dropped 2 duplicate interactions" in d.notes
    assert len(d.train) + len(d.val) + len(d.test) <= len(log)
    user, item = first["user"].iloc[0], first["item"].iloc[0]
    u, i = d.user_ids.index(user), d.item_ids.index(item)
    row = np.flatnonzero((d.train[:, 0] == u) & (d.train[:, 1] == i))
    assert len(row) == 1 and d.train_rating[row[0]] == 1  # the first line's values won


# ---------------------------------------------------------------------------- errors
def _raises(path_or_folder, *parts):
    with pytest.raises(DataError) as err:
        load_files(path_or_folder)
    msg = str(err.value)
    assert "\n" not in msg
    for part in parts:
        assert part in msg, msg
    return msg


@pytest.mark.parametrize("fmt", FORMATS)
def test_missing_column(tmp_path, fmt):
    path = _write(tmp_path / f"interactions.{fmt}", _log().drop(columns="item"))
    _raises(path, f"interactions.{fmt}", "missing column 'item'")


@pytest.mark.parametrize("content", ["", "\n\n", "user,item,rating\n"])
def test_empty_csv(tmp_path, content):
    path = tmp_path / "interactions.csv"
    path.write_text(content)
    _raises(path, "interactions.csv", "empty file")


def test_empty_jsonl_and_parquet(tmp_path):
    path = tmp_path / "interactions.jsonl"
    path.write_text("")
    _raises(path, "interactions.jsonl", "empty file")
    path = _write(tmp_path / "interactions.parquet", _log().iloc[:0])
    _raises(path, "interactions.parquet", "empty file")


def test_rating_not_a_number_csv_names_the_line(tmp_path):
    path = tmp_path / "interactions.csv"
    path.write_text("user,item,rating\n"
                    "a,x,5\n"
                    "\n"  # blank lines are skipped by the reader, but still counted as lines
                    "   \n"
                    'a,"y, the\nsequel",4\n'  # a quoted field spanning two lines
                    "a,z,great\n"
                    "b,x,3\n")
    _raises(path, "interactions.csv", "line 7", "rating 'great' is not a number")


def test_rating_not_a_number_jsonl_and_parquet(tmp_path):
    path = tmp_path / "interactions.jsonl"
    path.write_text('{"user": "a", "item": "x", "rating": 5}\n'
                    '{"user": "a", "item": "y", "rating": "five"}\n')
    _raises(path, "interactions.jsonl", "line 2", "'five' is not a number")
    frame = pd.DataFrame({"user": ["a", "a", "b"], "item": ["x", "y", "x"],
                          "rating": ["5", "4", "n/a"]})
    path = _write(tmp_path / "interactions.parquet", frame)
    _raises(path, "interactions.parquet", "row 3", "'n/a' is not a number")


def test_empty_rating_and_empty_id(tmp_path):
    path = tmp_path / "interactions.csv"
    path.write_text("user,item,rating\na,x,5\na,y,\n")
    _raises(path, "interactions.csv", "line 3", "empty rating")
    path.write_text("user,item,rating\na,x,5\n,y,4\n")
    _raises(path, "interactions.csv", "line 3", "empty user")


def test_bad_timestamp(tmp_path):
    path = tmp_path / "interactions.csv"
    path.write_text("user,item,timestamp\na,x,2020-01-01\na,y,2020-01-02\na,z,someday\n")
    _raises(path, "interactions.csv", "line 4", "timestamp 'someday'")


def test_profile_id_used_by_no_interaction(tmp_path):
    _write(tmp_path / "f" / "interactions.csv", _log())
    (tmp_path / "f" / "items.tsv").write_text("id\ttext\ni000\ta\nnot-an-item\tb\n")
    msg = _raises(tmp_path / "f", "items.tsv", "line 3", "'not-an-item'", "appears in no interaction")
    assert "item id" in msg


def test_profile_missing_column_and_repeated_id(tmp_path):
    _write(tmp_path / "f" / "interactions.csv", _log())
    (tmp_path / "f" / "users.csv").write_text("id,bio\n00,a\n")
    _raises(tmp_path / "f", "users.csv", "missing column 'text'")
    (tmp_path / "f" / "users.csv").write_text("id,text\n00,a\n01,b\n00,c\n")
    _raises(tmp_path / "f", "users.csv", "line 4", "listed twice", "line 2")


def test_user_left_without_training(tmp_path):
    log = pd.concat([_log(), pd.DataFrame([{"user": "lonely", "item": "i001", "rating": 5,
                                             "timestamp": 1}])], ignore_index=True)
    path = _write(tmp_path / "interactions.csv", log)
    _raises(path, "interactions.csv", f"line {len(log) + 1}", "'lonely'", "none for training")


def test_bad_paths(tmp_path):
    _raises(tmp_path / "nothing-here", "no such file or folder")
    (tmp_path / "empty-folder").mkdir()
    _raises(tmp_path / "empty-folder", "no interactions file")
    two = tmp_path / "two"
    _write(two / "interactions.csv", _log())
    _write(two / "interactions.parquet", _log())
    _raises(two, "several interactions files")
    odd = tmp_path / "interactions.xlsx"
    odd.write_text("x")
    _raises(odd, "interactions.xlsx", "unsupported file type")


def test_unreadable_files(tmp_path):
    path = tmp_path / "interactions.jsonl"
    path.write_text('{"user": "a", "item": "x"}\n\n{"user": "a", "item": \n')
    _raises(path, "interactions.jsonl", "line 3: not valid JSON")
    path.write_text('{"user": "a", "item": "x"}\n[1, 2]\n')
    _raises(path, "interactions.jsonl", "line 2: not a JSON object")
    path = tmp_path / "interactions.csv"
    path.write_text("user,item\na,x\na,y,extra\n")
    _raises(path, "interactions.csv", "cannot be read as CSV", "line 3")
    path = tmp_path / "interactions.parquet"
    path.write_text("not parquet")
    _raises(path, "interactions.parquet", "cannot be read as Parquet")


def test_progress_bar_setting_is_restored(tmp_path):
    import datasets

    before = datasets.are_progress_bars_disabled()
    load_files(_write(tmp_path / "interactions.csv", _log()))
    assert datasets.are_progress_bars_disabled() == before
