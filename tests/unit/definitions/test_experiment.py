"""Experiment files load into typed settings, and each bad input names its file and key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pipeline.definitions.experiment import (
    EXPERIMENTS_DIR,
    ExperimentError,
    available_experiments,
    load_experiment,
    with_overrides,
)


def test_shipped_experiments_load() -> None:
    assert {"phase33b", "phase40", "tiny"} <= set(available_experiments())
    for name in available_experiments():
        load_experiment(name)


def test_phase40_states_the_seed_plan() -> None:
    exp = load_experiment("phase40")
    assert exp.models.base == "mlx-community/Qwen3-8B-4bit"
    assert exp.tokens == {
        "<|im_start|>": 151644,
        "<|im_end|>": 151645,
        "<tool_call>": 151657,
        "</tool_call>": 151658,
        "<tool_response>": 151665,
        "</tool_response>": 151666,
    }
    assert exp.data.train_min == 1150
    t = exp.train
    assert (t.num_layers, t.iters, t.batch_size, t.learning_rate) == (16, 800, 1, 1e-4)
    assert (t.grad_accumulation_steps, t.mask_prompt, t.save_every) == (4, True, 200)
    assert (t.steps_per_report, t.steps_per_eval, t.val_batches) == (10, 50, 10)
    assert exp.fuse.dequantize and exp.fuse.dtype == "float16"
    assert (exp.quantize.bits, exp.quantize.group_size) == (5, 64)
    assert exp.thresholds.as_dict() == {
        "text_tools": 0.95,
        "validation": 0.95,
        "lsp": 0.80,
        "git": 0.90,
        "cst": 0.90,
        "domain": 0.60,
        "multi_tool": 0.35,
        "overall": 0.80,
    }
    assert exp.baseline.get("overall") == 0.824 and exp.baseline.get("lsp") == 0.90
    assert load_experiment("phase33b").train.num_layers == 8


def test_experiment_is_frozen() -> None:
    exp = load_experiment("tiny")
    with pytest.raises(AttributeError):
        setattr(exp, "name", "other")  # noqa: B010 - the point is to try


def test_fingerprint_changes_with_any_setting(tmp_path: Path) -> None:
    a = _broken(tmp_path, "iters = 2000", "iters = 2000")
    b = _broken(tmp_path / "b", "iters = 2000", "iters = 2001")
    assert load_experiment(a).fingerprint() != load_experiment(b).fingerprint()


def test_overrides_replace_single_fields(tmp_path: Path) -> None:
    exp = with_overrides(load_experiment("phase40"), base_model="some/model", data=str(tmp_path))
    assert exp.models.base == "some/model"
    assert exp.models.reference == load_experiment("phase40").models.reference
    assert exp.data.path == str(tmp_path.resolve())


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _broken(tmp_path: Path, old: str, new: str) -> Path:
    """tiny.toml with one edit, written next to a copy of the fixtures it points at."""
    text = (EXPERIMENTS_DIR / "tiny.toml").read_text()
    assert old in text, f"test setup: {old!r} not in tiny.toml"
    text = text.replace("../fixtures/", f"{EXPERIMENTS_DIR.parent / 'fixtures'}/")
    tmp_path.mkdir(parents=True, exist_ok=True)
    return _write(tmp_path / "broken.toml", text.replace(old, new, 1))


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("iters = 2000", "iters = 2000\nitres = 3", r"unknown key 'train\.itres'"),
        ("iters = 2000", 'iters = "2000"', r"train\.iters must be int, got str '2000'"),
        ("learning_rate = 1e-3", "learning_rate = true", r"train\.learning_rate must be a number"),
        ("domain = 0.33", "domain = 1.5", r"thresholds\.domain = 1\.5 is outside 0\.\.1"),
        ("overall = 0.33", "overall = -0.1", r"thresholds\.overall = -0\.1 is outside 0\.\.1"),
        # Categories come from the catalog (fixtures/tools.json): a typo is no category.
        ("domain = 0.33", "domian = 0.33", r"unknown key 'thresholds\.domian'"),
        ("prompts/seed.toml", "prompts/missing.toml", r"eval\.prompts names .*missing"),
        ('score = "routing"', 'score = "vibes"', r"eval\.score = 'vibes' is not one of"),
        ('base = "tiny:json"', "", r"missing required key 'models\.base'"),
        ("[tiny]", "[tiny]\nlayers = 3", r"unknown key 'tiny\.layers'"),
        ('"<tool_call>" = 3', '"<tool_call>" = "three"', r"tokens\.<tool_call> must be int"),
        ("[tiny]", "[decision]\nmargin = 1.5\n\n[tiny]", r"decision\.margin = 1\.5 is outside"),
        (
            "[tiny]",
            "[decision]\nmargins = {lps = 0.1}\n\n[tiny]",
            r"unknown key 'decision\.margins\.lps'",
        ),
        ("[tiny]", '[decision]\nrule = "vibes"\n\n[tiny]', r"decision\.rule = 'vibes' is not one"),
        ("[data]", "[data]\nno_tool_share = 1.5", r"data\.no_tool_share = 1\.5 is outside"),
        ("[tiny]", "[integrity]\nas_built_prompts = -1\n\n[tiny]", r"as_built_prompts = -1"),
        ("iters = 2000", 'iters = 2000\nlr_schedule = "step"', r"train\.lr_schedule = 'step'"),
        ("iters = 2000", "iters = 2000\nwarmup = 10", r"train\.warmup = 10: .*lr_schedule"),
        (
            "iters = 2000",
            'iters = 2000\nlr_schedule = "cosine"\nwarmup = 2000',
            r"train\.warmup = 2000: give 0 <= warmup < iters \(2000\)",
        ),
    ],
)
def test_bad_input_names_file_and_key(tmp_path: Path, old: str, new: str, message: str) -> None:
    path = _broken(tmp_path, old, new)
    with pytest.raises(ExperimentError, match=message) as info:
        load_experiment(path)
    assert str(path) in str(info.value)


def test_unknown_experiment_lists_known_ones() -> None:
    with pytest.raises(ExperimentError, match=re.escape("known experiments: phase33b, phase40")):
        load_experiment("phase99")


def test_invalid_toml_names_file(tmp_path: Path) -> None:
    path = _write(tmp_path / "bad.toml", "name = \n")
    with pytest.raises(ExperimentError, match=r"bad\.toml: not valid TOML"):
        load_experiment(path)


def test_a_prompt_set_s_own_thresholds_are_in_force_when_it_is_asked(tmp_path: Path) -> None:
    path = _broken(tmp_path, "[tiny]", "[thresholds.sets.extended]\noverall = 0.5\n\n[tiny]")
    experiment = load_experiment(path)
    assert experiment.thresholds.sets["extended"].values == {"overall": 0.5}
    own = experiment.thresholds.values
    extended = with_overrides(experiment, prompts="extended").thresholds
    assert extended.values == {"overall": 0.5} and extended.pending == experiment.thresholds.pending
    assert with_overrides(experiment, prompts="seed").thresholds.values == own
    assert (
        load_experiment("tiny").fingerprint()
        == with_overrides(load_experiment("tiny")).fingerprint()
    )


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ("[thresholds.sets.extnded]\noverall = 0.5", r"thresholds\.sets\.extnded: no prompt set"),
        ("[thresholds.sets.extended]\nlps = 0.5", r"unknown key 'thresholds\.sets\.extended\.lps'"),
        ("[thresholds.sets.extended]\noverall = 2", r"thresholds\.sets\.extended\.overall = 2"),
    ],
)
def test_a_bad_prompt_set_threshold_names_the_key(tmp_path: Path, table: str, message: str) -> None:
    path = _broken(tmp_path, "[tiny]", f"{table}\n\n[tiny]")
    with pytest.raises(ExperimentError, match=message):
        load_experiment(path)
