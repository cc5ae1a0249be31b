"""MatryoshkaIndex: adaptive retrieval over Matryoshka embeddings (a low-dim shortlist, then a high-dim re-rank)."""

# The `X as X` imports keep public settings importable from here, as before, without adding them to `__all__`.
from .matryoshka_index import DEFAULT_FUNNEL_SIZES as DEFAULT_FUNNEL_SIZES
from .matryoshka_index import DEFAULT_INDEX_PARAMS as DEFAULT_INDEX_PARAMS
from .matryoshka_index import DEFAULT_SHORTLIST_SIZE as DEFAULT_SHORTLIST_SIZE
from .matryoshka_index import FORMAT_NAME as FORMAT_NAME
from .matryoshka_index import FORMAT_VERSION as FORMAT_VERSION
from .matryoshka_index import (
    INT8_SCALES,
    SHORTLIST_INDEXES,
    STORAGES,
    MatryoshkaIndex,
    encode_embeddings,
    faiss_index_nbytes,
)
from .matryoshka_index import MANIFEST as MANIFEST

__all__ = ["MatryoshkaIndex", "STORAGES", "SHORTLIST_INDEXES", "INT8_SCALES", "encode_embeddings", "faiss_index_nbytes"]
