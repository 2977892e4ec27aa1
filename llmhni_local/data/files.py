"""Interaction logs a user brings, as CSV, TSV, JSON lines or Parquet files.

``path`` is either one interactions file or a folder holding ``interactions.<ext>`` and,
optionally, ``users.<ext>`` / ``items.<ext>`` profile files (``<ext>`` one of ``csv``, ``tsv``,
``jsonl``, ``parquet``). Files are read with Hugging Face ``datasets`` into a throw-away cache
folder, so the user's HF cache stays untouched and nothing is fetched.

Interactions: columns ``user`` and ``item`` (kept as strings), optional ``rating`` (a number)
and ``timestamp`` (a number or a date); other columns are ignored. Profiles: columns ``id`` and
``text``. Users and items are indexed in order of first appearance in the interactions file.

Protocol: each user's interactions are split 80/10/10 by time when a timestamp exists, else in
a seeded random order (:mod:`llmhni_local.data.splits`). With ratings, the natural-noise
protocol of docs/METHOD.md applies: training keeps every interaction and flags those rated <= 2 as
noisy; validation and test keep only ratings >= 4. Without ratings there are no noise flags and
every held-out interaction is kept. A repeated (user, item) pair keeps its first line only.
"""

from __future__ import annotations

import csv
import itertools
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from llmhni_local.core.errors import DataError
from llmhni_local.core.io import sha256_file
from llmhni_local.data.dataset import Interactions
from llmhni_local.data.splits import chronological_split, random_split

FORMATS = {".csv": "CSV", ".tsv": "TSV", ".jsonl": "JSON lines", ".parquet": "Parquet"}
NOISE_MAX_RATING = 2  # rated <= 2: ground-truth noisy training interaction (docs/METHOD.md)
CLEAN_MIN_RATING = 4  # validation and test keep ratings >= 4


@dataclass
class _Table:
    """One file read into a DataFrame, with a way to name the line of a row."""

    path: Path
    frame: Any  # pandas.DataFrame
    _starts: list[int] | None = None

    @property
    def kind(self) -> str:
        return self.path.suffix.lower()

    def where(self, row: int) -> str:
        """``line N`` (text formats, 1-based, header included) or ``row N`` (Parquet)."""
        if self.kind == ".parquet":
            return f"row {row + 1}"
        if self._starts is None:
            self._starts = _record_lines(self.path)
        if row < len(self._starts):
            return f"line {self._starts[row]}"
        return f"record {row + 1}"

    def at(self, row: int) -> str:
        return f"{self.path}: {self.where(row)}"


def _csv_records(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(first line number, fields) of each CSV/TSV record, skipping blank lines as pandas does."""
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
        while True:
            start = reader.line_num + 1
            try:
                record = next(reader)
            except StopIteration:
                return
            if not record or (len(record) == 1 and not record[0].strip()):
                continue
            yield start, record


def _record_lines(path: Path) -> list[int]:
    """First line number of every data record (header excluded); read only to word errors."""
    if path.suffix.lower() == ".jsonl":
        with open(path, encoding="utf-8") as f:
            return [n for n, line in enumerate(f, start=1) if line.strip()]
    return [start for start, _ in itertools.islice(_csv_records(path), 1, None)]


def _read(path: Path, required: tuple[str, ...]) -> _Table:
    """Read one file with ``datasets``; check it is not empty and has the required columns."""
    kind = path.suffix.lower()
    if kind not in FORMATS:
        raise DataError(f"{path}: unsupported file type (use {', '.join(FORMATS)})")
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty file")
    if kind != ".parquet" and path.stat().st_size <= 1 << 16 and not path.read_bytes().strip():
        raise DataError(f"{path}: empty file")

    if kind in (".csv", ".tsv"):
        try:
            first_two = list(itertools.islice(_csv_records(path), 2))
        except (UnicodeDecodeError, csv.Error) as exc:
            raise DataError(f"{path}: cannot be read as {FORMATS[kind]} ({exc})") from None
        if not first_two:
            raise DataError(f"{path}: empty file")
        header_line, header = first_two[0]
        if len(set(header)) != len(header):
            dup = next(c for c in header if header.count(c) > 1)
            raise DataError(f"{path}: line {header_line}: column {dup!r} appears twice")
        _check_columns(path, header, required)
        if len(first_two) < 2:
            raise DataError(f"{path}: empty file (a header and no rows)")
    elif kind == ".parquet":
        import pyarrow.parquet as pq

        try:
            meta = pq.ParquetFile(path).metadata
        except Exception as exc:
            raise DataError(f"{path}: cannot be read as Parquet ({_first_line(exc)})") from None
        _check_columns(path, list(meta.schema.names), required)
        if meta.num_rows == 0:
            raise DataError(f"{path}: empty file (no rows)")

    frame = _read_with_datasets(path, header if kind in (".csv", ".tsv") else None)
    if kind == ".jsonl":
        _check_columns(path, list(frame.columns), required)
    if len(frame) == 0:
        raise DataError(f"{path}: empty file (no rows)")
    return _Table(path, frame)


def _check_columns(path: Path, columns: list[str], required: tuple[str, ...]) -> None:
    for col in required:
        if col not in columns:
            raise DataError(f"{path}: missing column {col!r} (found: {', '.join(map(str, columns))})")


def _first_line(exc: BaseException) -> str:
    """First line of the innermost cause: ``datasets`` wraps the reader's own message."""
    seen = set()
    while (exc.__cause__ or exc.__context__) is not None and id(exc) not in seen:
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _bad_json_line(path: Path) -> str | None:
    """``line N: ...`` for the first line that is not a JSON object, if any."""
    with open(path, encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                return f"line {n}: not valid JSON ({exc.msg} at column {exc.colno})"
            if not isinstance(obj, dict):
                return f"line {n}: not a JSON object"
    return None


def _read_with_datasets(path: Path, header: list[str] | None):
    """The file as a pandas DataFrame, read by ``datasets`` into a temporary cache."""
    import datasets

    kind = path.suffix.lower()
    bars_were_off = datasets.are_progress_bars_disabled()
    verbosity = datasets.logging.get_verbosity()
    datasets.disable_progress_bars()
    # the readers log their failures; the DataError below says it once, in one line
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)
    try:
        with tempfile.TemporaryDirectory(prefix="llmhni-datasets-") as cache:
            common = {"cache_dir": cache, "keep_in_memory": True}
            if header is not None:
                # every column as text: ids keep leading zeros, and a bad number is reported
                # by line below instead of failing type inference inside the reader
                features = datasets.Features({c: datasets.Value("string") for c in header})
                ds = datasets.Dataset.from_csv(
                    str(path), features=features, delimiter="\t" if kind == ".tsv" else ",",
                    keep_default_na=False, na_values=[""], **common)
            elif kind == ".jsonl":
                ds = datasets.Dataset.from_json(str(path), **common)
            else:
                ds = datasets.Dataset.from_parquet(str(path), **common)
            return ds.to_pandas()
    except DataError:
        raise
    except Exception as exc:  # the readers raise many types; the first line says what broke
        where = _bad_json_line(path) if kind == ".jsonl" else None
        if where:
            raise DataError(f"{path}: {where}") from None
        raise DataError(f"{path}: cannot be read as {FORMATS[kind]} ({_first_line(exc)})") from None
    finally:
        datasets.logging.set_verbosity(verbosity)
        if not bars_were_off:
            datasets.enable_progress_bars()


# ---------------------------------------------------------------------------- columns
def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        import pandas as pd

        return bool(pd.isna(value))
    except (TypeError, ValueError):  # lists and dicts
        return False


def _ids(table: _Table, column: str) -> list[str]:
    """A column of ids as strings; integral numbers lose their ``.0``."""
    out: list[str] = []
    for row, value in enumerate(table.frame[column].tolist()):
        if _is_missing(value) or (isinstance(value, str) and not value.strip()):
            raise DataError(f"{table.at(row)}: empty {column}")
        if isinstance(value, str):
            out.append(value)
        elif isinstance(value, (bool, np.bool_)):
            raise DataError(f"{table.at(row)}: {column} {value!r} is not an id")
        elif isinstance(value, (int, np.integer)):
            out.append(str(int(value)))
        elif isinstance(value, (float, np.floating)):
            out.append(str(int(value)) if float(value).is_integer() else repr(float(value)))
        else:
            raise DataError(f"{table.at(row)}: {column} must be a string or a number, "
                            f"got {type(value).__name__}")
    return out


def _numbers(table: _Table, column: str) -> np.ndarray:
    """A column of finite numbers as float64; the first bad value is reported by line."""
    import pandas as pd

    series = table.frame[column]
    values = pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    bad = np.flatnonzero(~np.isfinite(values))
    if len(bad):
        row = int(bad[0])
        raw = series.iloc[row]
        if _is_missing(raw) or (isinstance(raw, str) and not raw.strip()):
            raise DataError(f"{table.at(row)}: empty {column}")
        raise DataError(f"{table.at(row)}: {column} {raw!r} is not a number")
    return values


def _times(table: _Table) -> np.ndarray:
    """Timestamps as float64: numbers as given, dates as seconds since 1970 (UTC)."""
    import pandas as pd

    series = table.frame["timestamp"]
    numeric = pd.to_numeric(series, errors="coerce")
    if numeric.notna().all():
        return _numbers(table, "timestamp")
    for row, raw in enumerate(series.tolist()):
        if _is_missing(raw) or (isinstance(raw, str) and not raw.strip()):
            raise DataError(f"{table.at(row)}: empty timestamp")
    text = series.astype(str)
    dates = pd.to_datetime(text, errors="coerce", utc=True, format="ISO8601")  # fast path
    if dates.isna().any():  # other layouts, parsed one by one
        dates = pd.to_datetime(text, errors="coerce", utc=True, format="mixed")
    bad = np.flatnonzero(dates.isna().to_numpy())
    if len(bad):
        row = int(bad[0])
        raise DataError(f"{table.at(row)}: timestamp {series.iloc[row]!r} is neither a number "
                        "nor a date")
    return (dates - pd.Timestamp(0, tz="UTC")).dt.total_seconds().to_numpy(np.float64)


def _index(ids: list[str]) -> tuple[np.ndarray, list[str]]:
    """Codes in order of first appearance, and the distinct ids in that order."""
    import pandas as pd

    codes, uniques = pd.factorize(pd.Series(ids, dtype=object), sort=False)
    return codes.astype(np.int64), [str(u) for u in uniques]


# ---------------------------------------------------------------------------- files
def _find(folder: Path, stem: str, required: bool) -> Path | None:
    found = [folder / f"{stem}{ext}" for ext in FORMATS if (folder / f"{stem}{ext}").is_file()]
    if len(found) > 1:
        raise DataError(f"{folder}: several {stem} files ({', '.join(p.name for p in found)}); "
                        "keep one")
    if not found:
        if required:
            raise DataError(f"{folder}: no {stem} file ({', '.join(stem + e for e in FORMATS)})")
        return None
    return found[0]


def _profiles(path: Path, kind: str, index: dict[str, int]) -> tuple[list[str], int]:
    """Profile texts per index from an ``id``/``text`` file; returns them and the count missing."""
    table = _read(path, ("id", "text"))
    ids = _ids(table, "id")
    texts: list[str | None] = [None] * len(index)
    first_row: dict[int, int] = {}
    for row, (pid, text) in enumerate(zip(ids, table.frame["text"].tolist())):
        if pid not in index:
            raise DataError(f"{table.at(row)}: {kind} id {pid!r} appears in no interaction")
        i = index[pid]
        if i in first_row:
            raise DataError(f"{table.at(row)}: {kind} id {pid!r} is listed twice (first at "
                            f"{table.where(first_row[i])})")
        first_row[i] = row
        texts[i] = "" if _is_missing(text) else str(text)
    missing = sum(t is None for t in texts)
    return [t if t is not None else "" for t in texts], missing


def _locate(path: Path) -> tuple[str, Path, Path, Path | None, Path | None]:
    """``(name, folder, interactions, users, items)`` of a file or folder argument."""
    if path.is_dir():
        inter_path = _find(path, "interactions", required=True)
        assert inter_path is not None
        return (path.resolve().name, path, inter_path, _find(path, "users", required=False),
                _find(path, "items", required=False))
    if path.exists():
        return path.stem, path.parent, path, None, None
    raise DataError(f"{path}: no such file or folder")


def _first_of_pairs(u: np.ndarray, it: np.ndarray, n_items: int) -> np.ndarray:
    """Row numbers to keep, in file order: a repeated (user, item) keeps its first line, so
    the graph has one edge per pair."""
    _, first = np.unique(u * n_items + it, return_index=True)
    return np.sort(first)


def _split(table: _Table, u: np.ndarray, times: np.ndarray | None, rows: np.ndarray,
           user_ids: list[str], seed: int, notes: list[str]) -> np.ndarray:
    """Per-user 80/10/10 part (0 train, 1 validation, 2 test) of each kept row; every user
    must keep a training interaction (``rows`` are the file rows, for the message)."""
    if times is not None:
        part = chronological_split(u, times)
        notes.append("split per user by time (80/10/10)")
    else:
        part = random_split(u, seed)
        notes.append(f"split per user at random, seed {seed} (80/10/10; no timestamp column)")
    has_train = np.zeros(len(user_ids), dtype=bool)
    has_train[u[part == 0]] = True
    if not has_train.all():
        user = int(np.flatnonzero(~has_train)[0])
        first_row = int(rows[np.flatnonzero(u == user)[0]])
        count = int((u == user).sum())
        raise DataError(f"{table.at(first_row)}: user {user_ids[user]!r} has {count} "
                        "interaction(s), and the per-user 80/10/10 split leaves it none for "
                        "training (every user needs at least 2)")
    return part


def _profile_texts(path: Path | None, kind: str, ids: list[str],
                   notes: list[str]) -> list[str] | None:
    """The ``users``/``items`` profile file's text per index, or None without the file."""
    if path is None:
        return None
    texts, n_missing = _profiles(path, kind, {x: i for i, x in enumerate(ids)})
    if n_missing:
        notes.append(f"{path.name}: {n_missing} {kind}s have no profile (empty text)")
    return texts


def load_files(path: str | os.PathLike, *, seed: int = 0) -> Interactions:
    """Load an interactions file, or a folder with interactions and profile files.

    Args:
        path: an ``interactions`` file (``.csv``, ``.tsv``, ``.jsonl`` or ``.parquet``), or a
            folder holding ``interactions.<ext>`` and optionally ``users.<ext>`` and
            ``items.<ext>``.
        seed: seed of the per-user random split, used only when there is no ``timestamp``
            column. (default: ``0``)

    Raises:
        DataError: a file is missing, empty, unreadable or lacks a column; a rating or
            timestamp is not a number (the message names the file and line); a profile names
            an id no interaction uses; or the split leaves a user without training data.
    """
    path = Path(path)
    name, folder, inter_path, users_path, items_path = _locate(path)
    table = _read(inter_path, ("user", "item"))
    users, items = _ids(table, "user"), _ids(table, "item")
    rating = _numbers(table, "rating") if "rating" in table.frame.columns else None
    times = _times(table) if "timestamp" in table.frame.columns else None
    u, user_ids = _index(users)
    it, item_ids = _index(items)

    notes: list[str] = []
    rows = _first_of_pairs(u, it, len(item_ids))  # row numbers in the file, for messages
    if len(u) > len(rows):
        notes.append(f"{inter_path.name}: dropped {len(u) - len(rows)} duplicate interactions")
    u, it = u[rows], it[rows]
    rating = rating[rows] if rating is not None else None
    times = times[rows] if times is not None else None
    part = _split(table, u, times, rows, user_ids, seed, notes)

    pairs = np.stack([u, it], axis=1).astype(np.int64)
    tr, va, te = part == 0, part == 1, part == 2
    train_rating = train_noise = None
    if rating is not None:
        va &= rating >= CLEAN_MIN_RATING
        te &= rating >= CLEAN_MIN_RATING
        train_rating = rating[tr].astype(np.float32)
        train_noise = rating[tr] <= NOISE_MAX_RATING
    user_text = _profile_texts(users_path, "user", user_ids, notes)
    item_text = _profile_texts(items_path, "item", item_ids, notes)

    prefix = f"{folder.name}/" if path.is_dir() else ""
    sources = {f"{prefix}{p.name}": sha256_file(p)
               for p in (inter_path, users_path, items_path) if p is not None}
    return Interactions(
        name=name, n_users=len(user_ids), n_items=len(item_ids),
        train=pairs[tr], val=pairs[va], test=pairs[te],
        train_rating=train_rating, train_noise=train_noise,
        user_ids=user_ids, item_ids=item_ids, user_text=user_text, item_text=item_text,
        sources=sources, notes=tuple(notes),
    )
