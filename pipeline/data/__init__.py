"""Training data in mlx_lm's chat format: read and check it, generate it, describe and convert it.

    jsonl      Example, read_jsonl / read_split / write_jsonl, message_problem, message_calls
    templates  the generator's templates file, fixtures/data_templates.toml (load_templates)
    values     the values the templates' [tools.*] tables draw for each placeholder
    generator  generate / generate_records / ensure_data
    summary    describe / summarize / format_summary
    converter  convert / convert_record / convert_file / convert_path

The command line (`python -m pipeline data ...`) is pipeline.cli.data.
"""

from pipeline.data.converter import (
    TARGETS,
    ConvertError,
    Problem,
    Target,
    convert,
    convert_file,
    convert_path,
    convert_record,
)
from pipeline.data.generator import (
    KIND_SHARES,
    STAMP,
    data_dir,
    ensure_data,
    generate,
    generate_records,
)
from pipeline.data.jsonl import (
    ROLES,
    SPLITS,
    DataError,
    Example,
    call_message,
    message_calls,
    message_problem,
    read_jsonl,
    read_split,
    write_jsonl,
)
from pipeline.data.summary import (
    KINDS,
    MULTI_TOOL,
    NO_TOOL,
    Description,
    describe,
    format_summary,
    summarize,
)
from pipeline.data.templates import DEFAULT_TEMPLATES_PATH, Templates, load_templates

__all__ = [
    "DEFAULT_TEMPLATES_PATH",
    "KINDS",
    "KIND_SHARES",
    "MULTI_TOOL",
    "NO_TOOL",
    "ROLES",
    "SPLITS",
    "STAMP",
    "TARGETS",
    "ConvertError",
    "DataError",
    "Description",
    "Example",
    "Problem",
    "Target",
    "Templates",
    "call_message",
    "convert",
    "convert_file",
    "convert_path",
    "convert_record",
    "data_dir",
    "describe",
    "ensure_data",
    "format_summary",
    "generate",
    "generate_records",
    "load_templates",
    "message_calls",
    "message_problem",
    "read_jsonl",
    "read_split",
    "summarize",
    "write_jsonl",
]
