"""Few-shot classification at every Matryoshka granularity, from one encoding pass.

An episode draws `n` labelled examples ("shots") of every class from a support pool (e.g. the training
split) and classifies every query row of those classes with what the shots alone give, at each dim k
(first k features, renormalised):
- "ncm": nearest class mean, cosine to the renormalised mean of each class's shots;
- "logistic": a multinomial logistic regression fit on the shots.
Accuracies are averaged over `num_episodes` seeded episodes per n.

`novel_classes` names classes the model never saw in training (hold them out with `hf_mrl.data.split_classes`):
their queries are then also scored apart (`..._novel`) from the other classes' (`..._base`), as in
few-shot learning of novel, rare classes.

Keys: `{name}_dim{k}_{n}shot_{method}` (mean over episodes), `..._std` (standard deviation over episodes),
and `..._novel` / `..._base` when `novel_classes` is given.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from ..modeling.checks import check_positive_int, check_positive_ints
from ..modeling.nesting import resolve_dims
from .base import MatryoshkaEvaluator, check_not_empty, encode_dataset, per_dim_embeddings
from .classification import _num_rows

__all__ = ["FEW_SHOT_METHODS", "MatryoshkaFewShotEvaluator", "few_shot_metrics", "sample_episodes"]

FEW_SHOT_METHODS = ("ncm", "logistic")
# Inverse regularisation of the logistic regression: the features are unit vectors, so their logits stay
# small unless the weights can grow (sklearn's default of 1.0 underfits a handful of shots).
LOGISTIC_C = 10.0


def _check_methods(methods) -> list[str]:
    if isinstance(methods, str) or not methods or any(method not in FEW_SHOT_METHODS for method in methods):
        raise ValueError(f"`methods` must be a non-empty list drawn from {list(FEW_SHOT_METHODS)}, got {methods!r}.")
    return list(dict.fromkeys(methods))


def _check_classes(classes, known: np.ndarray, argument: str) -> list:
    if isinstance(classes, (str, bytes)) or not isinstance(classes, (Sequence, np.ndarray)) or len(classes) == 0:
        raise ValueError(f"`{argument}` must be a non-empty list of labels, got {classes!r}.")
    present = set(known.tolist())
    unknown = [label for label in classes if label not in present]
    if unknown:
        raise ValueError(f"`{argument}` holds labels {unknown} absent from the support pool (it has {sorted(present)}).")
    return list(dict.fromkeys(classes))


def sample_episodes(
    support_labels, classes: Sequence, shots: Sequence[int], num_episodes: int, seed: int = 0
) -> dict[int, list[np.ndarray]]:
    """{n: [episode rows]}: for each n in `shots` and each episode, `n` distinct support rows of every class in
    `classes` (class by class, in `classes` order), drawn with a generator seeded by (seed, n, episode)."""
    support_labels = np.asarray(support_labels)
    shots = check_positive_ints(shots, "shots")
    check_positive_int(num_episodes, "num_episodes")
    classes = _check_classes(classes, support_labels, "classes")
    rows_of = {label: np.flatnonzero(support_labels == label) for label in classes}
    scarce = {label: len(rows) for label, rows in rows_of.items() if len(rows) < shots[-1]}
    if scarce:
        raise ValueError(f"`shots` holds {shots[-1]}, more than the support rows of classes {scarce} (label: rows).")
    episodes = {}
    for n in shots:
        episodes[n] = []
        for episode in range(num_episodes):
            rng = np.random.default_rng([seed, n, episode])
            episodes[n].append(np.concatenate([rng.choice(rows_of[label], size=n, replace=False) for label in classes]))
    return episodes


def _predict(method: str, support: np.ndarray, support_codes: np.ndarray, queries: np.ndarray, num_classes: int):
    if method == "ncm":
        means = np.stack([support[support_codes == code].mean(axis=0) for code in range(num_classes)])
        means /= np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)
        return (queries @ means.T).argmax(axis=1)
    from sklearn.linear_model import LogisticRegression

    with warnings.catch_warnings():
        # One shot per class is a few rows per class by design, not a regression target.
        warnings.filterwarnings("ignore", message="The number of unique classes is greater than 50%")
        classifier = LogisticRegression(C=LOGISTIC_C, max_iter=1000).fit(support, support_codes)
    return classifier.predict(queries)


def _episode_scores(
    support_views, support_codes, query_views, query_codes, episodes, methods, novel_mask, dims, num_classes, name
) -> dict[str, float]:
    results: dict[str, float] = {}
    for dim in dims:
        for n, episode_rows in episodes.items():
            for method in methods:
                overall, novel, base = [], [], []
                for rows in episode_rows:
                    correct = _predict(method, support_views[dim][rows], support_codes[rows], query_views[dim], num_classes)
                    correct = correct == query_codes
                    overall.append(correct.mean())
                    if novel_mask is not None:
                        novel.append(correct[novel_mask].mean() if novel_mask.any() else 0.0)
                        base.append(correct[~novel_mask].mean() if (~novel_mask).any() else 0.0)
                key = f"{name}_dim{dim}_{n}shot_{method}"
                results[key] = float(np.mean(overall))
                results[f"{key}_std"] = float(np.std(overall))
                if novel_mask is not None:
                    results[f"{key}_novel"] = float(np.mean(novel))
                    results[f"{key}_base"] = float(np.mean(base))
    return results


def _prepare(support_labels, query_labels, classes, novel_classes, num_support, num_queries):
    support_labels, query_labels = np.asarray(support_labels), np.asarray(query_labels)
    if support_labels.shape != (num_support,):
        raise ValueError(f"`support_labels` must have shape ({num_support},) like the support embeddings, got {support_labels.shape}.")
    if query_labels.shape != (num_queries,):
        raise ValueError(f"`query_labels` must have shape ({num_queries},) like the query embeddings, got {query_labels.shape}.")
    classes = _check_classes(
        sorted(set(query_labels.tolist()) & set(support_labels.tolist())) if classes is None else classes,
        support_labels, "classes",
    )
    if novel_classes is not None:
        novel_classes = _check_classes(novel_classes, support_labels, "novel_classes")
        outside = [label for label in novel_classes if label not in classes]
        if outside:
            raise ValueError(f"`novel_classes` holds {outside}, not among the episode classes {classes}.")
    return support_labels, query_labels, classes, novel_classes


def few_shot_metrics(
    support_embeddings,
    support_labels,
    query_embeddings,
    query_labels,
    dims: Sequence[int] | None = None,
    shots: Sequence[int] = (1, 5, 10),
    num_episodes: int = 5,
    methods: Sequence[str] = FEW_SHOT_METHODS,
    classes: Sequence | None = None,
    novel_classes: Sequence | None = None,
    seed: int = 0,
    name: str = "few_shot",
) -> dict[str, float]:
    """Per-dim n-shot accuracy of precomputed embeddings (see the module docstring for the keys).

    support_embeddings / query_embeddings: (n, d) full embeddings or {dim: (n, dim)}.
    support_labels / query_labels: their classes.
    classes: the classes of every episode (default: those present in both); queries of other classes are
        left out. novel_classes: a subset of them scored apart (`_novel` / `_base`).
    """
    support_labels, query_labels, classes, novel_classes = _prepare(
        support_labels, query_labels, classes, novel_classes, _num_rows(support_embeddings), _num_rows(query_embeddings)
    )
    methods = _check_methods(methods)
    episodes = sample_episodes(support_labels, classes, shots, num_episodes, seed)
    dims = resolve_dims(support_embeddings, dims)
    return _score(support_embeddings, support_labels, query_embeddings, query_labels, episodes, classes,
                  novel_classes, methods, dims, name)


def _score(support_embeddings, support_labels, query_embeddings, query_labels, episodes, classes, novel_classes,
           methods, dims, name) -> dict[str, float]:
    """Codes 0..C-1 in `classes` order, the queries of those classes, then every episode scored."""
    code_of = {label: code for code, label in enumerate(classes)}
    keep = np.isin(query_labels, classes)
    if not keep.any():
        raise ValueError(f"No query row belongs to the episode classes {classes}.")
    query_codes = np.array([code_of[label] for label in query_labels[keep]])
    support_codes = np.array([code_of.get(label, -1) for label in support_labels])
    novel_mask = None if novel_classes is None else np.isin(query_labels[keep], novel_classes)
    query_views = {dim: view[keep] for dim, view in per_dim_embeddings(query_embeddings, dims).items()}
    support_views = per_dim_embeddings(support_embeddings, dims)
    return _episode_scores(support_views, support_codes, query_views, query_codes, episodes, methods, novel_mask,
                           dims, len(classes), name)


class MatryoshkaFewShotEvaluator(MatryoshkaEvaluator):
    """n-shot nearest-class-mean and logistic-regression accuracy at every dim, over seeded episodes.

    Args:
        support_dataset (`datasets.Dataset`): the pool shots are drawn from (e.g. the training split). Only the
            rows some episode draws are encoded (`support_rows`).
        query_dataset (`datasets.Dataset`): the rows classified (e.g. the test split).
        collate_fn (callable, *optional*): list of rows -> dict of tensors; None stacks the model-input columns.
        label_column (`str`, defaults to "label").
        shots (`list[int]`, defaults to (1, 5, 10)), num_episodes (`int`, defaults to 5), seed (`int`).
        methods (`list[str]`, defaults to ("ncm", "logistic")).
        classes (`list`, *optional*): the classes of every episode (default: all in both datasets).
        novel_classes (`list`, *optional*): classes held out of the model's training, scored apart.
        dims (`list[int]`, *optional*): dims to score (defaults to the model's nesting dims).
        name (`str`, defaults to "few_shot"): the key prefix.

    `primary_metric` is the largest n's accuracy with the first method at the largest dim.
    """

    def __init__(
        self,
        support_dataset,
        query_dataset,
        collate_fn: Callable[[list[dict]], dict] | None = None,
        label_column: str = "label",
        shots: Sequence[int] = (1, 5, 10),
        num_episodes: int = 5,
        methods: Sequence[str] = FEW_SHOT_METHODS,
        classes: Sequence | None = None,
        novel_classes: Sequence | None = None,
        dims: Sequence[int] | None = None,
        seed: int = 0,
        name: str = "few_shot",
        batch_size: int = 64,
    ):
        super().__init__(name=name, dims=dims, batch_size=batch_size)
        check_not_empty({"support_dataset": support_dataset, "query_dataset": query_dataset})
        for argument, data in (("support_dataset", support_dataset), ("query_dataset", query_dataset)):
            if label_column not in getattr(data, "column_names", ()):
                raise ValueError(f"`{argument}` has no label column {label_column!r}; its columns: {getattr(data, 'column_names', None)}.")
        self.methods = _check_methods(methods)
        support_labels, self.query_labels, self.classes, self.novel_classes = _prepare(
            support_dataset[label_column], query_dataset[label_column], classes, novel_classes,
            len(support_dataset), len(query_dataset),
        )
        episodes = sample_episodes(support_labels, self.classes, shots, num_episodes, seed)
        self.shots = sorted(episodes)
        # Encode only the drawn rows: episodes are re-indexed into `support_rows`.
        self.support_rows = np.unique(np.concatenate([rows for runs in episodes.values() for rows in runs]))
        position = {row: index for index, row in enumerate(self.support_rows.tolist())}
        self.episodes = {n: [np.array([position[row] for row in rows]) for rows in runs] for n, runs in episodes.items()}
        self.support_labels = support_labels[self.support_rows]
        self.support_dataset, self.query_dataset = support_dataset, query_dataset
        self.collate_fn = collate_fn
        self.primary_metric_name = f"{self.shots[-1]}shot_{self.methods[0]}"

    def encode(self, model) -> dict:
        support = self.support_dataset.select(self.support_rows)
        return {
            "support_embeddings": encode_dataset(model, support, self.collate_fn, self.batch_size, f"Encoding {self.name} support").embeddings,
            "query_embeddings": encode_dataset(
                model, self.query_dataset, self.collate_fn, self.batch_size, f"Encoding {self.name} queries"
            ).embeddings,
        }

    def compute_metrics(self, support_embeddings, query_embeddings, dims: Sequence[int] | None = None) -> dict[str, float]:
        """Scores precomputed embeddings: `query_embeddings` of every query row, `support_embeddings` of the rows
        `support_rows` of the support dataset (or of all its rows); (n, d) arrays or {dim: array}."""
        num_support = _num_rows(support_embeddings)
        if num_support == len(self.support_dataset) and num_support != len(self.support_rows):
            support_embeddings = (
                {dim: np.asarray(array)[self.support_rows] for dim, array in support_embeddings.items()}
                if isinstance(support_embeddings, Mapping) else np.asarray(support_embeddings)[self.support_rows]
            )
        elif num_support != len(self.support_rows):
            raise ValueError(
                f"`support_embeddings` has {num_support} rows; give the {len(self.support_rows)} `support_rows` or "
                f"all {len(self.support_dataset)} rows of the support dataset."
            )
        if _num_rows(query_embeddings) != len(self.query_labels):
            raise ValueError(f"`query_embeddings` has {_num_rows(query_embeddings)} rows for {len(self.query_labels)} queries.")
        dims = resolve_dims(support_embeddings, dims or self.dims)
        results = _score(support_embeddings, self.support_labels, query_embeddings, self.query_labels, self.episodes,
                         self.classes, self.novel_classes, self.methods, dims, self.name)
        return self.remember(results, self.primary_metric_name)
