"""faiss shortlist indexes of a `MatryoshkaIndex`: one per shortlist dim, built over the truncated,
renormalised vectors (their sign bits for binary), searched with per-call HNSW / IVF breadth."""

from __future__ import annotations

import faiss
import numpy as np
from tqdm.auto import tqdm

from ..modeling.progress import should_show_progress
from .storage import _l2_normalize

DEFAULT_INDEX_PARAMS = {"hnsw_m": 32, "ef_construction": 80, "ef_search": 64, "nlist": None, "nprobe": 16,
                        "cluster_dim": None}
_ADD_CHUNK = 65536
_FAISS_SQ_TYPES = {"float16": "QT_fp16", "bfloat16": "QT_bf16", "int8": "QT_8bit"}


def _new_faiss_index(kind: str, storage: str, dim: int, params: dict, quantizer=None):
    """An empty faiss index; `quantizer` (IVF kinds, float codes): a trained coarse quantizer to use."""
    metric = faiss.METRIC_INNER_PRODUCT
    quantizer = faiss.IndexFlatIP(dim) if quantizer is None else quantizer
    if storage == "binary":
        if kind == "flat":
            return faiss.IndexBinaryFlat(dim)
        if kind == "hnsw":
            index = faiss.IndexBinaryHNSW(dim, params["hnsw_m"])
            index.hnsw.efConstruction = params["ef_construction"]
            return index
        return faiss.IndexBinaryIVF(faiss.IndexBinaryFlat(dim), dim, params["nlist"])
    if storage == "float32":
        if kind == "flat":
            return faiss.IndexFlatIP(dim)
        if kind == "hnsw":
            index = faiss.IndexHNSWFlat(dim, params["hnsw_m"], metric)
            index.hnsw.efConstruction = params["ef_construction"]
            return index
        return faiss.IndexIVFFlat(quantizer, dim, params["nlist"], metric)
    qtype = getattr(faiss.ScalarQuantizer, _FAISS_SQ_TYPES[storage])
    if kind == "flat":
        return faiss.IndexScalarQuantizer(dim, qtype, metric)
    if kind == "hnsw":
        index = faiss.IndexHNSWSQ(dim, qtype, params["hnsw_m"], metric)
        index.hnsw.efConstruction = params["ef_construction"]
        return index
    return faiss.IndexIVFScalarQuantizer(quantizer, dim, params["nlist"], qtype, metric)


def faiss_index_nbytes(index) -> int:
    """Approximate memory of a faiss index: codes, plus graph links (HNSW) or ids and centroids (IVF); a refine
    wrapper's base index plus its refine vectors."""
    if isinstance(index, faiss.IndexRefine):
        return faiss_index_nbytes(faiss.downcast_index(index.base_index)) + faiss_index_nbytes(
            faiss.downcast_index(index.refine_index))
    if hasattr(index, "hnsw"):
        storage = index.storage if isinstance(index, faiss.IndexBinary) else faiss.downcast_index(index.storage)
        hnsw = index.hnsw
        links = hnsw.neighbors.size() * 4 + hnsw.levels.size() * 4 + hnsw.offsets.size() * 8
        return storage.code_size * index.ntotal + links
    if hasattr(index, "nlist"):
        centroid_bytes = index.d // 8 if isinstance(index, faiss.IndexBinary) else index.d * 4
        return (index.code_size + 8) * index.ntotal + index.nlist * centroid_bytes
    return index.code_size * index.ntotal


def _search_params(index, shortlist_size: int, ef_search: int, nprobe: int):
    if hasattr(index, "hnsw"):
        return faiss.SearchParametersHNSW(efSearch=max(ef_search, shortlist_size))
    if hasattr(index, "nlist"):
        return faiss.SearchParametersIVF(nprobe=min(nprobe, index.nlist))
    return None


def _cluster_quantizer(sample: np.ndarray, cluster_dim: int, nlist: int):
    """AdANNS-IVF's coarse quantizer (Rege et al., NeurIPS 2023): clusters of the first `cluster_dim` features
    (spherical k-means on them, renormalised) for lists scored at the shortlist's own, larger dim. The centroids are
    padded with zeros to that dim, so a plain faiss IVF index assigns a unit vector (or query) by the inner product
    of its first `cluster_dim` features alone (their norm scales every list alike), and saves and loads as usual."""
    kmeans = faiss.Kmeans(cluster_dim, nlist, spherical=True, seed=1234)  # faiss's IVF training seed
    kmeans.train(np.ascontiguousarray(_l2_normalize(sample[:, :cluster_dim])))
    centroids = np.zeros((nlist, sample.shape[1]), dtype=np.float32)
    centroids[:, :cluster_dim] = kmeans.centroids
    quantizer = faiss.IndexFlatIP(sample.shape[1])
    quantizer.add(centroids)
    return quantizer


def _training_sample(unit: np.ndarray, nlist: int) -> np.ndarray:
    """The rows faiss trains on (IVF centroids, scalar-quantiser ranges): a fixed random sample, in row order."""
    count = len(unit)
    size = min(count, 64 * nlist, 262144)
    return unit[np.sort(np.random.default_rng(0).choice(count, size=size, replace=False))]


def _build_shortlist(unit: np.ndarray, kind: str, storage: str, params: dict, show_progress: bool | None):
    """One faiss index of `kind` over `unit` (N, d) truncated vectors (renormalised here, or their sign bits); IVF
    lists clustered at `params["cluster_dim"]` when it is below d."""
    count, dim = unit.shape
    binary = storage == "binary"

    def encode(rows: np.ndarray) -> np.ndarray:
        return np.packbits(rows > 0, axis=1) if binary else np.ascontiguousarray(_l2_normalize(rows))

    cluster_dim, nlist = params.get("cluster_dim"), params["nlist"]
    sample = quantizer = None
    if kind == "ivf" and not binary and cluster_dim is not None and cluster_dim < dim:
        sample = _training_sample(unit, nlist)
        quantizer = _cluster_quantizer(sample, cluster_dim, nlist)
    index = _new_faiss_index(kind, storage, dim, params, quantizer)
    if not index.is_trained:  # an IVF index given a `quantizer` of nlist centroids trains only its codes
        index.train(encode(_training_sample(unit, nlist) if sample is None else sample))
    chunks = range(0, count, _ADD_CHUNK)
    for start in tqdm(chunks, desc=f"shortlist index @{dim}", disable=not should_show_progress(show_progress) or len(chunks) < 2):
        index.add(encode(unit[start : start + _ADD_CHUNK]))
    return index


def _search_shortlist(index, head: np.ndarray, size: int, binary: bool, ef_search: int, nprobe: int) -> np.ndarray:
    """Row numbers (nq, size) of the best `size` vectors for the query heads `head` (nq, d); -1 where none."""
    encoded = np.packbits(head > 0, axis=1) if binary else _l2_normalize(head)
    params = _search_params(index, size, ef_search, nprobe)
    _, rows = index.search(np.ascontiguousarray(encoded), size, params=params)
    return rows
