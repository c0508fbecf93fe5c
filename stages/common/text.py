"""The one prompt/response template, shared by pretraining, selection scoring,
recovery, unlearning and evaluation, so that "the response tokens" mean the same
thing everywhere.

A record is ``{"id", "family", "instruction", "input", "output"}``.
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
    tokenizer: Any, rec: dict[str, Any], max_len: int = 256
) -> tuple[list[int], list[int]]:
    """Token ids of prompt+response+eos and labels masked to the response only.

    The prompt is tokenized on its own so the boundary is exact; truncation cuts
    the prompt from the left, never the response's first tokens.
    """
    prompt = tokenizer(format_prompt(rec), add_special_tokens=False)["input_ids"]
    resp = tokenizer(format_response(rec), add_special_tokens=False)["input_ids"]
    resp = resp + [tokenizer.eos_token_id]
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    keep = max_len - len(bos) - len(resp)
    if keep < 1:
        resp = resp[: max_len - len(bos) - 1]
        keep = 1
    prompt = prompt[-keep:]
    ids = bos + prompt + resp
    labels = [IGNORE_INDEX] * (len(bos) + len(prompt)) + resp
    return ids, labels


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
