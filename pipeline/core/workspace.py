"""Where one run's outputs go: the only place output paths are spelled.

The default root is the checkout (so `runs/` and `reports/` sit beside `experiments/`);
`--workdir DIR` or `ROUTEGATE_WORKDIR` moves every output there. Steps take a `Workspace`
and ask it for paths; nothing joins "runs" or "reports" onto a root by itself. Inside
`runs/<experiment>/`, one model's folder (a build's, or the eval of a given model or server)
is a `RunFolder`, whose layout is spelled here too:

    runs/<experiment>/<key>/
        build.json  build.log      the build's record and its stages' output
        adapters/  fused/  quantized/   the stages' outputs (`<name>.partial/` while running)
        integrity/integrity.json   the build-integrity check (and its own model folders)
        eval/summary.json  scores.jsonl  responses.jsonl  server.log
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

CHECKOUT = Path(__file__).resolve().parents[2]
WORKDIR_ENV = "ROUTEGATE_WORKDIR"


@dataclass(frozen=True)
class Workspace:
    root: Path

    @classmethod
    def at(cls, root: str | Path | None = None) -> Workspace:
        """The workspace at `root`, else $ROUTEGATE_WORKDIR, else the checkout."""
        chosen = root or os.environ.get(WORKDIR_ENV) or CHECKOUT
        return cls(Path(chosen).expanduser().resolve())

    @property
    def runs_root(self) -> Path:
        return self.root / "runs"

    def runs(self, experiment: str) -> Path:
        """runs/<experiment>/: builds (one folder per build key) and evals of given models."""
        return self.runs_root / experiment

    def data(self, experiment: str) -> Path:
        """The generated training data of an experiment."""
        return self.runs(experiment) / "data"

    def reports(self, experiment: str) -> Path:
        """reports/<experiment>/: preflight.json, results.{md,json,png}."""
        return self.root / "reports" / experiment

    def preflight_report(self, experiment: str) -> Path:
        return self.reports(experiment) / "preflight.json"

    def check_costs(self, experiment: str) -> Path:
        """reports/<experiment>/check_costs.json: the confound study's cost of each check."""
        return self.reports(experiment) / "check_costs.json"

    def study_report(self, experiment: str, study: str) -> tuple[Path, Path]:
        """reports/<experiment>/<study>.json and .md: a study's rows and their table."""
        folder = self.reports(experiment)
        return folder / f"{study}.json", folder / f"{study}.md"

    def study_row(self, experiment: str, row: str, seed: int | None = None) -> Workspace:
        """runs/<experiment>/study/<row>/: one study row's own workspace (data, build, eval,
        preflight.json), so a confounded build never replaces the experiment's reports. With
        `seed`, runs/<experiment>/study/<row>/seed-<seed>/: the row's training (and evals)
        with that [train] seed, one the experiment does not set."""
        folder = self.runs(experiment) / "study" / row
        return Workspace(folder if seed is None else folder / f"seed-{seed}")


StageOutput = Literal["adapters", "fused", "quantized"]
PARTIAL = ".partial"
"""The suffix of a stage's output folder while the stage runs."""


@dataclass(frozen=True)
class RunFolder:
    """One model's folder under runs/<experiment>/: the only place its layout is spelled."""

    path: Path

    @property
    def build_record(self) -> Path:
        return self.path / "build.json"

    @property
    def build_log(self) -> Path:
        """Every line a build's stages printed."""
        return self.path / "build.log"

    def output(self, name: StageOutput) -> Path:
        """A build stage's finished output folder."""
        return self.path / name

    def partial(self, name: StageOutput) -> Path:
        """A build stage's output while it runs (a resumable stage keeps it between tries)."""
        return self.path / (name + PARTIAL)

    @property
    def adapters(self) -> Path:
        return self.output("adapters")

    @property
    def quantized(self) -> Path:
        return self.output("quantized")

    @property
    def integrity(self) -> Path:
        """The build-integrity check's folder: its record and the models it made."""
        return self.path / "integrity"

    @property
    def integrity_record(self) -> Path:
        return self.integrity / "integrity.json"

    def system_prompt_variant(self, label: str) -> RunFolder:
        """The eval of the same model under another system prompt (the sweep's row)."""
        return RunFolder(self.path / "system-prompts" / label)

    def prompt_set(self, name: str) -> RunFolder:
        """The eval of the same model on another prompt set (fixtures/prompts/<name>.toml)."""
        return RunFolder(self.path / f"prompts-{name}")

    @property
    def eval(self) -> Path:
        return self.path / "eval"

    @property
    def eval_summary(self) -> Path:
        return self.eval / "summary.json"

    @property
    def eval_scores(self) -> Path:
        return self.eval / "scores.jsonl"

    @property
    def eval_responses(self) -> Path:
        return self.eval / "responses.jsonl"

    @property
    def server_log(self) -> Path:
        return self.eval / "server.log"
