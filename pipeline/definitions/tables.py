"""The tables an experiment file holds ([models], [data], [train], [eval], [thresholds], ...),
each a frozen dataclass whose fields are the table's keys, with their defaults and meanings.

pipeline.definitions.experiment composes them into an `Experiment`, loads and checks the file
and applies command-line overrides; this module is only what each table declares.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pipeline.core.errors import BadInput

ROOT = Path(__file__).resolve().parents[2]
EXPERIMENTS_DIR = ROOT / "experiments"
PROMPTS_DIR = ROOT / "fixtures" / "prompts"
"""Eval prompt sets by name (`--prompts NAME`)."""
SHARED = Path(os.environ.get("ROUTEGATE_SHARED", ROOT.parent / "shared"))
"""Read-only material beside the checkout: real Qwen3 tokenizers, notes, the seed plan."""

OVERALL = "overall"
"""The score over every gated category's prompts; the categories come from the catalog."""

CallSyntax = Literal["structured", "json", "xml"]
CallMode = Literal["direct", "code"]
ScoreName = Literal["routing", "arguments", "seed"]


class ExperimentError(BadInput):
    """An experiment file (or an override) is invalid; the message names the file and key."""


@dataclass(frozen=True)
class Models:
    base: str
    """Hub id, local folder, or `tiny:json` / `tiny:xml` for the embedded tiny model."""
    reference: str
    """The model the base is meant to replace; its tokenizer and template are the yardstick."""
    base_revision: str = ""
    reference_revision: str = ""


DEFAULT_NO_TOOL_SHARE = 0.10


@dataclass(frozen=True)
class Data:
    train_min: int
    valid_min: int
    path: str = ""
    """A folder with train.jsonl and valid.jsonl; empty means `runs/<name>/data`, generated."""
    train_count: int = 1159
    valid_count: int = 123
    seed: int = 0
    syntax: CallSyntax = "structured"
    mode: CallMode = "direct"
    phrasings: tuple[Path, ...] = ()
    """More phrasings for the generator: files whose [requests] and [no_tool] lists extend
    fixtures/data_templates.toml's (relative to the experiment file)."""
    no_tool_share: float = DEFAULT_NO_TOOL_SHARE
    """The share of examples that need no tool; the other kinds keep their proportions."""


@dataclass(frozen=True)
class Launch:
    """[train.launch]: train data-parallel under `mlx.launch` (ring backend unless the hostfile
    names another). The default is no launch: one process, as without the table.

    mlx_lm splits each batch of `batch_size` across the ranks (rank r takes examples r, r + N,
    ...; mlx_lm.tuner.trainer.iterate_batches) and averages their gradients, so the effective
    batch stays `batch_size` and it must be a multiple of the ranks."""

    processes: int = 1
    """Local processes (`mlx.launch -n N`)."""
    hostfile: Path | None = None
    """An mlx.launch hostfile (JSON: `{"hosts": [{"ssh": ..., "ips": [...]}, ...]}` or the bare
    list); one rank per host. Relative to the experiment file's folder."""

    @property
    def launched(self) -> bool:
        """Training runs under mlx.launch (a hostfile of one remote host too)."""
        return self.processes != 1 or self.hostfile is not None

    def ranks(self) -> int:
        """How many processes train: `processes`, or the hostfile's hosts."""
        return hostfile_ranks(self.hostfile) if self.hostfile is not None else self.processes


def hostfile_ranks(path: Path, where: str = "[train.launch]") -> int:
    """The number of hosts in an mlx.launch hostfile (mlx/_distributed_utils/common.py's
    format); a missing or malformed file is an ExperimentError naming it after `where`."""
    if not path.is_file():
        raise ExperimentError(
            f"{where}: hostfile {path} does not exist; write an mlx.launch hostfile there "
            '(README: "Training on two Macs with a hostfile") or leave the hostfile out'
        )
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        hosts = raw["hosts"] if isinstance(raw, dict) else raw
        if not isinstance(hosts, list) or not hosts:
            raise ValueError("it lists no hosts")
        for i, host in enumerate(hosts):
            if not isinstance(host, dict) or not isinstance(host.get("ssh"), str):
                raise ValueError(f'host {i} has no "ssh" name')
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as err:
        raise ExperimentError(
            f"{where}: hostfile {path} is not an mlx.launch hostfile ({err}); expected JSON "
            'such as {"hosts": [{"ssh": "mac1.local", "ips": ["192.168.1.10"]}, ...]}'
        ) from err
    return len(hosts)


def check_launch(train: Train, where: str) -> None:
    """A launch layout mlx_lm can train with; else an ExperimentError naming `where` (the
    file and table, or the command-line option) and what to do."""
    launch = train.launch
    if launch.processes < 1:
        raise ExperimentError(f"{where}: processes must be at least 1, got {launch.processes}")
    if launch.hostfile is not None and launch.processes != 1:
        raise ExperimentError(
            f"{where}: give processes or hostfile, not both (a hostfile starts one rank per host)"
        )
    ranks = launch.processes
    if launch.hostfile is not None:
        ranks = hostfile_ranks(launch.hostfile, where)
    if train.batch_size % ranks != 0:
        raise ExperimentError(
            f"{where}: {ranks} ranks cannot split batch_size {train.batch_size}: mlx_lm gives "
            "each rank batch_size / ranks examples of every batch, so make batch_size a "
            "multiple of the ranks (and lower grad_accumulation_steps to keep the examples per "
            "optimizer step)"
        )


@dataclass(frozen=True)
class Train:
    fine_tune_type: Literal["lora", "dora", "full"] = "lora"
    num_layers: int = 16
    iters: int = 800
    batch_size: int = 1
    learning_rate: float = 1e-4
    grad_accumulation_steps: int = 4
    mask_prompt: bool = True
    save_every: int = 200
    steps_per_report: int = 10
    steps_per_eval: int = 50
    val_batches: int = 10
    max_seq_length: int = 2048
    lora_rank: int = 8
    lora_scale: float = 20.0
    lora_dropout: float = 0.0
    lr_schedule: Literal["constant", "cosine"] = "constant"
    """"cosine": after `warmup` steps rising linearly from 0, the learning rate falls along a
    cosine from `learning_rate` to 0 at `iters` (mlx's cosine_decay), so the last steps move
    the weights little and the model that ships is less the luck of its last batches."""
    warmup: int = 0
    """Steps of linear warmup before the schedule (only with a schedule other than constant)."""
    seed: int = 0
    dequantize_base: bool = False
    """Train (and fuse) on the quantized base's float32 expansion, the same weights, because
    mlx's quantized matmul is ~14x slower on CPUs (pipeline/models/expanded.py)."""
    launch: Launch = Launch()
    """[train.launch]: data-parallel training under mlx.launch; the default, one process."""
    adapter: Path | None = None
    """A shipped adapter folder (pipeline/builder/shipped.py) the train stage uses instead of
    training, relative to the experiment file; `--retrain` trains afresh with this recipe."""


@dataclass(frozen=True)
class Fuse:
    dequantize: bool = True
    dtype: Literal["float16", "bfloat16", "float32"] = "float16"


@dataclass(frozen=True)
class Quantize:
    bits: int = 5
    group_size: int = 64
    dtype: Literal["float16", "bfloat16", "float32"] = "float16"


@dataclass(frozen=True)
class Eval:
    prompts: Path
    system_prompt: Path
    """Text file; `{tool_stubs}` and `{tool_list}` are filled from the catalog."""
    system_prompt_variants: tuple[Path, ...] = ()
    """Other system prompts declared equivalent for the train/eval consistency check."""
    temperatures: tuple[float, ...] = (0.0,)
    samples: int = 1
    max_tokens: int = 512
    enable_thinking: bool | None = None
    """Passed to the chat template; None leaves the template's default."""
    stop: tuple[str, ...] = ()
    score: ScoreName = "routing"
    seed: int = 0
    concurrency: int = 32
    """Requests in flight at once, and what routegate's own server batches. Measured on 2 CPU
    cores (benchmarks/eval.py, a 5-bit SmolLM2-135M served as its float32 expansion, the
    seed's 30 requests): 4 in flight 74 s, 8 58 s, 16 49 s, 32 37 s; in-process
    batch_generate of all 30 at once 33 s."""
    timeout_s: float = 120.0
    """The most one request may wait, whatever its max_tokens (pipeline.eval.client's
    request_timeout derives a shorter wait from them)."""
    require_decidable: bool = False
    """A pass whose 95% interval reaches below the threshold fails (pre-registered strictness)."""
    baseline_run: str = ""
    """An earlier eval's run folder to compare with, prompt by prompt (paired); relative to
    this file's folder; "" for none. `--baseline-run` replaces it."""


@dataclass(frozen=True)
class Scores:
    """Scores in 0..1 keyed by category (the catalog's, fixtures/tools.json) or `overall`.

    A category the table leaves out has no score here: for thresholds, it is not gated.
    """

    values: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, float]:
        """The scores alone, without a subclass's extra fields."""
        return dict(self.values)

    def get(self, name: str) -> float | None:
        return self.values.get(name)


@dataclass(frozen=True)
class Thresholds(Scores):
    pending: bool = False
    """True while the thresholds are not yet pre-registered from measurements: gates skip."""
    sets: dict[str, Scores] = field(default_factory=dict)
    """[thresholds.sets.NAME]: thresholds pre-registered for another shipped prompt set
    (fixtures/prompts/NAME.toml), in force when the eval asks it (`--prompts NAME`); the table's
    own scores are for the experiment's [eval] prompts."""


@dataclass(frozen=True)
class Baseline(Scores):
    name: str = ""


@dataclass(frozen=True)
class Regression:
    """ "No catastrophic regression in any category" against the baseline run, pre-registered."""

    max_drop: float | None = None
    """A category fails when its paired 95% interval does not rule out a drop larger than this
    (this run minus the baseline run); None: no such criterion."""


DecisionRule = Literal["thresholds", "non-inferiority"]
DECISION_RULES: tuple[DecisionRule, ...] = ("thresholds", "non-inferiority")


@dataclass(frozen=True)
class Decision:
    """How the verdict is reached ([decision]): against the pre-registered thresholds, or
    "can the candidate replace the baseline run?" within pre-registered margins."""

    rule: DecisionRule = "thresholds"
    """"non-inferiority": the verdict rests on the paired comparison with the baseline run
    (`--baseline-run` or [eval] baseline_run) within each margin; the thresholds are shown."""
    margin: float | None = None
    """The margin of every gated category (those with a threshold; overall when none has)."""
    margins: dict[str, float] = field(default_factory=dict)
    """Margins per category (or overall), beside or instead of `margin`."""

    def margins_for(self, thresholds: Thresholds) -> dict[str, float]:
        """Each decided category's margin."""
        out: dict[str, float] = {}
        if self.margin is not None:
            gated = list(thresholds.as_dict()) or [OVERALL]
            out = dict.fromkeys(gated, self.margin)
        return {**out, **self.margins}


@dataclass(frozen=True)
class Integrity:
    """The build-integrity check (pipeline.eval.integrity): base + adapters vs fused vs
    quantized, each asked every prompt greedily. A step fails below either bound."""

    after_build: bool = True
    """Run after every build (the gate's and `python -m pipeline build`'s); off: --no-integrity."""
    max_drop: float = 0.15
    """Largest allowed fall of a step's routing below the reference's (a share, 0..1)."""
    as_built_prompts: int = 0
    """Where the gate serves the quantized folder's float32 expansion (mlx's CPU backend), how
    many prompts the `quantized` step asks of the folder as built, one per category in turn
    (0: all). Its quantized matmul runs at ~7 tokens/s there, so asking all of them is most of
    a CPU gate's minutes; the expansion computes the same function, and the sample checks that
    it answers as the folder does."""
    min_agreement: float = 0.5
    """Smallest allowed share of prompts whose calls equal the reference's.

    Measured (2026-12-01, greedy, seed prompts): tiny's fused model agrees on 100%, its 5-bit
    model on 63% with routing 40% against the reference's 47% (a 128-wide model moves under
    5-bit rounding); its untrained base quantized to 5 bits routes 0% and fails on max_drop."""


@dataclass(frozen=True)
class Resources:
    disk_gb: float
    expected_minutes: float
    memory_gb: float = 0.0


@dataclass(frozen=True)
class TinyModel:
    """Shape of the embedded tiny Qwen3 model (only the tiny experiment has one)."""

    seed: int = 0
    vocab_size: int = 2048
    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    head_dim: int = 32
    intermediate_size: int = 256
    max_position_embeddings: int = 4096
