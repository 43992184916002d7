"""results.html in a real headless browser, the gate in a CI job's summary, and the gate's help.

The page is opened by Chromium (`chromium --headless --dump-dom`: the document after its
script ran), with every host name unresolvable and a dead proxy, so a page that needed the
network would show it. The filters are driven the way a shared link drives them: the address's
fragment (`results.html#outcome=wrong`). Skips with a reason where no Chromium is installed
(`.ci/run` installs Debian's).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Generator
from html.parser import HTMLParser
from pathlib import Path

import pytest

from pipeline import report
from pipeline.core.workspace import CHECKOUT, Workspace
from pipeline.report import HTML
from tests.unit.fake_http import ReadFileHandler, serving
from tests.unit.report.test_report import chosen_value, made, scored_run, write_run

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def browser() -> str:
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    pytest.skip(f"no headless browser ({', '.join(BROWSERS)}) on PATH: .ci/run installs chromium")


def rendered(page: Path, fragment: str = "") -> str:
    """The page's DOM after its script ran, with the network unreachable."""
    done = subprocess.run(
        [browser(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=127.0.0.1:9",
         f"--user-data-dir={page.parent / '.chromium'}", "--virtual-time-budget=2000",
         "--dump-dom", page.as_uri() + (f"#{fragment}" if fragment else "")],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


class Rows(HTMLParser):
    """The rows of one table (by id) with their attributes, and the verdict's text."""

    def __init__(self, table_id: str) -> None:
        super().__init__()
        self.table_id, self.inside, self.in_body = table_id, False, False
        self.rows: list[dict[str, str | None]] = []
        self.verdict = ""
        self._verdict = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "table":
            self.inside = a.get("id") == self.table_id
        elif tag == "tbody" and self.inside:
            self.in_body = True
        elif tag == "tr" and self.in_body:
            self.rows.append(a)
        if a.get("id") == "verdict":
            self._verdict = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self.inside = self.in_body = False
        if self._verdict and tag in ("span", "h1"):
            self._verdict = False

    def handle_data(self, data: str) -> None:
        if self._verdict:
            self.verdict += data


def rows(dom: str, table_id: str = "prompts") -> Rows:
    parsed = Rows(table_id)
    parsed.feed(dom)
    return parsed


@pytest.fixture(scope="module")
def canned_gate(tmp_path_factory: pytest.TempPathFactory) -> Generator[tuple[Path, str]]:
    """`python -m pipeline gate` on tiny against a server that calls read_file for every
    request, with $GITHUB_STEP_SUMMARY set: (workdir, the summary file's text)."""
    work = tmp_path_factory.mktemp("gate")
    summary = work / "step_summary.md"

    with serving(ReadFileHandler) as url:
        done = subprocess.run(
            [sys.executable, "-m", "pipeline", "gate", "--experiment", "tiny",
             "--server-url", url, "--workdir", str(work), "-q", "-p", "no:cacheprovider",
             "-p", "no:xdist"],
            cwd=CHECKOUT, capture_output=True, text=True, timeout=600, check=False,
            env={**os.environ, "GITHUB_STEP_SUMMARY": str(summary)},
        )  # fmt: skip
    assert done.returncode in (0, 1), done.stdout[-3000:] + done.stderr[-2000:]
    yield work, summary.read_text(encoding="utf-8") if summary.is_file() else ""


def test_a_gate_run_writes_a_page_the_browser_shows_with_every_prompt(canned_gate) -> None:
    work, _ = canned_gate
    page = Workspace(work).reports("tiny") / HTML
    results = report.read_results(page.with_name("results.json"))
    dom = rendered(page)
    shown = rows(dom)
    assert len(shown.rows) == len(results.prompts) == 30
    assert shown.verdict == results.verdict
    assert not any("hidden" in r for r in shown.rows)
    assert re.search(r"30 of 30 prompts shown", dom)
    # self-contained: nothing it loads lives elsewhere
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page.read_text())


def test_a_filter_in_the_address_leaves_only_the_failures(canned_gate) -> None:
    work, _ = canned_gate
    page = Workspace(work).reports("tiny") / HTML
    results = report.read_results(page.with_name("results.json"))
    wrong = {p["id"] for p in results.prompts if p["outcome"] == "wrong"}
    assert 0 < len(wrong) < 30  # read_file is right for some prompts only
    shown = rows(rendered(page, "outcome=wrong"))
    visible = [r for r in shown.rows if "hidden" not in r]
    assert {r["data-outcome"] for r in visible} == {"wrong"}
    assert len(visible) == len(wrong)
    kinds = {p["failure"] for p in results.prompts if p["outcome"] == "wrong"}
    kind = sorted(kinds)[0]
    both = rows(rendered(page, f"outcome=wrong&failure={kind}"))
    assert {r["data-failure"] for r in both.rows if "hidden" not in r} == {kind}


def test_the_ci_summary_gets_the_verdict_and_the_criteria_table(canned_gate) -> None:
    work, text = canned_gate
    results = report.read_results(Workspace(work).reports("tiny") / "results.json")
    assert text.startswith(f"## routegate: tiny: {results.verdict}")
    assert "| category |" in text and "| **overall** |" in text
    assert text.count("## routegate:") == 1  # appended once per session


def test_with_a_baseline_run_the_page_shows_the_regressed_prompts_first(tmp_path: Path) -> None:
    from pipeline.definitions.catalog import load_catalog
    from pipeline.definitions.experiment import load_experiment
    from pipeline.definitions.prompts import load_prompts

    experiment = load_experiment("phase40")
    prompts = load_prompts(experiment.eval.prompts, load_catalog())
    workspace = Workspace(tmp_path)
    base_dir = tmp_path / "runs" / "phase40" / "base"
    write_run(base_dir, experiment, scored_run(prompts), workspace=workspace)
    fixed = next(p.id for i, p in enumerate(prompts) if chosen_value(p, i, 0, 0.0) == 0.1)

    def mixed(p, i: int, s: int, t: float) -> float:
        if p.id == fixed:
            return 1.0
        return 0.0 if p.category == "text_tools" else chosen_value(p, i, s, t)

    run_dir = tmp_path / "runs" / "phase40" / "mixed"
    pf = write_run(run_dir, experiment, scored_run(prompts, value=mixed), workspace=workspace,
                   baseline_run=base_dir)  # fmt: skip
    written = report.write_report(made(run_dir, experiment, pf), tmp_path / "out", chart=False)
    changed = rows(rendered(written.html), "changes").rows
    kinds = [r["class"] for r in changed]
    text_tools = sum(1 for p in prompts if p.category == "text_tools")
    assert kinds == ["regressed"] * text_tools + ["improved"]


def test_a_failed_check_links_to_the_row_of_what_ignoring_it_cost(tmp_path: Path) -> None:
    from pipeline.definitions.catalog import load_catalog
    from pipeline.definitions.experiment import load_experiment
    from pipeline.definitions.prompts import load_prompts
    from pipeline.preflight.costs import CheckCost, CheckCosts

    experiment = load_experiment("phase40")
    prompts = load_prompts(experiment.eval.prompts, load_catalog())
    workspace = Workspace(tmp_path)
    run_dir = tmp_path / "runs" / "phase40" / "forced"
    pf = write_run(
        run_dir, experiment, scored_run(prompts), workspace=workspace, preflight_failed=True
    )
    costs = (CheckCost("thinking", "thinking", "", "extended", 224, -0.25, -0.3, -0.2, "d"),)
    CheckCosts(experiment="phase40", command="c", written="w", trainings=3, costs=costs).write(
        workspace.check_costs("phase40")
    )
    written = report.write_report(made(run_dir, experiment, pf), tmp_path / "out", chart=False)
    dom = rendered(written.html)
    link = re.search(r'<a href="(#cost-[^"]+)">what ignoring it cost</a>', dom)
    assert link is not None and link.group(1) == "#cost-thinking"
    assert len(rows(dom, "costs").rows) == 1
    assert '<span id="cost-thinking">thinking</span>' in dom
    assert "-25.0 [-30.0, -20.0]" in dom


def test_the_gate_help_shows_its_own_options_first() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", "gate", "--help"],
        cwd=CHECKOUT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    head = done.stdout.splitlines()[:20]
    assert head[0] == "usage: python -m pipeline gate [options] [pytest options]"
    assert any(line.strip().startswith("--experiment") for line in head)
    assert "--help-pytest" in done.stdout
