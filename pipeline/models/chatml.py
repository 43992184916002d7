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

Either syntax can carry Qwen3's think block (`think=True`, the `-think` model references):
`THINK_EDITS` give the shared text Qwen3-8B's thinking behaviour and change nothing else, so a
think variant renders byte-identically to its plain one but for the block. As Qwen3's template
does, an assistant turn after the last user query opens with the block (`<think>`, newline, the
reasoning, newline, `</think>`, two newlines) when it is the conversation's last message or has
reasoning, and the generation prompt holds the empty block only when `enable_thinking` is false
(what mlx-lm passes for it depends on the vocabulary: `smollm2`). The edits hold no tool-call
strings: a think variant's parser is its plain variant's.
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


_LAST_QUERY = r"""{%- set ns.last_query = messages | length - 1 %}
{%- set ns.searching = true %}
{%- for message in messages[::-1] %}
    {%- if ns.searching and message.role == 'user' and message.content is string
            and not (message.content.startswith('<tool_response>')
                     and message.content.endswith('</tool_response>')) %}
        {%- set ns.searching = false %}
        {%- set ns.last_query = messages | length - 1 - loop.index0 %}
    {%- endif %}
{%- endfor %}
"""
"""Qwen3's index of the last user query (a tool response sent as a user turn is none): only
assistant turns after it carry a think block."""

_LOOP = "{%- for message in messages[ns.first:] %}\n"
_CONTENT_SET = r"""        {%- set content = '' %}
    {%- endif %}
"""
_THINK_BLOCK = r"""    {%- set think = '' %}
    {%- if message.role == 'assistant' %}
        {%- if message.reasoning_content is string %}
            {%- set reasoning = message.reasoning_content %}
        {%- elif '</think>' in content %}
            {%- set reasoning = content.split('</think>')[0].rstrip('\n') %}
            {%- set reasoning = reasoning.split('<think>')[-1].lstrip('\n') %}
            {%- set content = content.split('</think>')[-1].lstrip('\n') %}
        {%- else %}
            {%- set reasoning = '' %}
        {%- endif %}
        {%- if ns.first + loop.index0 > ns.last_query and (loop.last or reasoning) %}
            {%- set think = '<think>\n' ~ reasoning.strip('\n') ~ '\n</think>\n\n' %}
            {%- set content = content.lstrip('\n') %}
        {%- endif %}
    {%- endif %}
"""
"""Qwen3's block for one message: the reasoning comes from `reasoning_content` or from a
`<think>...</think>` at the start of the content (taken out of the content either way)."""

_GENERATION_PROMPT = r"""    {{- '<|im_start|>assistant\n' }}
"""
_THINKING_OFF = r"""    {%- if enable_thinking is defined and enable_thinking is false %}
        {{- '<think>\n\n</think>\n\n' }}
    {%- endif %}
"""

THINK_EDITS: tuple[tuple[str, str], ...] = (
    (_LOOP, _LAST_QUERY + _LOOP),
    (_CONTENT_SET, _CONTENT_SET + _THINK_BLOCK),
    (r"'<|im_start|>assistant\n' ~ content }}", r"'<|im_start|>assistant\n' ~ think ~ content }}"),
    (r"'\n' ~ content ~ '<|im_end|>\n' }}", r"'\n' ~ think ~ content ~ '<|im_end|>\n' }}"),
    (_GENERATION_PROMPT, _GENERATION_PROMPT + _THINKING_OFF),
)
"""(shared text, its think variant) pairs, each shared text found exactly once in a template:
find the last query, compute the block, write it after both assistant openings (a reply with
calls, a reply without), and put the empty block into the generation prompt with thinking off."""


THINK_SUFFIX = "-think"


def variant_name(syntax: Syntax, think: bool) -> str:
    """How a model reference and its cache folder name a template variant: `json`, `json-think`."""
    return syntax + THINK_SUFFIX if think else syntax


def template(head: str, syntax: Syntax, *, think: bool = False) -> str:
    """`head` + the message loop with `syntax`'s call block, with Qwen3's think block if `think`."""
    if syntax == "json":
        call = JSON_CALL
    elif syntax == "xml":
        call = XML_CALL
    else:
        raise ValueError(f"unknown tool-call syntax {syntax!r}; expected 'json' or 'xml'")
    text = head + MESSAGES + call + TAIL
    if not think:
        return text
    for shared, thinking in THINK_EDITS:
        if text.count(shared) != 1:  # an edit of the shared text moved what a think edit finds
            raise ValueError(f"the think variant expects {shared!r} once in the template")
        text = text.replace(shared, thinking)
    return text
