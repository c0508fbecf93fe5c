"""carp's own prompt/response template (the world's), shared by pretraining,
selection scoring, recovery, unlearning and evaluation, so that "the response
tokens" mean the same thing everywhere; other templates (alpaca, the
tokenizer's chat template, Jinja strings) live in ``stages.common.templates``.

A world record is ``{"id", "family", "instruction", "input", "output"}``.
"""

from __future__ import annotations

from typing import Any

IGNORE_INDEX = -100


def format_prompt(rec: dict[str, Any]) -> str:
    """Prompt text: instruction, then the input when non-empty, then the cue."""
    inp = rec.get("input") or ""
    body = f"{rec['instruction']} {inp}".strip() if inp else rec["instruction"]
    return f"Q: {body}\nA:"


def format_response(rec: dict[str, Any]) -> str:
    """Response text as the model must produce it after the prompt."""
    return f" {rec['output']}"


def encode_example(
    tokenizer: Any,
    rec: dict[str, Any],
    max_len: int = 256,
    template: str | None = None,
    train_on_inputs: bool = False,
) -> tuple[list[int], list[int]]:
    """Token ids of bos + prompt + response (+ eos) and labels masked to the
    response only (``train_on_inputs``: the prompt too, never bos).

    ``template`` names a prompt template (``stages.common.templates``: carp,
    alpaca, chat or a Jinja string; None = carp, the layout above). The prompt
    is tokenized on its own so the boundary is exact; truncation cuts the
    prompt from the left, never the response's first tokens.
    """
    from stages.common.templates import get_template

    return get_template(template).encode(tokenizer, rec, max_len, train_on_inputs)


def collate(batch: list[tuple[list[int], list[int]]], pad_id: int) -> dict[str, Any]:
    """Right-pad a list of (ids, labels) into tensors ``input_ids``,
    ``attention_mask`` and ``labels`` of shape (B, T)."""
    import torch

    width = max(len(ids) for ids, _ in batch)
    ids_t = torch.full((len(batch), width), pad_id, dtype=torch.long)
    lab_t = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
    att_t = torch.zeros((len(batch), width), dtype=torch.long)
    for i, (ids, labels) in enumerate(batch):
        ids_t[i, : len(ids)] = torch.tensor(ids)
        lab_t[i, : len(labels)] = torch.tensor(labels)
        att_t[i, : len(ids)] = 1
    return {"input_ids": ids_t, "attention_mask": att_t, "labels": lab_t}
