"""The layout is the architecture: layers import downward only, and no modules import in a circle.

Every import is read (module level and inside functions) from the source of `pipeline/`, so a
lazy import cannot hide an upward dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from pipeline.core.workspace import CHECKOUT

PACKAGE = CHECKOUT / "pipeline"
LAYERS = (
    "core", "definitions", "models", "data", "preflight", "builder", "eval", "report", "gate",
    "study", "cli",
)  # fmt: skip
"""Bottom to top: a module may import its own layer and the layers below it. `models` sits
below `data`, as in the design's line (spec -> models -> data): resolving a model never
generates data; the tiny model's tokenizer gets its corpus from its caller. The design's
`spec` and `build` steps are the packages `definitions` (what an experiment, the catalog, the
prompts and the call syntaxes declare) and `builder` (train, fuse, quantize): a source folder
named build/ reads as build output to people and to tools, and spec/ as a test folder."""


def module_name(path: Path, root: Path = CHECKOUT) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(path: Path, known: set[str], root: Path = CHECKOUT) -> set[str]:
    """The pipeline modules `path` imports, anywhere in the file."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            # `from pipeline.x import y` imports the module pipeline.x.y when there is one.
            targets = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names
            ]
        else:
            continue
        found.update(t for t in targets if t in known and t != name)
    found.discard("pipeline")  # the root package holds nothing
    return found


def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports(path, set(found)) for name, path in found.items()}


def layer(module: str) -> int:
    parts = module.split(".")
    if len(parts) == 1 or parts[1] not in LAYERS:
        return len(LAYERS)  # the root package and pipeline.__main__ sit on top
    return LAYERS.index(parts[1])


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles() -> None:
    found = cycles(graph())
    assert not found, "modules that import each other in a circle: " + "; ".join(
        " <-> ".join(c) for c in found
    )


def test_layers_import_downward_only() -> None:
    upward = [
        f"{module} ({LAYERS[layer(module)] if layer(module) < len(LAYERS) else 'top'}) imports "
        f"{target} ({LAYERS[layer(target)] if layer(target) < len(LAYERS) else 'top'})"
        for module, targets in graph().items()
        for target in sorted(targets)
        if layer(target) > layer(module)
    ]
    assert not upward, "imports that climb a layer:\n" + "\n".join(upward)


def test_every_module_sits_in_a_layer() -> None:
    strays = [m for m in modules() if m.count(".") >= 1 and m.split(".")[1] not in LAYERS]
    assert strays in ([], ["pipeline.__main__"]), f"modules outside the layers: {strays}"


@pytest.mark.parametrize(
    ("edges", "expected"),
    [
        ({"a": {"b"}, "b": {"a"}}, [["a", "b"]]),
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c"]]),
        ({"a": {"b"}, "b": set()}, []),
    ],
)
def test_cycle_finder(edges: dict[str, set[str]], expected: list[list[str]]) -> None:
    assert cycles(edges) == expected


def test_function_level_imports_count(tmp_path: Path) -> None:
    source = tmp_path / "pipeline" / "core" / "x.py"
    source.parent.mkdir(parents=True)
    source.write_text("def f():\n    from pipeline.eval import run\n")
    assert imports(source, {"pipeline.eval.run"}, root=tmp_path) == {"pipeline.eval.run"}
