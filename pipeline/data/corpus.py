"""The text the tiny model's tokenizer learns from (pipeline.models.tiny trains it on what it
is handed): the project's catalog and prompts and the experiment's training data. It lives
here, beside the data it reads, so that the models layer builds the tokenizer from a corpus
its caller hands in and never generates data itself."""

from __future__ import annotations

from pipeline.core.workspace import Workspace
from pipeline.data.generator import ensure_data
from pipeline.data.jsonl import read_split
from pipeline.definitions.calls import Call, render, structured_calls
from pipeline.definitions.catalog import load_catalog
from pipeline.definitions.experiment import Experiment
from pipeline.definitions.prompts import load_prompts, system_prompt


def tiny_corpus(experiment: Experiment, *, workspace: Workspace) -> list[str]:
    """The text the tiny tokenizer learns from: the project's own catalog, prompts and the
    experiment's data (in `workspace`, as every step reads it; generated there when not
    current). Its order and content decide the tokenizer, and so the tiny model's weights."""
    catalog = load_catalog()
    texts = [system_prompt(experiment, catalog), catalog.python_stubs(), catalog.tool_list()]
    for tool in catalog.tools:
        example = Call(tool.name, {k: "x" for k in tool.parameters.get("properties", {})})
        texts += [render(example, "json"), render(example, "xml")]
    texts += [p.text for p in load_prompts(experiment.eval.prompts, catalog)]
    folder = ensure_data(experiment, workspace=workspace)
    for example in read_split(folder, "train"):
        for message in example.messages:
            texts.append(message.get("content") or "")
            for call in structured_calls(message):
                texts += [render(call, "json"), render(call, "xml")]
    return texts
