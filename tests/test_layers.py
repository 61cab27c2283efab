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


MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 60
HTTP_PACKAGES = {"aiohttp", "httpx", "openai"}


def functions(tree: ast.AST, prefix: str = ""):
    """(qualified name, line count) of every function and method, nested ones included."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield prefix + node.name, node.end_lineno - node.lineno + 1
            yield from functions(node, f"{prefix}{node.name}.")
        elif isinstance(node, ast.ClassDef):
            yield from functions(node, f"{prefix}{node.name}.")


def test_no_module_over_450_lines():
    long = {f.name: n for f in PKG.glob("*.py") if (n := len(f.read_text(encoding="utf-8").splitlines()))
            > MAX_MODULE_LINES}
    assert not long, f"split by concern: {long}"


def test_no_function_over_60_lines():
    ALLOWED: set[str] = set()
    long = {}
    for f in PKG.glob("*.py"):
        for name, n in functions(ast.parse(f.read_text(encoding="utf-8"))):
            if n > MAX_FUNCTION_LINES and f"{f.stem}.{name}" not in ALLOWED:
                long[f"{f.stem}.{name}"] = n
    assert not long, long


def test_only_the_client_speaks_http():
    """Every request to an endpoint goes through client.py (one place for retries, timeouts, keys and faults): no
    other module imports aiohttp, httpx or openai. (The string "vllm.entrypoints.openai.api_server" in
    server_commands.py is vLLM's module on a command line, not an import.)"""
    users = {}
    for f in PKG.glob("*.py"):
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = {(node.module or "").split(".")[0]}
            else:
                continue
            if names & HTTP_PACKAGES:
                users.setdefault(f.stem, set()).update(names & HTTP_PACKAGES)
    assert set(users) == {"client"}, users
    assert imports()["client"] == set(), "the client knows nothing of the stages that use it"
