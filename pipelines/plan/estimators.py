"""Memory and time of one node, by kind (a registry: kind -> estimator).

Every estimator is pure: node params, the input model's shape, the hardware.
Bytes are peaks of the busiest device; seconds are FLOPs over the declared
throughput (an order of magnitude, not a promise). Formulas, with P = params,
b = bytes per value, h = hidden, L = layers, T = tokens:

* prune: the model in CPU memory (P·b) plus, on the device, one decoder block
  and the calibration activations in and out of it (2·n·seqlen·h·b), one
  batch's attention scores and MLP activations; SparseGPT adds a float32
  Hessian per linear input (in²·4), Wanda one norm per input column.
* recover/unlearn: model states from DeepSpeed's own ZeRO estimators
  (``estimate_zero2/3_model_states_mem_needs``; ZeRO-1 by the ZeRO paper's
  4P + 12P/N) or, in-process, 16 B per trainable param (fp32 AdamW) plus the
  activations of one micro-batch (Korthikanti et al. 2022: T·h·(34 + 5·a·s/h)
  bytes per layer at 16 bit, doubled for fp32).
* merge: streaming, so the largest tensor of every input plus the output
  (float32) — not the models.
* select: the scorer's model and one token batch; PASER's kNN graph N·k and
  the spectral embedding N·d.
* evaluate: one model at a time plus a batch's activations and KV cache.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pipelines.plan.shapes import DTYPE_BYTES, Shape

GiB = 2**30
PROMPT_TOKENS = 64  # a formatted question of the world, generously
# Resident size of a stage process before it holds any data (VmHWM, Python
# 3.11, torch 2.13 CPU, transformers 5): carp's own imports 33 MiB (50 with
# records read); + torch + transformers with a model class 381 MiB; training adds
# autograd/optimizer workspace, the tokenizer and matplotlib for the loss curve
# (recover's peak minus prune's on the micro pipeline); the world stage trains a
# BPE tokenizer. Runtime constants, not model terms: on a real model they are
# noise, on the micro pipeline they are most of the peak.
PYTHON_BASE = 50 * 2**20
TOKENIZER_TRAIN = 30 * 2**20
TORCH_BASE = 400 * 2**20
TRAIN_EXTRA = 150 * 2**20
# SparseGPT prunes one column at a time (stages/prune/sparsegpt.py): per column
# 7 small eager tensor ops (CUDA launch / CPU dispatch latency) and a rank-1
# update of the rows x blocksize/2 rest of its block, read and written in fp32
# (memory-bound). Latency and bandwidth of a device, order of magnitude.
SPARSEGPT_STEP_OPS = 7
OP_SECONDS = {"gpu": 10e-6, "cpu": 20e-6}
MEMORY_BYTES_PER_S = {"gpu": 1.5e12, "cpu": 5e9}


@dataclass(frozen=True)
class Hardware:
    gpus: int = 0  # per node
    nodes: int = 1
    gpu_bytes: float = 0.0  # per GPU
    cpu_bytes: float = 16 * GiB  # per node
    gpu_tflops: float = 100.0  # sustained, per GPU
    cpu_tflops: float = 0.05


@dataclass(frozen=True)
class Estimate:
    device: str  # "gpu" (bytes per GPU) or "cpu"
    device_bytes: float  # peak on the device it computes on
    cpu_bytes: float  # peak host memory (== device_bytes when device is cpu)
    seconds: float
    detail: str


@dataclass(frozen=True)
class Context:
    """What an estimator reads besides params."""

    shape: Shape | None  # the input model (None: the kind reads no model)
    records: int  # records of its data input (pool/selection), 0 if none
    hw: Hardware
    world: int = 1  # ranks of a DeepSpeed run
    record_tokens: int = 0  # bound on one record of its data input (0: unknown)


def _seq(max_len: int, ctx: Context) -> int:
    """Tokens of a padded batch row: batches pad to their longest record, so
    records shorter than ``max_len`` give shorter rows."""
    return min(max_len, ctx.record_tokens) if ctx.record_tokens else max_len


Estimator = Callable[[Any, Context], Estimate]
ESTIMATORS: dict[str, Estimator] = {}


def estimator(*kinds: str) -> Callable[[Estimator], Estimator]:
    def put(fn: Estimator) -> Estimator:
        for k in kinds:
            ESTIMATORS[k] = fn
        return fn

    return put


def _on_gpu(device: str | None, hw: Hardware) -> bool:
    return hw.gpus > 0 and (device in (None, "auto") or str(device).startswith("cuda"))


def _seconds(flops: float, gpu: bool, hw: Hardware, devices: int = 1) -> float:
    rate = (hw.gpu_tflops if gpu else hw.cpu_tflops) * 1e12 * max(devices, 1)
    return flops / rate


def _finish(
    gpu: bool, dev: float, host: float, sec: float, detail: str, base: float = 0
) -> Estimate:
    """Device peak and host peak (model terms plus the process's runtime)."""
    base = base or TORCH_BASE
    if gpu:
        return Estimate("gpu", dev, host + base, sec, detail)
    total = dev + host + base
    return Estimate("cpu", total, total, sec, detail)


@estimator("world")
def _world(params: Any, ctx: Context) -> Estimate:
    mem = PYTHON_BASE + TOKENIZER_TRAIN
    return Estimate("cpu", mem, mem, 0.0, "records, BPE tokenizer")


@estimator("dataset")
def _data(params: Any, ctx: Context) -> Estimate:
    return Estimate("cpu", PYTHON_BASE, PYTHON_BASE, 0.0, "records only")


@estimator("pretrained")
def _pretrained(params: Any, ctx: Context) -> Estimate:
    return Estimate("cpu", PYTHON_BASE, PYTHON_BASE, 0.0, "checks headers, links")


def _activations(s: Shape, tokens: int, seq: int, b: int) -> float:
    """Korthikanti et al. (2022) per-layer activation bytes without
    recomputation, scaled from 16-bit to ``b`` bytes, all layers."""
    per_layer = tokens * s.hidden * (34 + 5 * s.heads * seq / s.hidden)
    return per_layer * s.layers * b / 2


@estimator("pretrain")
def _pretrain(params: Any, ctx: Context) -> Estimate:
    s = ctx.shape
    assert s is not None
    seq = _seq(params.max_len, ctx)
    tokens = params.batch_size * seq
    mem = 16 * s.params + _activations(s, tokens, seq, 4)
    flops = 6 * s.params * tokens * params.steps
    sec = _seconds(flops, False, ctx.hw)
    detail = f"fp32 AdamW, {seq}-token rows"
    return _finish(False, mem, 0, sec, detail, TORCH_BASE + TRAIN_EXTRA)


def _calib_seq(params: Any, s: Shape, ctx: Context) -> int:
    """Tokens per calibration sample: a window of ``seqlen`` (default the
    model's context, at most 2048), or one record padded to the longest of
    the samples, at most ``seqlen`` (default the model's context)."""
    context = s.context or 2048
    if getattr(params, "calib_format", "records") == "windows":
        return params.seqlen or min(2048, context)
    return _seq(params.seqlen or context, ctx)


@estimator("prune")
def _prune(params: Any, ctx: Context) -> Estimate:
    s = ctx.shape
    assert s is not None
    b = DTYPE_BYTES[params.dtype]
    gpu = _on_gpu(params.device, ctx.hw)
    host = s.bytes(params.dtype)  # the whole model stays in host memory
    block = s.layer_params * b
    calib = params.method not in ("magnitude",) and getattr(params, "calib", None)
    loop = 0.0  # seconds outside FLOPs (SparseGPT's column loop)
    if not calib:  # magnitude (and l1/l2 width): a weight and its scores at once
        biggest = max(o * i for o, i in s.linears())
        dev = block + biggest * 4
        flops = 4.0 * s.params
        detail = "no calibration"
    else:
        n, seq, bs = params.nsamples, _calib_seq(params, s, ctx), params.batch_size
        acts = 2 * n * seq * s.hidden * b  # block inputs and outputs
        batch = bs * seq * (s.heads * seq + 3 * s.intermediate + 4 * s.hidden) * b
        extra = sum(4 * i for _, i in s.linears())  # Wanda: input norms
        if params.method == "sparsegpt":
            extra = sum(4 * i * i for _, i in s.linears())  # Hessians
        dev = block + acts + batch + extra
        flops = 2.0 * s.layer_params * s.layers * n * seq
        if params.method == "sparsegpt":
            flops += s.layers * sum(
                2.0 * n * seq * i * i + 2.0 * o * i * i + i**3 for o, i in s.linears()
            )  # Hessians X^T X, lazy block updates, (H + λI)^-1 by Cholesky
            loop = s.layers * _column_loop(s, params.blocksize, gpu)
        detail = f"{n}x{seq} calibration tokens"
    sec = _seconds(flops, gpu, ctx.hw) + loop
    if not gpu:
        return _finish(False, dev + host - block, 0, sec, detail)
    return _finish(True, dev, host, sec, detail)


def _column_loop(s: Shape, blocksize: int, gpu: bool) -> float:
    """Seconds of SparseGPT's column-by-column loop over one block's linears."""
    kind = "gpu" if gpu else "cpu"
    step = SPARSEGPT_STEP_OPS * OP_SECONDS[kind]
    return sum(
        i * (step + 12.0 * o * min(blocksize, i) / 2 / MEMORY_BYTES_PER_S[kind])
        for o, i in s.linears()
    )


def _trainable(params: Any, s: Shape) -> float:
    if params.method == "lora":
        listed = params.target_modules
        mods = set(listed) if isinstance(listed, list | tuple) else set()  # all
        names = [
            "q_proj",
            "k_proj",
            "v_proj",
            "o_proj",
            "gate_proj",
            "up_proj",
            "down_proj",
        ]
        per = sum(
            params.rank * (o + i)
            for n, (o, i) in zip(names, s.linears(), strict=True)
            if not mods or n in mods
        )
        return per * s.layers
    return float(s.params)


def zero_model_states(
    P: float,
    largest: float,
    zero: int,
    n_gpu: int,
    nodes: int,
    offload_opt: bool,
    offload_params: bool,
) -> tuple[float, float]:
    """(cpu bytes per node, gpu bytes per GPU) of params + grads + Adam states,
    by DeepSpeed's estimators (mixed precision)."""
    if zero == 1:  # not in DeepSpeed's estimators: ZeRO paper, K=12
        return 4.0 * P * n_gpu, 4.0 * P + 12.0 * P / (n_gpu * nodes)
    if zero == 2:
        from deepspeed.runtime.zero.stage_1_and_2 import (
            estimate_zero2_model_states_mem_needs,
        )

        return estimate_zero2_model_states_mem_needs(
            int(P), n_gpu, nodes, cpu_offload=offload_opt
        )
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs

    cpu, gpu, _ = estimate_zero3_model_states_mem_needs(
        int(P),
        int(largest),
        n_gpu,
        nodes,
        cpu_offload=offload_opt,
        cpu_offload_params=offload_params,
    )
    return cpu, gpu


@estimator("recover", "unlearn")
def _train(params: Any, ctx: Context) -> Estimate:
    s = ctx.shape
    assert s is not None
    ds = params.deepspeed
    world = ctx.world
    seq = _seq(params.max_len, ctx)
    tokens_step = params.micro_batch * seq
    b_act = 4 if params.precision == "fp32" else 2
    acts = _activations(s, tokens_step, seq, b_act)
    if params.method == "distill":
        acts += s.params * (4 if params.precision == "fp32" else 2)  # the teacher
    trainable = _trainable(params, s)
    frozen = (s.params - trainable) * (4 if params.precision == "fp32" else 2)
    steps = params.steps or max(
        1,
        int(
            params.epochs
            * max(ctx.records, 1)
            / (params.micro_batch * params.grad_accum * world)
        ),
    )
    tokens = steps * tokens_step * params.grad_accum * world
    flops = (6 if params.method != "lora" else 4) * s.params * tokens
    gpu = ctx.hw.gpus > 0
    if params.launcher == "deepspeed":
        nodes = ds.num_nodes
        per_node = max(1, world // nodes)
        cpu, dev = zero_model_states(
            trainable,
            s.largest_module_params,
            ds.zero_stage,
            per_node,
            nodes,
            ds.offload_optimizer,
            ds.offload_params,
        )
        if params.precision == "fp32":  # no 16-bit copies: 16 B instead of 18 + 2
            dev = dev * 16 / 20
        detail = (
            f"ZeRO-{ds.zero_stage}"
            + (" +offload opt" if ds.offload_optimizer else "")
            + (" +offload params" if ds.offload_params else "")
            + f", {world} rank(s), {seq}-token rows"
        )
        dev += frozen + acts
        if not gpu:  # CPU ranks: every rank of the node in one host
            total = per_node * (dev + TORCH_BASE + TRAIN_EXTRA) + cpu
            return Estimate(
                "cpu", total, total, _seconds(flops, False, ctx.hw, world), detail
            )
        return Estimate(
            "gpu",
            dev,
            cpu + per_node * (TORCH_BASE + TRAIN_EXTRA),
            _seconds(flops, True, ctx.hw, world),
            detail,
        )
    dev = 16 * trainable + frozen + acts  # fp32 master weights, grads, AdamW
    return _finish(
        gpu,
        dev,
        s.bytes("float32") if gpu else 0,
        _seconds(flops, gpu, ctx.hw),
        f"in-process, fp32 AdamW, {seq}-token rows",
        TORCH_BASE + TRAIN_EXTRA,
    )


@estimator("merge")
def _merge(params: Any, ctx: Context) -> Estimate:
    s = ctx.shape
    assert s is not None
    n = len(params.models) + (1 if getattr(params, "base", None) else 0)
    big = s.largest_module_params * 4
    mem = (n + 2) * big  # one tensor of each input, the result and a mask
    flops = 10.0 * s.params * n
    return _finish(
        False,
        mem,
        0,
        _seconds(flops, False, ctx.hw),
        f"streams {n} model(s) tensor by tensor",
    )


@estimator("select")
def _select(params: Any, ctx: Context) -> Estimate:
    s, n = ctx.shape, max(ctx.records, 1)
    if s is None or not hasattr(params, "max_len"):
        return Estimate("cpu", PYTHON_BASE, PYTHON_BASE, 0.0, "no model")
    b = DTYPE_BYTES.get(getattr(params, "dtype", None) or s.dtype, 4)
    gpu = _on_gpu(getattr(params, "device", None), ctx.hw)
    batch_tokens = min(params.max_batch_tokens, n * params.max_len)
    dev = s.bytes() * b / DTYPE_BYTES.get(s.dtype, 4)
    dev += batch_tokens * (s.vocab * 4 + 4 * s.hidden * b)  # logits + hidden
    models = 2 if getattr(params, "reference", None) else 1
    host = 0.0
    if params.method == "paser":
        k, d = params.n_neighbors, params.knn_dim
        host = n * (k * 12 + d * 8 + s.hidden * 4)  # kNN graph, embedding, features
    flops = 2.0 * s.params * n * params.max_len * models
    sec = _seconds(flops, gpu, ctx.hw)
    return _finish(gpu, dev, host, sec, f"scores {n} records with {models} model(s)")


@estimator("evaluate")
def _evaluate(params: Any, ctx: Context) -> Estimate:
    s = ctx.shape
    assert s is not None
    b = DTYPE_BYTES.get(s.dtype, 4)
    new = params.max_new_tokens or 16  # default: the longest answer + 1
    bs, seq = params.batch_size, params.max_len
    # perplexity windows: float32 logits and their log-softmax, a few hidden
    # states; generation: the KV cache of short prompts plus the new tokens
    ppl = bs * seq * (2 * s.vocab * 4 + 8 * s.hidden * b)
    kv = 2 * s.layers * s.kv_heads * s.head_dim * b
    gen = bs * (PROMPT_TOKENS + new) * (kv + s.vocab * 4)
    dev = s.bytes() + max(ppl, gen)
    n = max(ctx.records, 1)
    flops = 2.0 * s.params * n * (seq + new) * len(params.models)
    gpu = ctx.hw.gpus > 0
    return _finish(
        gpu,
        dev,
        s.bytes() if gpu else 0,
        _seconds(flops, gpu, ctx.hw),
        f"{len(params.models)} model(s), one at a time",
    )
