"""What a long bench has already measured, kept in the repository so that it adds up across
machines: a run folder under ``runs/`` is lost with the machine it was on, a committed records
file is not.

A records file is JSON Lines, one finished training per line: its key (a hash of every
setting the training read, the method and the seed), the git commit it ran at, its clean-test
and validation metrics, its cost, and Recall@20 per test user (rounded to 6 decimals, enough
for the paired intervals' 4). A bench asks :meth:`Records.get` before it trains and
:meth:`Records.add` after; a line is appended and flushed at once, so a killed bench loses at
most the trainings in flight. Records whose key no setting produces any more are never read:
change a setting and those trainings run again.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from _common import REPO_ROOT

from llmhni_local.core.errors import UserError
from llmhni_local.core.io import sha256_text

#: Settings that say where or how fast a training runs, not what it computes.
NOT_KEYED = ("pipeline.out", "pipeline.jobs", "pipeline.seeds", "pipeline.methods")


def record_key(settings: dict[str, Any], method: str, seed: int) -> str:
    """What one training depends on, as far as the bench's settings say."""
    kept = {k: v for k, v in settings.items() if k not in NOT_KEYED}
    return sha256_text(json.dumps({"settings": kept, "method": method, "seed": seed},
                                  sort_keys=True, default=str))


def pin_rater_dtype(settings: dict[str, Any]) -> dict[str, Any]:
    """``settings`` with ``rater.dtype = "auto"`` replaced by what it resolves to here, so the
    key tells a bfloat16 reading (a CPU with AVX-512 BF16) from a float32 one (AVX2 only): the
    two give different verdicts, and a record made on one machine must not stand in for the
    other's."""
    from llmhni_local.core.precision import resolve_dtype

    requested = settings.get("rater.dtype", "auto")
    if requested != "auto":
        return settings
    return {**settings, "rater.dtype": resolve_dtype("auto")[0]}


def machine() -> dict[str, Any]:
    """The CPU a record was made on (timings compare only within one)."""
    from llmhni_local.core.precision import _cpu_capability, cpu_flags

    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": model, "capability": _cpu_capability(),
            "avx512_bf16": "avx512_bf16" in cpu_flags(), "cores": os.cpu_count()}


def add_records_arg(parser, default: Path) -> None:
    """``--records PATH``; :func:`records_path` fills in its default after parsing."""
    parser.add_argument("--records", default=None,
                        help="finished trainings, one JSON line each (default: the "
                             f"repository's {default.relative_to(REPO_ROOT)}, so a stopped bench "
                             "resumes on any machine; OUT/records.jsonl for --quick and "
                             "--max-users runs, which never write the repository's file)")


def records_path(args, default: Path) -> Path:
    """``--records``, or its default: ``default`` for a full run, ``OUT/records.jsonl`` for a
    smoke run (``--quick`` or ``--max-users``)."""
    if args.records is not None:
        return Path(args.records)
    smoke = getattr(args, "quick", False) or getattr(args, "max_users", 0)
    return Path(args.out) / "records.jsonl" if smoke else default


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT,
                             capture_output=True, text=True, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


class Records:
    """The records file at ``path`` (created on the first :meth:`add`)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._by_key: dict[str, dict] = {}
        if self.path.is_file():
            for n, line in enumerate(self.path.read_text().splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                    self._by_key[rec["key"]] = rec
                except (json.JSONDecodeError, KeyError, TypeError) as exc:
                    raise UserError(f"{self.path}: line {n} is not a record ({exc})") from exc
        self.commit = git_commit()
        self.machine = machine()
        self.read: set[str] = set()    # keys this process took from the file
        self.added: set[str] = set()   # keys this process trained and appended

    def __len__(self) -> int:
        return len(self._by_key)

    def get(self, key: str) -> dict | None:
        """A finished training's result (``per_user`` as ``(users, values)`` arrays)."""
        import numpy as np

        rec = self._by_key.get(key)
        if rec is None:
            return None
        if key not in self.added:
            self.read.add(key)
        res = dict(rec["result"])
        res["per_user"] = (np.asarray(rec["users"]), np.asarray(rec["recall@20"]))
        return res

    def add(self, key: str, what: dict[str, Any], result: dict[str, Any]) -> None:
        """Append one finished training; ``what`` names it for a reader of the file."""
        users, values = result["per_user"]
        rec = {"key": key, **what, "commit": self.commit, "machine": self.machine,
               "result": {k: v for k, v in result.items() if k != "per_user"},
               "users": [int(u) for u in users],
               "recall@20": [round(float(v), 6) for v in values]}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.write(json.dumps(rec, sort_keys=True) + "\n")
            f.flush()
        self._by_key[key] = rec
        self.added.add(key)

    def provenance(self) -> str:
        """One sentence for a docs table built from this process's trainings: how many were
        read from the file and how many computed, on which CPUs and at which commits."""
        used = [self._by_key[k] for k in sorted(self.read | self.added)]
        cpus = sorted({cpu_name(r.get("machine")) for r in used})
        commits = sorted({r.get("commit", "unknown") for r in used})
        return (f"{len(used)} trainings, {len(self.read)} read from `{self.path.name}` and "
                f"{len(self.added)} computed now; made on {', '.join(cpus) or 'no machine'} at "
                f"commit(s) {', '.join(commits) or 'none'}")


def cpu_name(m: dict | None) -> str:
    """A record's machine in words: the CPU and whether it reads in bfloat16."""
    if not m:
        return "an unrecorded CPU"
    bf16 = "AVX-512 BF16" if m.get("avx512_bf16") else "no AVX-512 BF16"
    return f"{m.get('cpu', 'unknown CPU')} ({bf16}, {m.get('cores', '?')} cores)"
