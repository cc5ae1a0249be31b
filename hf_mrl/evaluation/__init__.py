"""Evaluation at every Matryoshka granularity: metrics, evaluators, baselines, reports, cascades and
disagreement routing, a deployment report (cascade and adaptive retrieval against the full dim), and the
analyses of robustness under shift, few-shot learning and per-class (long-tail) accuracy.

Evaluators encode their data once at the full dim and score every dim from slices of it.
"""

from .adaptive import (
    MatryoshkaCascade,
    cascade_predict,
    disagreement_predict,
    evaluate_cascade,
    evaluate_disagreement,
    fit_cascade_thresholds,
    oracle_accuracy,
)
from .base import EncodedDataset, MatryoshkaEvaluator, build_search_index, encode_dataset, per_dim_embeddings
from .baselines import BASELINE_METHODS, Baseline, baseline_embeddings, fit_baseline, sentence_transformer_embeddings
from .classification import MatryoshkaClassificationEvaluator, classification_metrics
from .deployment import (
    adaptive_classification_report,
    adaptive_retrieval_report,
    deployment_report,
    fastest_adaptive_setting,
    format_deployment_report,
)
from .few_shot import FEW_SHOT_METHODS, MatryoshkaFewShotEvaluator, few_shot_metrics, sample_episodes
from .metrics import (
    average_precisions_at_k,
    ir_map_at_k,
    knn_accuracy,
    map_at_k,
    mrl_map_at_k,
    mrr,
    ndcg_at_k,
    pareto_optimal,
    precision_at_k,
    recall_at_k,
    relevance_from_ids,
    relevance_from_labels,
    remove_ids,
    top_k_accuracy,
    top_k_ids,
)
from .per_class import (
    FREQUENCY_BUCKETS,
    MatryoshkaPerClassEvaluator,
    frequency_buckets,
    per_class_accuracy,
    per_class_metrics,
    per_dim_predictions,
    top_confusions,
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
from .routing import accuracy_at_budget, cost_accuracy_envelope, routing_tradeoffs
from .shift import CLEAN_SET, MatryoshkaShiftEvaluator, shift_metrics

__all__ = [
    "BASELINE_METHODS",
    "Baseline",
    "CLEAN_SET",
    "EncodedDataset",
    "FEW_SHOT_METHODS",
    "FREQUENCY_BUCKETS",
    "MatryoshkaCascade",
    "MatryoshkaClassificationEvaluator",
    "MatryoshkaEvaluator",
    "MatryoshkaFewShotEvaluator",
    "MatryoshkaPerClassEvaluator",
    "MatryoshkaRetrievalEvaluator",
    "MatryoshkaShiftEvaluator",
    "RETRIEVAL_METRICS",
    "accuracy_at_budget",
    "adaptive_classification_report",
    "adaptive_retrieval_report",
    "average_precisions_at_k",
    "baseline_embeddings",
    "build_search_index",
    "cascade_predict",
    "classification_metrics",
    "cost_accuracy_envelope",
    "deployment_report",
    "disagreement_predict",
    "encode_dataset",
    "evaluate_cascade",
    "evaluate_disagreement",
    "fastest_adaptive_setting",
    "few_shot_metrics",
    "fit_baseline",
    "fit_cascade_thresholds",
    "format_deployment_report",
    "frequency_buckets",
    "group_by_dim",
    "ir_map_at_k",
    "knn_accuracy",
    "load_results",
    "map_at_k",
    "markdown_table",
    "mrl_map_at_k",
    "mrr",
    "ndcg_at_k",
    "oracle_accuracy",
    "pareto_optimal",
    "parse_metric_key",
    "per_class_accuracy",
    "per_class_metrics",
    "per_dim_embeddings",
    "per_dim_predictions",
    "plot_metric_vs_dim",
    "plot_qps_vs_metric",
    "precision_at_k",
    "recall_at_k",
    "relevance_from_ids",
    "relevance_from_labels",
    "remove_ids",
    "retrieval_metrics",
    "routing_tradeoffs",
    "sample_episodes",
    "save_results",
    "sentence_transformer_embeddings",
    "shift_metrics",
    "top_confusions",
    "top_k_accuracy",
    "top_k_ids",
]
