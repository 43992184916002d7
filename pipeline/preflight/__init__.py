"""Preflight: tokenizers, templates, data and settings -> findings, before any training.

The seed's own check (special tokens, ChatML) passed and its experiment still failed: the
training targets were written in a syntax the base model's server parser cannot read, its
template put an empty `<think>` block into every target, and mask-prompt hid many calls from
the loss. Each check renders the data exactly as `mlx_lm`'s ChatDataset does and judges what
the model would actually be trained on.

- `inputs`: tokenizer sides (`resolve_model`: a model reference with the tiny model's corpus
  handed in), data splits, renders; `context`: one experiment's inputs, each loaded lazily,
  once.
- `checks_tokens`, `checks_templates`, `checks_calls`, `checks_data`: the checks, plain
  functions of explicit values.
- `registry`: each check declared once (name, needs, subjects, how it reads the context).
- `runner`: the registry -> findings; summary text; `reports/<experiment>/preflight.json`.

`python -m pipeline preflight` (pipeline.cli.preflight), the build and `pytest tests/preflight`
all run the registry, so they record the same findings.
"""

from pipeline.preflight.context import NEEDS, Context, Need, Unavailable
from pipeline.preflight.findings import Finding, Verdict
from pipeline.preflight.inputs import (
    SIDES,
    Rendered,
    Side,
    SideName,
    load_side,
    render_examples,
    resolve_model,
)
from pipeline.preflight.registry import CHECKS, REGISTRY, Check
from pipeline.preflight.runner import (
    PreflightReport,
    RegistryError,
    explain,
    read_report,
    run_checks,
    run_preflight,
    summary,
    unloaded_input,
    write_report,
)

__all__ = [
    "CHECKS",
    "NEEDS",
    "REGISTRY",
    "SIDES",
    "Check",
    "Context",
    "Finding",
    "Need",
    "PreflightReport",
    "RegistryError",
    "Rendered",
    "Side",
    "SideName",
    "Unavailable",
    "Verdict",
    "explain",
    "load_side",
    "read_report",
    "render_examples",
    "resolve_model",
    "run_checks",
    "run_preflight",
    "summary",
    "unloaded_input",
    "write_report",
]
