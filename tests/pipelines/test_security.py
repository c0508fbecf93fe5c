"""Security: a checkpoint's own code runs only when declared and
recorded; DeepSpeed config keys that write files stay in the stage's output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from pipelines.cli import main
from pipelines.graph import build
from pipelines.runtime import Layout, prepare, stage_tags
from pipelines.spec import DeclarationError, load

HEAD = (
    "pipeline: t\nstages:\n  w: {kind: world}\n  b: {kind: pretrain, data: w}\n"
    "  s: {kind: select, method: random, pool: w, budget: 0.2}\n"
)


def _checkpoint(folder: Path) -> Path:
    from tests.tiny import char_tokenizer, tiny_llama, write_checkpoint

    tok = char_tokenizer()
    return write_checkpoint(
        tiny_llama(tok, hidden=16, layers=1, heads=2, kv_heads=1), tok, folder
    )


def _calls(monkeypatch) -> list[bool]:
    """Record the trust_remote_code every model load passes to transformers."""
    import transformers

    seen: list[bool] = []
    real = transformers.AutoModelForCausalLM.from_pretrained

    def spy(*args, **kwargs):
        seen.append(kwargs.get("trust_remote_code"))
        return real(*args, **kwargs)

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", spy)
    return seen


@pytest.mark.parametrize("trust", [False, True])
def test_trust_remote_code_only_when_declared_and_recorded(
    trust, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    src = _checkpoint(tmp_path / "ckpt")
    (src / "modeling_evil.py").write_text("raise SystemExit('ran remote code')\n")
    decl = {
        "pipeline": "trust",
        "stages": {
            "m": {"kind": "pretrained", "path": str(src), "link": False},
            "p": {"kind": "prune", "method": "magnitude", "model": "m"},
        },
    }
    if trust:
        decl["stages"]["m"]["trust_remote_code"] = True
    f = tmp_path / "t.yaml"
    f.write_text(yaml.safe_dump(decl))
    seen = _calls(monkeypatch)
    assert main(["stage", "m", "--file", str(f), "--no-track"]) == 0
    assert main(["stage", "p", "--file", str(f), "--no-track"]) == 0
    assert seen == [trust]  # prune loaded m with exactly the declared flag
    for node in ("m", "p"):  # recorded on the checkpoint and what is made from it
        man = json.loads((tmp_path / "artifacts" / node / "carp.json").read_text())
        assert man.get("trust_remote_code", False) is trust
    assert (tmp_path / "artifacts" / "m" / "modeling_evil.py").exists() is trust
    graph = build(load(f))
    tags = stage_tags(prepare(graph, "p", Layout(tmp_path)), Layout(tmp_path))
    assert ("carp.trust_remote_code" in tags) is trust


def test_checkpoint_with_its_own_code_needs_the_flag(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    src = _checkpoint(tmp_path / "ckpt")
    cfg = json.loads((src / "config.json").read_text())
    cfg["auto_map"] = {"AutoModelForCausalLM": "modeling_x.XForCausalLM"}
    (src / "config.json").write_text(json.dumps(cfg))
    f = tmp_path / "t.yaml"
    f.write_text(f"pipeline: t\nstages:\n  m: {{kind: pretrained, path: {src}}}\n")
    assert main(["stage", "m", "--file", str(f), "--no-track"]) == 1
    err = capsys.readouterr().err
    assert "ships its own modelling code" in err and "trust_remote_code: true" in err


def test_loader_reads_the_flag_from_the_manifest_only(tmp_path):
    from stages.common.io import trusts_remote_code

    assert not trusts_remote_code(tmp_path)  # no manifest
    (tmp_path / "carp.json").write_text(json.dumps({"trust_remote_code": "yes"}))
    assert not trusts_remote_code(tmp_path)  # only a real true counts
    (tmp_path / "carp.json").write_text("{not json")
    assert not trusts_remote_code(tmp_path)
    (tmp_path / "carp.json").write_text(json.dumps({"trust_remote_code": True}))
    assert trusts_remote_code(tmp_path)


# -- deepspeed.config: file-writing keys confined to the output folder ---------

WRITERS = [
    ("monitor tensorboard", {"tensorboard": {"enabled": True, "output_path": "X"}}),
    ("monitor csv", {"csv_monitor": {"enabled": True, "output_path": "X"}}),
    (
        "nvme optimizer",
        {
            "zero_optimization": {
                "offload_optimizer": {"device": "nvme", "nvme_path": "X"}
            }
        },
    ),
    (
        "nvme params",
        {"zero_optimization": {"offload_param": {"device": "nvme", "nvme_path": "X"}}},
    ),
    ("flops profiler", {"flops_profiler": {"enabled": True, "output_file": "X"}}),
    ("autotuning results", {"autotuning": {"results_dir": "X"}}),
    ("autotuning exps", {"autotuning": {"exps_dir": "X"}}),
    ("nebula", {"nebula": {"persistent_storage_path": "X"}}),
    ("any *_dir key", {"checkpoint": {"some_dir": "X"}}),
]


def _with(config: dict, value) -> dict:
    return json.loads(json.dumps(config).replace('"X"', json.dumps(value)))


@pytest.mark.parametrize("label,config", WRITERS, ids=[w[0] for w in WRITERS])
@pytest.mark.parametrize("bad", ["/tmp/elsewhere", "../../outside", "~/x", "", 7])
def test_deepspeed_keys_that_write_outside_are_refused(label, config, bad, tmp_path):
    ds = {"launcher": "deepspeed", "deepspeed": {"config": _with(config, bad)}}
    text = (
        HEAD
        + "  r: "
        + json.dumps({"kind": "recover", "model": "b", "data": "s", **ds})
        + "\n"
    )
    f = tmp_path / "ds.yaml"
    f.write_text(text)
    with pytest.raises(DeclarationError) as err:
        load(f)
    msg = str(err.value)
    assert (
        "stages.r.deepspeed.config" in msg and "relative to the stage's output" in msg
    )


@pytest.mark.parametrize("label,config", WRITERS, ids=[w[0] for w in WRITERS])
def test_deepspeed_relative_paths_are_rewritten_under_the_output(
    label, config, tmp_path
):
    from stages.common.train.ds_paths import confine
    from stages.common.train.params import DeepSpeedParams

    cfg = DeepSpeedParams(config=_with(config, "logs/ds")).config  # accepted
    out = tmp_path / "out"
    confined = json.dumps(confine(cfg, out))
    assert str(out / "logs" / "ds") in confined
    assert confined.count(str(out)) == 1


def test_deepspeed_launch_writes_the_confined_config(tmp_path, monkeypatch):
    """run_deepspeed writes the config the ranks read with paths under out_dir
    (stopped right after, before any launcher starts)."""
    from stages.common.train import deepspeed_launch as dl
    from stages.common.train.params import DeepSpeedParams

    class Cfg:
        micro_batch, grad_accum, precision, max_grad_norm = 1, 1, "fp32", None
        lr, weight_decay = 1e-3, 0.0
        deepspeed = DeepSpeedParams(
            num_gpus=1, config={"tensorboard": {"enabled": True, "output_path": "tb"}}
        )

    def stop(*a, **k):
        raise RuntimeError("stop here")

    monkeypatch.setattr(dl.tempfile, "mkdtemp", stop)
    with pytest.raises(RuntimeError, match="stop here"):
        dl.run_deepspeed({"out_dir": str(tmp_path)}, Cfg(), None)
    conf = json.loads((tmp_path / dl.CONFIG_FILE).read_text())
    assert conf["tensorboard"]["output_path"] == str(tmp_path / "tb")
