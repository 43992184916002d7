"""The float32 expansion a CPU build trains on holds the quantized model's own function."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.core.workspace import Workspace
from pipeline.definitions.experiment import load_experiment
from pipeline.models import ModelError
from pipeline.models.expanded import float32_expansion, is_quantized
from pipeline.preflight import resolve_model


@pytest.fixture(scope="module")
def quantized_tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mlx_lm.convert import convert

    base = resolve_model("tiny:json", load_experiment("tiny"), workspace=Workspace.at())
    out = tmp_path_factory.mktemp("q") / "tiny-4bit"
    convert(hf_path=str(base), mlx_path=str(out), quantize=True, q_bits=4, q_group_size=32)
    return out


def test_expansion_computes_what_the_quantized_model_computes(
    quantized_tiny: Path, tmp_path: Path
) -> None:
    import mlx.core as mx
    from mlx_lm import load

    expanded = float32_expansion(quantized_tiny, cache_root=tmp_path)
    assert is_quantized(quantized_tiny) and not is_quantized(expanded)
    config = json.loads((expanded / "config.json").read_text())
    assert "quantization" not in config
    tokens = mx.array([[1, 17, 42, 99, 3, 250, 7, 2]])
    logits = [load(str(folder))[0](tokens) for folder in (quantized_tiny, expanded)]
    assert logits[1].dtype == mx.float32
    assert mx.allclose(logits[0], logits[1], atol=1e-4, rtol=1e-4).item()
    # cached: a second call reuses the folder and leaves no staging folder behind
    assert float32_expansion(quantized_tiny, cache_root=tmp_path) == expanded
    assert [p.name for p in tmp_path.iterdir()] == [expanded.name]


def test_an_unquantized_base_is_its_own_expansion(tmp_path: Path) -> None:
    base = resolve_model("tiny:json", load_experiment("tiny"), workspace=Workspace.at())
    assert float32_expansion(base, cache_root=tmp_path) == base
    assert list(tmp_path.iterdir()) == []


def test_a_folder_without_config_is_named(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=f"{tmp_path}/config.json cannot be read"):
        float32_expansion(tmp_path, cache_root=tmp_path / "cache")
