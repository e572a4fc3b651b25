"""The package's shape: data flows one way, so no module imports (even lazily, inside a function) a module that
imports it back."""
import ast
from pathlib import Path

import cnncodes

PACKAGE = Path(cnncodes.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, modules: set[str]) -> set[str]:
    """Every cnncodes module this file imports, at the top or inside functions."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("cnncodes")}
        elif isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            target = (f"{base}.{node.module}" if node.module else base) if node.level else (node.module or "")
            if not target.startswith("cnncodes"):
                continue
            for alias in node.names:  # `from . import cifar10` names a module, `from .codes import Codes` does not
                found.add(f"{target}.{alias.name}" if f"{target}.{alias.name}" in modules else target)
    return {m for m in found if m in modules and m != name}


def import_graph() -> dict[str, set[str]]:
    files = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(f) for f in files}
    graph = {}
    for f in files:
        name = module_name(f)
        edges = imports(f, modules)
        if f.name == "__init__.py":  # a package importing its own submodules is how packages work
            edges = {m for m in edges if not m.startswith(name + ".")}
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]):
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_package_has_no_import_cycles():
    graph = import_graph()
    assert graph["cnncodes.data.datasets"] >= {"cnncodes.data.cifar10"} and "cnncodes.codes.engines" in graph["cnncodes.codes.extract"]
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_every_public_name_resolves():
    for name in cnncodes.__all__:
        assert getattr(cnncodes, name) is not None, name


# Rooms in the order data flows; a room imports only rooms before it (and the base modules). The modules at the top
# (pipeline, predict, explain, export, serve, settings, presets, cli, backbone_checks) may import any room.
BASE = {"cnncodes.errors", "cnncodes.files", "cnncodes.network"}
ROOMS = ["data", "backbones", "codes", "heads", "outputs", "audit", "labeling"]


def room_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in ROOMS else None


def test_each_room_imports_only_the_rooms_below_it():
    graph = import_graph()
    wrong = []
    for module, targets in graph.items():
        room = room_of(module)
        if room is None:
            continue
        for target in targets:
            other = room_of(target)
            allowed = target in BASE or other is not None and ROOMS.index(other) <= ROOMS.index(room)
            if not allowed:
                wrong.append(f"{module} -> {target}")
    assert not wrong, "imports against the flow: " + ", ".join(sorted(wrong))


def test_every_module_lives_in_a_room_or_at_the_top():
    top = {"cnncodes", "cnncodes.__main__", "cnncodes.cli", "cnncodes.pipeline", "cnncodes.predict", "cnncodes.export",
           "cnncodes.settings", "cnncodes.presets", "cnncodes.backbone_checks", "cnncodes.serve", "cnncodes.explain"} | BASE
    assert {m for m in import_graph() if room_of(m) is None} <= top
