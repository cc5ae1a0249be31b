"""Few-shot evaluation: episodes, nearest-class-mean and logistic regression against a naive per-episode
reference, novel / base scoring, and the evaluator on a tiny real model (only the drawn support rows encoded)."""

import math

import datasets
import numpy as np
import pytest
import torch

from hf_mrl import MatryoshkaConfig, MatryoshkaForImageClassification
from hf_mrl.evaluation import MatryoshkaFewShotEvaluator, encode_dataset, few_shot_metrics, sample_episodes

from ..tiny import tiny_vit_config

DIMS = [8, 16, 32]


def clustered(num_per_class, num_classes=4, signal_from=8, seed=0):
    """Classes differ only in features `signal_from`..31 (the same centers for every seed); the first features
    are noise shared by all."""
    labels = np.repeat(np.arange(num_classes), num_per_class)
    centers = np.zeros((num_classes, 32))
    centers[:, signal_from:] = 4 * np.random.default_rng(100).normal(size=(num_classes, 32 - signal_from))
    return centers[labels] + np.random.default_rng(seed).normal(size=(len(labels), 32)), labels


def naive_ncm_accuracy(support, support_labels, queries, query_labels, dim):
    def unit(rows):
        return rows[:, :dim] / np.linalg.norm(rows[:, :dim], axis=1, keepdims=True)

    support, queries = unit(support), unit(queries)
    classes = sorted(set(support_labels.tolist()))
    correct = 0
    for query, label in zip(queries, query_labels):
        best, best_score = None, -np.inf
        for candidate in classes:
            mean = support[support_labels == candidate].mean(axis=0)
            score = query @ mean / np.linalg.norm(mean)
            if score > best_score:
                best, best_score = candidate, score
        correct += best == label
    return correct / len(query_labels)


def test_episodes_draw_distinct_shots_of_every_class_reproducibly():
    _, labels = clustered(12)
    episodes = sample_episodes(labels, [0, 1, 2, 3], shots=[1, 5], num_episodes=3, seed=4)
    assert sorted(episodes) == [1, 5] and all(len(runs) == 3 for runs in episodes.values())
    for n, runs in episodes.items():
        for rows in runs:
            assert len(set(rows.tolist())) == 4 * n
            assert np.bincount(labels[rows], minlength=4).tolist() == [n] * 4
    assert not np.array_equal(episodes[5][0], episodes[5][1])
    again = sample_episodes(labels, [0, 1, 2, 3], shots=[1, 5], num_episodes=3, seed=4)
    assert all(np.array_equal(a, b) for a, b in zip(episodes[5], again[5]))


def test_ncm_matches_a_naive_reference_episode_by_episode():
    support, support_labels = clustered(10, seed=1)
    queries, query_labels = clustered(6, seed=2)
    queries[:, 8:] = queries[:, 8:] * 0.1 + 0.5 * np.random.default_rng(3).normal(size=(24, 24))  # some errors
    results = few_shot_metrics(support, support_labels, queries, query_labels, dims=DIMS, shots=[1, 3],
                               num_episodes=4, methods=["ncm"], seed=7, name="toy")
    episodes = sample_episodes(support_labels, [0, 1, 2, 3], [1, 3], 4, seed=7)
    for dim in DIMS:
        for n in (1, 3):
            accuracies = [
                naive_ncm_accuracy(support[rows], support_labels[rows], queries, query_labels, dim)
                for rows in episodes[n]
            ]
            assert results[f"toy_dim{dim}_{n}shot_ncm"] == pytest.approx(np.mean(accuracies))
            assert results[f"toy_dim{dim}_{n}shot_ncm_std"] == pytest.approx(np.std(accuracies))


def test_known_answers_per_dim_and_logistic_regression():
    support, support_labels = clustered(10, signal_from=8, seed=1)
    queries, query_labels = clustered(25, signal_from=8, seed=2)
    results = few_shot_metrics(support, support_labels, queries, query_labels, dims=DIMS, shots=[5], num_episodes=2)
    for method in ("ncm", "logistic"):
        assert results[f"few_shot_dim8_5shot_{method}"] < 0.45  # no class signal in the first 8 features: ~chance
        assert results[f"few_shot_dim32_5shot_{method}"] == 1.0  # well separated clusters
        assert results[f"few_shot_dim16_5shot_{method}"] > 0.9


def test_novel_and_base_classes_are_scored_apart():
    support, support_labels = clustered(10, seed=1)
    queries, query_labels = clustered(5, seed=2)
    queries[query_labels == 3] = np.random.default_rng(5).normal(size=(5, 32))  # novel class 3: unrecognisable
    results = few_shot_metrics(support, support_labels, queries, query_labels, dims=[32], shots=[5], num_episodes=3,
                               methods=["ncm"], novel_classes=[3])
    assert results["few_shot_dim32_5shot_ncm_base"] == 1.0
    novel = results["few_shot_dim32_5shot_ncm_novel"]
    assert novel < 0.6
    assert results["few_shot_dim32_5shot_ncm"] == pytest.approx((15 * 1.0 + 5 * novel) / 20)
    # Episodes over a subset of classes leave the other queries out.
    subset = few_shot_metrics(support, support_labels, queries, query_labels, dims=[32], shots=[5], num_episodes=1,
                              methods=["ncm"], classes=[0, 1])
    assert subset["few_shot_dim32_5shot_ncm"] == 1.0


@pytest.mark.parametrize(
    "change, message",
    [
        ({"shots": [20]}, r"`shots` holds 20, more than the support rows of classes"),
        ({"shots": [0]}, r"`shots` must be a non-empty list of positive integers"),
        ({"methods": ["svm"]}, r"`methods` must be a non-empty list drawn from \['ncm', 'logistic'\]"),
        ({"num_episodes": 0}, r"`num_episodes` must be a positive integer, got 0"),
        ({"novel_classes": [7]}, r"`novel_classes` holds labels \[7\] absent from the support pool"),
        ({"classes": [0, 1], "novel_classes": [2]}, r"`novel_classes` holds \[2\], not among the episode classes"),
        ({"query_labels": np.zeros(3)}, r"`query_labels` must have shape \(20,\)"),
        ({"dims": [64]}, r"`dims` must be an integer from 1 to 32"),
    ],
)
def test_bad_inputs_are_rejected(change, message):
    support, support_labels = clustered(10)
    queries, query_labels = clustered(5, seed=1)
    arguments = dict(support_embeddings=support, support_labels=support_labels, query_embeddings=queries,
                     query_labels=query_labels)
    arguments.update(change)
    with pytest.raises(ValueError, match=message):
        few_shot_metrics(**arguments)


def image_dataset(num_per_class, seed):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(3), num_per_class)
    return datasets.Dataset.from_dict(
        {"pixel_values": rng.normal(size=(len(labels), 1, 28, 28)).astype(np.float32), "label": labels}
    ).with_format("numpy")


def test_evaluator_encodes_only_the_drawn_support_rows_and_matches_the_function():
    torch.manual_seed(0)
    model = MatryoshkaForImageClassification(
        MatryoshkaConfig(backbone_config=tiny_vit_config(), matryoshka_dims=DIMS, num_labels=3)
    )
    support, queries = image_dataset(20, 0), image_dataset(4, 1)
    evaluator = MatryoshkaFewShotEvaluator(support, queries, shots=[1, 2], num_episodes=2, novel_classes=[2],
                                           name="toy", batch_size=8)
    assert len(evaluator.support_rows) <= 2 * 3 * (1 + 2) < len(support)
    calls = []
    hook = model.matryoshka.backbone.register_forward_hook(lambda *args: calls.append(1))
    results = evaluator(model)
    hook.remove()
    assert len(calls) == math.ceil(len(evaluator.support_rows) / 8) + math.ceil(12 / 8)

    expected = few_shot_metrics(
        encode_dataset(model, support).embeddings, support["label"], encode_dataset(model, queries).embeddings,
        queries["label"], dims=DIMS, shots=[1, 2], num_episodes=2, novel_classes=[2], name="toy",
    )
    assert results.keys() == expected.keys()
    for key, value in expected.items():
        assert results[key] == pytest.approx(value, abs=1e-6)
    assert evaluator.primary_metric == "toy_dim32_2shot_ncm"
    with pytest.raises(ValueError, match=r"`support_embeddings` has 5 rows; give the \d+ `support_rows` or all 60"):
        evaluator.compute_metrics(np.zeros((5, 32)), np.zeros((12, 32)))

