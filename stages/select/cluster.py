"""PASER's semantic-structural clustering (S2RIC, He et al., arXiv 2502.12594):
sparse kNN Gaussian affinity -> diffusion-map coordinates -> NMF spectral
clustering (NMF of the diffusion similarity, cluster = argmax of W), with K
chosen by the elbow of the NMF approximation error.

Pure functions over arrays; memory grows with N·k (never an N×N matrix).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

ZERO_EIGENVALUE = 1e-10  # λ this small: a disconnected component (μ = 1 exactly)


def reduce_dim(x: np.ndarray, dim: int, seed: int) -> np.ndarray:
    """Project rows to ``dim`` principal components (then unit length) for the kNN
    search; ``dim`` 0 or >= width keeps the input."""
    if dim <= 0 or dim >= x.shape[1]:
        return x
    x = np.asarray(x, dtype=np.float64)
    mean = x.mean(0)
    cov = (x.T @ x) / len(x) - np.outer(mean, mean)  # (D, D): one pass over X
    _, vec = np.linalg.eigh(cov)
    basis = vec[:, ::-1][:, :dim]
    basis *= np.sign(basis[np.abs(basis).argmax(0), np.arange(dim)])  # fixed signs
    z = (x - mean) @ basis
    return (z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)).astype(
        np.float32
    )


def knn(x: np.ndarray, k: int, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest neighbours (Euclidean, self excluded) by chunked matmul.

    Returns ``idx`` (N, k) int64 and ``dist`` (N, k) float32, nearest first.
    Time grows as N²: above ~10⁵ records use :func:`knn_nndescent`.
    """
    import torch

    n = x.shape[0]
    k = min(k, n - 1)
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    sq = (xt * xt).sum(1)  # (N,)
    idx = np.empty((n, k), dtype=np.int64)
    dist = np.empty((n, k), dtype=np.float32)
    # a (chunk, N) float32 block at a time: ~256 MB whatever N
    chunk = max(1, min(chunk, (1 << 26) // max(n, 1)))
    for s in range(0, n, chunk):
        e = min(s + chunk, n)
        # |xj|² - 2 xi·xj ranks like the squared distance (|xi|² is constant)
        d2 = torch.addmm(sq[None, :], xt[s:e], xt.T, alpha=-2.0)  # (C, N)
        d2[torch.arange(e - s), torch.arange(s, e)] = float("inf")  # no self-loops
        val, ind = torch.topk(d2, k, dim=1, largest=False)
        idx[s:e] = ind.numpy()
        dist[s:e] = (val + sq[s:e, None]).clamp_min(0).sqrt().numpy()
    return idx, dist


def knn_nndescent(
    x: np.ndarray, k: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Approximate k nearest neighbours by nearest-neighbour descent
    (Dong et al. 2011, the ``pynndescent`` library UMAP uses), self excluded.

    One thread and a fixed ``random_state``: the same graph on every run.
    Same output as :func:`knn`; time grows about as N^1.14 instead of N².
    """
    from pynndescent import NNDescent

    n = x.shape[0]
    k = min(k, n - 1)
    index = NNDescent(
        np.ascontiguousarray(x, dtype=np.float32),
        n_neighbors=k + 1,  # the point itself comes back as a neighbour
        random_state=seed,
        n_jobs=1,
        low_memory=True,
        compressed=True,
        verbose=False,
    )
    ind, dist = index.neighbor_graph
    return _drop_self(ind.astype(np.int64), dist.astype(np.float32), k)


def _drop_self(
    ind: np.ndarray, dist: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Remove each row's own index from a (N, k+1) neighbour list (the last
    column where the row does not list itself, e.g. among exact duplicates)."""
    n = ind.shape[0]
    own = ind == np.arange(n)[:, None]
    own[~own.any(1), -1] = True  # rows without themselves: drop the farthest
    own[np.cumsum(own, 1) > 1] = False  # exactly one column per row
    keep = ~own
    return ind[keep].reshape(n, k), dist[keep].reshape(n, k)


def knn_recall(
    x: np.ndarray, idx: np.ndarray, sample: int = 500, seed: int = 0
) -> float:
    """Share of the true k nearest neighbours an approximate graph found, on a
    seeded sample of rows (exact search for those rows only: sample × N)."""
    import torch

    n, k = idx.shape
    rows = np.random.default_rng(seed).choice(n, min(sample, n), replace=False)
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    d2 = torch.cdist(xt[rows], xt)
    d2[torch.arange(len(rows)), torch.from_numpy(rows)] = float("inf")
    true = torch.topk(d2, k, dim=1, largest=False).indices.numpy()
    hits = [len(np.intersect1d(true[i], idx[r])) for i, r in enumerate(rows)]
    return float(np.sum(hits) / (len(rows) * k))


# kNN search backends: name -> (x, k, seed) -> (idx, dist)
KNN = {
    "exact": lambda x, k, seed: knn(x, k),
    "nndescent": knn_nndescent,
}
KNN_AUTO_EXACT_MAX = 100_000  # `auto`: exact search up to this many records


def knn_backend(name: str, n: int) -> str:
    """The backend ``name`` resolves to for ``n`` records (``auto``: exact up
    to :data:`KNN_AUTO_EXACT_MAX`, nearest-neighbour descent above)."""
    if name == "auto":
        return "exact" if n <= KNN_AUTO_EXACT_MAX else "nndescent"
    if name not in KNN:
        raise ValueError(f"knn: unknown backend {name!r}; choose from {sorted(KNN)}")
    return name


def affinity(idx: np.ndarray, dist: np.ndarray) -> tuple[Any, float]:
    """Symmetric sparse Gaussian affinity exp(-d²/2σ²) on the kNN graph,
    σ = median kNN distance (the paper's median rule restricted to the graph)."""
    from scipy import sparse

    n, k = idx.shape
    pos = dist[dist > 0]
    sigma = float(np.median(pos)) if pos.size else 1.0
    w = np.exp(-(dist.astype(np.float64) ** 2) / (2 * sigma**2)).ravel()
    a = sparse.csr_matrix((w, (np.repeat(np.arange(n), k), idx.ravel())), (n, n))
    return a.maximum(a.T).tocsr(), sigma


def diffusion_map(
    a: Any, n_components: int, t: float = 1.0, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Diffusion-map coordinates ψ_j·exp(-t·λ_j), j = 1..n_components.

    λ_j are the smallest non-trivial eigenvalues of the random-walk Laplacian
    I - D⁻¹A, obtained as 1 - μ_j from the largest eigenpairs of the symmetric
    S = D^-½ A D^-½ by Lanczos (scipy ``eigsh``); ψ = D^-½ v. A graph with c
    connected components has μ = 1 c times, which Lanczos cannot resolve: those
    eigenvectors are known exactly (D^½ times each component's indicator), so
    they are set directly and Lanczos runs on S restricted to their orthogonal
    complement. Returns the coordinates (N, n_components) and λ (n_components,).
    """
    from scipy import sparse
    from scipy.sparse.csgraph import connected_components
    from scipy.sparse.linalg import LinearOperator, eigsh

    n = a.shape[0]
    deg = np.asarray(a.sum(axis=1)).ravel()
    dinv = 1.0 / np.sqrt(np.maximum(deg, 1e-12))
    s = (sparse.diags(dinv) @ a @ sparse.diags(dinv)).tocsr()
    m = min(n_components + 1, n - 1)
    rng = np.random.default_rng(seed)
    c, comp = connected_components(a, directed=False)
    if c == 1:
        mu, vec = eigsh(s, k=m, which="LA", v0=rng.random(n), tol=1e-6)
    else:
        sizes = np.bincount(comp)
        top = np.argsort(-sizes, kind="stable")[:m]  # the largest components
        # μ = 1 basis: the global trivial vector D^½·1 first (dropped below like
        # the constant ψ of a connected graph), then component indicators
        # orthogonalised against it, so every component gets its own coordinates
        basis = np.zeros((n, len(top)))
        basis[:, 0] = np.sqrt(deg)
        for j, cc in enumerate(top[1:], start=1):
            on = comp == cc
            basis[on, j] = np.sqrt(deg[on])
        y, _ = np.linalg.qr(basis)
        mu, vec = np.ones(len(top)), y
        rest = m - len(top)
        if rest > 0 and n - len(top) > rest + 1:

            def mv(x: np.ndarray) -> np.ndarray:
                x = x - y @ (y.T @ x)  # stay in the complement of the μ=1 space
                x = s @ x
                return x - y @ (y.T @ x)

            op = LinearOperator((n, n), matvec=mv, dtype=np.float64)
            v0 = rng.random(n)
            mu2, vec2 = eigsh(op, k=rest, which="LA", v0=v0 - y @ (y.T @ v0), tol=1e-6)
            mu, vec = np.r_[mu, mu2], np.c_[vec, vec2]
    order = np.argsort(-mu, kind="stable")
    mu, vec = mu[order], vec[:, order]
    lam = np.clip(1.0 - mu, 0.0, 2.0)
    psi = vec * dinv[:, None]
    # a deterministic sign per eigenvector: largest-magnitude entry positive
    flip = np.sign(psi[np.abs(psi).argmax(0), np.arange(psi.shape[1])])
    psi = psi * np.where(flip == 0, 1.0, flip)
    coords = psi[:, 1:] * np.exp(-t * lam[1:])[None, :]
    return coords.astype(np.float32), lam[1:]


def diffusion_similarity(a: Any, coords: np.ndarray) -> Any:
    """Sparse |ŷ_i·ŷ_j| on the kNN graph's edges plus the diagonal (ŷ = unit
    diffusion coordinates): the public code's NMF input |V Vᵀ|, evaluated only
    where the graph has an edge, so it costs N·k instead of N²."""
    from scipy import sparse

    y = coords / np.maximum(np.linalg.norm(coords, axis=1, keepdims=True), 1e-12)
    coo = a.tocoo()
    vals = np.abs(np.einsum("ij,ij->i", y[coo.row], y[coo.col]))
    s = sparse.csr_matrix((vals, (coo.row, coo.col)), a.shape)
    return (s + sparse.eye(a.shape[0], format="csr")).tocsr()


def nmf_fit(x: Any, k: int, seed: int, max_iter: int = 300) -> tuple[np.ndarray, float]:
    """NMF X ≈ W H with k components (X sparse or dense, non-negative);
    returns W (N, k) and the relative Frobenius error ||X - WH|| / ||X||."""
    from scipy import sparse
    from sklearn.decomposition import NMF

    model = NMF(k, init="nndsvda", random_state=seed, max_iter=max_iter, tol=1e-4)
    w = model.fit_transform(x)
    norm = sparse.linalg.norm(x) if sparse.issparse(x) else np.linalg.norm(x)
    return w, float(model.reconstruction_err_ / max(norm, 1e-12))


def elbow(ks: list[int], errors: list[float]) -> int:
    """Kneedle elbow of a decreasing error curve: the K farthest below the
    chord from the first to the last point (both axes scaled to [0, 1])."""
    if len(ks) < 3:
        return ks[int(np.argmin(errors))]
    x = (np.asarray(ks, float) - ks[0]) / (ks[-1] - ks[0])
    e = np.asarray(errors, float)
    span = e.max() - e.min()
    if span <= 1e-12:
        return ks[0]
    y = (e - e.min()) / span
    chord = y[0] + (y[-1] - y[0]) * x
    return ks[int(np.argmax(chord - y))]


def eigengap(lam: np.ndarray, k_range: tuple[int, int]) -> tuple[int, dict[int, float]]:
    """K with the largest spectral gap λ_K - λ_{K-1} of the Laplacian, over
    ``k_range``; ``lam`` are the non-trivial eigenvalues λ_1 <= λ_2 <= ...
    (K well-separated groups give K-1 near-zero non-trivial eigenvalues).
    When every computed λ is zero (more graph components than eigenpairs), the
    spectrum holds no gap: K is the top of the range."""
    lo, hi = max(2, k_range[0]), min(k_range[1], len(lam))
    if hi < lo:
        return lo, {}
    gaps = {kk: float(lam[kk - 1] - lam[kk - 2]) for kk in range(lo, hi + 1)}
    if np.all(np.asarray(lam[:hi]) <= ZERO_EIGENVALUE):
        return hi, gaps
    return max(gaps, key=lambda kk: (gaps[kk], -kk)), gaps


@dataclass
class Clustering:
    """Result of :func:`cluster`: labels, chosen K and what led to it."""

    labels: np.ndarray
    k: int
    k_rule: str
    coords: np.ndarray
    eigenvalues: np.ndarray
    sigma: float
    k_curve: dict[int, float] = field(default_factory=dict)
    knn: dict[str, Any] = field(default_factory=dict)  # backend, recall


def cluster(
    emb: np.ndarray,
    k: int | None,
    k_range: tuple[int, int] = (2, 20),
    k_rule: str = "eigengap",
    n_neighbors: int = 15,
    n_components: int | None = None,
    t: float = 1.0,
    knn_dim: int = 0,
    seed: int = 0,
    knn_method: str = "exact",
) -> Clustering:
    """Cluster embeddings (N, D): kNN affinity, diffusion map, NMF argmax.

    ``k`` None picks K in ``k_range`` by ``k_rule``: ``eigengap`` (largest gap
    of the diffusion spectrum) or ``nmf_elbow`` (elbow of the NMF relative
    error, the paper's criterion; one NMF fit per K).
    ``n_components`` diffusion coordinates default to the largest K tried.
    ``knn_method``: a :data:`KNN` backend or ``auto``; an approximate graph's
    recall on a sample of rows is reported in ``Clustering.knn``.
    """
    n = emb.shape[0]
    kmax = min(k if k is not None else k_range[1], n - 1)
    d = min(n_components or max(kmax, k_range[1], 2), n - 2)
    x = reduce_dim(emb, knn_dim, seed)
    backend = knn_backend(knn_method, n)
    idx, dist = KNN[backend](x, n_neighbors, seed)
    knn_info: dict[str, Any] = {"backend": backend}
    if backend != "exact":
        knn_info["recall_sample"] = knn_recall(x, idx, seed=seed)
    a, sigma = affinity(idx, dist)
    coords, lam = diffusion_map(a, d, t, seed)
    sim = diffusion_similarity(a, coords)
    curve: dict[int, float] = {}
    if k is None and k_rule == "eigengap":
        chosen, curve = eigengap(lam, k_range)
        rule = f"eigengap of the diffusion spectrum over K={min(curve, default=2)}"
        rule += f"..{max(curve, default=2)}"
        w, _ = nmf_fit(sim, chosen, seed)
    elif k is None:
        lo, hi = max(2, k_range[0]), min(k_range[1], n - 1)
        fits = {kk: nmf_fit(sim, kk, seed) for kk in range(lo, hi + 1)}
        curve = {kk: err for kk, (_, err) in fits.items()}
        chosen = elbow(list(curve), list(curve.values()))
        w, rule = fits[chosen][0], f"elbow of NMF relative error over K={lo}..{hi}"
    else:
        chosen, rule = k, "declared"
        w, err = nmf_fit(sim, k, seed)
        curve = {k: err}
    labels = _relabel(w.argmax(1))
    return Clustering(
        labels, int(labels.max()) + 1, rule, coords, lam, sigma, curve, knn_info
    )


def _relabel(labels: np.ndarray) -> np.ndarray:
    """Renumber labels 0..K'-1 by first appearance (drops empty components)."""
    _, first, inv = np.unique(labels, return_index=True, return_inverse=True)
    rank = np.argsort(np.argsort(first))
    return rank[inv].astype(np.int64)
