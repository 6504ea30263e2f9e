"""The package's shape stays as designed: no import cycles, imports only go down the layers, small modules.

Layers, bottom to top (DESIGN.md): base helpers -> store / encoders / models -> train / codes / evaluate
/ datasets -> run -> interpret -> search / audit -> views -> ui (widgets, figures) / cli. An import
from a lower layer to a higher one is allowed only when it is listed in ``UPWARD`` with its reason.
Imports under ``if TYPE_CHECKING:`` are type hints, not dependencies, and are not counted.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "sae"
MAX_LINES = 400

LAYERS: dict[str, int] = {
    "sae": 7, "sae.errors": 0, "sae._io": 0, "sae._progress": 0, "sae._lock": 0, "sae._zarr": 0, "sae.compute": 0, "sae.display": 0,
    "sae.llm": 0, "sae.llm_safety": 0, "sae.llm_local": 0,
    "sae.store": 1, "sae.encoders": 1, "sae.models": 1,
    "sae.train": 2, "sae.codes": 2, "sae.evaluate": 2, "sae.datasets": 2, "sae.estimator": 2, "sae.truth": 2,
    "sae.run": 3, "sae.assess": 3, "sae.pipeline": 3, "sae.sweep": 3,
    "sae.interpret": 4,
    "sae.search": 5, "sae.audit": 5,
    "sae.views": 6,
    "sae.widgets": 7, "sae.viz": 7, "sae.viz_explain": 7, "sae.figures": 7, "sae.cli": 7,
}
"""Layer of each top-level module or package (the longest matching prefix decides); ``sae`` itself only
re-exports, so it sits on top."""

UPWARD = {
    ("sae.run", "sae.interpret.labels"): "Run.labels() loads a run's labels (made by interpret) lazily, once per labeler",
    ("sae.sweep", "sae.viz"): "sweep() writes its Pareto figure beside sweep.csv (lazily, only with figure=True)",
}
"""The allowed imports from a lower layer to a higher one, each with its reason."""


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in ROOT.rglob("*.py")}


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    """ids of the import nodes inside ``if TYPE_CHECKING:`` blocks."""
    out: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            out |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return out


def _targets(node: ast.AST, package: str, known: dict[str, Path]) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    base = node.module or ""
    if node.level:
        pkg = package.split(".")[: len(package.split(".")) - node.level + 1]
        base = ".".join(pkg + ([node.module] if node.module else []))
    subs = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in known]
    return subs if len(subs) == len(node.names) else [base, *subs]


def import_graph() -> dict[str, set[str]]:
    """module -> the package modules it imports (at any depth of its code, type hints excluded).

    Edges to a module's own ancestor packages are left out: Python imports them for any submodule."""
    known = modules()
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in known.items():
        tree = ast.parse(path.read_text())
        hints = _type_checking_nodes(tree)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(tree):
            if id(node) in hints:
                continue
            for target in _targets(node, package, known):
                if target in known and target != name and not name.startswith(target + "."):
                    graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

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
                out.append(sorted(comp))

    for v in sorted(set(graph) | {w for ws in graph.values() for w in ws}):
        if v not in index:
            visit(v)
    return out


def layer(module: str) -> int:
    best = max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len)
    return LAYERS[best]


def upward_imports(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    return sorted((a, b) for a, bs in graph.items() for b in bs if layer(b) > layer(a))


def test_every_module_has_a_layer():
    missing = [m for m in modules() if m != "sae" and not any(m == p or m.startswith(p + ".") for p in LAYERS if p != "sae")]
    assert not missing, f"give these modules a layer in LAYERS: {missing}"


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_imports_only_go_down_the_layers():
    upward = upward_imports(import_graph())
    unexplained = [edge for edge in upward if edge not in UPWARD]
    assert not unexplained, f"imports from a lower layer to a higher one: {unexplained}"
    assert len(upward) <= 3


def test_modules_are_small():
    big = {m: n for m, p in modules().items() if (n := len(p.read_text().splitlines())) >= MAX_LINES}
    assert not big, f"modules of {MAX_LINES}+ lines (split them): {big}"


def test_the_checks_can_fail(tmp_path):
    """The cycle and layer checks see what they are meant to see (on a graph with both defects)."""
    graph = {"sae.store.a": {"sae.search.b"}, "sae.search.b": {"sae.store.a"}}
    assert cycles(graph) == [["sae.search.b", "sae.store.a"]]
    assert upward_imports(graph) == [("sae.store.a", "sae.search.b")]


OPTIONAL = {"faiss": "faiss-cpu (the [faiss] extra; NumPy is used without it)", "IPython": "only inside a kernel"}
"""Third-party imports that need not be declared as dependencies, with why."""


def _third_party_imports() -> set[str]:
    import sys

    names: set[str] = set()
    for path in modules().values():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n not in ("sae", "__future__")}


def test_every_imported_package_is_declared():
    import re
    import tomllib
    from importlib.metadata import packages_distributions

    project = tomllib.loads((ROOT.parent / "pyproject.toml").read_text())["project"]
    declared = {re.split(r"[\[<>=!~; ]", d)[0].lower().replace("_", "-") for d in project["dependencies"]}
    dists = packages_distributions()
    missing = {}
    for name in sorted(_third_party_imports() - set(OPTIONAL)):
        owners = {d.lower().replace("_", "-") for d in dists.get(name, [name])}
        if not owners & declared:
            missing[name] = sorted(owners)
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"
