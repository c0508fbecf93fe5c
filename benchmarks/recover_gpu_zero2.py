"""GPU check: the recover stage under DeepSpeed ZeRO-2 + bf16 on one GPU vs a
bare PyTorch bf16-autocast loop on the same GPU, same model, data and batch.

    .venv/bin/python benchmarks/recover_gpu_zero2.py [--hidden 1024 --layers 8]

Exits with status 2 and a message when no CUDA device is visible.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def bare_bf16(folders: dict[str, Path], steps: int, micro: int, lr: float) -> float:
    """Hand-written loop: fp32 weights, bf16 autocast, AdamW; tokens/s."""
    import torch

    from stages.common.io import load_model, load_tokenizer, read_dataset
    from stages.common.text import collate, encode_example
    from stages.common.train.schedule import global_batch
    from stages.recover.losses import response_nll

    tok = load_tokenizer(folders["sparse"])
    ex = [encode_example(tok, r) for r in read_dataset(folders["data"])]
    model = load_model(folders["sparse"]).cuda().train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    tokens, secs = 0, 0.0
    for step in range(steps):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        b = collate(
            [ex[i] for i in global_batch(len(ex), step, micro, 0)], tok.pad_token_id
        )
        b = {k: v.cuda(non_blocking=True) for k, v in b.items()}
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = model(
                input_ids=b["input_ids"], attention_mask=b["attention_mask"]
            ).logits
        loss = response_nll(logits, b["labels"])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss.item()
        torch.cuda.synchronize()
        if step >= 2:  # skip CUDA warm-up steps on both sides alike
            secs += time.perf_counter() - t0
            tokens += int(b["attention_mask"].sum())
    return tokens / secs


def stage_tokens_per_s(
    folders: dict[str, Path],
    work: Path,
    steps: int,
    micro: int,
    lr: float,
    launcher: str,
) -> float:
    import csv

    from pipelines.contract import RunContext
    from stages.recover import run
    from stages.recover.full import Params

    ds = {"num_gpus": 1, "zero_stage": 2}
    params = Params(
        model="m",
        data="d",
        steps=steps,
        micro_batch=micro,
        lr=lr,
        precision="bf16",
        checkpoint_every=0,
        launcher=launcher,
        deepspeed=ds,
    )
    out = work / f"out-{launcher}"
    out.mkdir()
    run(
        params,
        {"model": folders["sparse"], "data": folders["data"]},
        out,
        RunContext(name=f"gpu-{launcher}"),
    )
    with open(out / "loss.csv") as f:
        rows = list(csv.DictReader(f))[2:]  # the same warm-up skip as the bare loop
    return sum(float(r["tokens"]) for r in rows) / sum(
        float(r["seconds"]) for r in rows
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--records", type=int, default=4096)
    ap.add_argument("--micro-batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=40)
    args = ap.parse_args()

    import torch

    if not torch.cuda.is_available():
        print(
            "recover_gpu_zero2: needs a CUDA GPU (torch.cuda.is_available() is "
            "False); run it on a GPU machine. Nothing was measured.",
            file=sys.stderr,
        )
        sys.exit(2)
    from tests.tiny import pruned_pair

    results = ROOT / "benchmarks" / "results"
    results.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="recover_gpu_zero2_", dir=results))
    folders = pruned_pair(
        work,
        n_records=args.records,
        hidden=args.hidden,
        layers=args.layers,
        pretrain_steps=0,
    )
    lr = 3e-4
    bare = bare_bf16(folders, args.steps, args.micro_batch, lr)
    ds = stage_tokens_per_s(
        folders, work, args.steps, args.micro_batch, lr, "deepspeed"
    )
    inproc = stage_tokens_per_s(folders, work, args.steps, args.micro_batch, lr, "none")
    print(
        f"GPU {torch.cuda.get_device_name(0)}; hidden {args.hidden}, "
        f"{args.layers} layers, micro-batch {args.micro_batch}, bf16"
    )
    print(f"bare bf16 loop         {bare:12,.0f} tokens/s")
    print(f"recover ZeRO-2 bf16    {ds:12,.0f} tokens/s  ratio {ds / bare:.3f}")
    print(f"recover in-process     {inproc:12,.0f} tokens/s  ratio {inproc / bare:.3f}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
