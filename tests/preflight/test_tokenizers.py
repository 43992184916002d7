"""The seed's checks 1-5: special tokens, ChatML, and special-token positions, base vs reference."""

from __future__ import annotations

import pytest

from pipeline import preflight
from pipeline.catalog import Catalog
from pipeline.experiment import Experiment, from_options
from pipeline.prompts import load_prompts, system_prompt

from .conftest import Loaded


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "pinned" in metafunc.fixturenames:
        # One test per pinned token and side: test_special_token[base-<tool_call>].
        try:
            tokens = from_options(metafunc.config.getoption).tokens
        except ValueError:
            tokens = {}
        cases = [(s, t, i) for s in preflight.SIDES for t, i in tokens.items()]
        metafunc.parametrize(
            ("side_name", "token", "pinned"), cases, ids=[f"{s}-{t}" for s, t, _ in cases]
        )


@pytest.mark.parametrize("name", [*preflight.SIDES, "data"])
def test_loads(name: str, sides: dict[str, Loaded], splits: Loaded, judge) -> None:
    loaded = splits if name == "data" else sides[name]
    what = name if name == "data" else f"{name} tokenizer"
    if loaded.error:
        judge(preflight.Finding("load", what, "fail", "cannot load", loaded.error))
    judge(preflight.Finding("load", what, "pass", "loaded"))


def test_special_token(side, side_name: str, token: str, pinned: int, judge) -> None:
    judge(preflight.check_special_token(side(side_name), token, pinned))


def test_chatml(side, experiment: Experiment, catalog: Catalog, judge) -> None:
    user = load_prompts(experiment.eval.prompts, catalog)[0].text
    system = system_prompt(experiment, catalog)
    judge(preflight.check_chatml(side("base"), side("reference"), system, user))


def test_special_token_positions(side, rendered, experiment: Experiment, judge) -> None:
    judge(
        preflight.check_special_positions(
            side("base"), side("reference"), rendered("base", "train"), experiment.tokens
        )
    )
