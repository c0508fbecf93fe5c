"""Batched greedy generation from left-padded prompts (HF ``generate``)."""

from __future__ import annotations

from typing import Any

from stages.common.device import model_device


def prompt_ids(
    tokenizer: Any, rec: dict[str, Any], template: str | None = None
) -> list[int]:
    """bos + prompt tokens (the generation prompt of ``chat`` included),
    exactly as ``encode_example`` lays out training rows under ``template``."""
    from stages.common.templates import get_template

    return get_template(template).prompt_ids(tokenizer, rec)


def left_pad(rows: list[list[int]], pad_id: int) -> tuple[Any, Any]:
    """(input_ids, attention_mask) of shape (B, T), padded on the left."""
    import torch

    width = max(map(len, rows))
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row) :] = torch.tensor(row)
        mask[i, width - len(row) :] = 1
    return ids, mask


def greedy_generate(
    model: Any,
    tokenizer: Any,
    records: list[dict[str, Any]],
    max_new_tokens: int,
    batch_size: int = 32,
    progress: Any = None,
    template: str | None = None,
    by_length: bool = False,
) -> list[str]:
    """Greedy completions (special tokens dropped) of each record's prompt
    under ``template`` (None: carp), on the model's device; ``by_length``:
    batches of similar prompt length (longest first; results in order)."""
    import torch

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    prompts = [prompt_ids(tokenizer, r, template) for r in records]
    order = list(range(len(records)))
    if by_length:
        order.sort(key=lambda i: -len(prompts[i]))
    dev = model_device(model)
    batches = range(0, len(records), batch_size)
    if progress is not None:
        batches = progress(batches, "generate", total=len(batches))
    out = [""] * len(records)
    model.eval()
    for start in batches:
        idx = order[start : start + batch_size]
        ids, mask = left_pad([prompts[i] for i in idx], pad)
        with torch.no_grad():
            gen = model.generate(
                input_ids=ids.to(dev),
                attention_mask=mask.to(dev),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=pad,
                eos_token_id=tokenizer.eos_token_id,
            )
        new = gen[:, ids.shape[1] :].cpu()
        for i, text in zip(
            idx, tokenizer.batch_decode(new, skip_special_tokens=True), strict=True
        ):
            out[i] = text
    return out
