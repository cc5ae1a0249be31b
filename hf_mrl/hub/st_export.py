"""Export of a Matryoshka text model as a plain sentence-transformers folder (no hf_mrl code needed to load it).

The folder holds the standard modules: Transformer (the bare encoder, saved as an ordinary transformers
checkpoint), Pooling (our pooling mode), Dense (our projection, identity activation, when the model has one)
and Normalize, plus `modules.json` and `config_sentence_transformers.json` (cosine similarity, and
`truncate_dim` when a default is given). `SentenceTransformer(path, truncate_dim=k)` keeps the first k
features, like `model.encode(..., dim=k)`.

One difference to know: sentence-transformers truncates AFTER its Normalize module, so the k-dim vectors
it returns are not unit length unless `encode(..., normalize_embeddings=True)`, which then equals
`model.encode(..., dim=k)`. Cosine similarities (`SentenceTransformer.similarity`) are equal either way.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from ..modeling.checks import check_positive_int, max_input_tokens
from ..modeling.files import MODEL_FOLDER, check_folder_target, write_folder_atomically
from ..modeling.nesting import validate_dim
from ..modeling.progress import transformers_progress_bars
from ..modeling.sentence_transformers_format import (
    _load_tokenizer,
    _sentence_transformer,
    _text_base_model,
    _write_max_seq_length,
    encode_max_length,
)
from .card import card_from_results
from .saving import README_FILE

__all__ = ["export_sentence_transformer"]

def export_sentence_transformer(
    model,
    path,
    tokenizer,
    truncate_dim: int | None = None,
    *,
    max_seq_length: int | None = None,
    results: Mapping | None = None,
    **card_kwargs,
) -> Path:
    """Writes `model` (a text `MatryoshkaModel` or classifier; only its embedding part is exported) as a
    sentence-transformers folder at `path`, with a README.md card (sentence-transformers usage).

    Args:
        model: the Matryoshka text model.
        path: the output folder (new, empty, or a saved model folder, which is replaced atomically).
        tokenizer: the model's tokenizer, or its folder / Hub id.
        truncate_dim (`int`, *optional*): default `truncate_dim` stored in config_sentence_transformers.json
            (1 to the embedding dim); `SentenceTransformer(path, truncate_dim=k)` overrides it.
        max_seq_length (`int`, *optional*): longest input in tokens (default: the length `encode` cuts at, the
            tokenizer's `model_max_length`); written to sentence_bert_config.json.
        results, card_kwargs: per-dim results and other arguments for `card_from_results`.
    """
    base = _text_base_model(model)
    config = base.config
    if truncate_dim is not None:
        truncate_dim = validate_dim(truncate_dim, config.embedding_dim, "truncate_dim")
    if max_seq_length is not None:
        check_positive_int(max_seq_length, "max_seq_length")
        limit = max_input_tokens(config.backbone_config)
        if limit and max_seq_length > limit:
            raise ValueError(f"`max_seq_length` is {max_seq_length}, but the encoder takes at most {limit} tokens.")
    tokenizer = _load_tokenizer(tokenizer)
    max_seq_length = max_seq_length or encode_max_length(tokenizer)
    path = check_folder_target(path, MODEL_FOLDER)
    card = card_from_results(
        results, base, library_name="sentence-transformers", default_truncate_dim=truncate_dim, **card_kwargs
    )

    def write(staging: Path) -> None:
        with transformers_progress_bars(False):  # no "Writing model shards" / "Loading weights" bars for a save
            exported, _ = _sentence_transformer(base, tokenizer, max_seq_length, truncate_dim)
            exported.save(str(staging), create_model_card=False)
        transformer_path = json.loads((staging / "modules.json").read_text())[0]["path"]
        _write_max_seq_length(staging / transformer_path, max_seq_length)
        (staging / README_FILE).write_text(card, encoding="utf-8")

    return write_folder_atomically(path, write)
