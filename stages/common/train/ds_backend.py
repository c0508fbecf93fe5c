"""DeepSpeed backend of the training loop (raw ``deepspeed.initialize``;
ZeRO, Rajbhandari et al. 2020). Runs inside each launcher rank."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from stages.common.train.masking import install_grad_masks
from stages.common.train.torch_backend import adamw, lr_lambda


class DeepSpeedBackend:
    """One rank of a data-parallel ZeRO run; the loop sees the same interface
    as the in-process backend."""

    def __init__(
        self,
        model: Any,
        cfg: Any,
        total: int,
        masks: dict[str, Any],
        ds_config: dict[str, Any],
        device: Any,
    ) -> None:
        import deepspeed
        import torch
        import torch.distributed as dist

        self.device = torch.device(device)
        # masks before initialize: ZeRO-3 partitions the parameters there, and
        # the hooks must see full-shape gradients before they are reduced
        install_grad_masks(model, masks)
        trainable = [p for p in model.parameters() if p.requires_grad]
        fn = lr_lambda(cfg, total)
        optimizer = None
        if "optimizer" not in ds_config:  # offload brings DeepSpeed's CPU Adam
            optimizer = adamw(trainable, cfg)  # exactly the in-process optimizer
        self.engine, _, _, _ = deepspeed.initialize(
            model=model,
            model_parameters=trainable,
            optimizer=optimizer,
            lr_scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, fn),
            config=ds_config,
        )
        self.rank = dist.get_rank()
        self.world_size = dist.get_world_size()

    def autocast(self) -> Any:
        return contextlib.nullcontext()  # the engine casts the model itself

    def backward(self, loss: Any) -> None:
        self.engine.backward(loss)  # scales by 1/grad_accum
        self.engine.step()  # steps the optimizer at accumulation boundaries only

    def step(self) -> float:
        norm = self.engine.get_global_grad_norm()
        return float("nan") if norm is None else float(norm)

    def lr(self) -> float:
        return float(self.engine.get_lr()[0])

    def reduce(self, values: Any) -> Any:
        import torch.distributed as dist

        values = values.to(self.device)
        dist.all_reduce(values)
        return values.cpu()

    def barrier(self) -> None:
        import torch.distributed as dist

        dist.barrier()

    def save_checkpoint(self, root: Path, tag: str) -> None:
        """ZeRO partitions via the engine + this rank's RNG state (dropout)."""
        import torch
        from deepspeed.accelerator import get_accelerator

        self.engine.save_checkpoint(str(root), tag=tag, save_latest=False)
        rng = {"cpu": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["device"] = get_accelerator().get_rng_state()
        torch.save(rng, root / tag / f"rng_rank{self.rank}.pt")

    def load_checkpoint(self, root: Path, tag: str) -> None:
        # DeepSpeed reads its own partition files with torch.load(weights_only=
        # False); they were written by this stage into its checkpoint folder
        # and are only read when state.json carries this run's fingerprint.
        import torch
        from deepspeed.accelerator import get_accelerator

        path, _ = self.engine.load_checkpoint(str(root), tag=tag)
        if path is None:
            raise RuntimeError(f"DeepSpeed could not load checkpoint {root / tag}")
        f = root / tag / f"rng_rank{self.rank}.pt"
        if f.exists():
            rng = torch.load(f, weights_only=True)
            torch.set_rng_state(rng["cpu"])
            if "device" in rng:
                get_accelerator().set_rng_state(rng["device"])

    def gather_trainable(self) -> dict[str, Any]:
        """Full fp32 values of every trainable parameter (rank 0; {} elsewhere).

        A collective: every rank calls it. Works for ZeRO 1/2/3 and reads the
        fp32 master weights, so bf16/fp16 runs save full-precision results.
        """
        from deepspeed.utils import safe_get_full_fp32_param

        out = {}
        for name, p in self.engine.module.named_parameters():
            if not p.requires_grad:
                continue
            full = safe_get_full_fp32_param(p)
            if self.rank == 0:
                out[name] = full.detach().float().cpu().clone()
        return out
