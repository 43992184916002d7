"""Build: train -> fuse -> quantize an experiment's model, cached by key and resumable.

`build(experiment, workspace=...)` is the step; `plan` computes where a build lives without
running it; build.json is a `BuildRecord`. Modules: run (the build), runner (the stage
subprocess), train / fuse / quantize (the stages), records, key, files.
"""

from pipeline.builder.checkpoints import CorruptCheckpointError
from pipeline.builder.key import BUILD_FORMAT, data_digest, model_digest
from pipeline.builder.records import (
    BuildInputs,
    BuildPreflight,
    BuildRecord,
    FuseRecord,
    QuantizeRecord,
    StageRecord,
    Stages,
    TrainRecord,
)
from pipeline.builder.run import (
    OUTPUTS,
    STAGE_NAMES,
    BuildError,
    BuildPlan,
    BuildRefused,
    BuildResult,
    build,
    plan,
    read_record,
    trusted,
)
from pipeline.builder.runner import StageError

__all__ = [
    "BUILD_FORMAT",
    "OUTPUTS",
    "STAGE_NAMES",
    "BuildError",
    "BuildInputs",
    "BuildPlan",
    "BuildPreflight",
    "BuildRecord",
    "BuildRefused",
    "BuildResult",
    "CorruptCheckpointError",
    "FuseRecord",
    "QuantizeRecord",
    "StageError",
    "StageRecord",
    "Stages",
    "TrainRecord",
    "build",
    "data_digest",
    "model_digest",
    "plan",
    "read_record",
    "trusted",
]
