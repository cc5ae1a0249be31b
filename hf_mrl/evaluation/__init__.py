"""Evaluation at every Matryoshka granularity: metrics, evaluators, baselines, reports, cascades."""

from .metrics import (
    ir_map_at_k,
    knn_accuracy,
    map_at_k,
    mrl_map_at_k,
    mrr,
    ndcg_at_k,
    precision_at_k,
    recall_at_k,
    relevance_from_ids,
    relevance_from_labels,
    remove_ids,
    top_k_accuracy,
    top_k_ids,
)

__all__ = [
    "ir_map_at_k",
    "knn_accuracy",
    "map_at_k",
    "mrl_map_at_k",
    "mrr",
    "ndcg_at_k",
    "precision_at_k",
    "recall_at_k",
    "relevance_from_ids",
    "relevance_from_labels",
    "remove_ids",
    "top_k_accuracy",
    "top_k_ids",
]
