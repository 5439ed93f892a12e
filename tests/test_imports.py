"""No module of pipeline/, calib/ or benchmarks/ is part of an import cycle, a pipeline module imports only from its
own floor and the floors below, and calib/ is a library beneath the pipeline: it imports nothing from pipeline/.

Every import counts, also one inside a function: a lazy import only hides a cycle until the day someone moves it
to the top. Importing ``a.b.c`` also runs the ``a`` and ``a.b`` packages' ``__init__``.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from pipeline.kernels.cmake import ROOT

PACKAGES = ("pipeline", "calib", "benchmarks")
#: pipeline/'s floors, lowest first: a module imports only from its own floor and the floors below (docs/design.md
#: §9 has the same table). The kernel and its node contract need nothing else of the pipeline; the shared helpers
#: need only them.
FLOORS = (("pipeline", "pipeline.kernels"),
          ("pipeline.common",),
          ("pipeline.models", "pipeline.tensorrt"),
          ("pipeline.recipe",),
          ("pipeline.stages", "pipeline.runtime", "pipeline.runner"),
          ("pipeline.make", "pipeline.serving"),
          ("pipeline.arguments", "pipeline.cli", "pipeline.__main__"))


def floor(module: str) -> int:
    """The floor of a pipeline module: that of the longest prefix FLOORS names."""
    matches = [(len(prefix), level) for level, prefixes in enumerate(FLOORS) for prefix in prefixes
               if module == prefix or module.startswith(f"{prefix}.")]
    assert matches, f"{module} is on no floor: add its folder to FLOORS and docs/design.md §9"
    return max(matches)[1]


def module_files() -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            modules[name.removesuffix(".__init__")] = path
    return modules


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Module → the project modules it imports (the packages along the way included)."""
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                targets = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                continue
            for target in (t for t in targets if t in modules):
                parts = target.split(".")
                for prefix in (".".join(parts[:i]) for i in range(1, len(parts) + 1)):
                    # A module's own enclosing packages are already being imported when it runs.
                    if prefix in modules and prefix != name and not name.startswith(f"{prefix}."):
                        graph[name].add(prefix)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for imported in sorted(graph[module]):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component = []
            while not component or component[-1] != module:
                component.append(stack.pop())
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return found


def test_no_import_cycles() -> None:
    modules = module_files()
    assert {"pipeline.make", "pipeline.stages.int8", "pipeline.kernels.cmake", "pipeline.kernels.cuobjdump",
            "pipeline.kernels.native", "calib.ranges", "benchmarks.bench"} <= set(modules)
    assert cycles(import_graph(modules)) == []


def test_every_module_imports_only_from_its_floor_and_below() -> None:
    modules = module_files()
    graph = import_graph(modules)
    upward = {m: sorted(i for i in graph[m] if i.startswith("pipeline") and floor(i) > floor(m))
              for m in modules if m.startswith("pipeline")}
    assert {m: i for m, i in upward.items() if i} == {}


#: What loads and runs engines: it imports loading (pipeline.tensorrt.load), never building.
LOADERS = ("pipeline.runtime", "pipeline.serving.triton", "pipeline.stages.verify")


def test_loading_an_engine_never_imports_building() -> None:
    """The runtime, serving and verification import pipeline.tensorrt.load, not pipeline.tensorrt.build: a change
    to building cannot break loading, and loading does not pay for building's imports."""
    graph = import_graph(module_files())
    assert {module: "pipeline.tensorrt.load" in graph[module] for module in LOADERS} == dict.fromkeys(LOADERS, True)
    assert {module for module in LOADERS if "pipeline.tensorrt.build" in graph[module]} == set()


def imports_from(graph: dict[str, set[str]], importer: str, imported: str) -> dict[str, list[str]]:
    """Each module of package ``importer`` that imports modules of package ``imported``, and those modules."""
    found = {m: sorted(i for i in graph[m] if i.split(".")[0] == imported) for m in graph
             if m.split(".")[0] == importer}
    return {m: i for m, i in found.items() if i}


def test_calib_imports_nothing_from_pipeline() -> None:
    """What calib needs of the pipeline (attention op names, sessions, progress) it is handed as parameters."""
    modules = module_files()
    assert {"calib", "calib.errors", "calib.quantize", "calib.ranges"} <= set(modules)
    assert imports_from(import_graph(modules), "calib", "pipeline") == {}


def test_a_calib_module_importing_pipeline_is_found(tmp_path: Path) -> None:
    """The check itself: a calib module with a lazy import of a pipeline leaf fails it."""
    (tmp_path / "ranges.py").write_text("def run():\n    from pipeline.common.progress import advance\n")
    (tmp_path / "errors.py").write_text("import numpy\n")
    pipeline = ROOT / "pipeline"
    modules = {"calib.ranges": tmp_path / "ranges.py", "calib.errors": tmp_path / "errors.py",
               "pipeline": pipeline / "__init__.py", "pipeline.common": pipeline / "common" / "__init__.py",
               "pipeline.common.progress": pipeline / "common" / "progress.py"}
    found = imports_from(import_graph(modules), "calib", "pipeline")
    assert found == {"calib.ranges": ["pipeline", "pipeline.common", "pipeline.common.progress"]}


def test_a_cycle_is_found() -> None:
    """The check itself: a chain is no cycle; closing it through a third module is."""
    graph = {"a.x": {"b"}, "b": {"a.y"}, "a.y": set()}
    assert cycles(graph) == []
    graph["a.y"] = {"a.x"}
    assert cycles(graph) == [["a.x", "a.y", "b"]]


def test_the_design_records_layout_names_only_modules_that_exist() -> None:
    """docs/design.md §9's table of floors matches the tree: every module it names exists, every folder is a floor."""
    design = (ROOT / "docs" / "design.md").read_text()
    section = design[design.index("## 9. How the code is organised"):design.index("## 10.")]
    rows = [line for line in section.splitlines() if line.startswith("| ") and "`" in line]
    for row in rows:
        folders = re.findall(r"`(pipeline/[\w/]*?)/?`", row.split("|")[2])
        modules = re.findall(r"`([\w]+\.py)`", row.split("|")[3])
        for module in modules:
            assert any((ROOT / folder / module).is_file() for folder in folders if not folder.endswith(".py")), module
        for folder in folders:
            assert (ROOT / folder).exists(), folder
    assert len(rows) == len(FLOORS)
    floors = {prefix.replace(".", "/") for level in FLOORS for prefix in level} - {"pipeline"}
    assert floors == {f.removesuffix(".py") for row in rows for f in re.findall(r"`(pipeline/[\w/.]*?)/?`", row)}
