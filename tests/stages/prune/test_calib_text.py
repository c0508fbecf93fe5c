"""Calibration from a text corpus, cut as the Wanda/SparseGPT code cuts C4
(``get_c4`` in locuslab/wanda lib/data.py and IST-DASLab/sparsegpt
datautils.py), and carp's masks on those windows against the reference
pruners (``prune_wanda`` / ``prune_sparsegpt`` with ``SparseGPT.fasterprune``,
re-implemented here from the public code)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import random
from collections import Counter

import pytest
import torch

from pipelines.contract import RunContext
from stages.prune import run
from stages.prune.calib import Calibration

torch.set_num_threads(1)
SEQLEN, NSAMPLES = 48, 16
WORDS = ["the", "of", "and", "to", "in", "is", "was", "for", "on", "that", "a"]


def _docs(n: int, seed: int, lo: int = 2, hi: int = 70) -> list[str]:
    """Documents of ``lo``..``hi`` random words: many shorter than SEQLEN
    character tokens (get_c4 redraws those), some several windows long."""
    rng = random.Random(seed)
    return [
        " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))
        for _ in range(n)
    ]


def _write_text_dataset(folder, texts):
    folder.mkdir(parents=True)
    with open(folder / "data.jsonl", "w") as f:
        for i, t in enumerate(texts):
            f.write(json.dumps({"id": f"d{i:04d}", "text": t}) + "\n")
    (folder / "dataset.json").write_text(json.dumps({"shape": "text", "source": "t"}))
    return folder


def _bos_char_tokenizer():
    """The tests' character tokenizer, made to add BOS by default (as Llama's
    does), so documents are tokenized with their special tokens."""
    from tokenizers import processors

    from tests.tiny import char_tokenizer

    tok = char_tokenizer()
    tok._tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", tok.bos_token_id)]
    )
    return tok


@pytest.fixture(scope="module")
def text_model_dir(tmp_path_factory):
    from tests.tiny import WIDE_INIT_STD, tiny_llama, write_checkpoint

    tok = _bos_char_tokenizer()
    model = tiny_llama(tok, init_std=WIDE_INIT_STD, max_positions=128)
    return write_checkpoint(model, tok, tmp_path_factory.mktemp("textbase"))


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):
    return _write_text_dataset(tmp_path_factory.mktemp("c") / "corpus", _docs(80, 0))


def _texts(folder) -> list[str]:
    from stages.common.io import read_dataset

    return [r["text"] for r in read_dataset(folder)]


def reference_get_c4(texts, nsamples, seed, seqlen, tokenizer):
    """get_c4's training-window loop, verbatim but for the dataset object (the
    global ``random`` state is restored afterwards)."""
    state = random.getstate()
    try:
        random.seed(seed)
        trainloader = []
        for _ in range(nsamples):
            while True:
                i = random.randint(0, len(texts) - 1)
                trainenc = tokenizer(texts[i], return_tensors="pt")
                if trainenc.input_ids.shape[1] > seqlen:
                    break
            i = random.randint(0, trainenc.input_ids.shape[1] - seqlen - 1)
            j = i + seqlen
            trainloader.append(trainenc.input_ids[:, i:j])
    finally:
        random.setstate(state)
    return torch.cat(trainloader)


# --- the reference pruners (locuslab/wanda lib/prune.py, lib/layerwrapper.py,
# lib/sparsegpt.py = IST-DASLab/sparsegpt sparsegpt.py), unstructured, CPU ---


class RefWrappedGPT:
    """Wanda's per-input-feature running mean of ||x_j||^2 over samples."""

    def __init__(self, layer):
        self.scaler_row = torch.zeros(layer.weight.shape[1])
        self.nsamples = 0

    def add_batch(self, inp):
        if len(inp.shape) == 2:
            inp = inp.unsqueeze(0)
        tmp = inp.shape[0]
        inp = inp.reshape((-1, inp.shape[-1])).t()
        self.scaler_row *= self.nsamples / (self.nsamples + tmp)
        self.nsamples += tmp
        inp = inp.type(torch.float32)
        self.scaler_row += torch.norm(inp, p=2, dim=1) ** 2 / self.nsamples


class RefSparseGPT:
    """SparseGPT's running H = 2/n sum x x^T and ``fasterprune`` (prune_n 0)."""

    def __init__(self, layer):
        self.layer = layer
        self.columns = layer.weight.shape[1]
        self.H = torch.zeros((self.columns, self.columns))
        self.nsamples = 0

    def add_batch(self, inp):
        if len(inp.shape) == 2:
            inp = inp.unsqueeze(0)
        tmp = inp.shape[0]
        inp = inp.reshape((-1, inp.shape[-1])).t()
        self.H *= self.nsamples / (self.nsamples + tmp)
        self.nsamples += tmp
        inp = math.sqrt(2 / self.nsamples) * inp.float()
        self.H += inp.matmul(inp.t())

    def fasterprune(self, sparsity, blocksize=128, percdamp=0.01, floor=False):
        """Prunes the layer in place; returns the pruned positions (True).
        ``floor``: prune exactly floor(s*n) per block (``< thresh``), as carp
        does, instead of the reference's ``<= thresh``."""
        W = self.layer.weight.data.clone().float()
        H = self.H
        dead = torch.diag(H) == 0
        H[dead, dead] = 1
        W[:, dead] = 0
        damp = percdamp * torch.mean(torch.diag(H))
        diag = torch.arange(self.columns)
        H[diag, diag] += damp
        H = torch.linalg.cholesky(H)
        H = torch.cholesky_inverse(H)
        Hinv = torch.linalg.cholesky(H, upper=True)
        pruned = torch.zeros_like(W, dtype=torch.bool)
        for i1 in range(0, self.columns, blocksize):
            i2 = min(i1 + blocksize, self.columns)
            W1 = W[:, i1:i2].clone()
            Q1 = torch.zeros_like(W1)
            Err1 = torch.zeros_like(W1)
            Hinv1 = Hinv[i1:i2, i1:i2]
            tmp = W1**2 / (torch.diag(Hinv1).reshape((1, -1))) ** 2
            thresh = torch.sort(tmp.flatten())[0][int(tmp.numel() * sparsity)]
            # the reference's count: floor(s*n) + 1 entries (no ties)
            mask1 = tmp < thresh if floor else tmp <= thresh
            for i in range(i2 - i1):
                w = W1[:, i]
                d = Hinv1[i, i]
                q = w.clone()
                q[mask1[:, i]] = 0
                Q1[:, i] = q
                err1 = (w - q) / d
                W1[:, i:] -= err1.unsqueeze(1).matmul(Hinv1[i, i:].unsqueeze(0))
                Err1[:, i] = err1
            W[:, i1:i2] = Q1
            pruned[:, i1:i2] = mask1
            W[:, i2:] -= Err1.matmul(Hinv[i1:i2, i2:])
        self.layer.weight.data = W.to(self.layer.weight.dtype)
        return pruned


def _ref_wanda(wrapped, layer, sparsity):
    W = layer.weight.data
    W_metric = torch.abs(W) * torch.sqrt(wrapped.scaler_row.reshape((1, -1)))
    W_mask = torch.zeros_like(W_metric) == 1
    sort_res = torch.sort(W_metric, dim=-1, stable=True)
    indices = sort_res[1][:, : int(W_metric.shape[1] * sparsity)]
    W_mask.scatter_(1, indices, True)
    W[W_mask] = 0
    return W_mask


class _Stop(Exception):
    pass


def reference_prune(model, windows, method, sparsity=0.5, floor=False):
    """Keep-masks by weight name from the reference's sequential scheme: block
    i's linears gather statistics from every sample (one at a time) passed
    through the blocks before it, already pruned; then block i is pruned."""
    layers = model.model.layers
    masks = {}
    for i, layer in enumerate(layers):
        subset = {
            n: m for n, m in layer.named_modules() if isinstance(m, torch.nn.Linear)
        }
        wrap = RefWrappedGPT if method == "wanda" else RefSparseGPT
        stats = {n: wrap(m) for n, m in subset.items()}
        handles = [
            m.register_forward_hook(lambda _m, inp, _o, s=stats[n]: s.add_batch(inp[0]))
            for n, m in subset.items()
        ]

        def stop(*_):
            raise _Stop

        handles.append(layer.register_forward_hook(stop))
        with torch.no_grad():
            for j in range(len(windows)):
                with contextlib.suppress(_Stop):
                    model(windows[j : j + 1], use_cache=False)
        for h in handles:
            h.remove()
        with torch.no_grad():
            for n, m in subset.items():
                if method == "wanda":
                    pruned = _ref_wanda(stats[n], m, sparsity)
                else:
                    pruned = stats[n].fasterprune(sparsity, floor=floor)
                masks[f"model.layers.{i}.{n}.weight"] = ~pruned
    return masks


def _stage(method, model_dir, calib, out, **kw):
    import importlib

    params = importlib.import_module(f"stages.prune.{method}").Params(
        model="base", calib="corpus", batch_size=4, **kw
    )
    out.mkdir()
    return run(params, {"model": model_dir, "calib": calib}, out, RunContext())


# --- (a), (d): the windows ---


@pytest.mark.parametrize("seed", [0, 1])
def test_windows_equal_get_c4(text_model_dir, corpus_dir, seed):
    from stages.common.io import load_tokenizer

    tok = load_tokenizer(text_model_dir)
    cal = Calibration(corpus_dir, tok, NSAMPLES, SEQLEN, seed)
    ids, valid = cal.samples("test")
    ref = reference_get_c4(_texts(corpus_dir), NSAMPLES, seed, SEQLEN, tok)
    assert torch.equal(ids, ref)
    assert ids.shape == (NSAMPLES, SEQLEN) and bool(valid.all())
    fp = cal.fingerprint
    assert (fp["shape"], fp["format"], fp["tokens"]) == ("text", "windows", ref.numel())
    assert "template" not in fp  # documents are not rendered
    assert all(tok.bos_token_id not in w[1:] for w in ids.tolist())


def test_documents_are_tokenized_with_bos(text_model_dir, tmp_path):
    """A document of SEQLEN characters is SEQLEN + 1 tokens with the BOS the
    tokenizer adds by default: longer than seqlen, its one window (offset
    randint(0, 0)) starts with BOS; without BOS it would be too short."""
    from stages.common.io import load_tokenizer

    tok = load_tokenizer(text_model_dir)
    folder = _write_text_dataset(tmp_path / "one", ["x" * SEQLEN, "y"])
    ids = Calibration(folder, tok, 3, SEQLEN, 0).samples("t")[0]
    x = tok.convert_tokens_to_ids("x")
    assert ids.tolist() == [[tok.bos_token_id] + [x] * (SEQLEN - 1)] * 3


def test_another_seed_gives_other_windows(text_model_dir, corpus_dir):
    from stages.common.io import load_tokenizer

    tok = load_tokenizer(text_model_dir)
    a = Calibration(corpus_dir, tok, NSAMPLES, SEQLEN, 0).samples("t")[0]
    b = Calibration(corpus_dir, tok, NSAMPLES, SEQLEN, 1).samples("t")[0]
    again = Calibration(corpus_dir, tok, NSAMPLES, SEQLEN, 0).samples("t")[0]
    assert torch.equal(a, again)
    rows_a, rows_b = {tuple(r) for r in a.tolist()}, {tuple(r) for r in b.tolist()}
    assert len(rows_a & rows_b) < NSAMPLES // 4  # mostly other windows


def test_rare_long_documents_match_get_c4(text_model_dir, tmp_path):
    """One long document among 300 short ones: the draws follow get_c4's
    exactly, also after a scan of every length (forced here after 8 misses in
    a row), and each short document is tokenized once."""
    from stages.common.io import load_tokenizer
    from stages.prune.calib import document_windows

    texts = _docs(300, 3, lo=1, hi=6)
    texts[123] = _docs(1, 4, lo=60, hi=60)[0]
    folder = _write_text_dataset(tmp_path / "rare", texts)
    tok = load_tokenizer(text_model_dir)
    ref = reference_get_c4(texts, 4, 0, SEQLEN, tok)
    cal = Calibration(folder, tok, 4, SEQLEN, 0)
    assert torch.equal(cal.samples("t")[0], ref)
    assert cal.fingerprint["records_used"] == 1
    calls: list[int] = []

    def tokenize(i):
        calls.append(i)
        return tok(texts[i])["input_ids"]

    windows, used = document_windows(tokenize, 300, 4, SEQLEN, 0, scan_after=8)
    assert windows == ref.tolist() and used == [123] * 4
    assert set(calls) == set(range(300))  # the scan measured every document
    counts = Counter(calls)
    assert all(counts[i] == 1 for i in range(300) if i != 123)  # short: once
    assert 4 <= counts[123] <= 5  # once per window (+ once if the scan met it)


# --- (b): masks against the reference pruners ---


def _agreement(got, ref):
    same = sum(int((got[n] == ref[n]).sum()) for n in ref)
    total = sum(ref[n].numel() for n in ref)
    worst = min(float((got[n] == ref[n]).float().mean()) for n in ref)
    return same / total, worst


@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
def test_masks_agree_with_reference_on_text_windows(
    method, text_model_dir, corpus_dir, tmp_path
):
    from stages.common.io import load_masks, load_model, load_tokenizer

    res = _stage(
        method,
        text_model_dir,
        corpus_dir,
        tmp_path / method,
        nsamples=NSAMPLES,
        seqlen=SEQLEN,
    )
    got = load_masks(tmp_path / method)
    tok = load_tokenizer(text_model_dir)
    windows = reference_get_c4(_texts(corpus_dir), NSAMPLES, 0, SEQLEN, tok)
    cal = res.extra_manifest["calibration"]
    assert cal["tokens_sha256"] == (
        hashlib.sha256(windows.numpy().tobytes()).hexdigest()
    )
    assert (cal["shape"], cal["format"], cal["seqlen"]) == ("text", "windows", SEQLEN)
    ref = reference_prune(load_model(text_model_dir), windows, method)
    assert sorted(got) == sorted(ref)
    overall, worst = _agreement(got, ref)
    print(
        f"{method} mask agreement with the reference: {overall:.6f} (worst {worst:.6f})"
    )
    assert overall >= 0.999, (method, overall, worst)
    assert worst >= 0.995, (method, overall, worst)
    if method == "sparsegpt":
        # the reference prunes floor(s*n)+1 per column block (`<= thresh`), carp
        # exactly floor(s*n): one weight more per matrix here (one block each)
        for n in ref:
            assert int((~ref[n]).sum()) == int((~got[n]).sum()) + 1, n
        # that count is the whole difference: with floor(s*n) the masks agree
        exact = reference_prune(load_model(text_model_dir), windows, method, floor=True)
        print(f"sparsegpt agreement, reference at floor(s*n): {_agreement(got, exact)}")
        assert _agreement(got, exact)[0] >= 0.9999  # measured 1.0
    else:
        for n in ref:
            assert torch.equal((~ref[n]).sum(1), (~got[n]).sum(1)), n


# --- (c) and the other errors ---


def test_corpus_without_a_long_document_is_a_clear_error(text_model_dir, tmp_path):
    from stages.common.io import load_tokenizer

    texts = _docs(30, 5, lo=1, hi=8)
    folder = _write_text_dataset(tmp_path / "short", texts)
    tok = load_tokenizer(text_model_dir)
    longest = max(len(tok(t)["input_ids"]) for t in texts)
    assert longest <= SEQLEN
    with pytest.raises(ValueError) as err:
        Calibration(folder, tok, 4, SEQLEN, 0).samples("wanda")
    msg = str(err.value)
    assert str(folder) in msg and f"longest has {longest}" in msg
    assert "lower `seqlen`" in msg and f"seqlen={SEQLEN}" in msg
    with pytest.raises(ValueError, match="longest has"):  # through the stage too
        _stage("wanda", text_model_dir, folder, tmp_path / "w", nsamples=4, seqlen=48)
    assert not (tmp_path / "w" / "masks.safetensors").exists()


def test_text_dataset_errors(text_model_dir, tmp_path):
    from stages.common.io import load_tokenizer

    tok = load_tokenizer(text_model_dir)
    folder = _write_text_dataset(tmp_path / "t", ["a b c", "d e"])
    with pytest.raises(ValueError, match="calib_format: 'records'.*windows"):
        Calibration(folder, tok, 2, 8, 0, "records")
    with open(folder / "data.jsonl", "a") as f:
        f.write(json.dumps({"id": "bad", "body": "x"}) + "\n")
    with pytest.raises(ValueError, match=r"data.jsonl record 3 \(id 'bad'\): field"):
        Calibration(folder, tok, 2, 2, 0).samples("t")
    (folder / "dataset.json").write_text(json.dumps({"shape": "prose"}))
    with pytest.raises(ValueError, match=r"dataset.json field 'shape' is 'prose'"):
        Calibration(folder, tok, 2, 8, 0)
    (folder / "dataset.json").write_text(json.dumps({"source": "no shape"}))
    with pytest.raises(ValueError, match=r'set "shape": "text"'):
        Calibration(folder, tok, 2, 8, 0).samples("t")


def test_default_seqlen_for_text_is_the_window_default(text_model_dir, tmp_path):
    """calib_format unset on a text corpus: windows of min(2048, context)."""
    texts = _docs(40, 6, lo=40, hi=80)  # words of ~3 chars: > 128 tokens
    folder = _write_text_dataset(tmp_path / "long", texts)
    res = _stage("wanda", text_model_dir, folder, tmp_path / "w", nsamples=2)
    cal = res.extra_manifest["calibration"]
    assert (cal["format"], cal["seqlen"], cal["samples"]) == ("windows", 128, 2)


# --- instruction datasets: the template hook, today's tokens unchanged ---


def test_instruction_records_template_hook(tiny_model_dir, calib_dir):
    from stages.common.io import load_tokenizer, read_dataset
    from stages.common.text import encode_example

    tok = load_tokenizer(tiny_model_dir)
    for fmt, seqlen in [(None, 100), ("windows", 32)]:
        base = Calibration(calib_dir, tok, 6, seqlen, 0, fmt)
        carp = Calibration(calib_dir, tok, 6, seqlen, 0, fmt, "carp")
        alpaca = Calibration(calib_dir, tok, 6, seqlen, 0, fmt, "alpaca")
        ids = base.samples("t")[0]
        assert torch.equal(ids, carp.samples("t")[0])  # carp = today's rendering
        assert not torch.equal(ids, alpaca.samples("t")[0])
        assert (base.fingerprint["template"], alpaca.fingerprint["template"]) == (
            "carp",
            "alpaca",
        )
    # records: the seeded shuffle's first records, rendered by encode_example
    recs = read_dataset(calib_dir)
    random.Random(0).shuffle(recs)
    first = encode_example(tok, recs[0], 100)[0]
    cal = Calibration(calib_dir, tok, 6, 100, 0)
    got = cal.samples("t")[0]
    assert got[0, : len(first)].tolist() == first
    assert cal.fingerprint["shape"] == "instruction"


def test_template_is_validated():
    from pydantic import ValidationError

    from stages.prune.wanda import Params

    assert Params(model="m", calib="w").template is None
    assert Params(model="m", calib="w", template="alpaca").template == "alpaca"
    with pytest.raises(ValidationError, match="unknown template 'alpacca'"):
        Params(model="m", calib="w", template="alpacca")


def test_chat_records_are_rendered_with_the_template(tiny_model_dir, tmp_path):
    from stages.common.io import load_tokenizer, write_dataset
    from stages.common.text import encode_example

    tok = load_tokenizer(tiny_model_dir)
    recs = [
        {
            "id": f"c{i}",
            "messages": [
                {"role": "user", "content": f"say {i}"},
                {"role": "assistant", "content": str(i) * 3},
            ],
        }
        for i in range(5)
    ]
    folder = tmp_path / "chat"
    write_dataset(recs, folder, source="t", shape="chat")
    cal = Calibration(folder, tok, 5, 64, 0, template="alpaca")
    ids, valid = cal.samples("t")
    assert cal.fingerprint["shape"] == "chat" and cal.fingerprint["format"] == "records"
    order = list(recs)
    random.Random(0).shuffle(order)
    for row, rec in enumerate(order):
        want = encode_example(tok, rec, 64, template="alpaca")[0]
        assert ids[row, : int(valid[row].sum())].tolist() == want
