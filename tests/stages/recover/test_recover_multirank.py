"""recover under the DeepSpeed launcher: 2 CPU ranks (gloo), ZeRO-2 and ZeRO-3.

The saved model must load, keep the mask, and follow the same loss curve as a
single-process run over the same data and global batch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipelines.contract import RunContext

pytestmark = pytest.mark.multirank

COMMON = dict(
    model="sparse",
    data="data",
    steps=4,
    micro_batch=4,
    lr=1e-3,
    checkpoint_every=2,
    seed=1,
)


def _run(params, tiny, out: Path, ckpt: Path | None = None):
    from stages.recover import run

    out.mkdir(parents=True)
    logged = []
    res = run(
        params,
        {"model": tiny["sparse"], "data": tiny["data"]},
        out,
        RunContext(
            checkpoint_dir=ckpt, log_fn=lambda m, s: logged.append((s, m["loss"]))
        ),
    )
    return res, logged


@pytest.fixture(scope="module")
def single(tiny, tmp_path_factory):
    """One process, grad_accum 2: the same global batch of 8 as 2 ranks x 1."""
    from stages.recover.full import Params

    out = tmp_path_factory.mktemp("single") / "out"
    return _run(Params(**COMMON, grad_accum=2), tiny, out), out


@pytest.mark.parametrize("zero", [2, 3])
def test_zero_two_ranks_match_single_process(tiny, tmp_path, single, zero):
    import torch
    from safetensors.torch import load_file

    from stages.common.io import load_masks, load_model
    from stages.recover.full import Params

    params = Params(
        **COMMON, launcher="deepspeed", deepspeed={"num_gpus": 2, "zero_stage": zero}
    )
    (ref, ref_log), ref_dir = single
    res, logged = _run(params, tiny, tmp_path / "out", tmp_path / "ckpt")
    out = tmp_path / "out"

    assert [s for s, _ in logged] == [1, 2, 3, 4]  # only rank 0 reported
    torch.testing.assert_close(
        [x for _, x in logged], [x for _, x in ref_log], rtol=1e-4, atol=1e-5
    )
    conf = json.loads((out / "deepspeed_config.json").read_text())
    assert conf["zero_optimization"]["stage"] == zero
    assert conf["train_batch_size"] == 8 and res.metrics["world_size"] == 2
    if zero == 3:
        assert conf["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"]

    load_model(out)  # loadable HF checkpoint
    a, b = (
        load_file(str(out / "model.safetensors")),
        load_file(str(ref_dir / "model.safetensors")),
    )
    for k in b:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)
    for name, keep in load_masks(tiny["sparse"]).items():
        assert ((a[name] == 0) == ~keep).all(), name
    assert (tmp_path / "ckpt" / "step-0000002" / "state.json").exists()


@pytest.mark.slow
def test_zero2_resumes_from_its_checkpoint(tiny, tmp_path):
    """A second run over a kept checkpoint folder resumes at step 2 and ends at
    the weights of the uninterrupted run."""
    import torch
    from safetensors.torch import load_file

    from stages.recover.full import Params

    params = Params(
        **COMMON, launcher="deepspeed", deepspeed={"num_gpus": 2, "zero_stage": 2}
    )
    ckpt = tmp_path / "ckpt"
    first, _ = _run(params, tiny, tmp_path / "a", ckpt)
    second, logged = _run(params, tiny, tmp_path / "b", ckpt)
    assert [s for s, _ in logged] == [3, 4]
    assert second.metrics["final_loss"] == pytest.approx(
        first.metrics["final_loss"], rel=1e-6
    )
    a = load_file(str(tmp_path / "a" / "model.safetensors"))
    b = load_file(str(tmp_path / "b" / "model.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-6, atol=1e-7)


@pytest.mark.slow
def test_lora_zero3_two_ranks_merge_keeps_mask(tiny, tmp_path):
    """LoRA adapters gathered from ZeRO-3 shards, merged under the mask on rank 0,
    and the same result as one process."""
    import torch
    from safetensors.torch import load_file

    from stages.common.io import load_masks
    from stages.recover.lora import Params

    lora = dict(COMMON, rank=4, dropout=0.0, save_adapter=True)
    ds = Params(
        **lora, launcher="deepspeed", deepspeed={"num_gpus": 2, "zero_stage": 3}
    )
    _run(ds, tiny, tmp_path / "ds")
    _run(Params(**lora, grad_accum=2), tiny, tmp_path / "one")
    a = load_file(str(tmp_path / "ds" / "model.safetensors"))
    b = load_file(str(tmp_path / "one" / "model.safetensors"))
    before = load_file(str(tiny["sparse"] / "model.safetensors"))
    for name, keep in load_masks(tiny["sparse"]).items():
        assert ((a[name] == 0) == ~keep).all(), name
        assert not torch.equal(a[name], before[name]), name  # the update landed
    for k in b:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)
    assert (tmp_path / "ds" / "adapter" / "adapter_model.safetensors").exists()


@pytest.mark.slow
def test_bf16_zero2_one_rank_runs_on_cpu(tiny, tmp_path):
    from stages.common.io import load_masks, load_model
    from stages.recover.full import Params

    params = Params(
        **COMMON,
        precision="bf16",
        launcher="deepspeed",
        deepspeed={"num_gpus": 1, "zero_stage": 2},
    )
    res, logged = _run(params, tiny, tmp_path / "out")
    model = load_model(tmp_path / "out")
    named = dict(model.named_parameters())
    for name, keep in load_masks(tiny["sparse"]).items():
        assert ((named[name] == 0) == ~keep).all(), name
    assert (
        len(logged) == 4 and res.metrics["final_loss"] < res.metrics["first_loss"] + 1
    )


@pytest.mark.slow
def test_interrupted_zero2_run_stops_its_ranks_and_resumes(tiny, tmp_path):
    """Interrupt the stage mid-run: the launcher and both ranks go away; a
    re-run resumes from the last checkpoint and ends where one process does."""
    import time

    import psutil
    import torch
    from safetensors.torch import load_file

    from stages.recover import run
    from stages.recover.full import Params

    kw = dict(COMMON, steps=120, checkpoint_every=10)
    params = Params(
        **kw, launcher="deepspeed", deepspeed={"num_gpus": 2, "zero_stage": 2}
    )
    ckpt = tmp_path / "ckpt"
    inputs = {"model": tiny["sparse"], "data": tiny["data"]}

    def interrupt(metrics, step):
        if step >= 12:
            raise KeyboardInterrupt

    (tmp_path / "killed").mkdir()
    with pytest.raises(KeyboardInterrupt):
        run(
            params,
            inputs,
            tmp_path / "killed",
            RunContext(checkpoint_dir=ckpt, log_fn=interrupt),
        )
    time.sleep(1)
    workers = [
        p
        for p in psutil.process_iter(["cmdline"])
        if "stages.common.train.worker" in " ".join(p.info["cmdline"] or [])
    ]
    assert workers == []
    done = sorted(p.name for p in ckpt.glob("step-*/state.json"))
    assert done, "no checkpoint survived the interruption"

    _, resumed = _run(params, tiny, tmp_path / "resumed", ckpt)
    assert resumed[0][0] > 10 and resumed[-1][0] == 120  # picked up, not restarted
    _run(Params(**kw, grad_accum=2), tiny, tmp_path / "one")
    a = load_file(str(tmp_path / "resumed" / "model.safetensors"))
    b = load_file(str(tmp_path / "one" / "model.safetensors"))
    for k in b:
        torch.testing.assert_close(a[k], b[k], rtol=1e-3, atol=1e-4)
