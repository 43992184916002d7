"""routegate's pytest plugin (a `pytest11` entry point): options, and thin hooks onto one session.

It declares the gate's options from the one table (pipeline.core.options), keeps one
`GateSession` per pytest run, prints progress and the verdict on the terminal, and sets
pytest's exit status from the verdict in one place (`pytest_sessionfinish`), as syrupy does:
a FAIL is exit 1 even when every test passed, an ERROR exit 3 even when tests failed (they
failed for want of answers). A session whose eval wrote no report marks the last one stale
(pipeline.report.mark_stale). Fixtures stay in conftest.py.

It is inert outside routegate's checkout: the options are declared everywhere (pytest has no
other way), but the rootdir repair and the exit status apply only to a gate session.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pipeline.core.errors import RoutegateError
from pipeline.core.options import register
from pipeline.core.progress import LogLines, Transient
from pipeline.core.workspace import CHECKOUT

if TYPE_CHECKING:
    from pipeline.gate import Invocation

SESSION = pytest.StashKey["GateSession"]()


@dataclass
class GateSession:
    """What one pytest run of the gate has learnt, and the verdict it ends with."""

    config: pytest.Config
    finishers: list[Callable[[], Any]] = field(default_factory=list)
    """Called at session end, in order; the last verdict they return decides the exit."""
    verdict: Any = None
    """The final pipeline.eval.verdict.Verdict, once the session has one."""
    lines: list[str] = field(default_factory=list)
    """What the terminal summary prints."""
    eval_failure: str = ""
    """The first failure of a test under tests/eval ("" while none failed)."""
    eval_ran: bool = False
    """Whether any test under tests/eval ran (or failed to set up)."""
    error: RoutegateError | None = None
    """The error that stopped the eval before its report (`stopped_by`), if any."""
    _invocation: Invocation | None = None
    kept: LogLines = field(default_factory=LogLines)
    """Which progress lines a log (not a terminal) keeps."""
    rewriting: bool = False
    """A transient line is on the terminal's last line, to be rewritten."""

    def invocation(self) -> Invocation:
        """The run's pipeline.gate.Invocation, read from the options once per process.
        Raises RoutegateError for an experiment or option that cannot be used."""
        if self._invocation is None:
            from pipeline.gate import Invocation

            self._invocation = Invocation.from_options(self.config.getoption)
        return self._invocation

    def say(self, line: str) -> None:
        """Print a progress line on the terminal now, even while pytest captures output: a
        transient one (pipeline.core.progress) rewritten in place on a terminal, and in a
        log kept only when it says something new or after a quiet spell."""
        reporter = self.config.pluginmanager.getplugin("terminalreporter")
        if reporter is None:  # an xdist worker: its output goes to the controller's log
            if self.kept.keep(line):
                print(line, flush=True)
            return
        tty = bool(getattr(reporter, "isatty", False))
        if not tty and not self.kept.keep(line):
            return
        capture = self.config.pluginmanager.getplugin("capturemanager")
        suspended = capture.global_and_fixture_disabled() if capture else contextlib.nullcontext()
        with suspended:
            if tty and isinstance(line, Transient):
                reporter.rewrite(line, erase=True)
                self.rewriting = True
                return
            if self.rewriting:  # the line being rewritten stays, the next goes below it
                reporter.write("\n")
                self.rewriting = False
            reporter.write_line(line)

    def at_finish(self, finisher: Callable[[], Any]) -> None:
        self.finishers.append(finisher)

    def stopped_by(self, error: RoutegateError) -> None:
        """The error that stopped the eval before its report: its exit code is the session's
        (2 bad input, 3 a fault, 1 a refused build), not pytest's 1 for any failure."""
        self.error = error


def gate_session(config: pytest.Config) -> GateSession:
    return config.stash[SESSION]


def pytest_addoption(parser: pytest.Parser) -> None:
    register(parser.getgroup("routegate").addoption, "gate")


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(
    early_config: pytest.Config, parser: pytest.Parser, args: list[str]
) -> None:
    """Undo pytest's rootdir guess when it took an option's path value for a test path.

    pytest 8-9 choose the rootdir and ini file from the arguments they cannot parse yet,
    before any plugin declares options (`Config.parse` -> `determine_setup`), so in
    `pytest -m eval --model /any/dir` the folder counts as a test path: outside the checkout
    pytest finds no pyproject.toml and loads no conftest.py. Options are known by now; with
    the true test paths, the setup is decided again, and only when that lands on routegate's
    own pyproject.toml is it taken, with that file's addopts.
    """
    ns = early_config.known_args_namespace
    if ns.inifilename or ns.rootdir:
        return
    try:
        from _pytest.config.findpaths import determine_setup

        rootpath, inipath, inicfg, _ = determine_setup(
            inifile=None,
            override_ini=ns.override_ini,
            args=ns.file_or_dir,
            rootdir_cmd_arg=None,
            invocation_dir=early_config.invocation_params.dir,
        )
    except (ImportError, TypeError, ValueError):  # another pytest: its own guess stands
        return
    ours = CHECKOUT / "pyproject.toml"
    if inipath != ours or early_config.inipath == ours:
        return
    early_config._rootpath = rootpath
    early_config._inipath = inipath
    early_config._inicfg = inicfg
    early_config._inicache.clear()
    args[:] = [*early_config.getini("addopts"), *args]
    early_config.known_args_namespace = parser.parse_known_args(
        args, namespace=copy.copy(early_config.option)
    )
    early_config.known_args_namespace.confcutdir = str(inipath.parent)


def pytest_configure(config: pytest.Config) -> None:
    config.stash[SESSION] = GateSession(config)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Note whether the eval's tests ran, and the first one's failure (for `mark_stale`)."""
    report = yield
    gate = item.config.stash.get(SESSION, None)
    eval_tests = CHECKOUT / "tests" / "eval"
    if gate is None or eval_tests not in Path(str(item.path)).parents:
        return report
    gate.eval_ran = True
    if report.failed and not gate.eval_failure:
        lines = [line for line in report.longreprtext.splitlines() if line.strip()]
        gate.eval_failure = lines[-1] if lines else item.nodeid
    return report


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """The exit status, set in one place: the verdict's, unless pytest already failed for
    another reason than an ERROR; a RoutegateError's that stopped the eval (`stopped_by`)."""
    gate = session.config.stash.get(SESSION, None)
    if gate is None:
        return
    for finish in gate.finishers:
        verdict = finish()
        if verdict is not None:
            gate.verdict = verdict
    if gate.verdict is not None:
        if session.exitstatus == pytest.ExitCode.OK or gate.verdict.outcome == "ERROR":
            session.exitstatus = gate.verdict.exit_code
        return
    if gate.error is not None:
        session.exitstatus = gate.error.exit_code
    if gate.eval_ran:  # the eval ran and wrote no report: the last one is not this run's
        _mark_stale(gate, str(gate.error or "") or gate.eval_failure)


def _mark_stale(gate: GateSession, why: str) -> None:
    from pipeline.report import mark_stale

    try:
        invocation = gate.invocation()
    except RoutegateError:
        return  # no experiment, no report of it to mark
    note = mark_stale(
        invocation.experiment.name, why or "the eval's tests failed", invocation.workspace
    )
    if note is not None:
        gate.lines.append(f"no report from this run; {note} says why")


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    gate = config.stash.get(SESSION, None)
    if gate is None or not gate.lines:
        return
    terminalreporter.section("routegate")
    for line in gate.lines:
        terminalreporter.write_line(line)
