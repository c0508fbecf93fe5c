"""Prompt templates: how a record becomes prompt tokens and response labels.

One template drives select's response-token scores, recover's and unlearn's
loss masks and evaluate's prompts, so "the response tokens" mean the same thing
everywhere. ``get_template(spec)`` takes a registered name (``TEMPLATES``:
``carp``, ``alpaca``, ``chat``) or a user Jinja string (anything holding
``{{``, rendered with the record's fields; the record's ``output`` is the
response).

Record shapes (``record_shape``): instruction ``{instruction, input, output}``,
chat ``{messages: [{role, content}, ...]}`` (prompt = every message before the
last assistant turn, response = that turn; the string templates read the last
user message before it as the instruction) and text ``{text}`` (no prompt:
every token is a label, whatever the template).

Layout of an encoded row: ``[bos] + prompt + response`` (the string templates
append eos to the response; ``chat`` keeps the template's own end of turn).
Labels are -100 on bos and on the prompt unless ``train_on_inputs``;
truncation cuts the prompt from the left, never the response's first tokens.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from functools import lru_cache
from typing import Any

from stages.common.text import IGNORE_INDEX, format_prompt, format_response

Encoded = tuple[list[int], list[int]]

ALPACA_INPUT = (
    "Below is an instruction that describes a task, paired with an input that "
    "provides further context. Write a response that appropriately completes the "
    "request.\n\n### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n"
    "### Response:\n"
)
ALPACA_NO_INPUT = (
    "Below is an instruction that describes a task. Write a response that "
    "appropriately completes the request.\n\n### Instruction:\n{instruction}\n\n"
    "### Response:\n"
)


def record_shape(rec: dict[str, Any]) -> str:
    """``chat`` (has ``messages``), ``text`` (``text`` and no instruction) or
    ``instruction``."""
    if "messages" in rec:
        return "chat"
    if "text" in rec and "instruction" not in rec:
        return "text"
    return "instruction"


def _rid(rec: dict[str, Any]) -> str:
    return repr(rec.get("id", "?"))


def _field(rec: dict[str, Any], name: str) -> str:
    """A string field of a record, or an error naming the record and field."""
    v = rec.get(name)
    if not isinstance(v, str):
        raise ValueError(
            f"record {_rid(rec)}: field '{name}' must be a string "
            f"(got {type(v).__name__}); fix the record or its field mapping"
        )
    return v


def _need(rec: dict[str, Any], name: str) -> None:
    """The field is present (carp formats any value, as it always has)."""
    if rec.get(name) is None:
        raise ValueError(
            f"record {_rid(rec)}: missing field '{name}'; fix the record or its "
            "field mapping"
        )


def chat_split(rec: dict[str, Any]) -> tuple[list[dict[str, str]], str]:
    """(messages before the last assistant turn, that turn's content)."""
    msgs = rec.get("messages")
    if not isinstance(msgs, list) or not all(
        isinstance(m, dict)
        and isinstance(m.get("role"), str)
        and isinstance(m.get("content"), str)
        for m in msgs
    ):
        raise ValueError(
            f"record {_rid(rec)}: 'messages' must be a list of "
            "{role, content} objects with string values"
        )
    last = max((i for i, m in enumerate(msgs) if m["role"] == "assistant"), default=-1)
    if last < 0:
        raise ValueError(
            f"record {_rid(rec)}: chat record has no assistant message to train on "
            "or score; add one or drop the record"
        )
    prompt = [{"role": m["role"], "content": m["content"]} for m in msgs[:last]]
    return prompt, msgs[last]["content"]


def as_instruction(rec: dict[str, Any]) -> dict[str, Any]:
    """An instruction view of a record: a chat record's last user message before
    the last assistant turn becomes the instruction, that turn the output."""
    if record_shape(rec) != "chat":
        return rec
    prompt, response = chat_split(rec)
    users = [m["content"] for m in prompt if m["role"] == "user"]
    if not users:
        raise ValueError(
            f"record {_rid(rec)}: chat record has no user message before its last "
            "assistant turn; the string templates need one as the instruction"
        )
    out = {k: v for k, v in rec.items() if k != "messages"}
    return {**out, "instruction": users[-1], "input": "", "output": response}


def _tokens(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _split_bos(tokenizer: Any, ids: list[int]) -> tuple[list[int], list[int]]:
    """(bos, rest): the rendered text's own leading bos when it has one (no
    double bos), else the tokenizer's bos when it has one."""
    bos_id = tokenizer.bos_token_id
    if bos_id is None:
        return [], ids
    if ids and ids[0] == bos_id:
        return [bos_id], ids[1:]
    return [bos_id], ids


def assemble(
    bos: list[int],
    prompt: list[int],
    resp: list[int],
    max_len: int,
    train_on_inputs: bool = False,
) -> Encoded:
    """``bos + prompt + resp`` in ``max_len`` tokens (the prompt cut from the
    left, the response from the right only when it alone does not fit) and its
    labels: -100 on bos, and on the prompt unless ``train_on_inputs``."""
    keep = max_len - len(bos) - len(resp)
    if keep < 1:
        resp = resp[: max_len - len(bos) - 1]
        keep = 1
    prompt = prompt[-keep:]
    ids = bos + prompt + resp
    masked = prompt if train_on_inputs else [IGNORE_INDEX] * len(prompt)
    return ids, [IGNORE_INDEX] * len(bos) + masked + resp


def encode_text(tokenizer: Any, rec: dict[str, Any], max_len: int) -> Encoded:
    """A text record: bos + text + eos, the start kept, every token but bos a
    label."""
    ids = _tokens(tokenizer, _field(rec, "text"))
    if tokenizer.eos_token_id is not None:
        ids = ids + [tokenizer.eos_token_id]
    bos, body = _split_bos(tokenizer, ids)
    body = body[: max_len - len(bos)]
    return bos + body, [IGNORE_INDEX] * len(bos) + body


class Template(ABC):
    """Base: subclasses give ``prompt_text`` / ``response_text`` (string
    templates) and may override ``_parts`` (``chat``)."""

    spec = ""  # what the declaration named: the template's identity

    @abstractmethod
    def prompt_text(self, rec: dict[str, Any], tokenizer: Any = None) -> str:
        """The rendered prompt (``chat`` needs the tokenizer)."""

    @abstractmethod
    def response_text(self, rec: dict[str, Any]) -> str:
        """The text the model must produce after the prompt."""

    def _parts(
        self, tokenizer: Any, rec: dict[str, Any]
    ) -> tuple[list[int], list[int], list[int]]:
        """(bos, prompt ids, response ids incl. eos) of a non-text record."""
        rec = as_instruction(rec)
        bos, prompt = _split_bos(tokenizer, _tokens(tokenizer, self.prompt_text(rec)))
        resp = _tokens(tokenizer, self.response_text(rec)) + [tokenizer.eos_token_id]
        return bos, prompt, resp

    def encode(
        self,
        tokenizer: Any,
        rec: dict[str, Any],
        max_len: int,
        train_on_inputs: bool = False,
    ) -> Encoded:
        """(ids, labels) of one record in at most ``max_len`` tokens."""
        if record_shape(rec) == "text":
            return encode_text(tokenizer, rec, max_len)
        bos, prompt, resp = self._parts(tokenizer, rec)
        return assemble(bos, prompt, resp, max_len, train_on_inputs)

    def prompt_ids(self, tokenizer: Any, rec: dict[str, Any]) -> list[int]:
        """bos + the rendered prompt (incl. any generation prompt), exactly the
        leading tokens of ``encode`` before truncation: what evaluation feeds."""
        if record_shape(rec) == "text":
            bos, _ = _split_bos(tokenizer, [])
            return bos
        bos, prompt, _ = self._parts(tokenizer, rec)
        return bos + prompt


class CarpTemplate(Template):
    """``Q: {instruction} {input}\\nA:`` then `` {output}``: the world's own."""

    spec = "carp"

    def prompt_text(self, rec: dict[str, Any], tokenizer: Any = None) -> str:
        rec = as_instruction(rec)
        _need(rec, "instruction")
        return format_prompt(rec)

    def response_text(self, rec: dict[str, Any]) -> str:
        rec = as_instruction(rec)
        _need(rec, "output")
        return format_response(rec)


class AlpacaTemplate(Template):
    """The Stanford Alpaca prompt (with-input and no-input variants); the
    response follows ``### Response:\\n`` directly."""

    spec = "alpaca"

    def prompt_text(self, rec: dict[str, Any], tokenizer: Any = None) -> str:
        rec = as_instruction(rec)
        inst, inp = _field(rec, "instruction"), rec.get("input") or ""
        if inp:
            return ALPACA_INPUT.format(instruction=inst, input=inp)
        return ALPACA_NO_INPUT.format(instruction=inst)

    def response_text(self, rec: dict[str, Any]) -> str:
        return _field(as_instruction(rec), "output")


class JinjaTemplate(Template):
    """A user Jinja string rendered with the record's fields (a sandbox,
    StrictUndefined); the record's ``output`` is the response."""

    def __init__(self, source: str) -> None:
        self.spec = source
        self.compiled = compile_jinja(source)

    def prompt_text(self, rec: dict[str, Any], tokenizer: Any = None) -> str:
        from jinja2 import UndefinedError

        view = as_instruction(rec)
        try:
            return self.compiled.render(view)
        except UndefinedError as e:
            m = re.search(r"'([^']+)' is undefined", str(e))
            name = m.group(1) if m else str(e)
            raise ValueError(
                f"record {_rid(rec)}: the Jinja template needs field '{name}', "
                "which the record lacks; add it or change the template"
            ) from None

    def response_text(self, rec: dict[str, Any]) -> str:
        return _field(as_instruction(rec), "output")


class ChatTemplate(Template):
    """The tokenizer's own chat template (``apply_chat_template``): the prompt
    rendered with ``add_generation_prompt=True`` must be a token prefix of the
    rendered conversation; the response is the rest (the template's end of
    turn included, no eos added)."""

    spec = "chat"

    def messages(self, rec: dict[str, Any]) -> tuple[list[dict[str, str]], str]:
        if record_shape(rec) == "chat":
            return chat_split(rec)
        inst, inp = _field(rec, "instruction"), rec.get("input") or ""
        user = f"{inst}\n\n{inp}" if inp else inst
        return [{"role": "user", "content": user}], _field(rec, "output")

    def prompt_text(self, rec: dict[str, Any], tokenizer: Any = None) -> str:
        if tokenizer is None:
            raise ValueError("template 'chat': rendering a prompt needs the tokenizer")
        prompt, _ = self.messages(rec)
        return _render(tokenizer, prompt, True)

    def response_text(self, rec: dict[str, Any]) -> str:
        return self.messages(rec)[1]

    def _parts(
        self, tokenizer: Any, rec: dict[str, Any]
    ) -> tuple[list[int], list[int], list[int]]:
        prompt, response = self.messages(rec)
        full_msgs = [*prompt, {"role": "assistant", "content": response}]
        p_ids = _tokens(tokenizer, _render(tokenizer, prompt, True))
        f_ids = _tokens(tokenizer, _render(tokenizer, full_msgs, False))
        if f_ids[: len(p_ids)] != p_ids:
            raise ValueError(
                f"record {_rid(rec)}: the chat template of tokenizer "
                f"{_tok_name(tokenizer)} renders a prompt (add_generation_prompt) "
                "that is not a token prefix of the whole conversation, so the "
                "response cannot be masked; use template: carp|alpaca or a Jinja "
                "string"
            )
        bos, prompt_ids = _split_bos(tokenizer, p_ids)
        return bos, prompt_ids, f_ids[len(p_ids) :]


def _tok_name(tokenizer: Any) -> str:
    return repr(getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__)


def _render(tokenizer: Any, messages: list[dict[str, str]], gen: bool) -> str:
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            f"tokenizer {_tok_name(tokenizer)} has no chat template; use "
            "template: carp|alpaca or give a Jinja string"
        )
    text = tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=gen
    )
    return str(text)


@lru_cache(maxsize=64)
def compile_jinja(source: str) -> Any:
    """A sandboxed Jinja template with StrictUndefined that keeps a trailing
    newline (a prompt ending in ``\\n`` must keep it)."""
    from jinja2 import StrictUndefined, TemplateSyntaxError
    from jinja2.sandbox import SandboxedEnvironment

    env = SandboxedEnvironment(undefined=StrictUndefined, keep_trailing_newline=True)
    try:
        return env.from_string(source)
    except TemplateSyntaxError as e:
        raise ValueError(
            f"template: invalid Jinja (line {e.lineno}: {e.message})"
        ) from None


TEMPLATES: dict[str, type[Template]] = {
    "carp": CarpTemplate,
    "alpaca": AlpacaTemplate,
    "chat": ChatTemplate,
}
DEFAULT_TEMPLATE = "carp"
TEMPLATE_DESCRIPTION = (
    "Prompt template: carp | alpaca | chat | a Jinja string; default the "
    "pipeline's `template` (carp)"
)
TRAIN_ON_INPUTS_DESCRIPTION = (
    "Train on the prompt tokens too (not bos); default: loss on the response only"
)


def is_jinja(spec: str) -> bool:
    return "{{" in spec


def check_template(spec: str | None) -> str | None:
    """A declaration's ``template`` value, checked: a registered name or a
    Jinja string that compiles (None = the pipeline's, carp by default)."""
    if spec is None:
        return None
    if not isinstance(spec, str):
        raise ValueError("template: must be a name or a Jinja string")
    if is_jinja(spec):
        compile_jinja(spec)
        return spec
    if spec not in TEMPLATES:
        known = ", ".join(TEMPLATES)
        raise ValueError(
            f"unknown template '{spec}'; known: {known}, or a Jinja string"
        )
    return spec


@lru_cache(maxsize=64)
def get_template(spec: str | None = None) -> Template:
    """The template a declaration names (None: carp)."""
    spec = check_template(spec) or DEFAULT_TEMPLATE
    if is_jinja(spec):
        return JinjaTemplate(spec)
    return TEMPLATES[spec]()


def pack(examples: list[Encoded], max_len: int) -> list[Encoded]:
    """Concatenate (ids, labels) rows and cut them into windows of exactly
    ``max_len`` tokens, labels following their tokens; the tail that does not
    fill a window is dropped (llm-compressor's packing)."""
    if max_len < 2:
        raise ValueError(f"packing: max_len must be >= 2 (got {max_len})")
    ids = [t for row, _ in examples for t in row]
    labels = [t for _, lab in examples for t in lab]
    if len(ids) != len(labels):
        raise ValueError("packing: every example needs one label per token")
    n = len(ids) // max_len
    if n == 0:
        raise ValueError(
            f"packing: {len(ids)} tokens do not fill one window of max_len "
            f"{max_len}; lower max_len or add data"
        )
    return [
        (ids[i * max_len : (i + 1) * max_len], labels[i * max_len : (i + 1) * max_len])
        for i in range(n)
    ]
