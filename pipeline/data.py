"""Training data in mlx_lm's chat format: read and validate JSONL (generate and convert below).

Every example keeps where it came from (file and line), so a check that fails can name the
exact line a user has to fix.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pipeline.calls import (
    TOOL_CALL_END,
    TOOL_CALL_START,
    Call,
    CallParseError,
    find_blocks,
    parse_block,
    render,
    structured_calls,
    unwrap,
    wrap_code,
)
from pipeline.calls import message_calls as read_message_calls
from pipeline.catalog import Catalog, CatalogError, load_catalog
from pipeline.experiment import (
    CallMode,
    CallSyntax,
    Experiment,
    ExperimentError,
    data_dir,
    load_experiment,
    with_overrides,
)
from pipeline.prompts import PromptError, load_prompts, system_prompt

ROLES = ("system", "user", "assistant", "tool")
SPLITS = ("train", "valid")


class DataError(ValueError):
    """A data file is missing or a line is not a valid chat example; names file and line."""


@dataclass(frozen=True)
class Example:
    file: Path
    line: int
    record: dict[str, Any]

    @property
    def id(self) -> str:
        return f"{self.file.name}:{self.line}"

    @property
    def messages(self) -> list[dict[str, Any]]:
        return self.record["messages"]

    @property
    def tools(self) -> list[dict[str, Any]] | None:
        return self.record.get("tools")


def message_problem(record: Any) -> str | None:
    """Why a JSON value is not a chat example mlx_lm can train on, or None if it is."""
    if not isinstance(record, dict):
        return f"expected a JSON object, got {type(record).__name__}"
    messages = record.get("messages")
    if not isinstance(messages, list) or not messages:
        return 'needs a non-empty "messages" list'
    tools = record.get("tools")
    if tools is not None and not isinstance(tools, list):
        return '"tools" must be a list'
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            return f"messages[{i}] is not an object"
        role = msg.get("role")
        if role not in ROLES:
            return f"messages[{i}].role is {role!r}, not one of {', '.join(ROLES)}"
        content = msg.get("content")
        has_calls = bool(msg.get("tool_calls"))
        if not isinstance(content, str) and not (role == "assistant" and has_calls):
            return f"messages[{i}] ({role}) needs string content"
        if has_calls and role != "assistant":
            return f"messages[{i}] has tool_calls but role {role}"
        if role == "system" and i != 0:
            return f"messages[{i}] is a system message after the first turn"
    non_system = [m["role"] for m in messages if m["role"] != "system"]
    if not non_system or non_system[0] != "user":
        return "the first non-system message must be from the user"
    if messages[-1]["role"] != "assistant":
        return "the last message must be the assistant's (it is the trained target)"
    return None


def read_jsonl(path: Path) -> list[Example]:
    """All examples of one file; the first bad line raises DataError with file and line."""
    if not path.is_file():
        raise DataError(f"{path} does not exist")
    examples = []
    with path.open(encoding="utf-8") as fh:
        for number, text in enumerate(fh, start=1):
            if not text.strip():
                continue
            try:
                record = json.loads(text)
            except json.JSONDecodeError as err:
                raise DataError(f"{path}:{number}: not valid JSON ({err.msg})") from err
            problem = message_problem(record)
            if problem:
                raise DataError(f"{path}:{number}: {problem}")
            examples.append(Example(path, number, record))
    return examples


def read_split(folder: Path, split: str) -> list[Example]:
    if not folder.is_dir():
        raise DataError(f"data folder {folder} does not exist")
    return read_jsonl(folder / f"{split}.jsonl")


def write_jsonl(path: Path, records: Iterable[Mapping[str, Any]]) -> None:
    """Write through a temp file so a crash never leaves a half-written split behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for record in records:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    tmp.replace(path)


# === generate ================================================================================
# Training data for the catalog's tools, built from paraphrase templates and pools of paths,
# symbols and commands with one seeded random.Random, so the same experiment always writes the
# same bytes. Four kinds of example, in roughly the seed's proportions:
#   single      one request, one call (the call is the trained target)
#   chain       one request that needs 2-4 tools, all called in one assistant turn
#   multi_turn  request, call, tool response, a short answer (the answer is the target)
#   no_tool     a question answered directly, so the model learns when not to call
# The eval's prompt texts (and its file paths and argument values) never appear in user text.

KINDS = ("single", "chain", "multi_turn", "no_tool")
KIND_SHARES = {"single": 0.60, "chain": 0.15, "multi_turn": 0.15, "no_tool": 0.10}
NO_TOOL = "no_tool"
MULTI_TOOL = "multi_tool"
STAMP = "generated.json"
"""Written beside generated splits: the inputs they came from, so stale data is regenerated."""

_Template = str | tuple[str, dict[str, Any]]
"""A request text with `{param}` placeholders, optionally with fixed arguments (staged=True)."""

# --- pools ----------------------------------------------------------------------------------
# The pools and templates below are data; packed by hand, so the formatter leaves them alone.
# fmt: off

_SRC_DIRS = (
    "src/app", "app/core", "lib", "pkg/utils", "services/orders", "services/users", "api/v1",
    "backend/accounts", "core/cache", "internal/queue", "shop/checkout", "analytics/etl",
    "web/forms", "jobs", "cli", "storage", "notifications", "search/index", "auth/tokens",
    "inventory", "billing/tax", "media/images", "integrations/slack", "workers", "common",
    "platform/config", "src/ingest", "reporting", "payments/refunds", "crm/contacts",
)
_SRC_FILES = (
    "models.py", "views.py", "utils.py", "helpers.py", "client.py", "config.py", "parser.py",
    "schema.py", "tasks.py", "serializers.py", "cache.py", "db.py", "main.py", "settings.py",
    "validators.py", "exceptions.py", "service.py", "repository.py", "api.py", "loader.py",
    "formatting.py", "metrics.py", "pagination.py", "permissions.py", "signals.py", "worker.py",
    "retry.py", "adapters.py", "events.py", "storage.py",
)
_OTHER_FILES = (
    "README.md", "pyproject.toml", "config/settings.yaml", "docs/setup.md", "Dockerfile",
    ".github/workflows/ci.yml", "requirements.txt", "Makefile", "scripts/deploy.sh",
    "setup.cfg", "docker-compose.yml", "CHANGELOG.md", ".env.example", "alembic.ini",
    "docs/architecture.md", "tox.ini",
)
_TEST_DIRS = ("tests", "tests/unit", "tests/integration", "tests/api", "test", "tests/e2e")
_FUNCTIONS = (
    "calculate_total", "load_config", "parse_args", "send_email", "validate_user", "get_session",
    "build_query", "normalize_path", "retry_request", "format_price", "create_order",
    "refresh_token", "render_page", "fetch_user", "compute_hash", "handle_event",
    "open_connection", "serialize_item", "flush_cache", "schedule_job", "resolve_host",
    "encode_payload", "merge_settings", "paginate_results", "authenticate", "log_event",
    "read_chunk", "apply_filters", "check_quota", "export_csv", "sync_inventory",
    "parse_timestamp", "generate_report", "upload_file", "cancel_subscription", "get_user_by_id",
)
_CLASSES = (
    "OrderService", "UserRepository", "ConfigLoader", "HttpClient", "CacheBackend", "EventBus",
    "TaskQueue", "PaymentProcessor", "InvoiceBuilder", "RateLimiter", "TokenManager",
    "ReportGenerator", "SearchIndex", "JobScheduler", "AuditLogger", "BaseModel", "AppSettings",
    "Router", "FileStorage", "EmailSender", "SessionManager", "CartItem", "ShipmentTracker",
    "MetricsCollector", "WebhookHandler", "PriceCalculator", "AccountService", "DataLoader",
)
_VERB_SWAPS = {
    "get": "fetch", "fetch": "load", "load": "read", "read": "load", "create": "make",
    "build": "make", "calculate": "compute", "compute": "calculate", "send": "dispatch",
    "validate": "check", "check": "verify", "render": "draw", "parse": "decode",
    "handle": "process", "format": "render", "normalize": "clean", "open": "connect",
    "refresh": "renew", "schedule": "enqueue", "resolve": "lookup", "encode": "serialize",
    "serialize": "encode", "merge": "combine", "apply": "use", "flush": "clear", "log": "record",
    "export": "dump", "sync": "refresh", "generate": "build", "upload": "store", "cancel": "end",
    "retry": "repeat", "paginate": "page", "authenticate": "login",
}
_CLASS_SWAPS = {
    "Service": "Manager", "Manager": "Service", "Builder": "Factory", "Client": "Gateway",
    "Repository": "Store", "Loader": "Reader", "Processor": "Handler", "Generator": "Builder",
    "Backend": "Provider", "Index": "Catalog", "Queue": "Pool", "Bus": "Broker",
    "Limiter": "Throttle", "Sender": "Mailer", "Scheduler": "Runner", "Logger": "Recorder",
    "Settings": "Options", "Storage": "Vault", "Item": "Line", "Tracker": "Monitor",
    "Collector": "Aggregator", "Handler": "Receiver", "Calculator": "Engine", "Model": "Entity",
}
_COMMANDS = (
    "make build", "make lint", "make clean", "make release", "npm install", "npm run build",
    "npm test", "yarn lint", "ls -la", "docker compose up -d", "docker ps",
    "pip install -r requirements.txt", "python manage.py migrate", "du -sh .", "df -h",
    "cargo build --release", "go test ./...", "uv sync", "python -m build",
    "pre-commit run --all-files", "tox -e py311", "python --version", "which python",
    "tail -n 50 logs/app.log", "alembic upgrade head", "terraform plan", "kubectl get pods",
    "make migrate", "docker build -t web .", "python scripts/seed_db.py", "npm run dev",
    "poetry lock", "make install", "env | sort", "wc -l README.md", "bash scripts/setup.sh",
)
_PATTERNS = (
    "print($$$)", "requests.post($URL, $$$)", "open($PATH)", "logging.info($MSG)",
    "eval($CODE)", "time.sleep($N)", "os.system($CMD)", "subprocess.run($$$)",
    "json.loads($S)", "$X == None", "except Exception:", "datetime.now()", "len($X) == 0",
    "assert $COND", "pickle.load($F)", "os.environ[$KEY]", "requests.get($URL, timeout=$T)",
    "session.commit()", "self.$ATTR = None", "raise NotImplementedError", "yaml.load($S)",
    "hashlib.md5($DATA)", "random.random()", "lambda $X: $X",
)
_IMPORTS = (
    "import os", "import json", "from typing import Any", "from dataclasses import dataclass",
    "import logging", "from collections import defaultdict", "from datetime import datetime",
    "import re", "from functools import lru_cache", "from typing import Optional",
    "import asyncio", "from decimal import Decimal", "import sys", "from itertools import chain",
    "from contextlib import contextmanager", "from enum import Enum", "import subprocess",
    "from uuid import uuid4", "import time", "from collections import Counter",
    "from typing import Iterable", "import hashlib", "from datetime import timedelta",
    "import shutil", "from collections.abc import Callable",
)
_WRITES = (
    ((".env", ".env.example", "config/.env.local", "deploy/staging.env"),
     ("DEBUG=false", "LOG_LEVEL=info", "PORT=8080", "APP_ENV=staging", "CACHE_TTL=300",
      "DATABASE_URL=sqlite:///dev.db", "DEBUG=true\nLOG_LEVEL=debug")),
    (("notes/ideas.md", "docs/setup.md", "CHANGELOG.md", "docs/faq.md", "notes/meeting.md",
      "docs/api/overview.md", "NOTES.md"),
     ("# Release notes", "TODO: add integration tests", "Remember to rotate the API keys",
      "## Setup\nRun make install first.", "- fix login bug\n- update docs",
      "Deploy freeze starts Friday", "# FAQ")),
    ((".gitignore", ".dockerignore"),
     ("*.log", "node_modules/", ".venv/\n__pycache__/", "dist/", "*.sqlite3")),
    (("requirements.txt", "requirements-dev.txt", "constraints.txt"),
     ("requests==2.32.3", "pytest>=8\nruff>=0.6", "httpx>=0.27", "pydantic>=2.7")),
    (("config/settings.yaml", "deploy/values.yaml", "config/logging.yml", "config/app.toml"),
     ("timeout: 30", "max_retries: 3", "level: debug", "replicas: 2\nimage: web:latest",
      "workers = 4")),
    (("scripts/hello.py", "version.py", "tools/ping.py", "__init__.py", "constants.py"),
     ('print("hello")', '__version__ = "1.4.0"', "__all__ = []", "VERSION = 3",
      "MAX_ITEMS = 100\nPAGE_SIZE = 20")),
    (("scripts/deploy.sh", "scripts/setup.sh", "bin/run.sh", "scripts/backup.sh"),
     ("#!/bin/sh\necho deploying", "echo done", "#!/usr/bin/env bash\nset -e",
      "pg_dump app > backup.sql")),
)
_WRITE_PREFIXES = ("", "", "backend/", "services/api/", "web/", "tools/", "infra/")
_DOMAIN_FILES = {
    "validate_component": (
        ("ui/components", "frontend/widgets", "web/components", "app/ui", "components"),
        ("button", "modal", "sidebar", "user_card", "search_box", "date_picker", "toast",
         "avatar", "dropdown", "pagination_bar", "tabs", "footer", "header", "login_form"),
    ),
    "check_render_tree": (
        ("ui/pages", "frontend/views", "web/screens", "app/pages", "pages"),
        ("home", "settings", "checkout", "profile", "admin_panel", "reports", "inbox",
         "product_list", "order_detail", "signup", "search_results", "billing"),
    ),
    "validate_escape_context": (
        ("ui/templates", "templates", "web/templates", "app/views", "frontend/templates"),
        ("comment_list", "search_page", "email_body", "user_bio", "product_page", "forum_post",
         "invoice_view", "review_card", "error_page", "share_link"),
    ),
    "validate_service_registration": (
        ("app", "core", "di", "src/bootstrap", "platform"),
        ("services", "registry", "providers", "service_registry", "di_config", "modules",
         "bindings", "startup"),
    ),
    "check_dependency_graph": (
        ("app", "core", "di", "src/bootstrap", "platform"),
        ("providers", "registry", "bootstrap", "graph", "di_setup", "composition_root",
         "services", "wiring_config"),
    ),
    "validate_injection_site": (
        ("handlers", "controllers", "api/endpoints", "app/handlers", "web/controllers"),
        ("orders", "users", "payments", "login", "reports", "webhooks", "search", "export",
         "notifications", "admin"),
    ),
    "validate_middleware_chain": (
        ("server", "core", "web", "app/http", "gateway"),
        ("middleware", "middlewares", "pipeline", "request_chain", "http_stack", "filters"),
    ),
    "check_di_template_binding": (
        ("ui/templates", "templates", "web/templates", "app/views", "frontend/templates"),
        ("dashboard", "account_page", "cart_summary", "order_email", "team_page", "sidebar",
         "notifications_panel", "settings_page", "welcome_mail"),
    ),
    "validate_route_pattern": (
        ("app", "web", "api", "server", "core/http"),
        ("routes", "urls", "routing", "endpoints", "api_routes", "url_map", "views_routes"),
    ),
}
_DOMAIN_ISSUES = {
    "validate_component": (
        "prop 'title' has no type annotation", "state field 'items' is mutated outside setState",
        "lifecycle hook 'on_mount' is missing its self parameter",
    ),
    "check_render_tree": (
        "the children of <ItemList> have no key", "node <Footer> is unreachable",
        "<Panel> renders itself through <Card>, a cycle",
    ),
    "validate_escape_context": (
        "a user value is interpolated into an href without URL escaping",
        "raw HTML from 'bio' is marked safe without sanitizing",
        "a value is inserted into inline JS without JS escaping",
    ),
    "validate_service_registration": (
        "EmailSender is registered twice", "CacheBackend has lifetime 'forever', not a valid one",
        "PaymentGateway is registered without an implementation",
    ),
    "check_dependency_graph": (
        "cycle OrderService -> PaymentService -> OrderService",
        "no provider registered for MetricsCollector",
        "cycle UserRepository -> AuditLogger -> UserRepository",
    ),
    "validate_injection_site": (
        "parameter 'storage' asks for FileStore, which is not registered",
        "Inject marker on 'mailer' expects EmailSender but gets SmtpClient",
        "constructor parameter 'cache' has no type annotation to inject by",
    ),
    "validate_middleware_chain": (
        "AuthMiddleware never calls the next handler", "CORS runs after the router",
        "ErrorMiddleware swallows exceptions without a response",
    ),
    "check_di_template_binding": (
        "template variable 'current_user' is not bound in the context",
        "service 'feature_flags' is used by the template but not bound",
        "'cart' is bound under the name 'basket', which the template never uses",
    ),
    "validate_route_pattern": (
        "'/users/{id}' names 'id' but the handler takes 'user_id'",
        "'/items/<int:pk' is missing its closing '>'",
        "'/orders/latest' is shadowed by '/orders/{order_id}' declared before it",
    ),
}
_DOMAIN_CHAIN_FILES = (
    "app/main.py", "app/web.py", "web/app.py", "server/setup.py", "core/application.py",
    "src/site/pages.py", "frontend/app.py", "portal/views.py", "shop/web.py",
)

# --- request templates (single calls and multi-turn) -----------------------------------------

_REQUESTS: dict[str, tuple[_Template, ...]] = {
    "read_file": (
        "Show me {path}.", "What's in {path}?", "Print the contents of {path}.",
        "Read {path} for me.", "Can you open {path}?", "Let me see the full text of {path}.",
        "cat {path}", "Display the file {path}.", "I need to look at {path}, show it please.",
        "Dump the whole of {path} here.",
    ),
    "write_file": (
        "Write `{content}` to {path}.", "Put the line `{content}` into {path}.",
        "Overwrite {path} so it only contains `{content}`.",
        "Make a new file {path} with the text `{content}`.",
        "Save `{content}` as the contents of {path}.",
        "Write the following to {path}:\n{content}",
        "Create {path} with this content:\n{content}",
        "Replace everything in {path} with:\n{content}",
    ),
    "run_command": (
        "Execute `{command}`.", "Please run `{command}` in the terminal.",
        "Can you run `{command}` and tell me the output?", "Run this shell command: {command}",
        "Kick off `{command}` for me.", "What does `{command}` print? Run it.",
        "Go ahead and execute `{command}` in the repo.",
    ),
    "typecheck": (
        "Type-check {path}.", "Does {path} have type errors?", "Run the type checker on {path}.",
        "Check the types in {path}.", "Any typing problems in {path}?",
        "Verify that {path} passes type checking.",
        "Are the type annotations in {path} consistent?",
        "Find type errors under {path}.",
    ),
    "ruff_check": (
        "Run ruff on {path}.", "Lint {path}.", "Check {path} for lint errors.",
        "Are there unused imports or style issues in {path}?", "ruff check {path} please",
        "Find lint warnings in {path}.", "Does {path} pass the linter?",
        "Look for likely bugs and style problems in {path} with ruff.",
    ),
    "pytest_run": (
        "Run the tests in {path}.", "Run pytest on {path}.", "Do the tests in {path} pass?",
        "Execute {path} with pytest.", "Can you run {path} and tell me what fails?",
        "Check whether {path} is green.", "Run the test suite under {path}.",
        "Which tests in {path} are failing?",
    ),
    "goto_definition": (
        "Where is `{symbol}` defined? I see it in {file_path} at line {line}, column {column}.",
        "Jump to the definition of {symbol} ({file_path}, line {line}, col {column}).",
        "Go to the definition of the {what} `{symbol}` used at {file_path}:{line}:{column}.",
        "In {file_path} on line {line}, column {column} there is `{symbol}`. Where is it "
        "implemented?",
        "Find the source of {what} {symbol}, referenced at {file_path}:{line}:{column}.",
        "Which file declares `{symbol}`? It appears in {file_path}, line {line}, column {column}.",
    ),
    "find_references": (
        "Find all usages of `{symbol}` (it is at {file_path} line {line}, column {column}).",
        "Who calls {symbol}? It sits at {file_path}:{line}:{column}.",
        "Before I change `{symbol}` in {file_path} (line {line}, col {column}), show me every "
        "reference to it.",
        "Show every reference to the {what} {symbol} at {file_path}:{line}:{column}.",
        "Where else is `{symbol}` used? Start from {file_path}, line {line}, column {column}.",
        "List the call sites of {symbol} found at line {line}, column {column} of {file_path}.",
    ),
    "hover": (
        "What's the signature of `{symbol}` at {file_path} line {line} column {column}?",
        "Show the docstring and type of `{symbol}` in {file_path}, line {line}, column {column}.",
        "Hover over {symbol} at {file_path}:{line}:{column}.",
        "What type does `{symbol}` have at {file_path}:{line}:{column}?",
        "Give me the type info for the {what} {symbol} on line {line}, column {column} of "
        "{file_path}.",
        "Without leaving {file_path}, what does `{symbol}` at line {line}, col {column} take "
        "and return?",
    ),
    "document_symbols": (
        "List the functions and classes in {file_path}.", "Outline {file_path}.",
        "What symbols does {file_path} define?",
        "Show me the structure of {file_path}: classes, functions, variables.",
        "Which classes and methods are in {file_path}, with line numbers?",
        "Summarize the top-level definitions of {file_path}.",
        "Give me a symbol outline for {file_path}.",
    ),
    "workspace_symbols": (
        "Find the symbol {query} anywhere in the project.",
        "Where in the codebase is something called `{query}`?",
        "Search all files for a class or function named {query}.",
        "I don't know which file defines `{query}`; search the workspace.",
        "Look up `{query}` across the repository's symbols.",
        "Is there a symbol matching {query} somewhere in this project?",
    ),
    "git_status": (
        "What's the current git status?", "Show me the working tree status.",
        "Which files are untracked or changed?", "Anything uncommitted in {path}?",
        "Give me git status for {path}.", "List the files I've changed in {path}.",
        "Are there untracked files in the repo?", "What is staged and what is not right now?",
        "Is my working tree clean?", "Show the status of {path} in git.",
        "Which files under {path} are modified?",
    ),
    "git_diff": (
        "Show the diff of my uncommitted changes.", "What did I change in {path}? Show the diff.",
        ("Show me the staged diff.", {"staged": True}),
        ("Diff the index for {path}.", {"staged": True}),
        ("What exactly is staged in {path}? Show the lines.", {"staged": True}),
        "Show the line-by-line changes in the working tree.",
        "Diff {path} against the last commit.",
        ("Let me review the lines I've added to the index.", {"staged": True}),
        "What have I edited so far? Show the diff.",
        ("Show the staged diff for {path}.", {"staged": True}),
    ),
    "git_log": (
        "Show me the last {count} commits.", "List the {count} most recent commits.",
        "What changed recently in {path}? Show the commit history.",
        "Show the last {count} commits touching {path}.", "Who committed to {path} lately?",
        "Show recent commits.", "What are the latest {count} commit messages?",
        "Give me the git history of {path}.", "Print the recent log for {path}, {count} entries.",
    ),
    "cst_find_pattern": (
        "Find every match of `{pattern}` in {file_path}.",
        "Search {file_path} for code matching `{pattern}`.",
        "Where does {file_path} contain `{pattern}`?",
        "Use a structural search for `{pattern}` in {file_path}.",
        "List the spots in {file_path} that match the pattern `{pattern}`.",
        "Does {file_path} have any `{pattern}`? Find them by syntax tree.",
    ),
    "cst_rename": (
        "Rename `{old_name}` to `{new_name}` in {file_path}.",
        "In {file_path}, change the name {old_name} to {new_name}.",
        "Please rename the {what} {old_name} to {new_name} throughout {file_path}.",
        "Refactor {file_path}: {old_name} should be called {new_name}.",
        "Change every occurrence of identifier `{old_name}` in {file_path} to `{new_name}`.",
        "Give {old_name} in {file_path} the new name {new_name}.",
    ),
    "cst_add_import": (
        "Add `{import_stmt}` to {file_path}.", "Import in {file_path}: {import_stmt}",
        "{file_path} needs `{import_stmt}`; add it to the imports.",
        "Insert the import `{import_stmt}` into {file_path}.",
        "Make sure {file_path} has `{import_stmt}` at the top.",
        "Add the line `{import_stmt}` to the imports of {file_path}.",
    ),
    "validate_component": (
        "Validate the component defined in {file_path}.",
        "Does the {name} component in {file_path} follow the component contract?",
        "Check the props and state of the UI component in {file_path}.",
        "Are the lifecycle hooks of the component class in {file_path} correct?",
        "Run the component validator on {file_path}.",
        "Is the {name} component class in {file_path} well formed?",
    ),
    "check_render_tree": (
        "Check the render tree in {file_path} for missing keys.",
        "Does the page built in {file_path} nest its components correctly?",
        "Look for unreachable or cyclic nodes in the render tree of {file_path}.",
        "Verify the component hierarchy that {file_path} renders.",
        "Inspect the render tree produced by {file_path}.",
        "Is the parent/child nesting of the {name} page in {file_path} valid?",
    ),
    "validate_escape_context": (
        "Is everything in {file_path} escaped properly for HTML and attributes?",
        "Check {file_path} for XSS: are interpolated values escaped for their context?",
        "Audit the escaping of values in {file_path} (HTML, URLs, inline JS).",
        "Could {file_path} render unsafe markup?",
        "Validate the escape contexts in {file_path}.",
        "Are the user-supplied values in {file_path} escaped correctly where they are inserted?",
    ),
    "validate_service_registration": (
        "Check the DI service registry in {file_path}.",
        "Is each service in {file_path} registered once with a valid lifetime?",
        "Verify the singleton/scoped/transient lifetimes of the services registered in "
        "{file_path}.",
        "Validate the service registrations in {file_path}.",
        "Are there duplicate or missing implementations among the registrations in {file_path}?",
        "Audit how services get registered in {file_path}.",
    ),
    "check_dependency_graph": (
        "Check the dependency graph in {file_path} for cycles.",
        "Do the services configured in {file_path} have circular dependencies or missing "
        "providers?",
        "Analyze the DI dependency graph set up in {file_path}.",
        "Is there a dependency cycle between the services in {file_path}?",
        "Find missing providers in the DI graph of {file_path}.",
        "Walk the whole service dependency graph from {file_path} and report problems.",
    ),
    "validate_injection_site": (
        "Check the injection sites in {file_path}.",
        "Do the constructor parameters in {file_path} ask for registered services?",
        "Validate the Inject markers in {file_path}.",
        "Are the dependencies injected into {file_path} of the right type?",
        "Check that every handler parameter in {file_path} requests a registered service.",
        "Verify the places in {file_path} that receive injected dependencies.",
    ),
    "validate_middleware_chain": (
        "Validate the middleware chain in {file_path}.",
        "Does every middleware in {file_path} call the next handler?",
        "Check the order of the middleware stack defined in {file_path}.",
        "Review error handling in the middleware pipeline of {file_path}.",
        "Is the middleware in {file_path} ordered so auth runs before the handlers?",
        "Audit the request middleware configured in {file_path}.",
    ),
    "check_di_template_binding": (
        "Are all the values the template in {file_path} uses bound into its context?",
        "Check the DI template bindings in {file_path}.",
        "Does the DI container bind every service that the template in {file_path} needs?",
        "Verify the template context bindings for {file_path}.",
        "Find unbound template variables in {file_path}.",
        "Is every service referenced by the {name} template in {file_path} provided by the "
        "container?",
    ),
    "validate_route_pattern": (
        "Check the route declarations in {file_path}.",
        "Are the URL patterns in {file_path} valid?",
        "Do the path parameters of the routes in {file_path} match the handler arguments?",
        "Look for conflicting or shadowed routes in {file_path}.",
        "Validate the URL routing in {file_path}.",
        "Is the route syntax in {file_path} correct?",
    ),
}

# --- chain clauses: (first mention of the tool's file, the file already named) --------------

_CLAUSES: dict[str, tuple[tuple[_Template, ...], tuple[_Template, ...]]] = {
    "read_file": (("read {path}", "show me {path}", "open {path}"),
                  ("read it", "show me the whole file", "open it")),
    "write_file": (("write `{content}` to {path}", "create {path} containing `{content}`"),
                   ("overwrite it with `{content}`",)),
    "run_command": (("run `{command}`", "execute `{command}` in the shell"),
                    ("run `{command}`",)),
    "typecheck": (("type-check {path}", "check {path} for type errors",
                   "run the type checker on {path}"),
                  ("type-check it", "check it for type errors", "run the type checker on it")),
    "ruff_check": (("lint {path} with ruff", "run ruff on {path}", "check {path} for lint errors"),
                   ("lint it", "run ruff on it", "check it for lint issues")),
    "pytest_run": (("run the tests in {path}", "run {path} with pytest", "run pytest on {path}"),
                   ("run it with pytest",)),
    "goto_definition": (
        ("find where `{symbol}` ({file_path}, line {line}, column {column}) is defined",
         "jump to the definition of `{symbol}` at {file_path}:{line}:{column}"),
        ("jump to its definition", "show where it is defined"),
    ),
    "find_references": (
        ("list every reference to `{symbol}` from {file_path} line {line}, column {column}",
         "find all usages of `{symbol}` at {file_path}:{line}:{column}"),
        ("list all its references", "find everywhere it is used"),
    ),
    "hover": (
        ("show the signature of `{symbol}` at {file_path}:{line}:{column}",
         "hover over `{symbol}` in {file_path} at line {line}, column {column}"),
        ("show its type signature", "show its docstring and type"),
    ),
    "document_symbols": (("outline {file_path}", "list the classes and functions in {file_path}"),
                         ("outline it", "list its classes and functions")),
    "workspace_symbols": (("search the workspace for `{query}`",
                           "find the symbol {query} anywhere in the project"),
                          ("search the workspace for `{query}`",)),
    "git_status": (("show the git status", "list the changed files",
                    "show git status for {path}"),
                   ("show the git status",)),
    "git_diff": (("show the diff", ("show the staged diff", {"staged": True}),
                  "show what changed in {path}"),
                 ("show the diff",)),
    "git_log": (("show the last {count} commits", "show recent commits for {path}",
                 "list the {count} most recent commits"),
                ("show the last {count} commits",)),
    "cst_find_pattern": (("find `{pattern}` in {file_path}",
                          "search {file_path} for code matching `{pattern}`"),
                         ("find `{pattern}` in it", "search it for `{pattern}`")),
    "cst_rename": (("rename `{old_name}` to `{new_name}` in {file_path}",),
                   ("rename it to `{new_name}`",)),
    "cst_add_import": (("add `{import_stmt}` to {file_path}",
                        "add the import `{import_stmt}` to {file_path}"),
                       ("add `{import_stmt}` to it",)),
    "validate_component": (("validate the component in {file_path}",),
                           ("validate its component", "check its component contract")),
    "check_render_tree": (("check the render tree of {file_path}",),
                          ("check its render tree", "inspect the render tree it builds")),
    "validate_escape_context": (("check the escaping in {file_path}",),
                                ("check its escape contexts", "make sure its output is escaped")),
    "validate_service_registration": (("validate the service registrations in {file_path}",),
                                      ("validate its service registrations",
                                       "check the service registry there")),
    "check_dependency_graph": (("check the dependency graph of {file_path} for cycles",),
                               ("check the dependency graph for cycles",
                                "look for dependency cycles")),
    "validate_injection_site": (("check the injection sites in {file_path}",),
                                ("check its injection sites", "validate its Inject markers")),
    "validate_middleware_chain": (("validate the middleware chain in {file_path}",),
                                  ("validate its middleware chain", "check the middleware order")),
    "check_di_template_binding": (("check the template bindings in {file_path}",),
                                  ("check its template bindings",
                                   "make sure its template values are bound")),
    "validate_route_pattern": (("validate the routes in {file_path}",),
                               ("validate its route patterns", "check its URL patterns")),
}
_CHAIN_RECIPES: tuple[tuple[str, ...], ...] = (
    ("read_file", "ruff_check", "typecheck", "pytest_run"),
    ("ruff_check", "typecheck"),
    ("typecheck", "pytest_run"),
    ("ruff_check", "pytest_run"),
    ("ruff_check", "typecheck", "pytest_run"),
    ("read_file", "ruff_check"),
    ("read_file", "typecheck"),
    ("document_symbols", "read_file"),
    ("git_status", "git_diff"),
    ("git_diff", "git_log"),
    ("git_status", "git_diff", "git_log"),
    ("git_status", "ruff_check", "pytest_run"),
    ("find_references", "cst_rename"),
    ("find_references", "cst_rename", "pytest_run"),
    ("cst_rename", "pytest_run"),
    ("goto_definition", "find_references"),
    ("hover", "goto_definition"),
    ("workspace_symbols", "document_symbols"),
    ("cst_add_import", "ruff_check"),
    ("cst_add_import", "typecheck", "pytest_run"),
    ("cst_find_pattern", "ruff_check"),
    ("write_file", "run_command"),
    ("run_command", "git_status"),
    ("validate_component", "check_render_tree"),
    ("validate_escape_context", "check_di_template_binding"),
    ("validate_service_registration", "check_dependency_graph"),
    ("validate_injection_site", "validate_service_registration"),
    ("validate_route_pattern", "validate_middleware_chain"),
    ("check_dependency_graph", "validate_injection_site"),
    ("validate_component", "validate_escape_context", "check_render_tree"),
    ("validate_service_registration", "check_dependency_graph", "validate_injection_site"),
    ("read_file", "validate_route_pattern"),
    ("validate_middleware_chain", "pytest_run"),
    ("check_di_template_binding", "validate_escape_context", "validate_component",
     "check_render_tree"),
)

# --- questions that need no tool --------------------------------------------------------------

_ACRONYMS = (
    ("API", "Application Programming Interface."), ("CLI", "Command-Line Interface."),
    ("JSON", "JavaScript Object Notation."), ("YAML", "YAML Ain't Markup Language."),
    ("HTTP", "Hypertext Transfer Protocol."), ("URL", "Uniform Resource Locator."),
    ("CI", "Continuous Integration."), ("ORM", "Object-Relational Mapping."),
    ("REST", "Representational State Transfer."), ("SQL", "Structured Query Language."),
    ("TDD", "Test-Driven Development."), ("DI", "Dependency Injection."),
    ("CST", "Concrete Syntax Tree."), ("AST", "Abstract Syntax Tree."),
    ("XSS", "Cross-Site Scripting."), ("CSRF", "Cross-Site Request Forgery."),
    ("DRY", "Don't Repeat Yourself."), ("PEP", "Python Enhancement Proposal."),
    ("GIL", "Global Interpreter Lock."), ("IDE", "Integrated Development Environment."),
    ("TLS", "Transport Layer Security."), ("DNS", "Domain Name System."),
    ("CORS", "Cross-Origin Resource Sharing."), ("JWT", "JSON Web Token."),
    ("MVC", "Model-View-Controller."), ("CRUD", "Create, Read, Update, Delete."),
    ("UUID", "Universally Unique Identifier."), ("ASGI", "Asynchronous Server Gateway Interface."),
    ("WSGI", "Web Server Gateway Interface."), ("SemVer", "Semantic Versioning."),
    ("PR", "Pull Request."), ("SSH", "Secure Shell."), ("HTML", "HyperText Markup Language."),
)
_ACRONYM_FRAMES = (
    "What is {a} short for?", "Expand the abbreviation {a}.", "{a}: what does that stand for?",
    "Quick one: what does {a} mean as an acronym?",
)
_DIFFERENCES = (
    ("`is`", "`==`", "`is` checks that two names refer to the same object, while `==` "
     "compares their values."),
    ("a set", "a frozenset", "A set is mutable, while a frozenset is immutable and hashable, "
     "so it can be a dict key or a set member."),
    ("`append`", "`extend`", "`append` adds its argument as one element, while `extend` adds "
     "each item of an iterable."),
    ("a generator expression", "a list comprehension", "A list comprehension builds the whole "
     "list at once, while a generator expression yields items lazily one at a time."),
    ("`@staticmethod`", "`@classmethod`", "A classmethod receives the class as its first "
     "argument, while a staticmethod receives neither the class nor an instance."),
    ("`__str__`", "`__repr__`", "`__str__` gives a readable text for users, while `__repr__` "
     "gives an unambiguous one for developers."),
    ("a shallow copy", "a deep copy", "A shallow copy duplicates only the outer container, "
     "while a deep copy also copies every nested object."),
    ("`dict.get`", "indexing with `[]`", "`dict.get` returns a default for a missing key, "
     "while `[]` raises KeyError."),
    ("a thread", "a process", "Threads share one process's memory (and CPython's GIL), while "
     "processes have separate memory and run truly in parallel."),
    ("`list.sort()`", "`sorted()`", "`list.sort()` sorts in place and returns None, while "
     "`sorted()` returns a new list from any iterable."),
    ("`*args`", "`**kwargs`", "`*args` collects extra positional arguments into a tuple, while "
     "`**kwargs` collects extra keyword arguments into a dict."),
    ("`break`", "`continue`", "`break` leaves the loop entirely, while `continue` skips to the "
     "next iteration."),
    ("`async def`", "`def`", "An `async def` function returns a coroutine that must be "
     "awaited, while a plain function runs as soon as it is called."),
    ("a module", "a package", "A module is a single .py file, while a package is a folder of "
     "modules, usually with an `__init__.py`."),
    ("`json.dump`", "`json.dumps`", "`json.dumps` returns a string, while `json.dump` writes "
     "the JSON to a file object."),
    ("`raise`", "`assert`", "`raise` always raises, while `assert` raises AssertionError only "
     "when its condition is false and is skipped under `python -O`."),
    ("an abstract base class", "a Protocol", "An abstract base class needs explicit "
     "subclassing, while a Protocol matches any class with the right methods structurally."),
    ("a dataclass", "a NamedTuple", "A dataclass is a regular mutable class with generated "
     "methods, while a NamedTuple is an immutable tuple with named fields."),
    ("a unit test", "an integration test", "A unit test checks one piece in isolation, while "
     "an integration test checks that several pieces work together."),
    ("`git fetch`", "`git pull`", "`git fetch` only downloads new commits, while `git pull` "
     "fetches and then merges them into your branch."),
    ("`None`", "`False`", "`None` means no value at all and `False` is a boolean; both are "
     "falsy, but they are different objects."),
    ("a linter", "a type checker", "A linter flags style issues and likely bugs, while a "
     "type checker verifies that values match their declared types."),
)
_DIFFERENCE_FRAMES = (
    "How does {a} differ from {b}?", "{a} vs {b}: what's the difference?",
    "Briefly, when would I use {a} rather than {b}?", "Explain {a} versus {b} in a sentence.",
)
_CONCEPTS = (
    ("a decorator", "A decorator is a function that wraps another function or class to add "
     "behaviour without changing its code."),
    ("a context manager", "A context manager sets something up and tears it down around a "
     "`with` block, like opening and closing a file."),
    ("a virtual environment", "A virtual environment is an isolated folder of Python packages "
     "for one project, separate from the system installation."),
    ("a race condition", "A race condition is a bug where the result depends on the timing of "
     "concurrent operations."),
    ("middleware", "Middleware is code that runs around each request in a web app, e.g. for "
     "authentication, logging or error handling."),
    ("dependency injection", "Dependency injection means passing an object its collaborators "
     "from outside instead of having it build them itself."),
    ("a type hint", "A type hint is an annotation that tells readers and type checkers what "
     "type a value should have; Python does not enforce it at runtime."),
    ("a docstring", "A docstring is the string literal at the start of a module, class or "
     "function that documents it."),
    ("a closure", "A closure is a function that remembers variables from the scope it was "
     "defined in."),
    ("memoization", "Memoization caches a function's results for given arguments so repeated "
     "calls are fast."),
    ("a mock", "A mock is a stand-in object in tests that records how it is used and returns "
     "canned answers."),
    ("a pytest fixture", "A pytest fixture is a function that sets up data or resources a test "
     "asks for by naming it as a parameter."),
    ("a merge conflict", "A merge conflict happens when two branches change the same lines "
     "and git cannot combine them automatically."),
    ("a rebase", "A rebase replays your commits on top of another branch, giving a linear "
     "history."),
    ("semantic versioning", "Semantic versioning numbers releases MAJOR.MINOR.PATCH: breaking "
     "changes, new features, fixes."),
    ("idempotency", "An operation is idempotent when doing it twice has the same effect as "
     "doing it once."),
    ("a deadlock", "A deadlock is when two or more tasks each wait for a resource the other "
     "holds, so none can continue."),
    ("recursion", "Recursion is when a function solves a problem by calling itself on smaller "
     "inputs."),
    ("Big-O notation", "Big-O notation describes how an algorithm's running time or memory "
     "grows with input size."),
    ("a regular expression", "A regular expression is a pattern language for matching and "
     "extracting text."),
    ("a language server", "A language server gives editors code intelligence such as "
     "go-to-definition, references and hover info over a standard protocol."),
    ("a lambda in Python", "A lambda is a small anonymous function written as a single "
     "expression."),
    ("a render tree", "A render tree is the nested structure of components a UI framework "
     "builds to draw a page."),
    ("a singleton lifetime in DI", "A singleton service is created once and shared by "
     "everything that asks for it."),
    ("a syntax tree", "A syntax tree represents source code as nested nodes, one per "
     "construct, so tools can analyse or rewrite it."),
    ("monkeypatching", "Monkeypatching replaces an attribute or function at runtime, usually "
     "in tests."),
    ("a hash function", "A hash function maps data of any size to a fixed-size value, used "
     "for lookups and integrity checks."),
)
_CONCEPT_FRAMES = (
    "What is {a}?", "Explain {a} briefly.", "Can you tell me what {a} means?",
    "In plain words, what's {a}?",
)
_THANKS = (
    "Thank you, it works now.", "Great, that did the trick.", "Perfect, thanks a lot!",
    "Awesome, cheers!", "Nice, that's exactly what I needed.", "Got it, thanks.",
    "Cool, thanks for the help.", "OK, that worked.", "Appreciate it!",
    "Brilliant, all green now.", "Thanks! That's all for today.", "Great job, thank you.",
    "Super, that solved my problem.", "Thanks, makes sense now.", "Lovely, cheers for that.",
)
_THANKS_REPLIES = (
    "You're welcome! Let me know if anything else comes up.", "Glad it worked!",
    "Happy to help.", "Great, glad that sorted it out.",
)


# fmt: on

_GIT_TOOLS = ("git_status", "git_diff", "git_log")
_SYMBOL_TOOLS = ("goto_definition", "find_references", "hover", "cst_rename")
_FILE_ONLY_FIRST = (
    "read_file",
    "typecheck",
    "ruff_check",
    "document_symbols",
    "cst_find_pattern",
    "cst_add_import",
    *_DOMAIN_FILES,
)

# --- the generator ----------------------------------------------------------------------------


@dataclass
class _Spec:
    """One example before rendering: what the user says and what the assistant does."""

    kind: str
    user: str
    calls: list[Any]
    answer: str = ""
    response: str = ""


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


class _Generator:
    def __init__(self, experiment: Experiment, catalog: Catalog) -> None:
        self.catalog = catalog
        self.rng = random.Random(experiment.data.seed)
        missing = [t for t in catalog.names() if t not in _REQUESTS or t not in _CLAUSES]
        if missing:
            raise DataError(
                f"the generator has no templates for tool {missing[0]!r} of the catalog "
                "(add request and chain templates for it in pipeline/data.py)"
            )
        prompts = load_prompts(experiment.eval.prompts, catalog)
        self.eval_texts = [_norm(p.text) for p in prompts]
        avoid: list[str] = []
        for prompt in prompts:
            for expectation in prompt.expect:
                for values in expectation.args.values():
                    for value in values:
                        text = str(value).removeprefix("./")
                        if isinstance(value, str) and len(text) >= 4 and text not in avoid:
                            avoid.append(text)
        self.avoid = avoid
        self.seen: set[str] = set()

    # -- uniqueness and leakage

    def _ok(self, spec: _Spec) -> bool:
        key = _norm(spec.user)
        if key in self.seen or any(e in key for e in self.eval_texts):
            return False
        if any(a in spec.user for a in self.avoid):
            return False
        for call in spec.calls:
            for value in call.arguments.values():
                if isinstance(value, str) and value.removeprefix("./") in self.avoid:
                    return False
        self.seen.add(key)
        return True

    def _unique(self, make: Callable[[], _Spec], what: str) -> _Spec:
        for _ in range(2000):
            spec = make()
            if self._ok(spec):
                return spec
        raise DataError(f"could not generate another unique {what} example (pools exhausted)")

    # -- slots

    def _file(self) -> str:
        return f"{self.rng.choice(_SRC_DIRS)}/{self.rng.choice(_SRC_FILES)}"

    def _test_path(self, source: str | None = None) -> str:
        rng = self.rng
        if source is None and rng.random() < 0.25:
            return rng.choice(_TEST_DIRS) + rng.choice(("", "/"))
        stem = Path(source).stem if source else Path(rng.choice(_SRC_FILES)).stem
        return f"{rng.choice(_TEST_DIRS)}/test_{stem}.py"

    def _symbol(self) -> tuple[str, str]:
        if self.rng.random() < 0.55:
            return self.rng.choice(_FUNCTIONS), self.rng.choice(("function", "function", "method"))
        return self.rng.choice(_CLASSES), "class"

    def _renamed(self, name: str) -> str:
        rng = self.rng
        if name[0].isupper():
            options = [name.replace(k, v) for k, v in _CLASS_SWAPS.items() if name.endswith(k)]
            options += ["Legacy" + name, "Base" + name, name + "V2"]
        else:
            head, _, rest = name.partition("_")
            options = [f"{_VERB_SWAPS[head]}_{rest}"] if head in _VERB_SWAPS and rest else []
            options += [name + "_legacy", "_" + name, name + "_v2"]
        return rng.choice(options)

    def _domain_file(self, tool: str) -> str:
        dirs, names = _DOMAIN_FILES[tool]
        return f"{self.rng.choice(dirs)}/{self.rng.choice(names)}.py"

    def _slots(self, tool: str) -> dict[str, Any]:
        rng = self.rng
        if tool == "read_file":
            path = self._file() if rng.random() < 0.7 else rng.choice(_OTHER_FILES)
            return {"path": path}
        if tool == "write_file":
            paths, contents = rng.choice(_WRITES)
            return {
                "path": rng.choice(_WRITE_PREFIXES) + rng.choice(paths),
                "content": rng.choice(contents),
            }
        if tool == "run_command":
            return {"command": rng.choice(_COMMANDS)}
        if tool in ("typecheck", "ruff_check"):
            path = self._file() if rng.random() < 0.7 else rng.choice(_SRC_DIRS)
            return {"path": path + ("/" if "." not in path and rng.random() < 0.3 else "")}
        if tool == "pytest_run":
            return {"path": self._test_path()}
        if tool in ("goto_definition", "find_references", "hover"):
            symbol, what = self._symbol()
            return {
                "file_path": self._file(),
                "line": rng.randint(1, 600),
                "column": rng.randint(1, 48),
                "symbol": symbol,
                "what": what,
            }
        if tool == "document_symbols":
            return {"file_path": self._file()}
        if tool == "workspace_symbols":
            return {"query": self._symbol()[0]}
        if tool in ("git_status", "git_diff", "git_log"):
            path = rng.choice(_SRC_DIRS) if rng.random() < 0.8 else self._file()
            return {"path": path, "count": rng.choice((3, 5, 8, 10, 15, 20, 25, 30))}
        if tool == "cst_find_pattern":
            return {"file_path": self._file(), "pattern": rng.choice(_PATTERNS)}
        if tool == "cst_rename":
            old, what = self._symbol()
            return {
                "file_path": self._file(),
                "old_name": old,
                "new_name": self._renamed(old),
                "what": what,
            }
        if tool == "cst_add_import":
            return {"file_path": self._file(), "import_stmt": rng.choice(_IMPORTS)}
        if tool in _DOMAIN_FILES:
            path = self._domain_file(tool)
            return {"file_path": path, "name": Path(path).stem.replace("_", " ")}
        raise DataError(f"no argument generator for tool {tool!r}")  # pragma: no cover

    def _fill(self, tool: str, template: _Template, slots: dict[str, Any]) -> tuple[str, Call]:
        text, fixed = (template, {}) if isinstance(template, str) else template
        schema = self.catalog.tool(tool).parameters
        args: dict[str, Any] = {}
        for param in schema["properties"]:
            if param in fixed:
                args[param] = fixed[param]
            elif "{" + param + "}" in text or param in schema.get("required", ()):
                args[param] = slots[param]
        return text.format(**slots), Call(tool, args)

    def _choose(self, templates: Sequence[_Template], slots: dict[str, Any]) -> _Template:
        content = slots.get("content")
        multiline = isinstance(content, str) and "\n" in content
        usable = [t for t in templates if not multiline or ":\n{content}" in _text(t)]
        return self.rng.choice(usable or list(templates))

    # -- kinds

    def single(self, tool: str) -> _Spec:
        def make() -> _Spec:
            slots = self._slots(tool)
            text, call = self._fill(tool, self._choose(_REQUESTS[tool], slots), slots)
            return _Spec("single", text, [call])

        return self._unique(make, tool)

    def multi_turn(self, tool: str) -> _Spec:
        spec = self.single(tool)
        response, answer = self._response(spec.calls[0])
        return _Spec("multi_turn", spec.user, spec.calls, answer=answer, response=response)

    def chain(self, recipe: Sequence[str]) -> _Spec:
        return self._unique(lambda: self._chain(recipe), "chain " + "+".join(recipe))

    def _chain(self, recipe: Sequence[str]) -> _Spec:
        rng = self.rng
        domain = any(t in _DOMAIN_FILES for t in recipe)
        source = rng.choice(_DOMAIN_CHAIN_FILES) if domain else self._file()
        symbol, what = self._symbol()
        shared = {
            "line": rng.randint(1, 600),
            "column": rng.randint(1, 48),
            "symbol": symbol,
            "what": what,
            "old_name": symbol,
            "new_name": self._renamed(symbol),
        }
        git_path = rng.choice(_SRC_DIRS)
        mentioned: list[str] = []
        clauses: list[str] = []
        calls: list[Call] = []
        lead = ""
        # "For FILE: read it, lint it, ..." only when the first clause needs nothing but the file.
        if rng.random() < 0.25 and recipe[0] in _FILE_ONLY_FIRST:
            lead = rng.choice(("For {f}: ", "In {f}, ", "Take {f} and ")).format(f=source)
            mentioned.append(source)
        previous: dict[str, Any] = {}
        for tool in recipe:
            slots = self._slots(tool)
            if tool in ("read_file", "typecheck", "ruff_check"):
                slots["path"] = source
            elif tool == "pytest_run":
                slots["path"] = self._test_path(source)
            elif "file_path" in slots:
                slots["file_path"] = source
            if tool in ("goto_definition", "find_references", "hover", "cst_rename"):
                slots.update(shared)
            if tool in ("git_status", "git_diff", "git_log"):
                slots["path"] = git_path
            if tool == "run_command" and previous.get("write_file"):
                slots["command"] = f"bash {previous['write_file']}"
            if tool == "write_file":
                paths, contents = _WRITES[-1]
                slots["path"] = rng.choice(paths)
                slots["content"] = rng.choice([c for c in contents if "\n" not in c])
                previous["write_file"] = slots["path"]
            target = slots.get("file_path", slots.get("path"))
            first, same = _CLAUSES[tool]
            # A clause may say "it" for the file (and "its" for the symbol) once both are named.
            named = (
                isinstance(target, str)
                and target in mentioned
                and tool not in _GIT_TOOLS
                and (tool not in _SYMBOL_TOOLS or symbol in mentioned)
            )
            clause, call = self._fill(tool, self._choose(same if named else first, slots), slots)
            if isinstance(target, str) and tool not in _GIT_TOOLS:
                mentioned.append(target)
            if tool in _SYMBOL_TOOLS:
                mentioned.append(symbol)
            clauses.append(clause)
            calls.append(call)
        return _Spec("chain", lead + _join(clauses, rng, bool(lead)), calls)

    def no_tool(self) -> _Spec:
        def make() -> _Spec:
            rng = self.rng
            family = rng.random()
            if family < 0.3:
                acronym, meaning = rng.choice(_ACRONYMS)
                text = rng.choice(_ACRONYM_FRAMES).format(a=acronym)
                return _Spec("no_tool", text, [], answer=f"{acronym} stands for {meaning}")
            if family < 0.55:
                a, b, answer = rng.choice(_DIFFERENCES)
                return _Spec(
                    "no_tool", rng.choice(_DIFFERENCE_FRAMES).format(a=a, b=b), [], answer=answer
                )
            if family < 0.85:
                concept, answer = rng.choice(_CONCEPTS)
                return _Spec(
                    "no_tool", rng.choice(_CONCEPT_FRAMES).format(a=concept), [], answer=answer
                )
            return _Spec("no_tool", rng.choice(_THANKS), [], answer=rng.choice(_THANKS_REPLIES))

        return self._unique(make, "no-tool")

    # -- tool responses for multi-turn examples

    def _response(self, call: Call) -> tuple[str, str]:
        rng = self.rng
        a = call.arguments
        tool = call.name
        ok = rng.random() < 0.5
        line = rng.randint(2, 180)
        if tool == "read_file":
            func = rng.choice(_FUNCTIONS)
            return (
                f'"""Helpers for {Path(a["path"]).stem}."""\n\nimport logging\n\n\n'
                f'def {func}(value):\n    logging.debug("{func} %s", value)\n'
                "    return value\n",
                f"{a['path']} imports logging and defines one function, `{func}`, which "
                "logs its argument and returns it unchanged.",
            )
        if tool == "write_file":
            size = len(a["content"].encode()) + 1
            return (
                f"wrote {size} bytes to {a['path']}",
                f"Done: {a['path']} now holds the new text.",
            )
        if tool == "run_command":
            if ok:
                return (
                    f"$ {a['command']}\n(exit code 0)",
                    f"`{a['command']}` finished successfully with exit code 0.",
                )
            return (
                f"$ {a['command']}\nerror: step failed at line {line}\n(exit code 1)",
                f"`{a['command']}` failed with exit code 1: it reports an error at line {line}.",
            )
        if tool == "typecheck":
            if ok:
                return "Success: no issues found", f"No type errors in {a['path']}."
            func = rng.choice(_FUNCTIONS)
            return (
                f'{a["path"]}:{line}: error: Argument 1 to "{func}" has incompatible type '
                '"str"; expected "int"\nFound 1 error',
                f"One type error: at line {line}, `{func}` gets a str where it expects an int.",
            )
        if tool == "ruff_check":
            if ok:
                return "All checks passed!", f"Ruff found nothing to fix in {a['path']}."
            module = rng.choice(("os", "sys", "json", "re", "typing.Any"))
            return (
                f"{a['path']}:{line}:1: F401 `{module}` imported but unused\nFound 1 error.",
                f"Ruff reports one issue: `{module}` is imported but unused (line {line}).",
            )
        if tool == "pytest_run":
            passed = rng.randint(3, 60)
            if ok:
                return (
                    f"{passed} passed in {rng.randint(1, 9)}.{rng.randint(10, 99)}s",
                    f"All {passed} tests passed.",
                )
            name = f"test_{rng.choice(_FUNCTIONS)}"
            return (
                f"FAILED {a['path'].rstrip('/')}::{name} - AssertionError\n"
                f"1 failed, {passed} passed",
                f"One test fails ({name}, an AssertionError); the other {passed} pass.",
            )
        if tool == "goto_definition":
            where = self._file()
            return (
                f"{where}:{line}:5: {a['symbol']}",
                f"`{a['symbol']}` is defined in {where} at line {line}.",
            )
        if tool == "find_references":
            places = [f"{self._file()}:{rng.randint(2, 400)}" for _ in range(rng.randint(2, 4))]
            return (
                "\n".join(places),
                f"`{a['symbol']}` is used in {len(places)} places: {', '.join(places)}.",
            )
        if tool == "hover":
            kind = rng.choice(("int", "str", "bool", "dict[str, Any]", "None"))
            return (
                f"def {a['symbol']}(value: str, strict: bool = False) -> {kind}",
                f"`{a['symbol']}` takes a str (and an optional `strict` flag) and returns {kind}.",
            )
        if tool == "document_symbols":
            cls, func = rng.choice(_CLASSES), rng.choice(_FUNCTIONS)
            return (
                f"class {cls} (line {line})\n  def __init__ (line {line + 1})\n"
                f"def {func} (line {line + 20})",
                f"It defines class `{cls}` (line {line}) and function `{func}` (line {line + 20}).",
            )
        if tool == "workspace_symbols":
            where = self._file()
            return (f"{a['query']}  {where}:{line}", f"`{a['query']}` is in {where}, line {line}.")
        if tool == "git_status":
            if ok:
                return "nothing to commit, working tree clean", "The working tree is clean."
            changed = self._file()
            return (
                f" M {changed}\n?? notes.txt",
                f"{changed} is modified and notes.txt is untracked.",
            )
        if tool == "git_diff":
            if ok:
                return "(no changes)", "There are no changes to show."
            changed = self._file()
            return (
                f"--- a/{changed}\n+++ b/{changed}\n@@ -{line} +{line} @@\n-    retries = 3\n"
                "+    retries = 5",
                f"One change in {changed}: `retries` goes from 3 to 5 at line {line}.",
            )
        if tool == "git_log":
            who = rng.choice(("alice", "bob", "chen", "dana"))
            return (
                f"a1b2c3d Fix pagination bug ({who})\n9f8e7d6 Add retry settings ({who})",
                f"The latest commits are 'Fix pagination bug' and 'Add retry settings', "
                f"both by {who}.",
            )
        if tool == "cst_find_pattern":
            if ok:
                return "no matches", f"Nothing in {a['file_path']} matches `{a['pattern']}`."
            return (
                f"{a['file_path']}:{line}\n{a['file_path']}:{line + 14}",
                f"Two matches for `{a['pattern']}`, at lines {line} and {line + 14}.",
            )
        if tool == "cst_rename":
            count = rng.randint(2, 9)
            return (
                f"renamed {count} occurrences",
                f"Renamed `{a['old_name']}` to `{a['new_name']}` in {a['file_path']} "
                f"({count} occurrences).",
            )
        if tool == "cst_add_import":
            if ok:
                return "import added", f"Added `{a['import_stmt']}` to {a['file_path']}."
            return ("already imported", f"{a['file_path']} already has `{a['import_stmt']}`.")
        issue = rng.choice(_DOMAIN_ISSUES[tool])
        if ok:
            return "OK: no problems found", f"No problems found in {a['file_path']}."
        return (
            f"1 problem:\n  line {line}: {issue}",
            f"{a['file_path']} has one problem at line {line}: {issue}.",
        )


def _text(template: _Template) -> str:
    return template if isinstance(template, str) else template[0]


def _join(clauses: Sequence[str], rng: random.Random, has_lead: bool) -> str:
    """Clauses as one request; after a lead ("For FILE: ") only forms without an opener."""
    if len(clauses) == 2:
        forms = ["{0}, then {1}.", "{0} and then {1}.", "{0}; after that, {1}."]
        forms += (
            []
            if has_lead
            else [
                "First {0}, then {1}.",
                "Please {0} and {1}.",
                "Can you {0} and then {1}?",
                "{0}, and once that's done, {1}.",
            ]
        )
        form = rng.choice(forms)
    else:
        last = rng.choice((", then ", ", and then ", ", and finally ", " and "))
        head = ", ".join(f"{{{i}}}" for i in range(len(clauses) - 1))
        opener = "" if has_lead else rng.choice(("", "First ", "Please ", "Could you "))
        form = opener + head + last + f"{{{len(clauses) - 1}}}"
        form += "?" if opener == "Could you " else "."
    text = form.format(*clauses)
    return text if has_lead else text[0].upper() + text[1:]


def _plan(count: int) -> dict[str, int]:
    plan = {kind: round(count * KIND_SHARES[kind]) for kind in KINDS if kind != "no_tool"}
    plan["no_tool"] = count - sum(plan.values())
    if plan["no_tool"] < 0:  # pragma: no cover - the shares sum to 1
        raise DataError(f"cannot split {count} examples into kinds")
    return plan


def _cycle(items: Sequence[str], count: int, rng: random.Random) -> list[str]:
    """`count` items, each used equally often (give or take one), in shuffled rounds."""
    out: list[str] = []
    while len(out) < count:
        batch = list(items)
        rng.shuffle(batch)
        out.extend(batch)
    return out[:count]


def _messages(spec: _Spec, system: str, syntax: CallSyntax, mode: CallMode) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": system},
        {"role": "user", "content": spec.user},
    ]
    if not spec.calls:
        messages.append({"role": "assistant", "content": spec.answer})
        return messages
    calls = [wrap_code(spec.calls)] if mode == "code" else spec.calls
    messages.append(_call_message(calls, syntax))
    if spec.kind == "multi_turn":
        messages.append({"role": "tool", "content": spec.response})
        messages.append({"role": "assistant", "content": spec.answer})
    return messages


def _call_message(calls: Sequence[Call], syntax: CallSyntax, prose: str = "") -> dict[str, Any]:
    if syntax == "structured":
        return {"role": "assistant", "content": prose, "tool_calls": [c.openai() for c in calls]}
    text = "\n".join(render(c, syntax) for c in calls)
    return {"role": "assistant", "content": f"{prose}\n{text}" if prose else text}


def generate_records(
    experiment: Experiment,
    *,
    syntax: CallSyntax | None = None,
    mode: CallMode | None = None,
    catalog: Catalog | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """The train and valid records generate() writes, in memory."""
    catalog = catalog or load_catalog()
    syntax = syntax or experiment.data.syntax
    mode = mode or experiment.data.mode
    gen = _Generator(experiment, catalog)
    rng = gen.rng
    system = system_prompt(experiment, catalog)
    tools = catalog.openai_tools() if mode == "direct" else None
    splits: dict[str, list[dict[str, Any]]] = {}
    sizes = {"train": experiment.data.train_count, "valid": experiment.data.valid_count}
    for split, count in sizes.items():
        plan = _plan(count)
        specs = [gen.single(t) for t in _cycle(catalog.names(), plan["single"], rng)]
        specs += [gen.chain(r) for r in _cycle_recipes(plan["chain"], rng)]
        specs += [gen.multi_turn(t) for t in _cycle(catalog.names(), plan["multi_turn"], rng)]
        specs += [gen.no_tool() for _ in range(plan["no_tool"])]
        rng.shuffle(specs)
        records = []
        for spec in specs:
            record: dict[str, Any] = {"messages": _messages(spec, system, syntax, mode)}
            if tools is not None:
                record["tools"] = tools
            records.append(record)
        splits[split] = records
    return splits


def _cycle_recipes(count: int, rng: random.Random) -> list[tuple[str, ...]]:
    order = _cycle([str(i) for i in range(len(_CHAIN_RECIPES))], count, rng)
    return [_CHAIN_RECIPES[int(i)] for i in order]


def _stamp(experiment: Experiment, syntax: CallSyntax, mode: CallMode) -> dict[str, Any]:
    """What a generated dataset depends on; a different stamp means regenerate."""
    digest = hashlib.sha256()
    digest.update(Path(__file__).read_bytes())
    digest.update(system_prompt(experiment).encode())
    digest.update(json.dumps(load_catalog().openai_tools(), sort_keys=True).encode())
    digest.update(experiment.eval.prompts.read_bytes())
    return {
        "seed": experiment.data.seed,
        "train_count": experiment.data.train_count,
        "valid_count": experiment.data.valid_count,
        "syntax": syntax,
        "mode": mode,
        "inputs_sha256": digest.hexdigest(),
    }


def generate(
    experiment: Experiment,
    out: Path,
    *,
    syntax: CallSyntax | None = None,
    mode: CallMode | None = None,
) -> dict[str, int]:
    """Write out/train.jsonl and out/valid.jsonl for the experiment; returns lines per split.

    Deterministic: the same experiment (seed, counts, system prompt, catalog, eval prompts)
    writes the same bytes. `syntax` and `mode` default to the experiment's data settings.
    """
    syntax = syntax or experiment.data.syntax
    mode = mode or experiment.data.mode
    splits = generate_records(experiment, syntax=syntax, mode=mode)
    out = Path(out)
    for split, records in splits.items():
        write_jsonl(out / f"{split}.jsonl", records)
    stamp = out / STAMP
    stamp.write_text(json.dumps(_stamp(experiment, syntax, mode), indent=2) + "\n")
    return {split: len(records) for split, records in splits.items()}


def ensure_data(experiment: Experiment) -> Path:
    """The experiment's data folder, generated first when it is the default one and not current.

    A folder the user named (data.path) is never written to: missing files there raise.
    """
    folder = data_dir(experiment)
    files = [folder / f"{split}.jsonl" for split in SPLITS]
    if experiment.data.path:
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise DataError(
                f"data folder {folder} (data.path of {experiment.source}) has no "
                f"{' or '.join(missing)}"
            )
        return folder
    stamp = folder / STAMP
    if all(f.is_file() for f in files):
        if not stamp.is_file():
            return folder  # placed there by hand: leave it alone
        try:
            current = json.loads(stamp.read_text())
        except json.JSONDecodeError:
            current = None
        if current == _stamp(experiment, experiment.data.syntax, experiment.data.mode):
            return folder
    generate(experiment, folder)
    return folder


# --- describe ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Description:
    kind: str
    """single, chain, multi_turn or no_tool."""
    category: str
    """The called tool's category; multi_tool for chains; no_tool without calls."""
    tools: tuple[str, ...]
    """The calls of the example (code mode unwrapped), in order."""


def message_calls(message: Mapping[str, Any], catalog: Catalog | None = None) -> list[Call]:
    """The calls of one assistant message in any syntax; an unreadable one raises."""
    return read_message_calls(message, (catalog or load_catalog()).schemas(), strict=True)


def describe(record: Mapping[str, Any], catalog: Catalog | None = None) -> Description:
    """What kind of example a record is and which tools it calls (any syntax, either mode)."""
    catalog = catalog or load_catalog()
    signatures = catalog.signatures()
    categories = {t.name: t.category for t in catalog.tools}
    per_message = [
        unwrap(message_calls(m, catalog), signatures)
        for m in record["messages"]
        if m.get("role") == "assistant"
    ]
    called = [c.name for calls in per_message for c in calls]
    if not called:
        return Description(NO_TOOL, NO_TOOL, ())
    last = per_message[-1]
    if last:
        kind = "single" if len(last) == 1 else "chain"
        names = tuple(c.name for c in last)
    else:
        kind, names = "multi_turn", tuple(called)
    cats = {categories.get(n, "unknown") for n in names}
    category = cats.pop() if len(cats) == 1 and len(names) == 1 else MULTI_TOOL
    return Description(kind, category, names)


def summarize(
    splits: Mapping[str, Sequence[Mapping[str, Any]]], catalog: Catalog | None = None
) -> dict[str, dict[str, Counter[str]]]:
    """Per split: counts by kind, by category, and by the final trained call's tool."""
    catalog = catalog or load_catalog()
    out: dict[str, dict[str, Counter[str]]] = {}
    for split, records in splits.items():
        kinds: Counter[str] = Counter()
        categories: Counter[str] = Counter()
        finals: Counter[str] = Counter()
        for record in records:
            try:
                d = describe(record, catalog)
            except (CallParseError, KeyError, TypeError, AttributeError):
                kinds["unreadable"] += 1
                continue
            kinds[d.kind] += 1
            categories[d.category] += 1
            if d.kind == "single":
                finals[d.tools[0]] += 1
        out[split] = {"kind": kinds, "category": categories, "tool": finals}
    return out


# === convert =================================================================================
# Rewrites the tool calls of an existing dataset in another syntax and nothing else: prose in
# the assistant turn stays as content, other keys stay as they are, and a line that cannot be
# converted is copied unchanged and reported with its line number.

Target = Literal["structured", "json", "xml"]
TARGETS: tuple[Target, ...] = ("structured", "json", "xml")
_RESPONSE_RE = re.compile(r"\s*<tool_response>\n?(.*?)\n?</tool_response>\s*", re.DOTALL)


class ConvertError(ValueError):
    """One record cannot be converted without changing or losing a call."""


@dataclass(frozen=True)
class Problem:
    file: Path | None
    line: int
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.file else f"record {self.line}"
        return f"{where}: {self.message}"


def _calls_key(calls: Sequence[Call]) -> str:
    return json.dumps([[c.name, c.arguments] for c in calls], sort_keys=True)


def _tool_responses(content: Any) -> list[str] | None:
    """The responses of a seed-style user message made only of <tool_response> blocks."""
    if not isinstance(content, str) or "<tool_response>" not in content:
        return None
    pos, out = 0, []
    while pos < len(content):
        match = _RESPONSE_RE.match(content, pos)
        if match is None:
            return None
        out.append(match.group(1))
        pos = match.end()
    return out or None


def _read_assistant(
    message: Mapping[str, Any], index: int, catalog: Catalog, to: Target
) -> tuple[list[Call], str]:
    where = f"messages[{index}]"
    try:
        structured = structured_calls(message)
    except CallParseError as err:
        raise ConvertError(f"{where}: {err}") from err
    content = message.get("content")
    if content is None:
        content = ""
    if not isinstance(content, str):
        raise ConvertError(f"{where}: content is not a string")
    blocks = find_blocks(content)
    if structured and blocks:
        raise ConvertError(f"{where} has both tool_calls and <tool_call> text; which comes first?")
    if structured:
        return structured, content.strip()
    schemas = catalog.schemas()
    calls, prose, pos = [], [], 0
    for number, block in enumerate(blocks, start=1):
        try:
            call = parse_block(block, schemas)
        except CallParseError as err:
            raise ConvertError(f"{where}: tool call {number}: {err}") from err
        if block.syntax == "xml" and call.name not in schemas and call.arguments:
            raise ConvertError(
                f"{where}: XML call to {call.name!r}, which is not in the catalog: its argument "
                "types are unknown, so converting them could change them"
            )
        calls.append(call)
        prose.append(content[pos : block.start])
        pos = block.start + len(TOOL_CALL_START) + len(block.inner) + len(TOOL_CALL_END)
    prose.append(content[pos:])
    return calls, "".join(prose).strip()


def convert_record(record: Any, to: Target, catalog: Catalog | None = None) -> dict[str, Any]:
    """One record with its calls in `to`'s syntax; raises ConvertError when that would lose data."""
    if to not in TARGETS:
        raise ValueError(f"cannot convert to {to!r}; choose one of {', '.join(TARGETS)}")
    catalog = catalog or load_catalog()
    if not isinstance(record, dict) or not isinstance(record.get("messages"), list):
        raise ConvertError('not a chat example (needs an object with a "messages" list)')
    before: list[str] = []
    messages: list[Any] = []
    for i, message in enumerate(record["messages"]):
        if not isinstance(message, dict):
            raise ConvertError(f"messages[{i}] is not an object")
        role = message.get("role")
        if role == "assistant":
            calls, prose = _read_assistant(message, i, catalog, to)
            if not calls:
                messages.append(message)
                continue
            before.append(_calls_key(calls))
            new = {k: v for k, v in message.items() if k not in ("content", "tool_calls")}
            new.update(_call_message(calls, to, prose))
            if to == "structured" and message.get("tool_calls"):
                for tc, old in zip(new["tool_calls"], message["tool_calls"], strict=True):
                    if isinstance(old, dict) and "id" in old:
                        tc["id"] = old["id"]
            messages.append(new)
        elif role == "user" and to == "structured":
            responses = _tool_responses(message.get("content"))
            if responses is None:
                messages.append(message)
            else:
                messages.extend({"role": "tool", "content": r} for r in responses)
        else:
            messages.append(message)
    out = dict(record)
    out["messages"] = messages
    after = []
    for i, message in enumerate(messages):
        if message.get("role") == "assistant":
            try:
                calls = message_calls(message, catalog)
            except CallParseError as err:  # pragma: no cover - rendering guards against it
                raise ConvertError(
                    f"messages[{i}]: the converted call does not parse: {err}"
                ) from err
            if calls:
                after.append(_calls_key(calls))
    if after != before:
        raise ConvertError(
            f"converting to {to} would change a call's arguments (e.g. a value whose type the "
            "XML form cannot carry)"
        )
    return out


def convert(
    records: Iterable[Any], to: Target, catalog: Catalog | None = None
) -> tuple[list[Any], list[Problem]]:
    """Every record converted to `to`; one that cannot be is kept unchanged and reported."""
    catalog = catalog or load_catalog()
    out: list[Any] = []
    problems: list[Problem] = []
    for number, record in enumerate(records, start=1):
        try:
            out.append(convert_record(record, to, catalog))
        except ConvertError as err:
            out.append(record)
            problems.append(Problem(None, number, str(err)))
    return out, problems


def convert_file(
    src: Path, dst: Path, to: Target, catalog: Catalog | None = None
) -> tuple[int, list[Problem]]:
    """Convert one JSONL file line by line; returns (lines converted, problems).

    Output line N is input line N, converted, or copied unchanged when it could not be.
    """
    catalog = catalog or load_catalog()
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise DataError(f"{src} does not exist")
    try:
        text = src.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"{src}: not UTF-8 text ({err.reason} at byte {err.start})") from err
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    out_lines: list[str] = []
    problems: list[Problem] = []
    converted = 0
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            out_lines.append(line)
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            problems.append(Problem(src, number, f"not valid JSON ({err.msg}); copied unchanged"))
            out_lines.append(line)
            continue
        try:
            new = convert_record(record, to, catalog)
        except ConvertError as err:
            problems.append(Problem(src, number, f"{err}; copied unchanged"))
            out_lines.append(line)
            continue
        out_lines.append(json.dumps(new, ensure_ascii=False))
        converted += 1
    _write_lines(dst, out_lines)
    return converted, problems


def convert_path(
    src: Path, dst: Path, to: Target, catalog: Catalog | None = None
) -> tuple[dict[Path, int], list[Problem]]:
    """Convert a .jsonl file, or a folder's train/valid(/test).jsonl, into dst."""
    src, dst = Path(src), Path(dst)
    if src.is_dir():
        missing = [s for s in SPLITS if not (src / f"{s}.jsonl").is_file()]
        if missing:
            raise DataError(f"data folder {src} has no {missing[0]}.jsonl")
        if dst.exists() and not dst.is_dir():
            raise DataError(f"{dst} is a file; converting the folder {src} needs a folder")
        pairs = [(src / f"{s}.jsonl", dst / f"{s}.jsonl") for s in (*SPLITS, "test")]
        pairs = [(a, b) for a, b in pairs if a.is_file()]
    elif src.is_file():
        pairs = [(src, dst / src.name if dst.is_dir() else dst)]
    else:
        raise DataError(f"{src} does not exist")
    counts: dict[Path, int] = {}
    problems: list[Problem] = []
    for a, b in pairs:
        counts[b], found = convert_file(a, b, to, catalog)
        problems += found
    return counts, problems


def _write_lines(path: Path, lines: Sequence[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8", newline="") as fh:
        for line in lines:
            fh.write(line + "\n")
    tmp.replace(path)


# === command line ============================================================================


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
    gen.set_defaults(func=_cmd_generate)
    conv = sub.add_parser("convert", help="rewrite a dataset's tool calls in another syntax")
    conv.add_argument("--to", required=True, choices=TARGETS)
    conv.add_argument("src", metavar="IN", type=Path, help="a .jsonl file or a data folder")
    conv.add_argument("dst", metavar="OUT", type=Path, help="the output file or folder")
    conv.set_defaults(func=_cmd_convert)
    check = sub.add_parser("check", help="run the preflight on a data folder, with counts")
    check.add_argument("folder", metavar="DIR", type=Path, help="folder with train/valid.jsonl")
    check.add_argument("--experiment", default="tiny", help="experiment name or TOML path")
    check.add_argument("--base-model", default=None, help="hub id or folder for models.base")
    check.add_argument("--reference-model", default=None, help="hub id or folder (reference)")
    check.set_defaults(func=_cmd_check)
    return parser


def _cmd_check(args: argparse.Namespace) -> int:
    """The preflight's checks (the same code as tests/preflight) on the given folder."""
    from pipeline import preflight  # preflight reads data through this module

    experiment = with_overrides(
        load_experiment(args.experiment),
        base_model=args.base_model,
        reference_model=args.reference_model,
        data=str(args.folder),
    )
    splits = {s: [e.record for e in read_split(args.folder, s)] for s in SPLITS}
    print(format_summary(summarize(splits)))
    findings = preflight.run_preflight(experiment)
    print(preflight.explain(findings))
    return 1 if any(f.failed for f in findings) else 0


def _cmd_generate(args: argparse.Namespace) -> int:
    experiment = load_experiment(args.experiment)
    if args.out is None and experiment.data.path:
        raise DataError(
            f"{experiment.source} names its own data folder (data.path = {experiment.data.path}),"
            " which generate never overwrites: pass --out to generate elsewhere"
        )
    out = args.out if args.out is not None else data_dir(experiment)
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


def format_summary(summary: Mapping[str, Mapping[str, Counter[str]]]) -> str:
    splits = list(summary)
    lines = []
    for table in ("kind", "category", "tool"):
        keys: list[str] = []
        for split in splits:
            keys += [k for k in summary[split][table] if k not in keys]
        if table == "kind":
            keys = [k for k in KINDS if k in keys] + [k for k in keys if k not in KINDS]
        else:
            keys.sort()
        title = "tool (single calls)" if table == "tool" else table
        width = max([len(title), *map(len, keys)])
        lines.append(f"{title:<{width}}  " + "  ".join(f"{s:>6}" for s in splits))
        for key in keys:
            row = "  ".join(f"{summary[s][table][key]:>6}" for s in splits)
            lines.append(f"{key:<{width}}  {row}")
        lines.append("")
    return "\n".join(lines).rstrip()


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
    """`python -m pipeline data {generate,convert} ...`; 0 ok, 1 problems found, 2 bad input."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (DataError, ExperimentError, CatalogError, PromptError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
