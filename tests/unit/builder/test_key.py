"""The build key's model digest: the model's files, not the cache's notes about making them."""

from __future__ import annotations

from pathlib import Path

from pipeline.builder.key import model_digest
from pipeline.models.cache import MARKER


def _folder(root: Path, name: str, config: str, made_in: str) -> Path:
    folder = root / name
    folder.mkdir()
    (folder / "config.json").write_text(config)
    (folder / "model.safetensors").write_bytes(b"\0" * 64)
    (folder / MARKER).write_text(f'{{"seconds": {made_in}}}')
    return folder


def test_the_same_model_made_twice_has_one_digest(tmp_path: Path) -> None:
    """A fresh model cache converts the base again in another time: still the same base, so
    an adapter shipped for it is accepted (its record names this digest)."""
    once = _folder(tmp_path, "a", '{"model_type": "llama"}', "0.583")
    again = _folder(tmp_path, "b", '{"model_type": "llama"}', "0.685")
    assert model_digest(once) == model_digest(again)


def test_another_model_has_another_digest(tmp_path: Path) -> None:
    one = _folder(tmp_path, "a", '{"model_type": "llama"}', "0.5")
    other = _folder(tmp_path, "b", '{"model_type": "qwen3"}', "0.5")
    assert model_digest(one) != model_digest(other)
