"""The one table of routegate's options: it feeds argparse (every `python -m pipeline STEP`) and
pytest (`pytest_addoption` in pipeline.pytest_plugin), so a name, default and help text are
stated once and the doors cannot drift apart.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

Step = Literal["preflight", "data", "build", "eval", "gate", "study"]
ALL_STEPS: tuple[Step, ...] = ("preflight", "data", "build", "eval", "gate", "study")
_AFTER_DATA: tuple[Step, ...] = ("preflight", "build", "eval", "gate", "study")
_EVAL: tuple[Step, ...] = ("eval", "gate")


@dataclass(frozen=True)
class Option:
    flag: str
    """The long flag, e.g. "--base-model"; its dest is the flag's words joined by "_"."""
    help: str
    kind: Literal["value", "int", "switch", "list", "repeat"] = "value"
    """"list": one or more values, the flag repeatable (`--only a b --only c`). "repeat": one
    value per flag, the flag repeatable (`--server-url A --server-url B`): a list, or None."""
    default: Any = None
    metavar: str | None = None
    path: bool = False
    """The value is a filesystem path: pytest must never take it for a test path."""
    steps: tuple[Step, ...] = ALL_STEPS

    @property
    def dest(self) -> str:
        return self.flag.removeprefix("--").replace("-", "_")


OPTIONS: tuple[Option, ...] = (
    Option(
        "--experiment",
        "experiment name (experiments/NAME.toml) or path to a TOML file [smol-route]",
        default="smol-route",
        metavar="NAME|PATH",
        path=True,
        steps=_AFTER_DATA,
    ),
    Option(
        "--base-model",
        "hub id or folder replacing models.base",
        metavar="ID|DIR",
        path=True,
        steps=_AFTER_DATA,
    ),
    Option(
        "--reference-model",
        "hub id or folder replacing models.reference",
        metavar="ID|DIR",
        path=True,
        steps=_AFTER_DATA,
    ),
    Option(
        "--data",
        "folder with train.jsonl and valid.jsonl [generated]",
        metavar="DIR",
        path=True,
        steps=_AFTER_DATA,
    ),
    Option(
        "--workdir",
        "where runs/ and reports/ go [the checkout, or $ROUTEGATE_WORKDIR]",
        metavar="DIR",
        path=True,
    ),
    Option(
        "--model",
        "a fused model folder to evaluate (no build)",
        metavar="DIR",
        path=True,
        steps=_EVAL,
    ),
    Option(
        "--server-url",
        "an OpenAI-compatible server to evaluate, http://host:port[/v1] (no build); repeat it "
        "to spread the requests over several servers of the same model",
        kind="repeat",
        metavar="URL",
        steps=_EVAL,
    ),
    Option(
        "--samples", "samples per prompt [the experiment's]", kind="int", metavar="N", steps=_EVAL
    ),
    Option(
        "--temperature",
        "temperature, or a comma-separated sweep whose first decides [the experiment's]",
        metavar="T[,T2...]",
        steps=_EVAL,
    ),
    Option(
        "--concurrency",
        "requests in flight at once [the experiment's]",
        kind="int",
        metavar="N",
        steps=_EVAL,
    ),
    Option(
        "--prompts",
        "eval prompt set: fixtures/prompts/NAME.toml or a path [the experiment's]",
        metavar="NAME|PATH",
        path=True,
        steps=_EVAL,
    ),
    Option(
        "--baseline-run",
        "an earlier eval's run folder to compare with, prompt by prompt [the experiment's]",
        metavar="RUN_DIR",
        path=True,
        steps=_EVAL,
    ),
    Option(
        "--system-prompt",
        "also run the eval under this system prompt (repeat it for several) and write the "
        "spread of each category's score across them to reports/<experiment>/system_prompts.md",
        kind="repeat",
        metavar="PATH",
        path=True,
        steps=_EVAL,
    ),
    Option(
        "--decide",
        "what the verdict rests on: thresholds, or non-inferiority (within the [decision] "
        "margins, against --baseline-run) [the experiment's]",
        metavar="RULE",
        steps=_EVAL,
    ),
    Option(
        "--require-decidable",
        "a pass whose 95% interval reaches below its threshold fails [the experiment's]",
        kind="switch",
        default=False,
        steps=_EVAL,
    ),
    Option(
        "--no-integrity",
        "skip the build-integrity check after a build (base + adapters vs fused vs quantized)",
        kind="switch",
        default=False,
        steps=("build", "eval", "gate"),
    ),
    Option(
        "--force",
        "build even when the preflight fails (the report still records the failure)",
        kind="switch",
        default=False,
        steps=("build", "eval", "gate"),
    ),
    Option(
        "--retrain",
        "train the adapter afresh with the experiment's recipe instead of using the adapter "
        "it ships ([train] adapter)",
        kind="switch",
        default=False,
        steps=("build", "eval", "gate", "study"),
    ),
    Option(
        "--launch-processes",
        "train data-parallel in N local processes under mlx.launch (ring backend); 1: one "
        "process, no launch [the experiment's [train.launch]]",
        kind="int",
        metavar="N",
        steps=("build", "eval", "gate"),
    ),
    Option(
        "--launch-hostfile",
        "train data-parallel under mlx.launch on the hosts of this mlx.launch hostfile, one "
        "rank per host [the experiment's [train.launch]]",
        metavar="PATH",
        path=True,
        steps=("build", "eval", "gate"),
    ),
    Option(
        "--only",
        "study only these confounds (the clean row always runs) [every confound]",
        kind="list",
        metavar="CONFOUND",
        steps=("study",),
    ),
    Option(
        "--also-prompts",
        "comma-separated prompt sets (fixtures/prompts/NAME.toml) to judge every row's models "
        "on as well, each compared with the clean row [the experiment's set only]",
        metavar="NAME[,NAME...]",
        steps=("study",),
    ),
    Option(
        "--seeds",
        "train the clean row N times ([train] seed: the experiment's, +1, ...) and each row "
        "that retrains until its difference from the clean row is decided by trainings, at "
        "most N times, not only by the prompts of one training [1]",
        kind="int",
        default=1,
        metavar="N",
        steps=("study",),
    ),
    Option(
        "--resume-from",
        "an earlier study's rows (its reports/NAME/confounds.json, or the copy "
        "benchmarks/confound_table.py --take checks in): a training they judged is taken from "
        "them, matched by the build key of the model this study would build, not trained and "
        "judged again, and the rows --only leaves out are kept as they were [none: every "
        "training is built here or found in --workdir]",
        metavar="PATH",
        path=True,
        steps=("study",),
    ),
)

BY_DEST = {o.dest: o for o in OPTIONS}


def register(add: Callable[..., Any], step: Step, options: Sequence[Option] = OPTIONS) -> None:
    """Declare the options of `step` through `add` (argparse's `add_argument` or pytest's
    `OptionGroup.addoption`: both take argparse's keywords)."""
    for option in options:
        if step not in option.steps:
            continue
        help_text = option.help.replace("%", "%%")  # argparse %-formats help: "95% interval"
        if option.kind == "switch":
            add(option.flag, action="store_true", default=option.default, help=help_text)
            continue
        if option.kind == "list":
            add(
                option.flag,
                nargs="+",
                action="extend",
                default=option.default,
                metavar=option.metavar,
                help=help_text,
            )
            continue
        if option.kind == "repeat":
            # One value per flag (no nargs): a value after it stays a free argument, as for
            # every single-valued option.
            add(
                option.flag,
                action="append",
                default=option.default,
                metavar=option.metavar,
                help=help_text,
            )
            continue
        add(
            option.flag,
            type=int if option.kind == "int" else str,
            default=option.default,
            metavar=option.metavar,
            help=help_text,
        )


def add_arguments(parser: argparse.ArgumentParser, step: Step) -> None:
    register(parser.add_argument, step)


def joined(args: Sequence[str]) -> list[str]:
    """`args` with every path-valued option written `--flag=value`.

    pytest picks its rootdir and ini file from the arguments it cannot parse yet, before any
    plugin declares these options; a separate value that is a path outside the checkout would
    decide where it looks (shared notes: the rootdir trap). Joined, the value is never a path
    argument.
    """
    flags = {o.flag for o in OPTIONS if o.kind != "switch"}
    out: list[str] = []
    it = iter(args)
    for arg in it:
        if arg in flags:
            value = next(it, None)
            out.append(arg if value is None else f"{arg}={value}")
        else:
            out.append(arg)
    return out
