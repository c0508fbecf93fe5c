"""The streamed checkpoint writer: byte-for-byte the tensors ``save_pretrained``
writes, readable by ``safetensors.safe_open`` and ``from_pretrained``."""

from __future__ import annotations

import json

import pytest
import torch

from stages.prune.checkpoint import save_checkpoint, write_safetensors

torch.set_num_threads(1)


@pytest.mark.parametrize(
    ("tied", "dtype"), [(False, torch.float32), (True, torch.bfloat16)]
)
def test_streamed_checkpoint_round_trips(tmp_path, tied, dtype):
    from safetensors import safe_open

    from stages.common.io import load_model
    from tests.tiny import WIDE_INIT_STD, char_tokenizer, tiny_llama

    model = tiny_llama(init_std=WIDE_INIT_STD)
    if tied:
        model.config.tie_word_embeddings = True
        model.tie_weights()
    model = model.to(dtype)
    ours, ref = tmp_path / "ours", tmp_path / "ref"
    save_checkpoint(model, char_tokenizer(), ours)
    model.save_pretrained(str(ref))

    cfg = json.loads((ours / "config.json").read_text())
    assert cfg == json.loads((ref / "config.json").read_text())
    assert (ours / "generation_config.json").exists()
    assert (ours / "tokenizer.json").exists()
    with (
        safe_open(str(ours / "model.safetensors"), "pt") as a,
        safe_open(str(ref / "model.safetensors"), "pt") as b,
    ):
        names = list(a.keys())
        assert set(names) == set(b.keys())
        assert ("lm_head.weight" in names) is not tied
        assert a.metadata() == b.metadata() == {"format": "pt"}
        for k in names:
            x, y = a.get_tensor(k), b.get_tensor(k)
            assert x.dtype == y.dtype == dtype and torch.equal(x, y), k

    back, want = load_model(ours, dtype=dtype), load_model(ref, dtype=dtype)
    ids = torch.tensor([[1, 5, 9, 33, 60, 7]])
    with torch.no_grad():
        assert torch.equal(back.eval()(ids).logits, want.eval()(ids).logits)
    if tied:
        assert (
            back.lm_head.weight.data_ptr() == back.model.embed_tokens.weight.data_ptr()
        )


def test_write_safetensors_checks_byte_count(tmp_path):
    specs = {"x": ("F32", (2, 2), 16)}
    with pytest.raises(ValueError, match="x: produced 8 bytes"):
        write_safetensors(tmp_path / "bad.safetensors", specs, lambda _k: b"\0" * 8)


def test_stage_process_never_imports_deepspeed(tiny_model_dir, tmp_path):
    """The writer exists to skip ``save_pretrained``'s DeepSpeed import (~130 MiB
    resident); a whole magnitude run in a fresh process must not import it."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[3]
    code = (
        "import sys; from pathlib import Path\n"
        "from pipelines.contract import RunContext\n"
        "from stages.prune import run\n"
        "from stages.prune.magnitude import Params\n"
        f"run(Params(model='m'), {{'model': Path({str(tiny_model_dir)!r})}}, "
        f"Path({str(tmp_path)!r}), RunContext())\n"
        "print('deepspeed' in sys.modules)\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip().splitlines()[-1] == "False"
    assert (tmp_path / "model.safetensors").exists()


def test_released_pages_keep_every_value(tiny_model_dir):
    """release_pages drops clean pages of the mapped checkpoint (re-read from
    the file when touched) and never a changed one."""
    from stages.common.io import load_model
    from stages.common.memory import release_pages

    model = load_model(tiny_model_dir)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    q = dict(model.named_parameters())["model.layers.0.self_attn.q_proj.weight"]
    with torch.no_grad():
        q.mul_(2)  # a changed tensor: its pages are the process's own now
    for p in model.parameters():
        release_pages(p.data)
    for n, p in model.named_parameters():
        want = before[n] * 2 if p is q else before[n]
        assert torch.equal(p.data, want), n


def test_chunked_write_and_count(tmp_path, monkeypatch):
    """Tensors written (and counted) in chunks smaller than a tensor: the same
    bytes as safetensors' own writer, each byte range reported once, in order."""
    from safetensors.torch import save_file

    from stages.common import stream
    from stages.prune.stage import nonzero_count

    monkeypatch.setattr(stream, "CHUNK_BYTES", 24)
    g = torch.Generator().manual_seed(0)
    state = {
        "a": torch.randn(7, 5, generator=g),
        "b": torch.randn(3, generator=g).to(torch.bfloat16),
    }
    state["a"][state["a"] < 0] = 0
    specs = {k: stream.tensor_spec(v) for k, v in state.items()}
    seen: list[tuple[str, int, int]] = []
    path = tmp_path / "ours.safetensors"
    stream.write_safetensors(
        path,
        specs,
        lambda k: stream.tensor_bytes(state[k]),
        metadata={"format": "pt"},
        written=lambda *r: seen.append(r),
    )
    save_file(state, str(tmp_path / "ref.safetensors"), metadata={"format": "pt"})
    assert path.read_bytes() == (tmp_path / "ref.safetensors").read_bytes()
    assert seen == [("a", s, min(s + 24, 140)) for s in range(0, 140, 24)] + [
        ("b", 0, 6)
    ]
    assert nonzero_count(state["a"]) == int((state["a"] != 0).sum())
