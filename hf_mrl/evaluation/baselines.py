"""Baselines scored exactly like Matryoshka embeddings: each turns full embeddings into per-dim
embeddings `{dim: (n, dim)}` that the evaluators' `compute_metrics` accept.

- "truncate": the first k features (plain truncation; for a non-MRL model this is the baseline MRL
  must beat, e.g. the frozen all-MiniLM-L6-v2).
- "pca": projection on the top-k principal components of the reference set (fit once by SVD; the
  components are ordered by variance, so the k-dim projection is nested in the (k+1)-dim one).
- "random": k features picked at random (the first k of one seeded permutation, so nested too).

Every per-dim array is L2-normalised later by the evaluator, the same as Matryoshka slices.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..modeling.progress import should_show_progress
from .base import validate_eval_dims

__all__ = ["BASELINE_METHODS", "Baseline", "fit_baseline", "baseline_embeddings", "sentence_transformer_embeddings"]

BASELINE_METHODS = ("truncate", "pca", "random")


@dataclass
class Baseline:
    """A fitted baseline: `transform(embeddings (n, d))` -> `{dim: (n, dim) float32}`.

    method: one of `BASELINE_METHODS`; dims: ascending output dims.
    mean (d,) and components (max_dim, d): the PCA centre and axes ("pca" only).
    feature_order (d,): the seeded permutation ("random" only).
    """

    method: str
    dims: list[int]
    input_dim: int
    mean: np.ndarray | None = None
    components: np.ndarray | None = None
    feature_order: np.ndarray | None = None

    def transform(self, embeddings) -> dict[int, np.ndarray]:
        embeddings = np.asarray(embeddings, dtype=np.float32)
        if embeddings.ndim != 2 or embeddings.shape[1] != self.input_dim:
            raise ValueError(
                f"`embeddings` must have shape (n, {self.input_dim}) like the reference set, got {embeddings.shape}."
            )
        if self.method == "pca":
            projected = (embeddings - self.mean) @ self.components.T
            return {dim: np.ascontiguousarray(projected[:, :dim]) for dim in self.dims}
        if self.method == "random":
            return {dim: np.ascontiguousarray(embeddings[:, self.feature_order[:dim]]) for dim in self.dims}
        return {dim: np.ascontiguousarray(embeddings[:, :dim]) for dim in self.dims}


def fit_baseline(method: str, reference_embeddings, dims: Sequence[int], seed: int = 0) -> Baseline:
    """Fits `method` on `reference_embeddings` (n, d) for output `dims` (each from 1 to d; PCA also needs
    dims <= n)."""
    if method not in BASELINE_METHODS:
        raise ValueError(f"`method` must be one of {list(BASELINE_METHODS)}, got {method!r}.")
    reference = np.asarray(reference_embeddings, dtype=np.float32)
    if reference.ndim != 2 or len(reference) == 0:
        raise ValueError(f"`reference_embeddings` must be a non-empty 2-D array (n, d), got shape {reference.shape}.")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"`seed` must be an integer, got {seed!r}.")
    input_dim = reference.shape[1]
    dims = validate_eval_dims(list(dims), input_dim)
    if method == "pca":
        if dims[-1] > len(reference):
            raise ValueError(f"`dims` holds {dims[-1]}, more PCA components than the {len(reference)} reference rows.")
        mean = reference.mean(axis=0, dtype=np.float64)
        # Right singular vectors of the centred data = principal axes, by decreasing variance.
        _, _, vt = np.linalg.svd(reference.astype(np.float64) - mean, full_matrices=False)
        return Baseline(
            method, dims, input_dim, mean=mean.astype(np.float32), components=vt[: dims[-1]].astype(np.float32)
        )
    if method == "random":
        order = np.random.default_rng(seed).permutation(input_dim)
        return Baseline(method, dims, input_dim, feature_order=order)
    return Baseline(method, dims, input_dim)


def baseline_embeddings(
    reference_embeddings,
    dims: Sequence[int],
    methods: Sequence[str] = BASELINE_METHODS,
    seed: int = 0,
    **other_embeddings,
) -> dict[str, dict[str, dict[int, np.ndarray]]]:
    """Per-dim embeddings of every baseline: `{method: {"reference": {dim: array}, name: {dim: array}}}`,
    each method fit on `reference_embeddings` and applied to it and to each named array in
    `other_embeddings` (e.g. `queries=...`)."""
    if "reference" in other_embeddings:
        raise ValueError("`reference` is the name of the fitting set; give the other arrays other names.")
    results = {}
    for method in methods:
        baseline = fit_baseline(method, reference_embeddings, dims, seed=seed)
        results[method] = {"reference": baseline.transform(reference_embeddings)}
        for name, embeddings in other_embeddings.items():
            results[method][name] = baseline.transform(embeddings)
    return results


def sentence_transformer_embeddings(model, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
    """Full-dim embeddings (n, d) float32 of `texts` from a `sentence_transformers.SentenceTransformer`
    (e.g. a plain, non-MRL model), for the evaluators' `compute_metrics`."""
    if isinstance(texts, str) or not all(isinstance(text, str) for text in texts):
        raise ValueError("`texts` must be a list of strings.")
    embeddings = model.encode(list(texts), batch_size=batch_size, convert_to_numpy=True,
                              show_progress_bar=should_show_progress())
    return np.asarray(embeddings, dtype=np.float32)
