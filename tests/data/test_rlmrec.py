"""RLMRec-format folders: synthetic ones for every error, the real Amazon split when present."""

import hashlib
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from llmhni_local.core.errors import DataError
from llmhni_local.data.rlmrec import load_rlmrec

REAL = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "rlmrec-amazon"


def _coo(pairs, shape):
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    return sp.coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=shape)


def _write(folder, trn, val, tst, shape=(4, 5), val_shape=None, usr=None, itm=None):
    folder.mkdir(parents=True, exist_ok=True)
    for name, pairs, shp in (("trn_mat.pkl", trn, shape), ("val_mat.pkl", val, val_shape or shape),
                             ("tst_mat.pkl", tst, shape)):
        if pairs is not None:
            (folder / name).write_bytes(pickle.dumps(_coo(pairs, shp)))
    if usr is not None:
        (folder / "usr_prf.pkl").write_bytes(pickle.dumps(usr))
    if itm is not None:
        (folder / "itm_prf.pkl").write_bytes(pickle.dumps(itm))
    return folder


TRN = [(0, 0), (0, 1), (1, 2), (2, 3), (3, 4), (3, 0)]
VAL = [(0, 2), (1, 3)]
TST = [(2, 0), (3, 1), (0, 4)]


def test_small_folder(tmp_path):
    usr = {0: {"profile": "likes sci-fi", "reasoning": "r"}, 1: "reads history",
           np.int64(2): {"profile": "cooks"}, 3: {"profile": ""}}
    itm = {i: {"profile": f"book {i}"} for i in range(5)}
    folder = _write(tmp_path / "toy", TRN, VAL, TST, usr=usr, itm=itm)
    d = load_rlmrec(folder)
    assert (d.name, d.n_users, d.n_items) == ("toy", 4, 5)
    assert sorted(map(tuple, d.train.tolist())) == sorted(TRN)
    assert sorted(map(tuple, d.val.tolist())) == sorted(VAL)
    assert sorted(map(tuple, d.test.tolist())) == sorted(TST)
    assert d.train.dtype == np.int64
    assert d.user_ids == ["0", "1", "2", "3"] and d.item_ids == [str(i) for i in range(5)]
    assert d.user_text == ["likes sci-fi", "reads history", "cooks", ""]
    assert d.item_text == [f"book {i}" for i in range(5)]
    assert d.train_rating is None and d.train_noise is None
    assert set(d.sources) == {f"toy/{f}" for f in ("trn_mat.pkl", "val_mat.pkl", "tst_mat.pkl",
                                                    "usr_prf.pkl", "itm_prf.pkl")}
    digest = hashlib.sha256((folder / "trn_mat.pkl").read_bytes()).hexdigest()
    assert d.sources["toy/trn_mat.pkl"] == digest


def test_profiles_are_optional_and_gaps_are_noted(tmp_path):
    d = load_rlmrec(_write(tmp_path / "a", TRN, VAL, TST))
    assert d.user_text is None and d.item_text is None
    d = load_rlmrec(_write(tmp_path / "b", TRN, VAL, TST, itm={1: "only one"}))
    assert d.item_text == ["", "only one", "", "", ""]
    assert any("4 items have no profile" in n for n in d.notes)


def test_duplicate_entries_are_merged(tmp_path):
    folder = _write(tmp_path / "dup", TRN + [(0, 0)], VAL, TST)
    d = load_rlmrec(folder)
    assert len(d.train) == len(TRN)
    assert any("merged 1 duplicate" in n for n in d.notes)


@pytest.mark.parametrize("missing", ["trn_mat.pkl", "val_mat.pkl", "tst_mat.pkl"])
def test_missing_split_file(tmp_path, missing):
    folder = _write(tmp_path / "m", TRN, VAL, TST)
    (folder / missing).unlink()
    with pytest.raises(DataError, match=missing):
        load_rlmrec(folder)


def test_missing_folder(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_rlmrec(tmp_path / "nowhere")


def test_shape_mismatch(tmp_path):
    folder = _write(tmp_path / "s", TRN, VAL, TST, val_shape=(4, 6))
    with pytest.raises(DataError, match=r"val_mat\.pkl: shape \(4, 6\) differs"):
        load_rlmrec(folder)


@pytest.mark.parametrize("split, fname", [("val", "val_mat.pkl"), ("test", "tst_mat.pkl")])
def test_heldout_user_without_training(tmp_path, split, fname):
    trn = [p for p in TRN if p[0] != 3]
    val = VAL + [(3, 1)] if split == "val" else VAL
    tst = TST if split == "test" else [p for p in TST if p[0] != 3]
    folder = _write(tmp_path / "o", trn, val, tst)
    with pytest.raises(DataError) as err:
        load_rlmrec(folder)
    assert fname in str(err.value) and "user index 3" in str(err.value)


def test_not_a_sparse_matrix(tmp_path):
    folder = _write(tmp_path / "n", TRN, VAL, TST)
    (folder / "val_mat.pkl").write_bytes(pickle.dumps({"rows": [1, 2]}))
    with pytest.raises(DataError, match=r"val_mat\.pkl: expected a scipy\.sparse matrix"):
        load_rlmrec(folder)


@pytest.mark.parametrize("usr, match", [
    ({"x": "a"}, "key 'x' is not a user index"),
    ({9: "a"}, "user index 9 is outside"),
    ({0: {"text": "a"}}, "no 'profile' key"),
    ({0: 5}, "not text"),
    (["a", "b"], None),  # a list indexed by position is accepted
    ("just text", "expected a dict"),
])
def test_bad_profiles(tmp_path, usr, match):
    folder = _write(tmp_path / "p", TRN, VAL, TST, usr=usr)
    if match is None:
        assert load_rlmrec(folder).user_text == ["a", "b", "", ""]
        return
    with pytest.raises(DataError, match=match) as err:
        load_rlmrec(folder)
    assert "usr_prf.pkl" in str(err.value)


class _Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


@pytest.mark.parametrize("target", ["trn_mat.pkl", "usr_prf.pkl", "itm_prf.pkl"])
def test_malicious_pickle_is_refused(tmp_path, target):
    marker = tmp_path / "pwned"
    folder = _write(tmp_path / "evil", TRN, VAL, TST, usr={0: "a"}, itm={0: "b"})
    evil = {0: {"profile": _Payload(marker)}} if target != "trn_mat.pkl" else _Payload(marker)
    (folder / target).write_bytes(pickle.dumps(evil))
    with pytest.raises(DataError) as err:
        load_rlmrec(folder)
    assert target in str(err.value)
    assert f"{os.system.__module__}.system" in str(err.value)
    assert not marker.exists()


@pytest.mark.skipif(not REAL.is_dir(), reason=f"RLMRec Amazon split not found at {REAL}")
def test_real_amazon_split():
    d = load_rlmrec(REAL)
    assert (d.n_users, d.n_items) == (11_000, 9_332)
    assert (len(d.train), len(d.val), len(d.test)) == (120_464, 40_290, 40_106)
    expected = {
        "trn_mat.pkl": "535cc15f915858a64249e3a893cceac9efe8e6f1ce17c08879a3c099c510b309",
        "val_mat.pkl": "90cd52a011f9b31081461a010e9bccb98d12a1dd7a7760085facbc7d1a2c46c3",
        "tst_mat.pkl": "c279ce551d32536ed90d916212bc0b891ce4c189ea7cfa5e4051e0dbfc728d17",
    }
    assert d.sources == {f"{REAL.name}/{k}": v for k, v in expected.items()}
    keys = [a[:, 0] * d.n_items + a[:, 1] for a in (d.train, d.val, d.test)]
    assert not np.intersect1d(keys[0], keys[1]).size
    assert not np.intersect1d(keys[0], keys[2]).size
    assert len(np.unique(d.train[:, 0])) == 11_000
