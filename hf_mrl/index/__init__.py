"""MatryoshkaIndex: adaptive retrieval over Matryoshka embeddings (a low-dim shortlist, then a high-dim re-rank).

- `base.py`: what both index classes share (`from_dataset`, `check_model`, the search argument checks).
- `matryoshka_index.py`: the `MatryoshkaIndex` class (build, search, funnel search, save / load).
- `storage.py`: the stored re-rank vectors, quantised so that every truncated slice stays correct.
- `shortlists.py`: the faiss shortlist indexes (construction, search breadth, memory).
- `validation.py`: argument checks, all run before any work.
- `persistence.py`: the saved folder (manifest, sha256 of every file, atomic save, checked load).
- `encoding.py`: `encode_embeddings`, a dataset through a model into the full embeddings (the loop is
  `hf_mrl.modeling.encoding.encode_dataset`); `model_fingerprint`;
  the ids and payloads of a dataset's rows.
- `qdrant_index.py`: `QdrantMatryoshkaIndex`, the same search API on a Qdrant collection (scale-out);
  `qdrant_engines.py`: its two engines (Qdrant Edge embedded, qdrant-client for servers); `qdrant_checks.py`:
  its argument and collection-layout checks. qdrant is imported only when a collection is used.
"""

from ..modeling.lazy_exports import lazy_exports

# Loaded on first use: faiss and Qdrant are imported only by what needs them.
_EXPORTS = {
    "encoding": ["encode_embeddings", "model_fingerprint"],
    "base": ["DEFAULT_SHORTLIST_SIZE"],
    "matryoshka_index": ["MatryoshkaIndex", "DEFAULT_FUNNEL_SIZES"],
    "persistence": ["FORMAT_NAME", "FORMAT_VERSION", "MANIFEST"],
    "qdrant_index": ["QdrantMatryoshkaIndex"],
    "shortlists": ["DEFAULT_INDEX_PARAMS", "faiss_index_nbytes"],
    "choices": ["INT8_SCALES", "SHORTLIST_INDEXES", "STORAGES"],
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())

__all__ = ["MatryoshkaIndex", "QdrantMatryoshkaIndex", "STORAGES", "SHORTLIST_INDEXES", "INT8_SCALES", "encode_embeddings",
           "faiss_index_nbytes", "model_fingerprint"]
