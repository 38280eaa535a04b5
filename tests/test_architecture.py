"""The package's import graph has no circles (read from the source with ast, nothing imported)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "hpstudy"


def module_name(path: Path) -> str:
    """A file's module name inside the package, dotted ("store", "reporting.stats"; a package's __init__: its name)."""
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" and len(parts) > 1 else parts)


def module_imports(path: Path, lazy: bool = True) -> set[str]:
    """The hpstudy modules a file imports (dotted, without "hpstudy."): at module level, and with `lazy`
    inside functions too (a lazy import only hides a circle: it still runs)."""
    out: set[str] = set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree) if lazy else tree.body:
        if isinstance(node, ast.Import):
            out |= {a.name.split(".", 1)[1] for a in node.names if a.name.startswith("hpstudy.")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "hpstudy" or node.module.startswith("hpstudy."):
                base = node.module.split(".", 1)[1] if "." in node.module else ""
                for a in node.names:  # `from hpstudy.reporting import stats` imports a module; `import X` a name
                    sub = f"{base}.{a.name}" if base else a.name
                    out.add(sub if module_exists(sub) or not base else base)
    return out


def module_exists(name: str) -> bool:
    """Whether hpstudy.<name> is a module or package of the package."""
    path = PACKAGE.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def import_graph(lazy: bool = True) -> dict[str, set[str]]:
    """Module name -> the package modules it imports."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: module_imports(path, lazy) & set(modules) for name, path in modules.items()}


# The package's facade: hpstudy/__init__.py and hpstudy/api.py import every other module (lazily) to offer
# one API over them. They sit above the modules they serve and are left out of the graph whose circles are checked.
FACADE = {"__init__", "api"}


def reachable(graph: dict[str, set[str]], start: str) -> dict[str, set[str]]:
    """The part of the graph that importing `start` can load."""
    seen, todo = set(), [start]
    while todo:
        node = todo.pop()
        if node not in seen:
            seen.add(node)
            todo += sorted(graph.get(node, ()))
    return {n: graph[n] & seen for n in seen}


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import circle as a list of modules (first repeated at the end), or [] when there is none."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return []

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return []


def test_find_cycle_detects_a_circle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) == []


def test_module_imports_reads_every_import_form(tmp_path):
    f = tmp_path / "m.py"
    f.write_text(
        "import os\nimport hpstudy.reporting.stats\nfrom hpstudy import store\nfrom hpstudy.reporting import tables\n"
        "from hpstudy.reporting.analysis import Analysis\ndef f():\n    from hpstudy.reporting import build\n"
    )
    assert module_imports(f) == {
        "reporting.stats",
        "store",
        "reporting.tables",
        "reporting.analysis",
        "reporting.build",
    }
    assert module_imports(f, lazy=False) == {"reporting.stats", "store", "reporting.tables", "reporting.analysis"}


def test_package_has_no_module_level_import_circle():
    graph = import_graph(lazy=False)
    assert {
        "reporting.analysis",
        "reporting.build",
        "reporting.tables",
        "reporting.figures",
        "reporting.readme",
    } <= set(graph)
    assert find_cycle(graph) == [], f"import circle: {' -> '.join(find_cycle(graph))}"


REPORT_SIDE = {m for m in import_graph() if m == "reporting" or m.startswith("reporting.")}


def test_report_side_is_one_package_and_report_is_the_api_function():
    """The report side lives in hpstudy/reporting/; no top-level module of that name shadows hpstudy.report."""
    assert {"reporting.stats", "reporting.analysis", "reporting.outputs", "reporting.synthetic"} <= REPORT_SIDE
    assert not any(
        (PACKAGE / f"{m}.py").exists()
        for m in ("report", "stats", "analysis_model", "tables", "figures", "readme", "outputs", "synthetic")
    )
    code = "import hpstudy, hpstudy.reporting.build, inspect\nprint(inspect.isfunction(hpstudy.report))\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"


def test_report_side_has_no_circle_and_imports_nothing_above_it():
    """No circle passes through the report side, counting imports inside functions too: among its modules none,
    and nothing they use below them (store, study, config...) imports any of them back; nor the facade."""
    graph = import_graph(lazy=True)
    own = {k: v & REPORT_SIDE for k, v in graph.items() if k in REPORT_SIDE}
    assert find_cycle(own) == [], f"import circle: {' -> '.join(find_cycle(own))}"
    assert not any(graph[m] & FACADE for m in REPORT_SIDE), {m: graph[m] & FACADE for m in REPORT_SIDE}
    below = set().union(*(reachable(graph, m) for m in REPORT_SIDE)) - REPORT_SIDE
    assert {"store", "study", "config"} <= below
    back = {m: sorted(set(reachable(graph, m)) & REPORT_SIDE) for m in sorted(below)}
    assert not any(back.values()), f"modules below the report side that import it back: {back}"


def test_report_modules_import_the_analysis_not_the_builder():
    graph = import_graph()
    for name in ("reporting.tables", "reporting.figures", "reporting.readme"):
        assert "reporting.analysis" in graph[name] and "reporting.build" not in graph[name], name
    assert "reporting.build" not in graph["reporting.analysis"]
