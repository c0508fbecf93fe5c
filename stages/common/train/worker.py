"""One DeepSpeed rank: ``deepspeed ... --module stages.common.train.worker
--job job.json`` (the launcher appends ``--local_rank=N``)."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--job", required=True, type=Path)
    ap.add_argument(
        "--local_rank", type=int, default=int(os.environ.get("LOCAL_RANK", 0))
    )
    args = ap.parse_args(argv)
    job = json.loads(args.job.read_text())

    import deepspeed
    import torch
    from deepspeed.accelerator import get_accelerator

    from stages.common.train.ds_backend import DeepSpeedBackend
    from stages.common.train.launch import RESULT_FILE, job_params, load_builder
    from stages.common.train.loop import train
    from stages.common.train.schedule import total_steps

    acc = get_accelerator()
    deepspeed.init_distributed(dist_backend=acc.communication_backend_name())
    if acc.device_name() == "cuda":
        acc.set_device(args.local_rank)
        device = f"cuda:{args.local_rank}"
    else:
        device = acc.device_name()
    torch.manual_seed(job["seed"])
    cfg = job_params(job)
    ds_config = json.loads(Path(job["deepspeed_config"]).read_text())
    task = load_builder(job["builder"])(job, device)
    world = torch.distributed.get_world_size()
    total = total_steps(
        len(task.examples),
        cfg.micro_batch * cfg.grad_accum * world,
        cfg.epochs,
        cfg.steps,
    )
    backend = DeepSpeedBackend(task.model, cfg, total, task.masks, ds_config, device)
    sink = None
    if backend.rank == 0:  # only rank 0 reports; the parent forwards to MLflow
        steps_file = open(job["steps_file"], "a", buffering=1)  # noqa: SIM115

        def sink(rec: dict[str, float]) -> None:
            steps_file.write(json.dumps(rec) + "\n")

    ckpt = Path(job["checkpoint_dir"]) if job["checkpoint_dir"] else None
    result = train(task, cfg, backend, job["seed"], on_step=sink, checkpoint_dir=ckpt)
    state = backend.gather_trainable()
    if backend.rank == 0:
        model = task.fresh_model()
        bad = model.load_state_dict(state, strict=False).unexpected_keys
        if bad:
            raise RuntimeError(f"gathered weights do not fit the model: {bad[:3]}")
        if task.finalize is not None:
            result.update(task.finalize(model, Path(job["out_dir"])))
        result["world_size"] = world
        Path(job["work_dir"], RESULT_FILE).write_text(json.dumps(result))
    backend.barrier()
    # gloo's worker threads must be joined before the interpreter finalizes:
    # without this a rank sometimes aborts at exit ("terminate called without
    # an active exception", pytorch/pytorch#190489) after a finished run
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
