"""A finding: one check's verdict on one subject, with the figure and the fix it reports.

Findings are values, so pytest, the CLI, the build and `reports/<experiment>/preflight.json`
show the same verdicts; the text helpers here shape what a finding says.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Literal

Verdict = Literal["pass", "fail", "info", "skip"]


@dataclass(frozen=True)
class Finding:
    check: str
    subject: str
    verdict: Verdict
    figure: str
    detail: str = ""

    @property
    def failed(self) -> bool:
        return self.verdict == "fail"

    def message(self) -> str:
        text = f"[{self.check}] {self.subject}: {self.figure}"
        return f"{text}\n{self.detail}" if self.detail else text


def diff(a: str, b: str, a_name: str, b_name: str, limit: int = 24) -> str:
    lines = list(
        difflib.unified_diff(a.splitlines(), b.splitlines(), a_name, b_name, lineterm="", n=1)
    )
    more = f"\n... ({len(lines) - limit} more diff lines)" if len(lines) > limit else ""
    return "\n".join(clip(line, 160) for line in lines[:limit]) + more


def first_line_diff(expected: str, got: str) -> str:
    for i, (a, b) in enumerate(zip(expected.splitlines(), got.splitlines(), strict=False), 1):
        if a != b:
            return f"  line {i}: expected {clip(a)!r}\n  line {i}: got      {clip(b)!r}"
    return f"  expected {len(expected.splitlines())} lines, got {len(got.splitlines())}"


def clip(text: str, width: int = 120) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."
