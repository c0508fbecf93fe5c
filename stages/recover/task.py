"""Build a recover training task from a job (same on every DeepSpeed rank)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stages.common.train.inputs import job_fingerprint, resolve_masks
from stages.common.train.loop import TrainTask


def build(job: dict[str, Any], device: str) -> TrainTask:
    """Load model, masks, data and teacher; wrap with the method; return a task."""
    import torch

    from stages.common.io import load_model, load_tokenizer, read_dataset
    from stages.common.text import encode_example
    from stages.common.train.launch import job_params
    from stages.common.train.masking import check_masks
    from stages.recover import METHODS

    params = job_params(job)
    method = METHODS.load(params.method)
    model_dir = Path(job["inputs"]["model"])
    tok = load_tokenizer(model_dir)
    if tok.eos_token_id is None:
        raise ValueError(
            f"model: the tokenizer in {model_dir} has no eos token; "
            "the response template needs one"
        )
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    records = read_dataset(Path(job["inputs"]["data"]))
    examples = [
        encode_example(tok, r, params.max_len, params.template, params.train_on_inputs)
        for r in records
    ]

    base = load_model(model_dir)
    masks = resolve_masks(params.mask, base, model_dir)
    check_masks(base, masks)
    teacher = None
    if job["inputs"].get("teacher"):
        teacher = load_model(Path(job["inputs"]["teacher"])).to(device).eval()
        teacher.requires_grad_(False)
        if teacher.config.vocab_size != base.config.vocab_size:
            raise ValueError(
                f"teacher: vocabulary {teacher.config.vocab_size} differs from the "
                f"student's {base.config.vocab_size}; distillation needs one tokenizer"
            )

    def fresh() -> Any:
        torch.manual_seed(job["seed"])  # same adapter init on every rank
        return method.wrap(params, load_model(model_dir), masks)

    model = fresh()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    train_masks = {n: m for n, m in masks.items() if n in trainable}

    def finalize(trained: Any, out_dir: Path) -> dict[str, float]:
        return export(params, method, trained, masks, tok, out_dir)

    return TrainTask(
        model=model,
        loss_fn=method.make_loss(params, teacher),
        examples=examples,
        pad_id=pad_id,
        fingerprint=job_fingerprint(job),
        masks=train_masks,
        finalize=finalize,
        fresh_model=fresh,
    )


def export(
    params: Any,
    method: Any,
    trained: Any,
    masks: dict[str, Any],
    tok: Any,
    out_dir: Path,
) -> dict[str, float]:
    """Unwrap (merge LoRA), pin the zeros, save model + masks."""
    from stages.common.train.inputs import save_trained

    n_trainable = sum(p.numel() for p in trained.parameters() if p.requires_grad)
    model, extra = method.unwrap(params, trained, masks, out_dir)
    out = {**extra, "trainable_params": float(n_trainable)}
    out.update(save_trained(model, masks, tok, out_dir))
    return out
