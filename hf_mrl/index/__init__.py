"""MatryoshkaIndex: adaptive retrieval over Matryoshka embeddings (a low-dim shortlist, then a high-dim re-rank).

- `matryoshka_index.py`: the `MatryoshkaIndex` class (build, search, funnel search, save / load).
- `storage.py`: the stored re-rank vectors, quantised so that every truncated slice stays correct.
- `shortlists.py`: the faiss shortlist indexes (construction, search breadth, memory).
- `validation.py`: argument checks, all run before any work.
- `persistence.py`: the saved folder (manifest, sha256 of every file, atomic save, checked load).
- `encoding.py`: `encode_embeddings`, a dataset through a model into the full embeddings; `model_fingerprint`;
  the ids and payloads of a dataset's rows.
- `qdrant_index.py`: `QdrantMatryoshkaIndex`, the same search API on a Qdrant collection (scale-out);
  `qdrant_engines.py`: its two engines (Qdrant Edge embedded, qdrant-client for servers); `qdrant_checks.py`:
  its argument and collection-layout checks. qdrant is imported only when a collection is used.
"""

# The `X as X` imports keep public settings importable from here, as before, without adding them to `__all__`.
from .encoding import encode_embeddings, model_fingerprint
from .matryoshka_index import DEFAULT_FUNNEL_SIZES as DEFAULT_FUNNEL_SIZES
from .matryoshka_index import DEFAULT_SHORTLIST_SIZE as DEFAULT_SHORTLIST_SIZE
from .matryoshka_index import MatryoshkaIndex
from .persistence import FORMAT_NAME as FORMAT_NAME
from .persistence import FORMAT_VERSION as FORMAT_VERSION
from .persistence import MANIFEST as MANIFEST
from .qdrant_index import QdrantMatryoshkaIndex
from .shortlists import DEFAULT_INDEX_PARAMS as DEFAULT_INDEX_PARAMS
from .shortlists import SHORTLIST_INDEXES, faiss_index_nbytes
from .storage import INT8_SCALES, STORAGES

__all__ = ["MatryoshkaIndex", "QdrantMatryoshkaIndex", "STORAGES", "SHORTLIST_INDEXES", "INT8_SCALES", "encode_embeddings",
           "faiss_index_nbytes", "model_fingerprint"]
