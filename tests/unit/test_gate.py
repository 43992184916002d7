"""The gate's line (pipeline.gate): one invocation read from the options, honoured by every door.

An option a door declares and the line ignores is a promise the door breaks (`python -m
pipeline eval --no-integrity` was declared and never read). Here every option of the eval and
gate doors, set to a value other than its default, must change the invocation those doors
build: its own fields, or the experiment it carries.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from pipeline.cli.door import parser
from pipeline.core.errors import BadInput
from pipeline.core.options import OPTIONS, Option, Step
from pipeline.core.workspace import CHECKOUT
from pipeline.definitions.experiment import ExperimentError
from pipeline.gate import Invocation, ModelUnderTest, model_under_test, sweep_system_prompts
from tests.unit.fake_http import FakeHandler, serving


def _values(tmp_path: Path) -> dict[str, list[str]]:
    """A value for each option other than its default (the command line after the flag)."""
    folder = tmp_path / "folder"
    folder.mkdir(exist_ok=True)
    prompt = tmp_path / "terse.md"
    prompt.write_text("Call tools.")
    shipping = tmp_path / "shipping.toml"  # --retrain matters only where an adapter ships
    tiny = (CHECKOUT / "experiments" / "tiny.toml").read_text().replace('"../', f'"{CHECKOUT}/')
    shipping.write_text(tiny.replace("[train]\n", f"[train]\nadapter = '{folder}'\n", 1))
    hostfile = tmp_path / "hosts.json"
    hostfile.write_text('[{"ssh": "a", "ips": ["10.0.0.1"]}, {"ssh": "b", "ips": ["10.0.0.2"]}]')
    return {
        "--experiment": ["smol"],
        "--base-model": [str(folder)],
        "--reference-model": [str(folder)],
        "--data": [str(folder)],
        "--workdir": [str(tmp_path / "work")],
        "--model": [str(folder)],
        "--server-url": ["http://127.0.0.1:9"],
        "--samples": ["3"],
        "--temperature": ["0.5,0"],
        "--concurrency": ["4"],
        "--prompts": ["extended"],
        "--baseline-run": [str(folder)],
        "--decide": ["non-inferiority"],
        "--system-prompt": [str(prompt)],
        "--require-decidable": [],
        "--no-integrity": [],
        "--force": [],
        "--retrain": [],
        "--launch-processes": ["2"],
        "--launch-hostfile": [str(hostfile)],
    }


def _invocation(step: Step, argv: list[str]) -> Invocation:
    args: argparse.Namespace = parser(step, "test").parse_args(argv)
    return Invocation.from_options(lambda name: getattr(args, name, None))


def _declared(step: Step) -> list[Option]:
    return [o for o in OPTIONS if step in o.steps]


@pytest.mark.parametrize("step", ["eval", "gate"])
def test_every_option_a_door_declares_changes_its_invocation(step: Step, tmp_path: Path) -> None:
    values = _values(tmp_path)
    for option in _declared(step):
        assert option.flag in values, f"no test value for {option.flag}: add one above"
        base = (
            ["--experiment", str(tmp_path / "shipping.toml")]
            if option.flag != "--experiment"
            else []
        )
        default = _invocation(step, base)
        given = _invocation(step, [*base, option.flag, *values[option.flag]])
        assert given != default, f"{step}: {option.flag} is declared and changes nothing"


@pytest.mark.parametrize(
    ("argv", "field", "expected"),
    [
        ([], "integrity", True),
        (["--no-integrity"], "integrity", False),
        ([], "force", False),
        (["--force"], "force", True),
        (["--samples", "3"], "samples", 3),
        (["--concurrency", "4"], "concurrency", 4),
        (["--temperature", "0.5,0"], "temperatures", "0.5,0"),
        (
            ["--server-url", "http://a:1", "--server-url", "http://b:2"],
            "server_urls",
            ("http://a:1", "http://b:2"),
        ),
    ],
)
def test_the_invocation_reads_each_option_as_given(
    argv: list[str], field: str, expected: object
) -> None:
    assert getattr(_invocation("eval", argv), field) == expected


def test_an_unknown_experiment_is_bad_input_naming_it() -> None:
    with pytest.raises(ExperimentError, match="nope"):
        _invocation("eval", ["--experiment", "nope"])


def test_a_given_folder_that_is_no_model_is_named_before_anything_runs(tmp_path: Path) -> None:
    invocation = _invocation("eval", ["--model", str(tmp_path), "--workdir", str(tmp_path)])
    with pytest.raises(BadInput, match=f"{tmp_path} is not a model folder"):
        model_under_test(invocation, log=lambda _: None)


def test_a_given_model_folder_is_judged_in_a_folder_keyed_by_its_content(
    model_dir: Path, tmp_path: Path
) -> None:
    argv = ["--experiment", "tiny", "--model", str(model_dir), "--workdir", str(tmp_path)]
    invocation = _invocation("eval", argv)
    model = model_under_test(invocation, log=lambda _: None)
    assert model == ModelUnderTest(model.run_dir, model_dir.resolve())
    assert model.run_dir.parent == invocation.workspace.runs("tiny")
    assert model.run_dir.name.startswith("model-")


def test_a_system_prompt_sweep_reports_each_prompts_scores_and_their_spread(
    tmp_path: Path,
) -> None:
    """A canned server that calls read_file when the system prompt mentions files and
    git_status otherwise: the sweep's table shows text_tools move with the system prompt."""
    other = tmp_path / "git-first.md"
    other.write_text("You are a git assistant. Call the one tool that fits.")

    class Handler(FakeHandler):
        def do_GET(self) -> None:
            self.send_json({"object": "list", "data": [{"id": "canned"}]})

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            system = body["messages"][0]["content"]
            name = "git_status" if "git assistant" in system else "read_file"
            call = {"type": "function", "function": {"name": name, "arguments": "{}"}}
            message = {"role": "assistant", "content": None, "tool_calls": [call]}
            self.send_json({"choices": [{"message": message, "finish_reason": "tool_calls"}]})

    with serving(Handler) as url:
        argv = ["--experiment", "tiny", "--server-url", url, "--system-prompt", str(other)]
        invocation = _invocation("eval", [*argv, "--workdir", str(tmp_path)])
        model = model_under_test(invocation, log=lambda _: None)
        path = sweep_system_prompts(invocation, model, log=lambda _: None)
    assert path == invocation.workspace.reports("tiny") / "system_prompts.md"
    table = json.loads(path.with_suffix(".json").read_text())
    own, git = table["variants"]
    assert own["system_prompt"].endswith("direct.md") and git["system_prompt"].endswith(
        "git-first.md"
    )
    assert own["categories"]["git"] == 0.0 and git["categories"]["git"] > 0.0
    assert table["spread"]["git"] == git["categories"]["git"]
    assert "| **spread** |" in path.read_text()
    variant_runs = list((model.run_dir / "system-prompts").iterdir())
    assert [p.name.startswith("git-first-") for p in variant_runs] == [True]


def test_a_missing_system_prompt_is_bad_input_naming_it(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match=r"--system-prompt .*nope\.md: no such file"):
        _invocation("eval", ["--system-prompt", str(tmp_path / "nope.md")])
