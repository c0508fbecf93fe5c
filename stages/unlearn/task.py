"""Build an unlearning training task from a job (same on every DeepSpeed rank).

Example ``i`` pairs forget record ``i`` with a retain record drawn by a seeded
permutation (cycled), so an epoch is one pass over the forget set and every
step sees as many retain as forget examples (OpenUnlearning's ForgetRetain
pairing). The reference the methods compare with is the input model itself.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stages.common.train.inputs import input_identity, job_fingerprint, resolve_masks
from stages.common.train.loop import TrainTask

REF_CACHE = "ref_logps-{key}.safetensors"


@dataclass
class Setup:
    """What a method's ``make_loss`` may use besides its params."""

    model: Any  # the model being trained (its input weights at build time)
    model_dir: Path
    device: str
    seed: int
    forget: list[tuple[list[int], list[int]]]
    pad_id: int
    cache_dir: Path | None
    cache_key: str
    _reference: Any = field(default=None, repr=False)

    def reference(self) -> Any:
        """A frozen copy of the input model on the device, loaded once."""
        if self._reference is None:
            from stages.common.io import load_model

            ref = load_model(self.model_dir).to(self.device).eval()
            ref.requires_grad_(False)
            self._reference = ref
        return self._reference

    def ref_logps(self, batch_size: int = 32) -> Any:
        """log π_ref(y|x) of every forget example (B,), computed once with the
        input weights and cached in the checkpoint folder (keyed on the input
        model, the forget set, max_len and the encoding), so a resumed run
        reuses it."""
        import torch
        from safetensors.torch import load_file, save_file

        from stages.common.text import collate
        from stages.unlearn.losses import sequence_logprob

        path = None
        if self.cache_dir is not None:
            path = Path(self.cache_dir) / REF_CACHE.format(key=self.cache_key)
            if path.exists():
                return load_file(str(path))["logp"]
        model = self.model.to(self.device)
        was_training = model.training
        model.eval()
        out = []
        with torch.no_grad():
            for s in range(0, len(self.forget), batch_size):
                b = collate(self.forget[s : s + batch_size], self.pad_id)
                b = {k: v.to(self.device) for k, v in b.items()}
                logits = model(
                    input_ids=b["input_ids"], attention_mask=b["attention_mask"]
                ).logits
                out.append(sequence_logprob(logits, b["labels"])[0].double().cpu())
        model.train(was_training)
        logp = torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)
        if path is not None:  # every rank writes the same bytes; replace is atomic
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp{random.getrandbits(32)}")
            save_file({"logp": logp.contiguous()}, str(tmp))
            tmp.replace(path)
        return logp


def pair_collate(examples: list[tuple[int, Any, Any]], pad_id: int) -> dict[str, Any]:
    """Forget rows as ``input_ids``/``attention_mask``/``labels`` (+ their
    ``forget_index``), retain rows under ``retain_*`` keys when present."""
    import torch

    from stages.common.text import collate

    batch = collate([f for _, f, _ in examples], pad_id)
    batch["forget_index"] = torch.tensor([i for i, _, _ in examples])
    if examples and examples[0][2] is not None:
        r = collate([x for _, _, x in examples], pad_id)
        batch.update({f"retain_{k}": v for k, v in r.items()})
    return batch


def retain_order(n_forget: int, n_retain: int, seed: int) -> list[int]:
    """Retain index paired with each forget index: seeded permutations, cycled."""
    rng = random.Random(f"{seed}:retain-pairing")
    order: list[int] = []
    while len(order) < n_forget:
        perm = list(range(n_retain))
        rng.shuffle(perm)
        order += perm
    return order[:n_forget]


def encoding_key(params: Any) -> list[str]:
    """What else shapes the forget rows' ids and labels: the template and
    train_on_inputs when not the defaults (so default keys stay as they were)."""
    from stages.common.templates import DEFAULT_TEMPLATE

    out = []
    if params.template not in (None, DEFAULT_TEMPLATE):
        out.append(f"template={params.template}")
    if params.train_on_inputs:
        out.append("train_on_inputs")
    return out


def build(job: dict[str, Any], device: str) -> TrainTask:
    """Load model, masks, forget/retain data; make the method's loss; a task."""
    from stages.common.io import load_model, load_tokenizer, read_dataset
    from stages.common.text import encode_example
    from stages.common.train.launch import job_params
    from stages.common.train.masking import check_masks
    from stages.unlearn import METHODS

    params = job_params(job)
    method = METHODS.load(params.method)
    inputs = job["inputs"]
    model_dir = Path(inputs["model"])
    tok = load_tokenizer(model_dir)
    if tok.eos_token_id is None:
        raise ValueError(f"model: the tokenizer in {model_dir} has no eos token")
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id

    def encode(folder: str) -> list[tuple[list[int], list[int]]]:
        return [
            encode_example(
                tok, r, params.max_len, params.template, params.train_on_inputs
            )
            for r in read_dataset(Path(folder))
        ]

    forget = encode(inputs["forget"])
    if not forget:
        raise ValueError(f"forget: {inputs['forget']} has no records")
    retain = encode(inputs["retain"]) if inputs.get("retain") else None
    if retain is not None and not retain:
        raise ValueError(f"retain: {inputs['retain']} has no records")
    pairs = retain_order(len(forget), len(retain), job["seed"]) if retain else None
    examples = [
        (i, f, retain[pairs[i]] if retain and pairs else None)
        for i, f in enumerate(forget)
    ]

    model = load_model(model_dir)
    masks = resolve_masks(params.mask, model, model_dir)
    check_masks(model, masks)
    key = hashlib.sha256(
        "|".join(
            [
                input_identity(job, "model"),
                input_identity(job, "forget"),
                str(params.max_len),
                *encoding_key(params),
            ]
        ).encode()
    ).hexdigest()[:16]
    ckpt = Path(job["checkpoint_dir"]) if job.get("checkpoint_dir") else None
    setup = Setup(model, model_dir, device, job["seed"], forget, pad_id, ckpt, key)
    loss_fn = method.make_loss(params, setup)  # may set requires_grad (RMU)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}

    def fresh() -> Any:
        m = load_model(model_dir)
        for n, p in m.named_parameters():
            p.requires_grad_(n in trainable)
        return m

    def finalize(trained: Any, out_dir: Path) -> dict[str, float]:
        from stages.common.train.inputs import save_trained

        n = sum(p.numel() for p in trained.parameters() if p.requires_grad)
        out = {"trainable_params": float(n)}
        out.update(save_trained(trained, masks, tok, out_dir))
        return out

    return TrainTask(
        model=model,
        loss_fn=loss_fn,
        examples=examples,
        pad_id=pad_id,
        fingerprint=job_fingerprint(job),
        masks={n: m for n, m in masks.items() if n in trainable},
        finalize=finalize,
        fresh_model=fresh,
        collate=pair_collate,
    )
