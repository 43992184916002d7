"""routegate: a pytest-driven acceptance gate for small models that route coding-tool calls."""
