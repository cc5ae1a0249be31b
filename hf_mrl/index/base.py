"""What both index backends share: building from a dataset, the model check, and the argument blocks of `search` /
`funnel_search` (queries, k, shortlist size, shortlist and stage dims). `MatryoshkaIndex` (faiss, in process) and
`QdrantMatryoshkaIndex` (a Qdrant collection) fill in how a dim is stored and how a search runs."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import numpy as np

from .encoding import check_index_model, encode_for_index
from .validation import _check_funnel_sizes, _check_positive_int, _check_queries

DEFAULT_SHORTLIST_SIZE = 200  # the MRL paper's adaptive-retrieval shortlist


class MatryoshkaIndexBase:
    """Base of the indexes. A subclass sets `dim`, `model`, `shortlist_dims`, `stored_dim`, the words naming its
    shortlists in errors (`_shortlists_held`), and implements `_check_stage_dim` (a dim a search may re-rank at) and
    `_default_funnel_dims`."""

    _shortlists_held = "shortlist indexes exist only"

    @classmethod
    def from_dataset(
        cls,
        model,
        dataset,
        collate_fn,
        batch_size: int = 64,
        *,
        accelerator=None,
        id_column: str | None = None,
        exclude_keys: Sequence[str] = ("labels",),
        show_progress: bool | None = None,
        **index_kwargs,
    ):
        """Encodes `dataset` with `model` (see `encode_embeddings`; a `SentenceTransformer` is converted once) and
        builds an index over the embeddings. `id_column` names an int column of `dataset` holding each row's id;
        `index_kwargs` go to `__init__`. The index records the model's fingerprint (see `model_fingerprint` and
        `check_model`)."""
        embeddings, ids, record = encode_for_index(
            model, dataset, collate_fn, batch_size, accelerator=accelerator, id_column=id_column,
            exclude_keys=exclude_keys, show_progress=show_progress,
        )
        return cls(embeddings, ids, show_progress=show_progress, model=record, **index_kwargs)

    def check_model(self, model, name: str | None = None) -> None:
        """Raises `ValueError` when the index was built from a model (`from_dataset`) and `model` is another one
        (its `model_fingerprint` differs): its embeddings would not match the stored ones, whatever their width.
        `name` (e.g. the model's path) goes into the message. An index built from raw embeddings accepts any model."""
        check_index_model(self.model, model, name)

    # -- argument checks of search / funnel_search -------------------------------------------------------------

    def _check_k(self, k) -> int:
        return _check_positive_int(k, "k")

    def _check_search(self, queries, k, shortlist_dim, shortlist_size, rerank_dim):
        """`search`'s arguments, checked: (queries, k, shortlist_dim, shortlist size, rerank_dim)."""
        queries = _check_queries(queries, self.dim)
        k = self._check_k(k)
        shortlist_dim = self._check_shortlist_dim(shortlist_dim)
        size = (max(k, DEFAULT_SHORTLIST_SIZE) if shortlist_size is None
                else _check_positive_int(shortlist_size, "shortlist_size"))
        if size < k:
            raise ValueError(f"`shortlist_size` is {size}, fewer than `k`={k}; allowed: at least k.")
        rerank_dim = self.stored_dim if rerank_dim is None else self._check_stage_dim(rerank_dim, "rerank_dim")
        return queries, k, shortlist_dim, size, rerank_dim

    def _check_exact_search(self, queries, k, rerank_dim, shortlist_options: dict):
        """`search(exact=True)`'s arguments, checked: (queries, k, rerank_dim). The shortlist options (name: value)
        must be left out: an exact search scores the whole database, without a shortlist."""
        for name, value in shortlist_options.items():
            if value is not None:
                raise ValueError(f"`{name}` is {value!r}, but `exact=True` scores every vector, without a shortlist; "
                                 f"allowed: leave `{name}` out with exact=True.")
        queries = _check_queries(queries, self.dim)
        k = self._check_k(k)
        rerank_dim = self.stored_dim if rerank_dim is None else self._check_stage_dim(rerank_dim, "rerank_dim")
        return queries, k, rerank_dim

    def _check_funnel(self, queries, k, dims, shortlist_sizes) -> tuple[np.ndarray, int, list[int], list[int]]:
        """`funnel_search`'s arguments, checked: (queries, k, dims, shortlist sizes)."""
        queries = _check_queries(queries, self.dim)
        k = self._check_k(k)
        dims = self._check_funnel_dims(dims)
        return queries, k, dims, _check_funnel_sizes(shortlist_sizes, len(dims), k)

    def _check_shortlist_dim(self, shortlist_dim, name: str = "shortlist_dim") -> int:
        if shortlist_dim is None:
            return self.shortlist_dims[0]
        if shortlist_dim not in self.shortlist_dims:
            raise ValueError(
                f"`{name}` is {shortlist_dim!r}, but {self._shortlists_held} at dims {self.shortlist_dims} "
                "(chosen at build time with `shortlist_dim`)."
            )
        return int(shortlist_dim)

    def _check_funnel_dims(self, dims) -> list[int]:
        if dims is None:
            return self._default_funnel_dims()
        if isinstance(dims, (str, bytes)) or not isinstance(dims, Sequence) or len(dims) == 0:
            raise ValueError(f"`dims` must be a non-empty list of rising integers, got {dims!r}.")
        for value in dims:
            self._check_stage_dim(value, "dims")
        # The first dim may repeat once: the shortlist re-ranked at its own dim from the stored vectors (with a
        # quantised shortlist on Qdrant, the engine's rescoring of its search, far cheaper than a prefetch pass).
        rising = dims[1:] if len(dims) > 1 and dims[0] == dims[1] else dims
        if any(later <= earlier for earlier, later in pairwise(rising)):
            raise ValueError(
                f"`dims` must be strictly rising (only the first may repeat once, to re-rank the shortlist at its own "
                f"dim), got {list(dims)!r}."
            )
        self._check_shortlist_dim(dims[0], name="dims[0]")
        return [int(value) for value in dims]

    def _check_stage_dim(self, value, name: str) -> int:
        """A dim a search may re-rank at (`rerank_dim`, the funnel's `dims`)."""
        raise NotImplementedError

    def _default_funnel_dims(self) -> list[int]:
        raise NotImplementedError
