"""`python -m pipeline data {generate,convert,check}`: training data from the command line.

Exit codes: 0 ok, 1 problems found (lines that could not be converted, a failed preflight),
2 bad input (one `error:` line naming the file, folder or setting).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from pipeline.cli.door import run
from pipeline.core.errors import EXIT_BAD_INPUT
from pipeline.core.options import BY_DEST, add_arguments, register
from pipeline.core.workspace import Workspace
from pipeline.data import (
    SPLITS,
    TARGETS,
    DataError,
    convert_path,
    data_dir,
    format_summary,
    generate,
    read_split,
    summarize,
)
from pipeline.definitions.catalog import CatalogError
from pipeline.definitions.experiment import ExperimentError, load_experiment, with_overrides
from pipeline.definitions.prompts import PromptError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline data",
        description="Generate, convert (and check) training data in mlx_lm's chat format.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="{generate,convert,check}")
    gen = sub.add_parser("generate", help="write train.jsonl/valid.jsonl for an experiment")
    gen.add_argument("--experiment", required=True, help="experiment name or TOML path")
    gen.add_argument(
        "--out", type=Path, default=None, help="output folder [the experiment's data folder]"
    )
    gen.add_argument(
        "--syntax",
        choices=("structured", "json", "xml"),
        default=None,
        help="how calls are stored [the experiment's data.syntax]",
    )
    gen.add_argument(
        "--mode",
        choices=("direct", "code"),
        default=None,
        help="tools called directly or through execute_code [data.mode]",
    )
    add_arguments(gen, "data")
    gen.set_defaults(func=_cmd_generate)
    conv = sub.add_parser("convert", help="rewrite a dataset's tool calls in another syntax")
    conv.add_argument("--to", required=True, choices=TARGETS)
    conv.add_argument("src", metavar="IN", type=Path, help="a .jsonl file or a data folder")
    conv.add_argument("dst", metavar="OUT", type=Path, help="the output file or folder")
    conv.set_defaults(func=_cmd_convert)
    check = sub.add_parser("check", help="run the preflight on a data folder, with counts")
    check.add_argument("folder", metavar="DIR", type=Path, help="folder with train/valid.jsonl")
    options = [BY_DEST[d] for d in ("experiment", "base_model", "reference_model", "workdir")]
    register(check.add_argument, "preflight", options)
    check.set_defaults(func=_cmd_check)
    return parser


def _cmd_check(args: argparse.Namespace) -> int:
    """The preflight's checks (the same code as tests/preflight) on the given folder."""
    from pipeline import preflight  # the top layer may use the preflight; data may not

    experiment = with_overrides(
        load_experiment(args.experiment),
        base_model=args.base_model,
        reference_model=args.reference_model,
        data=str(args.folder),
    )
    splits = {s: [e.record for e in read_split(args.folder, s)] for s in SPLITS}
    print(format_summary(summarize(splits)))
    findings = preflight.run_preflight(experiment, workspace=Workspace.at(args.workdir))
    print(preflight.explain(findings))
    return 1 if any(f.failed for f in findings) else 0


def _cmd_generate(args: argparse.Namespace) -> int:
    experiment = load_experiment(args.experiment)
    if args.out is None and experiment.data.path:
        raise DataError(
            f"{experiment.source} names its own data folder (data.path = {experiment.data.path}),"
            " which generate never overwrites: pass --out to generate elsewhere"
        )
    out = args.out if args.out is not None else data_dir(experiment, Workspace.at(args.workdir))
    start = time.perf_counter()
    counts = generate(experiment, out, syntax=args.syntax, mode=args.mode)
    seconds = time.perf_counter() - start
    syntax = args.syntax or experiment.data.syntax
    mode = args.mode or experiment.data.mode
    print(
        f"wrote {out}: "
        + ", ".join(f"{k} {v}" for k, v in counts.items())
        + f" ({syntax} calls, {mode} mode, seed {experiment.data.seed}, {seconds:.2f} s)"
    )
    splits = {s: [e.record for e in read_split(out, s)] for s in SPLITS}
    print(format_summary(summarize(splits)))
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    counts, problems = convert_path(args.src, args.dst, args.to)
    for path, count in counts.items():
        print(f"wrote {path}: {count} lines converted to {args.to}")
    for problem in problems:
        print(f"problem: {problem}", file=sys.stderr)
    if problems:
        print(f"{len(problems)} line(s) could not be converted (copied unchanged)", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m pipeline data {generate,convert,check} ...`; 0 ok, 1 problems, 2 bad input."""
    args = build_parser().parse_args(argv)

    def step() -> int:
        try:
            return args.func(args)
        except (ExperimentError, CatalogError, PromptError, OSError) as err:
            print(f"error: {err}", file=sys.stderr)
            return EXIT_BAD_INPUT

    return run(step)


if __name__ == "__main__":
    sys.exit(main())
