"""One experiment's preflight inputs, each loaded or computed once, on first use.

The registry's checks read everything from a `Context`: the two tokenizer sides, the data
splits, the rendered examples, the catalog, the eval's prompts and system prompt. Nothing is
loaded before a check asks for it, so a pytest worker that runs three checks loads only what
those need, and the CLI loads each input once for all of them.

A loader that fails (a model folder that is missing, a data line that is not JSON) does not
raise out of the context: it is remembered as that input's error, the `load` check reports it,
and a check that needs the input is skipped with a pointer there.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from functools import cached_property
from typing import Any, Literal, TypeVar

from pipeline.core.errors import RoutegateError
from pipeline.core.workspace import Workspace
from pipeline.data import DataError, Example
from pipeline.definitions.catalog import Catalog, load_catalog
from pipeline.definitions.experiment import Experiment
from pipeline.definitions.prompts import EvalPrompt, fill_system_prompt, load_prompts, system_prompt
from pipeline.models.refs import ModelError
from pipeline.preflight.inputs import Rendered, Side, SideName, load_side, load_splits
from pipeline.preflight.inputs import render_examples as render

Need = Literal["base", "reference", "data"]
NEEDS: dict[Need, str] = {
    "base": "base tokenizer",
    "reference": "reference tokenizer",
    "data": "data",
}
"""Each input a check can need, and how findings name it (the `load` check's subjects)."""

T = TypeVar("T")


class Unavailable(Exception):
    """A check asked for an input that did not load."""

    def __init__(self, need: Need, error: str) -> None:
        super().__init__(f"the {NEEDS[need]} did not load: {error.splitlines()[0]}")
        self.need = need
        self.error = error


class Context:
    """The preflight's inputs for one experiment, loaded lazily and kept."""

    def __init__(self, experiment: Experiment, workspace: Workspace) -> None:
        self.experiment = experiment
        self.workspace = workspace
        self._loaded: dict[Need, tuple[Any, str]] = {}
        self._memo: dict[Hashable, Any] = {}

    # --- what loads, and can fail -----------------------------------------------------------

    def load_error(self, need: Need) -> str:
        """Why `need` did not load ("" once it has): loads it on first call."""
        return self._load(need)[1]

    def side(self, name: SideName) -> Side:
        return self._get(name)

    def examples(self, split: str) -> list[Example]:
        return self._get("data")[split]

    def rendered(self, side: SideName, split: str) -> list[Rendered]:
        """The split's examples rendered by the side's template."""
        return self.memo(
            ("rendered", side, split), lambda: render(self.side(side), self.examples(split))
        )

    def _get(self, need: Need) -> Any:
        value, error = self._load(need)
        if error:
            raise Unavailable(need, error)
        return value

    def _load(self, need: Need) -> tuple[Any, str]:
        if need not in self._loaded:
            try:
                value = (
                    load_splits(self.experiment, self.workspace)
                    if need == "data"
                    else load_side(self.experiment, need, self.workspace)
                )
            except (ModelError, DataError, RoutegateError) as err:
                self._loaded[need] = (None, str(err))
            else:
                self._loaded[need] = (value, "")
        return self._loaded[need]

    # --- what the experiment states ---------------------------------------------------------

    @cached_property
    def catalog(self) -> Catalog:
        return load_catalog()

    @cached_property
    def system_prompt(self) -> str:
        """The eval's system prompt, filled from the catalog."""
        return system_prompt(self.experiment, self.catalog)

    @cached_property
    def system_prompt_variants(self) -> list[str]:
        return [
            fill_system_prompt(p, self.catalog) for p in self.experiment.eval.system_prompt_variants
        ]

    @cached_property
    def prompts(self) -> tuple[EvalPrompt, ...]:
        return load_prompts(self.experiment.eval.prompts, self.catalog)

    @property
    def mask_prompt(self) -> bool:
        return self.experiment.train.mask_prompt

    # --- derived values checks share --------------------------------------------------------

    def memo(self, key: Hashable, compute: Callable[[], T]) -> T:
        """`compute()` the first time `key` is asked for; the kept value after."""
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]
