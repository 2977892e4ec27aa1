"""Restricted unpickling: real sparse matrices load, code-running payloads never run."""

import builtins
import os
import pickle

import numpy as np
import pytest
import scipy.sparse as sp

from llmhni_local.core.errors import DataError
from llmhni_local.data.safe_pickle import allowed, safe_load


class _System:
    """Pickles as a call of os.system: a shell command run at load time."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


class _Exec:
    """Pickles as a call of builtins.exec: Python run at load time."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (builtins.exec, (f"open({self.marker!r}, 'w').close()",))


def _dump(path, obj, protocol=pickle.DEFAULT_PROTOCOL):
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    return path


def _equal(a, b):
    return a.shape == b.shape and (a != b).nnz == 0 and type(a) is type(b)


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
@pytest.mark.parametrize("cls", [sp.coo_matrix, sp.csr_matrix, sp.csc_matrix,
                                 sp.coo_array, sp.csr_array, sp.csc_array])
def test_sparse_matrices_load(tmp_path, cls, protocol):
    m = cls(sp.random(7, 5, density=0.4, random_state=0, format="coo"))
    got = safe_load(_dump(tmp_path / "m.pkl", m, protocol))
    assert _equal(got, m)


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_numpy_and_plain_containers_load(tmp_path, protocol):
    obj = {
        np.int64(3): {"profile": "likes thrillers", "reasoning": "…"},
        "arrays": [np.arange(4, dtype=np.int32), np.ones((2, 2), dtype=np.float32)],
        "scalars": (np.float64(1.5), np.bool_(True), 7, 2.5, None, b"\x00\x01"),
        "set": {1, 2}, "fs": frozenset({"a"}),
    }
    got = safe_load(_dump(tmp_path / "o.pkl", obj, protocol))
    assert got[3]["profile"] == "likes thrillers"
    assert np.array_equal(got["arrays"][0], obj["arrays"][0])
    assert got["arrays"][1].dtype == np.float32
    assert got["scalars"] == obj["scalars"]
    assert got["set"] == {1, 2} and got["fs"] == frozenset({"a"})


def test_old_module_paths_load(tmp_path):
    """Pickles written by numpy 1.x (numpy.core) and scipy < 1.8 (scipy.sparse.coo)."""
    m = sp.coo_matrix(np.eye(3))
    data = pickle.dumps(m, protocol=2)  # GLOBAL opcodes hold "module\nname\n" as text
    assert b"numpy._core.multiarray\n" in data and b"scipy.sparse._coo\n" in data
    data = data.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")
    data = data.replace(b"scipy.sparse._coo\n", b"scipy.sparse.coo\n")
    path = tmp_path / "old.pkl"
    path.write_bytes(data)
    assert _equal(safe_load(path), m)


def test_payloads_are_live_under_plain_pickle(tmp_path):
    # the guard below is meaningful only if the payload runs when nothing stops it
    marker = tmp_path / "plain-marker"
    pickle.loads(pickle.dumps(_Exec(marker)))
    assert marker.exists()


@pytest.mark.parametrize("payload_cls, refused", [
    (_System, f"{os.system.__module__}.system"),
    (_Exec, "builtins.exec"),
])
@pytest.mark.parametrize("wrap", ["bare", "in_dict", "beside_matrix"])
def test_payload_refused_and_never_runs(tmp_path, payload_cls, refused, wrap):
    marker = tmp_path / "marker"
    payload = payload_cls(marker)
    obj = {"bare": payload,
           "in_dict": {0: {"profile": payload}},
           "beside_matrix": [sp.coo_matrix(np.eye(2)), payload]}[wrap]
    path = _dump(tmp_path / "evil.pkl", obj)
    with pytest.raises(DataError) as err:
        safe_load(path)
    msg = str(err.value)
    assert str(path) in msg and refused in msg
    assert "\n" not in msg
    assert not marker.exists()


def test_refuses_other_classes(tmp_path):
    import collections

    path = _dump(tmp_path / "od.pkl", collections.OrderedDict(a=1))
    with pytest.raises(DataError, match=r"collections\.OrderedDict"):
        safe_load(path)


@pytest.mark.parametrize("module, name, ok", [
    ("numpy.core.multiarray", "_reconstruct", True),
    ("numpy._core.multiarray", "_reconstruct", True),
    ("numpy._core.numeric", "_frombuffer", True),
    ("numpy._core.multiarray", "scalar", True),
    ("numpy", "dtype", True),
    ("numpy", "ndarray", True),
    ("scipy.sparse._coo", "coo_matrix", True),
    ("scipy.sparse._csr", "csr_array", True),
    ("__builtin__", "object", True),
    ("copy_reg", "_reconstructor", True),
    ("scipy.sparse._coo", "csr_matrix", False),  # each module path admits only its format
    ("scipy.sparse._lil", "lil_matrix", False),
    ("numpy", "load", False),
    ("numpy.core.multiarray", "fromfile", False),
    ("numpy.core.multiarray.x", "_reconstruct", False),
    ("builtins", "eval", False),
    ("builtins", "getattr", False),
    ("builtins", "__import__", False),
    ("posix", "system", False),
    ("os", "system", False),
    ("subprocess", "Popen", False),
])
def test_allowed(module, name, ok):
    assert allowed(module, name) is ok


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        safe_load(tmp_path / "nope.pkl")
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(pickle.dumps(sp.coo_matrix(np.eye(3)))[:40])
    with pytest.raises(DataError, match=r"bad\.pkl: not a readable pickle"):
        safe_load(bad)
    text = tmp_path / "text.pkl"
    text.write_text("user,item\n1,2\n")
    with pytest.raises(DataError, match=r"text\.pkl"):
        safe_load(text)
