"""Tokens/s of the recover stage vs a bare PyTorch loop, same model, data, batch.

Both run in this process on one thread, interleaved step by step: the stage
trains, and after each of its steps (from its metrics callback, outside its
step timer) the bare loop takes its own step. Load from other jobs on a shared
machine therefore hits both sides alike. Steps are timed in process CPU
seconds by default (``--clock wall`` for wall time); the first 3 steps of each
side are warm-up and not counted. Methods: full, lora on the dense model,
lora on the sparse model (the masked update costs an extra matmul per
adapted layer; ``lora-sparse-merge-only`` trains the plain update and only
masks the merge), distill.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/recover_throughput.py
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
import types
import uuid
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CLOCK = time.process_time
WARMUP = 3
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def bare_steps(
    method: str,
    folders: dict[str, Path],
    micro: int,
    lr: float,
    seed: int,
    fused: bool | None,
) -> Iterator[tuple[int, float]]:
    """The loop a person would write by hand; yields (tokens, seconds) a step."""
    import torch

    from stages.common.io import load_model, load_tokenizer, read_dataset
    from stages.common.text import collate, encode_example
    from stages.common.train.schedule import global_batch
    from stages.recover.losses import kd_kl, response_logits, response_nll

    src = folders["dense" if method == "lora-dense" else "sparse"]
    tok = load_tokenizer(src)
    ex = [encode_example(tok, r) for r in read_dataset(folders["data"])]
    model = load_model(src)
    teacher = load_model(folders["dense"]).eval() if method == "distill" else None
    if method.startswith("lora"):
        from peft import LoraConfig, get_peft_model

        torch.manual_seed(seed)
        model = get_peft_model(
            model,
            LoraConfig(
                r=16,
                lora_alpha=32,
                lora_dropout=0.05,
                task_type="CAUSAL_LM",
                target_modules=TARGETS,
            ),
        )
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0, fused=fused)
    model.train()
    step = 0
    while True:
        t0 = CLOCK()
        b = collate(
            [ex[i] for i in global_batch(len(ex), step, micro, seed)], tok.pad_token_id
        )
        logits = model(
            input_ids=b["input_ids"], attention_mask=b["attention_mask"]
        ).logits
        loss = response_nll(logits, b["labels"])
        if teacher is not None:
            with torch.no_grad():
                tl = teacher(
                    input_ids=b["input_ids"], attention_mask=b["attention_mask"]
                ).logits
            kd = kd_kl(
                response_logits(logits, b["labels"])[0],
                response_logits(tl, b["labels"])[0],
                2.0,
            )
            loss = 0.5 * kd + 0.5 * loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss.item()
        yield int(b["attention_mask"].sum()), CLOCK() - t0
        step += 1


def interleaved(
    method: str,
    folders: dict[str, Path],
    steps: int,
    micro: int,
    lr: float,
    work: Path,
    fused: bool | None,
) -> tuple[float, float]:
    """(stage tokens/s, bare tokens/s) from one step-interleaved run."""
    from pipelines.contract import RunContext
    from stages.recover import METHODS, run

    name = "lora" if method.startswith("lora") else method
    kw = dict(
        model="m",
        data="d",
        steps=steps,
        micro_batch=micro,
        lr=lr,
        seed=0,
        checkpoint_every=0,
    )
    inputs = {
        "model": folders["dense" if method == "lora-dense" else "sparse"],
        "data": folders["data"],
    }
    if name == "distill":
        kw["teacher"] = "t"
        inputs["teacher"] = folders["dense"]
    if method == "lora-sparse-merge-only":  # dense update in training, masked merge
        kw["masked_forward"] = False
    params = METHODS.load(name).Params(**kw)
    bare = bare_steps(method, folders, micro, lr, 0, fused)
    stage_rec: list[tuple[float, float]] = []
    bare_rec: list[tuple[int, float]] = []

    def after_stage_step(metrics: dict[str, float], step: int) -> None:
        stage_rec.append((metrics["tokens"], metrics["seconds"]))
        bare_rec.append(next(bare))

    out = work / f"out-{uuid.uuid4().hex[:6]}"
    out.mkdir()
    run(params, inputs, out, RunContext(log_fn=after_stage_step, name=method))

    def rate(rec: list) -> float:
        rec = rec[WARMUP:]
        return sum(t for t, _ in rec) / sum(s for _, s in rec)

    return rate(stage_rec), rate(bare_rec)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--micro-batch", type=int, default=16)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--records", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--clock", choices=("cpu", "wall"), default="cpu")
    ap.add_argument(
        "--reference-adamw",
        action="store_true",
        help="bare loop uses torch's unfused AdamW (the stage: fused)",
    )
    ap.add_argument("--methods", default="full,lora-dense,lora-sparse,distill")
    ap.add_argument(
        "--out",
        type=Path,
        default=ROOT / "benchmarks" / "results" / "recover_throughput.md",
    )
    args = ap.parse_args()

    import torch

    from stages.common.train import loop
    from tests.tiny import pruned_pair

    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    loop.time = types.SimpleNamespace(perf_counter=CLOCK)  # the stage's step timer
    torch.set_num_threads(1)
    fused = None if args.reference_adamw else True
    results = ROOT / "benchmarks" / "results"
    results.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="recover_throughput_", dir=results))
    folders = pruned_pair(
        work,
        n_records=args.records,
        hidden=args.hidden,
        layers=args.layers,
        pretrain_steps=5,
    )
    rows = []
    for method in args.methods.split(","):
        lr = 1e-3 if method.startswith("lora") else 3e-4
        runs = [
            interleaved(method, folders, args.steps, args.micro_batch, lr, work, fused)
            for _ in range(args.repeats)
        ]
        for stage, bare in runs:
            print(
                f"{method}: bare {bare:,.0f} tok/s, stage {stage:,.0f} tok/s, "
                f"ratio {stage / bare:.3f}",
                flush=True,
            )
        rows.append(
            (
                method,
                statistics.median(b for _, b in runs),
                statistics.median(s for s, _ in runs),
                statistics.median(s / b for s, b in runs),
            )
        )
    table = [
        "| method | bare loop tok/s | recover stage tok/s | ratio |",
        "|---|---:|---:|---:|",
    ]
    table += [f"| {m} | {b:,.0f} | {s:,.0f} | {r:.3f} |" for m, b, s, r in rows]
    adam = "unfused (torch default)" if args.reference_adamw else "fused"
    text = (
        f"CPU, 1 thread, {args.clock} clock, tiny Llama hidden={args.hidden} "
        f"layers={args.layers}, micro-batch {args.micro_batch}, {args.steps} "
        f"steps interleaved step by step ({WARMUP} warm-up steps dropped), "
        f"median of {args.repeats}; bare-loop AdamW {adam}\n\n"
        + "\n".join(table)
        + "\n"
    )
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
