"""Evaluate resumes: per-model results (and predictions) come back from the
checkpoint folder, keyed on params and the inputs' fingerprints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipelines.contract import RunContext
from pipelines.graph import folder_fingerprint
from stages.evaluate import KIND
from stages.evaluate.world import Params


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    import torch

    from tests.tiny import micro_world, tiny_llama, world_tokenizer, write_checkpoint

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("resume")
    world = micro_world(root / "world", eval_per_family=2, ppl_size=3, families=["add"])
    tok = world_tokenizer(world)
    model = tiny_llama(tok, seed=0, hidden=32, layers=1, heads=2, kv_heads=1)
    return world, write_checkpoint(model, tok, root / "m")


def ctx(ckpt: Path, model_fp: str = "m1") -> RunContext:
    for out in ("a", "b"):  # the engine hands over empty output folders
        (ckpt.parent / out).mkdir(exist_ok=True)
    fps = {"data": "w1", "models": [model_fp]}
    return RunContext(checkpoint_dir=ckpt, input_fingerprints=fps)


def test_second_run_reads_the_cache_and_writes_the_same_output(
    folders, tmp_path, monkeypatch
):
    world, model = folders
    params = Params(models=["m"], data="world", max_samples_per_family=2)
    inputs = {"data": world, "models": [model]}
    assert KIND.resumable
    first = KIND.run(params, inputs, tmp_path / "a", ctx(tmp_path / "ck"))
    cached = sorted(p.name for p in (tmp_path / "ck").iterdir())
    assert len(cached) == 4  # result, predictions, answer and document NLLs
    assert any(n.endswith(".predictions.m.jsonl") for n in cached)
    assert any(n.endswith(".answers.m.jsonl") for n in cached)

    import stages.common.io as io

    def no_load(*a, **k):
        raise AssertionError("the model was loaded although its result is cached")

    monkeypatch.setattr(io, "load_model", no_load)
    second = KIND.run(params, inputs, tmp_path / "b", ctx(tmp_path / "ck"))
    assert second.metrics == first.metrics
    assert folder_fingerprint(tmp_path / "a") == folder_fingerprint(tmp_path / "b")


def test_a_changed_input_fingerprint_is_not_served_from_cache(
    folders, tmp_path, monkeypatch
):
    world, model = folders
    params = Params(models=["m"], data="world", max_samples_per_family=1)
    inputs = {"data": world, "models": [model]}
    KIND.run(params, inputs, tmp_path / "a", ctx(tmp_path / "ck"))
    before = {p.name for p in (tmp_path / "ck").iterdir()}
    KIND.run(params, inputs, tmp_path / "b", ctx(tmp_path / "ck", model_fp="m2"))
    after = {p.name for p in (tmp_path / "ck").iterdir()}
    assert after > before  # a new entry for the new model content
    assert json.loads(next((tmp_path / "ck").glob("*.json")).read_text())


def test_cache_key_follows_the_choices_file_content(tmp_path):
    from stages.evaluate.world import result_key

    path = tmp_path / "mc.jsonl"
    path.write_text('{"question": "q", "choices": ["a", "b"], "answer": 0}\n')
    params = Params(models=["m"], data="w", choices_file=str(path))
    key = result_key(params, "m1", "w1")
    assert key == result_key(params, "m1", "w1")
    path.write_text('{"question": "q", "choices": ["a", "b"], "answer": 1}\n')
    assert result_key(params, "m1", "w1") != key


def test_seed_variants_get_an_across_seeds_row(folders, tmp_path):
    import shutil

    world, model = folders
    dirs = [tmp_path / "m@s0", tmp_path / "m@s1"]
    for d in dirs:  # the seed variants of a swept stage `m`
        shutil.copytree(model, d)
    params = Params(models=["m@s0", "m@s1"], data="world", max_samples_per_family=2)
    (tmp_path / "out").mkdir()
    res = KIND.run(
        params, {"data": world, "models": dirs}, tmp_path / "out", RunContext()
    )
    assert res.metrics["seeds/m/seeds"] == 2
    assert res.metrics["seeds/m/em/mean"] == res.metrics["m@s0/em/mean"]
    assert res.metrics["seeds/m/ppl_answer_std"] == 0.0  # the same weights
    assert "| m | 2 |" in (tmp_path / "out" / "table.md").read_text()


def test_adding_a_model_scores_only_that_model(folders, tmp_path, monkeypatch):
    import shutil

    import stages.common.io as io

    world, model = folders
    other = tmp_path / "n"
    shutil.copytree(model, other)
    loaded: list[str] = []
    real = io.load_model
    monkeypatch.setattr(
        io, "load_model", lambda d, **k: loaded.append(d.name) or real(d, **k)
    )
    ck = tmp_path / "ck"
    one = Params(models=["m"], data="world", max_samples_per_family=1)
    KIND.run(one, {"data": world, "models": [model]}, tmp_path / "a", ctx(ck))
    two = one.model_copy(update={"models": ["m", "n"]})
    fps = {"data": "w1", "models": ["m1", "n1"]}
    run_ctx = RunContext(checkpoint_dir=ck, input_fingerprints=fps)
    KIND.run(two, {"data": world, "models": [model, other]}, tmp_path / "b", run_ctx)
    assert loaded == ["m", "n"]  # m came from the cache the second time
