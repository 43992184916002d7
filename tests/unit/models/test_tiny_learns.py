"""The tiny experiment's verdict is an outcome: trained it passes, untrained or masked it fails.

tests/eval runs the gate on the tiny experiment and its pre-registered thresholds pass. These
tests show the thresholds are not a formality: the same eval fails the untrained base, and it
fails a model trained exactly like the real one except that every tool call sits in a masked
turn. A third test keeps the LoRA path, which the real experiments use and the tiny one does
not, covered: a few LoRA steps on the tiny base, fused, change exactly the adapted weights.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from pipeline.builder import BuildRefused, build
from pipeline.core.workspace import Workspace
from pipeline.data import ensure_data
from pipeline.definitions.catalog import load_catalog
from pipeline.definitions.experiment import Experiment, load_experiment, with_overrides
from pipeline.eval.records import EvalSummary
from pipeline.eval.run import OVERALL, run_eval
from pipeline.preflight import load_side, resolve_model
from pipeline.study.inject import BaseTemplate, Clean, calls_in_masked_turns


def _quiet(_: str) -> None:
    pass


def _failed_everywhere(summary: EvalSummary, experiment: Experiment) -> list[str]:
    """The gated categories that passed at the decision temperature (none, for a failing model)."""
    rows = summary.decision().categories
    return [name for name in experiment.thresholds.as_dict() if rows[name].passed]


@pytest.mark.slow
def test_the_untrained_tiny_base_fails_every_threshold(tmp_path: Path) -> None:
    tiny = load_experiment("tiny")
    assert not tiny.thresholds.pending, "tiny's thresholds are pre-registered"
    model = resolve_model("tiny:json", tiny, workspace=Workspace.at())
    result = run_eval(tiny, tmp_path, model_dir=model, log=_quiet)
    assert result.summary.verdict == "FAIL"
    assert _failed_everywhere(result.summary, tiny) == []
    assert result.decision().categories[OVERALL].mean == tiny.baseline.get(OVERALL)


@pytest.mark.slow
def test_a_model_trained_with_its_calls_masked_fails_too(tmp_path: Path) -> None:
    """Same base, data, settings and iterations as the tiny experiment; calls never trained."""
    tiny = load_experiment("tiny")
    # the confound study's own `masked` injection (pipeline/study/inject.py)
    checkout = Workspace.at()
    base = BaseTemplate.of(load_side(tiny, "base", checkout))
    clean = Clean(tiny, ensure_data(tiny, workspace=checkout), base)
    masked = calls_in_masked_turns(clean, tmp_path / "data")
    masked = dataclasses.replace(masked, name="tiny-masked")

    # The preflight sees it (no trained target holds a call; no tool is ever trained: each of
    # the 26 tool-trained findings fails, now that every door runs the whole registry) and
    # refuses; forced, the build trains what the data says, for the eval to judge.
    with pytest.raises(BuildRefused, match="masking") as refused:
        build(masked, workspace=Workspace(tmp_path), log=_quiet)
    failed = [f for f in refused.value.findings if f.failed]
    assert {f.check for f in failed} == {"call-syntax", "masking", "tool-trained"}
    assert sum(f.check == "tool-trained" for f in failed) == len(load_catalog().tools)

    built = build(masked, force=True, workspace=Workspace(tmp_path), log=_quiet)
    assert built.record.stages.train is not None
    assert built.record.stages.train.iters == tiny.train.iters
    result = run_eval(masked, built.run_dir, model_dir=built.quantized, log=_quiet)
    assert result.summary.verdict == "FAIL"
    assert _failed_everywhere(result.summary, masked) == []
    assert result.decision().categories[OVERALL].mean < tiny.thresholds.as_dict()[OVERALL]


@pytest.mark.slow
def test_lora_steps_on_the_tiny_base_change_exactly_the_adapted_weights(tmp_path: Path) -> None:
    import mlx.core as mx

    tiny = load_experiment("tiny")
    assert tiny.tiny is not None
    lora = dataclasses.replace(
        tiny.train,
        fine_tune_type="lora",
        num_layers=1,
        lora_rank=4,
        iters=8,
        batch_size=2,
        save_every=1000,
        steps_per_report=4,
        steps_per_eval=1000,
        val_batches=1,
    )
    data = ensure_data(tiny, workspace=Workspace.at())
    experiment = with_overrides(
        dataclasses.replace(tiny, name="tiny-lora", train=lora), data=str(data)
    )
    built = build(experiment, keep_fused=True, workspace=Workspace(tmp_path), log=_quiet)
    assert built.fused is not None
    assert built.record.stages.fuse is not None
    assert built.record.stages.fuse.nothing_to_merge is False

    def weights(folder: Path) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for path in sorted(folder.glob("*.safetensors")):
            loaded = mx.load(str(path))
            assert isinstance(loaded, dict)
            out.update(loaded)
        return out

    base = weights(resolve_model("tiny:json", tiny, workspace=Workspace.at()))
    fused = weights(built.fused)
    assert fused.keys() == base.keys()
    last = tiny.tiny.num_layers - 1  # num_layers=1 adapts the last block's linear layers
    adapted = {
        name
        for name, value in base.items()
        if name.startswith(f"model.layers.{last}.") and name.endswith("_proj.weight")
    }
    assert len(adapted) == 7  # q, k, v, o, gate, up, down
    changed = {name for name in base if not mx.array_equal(base[name], fused[name]).item()}
    assert changed == adapted
