"""A shipped adapter: written from a finished build, built from without training into the
same quantized weights, refused when its files or base are not the ones recorded, and
--retrain trains afresh (for tiny: the build the adapter came from, a cache hit)."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from pathlib import Path

import pytest

from pipeline.builder import build
from pipeline.builder.key import model_digest
from pipeline.builder.shipped import (
    ADAPTER_RECORD,
    ShippedAdapter,
    ShippedAdapterError,
    export,
    read_shipped,
)
from pipeline.cli import ship
from pipeline.core.workspace import Workspace
from pipeline.definitions.experiment import Experiment, load_experiment, with_overrides

pytestmark = pytest.mark.slow
REPRODUCE = "python -m pipeline build --experiment tiny --retrain"


def _quiet(line: str) -> None:
    pass


@pytest.fixture(scope="module")
def trained() -> Path:
    return build(load_experiment("tiny"), workspace=Workspace.at(), log=_quiet).run_dir


@pytest.fixture
def shipped(trained: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "adapters" / "tiny"
    export(trained, dest, reproduce=REPRODUCE)
    return dest


def _shipping(adapter: Path) -> Experiment:
    tiny = load_experiment("tiny")
    return dataclasses.replace(tiny, train=dataclasses.replace(tiny.train, adapter=adapter))


def test_the_record_says_where_the_adapter_came_from(trained: Path, shipped: Path) -> None:
    record = read_shipped(shipped)
    built = json.loads((trained / "build.json").read_text())
    assert record.base_digest == built["inputs"]["base"]["local"]["sha256"]
    assert record.data_sha256 == built["inputs"]["data_sha256"]
    assert record.recipe == built["inputs"]["train"] and record.seed == record.recipe["seed"]
    assert record.iters == built["stages"]["train"]["iters"]
    assert record.loss_curve and all(loss >= 0 for _, loss in record.loss_curve)
    assert record.versions["mlx"] and record.reproduce == REPRODUCE
    assert record.bytes == sum(
        p.stat().st_size for p in shipped.iterdir() if p.name != ADAPTER_RECORD
    )


def test_a_build_from_the_shipped_adapter_trains_nothing_and_gives_the_same_model(
    trained: Path, shipped: Path, tmp_path: Path
) -> None:
    lines: list[str] = []
    result = build(_shipping(shipped), workspace=Workspace.at(tmp_path), log=lines.append)
    assert result.stages_run == ("train", "fuse", "quantize")
    record = json.loads((result.run_dir / "build.json").read_text())
    assert str(shipped) in record["stages"]["train"]["shipped"]
    assert record["stages"]["train"]["command"] == []
    assert any(line.startswith("[train] not trained: using the shipped adapter") for line in lines)
    assert model_digest(result.quantized) == model_digest(trained / "quantized")


def test_retrain_trains_with_the_recipe_instead(trained: Path, shipped: Path) -> None:
    again = build(
        with_overrides(_shipping(shipped), retrain=True), workspace=Workspace.at(), log=_quiet
    )
    assert again.run_dir == trained  # the recipe's own build: the adapter came from it


def test_a_changed_adapter_file_is_named(shipped: Path, tmp_path: Path) -> None:
    weights = shipped / "adapters.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\0")
    with pytest.raises(ShippedAdapterError, match=r"adapters\.safetensors is not the file"):
        build(_shipping(shipped), workspace=Workspace.at(tmp_path), log=_quiet)


@pytest.mark.parametrize(
    ("field", "message"),
    [
        ("base_digest", r"trained on a base with digest 0000.*train with --retrain"),
        ("data_sha256", r"trained on data with digest 0000.*train with --retrain"),
    ],
)
def test_an_adapter_trained_on_another_base_or_other_data_is_refused(
    shipped: Path, tmp_path: Path, field: str, message: str
) -> None:
    other = dataclasses.replace(read_shipped(shipped), **{field: "0" * 64})
    other.write(shipped / ADAPTER_RECORD)
    with pytest.raises(ShippedAdapterError, match=message):
        build(_shipping(shipped), workspace=Workspace.at(tmp_path), log=_quiet)


def test_a_folder_without_a_record_is_named(tmp_path: Path) -> None:
    folder = tmp_path / "not-shipped"
    folder.mkdir()
    with pytest.raises(ShippedAdapterError, match=re.escape(f"{folder} is not a shipped adapter")):
        read_shipped(folder)
    assert ShippedAdapter.KIND == "shipped-adapter"
    shutil.rmtree(folder)


def test_the_ship_door_writes_the_folder_and_names_a_run_that_is_no_build(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dest = tmp_path / "shipped"
    assert ship.main([str(trained), str(dest), "--reproduce", REPRODUCE]) == 0
    assert read_shipped(dest).reproduce == REPRODUCE
    assert f"{dest}: " in capsys.readouterr().out
    assert ship.main([str(tmp_path / "nothing"), str(dest), "--reproduce", REPRODUCE]) == 2
    assert f"{tmp_path / 'nothing'} is not a finished build" in capsys.readouterr().err
