"""Embeddings shared by the index tests (faiss and Qdrant), shaped like a trained MRL model's output (the
`database` and `queries` fixtures of tests/conftest.py draw them), and the numpy brute force they are checked
against."""

import numpy as np

NUM_VECTORS, DIM = 600, 32


def matryoshka_like(num: int, seed: int) -> np.ndarray:
    """Un-normalised embeddings whose early features carry more variance (as in trained MRL models),
    clustered so that truncated searches share most neighbours with full-dim ones."""
    rng = np.random.default_rng(seed)
    scale = np.linspace(3.0, 0.3, DIM)
    centers = np.random.default_rng(1234).standard_normal((12, DIM)) * scale
    return (centers[rng.integers(0, 12, num)] + 0.7 * rng.standard_normal((num, DIM)) * scale + 0.5).astype(np.float32)



def unit(array: np.ndarray, dim: int) -> np.ndarray:
    head = array[:, :dim].astype(np.float64)
    return head / np.linalg.norm(head, axis=1, keepdims=True)


def exact_scores(database: np.ndarray, queries: np.ndarray, dim: int) -> np.ndarray:
    """Cosine at `dim` of every (query, vector) pair: truncate, renormalise, dot."""
    return unit(queries, dim) @ unit(database, dim).T


def exact_search(database, queries, dim, k):
    """Brute force: the top `k` (scores, row numbers) per query at `dim`, best first."""
    scores = exact_scores(database, queries, dim)
    ids = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, ids, 1), ids
