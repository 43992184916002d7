"""The tool catalog: the shipped fixtures/tools.json matches the 26-tool spec, and the loader
rejects every kind of broken catalog with a message naming the file and the tool."""

from __future__ import annotations

import ast
import copy
import json
from pathlib import Path
from typing import Any

import pytest

from pipeline.definitions.catalog import DEFAULT_CATALOG_PATH, CatalogError, load_catalog

REQUIRED = object()
"""Marks a parameter with no default in the expected table below."""

POSITION = {
    "file_path": ("string", REQUIRED),
    "line": ("integer", REQUIRED),
    "column": ("integer", REQUIRED),
    "symbol": ("string", REQUIRED),
}
FILE_ONLY = {"file_path": ("string", REQUIRED)}
REPO_PATH = ("string", ".")

EXPECTED: dict[str, tuple[str, dict[str, tuple[str, Any]]]] = {
    "read_file": ("text_tools", {"path": ("string", REQUIRED)}),
    "write_file": ("text_tools", {"path": ("string", REQUIRED), "content": ("string", REQUIRED)}),
    "run_command": ("text_tools", {"command": ("string", REQUIRED)}),
    "typecheck": ("validation", {"path": ("string", REQUIRED)}),
    "ruff_check": ("validation", {"path": ("string", REQUIRED)}),
    "pytest_run": ("validation", {"path": ("string", REQUIRED)}),
    "goto_definition": ("lsp", POSITION),
    "find_references": ("lsp", POSITION),
    "hover": ("lsp", POSITION),
    "document_symbols": ("lsp", FILE_ONLY),
    "workspace_symbols": ("lsp", {"query": ("string", REQUIRED)}),
    "git_status": ("git", {"path": REPO_PATH}),
    "git_diff": ("git", {"path": REPO_PATH, "staged": ("boolean", False)}),
    "git_log": ("git", {"path": REPO_PATH, "count": ("integer", 10)}),
    "cst_find_pattern": (
        "cst",
        {"file_path": ("string", REQUIRED), "pattern": ("string", REQUIRED)},
    ),
    "cst_rename": (
        "cst",
        {
            "file_path": ("string", REQUIRED),
            "old_name": ("string", REQUIRED),
            "new_name": ("string", REQUIRED),
        },
    ),
    "cst_add_import": (
        "cst",
        {"file_path": ("string", REQUIRED), "import_stmt": ("string", REQUIRED)},
    ),
    **{
        name: ("domain", FILE_ONLY)
        for name in (
            "validate_component",
            "check_render_tree",
            "validate_escape_context",
            "validate_service_registration",
            "check_dependency_graph",
            "validate_injection_site",
            "validate_middleware_chain",
            "check_di_template_binding",
            "validate_route_pattern",
        )
    },
}

CATEGORIES = ("text_tools", "validation", "lsp", "git", "cst", "domain", "multi_tool")
COUNTS = {
    "text_tools": 3,
    "validation": 3,
    "lsp": 5,
    "git": 3,
    "cst": 3,
    "domain": 9,
    "multi_tool": 0,
}
JSON_TYPES = {"string", "integer", "number", "boolean", "array", "object"}


@pytest.fixture(scope="module")
def catalog():
    return load_catalog()


# --- the shipped catalog ----------------------------------------------------------------------


def test_default_path_is_the_fixture():
    fixture = Path(__file__).resolve().parents[3] / "fixtures" / "tools.json"
    assert fixture == DEFAULT_CATALOG_PATH


def test_has_the_26_tools_in_spec_order(catalog):
    assert catalog.names() == tuple(EXPECTED)
    assert len(catalog.tools) == 26


def test_seven_categories_and_multi_tool_owns_none(catalog):
    assert tuple(catalog.categories) == CATEGORIES
    groups = catalog.by_category()
    assert tuple(groups) == CATEGORIES
    assert {category: len(tools) for category, tools in groups.items()} == COUNTS
    assert groups["multi_tool"] == ()
    for category, tools in groups.items():
        assert all(tool.category == category for tool in tools)


@pytest.mark.parametrize("name", list(EXPECTED))
def test_tool_matches_spec(catalog, name):
    tool = catalog.tool(name)
    category, params = EXPECTED[name]
    assert tool.category == category
    props = tool.parameters["properties"]
    assert list(props) == list(params)
    for param, (json_type, default) in params.items():
        assert props[param]["type"] == json_type
        if default is REQUIRED:
            assert param in tool.required
            assert "default" not in props[param]
        else:
            assert param not in tool.required
            assert tool.defaults[param] == default
            assert type(tool.defaults[param]) is type(default)


def test_every_schema_is_a_valid_object_schema(catalog):
    for tool in (*catalog.tools, catalog.wrapper):
        schema = tool.parameters
        assert schema["type"] == "object", tool.name
        assert isinstance(schema["properties"], dict), tool.name
        assert set(schema.get("required", [])) <= set(schema["properties"]), tool.name
        for name, prop in schema["properties"].items():
            assert prop["type"] in JSON_TYPES, (tool.name, name)
            assert prop["description"].strip(), (tool.name, name)


def test_descriptions_are_distinct_single_lines(catalog):
    descriptions = [tool.description for tool in catalog.tools]
    assert len(set(descriptions)) == 26
    assert all(d.strip() and "\n" not in d for d in descriptions)
    assert all(d.strip() for d in catalog.categories.values())


def test_wrapper_is_execute_code(catalog):
    assert catalog.wrapper.name == "execute_code"
    assert catalog.wrapper.required == ("code",)
    assert catalog.wrapper.parameters["properties"]["code"]["type"] == "string"
    assert "execute_code" not in catalog.names()


def test_openai_shape(catalog):
    specs = catalog.openai_tools()
    assert len(specs) == 26
    for spec, tool in zip(specs, catalog.tools, strict=True):
        assert set(spec) == {"type", "function"}
        assert spec["type"] == "function"
        assert set(spec["function"]) == {"name", "description", "parameters"}
        assert spec["function"]["name"] == tool.name
        assert spec["function"]["description"] == tool.description
        assert spec["function"]["parameters"] == tool.parameters
    json.dumps(specs)  # must be serialisable as-is for a `tools=[...]` request


def test_openai_returns_a_copy_so_the_cached_catalog_cannot_be_mutated(catalog):
    spec = catalog.tool("git_diff").openai()
    spec["function"]["parameters"]["properties"].clear()
    assert catalog.tool("git_diff").parameters["properties"]


def test_load_is_cached(catalog):
    assert load_catalog() is catalog
    assert load_catalog(str(DEFAULT_CATALOG_PATH)) is catalog


def test_stub_example(catalog):
    tool = catalog.tool("git_diff")
    assert tool.stub() == (
        f'def git_diff(path: str = ".", staged: bool = False) -> str:\n    """{tool.description}"""'
    )


def test_stubs_compile_with_the_right_signatures(catalog):
    source = catalog.python_stubs() + "\n\n" + catalog.wrapper.stub() + "\n"
    compile(source, "<stubs>", "exec")
    defs = {node.name: node for node in ast.parse(source).body if isinstance(node, ast.FunctionDef)}
    assert set(defs) == {*EXPECTED, "execute_code"}
    for name, (_, params) in EXPECTED.items():
        fn = defs[name]
        assert [a.arg for a in fn.args.args] == list(params), name
        wanted = [d for d in params.values() if d[1] is not REQUIRED]
        got = [ast.literal_eval(d) for d in fn.args.defaults]
        assert got == [default for _, default in wanted], name
        assert ast.get_docstring(fn) == catalog.tool(name).description
    assert [a.arg for a in defs["execute_code"].args.args] == ["code"]


def test_stubs_are_grouped_by_category(catalog):
    stubs = catalog.python_stubs()
    headers = [line for line in stubs.splitlines() if line.startswith("# ")]
    assert headers == [f"# {c}" for c in CATEGORIES if c != "multi_tool"]
    # Each tool's def sits after its own header and before the next one.
    for tool in catalog.tools:
        start = stubs.index(f"# {tool.category}\n")
        assert stubs.index(f"def {tool.name}(") > start


def test_tool_list_has_one_line_per_tool(catalog):
    lines = catalog.tool_list().splitlines()
    assert len(lines) == 26
    assert lines[0] == f"- read_file(path): {catalog.tool('read_file').description}"
    assert f'- git_diff(path=".", staged=False): {catalog.tool("git_diff").description}' in lines
    assert f'- git_log(path=".", count=10): {catalog.tool("git_log").description}' in lines


def test_unknown_tool_suggests_close_names(catalog):
    with pytest.raises(KeyError, match=r"'git_dif'; did you mean git_diff"):
        catalog.tool("git_dif")
    with pytest.raises(KeyError, match="unknown tool 'zzz'") as err:
        catalog.tool("zzz")
    assert "did you mean" not in str(err.value)


def test_stub_escapes_awkward_descriptions(catalog):
    tool = catalog.tool("hover")
    odd = type(tool)(tool.name, tool.category, 'Say """hi""" \\ then "quote"', tool.parameters)
    fn = ast.parse(odd.stub()).body[0]
    assert isinstance(fn, ast.FunctionDef)
    assert ast.get_docstring(fn, clean=False) == odd.description


# --- broken catalogs ----------------------------------------------------------------------------


def _doc() -> dict[str, Any]:
    return copy.deepcopy(json.loads(DEFAULT_CATALOG_PATH.read_text()))


def _write(tmp_path: Path, doc: Any) -> Path:
    path = tmp_path / "tools.json"
    path.write_text(json.dumps(doc, indent=2))
    return path


def _tool(doc: dict[str, Any], name: str) -> dict[str, Any]:
    return next(t for t in doc["tools"] if t["name"] == name)


def _unknown_category(doc):
    _tool(doc, "hover")["category"] = "lsp_tools"


def _duplicate(doc):
    doc["tools"].append(copy.deepcopy(_tool(doc, "hover")))


def _duplicate_of_wrapper(doc):
    _tool(doc, "hover")["name"] = "execute_code"


def _not_object_schema(doc):
    _tool(doc, "hover")["parameters"]["type"] = "array"


def _schema_not_a_dict(doc):
    _tool(doc, "hover")["parameters"] = ["file_path"]


def _required_not_in_properties(doc):
    _tool(doc, "hover")["parameters"]["required"].append("offset")


def _property_without_type(doc):
    del _tool(doc, "hover")["parameters"]["properties"]["line"]["type"]


def _property_bad_type(doc):
    _tool(doc, "hover")["parameters"]["properties"]["line"]["type"] = "int"


def _default_wrong_type(doc):
    _tool(doc, "git_log")["parameters"]["properties"]["count"]["default"] = "10"


def _bool_default_for_integer(doc):
    _tool(doc, "git_log")["parameters"]["properties"]["count"]["default"] = True


def _required_with_default(doc):
    _tool(doc, "git_log")["parameters"]["required"] = ["count"]


def _required_after_optional(doc):
    props = _tool(doc, "git_log")["parameters"]
    props["properties"]["query"] = {"type": "string", "description": "x"}
    props["required"] = ["query"]


def _name_not_identifier(doc):
    _tool(doc, "hover")["name"] = "hover-info"


def _unknown_tool_key(doc):
    _tool(doc, "hover")["arguments"] = {}


def _multiline_description(doc):
    _tool(doc, "hover")["description"] = "Show a type.\nAnd a docstring."


def _wrapper_bad_schema(doc):
    del doc["wrapper"]["parameters"]["properties"]["code"]["type"]


@pytest.mark.parametrize(
    ("breaker", "tool", "message"),
    [
        (_unknown_category, "hover", "category 'lsp_tools', which is not in categories"),
        (_duplicate, "hover", "defined more than once"),
        (_duplicate_of_wrapper, "execute_code", "defined more than once"),
        (_not_object_schema, "hover", "not an object schema"),
        (_schema_not_a_dict, "hover", "not an object schema"),
        (_required_not_in_properties, "hover", "required parameter 'offset' is not in properties"),
        (_property_without_type, "hover", "parameter 'line' has no type"),
        (_property_bad_type, "hover", "parameter 'line' has type 'int'"),
        (_default_wrong_type, "git_log", "default '10', which is not of type integer"),
        (_bool_default_for_integer, "git_log", "default True, which is not of type integer"),
        (_required_with_default, "git_log", "'count' is required but has a default"),
        (_required_after_optional, "git_log", "'query' is required but follows optional"),
        (_name_not_identifier, "hover-info", "not a Python identifier"),
        (_unknown_tool_key, "hover", "unknown key 'arguments'"),
        (_multiline_description, "hover", "one-line description"),
        (_wrapper_bad_schema, "execute_code", "parameter 'code' has no type"),
    ],
)
def test_broken_catalog_names_file_and_tool(tmp_path, breaker, tool, message):
    doc = _doc()
    breaker(doc)
    path = _write(tmp_path, doc)
    with pytest.raises(CatalogError) as err:
        load_catalog(path)
    text = str(err.value)
    assert str(path) in text
    assert repr(tool) in text
    assert message in text


def test_missing_file_names_it(tmp_path):
    path = tmp_path / "nope" / "tools.json"
    with pytest.raises(CatalogError, match="does not exist") as err:
        load_catalog(path)
    assert str(path) in str(err.value)


def test_bad_json_gives_line_and_column(tmp_path):
    path = tmp_path / "tools.json"
    path.write_text('{\n  "categories": {},\n  "tools": [,]\n}\n')
    with pytest.raises(CatalogError, match="line 3 column 13") as err:
        load_catalog(path)
    assert str(path) in str(err.value)


def test_top_level_must_have_the_three_keys(tmp_path):
    doc = _doc()
    del doc["wrapper"]
    doc["extra"] = 1
    path = _write(tmp_path, doc)
    with pytest.raises(CatalogError, match="unknown: extra; missing: wrapper") as err:
        load_catalog(path)
    assert str(path) in str(err.value)


def test_a_valid_copy_loads_from_elsewhere(tmp_path):
    path = _write(tmp_path, _doc())
    assert load_catalog(path).names() == tuple(EXPECTED)
