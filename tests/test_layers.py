"""The package's layering: no import cycle between tunebook's modules, function-level imports included."""

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "lib" / "tunebook"


def imports() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for f in PKG.glob("*.py"):
        mod = f.stem
        deps: set[str] = set()
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                if node.module:
                    deps.add(node.module.split(".")[0])
                else:
                    deps.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tunebook."):
                deps.add(node.module.split(".")[1])
        graph[mod] = {d for d in deps if (PKG / f"{d}.py").is_file() and d != mod}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found, state, stack = [], {}, []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph.get(m, ())):
            if state.get(d) == 1:
                found.append(stack[stack.index(d):] + [d])
            elif not state.get(d):
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if not state.get(m):
            visit(m)
    return found


def test_no_import_cycle_in_the_package():
    graph = imports()
    assert {"rundir", "judge", "text", "chat", "evaluate", "inspection", "export"} <= set(graph)
    assert cycles(graph) == [], cycles(graph)


def test_lower_layers_do_not_reach_up():
    """Text measures, chat formatting, settings and the run dir know nothing of the stages that use them."""
    graph = imports()
    for low in ("text", "chat", "jsonio", "paths", "stats", "outcomes", "settings"):
        assert not graph[low] & {"evaluate", "inspection", "synthesize", "train", "export", "runner", "judge"}, low
    assert "evaluate" not in graph["inspection"] and "inspection" not in graph["judge"]
