"""Imports flow one way: kernels/ <- gpt/ <- profiling/, and inside profiling/ measure -> model -> economics ->
presentation, with no circle anywhere. Read from the source with `ast`, function-local imports included."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Every module of profiling/ in exactly one layer; a lower layer never imports a higher one.
LAYERS = {
    "measure": {"energy", "meter", "rundir", "scaling"},
    "model": {"flops", "hardware", "microbench", "device_profile", "calibrate", "predict", "collectives",
              "harness"},
    "economics": {"prices", "cost", "scenarios", "plan", "scale", "levers", "derive", "train_compare", "traffic"},
    "presentation": {"live", "report", "cost_report", "cost_cli", "scale_cli", "hardware_cli", "plots", "__main__",
                     "__init__", "train_compare_cli"},
}
RANK = {module: rank for rank, modules in enumerate(LAYERS.values()) for module in modules}


def imported_modules(path: Path) -> set[str]:
    """Dotted names of every module `path` imports, anywhere in the file."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def profiling_imports(path: Path) -> set[str]:
    """The profiling/ modules (short names) that `path` imports."""
    found = set()
    for name in imported_modules(path):
        parts = name.split(".")
        if parts[0] == "profiling" and len(parts) > 1 and (ROOT / "profiling" / f"{parts[1]}.py").exists():
            found.add(parts[1])
    return found


MODULES = sorted(path.stem for path in (ROOT / "profiling").glob("*.py"))


def test_every_profiling_module_has_a_layer():
    assert set(MODULES) - set(RANK) == set(), "add the new module to LAYERS in tests/test_layering.py"


@pytest.mark.parametrize("module", MODULES)
def test_no_upward_import(module):
    upward = {name for name in profiling_imports(ROOT / "profiling" / f"{module}.py") if RANK[name] > RANK[module]}
    assert not upward, f"profiling.{module} ({_layer(module)}) imports a higher layer: {sorted(upward)}"


def _layer(module: str) -> str:
    return list(LAYERS)[RANK[module]]


def test_no_import_circle_in_profiling():
    graph = {module: profiling_imports(ROOT / "profiling" / f"{module}.py") - {module} for module in MODULES}
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        if module in path:
            pytest.fail("import circle: " + " -> ".join(path[path.index(module):] + (module,)))
        if module not in done:
            for imported in graph[module]:
                visit(imported, path + (module,))
            done.add(module)

    for module in MODULES:
        visit(module, ())


@pytest.mark.parametrize("package, forbidden", [("kernels", {"gpt", "profiling"}), ("gpt", {"profiling"})])
def test_packages_import_downward_only(package, forbidden):
    for path in (ROOT / package).rglob("*.py"):
        upward = {name for name in imported_modules(path) if name.split(".")[0] in forbidden}
        assert not upward, f"{path.relative_to(ROOT)} imports {sorted(upward)}"


def test_the_checker_sees_function_local_imports(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from profiling.scale import device_spec\n    import profiling.report\n")
    assert profiling_imports(source) == {"scale", "report"}
