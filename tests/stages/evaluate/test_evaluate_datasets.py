"""The ``datasets`` evaluate method: perplexity of a text dataset in the paper
protocol (against Wanda's eval_ppl loop, written out here) and the lm-eval
protocol (against lm-eval itself, slow), generation EM / ROUGE-L per group,
intervals, paired differences, caching, validation and the device check."""

from __future__ import annotations

import json
import math
import os
import random
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pipelines.contract import RunContext  # noqa: E402
from stages.common.io import write_dataset  # noqa: E402
from stages.evaluate import METHODS, run  # noqa: E402
from stages.evaluate.datasets import Params  # noqa: E402

WORDS = "the model prunes sparse weights and recovers its layers on text".split()  # noqa: SIM905


def _docs(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [
        " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 40))) + "."
        for _ in range(n)
    ]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    import torch

    from tests.tiny import char_tokenizer, tiny_llama, write_checkpoint

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("dseval")
    tok = char_tokenizer()
    out = {}
    for i, name in enumerate(["base", "pruned"]):
        model = tiny_llama(tok, seed=i, hidden=32, layers=1, heads=2, kv_heads=1)
        out[name] = write_checkpoint(model, tok, root / name)
    texts = [{"id": f"d{i}", "text": t} for i, t in enumerate(_docs(12))]
    write_dataset(texts, root / "text", source="test")
    recs = [
        {"id": f"r{i}", "instruction": f"say {w}", "input": "", "output": w}
        | {"family": "short" if i % 2 else "long"}
        for i, w in enumerate(WORDS)
    ]
    write_dataset(recs, root / "inst", source="test")
    out["text"], out["inst"], out["root"] = root / "text", root / "inst", root
    return out


def _wanda_eval_ppl(model: Any, tok: Any, docs: list[str], seqlen: int) -> float:
    """Wanda's ``eval_ppl_wikitext`` (lib/eval.py), bs 1, as published."""
    import torch
    import torch.nn as nn

    testenc = tok("\n\n".join(docs), return_tensors="pt").input_ids
    nsamples = testenc.numel() // seqlen
    nlls = []
    for i in range(nsamples):
        inputs = testenc[:, i * seqlen : (i + 1) * seqlen]
        with torch.no_grad():
            lm_logits = model(inputs).logits
        shift_logits = lm_logits[:, :-1, :].contiguous()
        shift_labels = inputs[:, 1:]
        loss = nn.CrossEntropyLoss()(
            shift_logits.reshape(-1, shift_logits.size(-1)), shift_labels.reshape(-1)
        )
        nlls.append(loss.float() * seqlen)
    return torch.exp(torch.stack(nlls).sum() / (nsamples * seqlen)).item()


def _rolling_by_hand(model: Any, tok: Any, docs: list[str], max_len: int) -> float:
    """Token perplexity as lm-eval's rolling windows give it, one token at a
    time: a document's tokens in blocks of ``max_len``; a token of block k is
    predicted from the block's tokens before it, after bos (k = 0) or the one
    token before the block (k > 0); a short last block is scored in a full
    window (its context reaches back to ``max_len`` tokens)."""
    import torch

    total, n = 0.0, 0
    for d in docs:
        ids = [tok.bos_token_id, *tok(d, add_special_tokens=False)["input_ids"]]
        size = len(ids) - 1
        for t in range(size):  # predict ids[t + 1]
            start = (t // max_len) * max_len
            if start and size - start < max_len:  # a short last block: its
                start = size - max_len  # window reaches back max_len tokens
            ctx = ids[start : t + 1]
            with torch.no_grad():
                logits = model(input_ids=torch.tensor([ctx])).logits[0, -1].double()
            total -= float(torch.log_softmax(logits, -1)[ids[t + 1]])
            n += 1
    return math.exp(total / n)


def test_paper_protocol_equals_wandas_eval_ppl(world: dict[str, Path]) -> None:
    from stages.common.device import load_on
    from stages.common.io import load_tokenizer
    from stages.evaluate.datasets import score_text

    model = load_on(world["base"], "cpu", "float32")
    tok = load_tokenizer(world["base"])
    docs = [json.loads(x)["text"] for x in (world["text"] / "data.jsonl").open()]
    p = Params(models=["base"], text="t", protocols=["paper"], seqlen=64)
    ours = score_text(model, tok, docs, p, RunContext(), None, "base")
    want = _wanda_eval_ppl(model, tok, docs, 64)
    assert ours["ppl_paper"] == pytest.approx(want, rel=1e-6)
    n_tokens = len(tok("\n\n".join(docs))["input_ids"])
    assert ours["paper_windows"] == n_tokens // 64  # tail dropped
    # a different window length is a different number: the protocol is the window
    other = score_text(
        model, tok, docs, p.model_copy(update={"seqlen": 32}), RunContext(), None, "b"
    )
    assert other["ppl_paper"] != pytest.approx(ours["ppl_paper"], rel=1e-4)


def test_lm_eval_protocol_scores_each_token_once_with_rolling_context(
    world: dict[str, Path],
) -> None:
    from stages.common.device import load_on
    from stages.common.io import load_tokenizer
    from stages.evaluate.datasets import score_text
    from stages.evaluate.scoring import count_bytes, count_words

    model = load_on(world["base"], "cpu", "float32")
    tok = load_tokenizer(world["base"])
    docs = _docs(4, seed=3)
    p = Params(models=["m"], text="t", protocols=["lm_eval"], max_len=16)
    res = score_text(model, tok, docs, p, RunContext(), None, "m")
    assert res["ppl"] == pytest.approx(_rolling_by_hand(model, tok, docs, 16), rel=1e-6)
    tokens = sum(len(d) for d in docs)  # a character tokenizer
    nll = math.log(res["ppl"]) * tokens
    words = sum(count_words(d) for d in docs)
    n_bytes = sum(count_bytes(d) for d in docs)
    assert res["word_perplexity"] == pytest.approx(math.exp(nll / words), rel=1e-9)
    assert res["byte_perplexity"] == pytest.approx(math.exp(nll / n_bytes), rel=1e-9)
    assert res["bits_per_byte"] == pytest.approx(nll / n_bytes / math.log(2), rel=1e-9)


def test_stage_scores_text_and_instructions_with_intervals_and_pairs(
    world: dict[str, Path], tmp_path: Path
) -> None:
    p = Params(
        models=["base", "pruned"],
        text="t",
        instructions="i",
        seqlen=32,
        max_len=64,
        max_new_tokens=4,
        batch_size=4,
    )
    inputs = {
        "models": [str(world["base"]), str(world["pruned"])],
        "text": str(world["text"]),
        "instructions": str(world["inst"]),
    }
    ckpt = tmp_path / "ckpt"
    ctx = RunContext(
        seed=0,
        checkpoint_dir=ckpt,
        input_fingerprints={"models": ["a", "b"], "text": "t", "instructions": "i"},
    )
    res = run(p, inputs, tmp_path / "out", ctx)
    m = res.metrics
    for model in ("base", "pruned"):
        for key in ("ppl_paper", "ppl", "word_perplexity", "bits_per_byte"):
            assert (
                m[f"{model}/{key}_lo"] <= m[f"{model}/{key}"] <= m[f"{model}/{key}_hi"]
            )
        for key in ("em/long", "em/short", "em/mean", "rougeL", "ppl_answer"):
            assert f"{model}/{key}" in m and f"{model}/{key}_lo" in m
        assert 0 <= m[f"{model}/rougeL"] <= 1
    pair = "pruned-vs-base"
    for key in ("ppl_paper", "word_perplexity", "rougeL", "em/mean"):
        assert m[f"{pair}/{key}_lo"] <= m[f"{pair}/{key}_hi"]
    assert m[f"{pair}/ppl_paper"] == pytest.approx(
        m["pruned/ppl_paper"] - m["base/ppl_paper"]
    )
    table = (tmp_path / "out" / "table.md").read_text()
    assert "perplexity (paper protocol)" in table
    assert "word perplexity (lm-eval protocol)" in table
    assert "ROUGE-L" in table and "| long |" in table
    preds = [json.loads(x) for x in (tmp_path / "out/predictions/base.jsonl").open()]
    assert [r["family"] for r in preds[:2]] == ["long", "short"]
    assert len(preds) == len(WORDS)
    # the second run reads every model from the checkpoint cache, same numbers
    cached = sorted(ckpt.glob("*.json"))
    assert len([c for c in cached if c.name.count(".") == 2]) == 2
    again = run(p, inputs, tmp_path / "out2", ctx)
    assert again.metrics == m
    assert (tmp_path / "out2/predictions/base.jsonl").read_text() == (
        tmp_path / "out/predictions/base.jsonl"
    ).read_text()


def test_generation_scores_follow_the_predictions(
    world: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A generator that answers the even records right (plus chatter after the
    stop string) and the odd ones wrong: EM per group and ROUGE-L are exact."""
    from stages.evaluate import generation

    def fake(model, tok, records, budget, *a, **k):  # noqa: ANN001, ANN002, ANN003
        return [
            f" {r['output'].upper()}  \n\nmore" if i % 2 == 0 else " nothing here"
            for i, r in enumerate(records)
        ]

    monkeypatch.setattr(generation, "greedy_generate", fake)
    p = Params(
        models=["base"],
        instructions="i",
        normalize=["strip", "lower"],
        max_new_tokens=4,
    )
    inputs = {"models": [str(world["base"])], "instructions": str(world["inst"])}
    m = run(p, inputs, tmp_path, RunContext()).metrics
    assert m["base/em/long"] == 1.0 and m["base/em/short"] == 0.0
    assert m["base/em/mean"] == 0.5
    evens = (len(WORDS) + 1) // 2  # ROUGE-L 1 on each, 0 on the odd ones
    assert m["base/rougeL"] == pytest.approx(evens / len(WORDS))
    # without lower-casing the upper-case answers do not match
    p2 = p.model_copy(update={"normalize": ("strip",)})
    assert run(p2, inputs, tmp_path / "b", RunContext()).metrics["base/em/mean"] == 0.0


def test_normalisation_steps() -> None:
    from stages.evaluate.scoring import normalize, truncate_at

    assert (
        normalize(
            "  The  Cat, sat.\nNo ", ["lower", "punctuation", "articles", "whitespace"]
        )
        == "cat sat no"
    )
    assert normalize(" a\nb ", ["first_line"]) == "a"
    assert truncate_at("yes\n\nand more", ["\n\n", "and"]) == "yes"
    assert truncate_at("yes", ["\n"]) == "yes"


def test_declaration_errors_name_the_field() -> None:
    with pytest.raises(ValidationError, match="at least one of text"):
        Params(models=["m"])
    with pytest.raises(ValidationError, match="normalize: unknown step"):
        Params(models=["m"], text="t", normalize=["upper"])
    with pytest.raises(ValidationError, match="device: 'gpu' is not a device"):
        Params(models=["m"], text="t", device="gpu")
    with pytest.raises(ValidationError, match="lm_eval_include: name the tasks"):
        Params(models=["m"], text="t", lm_eval_include="tasks")
    assert "datasets" in METHODS
    harness = METHODS.load("lm_eval").Params
    with pytest.raises(ValidationError, match="lm_eval_tasks"):
        harness(models=["m"])
    assert harness(models=["m"], lm_eval_tasks=["t"]).lm_eval_tasks == ("t",)


def test_text_shorter_than_a_window_and_text_records_as_instructions(
    world: dict[str, Path], tmp_path: Path
) -> None:
    p = Params(models=["base"], text="t", protocols=["paper"], seqlen=100000)
    inputs = {"models": [str(world["base"])], "text": str(world["text"])}
    with pytest.raises(ValueError, match="fewer than one paper-protocol window"):
        run(p, inputs, tmp_path, RunContext())
    p = Params(models=["base"], instructions="text")
    inputs = {"models": [str(world["base"])], "instructions": str(world["text"])}
    with pytest.raises(ValueError, match="record 1 is a text record"):
        run(p, inputs, tmp_path, RunContext())


@pytest.mark.skipif(
    __import__("torch").cuda.is_available(), reason="checks a machine without CUDA"
)
def test_cuda_is_refused_before_compute_without_one(world: dict[str, Path]) -> None:
    from stages.common.device import pick_device, require_device

    assert pick_device("auto") == "cpu"
    p = Params(models=["base"], text="t", device="cuda")
    assert p.local_issues(Path(".")) == [
        (
            "device",
            "'cuda' asked for, but this machine has no CUDA device; set device: "
            "auto (cuda when present, else cpu) or cpu",
        )
    ]
    assert Params(models=["base"], text="t").local_issues(Path(".")) == []
    with pytest.raises(ValueError, match=r"stages\.eval\.device: 'cuda:1'"):
        require_device("cuda:1", "eval")


@pytest.mark.slow
@pytest.mark.integration
def test_lm_eval_protocol_equals_lm_eval_in_one_stage(
    world: dict[str, Path], tmp_path: Path
) -> None:
    """One stage scores the text with carp's lm_eval protocol and runs the same
    documents as a local lm-eval task: the word perplexities agree to 0.1%."""
    pytest.importorskip("lm_eval")
    from stages.evaluate.lm_eval import rolling_task_yaml

    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    data = tasks / "docs.jsonl"
    data.write_text((world["text"] / "data.jsonl").read_text())
    (tasks / "carp_local_ppl.yaml").write_text(
        rolling_task_yaml("carp_local_ppl", data, tmp_path / "hf")
    )
    p = Params(
        models=["base"],
        text="t",
        protocols=["lm_eval"],
        max_len=32,
        batch_size=4,
        lm_eval_tasks=["carp_local_ppl"],
        lm_eval_include=str(tasks),
    )
    inputs = {"models": [str(world["base"])], "text": str(world["text"])}
    m = run(p, inputs, tmp_path / "out", RunContext()).metrics
    for ours, theirs in [
        ("word_perplexity", "word_perplexity"),
        ("byte_perplexity", "byte_perplexity"),
        ("bits_per_byte", "bits_per_byte"),
    ]:
        assert m[f"base/{ours}"] == pytest.approx(
            m[f"base/lm_eval/carp_local_ppl/{theirs}"], rel=1e-3
        )
    assert (
        "lm_eval/carp_local_ppl/word_perplexity"
        in (tmp_path / "out/table.md").read_text()
    )
    # lm-eval gives perplexity rows no standard error ("N/A"): no bounds are
    # made up for them; carp's own rows of the same number carry intervals
    key = "base/lm_eval/carp_local_ppl/word_perplexity"
    assert f"{key}_lo" not in m and "base/word_perplexity_lo" in m


@pytest.mark.skipif(
    __import__("torch").cuda.is_available(), reason="checks a machine without CUDA"
)
def test_carp_refuses_cuda_before_any_stage_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: Any
) -> None:
    import subprocess
    import sys

    from pipelines.cli import main

    (tmp_path / "corpus.txt").write_text("one document\n\nanother one\n")
    f = tmp_path / "p.yaml"
    f.write_text(
        "pipeline: t\nstages:\n  w: {kind: world}\n  b: {kind: pretrain, data: w}\n"
        "  txt: {kind: dataset, method: files, path: corpus.txt}\n"
        "  p: {kind: prune, model: b, device: 'cuda:0'}\n"
        "  e: {kind: evaluate, method: datasets, models: [b, p], text: txt, "
        "device: cuda}\n"
    )
    monkeypatch.chdir(tmp_path)
    assert main(["validate", str(f)]) == 2
    err = capsys.readouterr().err
    assert "stages.e.device: 'cuda' asked for" in err, err
    assert "stages.p.device: 'cuda:0' asked for" in err
    assert "set device: auto" in err
    carp = Path(sys.executable).with_name("carp")
    run = subprocess.run([carp, "run", str(f)], capture_output=True, text=True)
    assert run.returncode == 2 and "stages.e.device: 'cuda'" in run.stderr
    assert "Traceback" not in run.stderr
    assert not (tmp_path / "artifacts").exists()  # nothing ran


def test_multiple_choice_file_scores_options_as_lm_eval(
    world: dict[str, Path], tmp_path: Path
) -> None:
    """acc / acc_norm per item equal the argmax of each option's summed
    log-probability (per character for acc_norm), computed here one option
    at a time from bos + question."""
    import torch

    from stages.common.io import load_model, load_tokenizer

    rng = random.Random(5)
    items = []
    for i in range(6):
        opts = rng.sample(WORDS, 3)
        items.append({"id": f"q{i}", "question": f"pick {opts[1]}:", "choices": opts})
        items[-1]["answer"] = 1 if i % 2 else opts[0]  # an index or the text
    path = tmp_path / "mc.jsonl"
    path.write_text("".join(json.dumps(it) + "\n" for it in items))
    p = Params(models=["base", "pruned"], choices_file=str(path), batch_size=5)
    inputs = {"models": [str(world["base"]), str(world["pruned"])]}
    m = run(p, inputs, tmp_path / "out", RunContext()).metrics
    model, tok = load_model(world["base"]), load_tokenizer(world["base"])
    rows = [json.loads(x) for x in (tmp_path / "out/choices/base.jsonl").open()]
    for it, row in zip(items, rows, strict=True):
        lls = []
        for opt in it["choices"]:
            ctx = [
                tok.bos_token_id,
                *tok(it["question"], add_special_tokens=False)["input_ids"],
            ]
            cont = tok(" " + opt, add_special_tokens=False)["input_ids"]
            ids = torch.tensor([ctx + cont])
            with torch.no_grad():
                logp = torch.log_softmax(model(ids).logits[0].double(), -1)
            lls.append(
                sum(float(logp[len(ctx) - 1 + j, t]) for j, t in enumerate(cont))
            )
        gold = it["answer"] if isinstance(it["answer"], int) else 0
        assert row["lls"] == pytest.approx(lls, abs=1e-6)
        assert row["acc"] == float(max(range(3), key=lls.__getitem__) == gold)
        norm = [v / len(o) for v, o in zip(lls, it["choices"], strict=True)]
        assert row["acc_norm"] == float(max(range(3), key=norm.__getitem__) == gold)
    assert m["base/mc/acc"] == sum(r["acc"] for r in rows) / len(rows)
    assert m["base/mc/acc_lo"] <= m["base/mc/acc"] <= m["base/mc/acc_hi"]
    assert "pruned-vs-base/mc/acc" in m
