"""Embeddings shared by the index tests (faiss and Qdrant), shaped like a trained MRL model's output; the
`database` and `queries` fixtures (tests/conftest.py) draw them."""

import numpy as np

NUM_VECTORS, DIM = 600, 32


def matryoshka_like(num: int, seed: int) -> np.ndarray:
    """Un-normalised embeddings whose early features carry more variance (as in trained MRL models),
    clustered so that truncated searches share most neighbours with full-dim ones."""
    rng = np.random.default_rng(seed)
    scale = np.linspace(3.0, 0.3, DIM)
    centers = np.random.default_rng(1234).standard_normal((12, DIM)) * scale
    return (centers[rng.integers(0, 12, num)] + 0.7 * rng.standard_normal((num, DIM)) * scale + 0.5).astype(np.float32)

