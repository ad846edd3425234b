"""The package's architecture, read from the source with ``ast``: layers import only downwards, modules form
no import cycles, no module imports another's private names, and modules and functions stay small.

Layers, bottom to top: core < io < batch < scenarios < measures < apps < bench < cli. A module may import
from its own layer or lower ones, in-function imports included. ``pmjax/__init__.py`` (the public facade)
and ``pmjax/__main__.py`` are exempt as importers; a layered module importing the facade is an upward import.
"""

from __future__ import annotations

import ast
import pathlib

PKG = pathlib.Path(__file__).resolve().parents[1] / "pmjax"
LAYERS = ("core", "io", "batch", "scenarios", "measures", "apps", "bench", "cli")
FACADE = {"pmjax", "pmjax.__main__"}
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 80


def module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, pathlib.Path]:
    """Every module of pmjax: dotted name -> file."""
    return {module_name(p): p for p in sorted(PKG.rglob("*.py"))}


MODULES = modules()
TREES = {name: ast.parse(path.read_text(), str(path)) for name, path in MODULES.items()}


def layer(name: str) -> int:
    """Layer index of a module; the facade is above every layer."""
    parts = name.split(".")
    if name in FACADE or len(parts) < 2:
        return len(LAYERS)
    return LAYERS.index(parts[1]) if parts[1] in LAYERS else len(LAYERS)


def _base(name: str, node: ast.ImportFrom) -> str | None:
    """The absolute module of a ``from ... import`` (relative ones resolved against ``name``'s package)."""
    if not node.level:
        return node.module
    is_pkg = MODULES[name].name == "__init__.py"
    package = name.split(".")[: len(name.split(".")) - (0 if is_pkg else 1)]
    package = package[: len(package) - (node.level - 1)]
    return ".".join(package + ([node.module] if node.module else []))


def imports(name: str):
    """(line, target module, imported names) of every import of a pmjax module by ``name``, at any depth.
    ``from pmjax.x import y`` targets ``pmjax.x.y`` when that is a module, else ``pmjax.x``."""
    for node in ast.walk(TREES[name]):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "pmjax" or alias.name.startswith("pmjax."):
                    yield node.lineno, alias.name, ()
        elif isinstance(node, ast.ImportFrom):
            base = _base(name, node)
            if not base or not (base == "pmjax" or base.startswith("pmjax.")):
                continue
            plain = [a.name for a in node.names if f"{base}.{a.name}" not in MODULES]
            for alias in node.names:
                if f"{base}.{alias.name}" in MODULES:
                    yield node.lineno, f"{base}.{alias.name}", ()
            if plain:
                yield node.lineno, base, tuple(plain)


def graph() -> dict[str, set[str]]:
    """Module -> the pmjax modules it imports (facade excluded on both sides)."""
    return {name: {t for _, t, _ in imports(name) if t in MODULES and t not in FACADE and t != name}
            for name in MODULES if name not in FACADE}


def strongly_connected(g: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components of ``g`` (iterative)."""
    index, low, on_stack, stack, out = {}, {}, set(), [], []
    counter = 0
    for root in sorted(g):
        if root in index:
            continue
        work = [(root, iter(sorted(g[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            w = next(children, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(g.get(w, ())))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                out.append(sorted(comp))
    return out


def _rel(name: str) -> str:
    return str(MODULES[name].relative_to(PKG.parent))


# ---------------------------------------------------------------- the checker itself


def test_the_scan_sees_every_kind_of_import():
    assert {"pmjax.core.book", "pmjax.cli.app", "pmjax.bench.harness"} <= set(MODULES)
    assert layer("pmjax.core.kernel") == 0 and layer("pmjax.cli.commands.bench") == 7 and layer("pmjax") == 8
    # in-function imports and ``from pmjax.x import module`` are seen
    targets = {t for _, t, _ in imports("pmjax.cli.commands.bench")}
    assert "pmjax.bench.harness" in targets and "pmjax.core.errors" in targets
    assert strongly_connected({"a": {"b"}, "b": {"a", "c"}, "c": set()}) == [["c"], ["a", "b"]]


# ---------------------------------------------------------------- the rules


def test_no_module_imports_from_a_higher_layer():
    bad = []
    for name in MODULES:
        if name in FACADE:
            continue
        for line, target, _ in imports(name):
            if layer(target) > layer(name):
                what = "the facade" if target in FACADE else LAYERS[layer(target)]
                bad.append(f"{_rel(name)}:{line}: {LAYERS[layer(name)]} imports {target} ({what})")
    assert not bad, "upward imports:\n" + "\n".join(sorted(bad))


def test_no_import_cycles_between_modules():
    cycles = [c for c in strongly_connected(graph()) if len(c) > 1]
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_no_module_imports_a_private_name_of_another():
    bad = []
    for name, tree in TREES.items():
        module_aliases = set()
        for line, target, names in imports(name):
            for n in names:
                if n.startswith("_") and not n.startswith("__"):
                    bad.append(f"{_rel(name)}:{line}: imports {n} from {target}")
        for node in ast.walk(tree):  # ``import pmjax.x as m`` / ``from pmjax import x`` then ``m._private``
            if isinstance(node, ast.Import):
                module_aliases |= {a.asname or a.name for a in node.names if a.name.startswith("pmjax")}
            elif isinstance(node, ast.ImportFrom):
                base = _base(name, node)
                module_aliases |= {a.asname or a.name for a in node.names if f"{base}.{a.name}" in MODULES}
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                    and isinstance(node.value, ast.Name) and node.value.id in module_aliases):
                bad.append(f"{_rel(name)}:{node.lineno}: uses {node.value.id}.{node.attr}")
    assert not bad, "private names used across modules:\n" + "\n".join(sorted(bad))


def test_modules_and_functions_are_small():
    bad = []
    for name, path in MODULES.items():
        n = len(path.read_text().splitlines())
        if n > MAX_MODULE_LINES:
            bad.append(f"{_rel(name)}: {n} lines (module > {MAX_MODULE_LINES})")
        for node in ast.walk(TREES[name]):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    bad.append(f"{_rel(name)}:{node.lineno}: {node.name} {n} lines (function > "
                               f"{MAX_FUNCTION_LINES})")
    assert not bad, "too long:\n" + "\n".join(sorted(bad))
