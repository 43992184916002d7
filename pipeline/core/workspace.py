"""Where one run's outputs go: the only place output paths are spelled.

The default root is the checkout (so `runs/` and `reports/` sit beside `experiments/`);
`--workdir DIR` or `ROUTEGATE_WORKDIR` moves every output there. Steps take a `Workspace`
and ask it for paths; nothing joins "runs" or "reports" onto a root by itself.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

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

    def study_report(self, experiment: str, study: str) -> tuple[Path, Path]:
        """reports/<experiment>/<study>.json and .md: a study's rows and their table."""
        folder = self.reports(experiment)
        return folder / f"{study}.json", folder / f"{study}.md"

    def study_row(self, experiment: str, row: str) -> Workspace:
        """runs/<experiment>/study/<row>/: one study row's own workspace (data, build, eval,
        preflight.json), so a confounded build never replaces the experiment's reports."""
        return Workspace(self.runs(experiment) / "study" / row)
