"""ChatML chat-template pieces shared by the models routegate builds (tiny, SmolLM2).

Each template is a model-specific head (how the system turn and any tool list render) followed
by one message loop, identical for every model: tool results as `<tool_response>` blocks in a
user turn, assistant tool calls in one of two syntaxes. The two variants of a model differ only
in the call block (Qwen3's JSON or Qwen3-Coder's XML), so everything before an assistant's reply
renders byte-identically and a comparison between them measures the call syntax alone.

mlx-lm picks its tool parser by searching the template text
(`mlx_lm.tokenizer_utils._infer_tool_parser`): the JSON block contains `<tool_call>` and
`tool_call.name` (-> `json_tools`), the XML block `<tool_call>\\n<function=` (-> `qwen3_coder`).
Without those strings the server answers "model does not support tool calling", so keep them
when editing, and keep `<tool_call>\\n<function=` out of any head a JSON variant uses.
"""

from __future__ import annotations

from typing import Literal

Syntax = Literal["json", "xml"]

MESSAGES = r"""{%- for message in messages[ns.first:] %}
    {%- if message.content is string %}
        {%- set content = message.content %}
    {%- elif message.content is defined and message.content is not none %}
        {%- set content = message.content | tojson %}
    {%- else %}
        {%- set content = '' %}
    {%- endif %}
    {%- if message.role == 'tool' %}
        {%- if loop.first or loop.previtem.role != 'tool' %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' ~ content ~ '\n</tool_response>' }}
        {%- if loop.last or loop.nextitem.role != 'tool' %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- elif message.role == 'assistant' and message.tool_calls %}
        {{- '<|im_start|>assistant\n' ~ content }}
        {%- for call in message.tool_calls %}
            {%- set tool_call = call.function if call.function is defined else call %}
            {%- set arguments = tool_call.arguments if tool_call.arguments is defined else {} %}
            {%- if content or not loop.first %}
                {{- '\n' }}
            {%- endif %}
"""
"""The loop over messages after the head; the head sets `ns.first` (1 when it rendered the
system message, else 0)."""

JSON_CALL = r"""            {{- '<tool_call>\n{"name": "' ~ tool_call.name }}
            {{- '", "arguments": ' }}
            {%- if arguments is string %}
                {{- arguments }}
            {%- else %}
                {{- arguments | tojson }}
            {%- endif %}
            {{- '}\n</tool_call>' }}
"""

XML_CALL = r"""            {%- if arguments is not mapping %}
                {{- raise_exception('xml tool calls need `arguments` as a mapping') }}
            {%- endif %}
            {{- '<tool_call>\n<function=' ~ tool_call.name ~ '>\n' }}
            {%- for arg_name, arg_value in arguments | items %}
                {{- '<parameter=' ~ arg_name ~ '>\n' }}
                {%- if arg_value is string %}
                    {{- arg_value }}
                {%- else %}
                    {{- arg_value | tojson }}
                {%- endif %}
                {{- '\n</parameter>\n' }}
            {%- endfor %}
            {{- '</function>\n</tool_call>' }}
"""
"""Qwen3-Coder's form; it needs `arguments` as a mapping, as Qwen3-Coder's own template does."""

TAIL = r"""        {%- endfor %}
        {{- '<|im_end|>\n' }}
    {%- else %}
        {{- '<|im_start|>' ~ message.role ~ '\n' ~ content ~ '<|im_end|>\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
"""


def template(head: str, syntax: Syntax) -> str:
    """`head` + the message loop with `syntax`'s call block."""
    if syntax == "json":
        call = JSON_CALL
    elif syntax == "xml":
        call = XML_CALL
    else:
        raise ValueError(f"unknown tool-call syntax {syntax!r}; expected 'json' or 'xml'")
    return head + MESSAGES + call + TAIL
