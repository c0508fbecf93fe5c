"""In-process PyTorch backend of the training loop (``launcher: none``)."""

from __future__ import annotations

import contextlib
import json
import math
import os
from functools import partial
from pathlib import Path
from typing import Any

from stages.common.train.masking import install_grad_masks, reapply
from stages.common.train.schedule import lr_factor

TRAINABLE_FILE = "trainable.safetensors"
OPTIM_FILE = "optim.pt"


def adamw(params: list[Any], cfg: Any) -> Any:
    """AdamW with the fused kernel: on sparse models the reference kernel's
    sqrt over all-zero second moments is ~3x slower (measured on CPU)."""
    import torch

    if not params:
        raise ValueError("the model has no trainable parameters")
    return torch.optim.AdamW(
        params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True
    )


def lr_lambda(cfg: Any, total: int) -> Any:
    warm = math.floor(cfg.warmup * total)
    return partial(lr_factor, total=total, warmup_steps=warm, schedule=cfg.schedule)


def make_optimizer(model: Any, cfg: Any, total: int) -> tuple[Any, Any]:
    """AdamW over the trainable parameters + the warmup/decay LambdaLR."""
    import torch

    opt = adamw([p for p in model.parameters() if p.requires_grad], cfg)
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg, total))


class TorchBackend:
    """Plain PyTorch: AdamW, gradient accumulation, clipping, masks."""

    rank = 0
    world_size = 1

    def __init__(
        self, model: Any, cfg: Any, total: int, masks: dict[str, Any], device: Any
    ) -> None:
        import torch

        self.device = torch.device(device)
        self.model = model.to(self.device)
        self.masks = {k: v.to(self.device) for k, v in masks.items()}
        self.hooks = install_grad_masks(self.model, self.masks)
        reapply(self.model, self.masks)
        self.opt, self.sched = make_optimizer(self.model, cfg, total)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.accum = cfg.grad_accum
        self.max_norm = cfg.max_grad_norm
        self.bf16 = cfg.precision == "bf16"

    def autocast(self) -> Any:
        import torch

        if self.bf16:
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def backward(self, loss: Any) -> None:
        (loss / self.accum).backward()

    def step(self) -> float:
        import torch

        if self.max_norm is not None:
            norm = torch.nn.utils.clip_grad_norm_(self.params, self.max_norm)
        else:
            grads = [p.grad for p in self.params if p.grad is not None]
            norm = torch.nn.utils.get_total_norm(grads)
        self.opt.step()
        self.sched.step()
        self.opt.zero_grad(set_to_none=True)
        return float(norm)

    def lr(self) -> float:
        return float(self.sched.get_last_lr()[0])

    def reduce(self, values: Any) -> Any:
        return values

    def barrier(self) -> None:
        return None

    def save_checkpoint(self, root: Path, tag: str) -> None:
        """Trainable weights (safetensors) + optimizer, scheduler, RNG states."""
        import torch
        from safetensors.torch import save_file

        tmp = root / f".{tag}.tmp-{os.getpid()}"
        tmp.mkdir(parents=True, exist_ok=True)
        weights = {
            n: p.detach().cpu().contiguous()
            for n, p in self.model.named_parameters()
            if p.requires_grad
        }
        save_file(weights, str(tmp / TRAINABLE_FILE))
        state = {
            "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict(),
            "rng_cpu": torch.get_rng_state(),
        }
        if torch.cuda.is_available():
            state["rng_cuda"] = torch.cuda.get_rng_state_all()
        torch.save(state, tmp / OPTIM_FILE)
        (tmp / "backend.json").write_text(json.dumps({"backend": "torch"}))
        os.replace(tmp, root / tag)

    def load_checkpoint(self, root: Path, tag: str) -> None:
        import torch
        from safetensors.torch import load_file

        weights = load_file(str(root / tag / TRAINABLE_FILE), device=str(self.device))
        missing = self.model.load_state_dict(weights, strict=False)
        if missing.unexpected_keys:
            raise ValueError(
                f"checkpoint {root / tag} does not fit the model: "
                f"unexpected {missing.unexpected_keys[:3]}"
            )
        state = torch.load(
            root / tag / OPTIM_FILE, weights_only=True, map_location=self.device
        )
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng_cpu"].cpu())
        if "rng_cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.cpu() for s in state["rng_cuda"]])
