"""Redraw the value-of-rater plot from ``bench/denoise.py``'s JSON line, without training.

A run's figures outlive its run folders (a changed setting re-keys every LLMHNI run): this
reads the ``CELL/value_of_rater/...`` figures of the last JSON line of a saved log and draws,
per cell and coverage, LLMHNI's clean-test Recall@20 against the simulated rater's AUC, with
no denoising, BPR and the oracle as lines, and each ``--assess`` rater's measured AUC (both
views, natural noise, cross-fitted) marked on the axis.

    python bench/denoise.py ... > log.txt
    python bench/plot_value_of_rater.py log.txt docs/value_of_rater.png --assess RUN/assess/assess.json

Prints a table of the points drawn and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from _common import emit_json, print_table


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("log", help="a file whose last line starting with '{' is denoise.py's JSON")
    p.add_argument("out", help="PNG to write")
    p.add_argument("--assess", nargs="*", default=[], help="assess.json files to mark")
    return p.parse_args(argv)


def last_json(path: Path) -> dict:
    lines = [ln for ln in path.read_text().splitlines() if ln.startswith("{")]
    if not lines:
        raise SystemExit(f"{path}: no JSON line (is it a bench/denoise.py log?)")
    return json.loads(lines[-1])


def curves(fig: dict) -> dict[tuple[str, str], dict]:
    """``(cell, coverage) -> {"auc": [...], "recall": [...], refs}`` from the JSON figures."""
    pat = re.compile(r"^(.+)/value_of_rater/(\w+)/auc([0-9.]+)/recall@20_mean$")
    out: dict[tuple[str, str], dict] = {}
    for key, value in fig.items():
        m = pat.match(key)
        if m:
            cell, cov, auc = m.group(1), m.group(2), float(m.group(3))
            out.setdefault((cell, cov), {"points": []})["points"].append((auc, value))
    for (cell, _), c in out.items():
        c["points"].sort()
        for ref in ("llmhni-no-denoise", "bpr", "oracle"):
            c[ref] = fig.get(f"{cell}/value_of_rater/{ref}/recall@20_mean")
    return out


def measured(paths: list[str]) -> list[tuple[str, float]]:
    marks = []
    for path in paths:
        doc = json.loads(Path(path).read_text())
        nat = (doc.get("both_views") or {}).get("natural", {})
        # both views' score, cross-fitted on folds grouped by user (assess's "LLM alone")
        auc = nat.get("auc", (nat.get("cross_fitted") or {}).get("llm"))
        if auc is not None:
            rater = doc.get("rater", {})
            name = str(rater.get("model_id", Path(path).stem)).split("@")[0]
            name += f" {rater['adapter']}" if rater.get("adapter") else ""
            mode = (doc.get("settings", {}).get("rate") or {}).get("mode", "")
            marks.append((f"{name} {mode}".strip(), float(auc)))
    return marks


def main(args: argparse.Namespace) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cs = curves(last_json(Path(args.log)))
    if not cs:
        raise SystemExit(f"{args.log}: no value_of_rater figures in its JSON line")
    marks = measured(args.assess)
    fig, axes = plt.subplots(1, len(cs), figsize=(4.2 * len(cs), 3.6), squeeze=False)
    rows = []
    for ax, ((cell, cov), c) in zip(axes[0], sorted(cs.items())):
        xs, ys = zip(*c["points"])
        ax.plot(xs, ys, "o-", label="LLMHNI, simulated rater")
        for ref, style in (("llmhni-no-denoise", "--"), ("bpr", ":"), ("oracle", "-.")):
            if c[ref] is not None:
                ax.axhline(c[ref], linestyle=style, color="grey", label=ref)
        for name, auc in marks:
            ax.axvline(auc, color="tab:red", alpha=0.4)
            ax.text(auc, ax.get_ylim()[0], name, rotation=90, fontsize=6, va="bottom")
        ax.set_title(f"{cell.split('/')[0]}, {cov}", fontsize=9)
        ax.set_xlabel("rater AUC (noisy vs clean)")
        ax.set_ylabel("clean-test Recall@20")
        rows += [[cell, cov, x, y] for x, y in c["points"]]
    axes[0][0].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print_table(["cell", "coverage", "AUC", "Recall@20"], rows, title="Points drawn")
    result = {"bench": "plot_value_of_rater", "out": args.out, "points": len(rows),
              "marked": dict(marks)}
    emit_json(result)
    return result


if __name__ == "__main__":
    main(parse_args())
