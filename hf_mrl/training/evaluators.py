"""The evaluator `MatryoshkaTrainer` builds when none is given: per-dim metrics of the task, from one encoding pass.

- classification: top-1 of the nested head at each dim and 1-NN of the truncated embeddings (leave-one-out
  within the evaluated split, or against a `reference_dataset`, e.g. the training split);
- pairs: anchor -> positive retrieval over the split's distinct texts (recall@k, MRR, nDCG, mAP);
- image-text: text <-> image recall@k (and zero-shot accuracy when there is a class label).
"""

from __future__ import annotations

import datasets
import numpy as np

from ..data import ImageCollator, TextCollator
from ..evaluation import MatryoshkaClassificationEvaluator, MatryoshkaRetrievalEvaluator
from ..evaluation.image_text import DEFAULT_PROMPT_TEMPLATE, MatryoshkaImageTextEvaluator
from ..modeling.nesting import resolve_dims

__all__ = ["sorted_by_length", "default_evaluator", "pair_retrieval_evaluator"]


def sorted_by_length(dataset: datasets.Dataset, column: str = "text") -> datasets.Dataset:
    """Texts shortest first: batches then pad little (the metrics do not depend on row order)."""
    return dataset.select(np.argsort([len(text) for text in dataset[column]], kind="stable"))


def pair_retrieval_evaluator(dataset, columns, tokenizer, max_length, dims, name, batch_size, ks=(1, 5, 10)):
    """Anchor -> positive retrieval over the split's distinct texts; an anchor's relevant documents are the
    positives it is paired with anywhere in the split (e.g. every word of a WordNet synset)."""
    anchors, positives = dataset[columns[0]], dataset[columns[1]]
    corpus = sorted(set(positives), key=lambda text: (len(text), text))
    corpus_row = {text: row for row, text in enumerate(corpus)}
    relevant: dict[str, set[int]] = {query: set() for query in sorted(set(anchors), key=lambda text: (len(text), text))}
    for anchor, positive in zip(anchors, positives, strict=True):
        relevant[anchor].add(corpus_row[positive])
    return MatryoshkaRetrievalEvaluator(
        datasets.Dataset.from_dict({"text": list(relevant)}),
        datasets.Dataset.from_dict({"text": corpus}),
        collate_fn=TextCollator(tokenizer, max_length, label_column=None),
        relevant_ids=[sorted(rows) for rows in relevant.values()],
        dims=dims, ks=ks, primary_metric_name="recall", name=name, batch_size=batch_size,
    )


def default_evaluator(task, model, dataset, *, collate_fn, processor, args, name, reference_dataset=None,
                      columns=None):
    """The task's evaluator on `dataset` (see the module docstring)."""
    dims = resolve_dims(model, args.eval_dims, name="eval_dims")
    batch_size = args.per_device_eval_batch_size
    if task == "classification":
        if "text" in dataset.column_names:
            dataset = sorted_by_length(dataset)
            if reference_dataset is not None:
                reference_dataset = sorted_by_length(reference_dataset)
        return MatryoshkaClassificationEvaluator(
            dataset, reference_dataset=reference_dataset, collate_fn=collate_fn, dims=dims, top_k=(1,), knn_k=(1,),
            name=name, batch_size=batch_size,
        )
    if task == "pairs":
        return pair_retrieval_evaluator(dataset, columns, processor, args.max_seq_length, dims, name, batch_size)
    vision = model.config.vision_config
    class_prompts = None
    label_column = "label" if "label" in dataset.column_names else None
    if label_column is not None:
        names = getattr(dataset.features["label"], "names", None)
        class_prompts = [DEFAULT_PROMPT_TEMPLATE.format(label) for label in names] if names else None
        label_column = label_column if class_prompts else None
    image_id_column = next((column for column in ("image_id", "emoji") if column in dataset.column_names), None)
    return MatryoshkaImageTextEvaluator(
        dataset, processor,
        image_collator=ImageCollator(image_size=vision.image_size, num_channels=vision.num_channels, label_column=None),
        image_id_column=image_id_column or label_column, class_prompts=class_prompts, label_column=label_column,
        dims=dims, max_length=args.max_seq_length, name=name, batch_size=batch_size,
    )
