"""`python -m pipeline preflight`: every check of the registry, the summary, preflight.json.

Exit 0 when no check fails, 1 when one does, 2 for an experiment or option that cannot be used
or an input (model, tokenizer, data) that does not load.
"""

from __future__ import annotations

import argparse
import sys

from pipeline.cli.door import parser, run, selected
from pipeline.core.errors import EXIT_FAIL, EXIT_PASS
from pipeline.preflight import explain, run_preflight, unloaded_input, write_report


def main(argv: list[str] | None = None) -> int:
    args = parser(
        "preflight", "Check tokenizers, templates, data and settings before training."
    ).parse_args(argv)
    return run(lambda: preflight(args))


def preflight(args: argparse.Namespace) -> int:
    experiment, workspace = selected(args)
    findings = run_preflight(experiment, workspace=workspace)
    print(explain(findings))
    print(f"report: {write_report(experiment, findings, workspace)}")
    unloaded = unloaded_input(findings)
    if unloaded is not None:
        raise unloaded
    return EXIT_FAIL if any(f.failed for f in findings) else EXIT_PASS


if __name__ == "__main__":
    sys.exit(main())
