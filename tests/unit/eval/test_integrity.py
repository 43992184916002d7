"""Build integrity: the model judged is the model trained (pipeline.eval.integrity).

The tiny build is the gate's own (built or reused in the default workspace, as tests/eval
does), copied so that a test can replace its quantized model. Each check serves three real
mlx_lm servers (base + adapters, fused, quantized) for the 30 seed prompts: ~25 s on 2 cores.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pytest

from pipeline.builder import build
from pipeline.core.workspace import Workspace
from pipeline.definitions.experiment import load_experiment
from pipeline.definitions.prompts import EvalPrompt, load_prompts
from pipeline.eval.integrity import as_built_sample, check_integrity, read_integrity
from pipeline.preflight import resolve_model

pytestmark = pytest.mark.slow
CHECKOUT = Path(__file__).resolve().parents[3]


def _quiet(_: str) -> None:
    pass


@pytest.fixture(scope="module")
def tiny_build() -> Path:
    return build(load_experiment("tiny"), workspace=Workspace.at(), log=_quiet).run_dir


def _copy(run_dir: Path, to: Path, *, without: tuple[str, ...] = ()) -> Path:
    skip = shutil.ignore_patterns("eval", "integrity", "fused", *without)
    return Path(shutil.copytree(run_dir, to / run_dir.name, ignore=skip))


def _integrity(run_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipeline", "integrity", str(run_dir)],
        cwd=CHECKOUT,
        capture_output=True,
        text=True,
        timeout=900,
    )


def test_the_tiny_build_holds_through_fuse_and_quantize(tiny_build: Path, tmp_path: Path) -> None:
    run = _copy(tiny_build, tmp_path)
    record = check_integrity(run, log=_quiet)
    assert [s.step for s in record.steps] == ["reference", "fused", "quantized", "served"]
    assert record.passed, record.failure
    reference, fused, quantized, served = record.steps
    # The gate serves the 5-bit folder's float32 expansion on this CPU: the same function as
    # the folder as built, so the same answers (or the record names the prompts that differ).
    assert served.unlike_quantized == (), served.unlike_quantized
    assert served.routing == quantized.routing
    assert reference.routing > 0.3  # the adapters served over the base route: trained
    assert fused.agreement == 1.0  # a full fine-tune fused in float32 answers alike
    assert read_integrity(run) == record
    assert not (run / "integrity" / "fused").exists()  # the re-fused copy is not kept


def test_an_untrained_quantized_model_fails_naming_the_step(
    tiny_build: Path, tmp_path: Path
) -> None:
    from mlx_lm.convert import convert

    run = _copy(tiny_build, tmp_path, without=("quantized",))
    base = resolve_model("tiny:json", load_experiment("tiny"), workspace=Workspace.at())
    convert(hf_path=str(base), mlx_path=str(run / "quantized"), quantize=True, q_bits=5)
    done = _integrity(run)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "the quantized model routes" in done.stdout, done.stdout
    record = read_integrity(run)
    assert record is not None and record.steps[1].failure is None  # fused still held
    assert record.steps[2].failure is not None and record.steps[2].routing == 0.0


def test_a_folder_that_is_not_a_build_is_named(tmp_path: Path) -> None:
    done = _integrity(tmp_path)
    assert done.returncode == 2
    assert f"{tmp_path} is not a build (no build.json)" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_build_without_adapters_is_named(tiny_build: Path, tmp_path: Path) -> None:
    run = _copy(tiny_build, tmp_path, without=("adapters",))
    done = _integrity(run)
    assert done.returncode == 2
    assert "has no trained adapters" in done.stderr and "Traceback" not in done.stderr


def test_a_model_that_cannot_be_served_is_one_error(tiny_build: Path, tmp_path: Path) -> None:
    run = _copy(tiny_build, tmp_path)
    (run / "quantized" / "config.json").write_text("{not json")
    done = _integrity(run)
    assert done.returncode in (2, 3), done.stdout + done.stderr  # bad input or a fault, not FAIL
    assert str(run / "quantized") in done.stderr and "Traceback" not in done.stderr
    assert json.loads((run / "build.json").read_text())["complete"]


def test_a_sample_asks_the_folder_as_built_one_prompt_per_category(
    tiny_build: Path, tmp_path: Path
) -> None:
    experiment = load_experiment("tiny")
    sampled = dataclasses.replace(
        experiment, integrity=dataclasses.replace(experiment.integrity, as_built_prompts=8)
    )
    run = _copy(tiny_build, tmp_path)
    record = check_integrity(run, experiment=sampled, log=_quiet)
    reference, fused, quantized, served = record.steps
    prompts = {p.id: p for p in load_prompts(experiment.eval.prompts)}
    assert len(quantized.asked) == 8
    assert sorted(prompts[i].category for i in quantized.asked) == sorted(
        {p.category for p in prompts.values()}
    )
    assert set(quantized.disagreeing) <= set(quantized.asked)
    assert (reference.asked, fused.asked, served.asked) == ((), (), ())
    assert set(served.unlike_quantized) <= set(quantized.asked)
    assert record.as_built_prompts == 8 and read_integrity(run) == record
    # the sample's routing is the overall mean as the eval counts it: no_tool stays out
    (answers,) = (run / "integrity").glob("quantized-*/eval/scores.jsonl")
    rows = [json.loads(line) for line in answers.read_text().splitlines()]
    gated = [r["value"] for r in rows if r["category"] != "no_tool"]
    assert len(rows) == 8 and len(gated) == 7
    assert quantized.routing == pytest.approx(sum(gated) / len(gated))


@pytest.mark.parametrize(
    ("count", "expected"),
    [
        (0, ("a1", "a2", "b1", "c1", "c2")),
        (5, ("a1", "a2", "b1", "c1", "c2")),
        (9, ("a1", "a2", "b1", "c1", "c2")),
        (1, ("a1",)),
        (3, ("a1", "b1", "c1")),
        (4, ("a1", "b1", "c1", "a2")),
    ],
)
def test_the_as_built_sample_takes_one_prompt_per_category_in_turn(
    count: int, expected: tuple[str, ...]
) -> None:
    prompts = [SimpleNamespace(id=i, category=i[0]) for i in ("a1", "a2", "b1", "c1", "c2")]
    assert as_built_sample(cast("list[EvalPrompt]", prompts), count) == expected
