"""Restricted unpickling for data files (RLMRec's ``*_mat.pkl`` and ``*_prf.pkl``).

A pickle names the callables it wants called while loading, and a plain ``pickle.load`` imports
and calls whatever it names: a downloaded data file can run any code. :class:`SafeUnpickler`
resolves only the names a scipy.sparse matrix (COO/CSR/CSC), numpy arrays, dtypes and scalars,
and plain containers need; any other name stops the load with a :class:`DataError` before the
payload's callable is ever looked up, so nothing it names runs.

Example::

    >>> mat = safe_load("trn_mat.pkl")  # doctest: +SKIP
"""

from __future__ import annotations

import builtins
import importlib
import io
import os
import pickle
import warnings
from pathlib import Path
from typing import Any

from llmhni_local.core.errors import DataError

# Plain containers and scalars. ``object`` is how protocols 0/1 rebuild a class instance
# (``copyreg._reconstructor(cls, object, None)``); it is inert without another admitted class.
_BUILTINS = frozenset({
    "dict", "list", "tuple", "set", "frozenset", "str", "bytes", "bytearray", "int", "float",
    "complex", "bool", "object", "slice", "range",
})

# numpy's pickles name its core module, renamed ``numpy.core`` -> ``numpy._core`` in numpy 2:
# pickles from either side must load on either side.
_NUMPY_CORE = frozenset({
    ("multiarray", "_reconstruct"),  # ndarray, protocols 0-4
    ("multiarray", "scalar"),        # numpy scalars (np.int64(3), ...)
    ("numeric", "_frombuffer"),      # ndarray, protocol 5
})

# scipy.sparse classes by the module paths scipy has pickled them under (``scipy.sparse.coo``
# before scipy 1.8, ``scipy.sparse._coo`` since), each admitting only its own format.
_SPARSE_FORMATS = ("coo", "csr", "csc")
_SPARSE: dict[str, frozenset[str]] = {
    "scipy.sparse": frozenset(f"{f}_{kind}" for f in _SPARSE_FORMATS for kind in ("matrix", "array")),
}
for _fmt in _SPARSE_FORMATS:
    _names = frozenset({f"{_fmt}_matrix", f"{_fmt}_array"})
    _SPARSE[f"scipy.sparse._{_fmt}"] = _names
    _SPARSE[f"scipy.sparse.{_fmt}"] = _names

_OTHER = frozenset({
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("copyreg", "_reconstructor"),  # protocols 0/1 class instances
    ("_codecs", "encode"),          # how protocols 0-2 store bytes (str -> latin-1 bytes)
})

# Python 2 / protocol 0-2 module names, as pickle's own fix_imports maps them.
_RENAMED = {"__builtin__": "builtins", "copy_reg": "copyreg"}


def allowed(module: str, name: str) -> bool:
    """Whether ``module.name`` is one of the names a restricted load may resolve."""
    module = _RENAMED.get(module, module)
    if module == "builtins":
        return name in _BUILTINS
    if module.startswith(("numpy.core.", "numpy._core.")):
        return (module.rsplit(".", 1)[1], name) in _NUMPY_CORE and module.count(".") == 2
    if module in _SPARSE:
        return name in _SPARSE[module]
    return (module, name) in _OTHER


def _resolve(module: str, name: str) -> Any:
    module = _RENAMED.get(module, module)
    if module == "builtins":
        return getattr(builtins, name)
    if module.startswith(("numpy.core.", "numpy._core.")):
        sub = module.rsplit(".", 1)[1]
        for candidate in (f"numpy._core.{sub}", f"numpy.core.{sub}"):
            try:
                with warnings.catch_warnings():
                    # numpy 2 warns on any import of numpy.core.*; the name is admitted anyway
                    warnings.simplefilter("ignore", DeprecationWarning)
                    return getattr(importlib.import_module(candidate), name)
            except (ImportError, AttributeError):
                continue
        raise AttributeError(f"numpy has no {module}.{name}")
    if module in _SPARSE:
        import scipy.sparse

        return getattr(scipy.sparse, name)
    return getattr(importlib.import_module(module), name)


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the names :func:`allowed` admits.

    Args:
        file: binary file object to read from.
        source: the file's name, used in error messages. (default: ``"<pickle>"``)
    """

    def __init__(self, file: io.BufferedIOBase, *, source: str = "<pickle>") -> None:
        super().__init__(file)
        self.source = source

    def find_class(self, module: str, name: str) -> Any:  # noqa: D102 - see class docstring
        if not allowed(module, name):
            raise DataError(f"{self.source}: refused to unpickle {module}.{name} (only numpy "
                            "arrays, scipy.sparse COO/CSR/CSC matrices and plain containers "
                            "are allowed)")
        try:
            return _resolve(module, name)
        except (ImportError, AttributeError) as exc:
            raise DataError(f"{self.source}: cannot resolve {module}.{name} ({exc})") from None

    def persistent_load(self, pid: Any) -> Any:
        raise DataError(f"{self.source}: refused a persistent id in the pickle")


def safe_load(path: str | os.PathLike) -> Any:
    """Load one pickle file with :class:`SafeUnpickler`.

    Raises:
        DataError: the file is missing, is not a pickle, or names anything outside the
            allowed numpy / scipy.sparse / builtin names (the message names the file and the
            refused ``module.name``).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    with open(path, "rb") as f:
        try:
            return SafeUnpickler(f, source=str(path)).load()
        except DataError:
            raise
        except Exception as exc:  # a truncated or foreign file fails in many ways
            msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise DataError(f"{path}: not a readable pickle ({msg})") from None
