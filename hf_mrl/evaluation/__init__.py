"""Evaluation at every Matryoshka granularity: metrics, evaluators, baselines, reports, cascades, and a
deployment report (cascade and adaptive retrieval against the full dim).

Evaluators encode their data once at the full dim and score every dim from slices of it.
"""

from .adaptive import MatryoshkaCascade, cascade_predict, evaluate_cascade, fit_cascade_thresholds
from .base import EncodedDataset, MatryoshkaEvaluator, build_search_index, encode_dataset, per_dim_embeddings
from .baselines import BASELINE_METHODS, Baseline, baseline_embeddings, fit_baseline, sentence_transformer_embeddings
from .classification import MatryoshkaClassificationEvaluator, classification_metrics
from .deployment import (
    adaptive_classification_report,
    adaptive_retrieval_report,
    deployment_report,
    format_deployment_report,
)
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
from .report import (
    group_by_dim,
    load_results,
    markdown_table,
    parse_metric_key,
    plot_metric_vs_dim,
    plot_qps_vs_metric,
    save_results,
)
from .retrieval import RETRIEVAL_METRICS, MatryoshkaRetrievalEvaluator, retrieval_metrics

__all__ = [
    "BASELINE_METHODS",
    "Baseline",
    "EncodedDataset",
    "MatryoshkaCascade",
    "MatryoshkaClassificationEvaluator",
    "MatryoshkaEvaluator",
    "MatryoshkaRetrievalEvaluator",
    "RETRIEVAL_METRICS",
    "adaptive_classification_report",
    "adaptive_retrieval_report",
    "baseline_embeddings",
    "build_search_index",
    "cascade_predict",
    "classification_metrics",
    "deployment_report",
    "encode_dataset",
    "evaluate_cascade",
    "fit_baseline",
    "fit_cascade_thresholds",
    "format_deployment_report",
    "group_by_dim",
    "ir_map_at_k",
    "knn_accuracy",
    "load_results",
    "map_at_k",
    "markdown_table",
    "mrl_map_at_k",
    "mrr",
    "ndcg_at_k",
    "parse_metric_key",
    "per_dim_embeddings",
    "plot_metric_vs_dim",
    "plot_qps_vs_metric",
    "precision_at_k",
    "recall_at_k",
    "relevance_from_ids",
    "relevance_from_labels",
    "remove_ids",
    "retrieval_metrics",
    "save_results",
    "sentence_transformer_embeddings",
    "top_k_accuracy",
    "top_k_ids",
]
