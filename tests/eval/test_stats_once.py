"""AUC, kappa, folds, cross-validation and the bootstrap are defined once, in
``llmhni_local/eval/stats.py``: no other module of the package defines a function named like
one of them (nested functions and methods included)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "llmhni_local"
HOME = PACKAGE / "eval" / "stats.py"

#: Names that say "I compute one of the statistics": an AUC, a kappa, folds, cross-validation,
#: cross-fitting, a bootstrap.
STAT_NAME = re.compile(r"^_?aucs?$|^_?auc_|_aucs?$|kappa|folds|^_?cross_validate$|^_?cross_fit$"
                       r"|bootstrap")

#: (module path under llmhni_local/, function name) of the few functions whose name matches but
#: that are something else; each says why.
ALLOWED = {
    # a search over pairs of thresholds for the best verdict kappa; the kappa it maximises is
    # stats.cohen_kappa of a stack of 2x2 matrices
    ("verdicts/rules.py", "taus_by_kappa"),
    # the paired difference of two methods' per-user metrics (a gain); its resampling and
    # interval are stats.bootstrap_indices and stats.percentile_interval
    ("eval/gains.py", "paired_bootstrap"),
}


def stat_functions() -> list[tuple[str, str, int]]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and \
                    STAT_NAME.search(node.name):
                out.append((path.relative_to(PACKAGE).as_posix(), node.name, node.lineno))
    return out


def test_the_pattern_names_what_it_should():
    hits = [n for n in ("auc", "cross_fitted_aucs", "binary_kappa", "cohen_kappa",
                        "group_folds", "stratified_folds", "cross_validate", "cross_fit",
                        "paired_bootstrap", "bootstrap_indices", "_auc") if STAT_NAME.search(n)]
    assert len(hits) == 11
    misses = [n for n in ("simulate_auc_verdicts", "binormal_separation", "save_embeddings",
                          "publish_folder", "fold_system", "check_labels", "logistic_cv")
              if STAT_NAME.search(n)]
    assert misses == []


def test_statistics_are_defined_only_in_eval_stats():
    found = stat_functions()
    home = [name for where, name, _ in found if where == "eval/stats.py"]
    assert {"auc", "cohen_kappa", "binary_kappa", "group_folds", "cross_fit",
            "bootstrap_indices"} <= set(home)
    elsewhere = [f"llmhni_local/{where}:{line} {name}" for where, name, line in found
                 if where != "eval/stats.py" and (where, name) not in ALLOWED]
    assert elsewhere == [], ("define these statistics once, in llmhni_local/eval/stats.py "
                             "(or allow a function that is something else, saying why): "
                             + ", ".join(elsewhere))
    stale = ALLOWED - {(where, name) for where, name, _ in found}
    assert stale == set(), f"allowed functions that no longer exist: {sorted(stale)}"


def test_eval_stats_imports_numpy_and_scipy_only():
    tree = ast.parse(HOME.read_text())
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            roots.add(node.module.split(".")[0])
    assert roots <= {"__future__", "collections", "math", "typing", "numpy", "scipy"}, roots
