"""Per-class accuracy: frequency buckets, super-class errors and confusions against hand-computed answers, head /
1-NN predictions per dim, the evaluator on a tiny real model, and WordNet's hypernym super-classes."""

import datasets
import numpy as np
import pytest
import torch

from hf_mrl import MatryoshkaConfig, MatryoshkaForImageClassification
from hf_mrl.data import WORDNET_NOUN_CATEGORIES, wordnet_noun_super_classes
from hf_mrl.evaluation import (
    MatryoshkaPerClassEvaluator,
    encode_dataset,
    frequency_buckets,
    per_class_accuracy,
    per_class_metrics,
    per_dim_predictions,
    top_confusions,
)

from ..tiny import tiny_vit_config

DIMS = [8, 16, 32]


def test_frequency_buckets_by_thirds_and_by_bounds():
    counts = {0: 500, 1: 5, 2: 120, 3: 40, 4: 40, 5: 2, 6: 300}
    assert frequency_buckets(counts) == {"head": [0, 6, 2], "torso": [3, 4], "tail": [1, 5]}
    assert frequency_buckets(counts, (100, 20)) == {"head": [0, 2, 6], "torso": [3, 4], "tail": [1, 5]}
    with pytest.raises(ValueError, match=r"`frequency_bounds` must be \(many, few\) with integers many >= few >= 0"):
        frequency_buckets(counts, (20, 100))


def test_report_matches_hand_computed_answers():
    # Classes 0, 1 in super-class "a"; 2, 3 in "b". 8 test rows, 2 per class.
    labels = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    low = np.array([0, 1, 1, 0, 3, 3, 3, 3])  # 4 errors: 0->1, 1->0 (within a), 2->3, 2->3 (within b)
    high = np.array([0, 0, 1, 1, 2, 2, 3, 0])  # 1 error: 3->0 (across)
    train_labels = [0] * 50 + [1] * 20 + [2] * 20 + [3] * 2
    super_classes = {0: "a", 1: "a", 2: "b", 3: "b"}
    report = per_class_accuracy({8: low, 32: high}, labels, train_labels, super_classes,
                                class_names=["w", "x", "y", "z"], frequency_bounds=(30, 10))
    assert report["train_counts"] == {0: 50, 1: 20, 2: 20, 3: 2}
    assert report["buckets"] == {"head": [0], "torso": [1, 2], "tail": [3]}
    at8, at32 = report["per_dim"][8], report["per_dim"][32]
    assert at8["per_class"] == {0: 0.5, 1: 0.5, 2: 0.0, 3: 1.0}
    assert at8["accuracy"] == 0.5 and at8["balanced_accuracy"] == 0.5
    assert (at8["head_accuracy"], at8["torso_accuracy"], at8["tail_accuracy"]) == (0.5, 0.25, 1.0)
    assert at8["super_class_accuracy"] == 1.0 and at8["errors_within_super_class"] == 1.0
    # Uniform errors would stay within the true super-class 1 time in 3 (one of the 3 other classes).
    assert at8["errors_within_super_class_chance"] == pytest.approx(1 / 3)
    assert at8["confusions"][0] == {"true": 2, "predicted": 3, "count": 2, "share_of_errors": 0.5, "same_super_class": True}
    assert at32["accuracy"] == 7 / 8 and at32["tail_accuracy"] == 0.5
    assert at32["errors_within_super_class"] == 0.0 and at32["super_class_accuracy"] == 7 / 8
    assert at32["confusions"] == [
        {"true": 3, "predicted": 0, "count": 1, "share_of_errors": 1.0, "same_super_class": False}
    ]
    assert report["class_names"] == {0: "w", 1: "x", 2: "y", 3: "z"}

    flat = per_class_metrics(report, "toy")
    assert flat["toy_dim8_tail_acc"] == 1.0 and flat["toy_dim32_tail_acc"] == 0.5
    assert flat["toy_dim8_class2_acc"] == 0.0 and flat["toy_dim8_errors_within_super_class"] == 1.0
    assert all(isinstance(value, float) for value in flat.values())


def test_top_confusions_ranks_pairs_and_breaks_ties_by_label():
    labels = np.array([0, 0, 0, 1, 1, 2])
    predicted = np.array([1, 1, 2, 2, 0, 1])
    pairs = [(entry["true"], entry["predicted"], entry["count"]) for entry in top_confusions(predicted, labels, num=3)]
    assert pairs == [(0, 1, 2), (0, 2, 1), (1, 0, 1)]


def test_predictions_come_from_heads_at_nesting_dims_and_1nn_elsewhere():
    rng = np.random.default_rng(0)
    embeddings = rng.normal(size=(10, 32))
    reference, reference_labels = rng.normal(size=(15, 32)), rng.integers(0, 3, size=15)
    logits = rng.normal(size=(2, 10, 3))
    predictions, sources = per_dim_predictions(
        embeddings, [8, 12, 32], reference, reference_labels, matryoshka_logits=logits, nesting_dims=[8, 32]
    )
    assert sources == {8: "head", 12: "1nn", 32: "head"}
    np.testing.assert_array_equal(predictions[32], logits[1].argmax(-1))
    unit = lambda rows: rows[:, :12] / np.linalg.norm(rows[:, :12], axis=1, keepdims=True)  # noqa: E731
    np.testing.assert_array_equal(predictions[12], reference_labels[(unit(embeddings) @ unit(reference).T).argmax(1)])
    # Without a reference: leave-one-out within the rows.
    labels = rng.integers(0, 3, size=10)
    loo, _ = per_dim_predictions(embeddings, [12], labels=labels)
    scores = unit(embeddings) @ unit(embeddings).T
    np.fill_diagonal(scores, -np.inf)
    np.testing.assert_array_equal(loo[12], labels[scores.argmax(1)])


def test_evaluator_on_a_tiny_model_matches_the_functions():
    torch.manual_seed(0)
    model = MatryoshkaForImageClassification(
        MatryoshkaConfig(backbone_config=tiny_vit_config(), matryoshka_dims=DIMS, num_labels=3)
    )
    rng = np.random.default_rng(0)
    dataset = datasets.Dataset.from_dict(
        {"pixel_values": rng.normal(size=(18, 1, 28, 28)).astype(np.float32), "label": np.arange(18) % 3},
        features=datasets.Features({
            "pixel_values": datasets.Array3D((1, 28, 28), "float32"),
            "label": datasets.ClassLabel(names=["a", "b", "c"]),
        }),
    ).with_format("numpy")
    train_labels = [0] * 30 + [1] * 10 + [2] * 3
    evaluator = MatryoshkaPerClassEvaluator(dataset, train_labels=train_labels, super_classes={0: "x", 1: "x", 2: "y"},
                                            dims=[8, 12, 32], name="toy", batch_size=8)
    results = evaluator(model)
    report = evaluator.report(model)
    assert report["class_names"] == {0: "a", 1: "b", 2: "c"}
    assert report["buckets"] == {"head": [0], "torso": [1], "tail": [2]}
    assert {dim: entry["source"] for dim, entry in report["per_dim"].items()} == {8: "head", 12: "1nn", 32: "head"}
    encoded = encode_dataset(model, dataset)
    predictions, _ = per_dim_predictions(encoded.embeddings, [8, 12, 32], matryoshka_logits=encoded.matryoshka_logits,
                                         nesting_dims=DIMS, labels=dataset["label"])
    expected = per_class_metrics(per_class_accuracy(predictions, dataset["label"], train_labels,
                                                    {0: "x", 1: "x", 2: "y"}), "toy")
    assert results == pytest.approx(expected)
    assert evaluator.primary_metric == "toy_dim32_tail_acc"


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"super_classes": {0: "x"}}, r"`super_classes` has no super-class for classes \[1, 2\]"),
        ({"train_labels": [0], "frequency_bounds": (1, 5)}, r"`frequency_bounds` must be \(many, few\)"),
        ({"num_confusions": -1}, r"`num_confusions` must be an integer >= 0, got -1"),
        ({"label_column": "class"}, r"`dataset` has no label column 'class'"),
    ],
)
def test_bad_evaluator_arguments_are_rejected(arguments, message):
    dataset = datasets.Dataset.from_dict({"pixel_values": np.zeros((3, 1, 28, 28), np.float32), "label": [0, 1, 2]})
    with pytest.raises(ValueError, match=message):
        MatryoshkaPerClassEvaluator(dataset, **arguments)


def test_report_rejects_mismatched_predictions():
    with pytest.raises(ValueError, match=r"`predictions\[8\]` has shape \(2,\); `labels` has \(3,\)"):
        per_class_accuracy({8: np.zeros(2)}, np.zeros(3))


@pytest.mark.slow
def test_wordnet_super_classes_group_categories_by_hypernym():
    super_classes = wordnet_noun_super_classes()
    assert sorted(super_classes) == list(range(len(WORDNET_NOUN_CATEGORIES)))
    by_name = {WORDNET_NOUN_CATEGORIES[label]: name for label, name in super_classes.items()}
    assert by_name["noun.animal"] == by_name["noun.plant"] == by_name["noun.artifact"] == "object"
    assert by_name["noun.food"] == by_name["noun.substance"] == "matter"
    assert by_name["noun.feeling"] != by_name["noun.animal"]
    top = wordnet_noun_super_classes(depth=1)
    assert set(top.values()) <= {"physical entity", "abstraction", "thing"}
    assert top[WORDNET_NOUN_CATEGORIES.index("noun.animal")] == "physical entity"
    with pytest.raises(ValueError, match=r"`depth` must be a positive integer"):
        wordnet_noun_super_classes(depth=0)
