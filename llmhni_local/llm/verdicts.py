"""Hard or noisy: the verdict on each candidate pair (METHOD.md stage 6).

A pair is **hard** when both views' labels are High, and **noisy** for any other pair of
labels (the paper's words). A pair one of whose views is a failure (an answer that was not a
label) gets **no verdict**: its verdict is ``failed``, it is counted, and it is never labelled
hard or noisy; the graph stage leaves such a pair as it is. A pair with a view not rated yet is
``unrated`` (also no verdict).

What the verdict means depends on the candidate kind:

========== ================================ ==================================
kind        hard                             noisy
========== ================================ ==================================
observed    hard positive: **keep**          false positive: **remove**
unobserved  missing positive: **add**        nothing (stays unobserved)
========== ================================ ==================================

The label probabilities are kept: ``p_hard = P_user(High) * P_item(High)`` (NaN where a view
has no probabilities), a soft score of the same rule.

Writes ``RUN/verdicts.parquet`` (one row per candidate) and ``RUN/verdicts.json`` (counts).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from llmhni_local.llm.store import VIEWS, Key

VERDICTS_FILE = "verdicts.parquet"
COUNTS_FILE = "verdicts.json"
VERDICTS: tuple[str, ...] = ("hard", "noisy", "failed", "unrated")
ACTIONS = {("observed", "hard"): "keep", ("observed", "noisy"): "remove",
           ("unobserved", "hard"): "add", ("unobserved", "noisy"): "nothing"}


def compute_verdicts(candidates: np.ndarray, judgments) -> "Any":
    """One row per candidate with both views' labels and probabilities, verdict and action.

    Args:
        candidates: a candidate array (``method.candidates.CANDIDATE_DTYPE``).
        judgments: DataFrame of store rows with columns user, item, view, label, ok, p_high,
            p_medium, p_low, label_mass (one model and prompt per view).
    """
    import pandas as pd

    out = pd.DataFrame({"user": candidates["user"].astype(np.int64),
                        "item": candidates["item"].astype(np.int64),
                        "kind": candidates["kind"].astype(str)})
    cols = ["label", "ok", "p_high", "p_medium", "p_low", "label_mass"]
    for view in VIEWS:
        part = judgments[judgments["view"] == view][["user", "item", *cols]]
        if part.duplicated(["user", "item"]).any():
            raise ValueError(f"several stored judgments per pair in view {view!r}")
        part = part.rename(columns={c: f"{c}_{view}" for c in cols})
        out = out.merge(part, on=["user", "item"], how="left")
    rated = out["ok_user"].notna() & out["ok_item"].notna()
    ok = rated & (out["ok_user"] == 1) & (out["ok_item"] == 1)
    both_high = ok & (out["label_user"] == "High") & (out["label_item"] == "High")
    verdict = np.where(~rated, "unrated", np.where(~ok, "failed",
                                                   np.where(both_high, "hard", "noisy")))
    out["verdict"] = verdict
    out["action"] = [ACTIONS.get((k, v), "none") for k, v in zip(out["kind"], verdict)]
    out["p_hard"] = out["p_high_user"].astype(float) * out["p_high_item"].astype(float)
    for c in ("ok_user", "ok_item"):
        out[c] = out[c].fillna(0).astype(bool)
    return out


def verdict_counts(verdicts) -> dict[str, Any]:
    """Counts per candidate kind and verdict, and of each graph action."""
    counts: dict[str, Any] = {}
    for kind in ("observed", "unobserved"):
        sub = verdicts[verdicts["kind"] == kind]
        counts[kind] = {v: int((sub["verdict"] == v).sum()) for v in VERDICTS}
        counts[kind]["total"] = int(len(sub))
    counts["actions"] = {a: int((verdicts["action"] == a).sum())
                         for a in ("keep", "remove", "add", "nothing")}
    counts["no_verdict"] = int(verdicts["verdict"].isin(["failed", "unrated"]).sum())
    return counts


def write_verdicts(run_dir: str | Path) -> dict[str, Any]:
    """Compute the verdicts of ``RUN``'s last rating run and write them; returns the counts."""
    from llmhni_local.io import atomic_path, write_json
    from llmhni_local.llm.rate import CANDIDATES_FILE, read_rating_manifest
    from llmhni_local.llm.store import JudgmentStore
    from llmhni_local.method.candidates import load_candidates

    run_dir = Path(run_dir)
    manifest = read_rating_manifest(run_dir)
    candidates = load_candidates(run_dir / CANDIDATES_FILE)
    keys = {v: Key(manifest["model_id"], manifest["adapter"], manifest["views"][v]["prompt_hash"])
            for v in VIEWS}
    with JudgmentStore(run_dir, create=False) as store:
        judgments = store.frame(views=keys)
    verdicts = compute_verdicts(candidates, judgments)
    counts = verdict_counts(verdicts)
    counts.update(model_id=manifest["model_id"], adapter=manifest["adapter"],
                  prompt_hashes={v: k.prompt_hash for v, k in keys.items()},
                  rule="hard iff both views say High; a failed view gives no verdict")
    with atomic_path(run_dir / VERDICTS_FILE) as tmp:
        verdicts.to_parquet(tmp, index=False, engine="pyarrow")
    write_json(run_dir / COUNTS_FILE, counts)
    return counts


def load_verdicts(run_dir: str | Path):
    """The verdicts table of ``RUN`` (for the graph stage)."""
    import pandas as pd

    from llmhni_local.errors import UserError

    path = Path(run_dir) / VERDICTS_FILE
    if not path.is_file():
        raise UserError(f"{path}: no verdicts here; run the `verdicts` stage first")
    return pd.read_parquet(path)
