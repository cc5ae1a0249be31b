"""What the nesting buys at deployment, measured on a trained Matryoshka classifier.

Two reports, both against the plain full-dim way of doing the same job:

- classification: a confidence cascade over the nested heads (`MatryoshkaCascade`), thresholds fit on a
  validation split, scored on a test split: accuracy and mean dims used, next to every head alone;
- retrieval: exact full-dim search (faiss flat) against `MatryoshkaIndex`'s adaptive search (a flat
  shortlist at a low dim, an exact re-rank at the full dim) and one funnel: queries per second (the median
  of a few timed runs over the whole query batch), recall of the exact full-dim top k, and label precision.

`deployment_report` encodes each split once (embeddings and every head's logits in one pass), runs both,
and can write `deployment.json` and `deployment.png`; `format_deployment_report` prints them as two tables.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..index import MatryoshkaIndex
from ..index.validation import _to_float_matrix
from ..modeling.checks import check_positive_int
from .adaptive import MatryoshkaCascade, _check_dims, _check_logits
from .base import build_search_index, encode_dataset, per_dim_embeddings
from .metrics import top_k_accuracy
from .report import draw_metric_vs_dim, draw_qps_vs_metric, pyplot, save_figure, save_results
from .sweep import evaluate_faiss_index, evaluate_funnel, id_relevance, label_relevance, sweep_index

__all__ = [
    "adaptive_classification_report",
    "adaptive_retrieval_report",
    "deployment_report",
    "fastest_adaptive_setting",
    "format_deployment_report",
]

LABEL_COLUMN = "label"
TARGET_MARGIN = 0.005  # default cascade target: the full head's validation accuracy minus 0.5 point
TIMING = "median"


def adaptive_classification_report(
    logits_per_dim_val, labels_val, logits_per_dim_test, labels_test, dims: Sequence[int], *, target_accuracy=None
) -> dict:
    """A cascade over nested heads, fit on validation logits and scored on test logits.

    Args:
        logits_per_dim_val / logits_per_dim_test: head logits (num_dims, n, num_labels), numpy or torch, one
            row per nesting dim in ascending `dims` order (`EncodedDataset.matryoshka_logits`).
        labels_val / labels_test: (n,) classes.
        dims: the nesting dims, ascending.
        target_accuracy: the validation accuracy the thresholds must keep (see `fit_cascade_thresholds`);
            defaults to the full-dim head's validation accuracy minus 0.5 point.

    Returns:
        `cascade_accuracy` and `cascade_expected_dim` (mean dims used) on test; `full_accuracy` and
        `full_dim` (the largest head alone); `accuracy_at_dim` ({dim: test accuracy of that head alone});
        `stop_fraction` ({dim: share of test inputs stopping there}); `target_accuracy` (the validation
        target used) and `thresholds` ({dim: confidence threshold}, the last dim omitted).
    """
    val_logits, val_labels, dims = _check_logits(logits_per_dim_val, labels_val, dims)
    test_logits, test_labels, _ = _check_logits(logits_per_dim_test, labels_test, dims)
    if val_logits.shape[2] != test_logits.shape[2]:
        raise ValueError(
            f"Validation logits have {val_logits.shape[2]} labels but test logits have {test_logits.shape[2]}; "
            "both must come from the same heads."
        )
    if target_accuracy is None:
        target_accuracy = max(0.0, top_k_accuracy(val_logits[-1], val_labels) - TARGET_MARGIN)
    cascade = MatryoshkaCascade(dims).fit(val_logits, val_labels, target_accuracy=target_accuracy)
    report = cascade.report(test_logits, test_labels)
    return {
        "cascade_accuracy": report["accuracy"],
        "cascade_expected_dim": report["expected_dim"],
        "full_accuracy": report["full_dim_accuracy"],
        "full_dim": report["full_dim"],
        "accuracy_at_dim": {dim: top_k_accuracy(test_logits[j], test_labels) for j, dim in enumerate(dims)},
        "stop_fraction": report["stop_share"],
        "target_accuracy": float(target_accuracy),
        "thresholds": report["thresholds"],
    }


def _check_labels(labels, count: int, name: str) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.shape != (count,):
        raise ValueError(f"`{name}` must have shape ({count},) (one label per row), got {labels.shape}.")
    return labels


def _check_retrieval_args(database, queries, dims, k, shortlist_dims, shortlist_sizes, repeats):
    database, queries = _to_float_matrix(database, "database"), _to_float_matrix(queries, "queries")
    count, full_dim = database.shape
    if queries.shape[1] != full_dim:
        raise ValueError(f"`queries` have {queries.shape[1]} features but `database` has {full_dim}; they must match.")
    if count == 0 or len(queries) == 0:
        raise ValueError(f"`database` and `queries` need rows, got {count} and {len(queries)}.")
    dims = _check_dims(dims)
    if dims[-1] != full_dim:
        raise ValueError(f"`dims` must end at the embeddings' full dim {full_dim}, got {dims!r}.")
    k = check_positive_int(k, "k")
    if k > count:
        raise ValueError(f"`k` is {k}, more than the {count} database rows; allowed: 1 to {count}.")
    shortlist_dims = dims[:-1] if shortlist_dims is None else _check_dims(shortlist_dims)
    if not shortlist_dims or shortlist_dims[-1] >= full_dim:
        raise ValueError(
            f"`shortlist_dims` must be dims below the full dim {full_dim} (default: `dims` but the last), "
            f"got {shortlist_dims!r} with dims={dims!r}."
        )
    if isinstance(shortlist_sizes, (str, bytes)) or not isinstance(shortlist_sizes, Sequence) or not shortlist_sizes:
        raise ValueError(f"`shortlist_sizes` must be a non-empty list of integers, got {shortlist_sizes!r}.")
    for size in shortlist_sizes:
        if check_positive_int(size, "shortlist_sizes") < k:
            raise ValueError(f"`shortlist_sizes` holds {size}, fewer than `k`={k}; each size must be >= k.")
    sizes = sorted({min(int(size), count) for size in shortlist_sizes})  # clipped to N: N means exhaustive
    return database, queries, dims, k, shortlist_dims, sizes, check_positive_int(repeats, "repeats")


def adaptive_retrieval_report(
    database,
    queries,
    database_labels=None,
    query_labels=None,
    dims: Sequence[int] | None = None,
    *,
    relevant_ids=None,
    k: int = 10,
    shortlist_dims: Sequence[int] | None = None,
    shortlist_sizes: Sequence[int] = (50, 200, 800),
    repeats: int = 3,
) -> list[dict]:
    """Exact full-dim search against adaptive search over the same embeddings, timed and scored.

    Args:
        database / queries: full-dim embeddings (N, D) and (nq, D), numpy or torch (un-normalised is fine).
        database_labels / query_labels: (N,) and (nq,) classes, for label precision; or instead
        relevant_ids: per query, the database rows relevant to it (a list of id lists, or an int array (nq, R)
            padded with -1), e.g. the words of a definition's synset.
        dims: the nesting dims, ascending, ending at D: the funnel's stages (required).
        k: results per query, 1 to N.
        shortlist_dims: dims of the flat shortlists (default: `dims` but the last).
        shortlist_sizes: shortlist sizes, each >= k (clipped to N; a size of N is the exact search again).
        repeats: timed runs per setting; the median is kept.

    Returns:
        One row per method: "exact" (faiss flat at D, the ground truth), "adaptive" per (shortlist_dim,
        shortlist_size) with the re-rank at D, and one "funnel" (dims `dims`, `funnel_search`'s default sizes,
        in `funnel_dims` / `funnel_sizes`). Each row holds `method`, `shortlist_dim`, `shortlist_size` (None
        for exact), `qps` (queries per second, wall clock, one batch of all queries), `speedup` (qps over
        exact's), `recall_vs_exact` (share of the exact top k found) and `precision_at_k` (share of the k
        results relevant to the query).
    """
    if dims is None:
        raise ValueError("`dims` is required: the nesting dims, ascending, ending at the embeddings' full dim.")
    database, queries, dims, k, shortlist_dims, sizes, repeats = _check_retrieval_args(
        database, queries, dims, k, shortlist_dims, shortlist_sizes, repeats
    )
    if relevant_ids is not None:
        if database_labels is not None or query_labels is not None:
            raise ValueError("Give either `relevant_ids` or (`database_labels`, `query_labels`), not both.")
        if len(relevant_ids) != len(queries):
            raise ValueError(f"`relevant_ids` must hold one entry per query ({len(queries)}), got {len(relevant_ids)}.")
        relevance = id_relevance(relevant_ids)
    elif database_labels is None or query_labels is None:
        raise ValueError("Give the relevance: `database_labels` and `query_labels`, or `relevant_ids`.")
    else:
        relevance = label_relevance(
            _check_labels(query_labels, len(queries), "query_labels"),
            _check_labels(database_labels, len(database), "database_labels"),
        )
    full_dim = dims[-1]
    measure = {"k": k, "repeats": repeats, "timing": TIMING}
    exact = build_search_index(per_dim_embeddings(database, [full_dim], "database")[full_dim], "exact")
    exact_row, exact_ids = evaluate_faiss_index(exact, queries, relevance, method="exact", **measure)
    index = MatryoshkaIndex(database, shortlist_dim=sorted({*shortlist_dims, dims[0]}), show_progress=False)
    rows = sweep_index(
        index, queries, relevance, shortlist_dims=shortlist_dims, shortlist_sizes=sizes, exact_ids=exact_ids,
        show_progress=False, **measure,
    )
    rows.append(evaluate_funnel(index, queries, relevance, dims, exact_ids=exact_ids, **measure))
    report = [_retrieval_row(exact_row, exact_row["qps"], k)]
    return report + [_retrieval_row(row, exact_row["qps"], k) for row in rows]


def _retrieval_row(row: dict, exact_qps: float, k: int) -> dict:
    out = {
        "method": row["method"],
        "shortlist_dim": row.get("shortlist_dim"),
        "shortlist_size": row.get("shortlist_size"),
        "qps": row["qps"],
        "speedup": row["qps"] / exact_qps,
        "recall_vs_exact": row.get(f"nn_recall@{k}", 1.0),  # the exact row is its own ground truth
        "precision_at_k": row[f"precision@{k}"],
        "recall_at_k": row[f"recall@{k}"],
    }
    if row["method"] == "funnel":
        out.update(funnel_dims=row["funnel_dims"], funnel_sizes=row["funnel_sizes"])
    return out


def deployment_report(
    classifier_model, val_dataset, test_dataset, database_dataset, collate_fn, *, batch_size: int = 256,
    output_dir=None, max_queries: int | None = None,
) -> dict:
    """Both reports for a Matryoshka classifier with nested heads, each dataset encoded once.

    The cascade is fit on `val_dataset` and scored on `test_dataset`; retrieval searches `database_dataset`
    with the `test_dataset` embeddings as queries (the first `max_queries` of them when given: the timed
    sweep runs every setting a few times over all queries, which dominates the cost on a CPU). Datasets need
    a `label` column; `collate_fn` turns rows into model inputs (e.g. `ImageCollator`).

    Returns `{"cascade": adaptive_classification_report(...), "retrieval": adaptive_retrieval_report(...)}`
    (defaults of both). With `output_dir`, also writes there `deployment.json` and `deployment.png` (cascade
    accuracy vs mean dims next to every head's accuracy; retrieval QPS vs recall of the exact top k),
    each atomically.
    """
    if max_queries is not None:
        check_positive_int(max_queries, "max_queries")
    dims = list(getattr(classifier_model.config, "matryoshka_dims", None) or [])
    if len(dims) < 2:
        raise ValueError(
            f"`classifier_model` must have nested heads at two or more dims, got matryoshka_dims={dims!r}."
        )
    splits = {"validation": val_dataset, "test": test_dataset, "database": database_dataset}
    labels, encoded = {}, {}
    for name, dataset in splits.items():
        if LABEL_COLUMN not in getattr(dataset, "column_names", ()):
            raise ValueError(f"The {name} dataset needs a {LABEL_COLUMN!r} column; it has {dataset.column_names}.")
        labels[name] = np.asarray(dataset[LABEL_COLUMN])
        encoded[name] = encode_dataset(classifier_model, dataset, collate_fn, batch_size, f"Encoding {name}")
    if encoded["test"].matryoshka_logits is None:
        raise ValueError("`classifier_model` returned no `matryoshka_logits`; it needs nested classification heads.")
    report = {
        "cascade": adaptive_classification_report(
            encoded["validation"].matryoshka_logits, labels["validation"],
            encoded["test"].matryoshka_logits, labels["test"], dims,
        ),
        "retrieval": adaptive_retrieval_report(
            encoded["database"].embeddings, encoded["test"].embeddings[:max_queries], labels["database"],
            labels["test"][:max_queries], dims,
        ),
    }
    if output_dir is not None:
        output_dir = Path(output_dir)
        save_results(report, output_dir / "deployment.json")
        plot_deployment(report, output_dir / "deployment.png")
    return report


def describe_search(row: dict) -> str:
    if row["method"] == "exact":
        return "exact search, full dim, every item"
    if row["method"] == "funnel":
        stages = " -> ".join(f"{dim}d keep {size}" for dim, size in zip(row["funnel_dims"], row["funnel_sizes"]))
        return f"funnel: {stages}"
    return f"shortlist {row['shortlist_size']} at {row['shortlist_dim']}d, re-rank at full dim"


def plot_deployment(report: dict, path) -> None:
    """A PNG at `path`: cascade accuracy vs mean dims with every head's accuracy (when the report has a cascade);
    retrieval QPS vs recall of the exact top k, the exact search marked."""
    cascade, retrieval = report.get("cascade"), report["retrieval"]
    if cascade is None:
        figure, right = pyplot().subplots(1, 1, figsize=(6.5, 4.5))
    else:
        figure, (left, right) = pyplot().subplots(1, 2, figsize=(12, 4.5))
        _draw_cascade(left, cascade)
    series = {"exact full-dim search": [(100 * retrieval[0]["recall_vs_exact"], retrieval[0]["qps"])]}
    for row in retrieval[1:]:
        label = "funnel" if row["method"] == "funnel" else f"shortlist at {row['shortlist_dim']}d, re-rank at full"
        series.setdefault(label, []).append((100 * row["recall_vs_exact"], row["qps"]))
    draw_qps_vs_metric(right, series, "recall of the exact top k (%)", "retrieval: speed vs recall")
    figure.tight_layout()
    save_figure(figure, path)


def _draw_cascade(left, cascade: dict) -> None:
    heads = {f"heads_dim{dim}_accuracy": 100 * value for dim, value in cascade["accuracy_at_dim"].items()}
    draw_metric_vs_dim(left, {"each head alone": heads}, "accuracy", "classification: cascade vs single heads")
    left.scatter([cascade["cascade_expected_dim"]], [100 * cascade["cascade_accuracy"]], marker="*", s=250, c="tab:red",
                 zorder=3, label=f"cascade ({cascade['cascade_expected_dim']:.1f} dims on average)")
    left.set_ylabel("test accuracy (%)")
    left.set_xlabel("dims used (log2)")
    left.legend()


def fastest_adaptive_setting(retrieval: list[dict], min_recall: float = 0.99, *, equal_quality: float | None = None
                             ) -> dict | None:
    """The fastest adaptive / funnel row of `adaptive_retrieval_report` (None if none qualifies) that finds at least
    `min_recall` of the exact top k or, with `equal_quality`, whose task recall@k is within `equal_quality` (e.g.
    0.005: half a point) of the exact search's."""
    if equal_quality is None:
        found = [row for row in retrieval[1:] if row["recall_vs_exact"] >= min_recall]
    else:
        found = [row for row in retrieval[1:] if row["recall_at_k"] >= retrieval[0]["recall_at_k"] - equal_quality]
    return max(found, key=lambda row: row["qps"], default=None)


def format_deployment_report(report: dict) -> str:
    """The report as markdown tables (the cascade when the report has one, then retrieval), each under a one-line
    summary."""
    lines = _cascade_lines(report["cascade"]) + [""] if "cascade" in report else []
    return "\n".join(lines + _retrieval_lines(report["retrieval"]))


def _cascade_lines(cascade: dict) -> list[str]:
    full_dim = cascade["full_dim"]
    lines = [
        f"Classification: cascade {100 * cascade['cascade_accuracy']:.1f}% at "
        f"{cascade['cascade_expected_dim']:.1f} dims on average vs full head {100 * cascade['full_accuracy']:.1f}% "
        f"at {full_dim} (thresholds fit on validation to keep {100 * cascade['target_accuracy']:.1f}%).",
        "",
        "| classifier | test accuracy | dims used | share of inputs stopping here |",
        "|---|---|---|---|",
        f"| cascade: first head confident enough | {100 * cascade['cascade_accuracy']:.2f}% | "
        f"{cascade['cascade_expected_dim']:.1f} on average | - |",
    ]
    for dim, accuracy in cascade["accuracy_at_dim"].items():
        name = f"full head alone ({dim}d)" if dim == full_dim else f"{dim}d head alone"
        lines.append(f"| {name} | {100 * accuracy:.2f}% | {dim} | {100 * cascade['stop_fraction'][dim]:.1f}% |")
    return lines


def _retrieval_lines(retrieval: list[dict]) -> list[str]:
    exact = retrieval[0]
    best = fastest_adaptive_setting(retrieval)
    if best is None:
        summary = "no adaptive setting finds 99% of the exact top k"
    else:
        summary = (
            f"the fastest setting finding >= 99% of the exact top k ({describe_search(best)}) runs at "
            f"{best['speedup']:.1f}x the exact search's {exact['qps']:,.0f} queries/s"
        )
        if best["speedup"] < 1:
            summary += " (slower: exact search over a database this small is already cheap)"
    lines = [
        f"Retrieval: exact full-dim search vs adaptive search over the same vectors; {summary}.",
        "",
        "| search | recall of exact top k | recall@k | precision@k | queries/s | speed-up |",
        "|---|---|---|---|---|---|",
    ]
    for row in retrieval:
        lines.append(
            f"| {describe_search(row)} | {100 * row['recall_vs_exact']:.1f}% | {100 * row['recall_at_k']:.2f}% | "
            f"{100 * row['precision_at_k']:.1f}% | {row['qps']:,.0f} | {row['speedup']:.1f}x |"
        )
    return lines
