"""`python -m pipeline STEP ...`: one door per step, each a module's own `main()`.

`gate` runs the whole line on one experiment (the README's main job).
"""

from __future__ import annotations

import importlib
import sys

STEPS = {
    "gate": "pipeline.cli.gate",
    "preflight": "pipeline.cli.preflight",
    "data": "pipeline.cli.data",
    "build": "pipeline.cli.build",
    "eval": "pipeline.cli.eval",
    "report": "pipeline.cli.report",
    "integrity": "pipeline.cli.integrity",
    "study": "pipeline.cli.study",
    "ship": "pipeline.cli.ship",
}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help") or args[0] not in STEPS:
        print(f"usage: python -m pipeline {{{','.join(STEPS)}}} ...", file=sys.stderr)
        known = args and args[0] not in ("-h", "--help")
        if known:
            print(f"unknown step {args[0]!r}", file=sys.stderr)
        return 2 if known or not args else 0
    try:
        module = importlib.import_module(STEPS[args[0]])
    except ModuleNotFoundError as err:
        if err.name != STEPS[args[0]]:
            raise
        print(f"step {args[0]!r} is not built yet in this version of routegate", file=sys.stderr)
        return 2
    return module.main(args[1:])


if __name__ == "__main__":
    sys.exit(main())
