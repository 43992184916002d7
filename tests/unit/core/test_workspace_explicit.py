"""Only the doors choose the workspace: the library takes it as an argument and never falls back.

A step that quietly used `Workspace.at()` (the checkout, or $ROUTEGATE_WORKDIR) when handed none
wrote into the checkout while its caller meant another folder (`--workdir`, a study row, a test's
tmp_path). So `Workspace.at(` is spelled only in the doors (the command line, the gate's
`Invocation.from_options`, the workspace module itself), and no library function takes an
optional workspace. Tests, conftest files and benchmarks are doors too; they are not scanned.
"""

from __future__ import annotations

import ast
from pathlib import Path

from pipeline.core.workspace import CHECKOUT

PACKAGE = CHECKOUT / "pipeline"
DOORS = ("pipeline/cli/", "pipeline/gate.py", "pipeline/core/workspace.py")
"""Where a workspace may be chosen: the paths, relative to the checkout, that say which."""


def _is_door(path: Path) -> bool:
    relative = path.relative_to(CHECKOUT).as_posix()
    return any(relative == door or relative.startswith(door) for door in DOORS)


def _optional(annotation: ast.expr | None) -> bool:
    """Whether an annotation admits None (`Workspace | None`, `Optional[Workspace]`)."""
    text = ast.unparse(annotation) if annotation is not None else ""
    return "None" in text or "Optional" in text


def fallbacks(path: Path, source: str | None = None) -> list[str]:
    """`file:line: what` for each `Workspace.at(` call and each optional `workspace` parameter."""
    tree = ast.parse(source if source is not None else path.read_text(), str(path))
    found: list[str] = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "at"
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "Workspace"
        ):
            found.append(f"{path}:{node.lineno}: calls Workspace.at()")
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            arguments = node.args
            for arg in [*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs]:
                if arg.arg == "workspace" and _optional(arg.annotation):
                    found.append(f"{path}:{node.lineno}: {node.name}() takes an optional workspace")
    return found


def test_only_the_doors_choose_the_workspace() -> None:
    found = [
        line
        for path in sorted(PACKAGE.rglob("*.py"))
        if not _is_door(path)
        for line in fallbacks(path)
    ]
    assert not found, (
        "library code that chooses a workspace itself; take `workspace: Workspace` and let the "
        "door (pipeline/cli, pipeline.gate.Invocation, a fixture) pass it:\n" + "\n".join(found)
    )


def test_the_scan_finds_a_fallback_and_an_optional_workspace(tmp_path: Path) -> None:
    source = (
        "def f(workspace: Workspace | None = None):\n"
        "    return workspace or Workspace.at()\n"
        "def g(*, workspace: Workspace):\n"
        "    return workspace\n"
    )
    found = sorted(line.split(": ", 1)[1] for line in fallbacks(tmp_path / "x.py", source))
    assert found == ["calls Workspace.at()", "f() takes an optional workspace"]


def test_the_doors_are_where_they_are_said_to_be() -> None:
    for door in DOORS:
        assert (CHECKOUT / door).exists(), f"{door} is gone: update DOORS"
