"""Merge maths on hand-made tensors, results worked by hand."""

import math

import pytest
import torch

from stages.merge import kernels as K


def test_linear_normalised_weighted_mean():
    x = torch.tensor([[1.0, 2.0], [3.0, 6.0]])
    out = K.linear(x, torch.tensor([1.0, 3.0]), normalize=True)
    # (1*[1,2] + 3*[3,6]) / 4 = [10, 20] / 4
    assert torch.allclose(out, torch.tensor([2.5, 5.0]))
    out = K.linear(x, torch.tensor([1.0, 3.0]), normalize=False)
    assert torch.allclose(out, torch.tensor([10.0, 20.0]))


def test_linear_result_within_inputs_range():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 50, generator=g)
    out = K.linear(x, torch.tensor([0.2, 0.5, 0.3]), normalize=True)
    assert bool((out <= x.max(0).values + 1e-6).all())
    assert bool((out >= x.min(0).values - 1e-6).all())


def test_slerp_endpoints():
    a, b = torch.tensor([1.0, 2.0, -1.0]), torch.tensor([0.5, -3.0, 2.0])
    assert torch.allclose(K.slerp(0.0, a, b), a, atol=1e-6)
    assert torch.allclose(K.slerp(1.0, a, b), b, atol=1e-6)


def test_slerp_parallel_vectors_fall_back_to_lerp():
    a = torch.tensor([1.0, 2.0, 3.0])
    out = K.slerp(0.25, a, 2 * a)  # same direction: 0.75 a + 0.25 * 2a = 1.25 a
    assert torch.allclose(out, 1.25 * a)


def test_slerp_orthogonal_unit_vectors_stay_on_the_circle():
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    h = math.sqrt(0.5)
    assert torch.allclose(K.slerp(0.5, a, b), torch.tensor([h, h]), atol=1e-6)
    # t = 1/3 of a right angle: 30 degrees
    out = K.slerp(1 / 3, a, b)
    assert torch.allclose(out, torch.tensor([math.sqrt(3) / 2, 0.5]), atol=1e-6)


# TIES on three task vectors of five parameters, density 0.6 -> keep 3 each
T1 = [1.0, -2.0, 0.5, 3.0, -0.1]
T2 = [-3.0, 1.0, 0.4, 2.0, 0.2]
T3 = [0.5, -1.5, -0.6, -4.0, 0.3]


def test_ties_trim():
    assert K.magnitude_trim(torch.tensor(T1), 0.6).tolist() == [1, -2, 0, 3, 0]
    assert K.magnitude_trim(torch.tensor(T2), 0.6).tolist() == [-3, 1, 0, 2, 0]
    out = K.magnitude_trim(torch.tensor(T3), 0.6)
    assert torch.allclose(out, torch.tensor([0, -1.5, -0.6, -4, 0]))


def test_ties_elect_and_disjoint_mean():
    trimmed = torch.stack(
        [K.magnitude_trim(torch.tensor(t), 0.6) for t in (T1, T2, T3)]
    )
    # summed mass per parameter: -2, -2.5, -0.6, +1, 0 -> signs -, -, -, +, +
    agree = K.elect_sign(trimmed)
    assert agree.tolist() == [
        [False, True, False, True, False],
        [True, False, False, True, False],
        [False, True, True, False, False],
    ]
    merged = K.combine_deltas(trimmed, torch.ones(3), True, True, 1.0)
    # -3 alone; mean(-2, -1.5); -0.6 alone; mean(3, 2); nobody -> 0
    assert torch.allclose(merged, torch.tensor([-3.0, -1.75, -0.6, 2.5, 0.0]))
    # lambda scales the merged vector; unnormalised TIES sums the agreeing values
    lam = K.combine_deltas(trimmed, torch.ones(3), True, True, 0.5)
    assert torch.allclose(lam, 0.5 * merged)
    summed = K.combine_deltas(trimmed, torch.ones(3), True, False, 1.0)
    assert torch.allclose(summed, torch.tensor([-3.0, -3.5, -0.6, 5.0, 0.0]))


def test_ties_weights_enter_the_election():
    d = torch.tensor([[1.0], [-1.0]])
    # weight 3 on the negative model: its mass wins the election
    out = K.combine_deltas(d, torch.tensor([1.0, 3.0]), True, True, 1.0)
    assert torch.allclose(out, torch.tensor([-1.0]))


def test_magnitude_trim_keeps_at_least_one():
    out = K.magnitude_trim(torch.tensor([0.1, -5.0, 0.2]), 0.1)
    assert out.tolist() == [0.0, -5.0, 0.0]


def test_dare_fixed_seed_reproducible_and_rescaled():
    delta = torch.ones(20_000)
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    a = K.bernoulli_drop(delta, 0.3, True, g1)
    b = K.bernoulli_drop(delta, 0.3, True, g2)
    assert torch.equal(a, b)
    kept = int(torch.count_nonzero(a))
    # a Bernoulli(0.3) count of 20000: mean 6000, sd ~65
    assert abs(kept - 6000) < 5 * math.sqrt(20_000 * 0.3 * 0.7)
    # L1 rescale: every survivor is n/kept (1/density in expectation) and the
    # sum of the task vector is preserved exactly
    assert torch.allclose(a[a != 0], torch.full((kept,), 20_000 / kept))
    assert math.isclose(float(a.sum()), 20_000.0, rel_tol=1e-5)


def test_dare_expectation_over_seeds_is_the_task_vector():
    g = torch.Generator().manual_seed(0)
    delta = torch.randn(64, generator=g)
    runs = [
        K.bernoulli_drop(delta, 0.5, True, torch.Generator().manual_seed(s))
        for s in range(400)
    ]
    mean = torch.stack(runs).mean(0)
    assert float((mean - delta).abs().mean()) < 0.1 * float(delta.abs().mean())
    no_rescale = K.bernoulli_drop(delta, 0.5, False, torch.Generator().manual_seed(1))
    assert set(no_rescale[no_rescale != 0].tolist()) <= set(delta.tolist())


def test_pcb_worked_case():
    # two tasks, four parameters, no outlier clamp
    d = torch.tensor([[1.0, -2.0, 0.5, 0.0], [1.0, 1.0, -1.0, 2.0]])
    clamped, scale = K.pcb_balance(d, [0.5, 0.5], 0.0)
    assert torch.equal(clamped, d)
    # intra: exp(2 * minmax(|tau_i|)^2); minmax rows: [.5, 1, .25, 0], [0,0,0,1]
    intra = torch.tensor(
        [
            [math.exp(0.5), math.exp(2.0), math.exp(0.125), 1.0],
            [1.0, 1.0, 1.0, math.exp(2.0)],
        ]
    )
    # inter: tanh(tau_i * sum_j tau_j), sums per parameter [2, -1, -0.5, 2]
    inter = torch.tanh(torch.tensor([[2.0, 2.0, -0.25, 0.0], [2.0, -1.0, 0.5, 4.0]]))
    score = intra * inter
    # density 0.5: clamp each row below at its sorted[2] value, then min-max
    expect = torch.zeros(2, 4)
    for i in range(2):
        floor = score[i].sort().values[2]
        c = score[i].clamp(min=floor)
        expect[i] = (c - c.min()) / (c.max() - c.min())
    assert torch.allclose(scale, expect)
    # row 0 keeps params 0 and 1 (its two largest scores): [s, 1, 0, 0]
    assert scale[0, 2] == 0 and scale[0, 3] == 0 and scale[0, 1] == 1
    merged = K.pcb_merge(d, torch.ones(2), [0.5, 0.5], 0.0, 1.0)
    num = (d * expect).sum(0)
    den = expect.sum(0).clamp(min=1e-12)
    assert torch.allclose(merged, num / den)
    # param 1: only task 0 keeps it -> its value -2; param 3: only task 1 -> 2
    assert math.isclose(float(merged[1]), -2.0, rel_tol=1e-6)
    assert math.isclose(float(merged[3]), 2.0, rel_tol=1e-6)


def test_pcb_outlier_clamp_as_the_reference_code():
    # the reference clamps |tau| to [sorted[int(d r)], sorted[int(d (1 - r)) - 1]]:
    # with d r < 1 that is [min, second largest]
    d = torch.tensor([[1.0, -8.0, 0.5, 2.0]])
    clamped, _ = K.pcb_balance(d, [1.0], 0.0001)
    assert clamped.tolist() == [[1.0, -2.0, 0.5, 2.0]]
    # a ratio of 0.25 of 8 entries clamps two at each end
    d = torch.arange(1.0, 9.0).unsqueeze(0)
    clamped, _ = K.pcb_balance(d, [1.0], 0.25)
    assert clamped.tolist() == [[3.0, 3.0, 3.0, 4.0, 5.0, 6.0, 6.0, 6.0]]


def test_pcb_full_density_and_zero_task_vector():
    d = torch.tensor([[0.0, 0.0, 0.0], [1.0, 2.0, 3.0]])
    merged = K.pcb_merge(d, torch.ones(2), [1.0, 1.0], 0.0, 1.0)
    # the zero task scores 0 everywhere (constant row) and takes no part
    _, scale = K.pcb_balance(d, [1.0, 1.0], 0.0)
    assert torch.equal(scale[0], torch.zeros(3))
    assert torch.allclose(merged[1:], torch.tensor([2.0, 3.0]))


@pytest.mark.parametrize("lam", [0.5, 2.0])
def test_pcb_lambda_scales(lam):
    d = torch.tensor([[1.0, -2.0, 0.5, 0.3], [1.0, 1.0, -1.0, 2.0]])
    one = K.pcb_merge(d, torch.ones(2), [0.5, 0.5], 0.0, 1.0)
    assert torch.allclose(
        K.pcb_merge(d, torch.ones(2), [0.5, 0.5], 0.0, lam), lam * one
    )


@pytest.mark.parametrize("chunk", [1 << 20, 50])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_pcb_merge_task_by_task_equals_the_whole_stack_formula(
    dtype, chunk, monkeypatch
):
    """pcb_merge streams task by task and chunk by chunk; it must equal
    sum_i w_i s_i tau_i / sum_i s_i over the whole (K, d) stack from
    pcb_balance, bit for bit."""
    monkeypatch.setattr(K, "PCB_CHUNK", chunk)
    g = torch.Generator().manual_seed(3)
    d = torch.randn(4, 777, generator=g).to(dtype)
    d[:, :100] = 0
    w = torch.tensor([0.5, 1.0, 1.5, 0.25])
    dens = [0.2, 0.5, 0.9, 1.0]
    clamped, scale = K.pcb_balance(d.clone(), dens, 0.01)
    ref = (clamped * w.to(dtype).unsqueeze(1) * scale).sum(dim=0)
    ref = ref / scale.sum(dim=0).clamp(min=1e-12)
    assert torch.equal(K.pcb_merge(d.clone(), w, dens, 0.01, 0.8), 0.8 * ref)
