"""recover/distill: KL maths, the TAID interpolation, and a stage run that
moves the pruned student toward its dense teacher with the mask kept."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.contract import RunContext


def test_kd_kl_is_zero_on_self_and_scales_with_t_squared():
    import torch

    from stages.recover.losses import kd_kl

    torch.manual_seed(0)
    s, t = torch.randn(5, 11), torch.randn(5, 11)
    assert kd_kl(s, s, 2.0).abs() < 1e-6
    assert kd_kl(s, t, 1.0) > 0
    # T² scaling: KL at T=2 equals 4 x the KL of the halved logits at T=1
    torch.testing.assert_close(kd_kl(s, t, 2.0), 4 * kd_kl(s / 2, t / 2, 1.0))


def test_taid_target_interpolates_from_student_to_teacher():
    import torch

    from stages.recover.losses import kd_kl, taid_t, taid_target

    s = torch.randn(4, 7, requires_grad=True)
    t = torch.randn(4, 7)
    torch.testing.assert_close(taid_target(s, t, 0.0), s.detach())
    torch.testing.assert_close(taid_target(s, t, 1.0), t)
    assert not taid_target(s, t, 0.5).requires_grad  # the student side is detached
    assert taid_t(0.0, 0.4, 1.0) == 0.4 and taid_t(1.0, 0.4, 1.0) == 1.0
    assert taid_t(0.5, 0.4, 1.0) == pytest.approx(0.7)
    # the target moves monotonically toward the teacher
    kls = [float(kd_kl(taid_target(s, t, x), t, 1.0)) for x in (0.0, 0.5, 0.9)]
    assert kls[0] > kls[1] > kls[2]


def test_response_nll_ignores_prompt_tokens():
    import torch

    from stages.recover.losses import response_nll

    logits = torch.randn(1, 6, 9)
    labels = torch.tensor([[-100, -100, -100, 3, 4, 5]])
    other = logits.clone()
    other[0, :2] = torch.randn(2, 9)  # positions 0-1 predict prompt tokens only
    torch.testing.assert_close(
        response_nll(logits, labels), response_nll(other, labels)
    )


def _kl_to_teacher(student_dir: Path, teacher_dir: Path, data: Path) -> float:
    import torch

    from stages.common.io import load_model, load_tokenizer, read_dataset
    from stages.common.text import collate, encode_example
    from stages.recover.losses import kd_kl, response_logits

    tok = load_tokenizer(student_dir)
    batch = collate(
        [encode_example(tok, r) for r in read_dataset(data)[:32]], tok.pad_token_id
    )
    s, t = load_model(student_dir).eval(), load_model(teacher_dir).eval()
    with torch.no_grad():
        sl, _ = response_logits(
            s(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
            ).logits,
            batch["labels"],
        )
        tl, _ = response_logits(
            t(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
            ).logits,
            batch["labels"],
        )
    return float(kd_kl(sl, tl, 1.0))


@pytest.mark.parametrize("taid", [False, True])
def test_distill_moves_student_toward_teacher_keeping_mask(tiny, tmp_path, taid):
    from stages.common.io import load_masks
    from stages.recover import run
    from stages.recover.distill import Params

    params = Params(
        model="sparse",
        data="data",
        teacher="dense",
        steps=12,
        lr=3e-4,
        kd_weight=1.0,
        temperature=1.0,
        taid=taid,
    )
    out = tmp_path / "out"
    out.mkdir()
    logged = []
    res = run(
        params,
        {"model": tiny["sparse"], "data": tiny["data"], "teacher": tiny["dense"]},
        out,
        RunContext(log_fn=lambda m, s: logged.append(m)),
    )
    before = _kl_to_teacher(tiny["sparse"], tiny["dense"], tiny["data"])
    after = _kl_to_teacher(out, tiny["dense"], tiny["data"])
    assert after < 0.6 * before
    from safetensors.torch import load_file

    w = load_file(str(out / "model.safetensors"))
    for name, keep in load_masks(tiny["sparse"]).items():
        assert ((w[name] == 0) == ~keep).all(), name
    assert {"kd_loss", "lm_loss"} <= set(logged[0])
    if taid:
        ts = [m["taid_t"] for m in logged]
        assert ts[0] == pytest.approx(0.4) and ts[-1] == pytest.approx(1.0)
        assert ts == sorted(ts)
    assert res.metrics["steps"] == 12


def test_kd_weight_zero_is_full_finetuning(tiny, tmp_path):
    import torch
    from safetensors.torch import load_file

    from stages.recover import run
    from stages.recover.distill import Params as DistillParams
    from stages.recover.full import Params as FullParams

    common = dict(model="sparse", data="data", steps=3, lr=1e-3)
    for name, params, extra in (
        ("full", FullParams(**common), {}),
        (
            "kd0",
            DistillParams(**common, teacher="dense", kd_weight=0.0),
            {"teacher": tiny["dense"]},
        ),
    ):
        (tmp_path / name).mkdir()
        run(
            params,
            {"model": tiny["sparse"], "data": tiny["data"], **extra},
            tmp_path / name,
            RunContext(),
        )
    a = load_file(str(tmp_path / "full" / "model.safetensors"))
    b = load_file(str(tmp_path / "kd0" / "model.safetensors"))
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_distill_without_teacher_is_refused():
    from pydantic import ValidationError

    from stages.recover.distill import Params

    with pytest.raises(ValidationError, match="teacher\n  Field required"):
        Params(model="sparse", data="data")
