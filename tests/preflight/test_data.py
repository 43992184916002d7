"""Checks beyond the seed's: call syntax, rendering, thinking, masking, consistency, data, disk."""

from __future__ import annotations

import pytest

from pipeline import preflight
from pipeline.catalog import Catalog, load_catalog
from pipeline.data import SPLITS
from pipeline.experiment import ROOT, Experiment
from pipeline.prompts import fill_system_prompt, load_prompts, system_prompt


@pytest.mark.parametrize("split", SPLITS)
def test_counts(examples, split: str, experiment: Experiment, judge) -> None:
    minimum = experiment.data.train_min if split == "train" else experiment.data.valid_min
    judge(preflight.check_counts(examples(split), split, minimum))


@pytest.mark.parametrize("split", SPLITS)
def test_lengths(rendered, split: str, experiment: Experiment, judge) -> None:
    judge(preflight.check_lengths(rendered("base", split), split, experiment.train.max_seq_length))


def test_call_syntax(side, rendered, catalog: Catalog, experiment: Experiment, judge) -> None:
    judge(
        preflight.check_call_syntax(
            side("base"), rendered("base", "train"), catalog, experiment.train.mask_prompt
        )
    )


@pytest.mark.parametrize("split", SPLITS)
def test_rendering(rendered, split: str, judge) -> None:
    judge(preflight.check_rendering(rendered("base", split), rendered("reference", split), split))


def test_thinking(side, rendered, experiment: Experiment, catalog: Catalog, judge) -> None:
    system = system_prompt(experiment, catalog)
    judge(preflight.check_thinking(side("base"), rendered("base", "train"), experiment, system))


def test_masking(examples, catalog: Catalog, experiment: Experiment, judge) -> None:
    finding, _ = preflight.check_masking(examples("train"), catalog, experiment.train.mask_prompt)
    judge(finding)


@pytest.mark.parametrize("tool", load_catalog().names())
def test_tool_is_trained(tool: str, examples, catalog: Catalog, experiment: Experiment) -> None:
    mask = experiment.train.mask_prompt
    _, per_tool = preflight.check_masking(examples("train"), catalog, mask)
    counts = per_tool[tool]
    assert counts["trained"] > 0, (
        f"{tool} is never a trained call in train.jsonl ({counts['masked_only']} examples hold "
        f"it only in masked turns; mask_prompt={mask})"
    )


@pytest.mark.parametrize("split", SPLITS)
def test_system_prompt(examples, split: str, experiment: Experiment, catalog, judge) -> None:
    variants = [fill_system_prompt(p, catalog) for p in experiment.eval.system_prompt_variants]
    expected = system_prompt(experiment, catalog)
    judge(preflight.check_system_prompt(examples(split), expected, variants, split))


def test_eval_prompts_not_in_training(examples, experiment: Experiment, catalog, judge) -> None:
    prompts = [p.text for p in load_prompts(experiment.eval.prompts, catalog)]
    judge(preflight.check_eval_overlap(examples("train") + examples("valid"), prompts))


def test_disk(experiment: Experiment, judge) -> None:
    judge(preflight.check_disk(ROOT / "runs", experiment.resources.disk_gb))
