"""The architecture matrix: tiny random-weight models built from the configs of
the causal LMs transformers ships in the Llama layout (Llama, Mistral, Qwen2,
Qwen3, Gemma 2, Phi-3 with its fused projections; Qwen2 and Gemma 2 with tied
embeddings) through prune (every method), select (PASER), recover (full, LoRA),
merge, unlearn and evaluate, each checked by an invariant of what the stage
does; and GPT-2 (Conv1D blocks at transformer.h) refused before any compute."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pipelines.contract import RunContext  # noqa: E402
from stages.common.io import load_masks, load_model, read_dataset, write_dataset  # noqa: E402
from tests.tiny import (  # noqa: E402
    ARCHITECTURES,
    char_tokenizer,
    records,
    tiny_causal_lm,
    write_checkpoint,
)

torch.set_num_threads(1)
CAL = {"nsamples": 4, "seqlen": 32, "batch_size": 4}
IDS = torch.randint(4, 100, (2, 20), generator=torch.Generator().manual_seed(1))


def _logits(model: Any) -> Any:
    with torch.no_grad():
        return model(IDS, use_cache=False).logits


def _sd(folder: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


@pytest.fixture(scope="module", params=list(ARCHITECTURES))
def env(request: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    arch = request.param
    root = tmp_path_factory.mktemp(f"arch-{arch}")
    tok = char_tokenizer()
    model = tiny_causal_lm(arch, tok)
    base = write_checkpoint(model, tok, root / "base")
    recs = records(40)
    write_dataset(recs, root / "data", source="test")
    write_dataset(recs[:12], root / "forget", source="test")
    texts = [{"id": f"t{i}", "text": r["instruction"] * 3} for i, r in enumerate(recs)]
    write_dataset(texts, root / "text", source="test")
    return {"arch": arch, "root": root, "base": base, "tok": tok, "done": {}}


def _prune(env: dict[str, Any], method: str, **kw: Any) -> tuple[Any, Path]:
    import importlib

    from stages.prune import run

    key = (method, tuple(sorted(kw.items())))
    if key in env["done"]:
        return env["done"][key]
    cls = importlib.import_module(f"stages.prune.{method}").Params
    calib = method in ("wanda", "sparsegpt", "depth")
    params = cls(model="base", **({"calib": "data"} if calib else {}), **CAL, **kw)
    out = env["root"] / f"prune-{method}-{len(env['done'])}"
    out.mkdir()
    inputs = {
        "model": env["base"],
        **({"calib": env["root"] / "data"} if calib else {}),
    }
    res = run(params, inputs, out, RunContext(seed=0))
    env["done"][key] = (res, out)
    return res, out


def _tied(model: Any) -> bool:
    return model.get_output_embeddings().weight is model.get_input_embeddings().weight


def _check_tying(env: dict[str, Any], out: Path) -> None:
    """A tied checkpoint stays tied (one matrix), an untied one stays untied."""
    base, model = load_model(env["base"]), load_model(out)
    assert _tied(model) == _tied(base) == bool(base.config.tie_word_embeddings)


@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt"])
def test_mask_pruning_zeroes_half_of_every_targeted_linear(env, method):
    res, out = _prune(env, method, sparsity=0.5)
    masks, before, after = load_masks(out), _sd(env["base"]), _sd(out)
    assert masks, "no linear was pruned"
    for name, keep in masks.items():
        assert float((~keep).float().mean()) == pytest.approx(0.5, abs=0.02), name
        assert ((after[name] == 0) == ~keep).all(), name
    untouched = [n for n in after if n not in masks]
    assert any("embed" in n for n in untouched)
    for name in untouched:  # embeddings, norms and lm_head are not pruned
        assert torch.equal(after[name], before[name]), name
    assert res.metrics["sparsity"] == pytest.approx(0.5, abs=0.02)
    assert torch.isfinite(_logits(load_model(out))).all()
    _check_tying(env, out)


def _kill_group_and_channels(model: Any) -> torch.Tensor:
    """Zero kv group 1 (its query heads, keys, values and output columns) and
    every fourth MLP channel in each block: they add nothing to the output."""
    cfg = model.config
    hd = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    per = cfg.num_attention_heads // cfg.num_key_value_heads
    q = slice(per * hd, 2 * per * hd)
    kv = slice(hd, 2 * hd)
    inter = cfg.intermediate_size
    dead = torch.arange(0, inter, 4)
    with torch.no_grad():
        for blk in model.get_decoder().layers:
            att, mlp = blk.self_attn, blk.mlp
            if hasattr(att, "qkv_proj"):
                w, q_n = att.qkv_proj.weight, cfg.num_attention_heads * hd
                kv_n = cfg.num_key_value_heads * hd
                w[q] = 0
                w[q_n + kv.start : q_n + kv.stop] = 0
                w[q_n + kv_n + kv.start : q_n + kv_n + kv.stop] = 0
            else:
                att.q_proj.weight[q] = 0
                att.k_proj.weight[kv] = 0
                att.v_proj.weight[kv] = 0
            att.o_proj.weight[:, q] = 0
            if hasattr(mlp, "gate_up_proj"):
                mlp.gate_up_proj.weight[dead] = 0
                mlp.gate_up_proj.weight[inter + dead] = 0
            else:
                mlp.gate_proj.weight[dead] = 0
                mlp.up_proj.weight[dead] = 0
            mlp.down_proj.weight[:, dead] = 0
    return dead


def test_width_removes_dead_heads_and_channels_without_changing_logits(env, tmp_path):
    from stages.prune import run
    from stages.prune.width import Params

    model = tiny_causal_lm(env["arch"], env["tok"], seed=3)
    _kill_group_and_channels(model)
    src = write_checkpoint(model, env["tok"], tmp_path / "src")
    params = Params(model="base", sparsity=0.5, mlp_ratio=0.25, **CAL)
    out = tmp_path / "out"
    out.mkdir()
    res = run(params, {"model": src}, out, RunContext())
    pruned = load_model(out)
    cfg = pruned.config
    assert (cfg.num_attention_heads, cfg.num_key_value_heads) == (2, 1)
    assert cfg.intermediate_size == 48
    assert res.extra_manifest["removed_kv_groups"] == {0: [1], 1: [1]}
    torch.testing.assert_close(_logits(pruned), _logits(model), rtol=1e-4, atol=1e-5)
    with torch.device("meta"):
        implied = type(pruned)(cfg)
    assert sum(p.numel() for p in pruned.parameters()) == sum(
        p.numel() for p in implied.parameters()
    )


def test_depth_drops_a_block_and_still_generates(env):
    res, out = _prune(env, "depth", blocks=1)
    model = load_model(out)
    assert model.config.num_hidden_layers == 1 == len(model.get_decoder().layers)
    assert res.metrics["blocks_removed"] == 1
    with torch.no_grad():  # the renumbered block works with a KV cache
        gen = model.generate(IDS[:1, :5], max_new_tokens=3, do_sample=False)
    assert gen.shape == (1, 8)
    _check_tying(env, out)


def test_paser_selects_within_budget_from_the_pool(env, tmp_path):
    from stages.select import paser, run

    _, pruned = _prune(env, "wanda", sparsity=0.5)
    p = paser.Params(pool="data", model="prune", reference="base", budget=0.25, k_max=4)
    inputs = {"pool": env["root"] / "data", "model": pruned, "reference": env["base"]}
    run(p, inputs, tmp_path, RunContext(seed=0))
    got = read_dataset(tmp_path)
    pool = {r["id"]: r for r in read_dataset(env["root"] / "data")}
    assert 0 < len(got) <= 10
    assert all(pool[r["id"]] == r for r in got)


def _recover(env: dict[str, Any], method: str) -> Path:
    from stages.recover import METHODS, run

    key = ("recover", method)
    if key in env["done"]:
        return env["done"][key]
    _, pruned = _prune(env, "magnitude", sparsity=0.5)
    extra = {"rank": 4} if method == "lora" else {}
    params = METHODS.load(method).Params(
        model="prune", data="data", steps=3, micro_batch=4, lr=1e-3, **extra
    )
    out = env["root"] / f"recover-{method}"
    out.mkdir()
    run(params, {"model": pruned, "data": env["root"] / "data"}, out, RunContext())
    env["done"][key] = out
    return out


@pytest.mark.parametrize("method", ["full", "lora"])
def test_recovery_trains_and_keeps_the_zero_pattern(env, method):
    out = _recover(env, method)
    _, pruned = _prune(env, "magnitude", sparsity=0.5)
    before, after = _sd(pruned), _sd(out)
    masks = load_masks(pruned)
    moved = 0
    for name, keep in masks.items():
        assert ((after[name] == 0) == (before[name] == 0)).all(), name
        moved += int((after[name][keep] != before[name][keep]).sum())
    assert moved > 0  # LoRA merged into every targeted (here: all) linear
    _check_tying(env, out)


def test_merge_of_the_two_recoveries_is_their_mean(env, tmp_path):
    from stages.merge import METHODS, run

    a, b = _recover(env, "full"), _recover(env, "lora")
    params = METHODS.load("linear").Params(models=[a.name, b.name])
    run(params, {"models": [a, b]}, tmp_path, RunContext(seed=0, name="merge"))
    out, sa, sb = _sd(tmp_path), _sd(a), _sd(b)
    assert set(out) == set(sa)
    for name, t in out.items():
        torch.testing.assert_close(t, (sa[name] + sb[name]) / 2, rtol=0, atol=1e-6)
    assert torch.isfinite(_logits(load_model(tmp_path))).all()


def _forget_nll(model_dir: Path, forget: list[dict[str, Any]]) -> float:
    from stages.common.text import collate, encode_example
    from stages.unlearn.losses import response_nll, sequence_logprob

    tok = char_tokenizer()
    model = load_model(model_dir)
    b = collate([encode_example(tok, r, 64) for r in forget], tok.pad_token_id)
    with torch.no_grad():
        logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"])
    return float(response_nll(*sequence_logprob(logits.logits, b["labels"])))


def test_gradient_ascent_raises_the_forget_loss(env, tmp_path):
    from stages.unlearn import METHODS, run

    params = METHODS.load("ga").Params(
        model="base", forget="forget", steps=4, micro_batch=4, lr=5e-3
    )
    inputs = {"model": env["base"], "forget": env["root"] / "forget"}
    run(params, inputs, tmp_path, RunContext(seed=0))
    forget = read_dataset(env["root"] / "forget")
    assert _forget_nll(tmp_path, forget) > _forget_nll(env["base"], forget)
    _check_tying(env, tmp_path)


def test_evaluate_scores_every_model_with_intervals(env, tmp_path):
    from stages.evaluate import run
    from stages.evaluate.datasets import Params

    _, pruned = _prune(env, "wanda", sparsity=0.5)
    p = Params(
        models=["base", pruned.name],
        text="text",
        instructions="data",
        seqlen=32,
        max_len=64,
        max_new_tokens=3,
        max_samples=8,
        batch_size=8,
    )
    inputs = {
        "models": [str(env["base"]), str(pruned)],
        "text": str(env["root"] / "text"),
        "instructions": str(env["root"] / "data"),
    }
    m = run(p, inputs, tmp_path, RunContext(seed=0)).metrics
    for name in ("base", pruned.name):
        for key in ("ppl_paper", "word_perplexity", "ppl_answer", "rougeL"):
            assert m[f"{name}/{key}_lo"] <= m[f"{name}/{key}"] <= m[f"{name}/{key}_hi"]
    assert f"{pruned.name}-vs-base/ppl_paper" in m


def test_an_architecture_outside_the_layout_is_refused_before_compute(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: Any
) -> None:
    from pipelines.cli import main
    from stages.pretrained import Params

    write_checkpoint(tiny_causal_lm("gpt2"), char_tokenizer(), tmp_path / "gpt2")
    issues = Params(path="gpt2").local_issues(tmp_path)
    assert len(issues) == 1 and issues[0][0] == "path"
    msg = issues[0][1]
    assert msg.startswith("architecture GPT2LMHeadModel is not supported")
    assert "tested: llama, mistral, qwen2, qwen3, gemma2, phi3" in msg
    f = tmp_path / "p.yaml"
    f.write_text(
        "pipeline: t\nstages:\n  base: {kind: pretrained, path: gpt2}\n"
        "  prune: {kind: prune, model: base}\n"
    )
    monkeypatch.chdir(tmp_path)
    assert main(["validate", str(f)]) == 2
    err = capsys.readouterr().err
    assert "stages.base.path" in err and "GPT2LMHeadModel" in err
    carp = Path(sys.executable).with_name("carp")
    run = subprocess.run([carp, "run", str(f)], capture_output=True, text=True)
    assert run.returncode == 2 and "GPT2LMHeadModel is not supported" in run.stderr
    assert "Traceback" not in run.stderr
    assert not (tmp_path / "artifacts").exists()
    for arch in ARCHITECTURES:  # and the matrix itself passes the same check
        write_checkpoint(tiny_causal_lm(arch), char_tokenizer(), tmp_path / arch)
        assert Params(path=arch).local_issues(tmp_path) == [], arch
