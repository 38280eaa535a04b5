"""The package's import graph has no circles (read from the source with ast, nothing imported)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "hpstudy"


def module_imports(path: Path, lazy: bool = True) -> set[str]:
    """The hpstudy modules a file imports: at module level, and with `lazy` inside functions too (a lazy
    import only hides a circle: it still runs)."""
    out: set[str] = set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in (ast.walk(tree) if lazy else tree.body):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[1] for a in node.names if a.name.startswith("hpstudy.")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "hpstudy":
                out |= {a.name for a in node.names}
            elif node.module.startswith("hpstudy."):
                out.add(node.module.split(".")[1])
    return out


def import_graph(lazy: bool = True) -> dict[str, set[str]]:
    """Module name -> the package modules it imports."""
    modules = {p.stem: p for p in PACKAGE.glob("*.py")}
    return {name: module_imports(path, lazy) & set(modules) for name, path in modules.items()}


# The package's facade: hpstudy/__init__.py and hpstudy/api.py import every other module (lazily) to offer
# one API over them, and report.py's callable-module shim calls back into api.report. They sit above the
# modules they serve and are left out of the graph whose circles are checked.
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
                return path[path.index(nxt):] + [nxt]
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
    f.write_text("import os\nimport hpstudy.stats\nfrom hpstudy import store, tables\nfrom hpstudy.analysis_model import X\n"
                 "def f():\n    from hpstudy import report\n")
    assert module_imports(f) == {"stats", "store", "tables", "analysis_model", "report"}
    assert module_imports(f, lazy=False) == {"stats", "store", "tables", "analysis_model"}


def test_package_has_no_module_level_import_circle():
    graph = import_graph(lazy=False)
    assert {"analysis_model", "report", "tables", "figures", "readme"} <= set(graph)
    assert find_cycle(graph) == [], f"import circle: {' -> '.join(find_cycle(graph))}"


REPORT_SIDE = {"report", "analysis_model", "tables", "figures", "readme", "synthetic", "stats"}


def test_report_side_has_no_circle_even_through_lazy_imports():
    """No circle passes through the report's modules, counting imports inside functions too: among them none,
    and nothing they use below them imports any of them back."""
    graph = {k: v - FACADE for k, v in import_graph(lazy=True).items() if k not in FACADE}
    own = {k: v & REPORT_SIDE for k, v in graph.items() if k in REPORT_SIDE}
    assert find_cycle(own) == [], f"import circle: {' -> '.join(find_cycle(own))}"
    below = set(reachable(graph, "report")) - REPORT_SIDE
    assert {"store", "study", "config"} <= below
    back = {m: sorted(set(reachable(graph, m)) & REPORT_SIDE) for m in sorted(below)}
    assert not any(back.values()), f"modules below the report that import it back: {back}"


def test_report_modules_import_the_analysis_model_not_the_report():
    graph = import_graph()
    for name in ("tables", "figures", "readme"):
        assert "analysis_model" in graph[name] and "report" not in graph[name], name
    assert "report" not in graph["analysis_model"]


def test_importing_report_pulls_no_module_that_imports_it_back():
    """`import hpstudy.report` loads no module (besides the facade) that imports hpstudy.report, even lazily."""
    code = "import sys, hpstudy.report\nprint(' '.join(sorted(m for m in sys.modules if m.startswith('hpstudy.'))))\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = {m.split(".", 1)[1] for m in out.stdout.split()} - FACADE - {"report"}
    assert {"analysis_model", "stats", "store", "study"} <= loaded
    back = sorted(m for m in loaded if (PACKAGE / f"{m}.py").is_file() and "report" in module_imports(PACKAGE / f"{m}.py"))
    assert back == [], f"modules loaded by hpstudy.report that import it back: {back}"
