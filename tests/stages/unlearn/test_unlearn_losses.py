"""The unlearning losses against their closed forms (pure functions)."""

import math

import pytest
import torch

from stages.unlearn.losses import (
    activation_mse,
    ga_loss,
    npo_loss,
    sequence_logprob,
    simnpo_loss,
)


def _batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(3, 6, 11, generator=g, requires_grad=True)
    labels = torch.randint(0, 11, (3, 6), generator=g)
    labels[:, :2] = -100  # prompt tokens
    labels[2, 5] = -100  # padding
    return logits, labels


def test_sequence_logprob_matches_a_loop():
    logits, labels = _batch()
    logp, n = sequence_logprob(logits, labels)
    lsm = torch.log_softmax(logits.detach(), -1)
    for b in range(3):
        want = sum(
            float(lsm[b, t - 1, labels[b, t]]) for t in range(1, 6) if labels[b, t] >= 0
        )
        assert float(logp[b]) == pytest.approx(want, abs=1e-5)
        assert int(n[b]) == int((labels[b, 1:] >= 0).sum())


def test_npo_closed_form():
    logp = torch.tensor([-3.0, -7.5, -1.2])
    ref = torch.tensor([-2.5, -8.0, -4.0])
    beta = 0.7
    want = (
        sum(
            (2 / beta) * math.log1p(math.exp(beta * (a - b)))
            for a, b in zip(logp.tolist(), ref.tolist(), strict=True)
        )
        / 3
    )
    assert float(npo_loss(logp, ref, beta)) == pytest.approx(want, rel=1e-6)
    # at π_θ = π_ref the loss is (2/β)·log 2 whatever the likelihoods
    assert float(npo_loss(ref, ref, beta)) == pytest.approx(2 / beta * math.log(2))


def test_npo_tends_to_ga_as_beta_goes_to_zero():
    """d/dθ NPO → d/dθ mean_b log π_θ(y_b|x_b): gradient ascent on the
    sequence likelihood (NPO paper, Sec. 4)."""
    logits, labels = _batch(1)
    ref = torch.tensor([-20.0, -25.0, -18.0])

    def grad(fn):
        logits.grad = None
        logp, _ = sequence_logprob(logits, labels)
        fn(logp).backward()
        return logits.grad.clone()

    ga = grad(lambda lp: lp.mean())
    errs = [
        float((grad(lambda lp, b=b: npo_loss(lp, ref, b)) - ga).norm() / ga.norm())
        for b in (1.0, 0.1, 1e-3)
    ]
    assert errs[0] > errs[1] > errs[2]
    assert errs[2] < 1e-2
    # and NPO's weights σ(β·log-ratio) shrink the gradient of unlikely sequences
    assert errs[0] > 0.1


def test_ga_is_minus_mean_token_nll():
    logits, labels = _batch(2)
    logp, n = sequence_logprob(logits, labels)
    ce = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, 11), labels[:, 1:].reshape(-1), ignore_index=-100
    )
    assert float(ga_loss(logp, n)) == pytest.approx(-float(ce), rel=1e-5)


def test_simnpo_formula():
    logp = torch.tensor([-6.0, -2.0])
    n = torch.tensor([3, 4])
    beta, gamma = 2.5, 0.3
    want = 0.0
    for lp, k in zip(logp.tolist(), n.tolist(), strict=True):
        x = beta * (-lp / k - gamma)
        want += -(2 / beta) * math.log(1 / (1 + math.exp(-x)))
    assert float(simnpo_loss(logp, n, beta, gamma)) == pytest.approx(want / 2)
    # length-normalised: doubling a sequence and its log-likelihood changes nothing
    assert float(simnpo_loss(logp * 2, n * 2, beta, gamma)) == pytest.approx(want / 2)


def test_activation_mse_masks_positions():
    acts = torch.zeros(2, 3, 4)
    acts[1, 2] = 10.0  # a masked-out (padding) position must not count
    target = torch.ones(1, 1, 4)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    assert float(activation_mse(acts, target, mask)) == pytest.approx(1.0)
