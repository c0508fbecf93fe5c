"""``launcher: deepspeed``: resolve the DeepSpeed config, run the launcher as a
subprocess (argv list), stream rank 0's step records to MLflow and the progress
bar, check the exit code and that a loadable ``model.safetensors`` came out."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pipelines.contract import RunContext
from pipelines.procs import die_with_parent
from stages.common.train.ds_paths import confine
from stages.common.train.hostfile import all_local, ranks, read_hostfile
from stages.common.train.launch import RESULT_FILE, StepSink
from stages.common.train.schedule import total_steps

CONFIG_FILE = "deepspeed_config.json"
LOG_FILE = "deepspeed.log"
PROJECT_ROOT = Path(__file__).resolve().parents[3]


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = (
            _merge(out[k], v)
            if isinstance(v, dict) and isinstance(out.get(k), dict)
            else v
        )
    return out


def host_ranks(cfg: Any) -> dict[str, int] | None:
    """Ranks per host from the declared hostfile and filters (None: no hostfile)."""
    ds = cfg.deepspeed
    if not ds.hostfile:
        return None
    return ranks(
        read_hostfile(ds.hostfile), ds.num_nodes, ds.num_gpus, ds.include, ds.exclude
    )


def world_size(cfg: Any) -> int:
    """Total ranks of the declared run."""
    ds = cfg.deepspeed
    hosts = host_ranks(cfg)
    if hosts is not None:
        return sum(hosts.values())
    if ds.num_gpus is not None:
        return ds.num_gpus * ds.num_nodes
    import torch

    n = torch.cuda.device_count()
    if n == 0:
        raise ValueError(
            "deepspeed.num_gpus: no CUDA device is visible; set it to "
            "the number of CPU ranks to run (e.g. 2)"
        )
    return n


def deepspeed_config(cfg: Any, world: int) -> dict[str, Any]:
    """The DeepSpeed JSON config implied by the params (pure)."""
    ds = cfg.deepspeed
    zero: dict[str, Any] = {"stage": ds.zero_stage}
    if ds.zero_stage == 3:
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    if ds.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
    if ds.offload_params:
        zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    conf: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": cfg.micro_batch,
        "gradient_accumulation_steps": cfg.grad_accum,
        "train_batch_size": cfg.micro_batch * cfg.grad_accum * world,
        "gradient_clipping": float(cfg.max_grad_norm or 0.0),
        "zero_optimization": zero,
        "bf16": {"enabled": cfg.precision == "bf16"},
        "fp16": {
            "enabled": cfg.precision == "fp16",
            "loss_scale": 0,
            "initial_scale_power": 16,
        },
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    if ds.offload_optimizer:  # ZeRO-Offload steps with DeepSpeed's CPU Adam
        conf["optimizer"] = {
            "type": "AdamW",
            "params": {"lr": cfg.lr, "weight_decay": cfg.weight_decay},
        }
    return _merge(conf, ds.config)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launcher_argv(cfg: Any, job_file: Path, world: int) -> list[str]:
    """``deepspeed`` command line (an argv list; no shell).

    With a hostfile: ``--hostfile``, then either ``--include``/``--exclude`` or
    ``--num_nodes`` (+ ``--num_gpus``); ``--master_addr`` when declared, or
    127.0.0.1 with ``--no_ssh_check`` when every host is this machine (DeepSpeed
    would otherwise ssh to it)."""
    ds = cfg.deepspeed
    exe = Path(sys.executable).parent / "deepspeed"
    argv = [str(exe if exe.exists() else "deepspeed")]
    hosts = host_ranks(cfg)
    if hosts is not None:
        argv += ["--hostfile", str(ds.hostfile)]
        if ds.include:
            argv += ["--include", ds.include]
        elif ds.exclude:
            argv += ["--exclude", ds.exclude]
        else:
            argv += ["--num_nodes", str(ds.num_nodes)]
            if ds.num_gpus is not None:
                argv += ["--num_gpus", str(ds.num_gpus)]
        local = all_local(hosts)
        if ds.master_addr or local:
            argv += ["--master_addr", ds.master_addr or "127.0.0.1"]
        if local:
            argv.append("--no_ssh_check")
    else:
        argv += ["--num_gpus", str(world)]  # one node: DeepSpeed uses 127.0.0.1
    argv += [
        "--master_port",
        str(ds.master_port or free_port()),
        "--module",
        "stages.common.train.worker",
        "--job",
        str(job_file),
    ]
    return argv


def check_loadable(out_dir: Path) -> None:
    """model.safetensors (or its shards) holds every tensor the config needs."""
    import torch
    from safetensors import safe_open
    from transformers import AutoConfig, AutoModelForCausalLM

    f = out_dir / "model.safetensors"
    index = out_dir / "model.safetensors.index.json"
    if f.exists():
        files = [f]
    elif index.exists():  # large models are written in shards
        shards = set(json.loads(index.read_text())["weight_map"].values())
        files = [out_dir / s for s in sorted(shards)]
    else:
        raise RuntimeError(f"DeepSpeed run wrote no {f}")
    shapes: dict[str, tuple[int, ...]] = {}
    for path in files:
        with safe_open(str(path), "pt") as st:
            for k in st.keys():  # noqa: SIM118
                shapes[k] = tuple(st.get_slice(k).get_shape())
    config = AutoConfig.from_pretrained(str(out_dir), local_files_only=True)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    tied = set(getattr(model, "_tied_weights_keys", None) or [])
    bad = [k for k, s in want.items() if k not in tied and shapes.get(k) != s]
    if bad:
        raise RuntimeError(f"{f} does not load: missing or misshapen {bad[:5]}")


def run_deepspeed(job: dict[str, Any], cfg: Any, ctx: RunContext) -> dict[str, Any]:
    """Run ``job`` on ``world`` ranks through the DeepSpeed launcher."""
    out_dir = Path(job["out_dir"])
    world = world_size(cfg)
    conf = confine(deepspeed_config(cfg, world), out_dir)  # files stay in out_dir
    (out_dir / CONFIG_FILE).write_text(json.dumps(conf, indent=2, sort_keys=True))
    work = Path(tempfile.mkdtemp(prefix="carp-ds-"))
    job = {
        **job,
        "deepspeed_config": str(out_dir / CONFIG_FILE),
        "steps_file": str(work / "steps.jsonl"),
        "work_dir": str(work),
    }
    job_file = work / "job.json"
    job_file.write_text(json.dumps(job, indent=2))
    argv = launcher_argv(cfg, job_file, world)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(PROJECT_ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    )
    env.setdefault("TORCH_EXTENSIONS_DIR", str(PROJECT_ROOT / ".torch_extensions"))
    from stages.common.train.launch import load_builder  # noqa: F401  (fail early)

    n = _count_examples(job)
    total = total_steps(
        n, cfg.micro_batch * cfg.grad_accum * world, cfg.epochs, cfg.steps
    )
    sink = StepSink(ctx, total, f"train x{world}")
    steps_path = Path(job["steps_file"])
    with open(work / LOG_FILE, "w") as log:
        proc = subprocess.Popen(
            argv,
            cwd=PROJECT_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent,  # the launcher, then its ranks, stop
        )
        try:
            pos = 0
            while True:
                rc = proc.poll()
                pos = _forward(steps_path, pos, sink)
                if rc is not None:
                    break
                time.sleep(0.5)
        except BaseException:  # interrupted: take the ranks down with us
            _stop(proc)
            raise
    sink.close()
    (out_dir / LOG_FILE).write_text((work / LOG_FILE).read_text())
    if rc != 0:
        tail = (work / LOG_FILE).read_text()[-3000:]
        raise RuntimeError(
            f"DeepSpeed launcher exited with {rc}: {' '.join(argv)}\n"
            f"job and full log kept in {work}\n--- last output ---\n{tail}"
        )
    check_loadable(out_dir)
    result = json.loads((work / RESULT_FILE).read_text())
    shutil.rmtree(work, ignore_errors=True)
    return result


def _stop(proc: subprocess.Popen, grace: float = 15.0) -> None:
    """SIGTERM the launcher's process group (launcher, ranks), wait until all of
    it is gone, SIGKILL what is left after ``grace`` seconds."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        proc.poll()  # reap the launcher itself
        try:
            os.killpg(proc.pid, 0)  # anyone left in the group?
        except ProcessLookupError:
            return
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _forward(path: Path, pos: int, sink: StepSink) -> int:
    """Send complete new lines of the steps file to ``sink``; new offset."""
    if not path.exists():
        return pos
    with open(path) as f:
        f.seek(pos)
        while True:
            line = f.readline()
            if not line.endswith("\n"):
                return pos
            sink(json.loads(line))
            pos = f.tell()


def _count_examples(job: dict[str, Any]) -> int:
    data = Path(job["inputs"][job.get("examples_input", "data")]) / "data.jsonl"
    with open(data, encoding="utf-8") as f:
        return sum(1 for line in f if line.strip())
