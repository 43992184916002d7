"""Model references and the models routegate builds itself (tiny, SmolLM2 from PyPI)."""

from __future__ import annotations

from pipeline.core.errors import BadInput


class ModelError(BadInput):
    """A model reference cannot be resolved or loaded; the message names it."""
