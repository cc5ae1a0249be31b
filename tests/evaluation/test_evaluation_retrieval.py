"""The retrieval evaluator: per-dim metrics from one pass equal a dense brute-force ranking scored by
the naive metric definitions; explicit relevance; approximate search; bad input."""

import math

import datasets
import numpy as np
import pytest
import torch

from hf_mrl import MatryoshkaConfig, MatryoshkaModel
from hf_mrl.evaluation import MatryoshkaRetrievalEvaluator, retrieval_metrics

from ..tiny import tiny_vit_config


def naive_scores(ranked, relevant, k):
    """mrl_map, ir_map, precision, recall, ndcg at k and reciprocal rank for one query, by definition."""
    found, precision_sum, dcg, reciprocal = 0, 0.0, 0.0, 0.0
    for rank, doc in enumerate(ranked[:k], start=1):
        if doc in relevant:
            found += 1
            precision_sum += found / rank
            dcg += 1 / math.log2(rank + 1)
            reciprocal = reciprocal or 1 / rank
    ideal = sum(1 / math.log2(rank + 1) for rank in range(1, min(k, len(relevant)) + 1))
    return {
        "mrl_map": precision_sum / k,
        "ir_map": precision_sum / min(k, len(relevant)) if relevant else 0.0,
        "precision": found / k,
        "recall": found / len(relevant) if relevant else 0.0,
        "ndcg": dcg / ideal if ideal else 0.0,
        "mrr": reciprocal,
    }


def brute_force(queries, corpus, relevant_sets, k, exclude_self):
    scores = queries @ corpus.T
    if exclude_self:
        np.fill_diagonal(scores, -np.inf)
    ranked = np.argsort(-scores, axis=1, kind="stable")[:, :k].tolist()
    per_query = [naive_scores(row, relevant, k) for row, relevant in zip(ranked, relevant_sets, strict=True)]
    return {metric: np.mean([scores[metric] for scores in per_query]) for metric in per_query[0]}


def image_rows(num_rows, seed, num_classes=4):
    rng = np.random.default_rng(seed)
    return datasets.Dataset.from_dict(
        {
            "pixel_values": rng.normal(size=(num_rows, 1, 28, 28)).astype(np.float32),
            "label": rng.integers(0, num_classes, size=num_rows),
        }
    )


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return MatryoshkaModel(MatryoshkaConfig(backbone_config=tiny_vit_config(), matryoshka_dims=[8, 16, 32])).eval()


def pixels(dataset):
    return torch.tensor(np.array(dataset["pixel_values"]), dtype=torch.float32)


def test_label_relevance_queries_as_corpus_matches_brute_force(model):
    data = image_rows(40, 0)
    evaluator = MatryoshkaRetrievalEvaluator(data, dims=[8, 20, 32], ks=(5, 10), name="toy", batch_size=16)
    results = evaluator(model)
    labels = np.array(data["label"])
    relevant_sets = [{j for j in range(40) if labels[j] == labels[i] and j != i} for i in range(40)]
    for dim in (8, 20, 32):
        embedded = model.encode(pixel_values=pixels(data), dim=dim)
        for k in (5, 10):
            expected = brute_force(embedded, embedded, relevant_sets, k, exclude_self=True)
            for metric in ("mrl_map", "ir_map", "precision", "recall", "ndcg"):
                assert results[f"toy_dim{dim}_{metric}@{k}"] == pytest.approx(expected[metric]), (dim, k, metric)
        expected = brute_force(embedded, embedded, relevant_sets, 10, exclude_self=True)
        assert results[f"toy_dim{dim}_mrr@10"] == pytest.approx(expected["mrr"])
    assert len(results) == 3 * (2 * 5 + 1)
    assert evaluator.primary_metric == "toy_dim32_ndcg@10"


def test_explicit_relevance_with_a_separate_corpus(model):
    queries, corpus = image_rows(12, 1), image_rows(30, 2)
    rng = np.random.default_rng(3)
    relevant = [sorted(rng.choice(30, size=rng.integers(1, 6), replace=False).tolist()) for _ in range(12)]
    queries = queries.add_column("relevant", relevant)
    by_column = MatryoshkaRetrievalEvaluator(queries, corpus, relevant_ids="relevant", dims=[8, 32], ks=(3,), name="x")
    results = by_column(model)
    query_embeddings = model(pixel_values=pixels(queries)).embeddings.detach().numpy()
    corpus_embeddings = model(pixel_values=pixels(corpus)).embeddings.detach().numpy()
    for dim in (8, 32):
        q = query_embeddings[:, :dim] / np.linalg.norm(query_embeddings[:, :dim], axis=1, keepdims=True)
        c = corpus_embeddings[:, :dim] / np.linalg.norm(corpus_embeddings[:, :dim], axis=1, keepdims=True)
        expected = brute_force(q, c, [set(ids) for ids in relevant], 3, exclude_self=False)
        assert results[f"x_dim{dim}_ndcg@3"] == pytest.approx(expected["ndcg"])
        assert results[f"x_dim{dim}_ir_map@3"] == pytest.approx(expected["ir_map"])
    as_dict = MatryoshkaRetrievalEvaluator(
        queries, corpus, relevant_ids=dict(enumerate(relevant)), dims=[8, 32], ks=(3,), name="x"
    )
    assert as_dict.compute_metrics(query_embeddings, corpus_embeddings) == pytest.approx(results)


@pytest.mark.parametrize("search", ["hnsw", "ivf"])
def test_approximate_search_is_close_to_exact(search):
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(5, 32))
    labels = rng.integers(0, 5, size=800)
    embeddings = centers[labels] + 0.8 * rng.normal(size=(800, 32))
    exact = retrieval_metrics(embeddings, query_labels=labels, dims=[16, 32], ks=(10,))
    approximate = retrieval_metrics(
        embeddings, query_labels=labels, dims=[16, 32], ks=(10,), search=search, search_params={"nprobe": 4}
    )
    assert set(exact) == set(approximate)
    for key, value in exact.items():
        assert approximate[key] == pytest.approx(value, abs=0.05), key


def test_per_dim_mapping_input_and_default_dims():
    rng = np.random.default_rng(1)
    embeddings = rng.normal(size=(30, 16)).astype(np.float32)
    labels = rng.integers(0, 3, size=30)
    full = retrieval_metrics(embeddings, query_labels=labels, ks=(5,))
    assert {key.split("_")[1] for key in full} == {"dim8", "dim16"}  # default: powers of two and the full dim
    mapping = {8: embeddings[:, :8] * 3.0, 16: embeddings}  # scale does not matter: rows are renormalised
    assert retrieval_metrics(mapping, query_labels=labels, ks=(5,)) == pytest.approx(full)


def test_bad_arguments(model):
    data = image_rows(10, 0)
    with pytest.raises(ValueError, match=r"`dims` must be an integer from 1 to 32.*got 33"):
        MatryoshkaRetrievalEvaluator(data, dims=[8, 33], ks=(5,))(model)
    with pytest.raises(ValueError, match="`ks` must be a non-empty list of positive integers"):
        MatryoshkaRetrievalEvaluator(data, ks=(0,))
    with pytest.raises(ValueError, match="`search` must be one of"):
        MatryoshkaRetrievalEvaluator(data, search="flat")
    with pytest.raises(ValueError, match="`primary_metric_name` must be one of"):
        MatryoshkaRetrievalEvaluator(data, primary_metric_name="map")
    with pytest.raises(ValueError, match="no label column 'category'"):
        MatryoshkaRetrievalEvaluator(data, label_column="category")
    with pytest.raises(ValueError, match="`relevant_ids` column 'gold'"):
        MatryoshkaRetrievalEvaluator(data, relevant_ids="gold")
    with pytest.raises(ValueError, match="`relevant_ids` keys must be query rows"):
        MatryoshkaRetrievalEvaluator(data, relevant_ids={10: [1]})
    with pytest.raises(ValueError, match="`name` must be a non-empty string"):
        MatryoshkaRetrievalEvaluator(data, name="")
    embeddings = np.random.default_rng(0).normal(size=(10, 8))
    with pytest.raises(ValueError, match="`ks` holds 10, more than the 9 items of the leave-one-out corpus"):
        MatryoshkaRetrievalEvaluator(data)
    with pytest.raises(ValueError, match="exactly one of `query_labels` or `relevant_ids`"):
        retrieval_metrics(embeddings)
    with pytest.raises(ValueError, match=r"`query_labels` must have shape \(10,\)"):
        retrieval_metrics(embeddings, query_labels=[0, 1])
    with pytest.raises(ValueError, match="beyond the corpus of 10 items"):
        retrieval_metrics(embeddings, relevant_ids=[[11]] * 10)
    with pytest.raises(ValueError, match="unknown keys"):
        retrieval_metrics(embeddings, query_labels=np.zeros(10), search="hnsw", search_params={"efSearch": 8})
    with pytest.raises(ValueError, match="Pass `corpus_embeddings` exactly when"):
        MatryoshkaRetrievalEvaluator(data, ks=(5,)).compute_metrics(embeddings, embeddings)
