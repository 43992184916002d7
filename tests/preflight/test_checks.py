"""The preflight gate: one test per check of pipeline.preflight's registry and subject of it.

`test_<check>[<subject>]` (test_special_tokens[base <tool_call>], test_tool_trained[hover])
passes when its finding passes or informs, skips when an input the check needs did not load
(test_load says why), and fails with the finding's message. The tests are made from the
registry, so a new check needs no code here.
"""

from __future__ import annotations

from collections.abc import Callable
from types import FunctionType

import pytest

from pipeline.core.errors import RoutegateError
from pipeline.core.workspace import Workspace
from pipeline.definitions.experiment import from_options
from pipeline.preflight import REGISTRY, Check, Context, Finding
from pipeline.preflight.runner import finding_for

_CONTEXT = pytest.StashKey["Context | None"]()


def _collection_context(config: pytest.Config) -> Context | None:
    """A context for listing subjects (nothing loads), or None when the experiment does not."""
    if _CONTEXT not in config.stash:
        try:
            experiment = from_options(config.getoption)
        except (ValueError, RoutegateError):
            config.stash[_CONTEXT] = None
        else:
            config.stash[_CONTEXT] = Context(experiment, Workspace.at(config.getoption("workdir")))
    return config.stash[_CONTEXT]


def _test_of(check: Check) -> FunctionType:
    def test(subject: str, preflight_context: Context, judge: Callable[[Finding], None]) -> None:
        judge(finding_for(check, subject, preflight_context))

    test.__name__ = test.__qualname__ = f"test_{check.name.replace('-', '_')}"
    test.__doc__ = f"The {check.name!r} check" + (
        f", one test per {check.per}." if check.per else "."
    )
    return test


_CHECK_OF: dict[str, Check] = {}
for _check in REGISTRY:
    _test = _test_of(_check)
    _CHECK_OF[_test.__name__] = _check
    globals()[_test.__name__] = _test


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    check = _CHECK_OF.get(metafunc.function.__name__)
    if check is None:
        return
    ctx = _collection_context(metafunc.config)
    if ctx is None:
        # The experiment does not load: one test fails with why (the `experiment` fixture).
        subjects = ["experiment"] if check is REGISTRY[0] else []
    else:
        subjects = check.subjects(ctx)
    metafunc.parametrize("subject", subjects, ids=subjects)
