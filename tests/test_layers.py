"""The import graph of ``llmhni_local/`` runs one way (docs/DESIGN.md, "Rooms and arrows").

Every import counts, those inside functions too: a lazy import is still an arrow. The test
fails on a circle between modules, on an arrow from a room to a room above it, and on a
module that belongs to no room (a new top-level module must be given a place here and in the
docs).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "llmhni_local"

#: Rooms from the bottom up; a module may import its own room and the rooms below it.
ROOMS: tuple[tuple[str, ...], ...] = (
    ("core",),  # errors, io, progress, locks, manifest, settings parsing, device, offline switch
    ("data", "graph", "eval"),  # the data object, the adjacency, metrics and statistics
    ("models",),
    ("train",),
    ("llmhni", "baselines"),  # the method (candidates, alignment, negatives, G', its objective)
    # and the baselines set beside it (their objectives and samplers)
    ("engine",),  # what a model is asked and how it answers: the contract, chat, labels, prompts
    ("weights",),  # where model files come from: registry, install, LoRA merge, adapters, probes
    ("backends",),  # vLLM, transformers, OpenAI-compatible, sentence-transformers, probe, Ray
    ("text",),  # stages 1-2: profiles and their embeddings
    ("judgments",),  # the rating plan, the rating loop (in process, Ray), the judgment store
    ("verdicts",),  # from judgments (and audited labels, given as data) to hard / noisy
    ("audit",),  # records, export, import, agreement, simulated audits, the audit report
    ("tune",),  # LoRA fine-tuning and probe fitting, on audited labels
    ("report",),  # tables and plots of a finished run
    ("stages",),  # one module per stage, the plan, the keys, the run's settings
    ("assess",),  # a rater on users held out from every tuning set (rater assess)
    ("pipeline",),  # walks the plan, writes the manifest
    ("cli", "__init__", "__main__"),
)
RANK = {room: k for k, rooms in enumerate(ROOMS) for room in rooms}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The package modules ``path`` imports (a ``from x import y`` of a submodule counts as
    ``x.y``)."""
    name = module_name(path)
    pkg = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            targets = [mod] + [f"{mod}.{a.name}" for a in node.names]
        else:
            continue
        for t in targets:
            # the longest package module the target names
            while t and t not in modules:
                t = t.rpartition(".")[0]
            if t and t != name and t != "llmhni_local":
                out.add(t)
    return out


def import_graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(p) for p in paths}
    return {module_name(p): imports_of(p, modules) for p in paths}


def room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


GRAPH = import_graph()


def test_every_module_has_a_room():
    homeless = sorted({room(m) for m in GRAPH} - set(RANK))
    assert not homeless, f"give these a room in ROOMS and docs/DESIGN.md: {homeless}"


def test_no_circles():
    assert circles(GRAPH) == []


def test_no_arrow_runs_up():
    up = sorted(f"{a} -> {b}" for a, targets in GRAPH.items() for b in targets
                if room(a) in RANK and room(b) in RANK and RANK[room(b)] > RANK[room(a)])
    assert up == []


def test_no_sideways_arrow_between_rooms_of_one_rank():
    side = sorted(f"{a} -> {b}" for a, targets in GRAPH.items() for b in targets
                  if room(a) != room(b) and RANK.get(room(a)) == RANK.get(room(b)) != 0)
    assert side == []


@pytest.mark.parametrize("graph, expected", [
    ({"a": {"b"}, "b": {"a"}}, [["a", "b"]]),
    ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c"]]),
])
def test_circles_finds_what_it_should(graph, expected):
    assert circles(graph) == expected


def test_the_scan_sees_lazy_imports():
    # ray_job reads the rating plan only inside its functions
    assert "llmhni_local.judgments.plan" in GRAPH["llmhni_local.judgments.ray_job"]


#: Libraries a module may import inside a function (slow to import, or optional); everything
#: else is imported at the top of its module, where a reader sees it. ``cli/`` is exempt: its
#: commands import what they run, so ``--help`` stays instant.
HEAVY = frozenset({"torch", "vllm", "transformers", "peft", "ray", "sentence_transformers",
                   "matplotlib", "sklearn", "scipy", "pandas", "pyarrow", "torch_geometric",
                   "datasets", "gguf"})


def _type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def lazy_light_imports(path: Path) -> list[str]:
    """``line: import`` for each import inside a function of ``path`` that is not of a heavy
    library (``TYPE_CHECKING`` blocks excepted)."""
    found: list[str] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if _type_checking(child):
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)) and in_function:
                names = ([a.name for a in child.names] if isinstance(child, ast.Import)
                         else [child.module or "." * child.level])
                if any(n.split(".")[0] not in HEAVY for n in names):
                    found.append(f"{child.lineno}: {ast.unparse(child)}")
            visit(child, in_function or isinstance(child, (ast.FunctionDef,
                                                            ast.AsyncFunctionDef, ast.Lambda)))

    visit(ast.parse(path.read_text()), False)
    return found


def test_only_heavy_libraries_are_imported_inside_functions():
    lazy = {str(p.relative_to(PACKAGE)): found for p in sorted(PACKAGE.rglob("*.py"))
            if p.relative_to(PACKAGE).parts[0] != "cli" and (found := lazy_light_imports(p))}
    assert lazy == {}


def test_the_lazy_import_scan_sees_what_it_should(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("import json\nfrom typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                 "    import numpy\n\ndef f():\n    import torch\n    from llmhni_local.core "
                 "import io\n    if True:\n        import re\n")
    assert lazy_light_imports(f) == ["8: from llmhni_local.core import io", "10: import re"]


def test_rooms_files_and_functions_stay_readable():
    """No room over 2,500 lines, no file over 500, no function over 80."""
    rooms: dict[str, int] = {}
    big_files, long_functions = [], []
    for p in sorted(PACKAGE.rglob("*.py")):
        text = p.read_text()
        n = len(text.splitlines())
        rel = p.relative_to(PACKAGE)
        rooms[rel.parts[0] if len(rel.parts) > 1 else rel.stem] = (
            rooms.get(rel.parts[0] if len(rel.parts) > 1 else rel.stem, 0) + n)
        if n > 500:
            big_files.append(f"{rel}: {n}")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) \
                    and node.end_lineno - node.lineno + 1 > 80:
                long_functions.append(f"{rel}:{node.name}: {node.end_lineno - node.lineno + 1}")
    assert {r: n for r, n in rooms.items() if n > 2500} == {}
    assert big_files == [] and long_functions == []
