"""The DeepSpeed config and launcher argv implied by params; launch failures."""

from __future__ import annotations

import sys
import tempfile

import pytest

from pipelines.contract import RunContext
from stages.common.train import deepspeed_launch as dl
from stages.common.train.params import TrainParams


class _P(TrainParams):
    method: str = "x"


def test_config_follows_params():
    p = _P(
        launcher="deepspeed",
        micro_batch=4,
        grad_accum=3,
        precision="bf16",
        max_grad_norm=0.5,
        deepspeed={
            "num_gpus": 2,
            "zero_stage": 3,
            "offload_optimizer": True,
            "offload_params": True,
            "config": {"zero_optimization": {"reduce_bucket_size": 1000}},
        },
    )
    c = dl.deepspeed_config(p, world=2)
    assert c["train_batch_size"] == 24 and c["gradient_accumulation_steps"] == 3
    assert c["train_micro_batch_size_per_gpu"] == 4 and c["gradient_clipping"] == 0.5
    assert c["bf16"]["enabled"] and not c["fp16"]["enabled"]
    z = c["zero_optimization"]
    assert z["stage"] == 3 and z["stage3_gather_16bit_weights_on_model_save"]
    assert z["offload_optimizer"]["device"] == "cpu" == z["offload_param"]["device"]
    assert z["reduce_bucket_size"] == 1000  # user keys merged, not replacing
    assert c["optimizer"]["type"] == "AdamW"  # offload needs DeepSpeed's CPU Adam


def test_argv_is_a_list_with_launcher_options(tmp_path):
    hosts = tmp_path / "hostfile"
    hosts.write_text("node1 slots=4\nnode2 slots=4 # second\n")
    p = _P(
        launcher="deepspeed",
        deepspeed={
            "hostfile": str(hosts),
            "num_nodes": 2,
            "master_addr": "10.0.0.1",
            "master_port": 29611,
        },
    )
    assert dl.world_size(p) == 8
    argv = dl.launcher_argv(p, tmp_path / "job.json", 8)
    assert argv[0].endswith("deepspeed")
    assert argv[1:] == [
        "--hostfile",
        str(hosts),
        "--num_nodes",
        "2",
        "--master_addr",
        "10.0.0.1",
        "--master_port",
        "29611",
        "--module",
        "stages.common.train.worker",
        "--job",
        str(tmp_path / "job.json"),
    ]  # remote hosts: DeepSpeed's ssh check stays on
    p1 = _P(launcher="deepspeed", deepspeed={"num_gpus": 2})
    assert dl.launcher_argv(p1, tmp_path / "j", 2)[1:3] == ["--num_gpus", "2"]


def test_argv_with_filters_and_local_hostfile(tmp_path):
    hosts = tmp_path / "hostfile"
    hosts.write_text("node1 slots=4\nnode2 slots=4\n")
    inc = _P(
        launcher="deepspeed",
        deepspeed={"hostfile": str(hosts), "include": "node1:0,1@node2"},
    )
    assert dl.world_size(inc) == 6
    argv = dl.launcher_argv(inc, tmp_path / "j", 6)
    assert argv[argv.index("--include") + 1] == "node1:0,1@node2"
    assert "--num_nodes" not in argv and "--num_gpus" not in argv
    exc = _P(
        launcher="deepspeed", deepspeed={"hostfile": str(hosts), "exclude": "node2:3"}
    )
    assert dl.world_size(exc) == 7
    local = tmp_path / "local"
    local.write_text("localhost slots=2\n")
    p = _P(launcher="deepspeed", deepspeed={"hostfile": str(local), "num_gpus": 2})
    argv = dl.launcher_argv(p, tmp_path / "j", 2)
    assert argv[argv.index("--master_addr") + 1] == "127.0.0.1"
    assert "--no_ssh_check" in argv  # nothing to ssh to


def test_multi_node_needs_hostfile():
    with pytest.raises(ValueError, match="deepspeed.hostfile"):
        _P(launcher="deepspeed", deepspeed={"num_nodes": 2})


@pytest.mark.parametrize(
    ("ds", "match"),
    [
        ({"hostfile": "h", "include": "a", "exclude": "b"}, "exclude each other"),
        ({"include": "a"}, "set deepspeed.hostfile"),
        ({"hostfile": "h", "include": "a", "num_gpus": 2}, "drop num_gpus"),
        ({"master_addr": "a b; rm"}, "master_addr"),
    ],
)
def test_launcher_options_are_validated(ds, match):
    with pytest.raises(ValueError, match=match):
        _P(launcher="deepspeed", deepspeed=ds)


@pytest.mark.parametrize(
    ("text", "ds", "match"),
    [
        ("node1 slots=4\n", {"num_nodes": 2}, "names 1 host"),
        ("node1 slots=1\nnode2 slots=4\n", {"num_nodes": 2, "num_gpus": 2}, "node1"),
        ("node1 4\n", {}, "hostfile:1: 'node1 4' is not"),
        ("a slots=1\na slots=2\n", {}, "listed twice"),
        ("# only a comment\n", {}, "names no host"),
        ("a slots=2\n", {"include": "b"}, "'b' is not in the hostfile"),
        ("a slots=2\n", {"exclude": "a:5"}, "slots 0..1"),
        ("a slots=2\n", {"exclude": "a"}, "leaves no slot"),
    ],
)
def test_hostfile_is_parsed_and_checked_against_the_request(tmp_path, text, ds, match):
    hosts = tmp_path / "hostfile"
    hosts.write_text(text)
    p = _P(launcher="deepspeed", deepspeed={"hostfile": "hostfile", **ds})
    issues = p.deepspeed.local_issues(tmp_path)
    assert len(issues) == 1 and issues[0][0] == "hostfile"
    assert match in issues[0][1]
    ok = _P(launcher="deepspeed", deepspeed={"hostfile": "hostfile"})
    hosts.write_text("localhost slots=2\n")
    assert ok.deepspeed.local_issues(tmp_path) == []


def test_failed_launch_raises_with_exit_code(tmp_path, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    (data / "data.jsonl").write_text('{"id": 1}\n')
    out = tmp_path / "out"
    out.mkdir()
    p = _P(launcher="deepspeed", steps=1, deepspeed={"num_gpus": 1})
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the kept job dir
    monkeypatch.setattr(
        dl,
        "launcher_argv",
        lambda *a: [
            sys.executable,
            "-c",
            "print('rank 0 failed'); raise SystemExit(3)",
        ],
    )
    job = {"out_dir": str(out), "inputs": {"data": str(data)}}
    with pytest.raises(RuntimeError, match="exited with 3") as e:
        dl.run_deepspeed(job, p, RunContext())
    assert "rank 0 failed" in str(e.value)
    assert (out / "deepspeed_config.json").exists()


def test_check_loadable_refuses_missing_weights(tmp_path):
    import torch
    from safetensors.torch import save_file

    from tests.tiny import llama_config

    cfg = llama_config(vocab_size=32, hidden=16, layers=1, heads=2, kv_heads=2)
    cfg.save_pretrained(tmp_path)
    with pytest.raises(RuntimeError, match="wrote no"):
        dl.check_loadable(tmp_path)
    save_file(
        {"model.embed_tokens.weight": torch.zeros(32, 16)},
        str(tmp_path / "model.safetensors"),
    )
    with pytest.raises(RuntimeError, match="does not load"):
        dl.check_loadable(tmp_path)


def test_carp_validate_reports_too_few_slots(tmp_path, capsys, monkeypatch):
    from pipelines.cli import main

    (tmp_path / "hosts").write_text("node1 slots=1\nnode2 slots=1\n")
    f = tmp_path / "p.yaml"
    f.write_text(
        "pipeline: t\nstages:\n  w: {kind: world}\n  b: {kind: pretrain, data: w}\n"
        "  s: {kind: select, method: random, pool: w, budget: 0.2}\n"
        "  r: {kind: recover, model: b, data: s, launcher: deepspeed, deepspeed: "
        "{hostfile: hosts, num_nodes: 2, num_gpus: 2}}\n"
    )
    monkeypatch.chdir(tmp_path)
    assert main(["validate", str(f)]) == 2
    err = capsys.readouterr().err
    assert "stages.r.deepspeed.hostfile" in err and "num_gpus is 2" in err
    (tmp_path / "hosts").write_text("node1 slots=2\nnode2 slots=2\n")
    assert main(["validate", str(f)]) == 0
