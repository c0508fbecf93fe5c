"""`carp plan FILE`: before anything runs, the memory and time each node needs,
from the model config (params, layers, hidden sizes, dtype) and the stage's
params, against the declared hardware (estimators in ``estimators.py``)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.kinds import load_kind
from pipelines.plan.estimators import (
    ESTIMATORS,
    Context,
    Estimate,
    GiB,
    Hardware,
)
from pipelines.plan.shapes import Shape, config_of


@dataclass(frozen=True)
class Row:
    node: str
    kind: str
    method: str
    shape: Shape | None
    estimate: Estimate | None
    warning: str = ""


def node_sizes(node: Any, sizes: dict[str, dict[str, int]]) -> dict[str, int]:
    """What the node's kind says it holds (``Kind.sizes``), from its inputs'
    sizes by field (a list input: its first upstream)."""
    upstream = {}
    for field, value in node.inputs.items():
        first = value[0] if isinstance(value, list) and value else value
        if isinstance(first, str) and first in sizes:
            upstream[field] = sizes[first]
    return load_kind(node.kind).sizes_of(node.params, upstream)


def _record_tokens(node: Any, tokens: dict[str, int]) -> int:
    """An upper bound on one record's tokens in what ``node`` writes (0:
    unknown, so a trainer's ``max_len`` counts): the world's longest phrased
    record in bytes plus BOS/EOS (a byte-level tokenizer emits at most one token
    per byte); a selection or a dataset keeps its source's records."""
    if node.kind == "world":
        from pipelines.plan.records import longest_document

        return longest_document(node.params) + 2
    src = {"select": "pool", "dataset": "world"}.get(node.kind)
    return tokens.get(node.inputs.get(src, ""), 0) if src else 0


def _shape(
    node: Any,
    shapes: dict[str, Shape | None],
    root: Path,
    overrides: dict[str, Shape],
    vocab: dict[str, int],
) -> Shape | None:
    p, ins = node.params, node.inputs
    if node.stage in overrides:
        return overrides[node.stage]
    if node.kind == "pretrain":
        return Shape(
            hidden=p.hidden_size,
            intermediate=p.intermediate_size,
            layers=p.layers,
            heads=p.heads,
            kv_heads=p.kv_heads,
            vocab=vocab.get(ins["data"], 512),
            tied=True,
            dtype="float32",
            source="pretrain params",
            context=max(256, p.max_len),  # as the pretrain kind configures it
        )
    if node.kind == "pretrained":
        return config_of(p.path, root)
    first = ins.get("model") or ins.get("models")
    if isinstance(first, list):
        first = first[0] if first else None
    s = shapes.get(first) if first else None
    if s is None or node.kind != "prune":
        return s
    from dataclasses import replace

    s = replace(s, dtype=p.dtype)
    if p.method == "width":
        return s.scaled(1 - p.sparsity)
    if p.method == "depth":
        blocks = p.blocks
        drop = len(blocks) if blocks else round(s.layers * p.sparsity)
        return s.scaled(1.0, layers=max(1, s.layers - drop))
    return s


def _world(node: Any, hw: Hardware, root: Path) -> int:
    ds = getattr(node.params, "deepspeed", None)
    if ds is None or node.params.launcher != "deepspeed":
        return 1
    if ds.hostfile:
        from stages.common.train.hostfile import ranks, read_hostfile

        path = root / ds.hostfile
        if path.is_file():
            pool = read_hostfile(path)
            return sum(
                ranks(pool, ds.num_nodes, ds.num_gpus, ds.include, ds.exclude).values()
            )
    per = ds.num_gpus if ds.num_gpus is not None else max(hw.gpus, 1)
    return per * ds.num_nodes


def plan(
    graph: Any, hw: Hardware, root: Path, overrides: dict[str, Shape] | None = None
) -> list[Row]:
    """One row per node, in run order."""
    shapes: dict[str, Shape | None] = {}
    sizes: dict[str, dict[str, int]] = {}
    vocab: dict[str, int] = {}
    tokens: dict[str, int] = {}
    rows = []
    for node in graph.nodes.values():
        if node.kind == "world":
            vocab[node.name] = node.params.vocab_size
        shape = _shape(node, shapes, root, overrides or {}, vocab)
        shapes[node.name] = shape
        first = node.inputs.get("model") or node.inputs.get("models")
        if isinstance(first, list):
            first = first[0] if first else None
        # estimators read the model a node loads; the table shows what it makes
        seen = shapes.get(first) if first else shape
        sizes[node.name] = node_sizes(node, sizes)
        tokens[node.name] = _record_tokens(node, tokens)
        fn = ESTIMATORS.get(node.kind)
        needs_model = node.kind in (
            "prune",
            "recover",
            "unlearn",
            "merge",
            "evaluate",
            "pretrain",
        )
        method = str(node.params.method)
        if fn is None or (needs_model and seen is None):
            lost = [
                n.stage
                for n in graph.nodes.values()
                if n.kind == "pretrained" and shapes.get(n.name) is None
            ]
            why = (
                f"no model config: give --model-config {lost[0]}=PATH|llama-2-7b"
                if fn and lost
                else ("no estimator" if fn is None else "no model input")
            )
            rows.append(Row(node.name, node.kind, method, shape, None, why))
            continue
        data = (
            node.inputs.get("data")
            or node.inputs.get("forget")
            or node.inputs.get("calib")
            or ""
        )
        src = data if isinstance(data, str) else ""
        # what the node itself works through, else the records it reads
        n = sizes[node.name].get("scored", sizes.get(src, {}).get("records", 0))
        ctx = Context(seen, n, hw, _world(node, hw, root), tokens.get(src, 0))
        est = fn(node.params, ctx)
        rows.append(
            Row(node.name, node.kind, method, shape, est, _fits(est, hw, ctx.world))
        )
    return rows


def _fits(est: Estimate, hw: Hardware, world: int) -> str:
    if est.device == "gpu" and est.device_bytes > hw.gpu_bytes:
        return (
            f"needs {est.device_bytes / GiB:.1f} GiB per GPU, "
            f"{hw.gpu_bytes / GiB:.0f} GiB declared"
        )
    if est.cpu_bytes > hw.cpu_bytes:
        return (
            f"needs {est.cpu_bytes / GiB:.1f} GiB host memory per node, "
            f"{hw.cpu_bytes / GiB:.0f} GiB declared"
        )
    return ""


def _size(b: float) -> str:
    return f"{b / GiB:.1f} GiB" if b >= GiB else f"{b / 2**20:.0f} MiB"


def _time(s: float) -> str:
    if s < 1:
        return "<1 s"
    for unit, div in (("h", 3600), ("min", 60)):
        if s >= div:
            return f"{s / div:.1f} {unit}"
    return f"{s:.0f} s"


def render(rows: list[Row], hw: Hardware) -> str:
    """A markdown table and one warning line per stage that cannot fit."""
    gpus = f"{hw.gpus} GPU(s) of {hw.gpu_bytes / GiB:.0f} GiB" if hw.gpus else "no GPU"
    head = (
        f"hardware: {hw.nodes} node(s) x {gpus}, {hw.cpu_bytes / GiB:.0f} GiB host "
        f"memory; {hw.gpu_tflops:g} TFLOPS/GPU, {hw.cpu_tflops:g} TFLOPS CPU"
    )
    lines = [
        head,
        "",
        "| node | kind | method | model params | on | peak device | peak host "
        "| time | how |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    warn = []
    for r in rows:
        params = (
            f"{r.shape.params / 1e9:.2f} B"
            if r.shape and r.shape.params >= 1e8
            else (f"{r.shape.params:,}" if r.shape else "-")
        )
        e = r.estimate
        if e is None:
            lines.append(
                f"| {r.node} | {r.kind} | {r.method} | {params} | - | - | - "
                f"| - | {r.warning} |"
            )
            continue
        lines.append(
            f"| {r.node} | {r.kind} | {r.method} | {params} | {e.device} | "
            f"{_size(e.device_bytes)} | {_size(e.cpu_bytes)} | {_time(e.seconds)} | "
            f"{e.detail} |"
        )
        if r.warning:
            warn.append(f"WARNING {r.node}: {r.warning}")
    return "\n".join(lines + ([""] + warn if warn else []))


def host_memory() -> float:
    """This machine's memory (the default declared host memory)."""
    return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def hardware(args: Any) -> Hardware:
    """The declared hardware from `carp plan`'s options (host memory defaults
    to this machine's)."""
    return Hardware(
        gpus=args.gpus,
        nodes=args.nodes,
        gpu_bytes=args.gpu_memory * GiB,
        cpu_bytes=(args.cpu_memory * GiB) if args.cpu_memory else host_memory(),
        gpu_tflops=args.gpu_tflops,
        cpu_tflops=args.cpu_tflops,
    )


def model_overrides(values: dict[str, str], root: Path) -> dict[str, Shape]:
    """``--model-config`` (stage -> llama-2-7b | PATH) as shapes."""
    from pipelines.plan.shapes import load_config_arg

    return {stage: load_config_arg(what, root) for stage, what in values.items()}
