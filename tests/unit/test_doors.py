"""The gate's doors reach its line (build, integrity, eval, report) only through pipeline.gate.

pipeline/gate.py composes preflight -> build -> integrity -> eval -> verdict -> report once; the
pytest conftests, the CLI's eval and gate commands, the confound study and the gate benchmark
are doors onto it. A door that imported a step itself would compose the line a second time
(as four of them once did), and could skip a step the others run: this test reads each door's
imports and fails on any step function imported past pipeline.gate.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CHECKOUT = Path(__file__).resolve().parents[2]

DOORS = {
    "conftest.py": "pipeline.gate",
    "tests/eval/conftest.py": "pipeline.gate",
    "pipeline/cli/eval.py": "from pipeline import gate",
    "pipeline/cli/gate.py": "pytest.main",  # the gate as the pytest run it is: the conftests
    "pipeline/study/confounds.py": "pipeline.gate",
    "benchmarks/gate.py": "pipeline.gate",
}
"""Each door, and how it reaches the line."""

STEPS = {
    "pipeline.builder": {"build"},
    "pipeline.builder.run": {"build"},
    "pipeline.eval": {"run_eval"},
    "pipeline.eval.run": {"run_eval"},
    "pipeline.eval.integrity": {"after_build", "check_integrity"},
    "pipeline.report": {"report_run", "write_report"},
    "pipeline.report.write": {"report_run", "write_report"},
}
"""The line's steps, by every module that exports them: only pipeline.gate may import them."""


def step_imports(source: str) -> list[str]:
    """`module.name` for each step function the source imports (from-imports and attribute
    use of an imported step module alike)."""
    tree = ast.parse(source)
    found: list[str] = []
    modules: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module in STEPS:
            found += [f"{node.module}.{a.name}" for a in node.names if a.name in STEPS[node.module]]
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                module = f"{node.module}.{alias.name}"
                if module in STEPS:
                    modules[alias.asname or alias.name] = module
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in STEPS:
                    modules[alias.asname or alias.name] = alias.name
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in modules
            and node.attr in STEPS[modules[node.value.id]]
        ):
            found.append(f"{modules[node.value.id]}.{node.attr}")
    return sorted(set(found))


@pytest.mark.parametrize(("door", "through"), DOORS.items())
def test_a_door_reaches_the_line_only_through_pipeline_gate(door: str, through: str) -> None:
    source = (CHECKOUT / door).read_text(encoding="utf-8")
    assert step_imports(source) == [], f"{door} composes the line itself"
    assert through in source, f"{door} no longer reaches the line through {through}"


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from pipeline.builder import build", ["pipeline.builder.build"]),
        ("from pipeline.eval.run import run_eval, settings_for", ["pipeline.eval.run.run_eval"]),
        ("from pipeline import report\nreport.report_run(x)", ["pipeline.report.report_run"]),
        (
            "import pipeline.eval.integrity as i\ni.after_build()",
            ["pipeline.eval.integrity.after_build"],
        ),
        ("from pipeline.builder import BuildResult", []),
        ("from pipeline.gate import evaluate", []),
    ],
)
def test_step_imports_finds_a_step_however_it_is_imported(source: str, expected: list[str]) -> None:
    assert step_imports(source) == expected
