"""The house rules of the package layout, read from the source (no import needed):

- no import cycle between initjax's modules (imports inside functions count too);
- no module takes another module's private (underscore) names: a private helper *module* shared
  inside a package (``initjax/_io.py``) is fine, a private *name* of another module is not;
- no test takes a private name of initjax.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "initjax"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _absolute(importer: str, path: Path, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = importer.split(".")
    if path.name != "__init__.py":
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(name: str, path: Path):
    """(imported initjax module, private names taken from it) for every import in the file,
    and the private attributes read off imported initjax modules."""
    tree = ast.parse(path.read_text())
    aliases, edges, private = {}, set(), []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            source = _absolute(name, path, node)
            if not source.startswith("initjax"):
                continue
            for alias in node.names:
                full = f"{source}.{alias.name}"
                if full in MODULES:  # `from initjax import theory`: a module
                    edges.add(full)
                    aliases[alias.asname or alias.name] = full
                else:
                    edges.add(source)
                    if alias.name.startswith("_") and not alias.name.startswith("__"):
                        private.append(f"{name}:{node.lineno} takes {source}.{alias.name}")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("initjax"):
                    edges.add(alias.name)
                    if alias.asname:
                        aliases[alias.asname] = alias.name
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id in aliases and node.attr.startswith("_")
                and not node.attr.startswith("__") and aliases[node.value.id] != name):
            private.append(f"{name}:{node.lineno} reads {aliases[node.value.id]}.{node.attr}")
    return edges, private


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    found, state, stack = [], {}, []

    def visit(u):
        state[u] = "open"
        stack.append(u)
        for v in sorted(edges.get(u, ())):
            if v not in edges:
                continue
            if state.get(v) == "open":
                found.append(stack[stack.index(v):] + [v])
            elif v not in state:
                visit(v)
        stack.pop()
        state[u] = "done"

    for u in sorted(edges):
        if u not in state:
            visit(u)
    return found


def test_the_module_graph_has_no_cycle():
    graph = {name: {e for e in _imports(name, path)[0] if e in MODULES and e != name}
             for name, path in MODULES.items()}
    # a package's __init__ may import its own submodules; a submodule importing its package's
    # __init__ back is the cycle this test is for, so both directions stay in the graph
    assert _cycles(graph) == []


def test_the_checker_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize("where", ["initjax", "tests", "benchmarks", "experiments"])
def test_no_private_name_crosses_a_module_boundary(where):
    files = MODULES.items() if where == "initjax" else (
        (p.stem, p) for p in (ROOT / where).rglob("*.py"))
    private = [line for name, path in files for line in _imports(name, path)[1]]
    assert private == []


def test_the_checker_sees_a_private_name(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from initjax.engine.stats import _hidden\nimport initjax.theory as T\nT._x\n")
    assert len(_imports("bad", bad)[1]) == 2
