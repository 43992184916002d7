"""One test per eval prompt: it got an answer; and its extracted calls against the snapshot.

A wrong answer is reported (xfail with the scorer's reason), not failed: the pre-registered
category thresholds are the decision, and a single prompt must not override them.

Snapshots belong to a reference build: `snapshot_references/<experiment>.json` names the
weights (a content digest of the model folder) the snapshots were taken from, and
`--snapshot-update` makes this run the reference. A run of the same weights must extract the
same calls: a difference is drift (a SnapshotDrift warning and syrupy's "snapshot failed"
count; CI that wants drift to fail adds `-W error::pipeline.eval.run.SnapshotDrift`). A run of
other weights (another machine's training, another build or model) skips the comparison with
one reason instead of reporting every prompt as failed: its differences say only "other
weights", and the report compares runs (`python -m pipeline report --compare`).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

from pipeline.builder import model_digest
from pipeline.definitions.catalog import load_catalog
from pipeline.definitions.experiment import Experiment, from_options
from pipeline.definitions.prompts import load_prompts
from pipeline.eval.run import EvalResult, SnapshotDrift

REFERENCES = Path(__file__).parent / "snapshot_references"
"""Beside `snapshots/`, not in it: syrupy deletes files there that are not snapshots."""
NONE_RECORDED = "none recorded"
"""What `snapshot_reference` returns when no reference build is recorded for the experiment."""


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "prompt_id" in metafunc.fixturenames:
        try:
            experiment = from_options(metafunc.config.getoption)
            ids = [p.id for p in load_prompts(experiment.eval.prompts, load_catalog())]
        except ValueError:
            ids = []
        metafunc.parametrize("prompt_id", ids)


def observed(eval_result: EvalResult, prompt_id: str) -> dict:
    first = eval_result.at(prompt_id)[0]
    return {
        "calls": first.score.calls,
        "value": first.score.value,
        "routing": first.score.routing,
        "arguments": first.score.arguments,
        "truncated": first.truncated,
    }


def test_prompt(prompt_id: str, eval_result: EvalResult) -> None:
    samples = eval_result.at(prompt_id)
    assert samples, f"{prompt_id}: no result at the decision temperature"
    errors = [s.record.error for s in samples if s.record.error]
    assert not errors, f"{prompt_id}: {len(errors)} request(s) got no answer: {errors[0]}"
    wrong = [s for s in samples if s.score.value < 1.0]
    if wrong:
        mean = sum(s.score.value for s in samples) / len(samples)
        pytest.xfail(f"{prompt_id} scored {mean:.2f}: {wrong[0].score.reason}")


@pytest.fixture(scope="session")
def weights(eval_result: EvalResult) -> str:
    """What the answers came from: the served folder's content digest, or the server's id."""
    if eval_result.summary.model:
        digest = model_digest(Path(eval_result.summary.model))["sha256"]
        return f"sha256:{digest[:16]}"
    return f"server:{eval_result.summary.model_id}"


@pytest.fixture(scope="session")
def snapshot_reference(
    weights: str, experiment: Experiment, pytestconfig: pytest.Config
) -> str | None:
    """The weights this experiment's snapshots were taken from (None: compare against them).

    With `--snapshot-update` this run becomes the reference."""
    path = REFERENCES / f"{experiment.name}.json"
    if pytestconfig.getoption("update_snapshots"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"weights": weights}, indent=2) + "\n")
        return None
    recorded = json.loads(path.read_text())["weights"] if path.is_file() else None
    return None if recorded == weights else (recorded or NONE_RECORDED)


def test_prompt_snapshot(
    prompt_id: str, eval_result: EvalResult, eval_snapshot, snapshot_reference: str | None,
    weights: str, experiment: Experiment,
) -> None:  # fmt: skip
    if snapshot_reference == NONE_RECORDED:
        pytest.skip(
            f"no reference build recorded for {experiment.name}'s snapshots; "
            "--snapshot-update makes this run the reference"
        )
    if snapshot_reference is not None:
        pytest.skip(
            f"snapshots were taken from weights {snapshot_reference}; this run's are {weights} "
            "(another machine's training or another build): drift is not compared; "
            "--snapshot-update makes this run the reference"
        )
    seen = observed(eval_result, prompt_id)
    if seen != eval_snapshot:  # syrupy records the comparison either way
        warnings.warn(
            SnapshotDrift(
                f"{prompt_id}: extracted calls or score differ from the snapshot of the same "
                f"weights {weights}: {seen}"
            ),
            stacklevel=1,
        )
