"""recover through the DeepSpeed launcher with a hostfile (`localhost slots=2`,
CPU accelerator, gloo): the launcher's hostfile path end to end."""

from __future__ import annotations

import json

import pytest

from pipelines.contract import RunContext

pytestmark = [pytest.mark.multirank, pytest.mark.slow, pytest.mark.integration]


@pytest.mark.parametrize("how", ["num_gpus", "include"])
def test_localhost_hostfile_two_slots_matches_one_process(tiny, tmp_path, how):
    import torch
    from safetensors.torch import load_file

    from stages.common.io import load_masks, load_model
    from stages.recover import run
    from stages.recover.full import Params

    hosts = tmp_path / "hostfile"
    hosts.write_text("# this machine, two CPU ranks\nlocalhost slots=2\n")
    ds = {"hostfile": str(hosts), "zero_stage": 2}
    ds.update({"num_gpus": 2} if how == "num_gpus" else {"include": "localhost:0,1"})
    common = dict(model="sparse", data="data", steps=3, micro_batch=4, lr=1e-3, seed=1)
    inputs = {"model": tiny["sparse"], "data": tiny["data"]}
    logs: dict[str, list[float]] = {"ds": [], "one": []}
    for name, params in [
        ("ds", Params(**common, launcher="deepspeed", deepspeed=ds)),
        ("one", Params(**common, grad_accum=2)),  # same global batch of 8
    ]:
        (tmp_path / name).mkdir()
        res = run(
            params,
            inputs,
            tmp_path / name,
            RunContext(log_fn=lambda m, s, n=name: logs[n].append(m["loss"])),
        )
        if name == "ds":
            assert res.metrics["world_size"] == 2
    log = (tmp_path / "ds" / "deepspeed.log").read_text()
    assert "127.0.0.1" in log  # the rendezvous carp chose for a local hostfile
    conf = json.loads((tmp_path / "ds" / "deepspeed_config.json").read_text())
    assert conf["train_batch_size"] == 8
    torch.testing.assert_close(logs["ds"], logs["one"], rtol=1e-4, atol=1e-5)
    load_model(tmp_path / "ds")
    a = load_file(str(tmp_path / "ds" / "model.safetensors"))
    b = load_file(str(tmp_path / "one" / "model.safetensors"))
    for k in b:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)
    for name, keep in load_masks(tiny["sparse"]).items():
        assert ((a[name] == 0) == ~keep).all(), name
