"""The package's layers, read from its source: no import cycle, and every import points down.

ops < nn < models < pretrained < (the package root) < cli; ``_version`` and ``_io`` may be imported
by any layer, and ``testing`` sits with ``models``. Imports inside functions count.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "cutlass_resnet"
LAYERS = {
    "cutlass_resnet._version": 0,
    "cutlass_resnet._io": 0,
    "cutlass_resnet.ops": 1,
    "cutlass_resnet.nn": 2,
    "cutlass_resnet.models": 3,
    "cutlass_resnet.testing": 3,
    "cutlass_resnet.pretrained": 4,
    "cutlass_resnet": 5,  # the root __init__: the public API, over every layer but the command line
    "cutlass_resnet.predict": 5,  # many images through a model: the command line's engine
    "cutlass_resnet.images": 5,  # image files to model inputs, for predict and the benchmark
    "cutlass_resnet.ray_data": 5,  # predict's job on Ray Data
    "cutlass_resnet.cli": 6,
    "cutlass_resnet.__main__": 6,
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def layer(module: str) -> int:
    """The layer of a module: that of its longest listed prefix."""
    prefixes = [name for name in LAYERS if module == name or module.startswith(name + ".")]
    return LAYERS[max(prefixes, key=len)]


def imports(module: str) -> set[str]:
    """The package's modules that ``module`` imports, anywhere in its source (a name imported from a
    package counts as its submodule when there is one, else as the package)."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base)
    return {name for name in found if name in MODULES and name != module}


GRAPH = {module: imports(module) for module in MODULES}


def test_the_reader_sees_the_layers():
    assert {"cutlass_resnet.ops.select", "cutlass_resnet.nn.plan", "cutlass_resnet.cli.predict"} <= set(MODULES)
    assert "cutlass_resnet.ops.select" in GRAPH["cutlass_resnet.ops.dispatch"]
    assert "cutlass_resnet.nn" in GRAPH["cutlass_resnet.models.resnet"]  # `from ..nn import Conv2d`
    assert "cutlass_resnet.nn.fusion" in GRAPH["cutlass_resnet.models.resnet"]  # `from ..nn import fusion`


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down(module):
    upward = sorted(name for name in GRAPH[module] if layer(name) > layer(module))
    assert not upward, f"{module} (layer {layer(module)}) imports layers above it: {upward}"


def test_no_import_cycle():
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            cycle = path[path.index(module) :] + [module]
            raise AssertionError("import cycle: " + " -> ".join(cycle))
        if module in done:
            return
        for name in sorted(GRAPH[module]):
            visit(name, [*path, module])
        done.add(module)

    for module in sorted(GRAPH):
        visit(module, [])


def test_the_checks_find_an_upward_import_and_a_cycle(monkeypatch):
    """The two checks above fail on graphs that break the rules."""
    upward = {**GRAPH, "cutlass_resnet.ops.select": GRAPH["cutlass_resnet.ops.select"] | {"cutlass_resnet.nn.conv"}}
    cycle = {**GRAPH, "cutlass_resnet.ops.library": GRAPH["cutlass_resnet.ops.library"] | {"cutlass_resnet.ops.select"}}
    monkeypatch.setitem(globals(), "GRAPH", upward)
    with pytest.raises(
        AssertionError, match=r"ops.select \(layer 1\) imports layers above it: \['cutlass_resnet.nn.conv'\]"
    ):
        test_imports_point_down("cutlass_resnet.ops.select")
    monkeypatch.setitem(globals(), "GRAPH", cycle)
    with pytest.raises(
        AssertionError,
        match=r"import cycle: cutlass_resnet.ops.(select|library) -> cutlass_resnet.ops.(library|select) -> "
        r"cutlass_resnet.ops.\1",  # from whichever of the two the walk reaches first
    ):
        test_no_import_cycle()
