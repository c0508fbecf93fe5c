"""Layer-wise sparsity profiles for the mask methods: ``uniform`` (every block
at the target) or ``owl``, Outlier Weighed Layerwise sparsity (Yin et al. 2024,
"Outlier Weighed Layerwise Sparsity (OWL): A Missing Secret Sauce for Pruning
LLMs to High Sparsity"; reference code github.com/luuyin/OWL, and
llm-compressor's ``sparsity_profile: owl``).

OWL scores every weight of a decoder block as Wanda does, A_ij = |W_ij| *
||X_j||_2, on the dense model's calibration activations; a block's layerwise
outlier distribution (LOD) is the percentage of its scores above ``M`` times
their mean. LODs are rescaled to [0, 2 lambda] and centred, and block i gets
sparsity ``target - (D_i - mean D)``: more outliers, lower sparsity, within
target +- lambda. The mean is weighted by each block's pruned weights, so the
global sparsity equals the target (the reference's plain mean, for blocks of
one size).
"""

from __future__ import annotations

from typing import Any


def outlier_ratio(scores: list[Any], m: float) -> float:
    """Percentage of all entries of ``scores`` (tensors of one block) above
    ``m`` times their common mean (the LOD of one block)."""
    import torch

    total = sum(s.numel() for s in scores)
    mean = sum(float(s.double().sum()) for s in scores) / total
    above = sum(int(torch.count_nonzero(s > m * mean)) for s in scores)
    return 100.0 * above / total


def owl_sparsities(
    ratios: list[float], sizes: list[int], sparsity: float, lam: float
) -> list[float]:
    """Per-block sparsity from outlier ratios (pure): ratios min-max scaled to
    [0, 2 lam], then ``sparsity - (r_i - mean r)`` with the mean weighted by
    ``sizes``, so that sum(s_i * n_i) = sparsity * sum(n_i)."""
    lo, hi = min(ratios), max(ratios)
    if hi == lo:  # no block stands out: OWL is uniform
        return [sparsity] * len(ratios)
    scaled = [(r - lo) / (hi - lo) * 2 * lam for r in ratios]
    mean = sum(r * n for r, n in zip(scaled, sizes, strict=True)) / sum(sizes)
    return [sparsity - (r - mean) for r in scaled]


def layer_outlier_ratios(
    model: Any, groups: list[dict[str, Any]], samples: tuple[Any, Any], params: Any
) -> list[float | None]:
    """LOD of each decoder block's selected linears on the dense model (None
    for blocks with nothing selected), one block in memory at a time."""
    import torch

    from stages.prune.layerwise import BlockRunner, release_memory, resolve_device
    from stages.prune.wanda import InputNorms, wanda_scores

    ids, valid = samples
    dev = resolve_device(params.device)
    runner = BlockRunner(model, ids, dev, params.batch_size, valid)
    ratios: list[float | None] = []
    for i in range(len(runner.layers)):
        block = runner.load(i)
        if groups[i]:
            accs = runner.collect(block, groups[i], InputNorms)
            with torch.no_grad():
                scores = [
                    wanda_scores(lin.weight.data, accs[n].sq)
                    for n, lin in groups[i].items()
                ]
            ratios.append(outlier_ratio(scores, params.owl_m))
            del scores, accs
        else:
            ratios.append(None)
        runner.advance(i, runner.forward(block))
        release_memory()
    return ratios


def block_sparsities(
    model: Any, groups: list[dict[str, Any]], calib: Any, params: Any, method: str
) -> tuple[list[float], dict[str, Any]]:
    """Sparsity of each decoder block for ``params.profile``, and manifest
    entries (OWL: the ratios and sparsities)."""
    target = params.target_sparsity
    if params.profile == "uniform":
        return [target] * len(groups), {"profile": "uniform"}
    ratios = layer_outlier_ratios(
        model, groups, calib.samples(f"{method} (profile owl)"), params
    )
    used = [i for i, r in enumerate(ratios) if r is not None]
    sizes = [sum(m.weight.numel() for m in groups[i].values()) for i in used]
    owl = owl_sparsities([ratios[i] for i in used], sizes, target, params.owl_lambda)
    out = [target] * len(groups)
    for i, s in zip(used, owl, strict=True):
        out[i] = s
    manifest = {
        "profile": "owl",
        "owl_m": params.owl_m,
        "owl_lambda": params.owl_lambda,
        "owl_outlier_ratio": ratios,
        "owl_sparsity": out,
    }
    return out, manifest
