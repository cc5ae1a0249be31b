"""The deployment report: cascade and adaptive retrieval against naive references on seeded synthetic data,
bad inputs, and one run of `deployment_report` on a tiny random ViT with a few Fashion-MNIST images."""

import json

import numpy as np
import pytest

from hf_mrl import MatryoshkaConfig, MatryoshkaForImageClassification
from hf_mrl.data import ImageCollator, load_fashion_mnist
from hf_mrl.evaluation import (
    adaptive_classification_report,
    adaptive_retrieval_report,
    deployment_report,
    format_deployment_report,
)
from hf_mrl.evaluation import deployment as deployment_module

from ..tiny import tiny_vit_config

DIMS = [8, 16, 32]


def random_logits(num_rows, seed, num_labels=5):
    """Heads that get sharper and more often right with the dim; labels (n,) and logits (3, n, num_labels)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_labels, num_rows)
    logits = rng.normal(size=(len(DIMS), num_rows, num_labels))
    for j in range(len(DIMS)):
        logits[j, np.arange(num_rows), labels] += 1.0 + j
    return logits, labels


def naive_cascade(logits, labels, thresholds):
    """Row by row: the first head whose max softmax reaches its threshold (the last head always) decides."""
    correct, used = [], []
    for row in range(logits.shape[1]):
        for j, dim in enumerate(DIMS):
            probabilities = np.exp(logits[j, row]) / np.exp(logits[j, row]).sum()
            if j == len(DIMS) - 1 or probabilities.max() >= thresholds[dim]:
                correct.append(logits[j, row].argmax() == labels[row])
                used.append(dim)
                break
    return np.mean(correct), np.mean(used)


def test_cascade_with_confident_low_dims_stops_at_the_lowest_dim():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 200)
    logits = rng.normal(scale=0.1, size=(len(DIMS), 200, 4))
    logits[:, np.arange(200), labels] += 20.0  # every head is sure and right
    report = adaptive_classification_report(logits[:, :100], labels[:100], logits[:, 100:], labels[100:], DIMS)
    assert report["cascade_accuracy"] == report["full_accuracy"] == 1.0
    assert report["cascade_expected_dim"] == 8.0 and report["full_dim"] == 32
    assert report["stop_fraction"] == {8: 1.0, 16: 0.0, 32: 0.0}
    assert report["accuracy_at_dim"] == {8: 1.0, 16: 1.0, 32: 1.0}


def test_cascade_report_matches_a_naive_reference():
    val_logits, val_labels = random_logits(300, seed=1)
    test_logits, test_labels = random_logits(300, seed=2)
    report = adaptive_classification_report(val_logits, val_labels, test_logits, test_labels, DIMS)
    full_val_accuracy = np.mean(val_logits[-1].argmax(-1) == val_labels)
    assert report["target_accuracy"] == pytest.approx(full_val_accuracy - 0.005)
    accuracy, expected_dim = naive_cascade(test_logits, test_labels, report["thresholds"])
    assert report["cascade_accuracy"] == pytest.approx(accuracy)
    assert report["cascade_expected_dim"] == pytest.approx(expected_dim)
    assert report["cascade_expected_dim"] < 32  # the easy inputs stop early
    for j, dim in enumerate(DIMS):
        assert report["accuracy_at_dim"][dim] == pytest.approx(np.mean(test_logits[j].argmax(-1) == test_labels))
    assert report["full_accuracy"] == report["accuracy_at_dim"][32]
    assert sum(report["stop_fraction"].values()) == pytest.approx(1.0)
    strict = adaptive_classification_report(val_logits, val_labels, test_logits, test_labels, DIMS, target_accuracy=1.0)
    assert strict["cascade_expected_dim"] == 32.0  # an unreachable target keeps everyone at the full head


def clustered(num_rows, seed, dim=32, num_classes=4):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, num_rows)
    centres = np.random.default_rng(99).normal(size=(num_classes, dim))
    return (centres[labels] + rng.normal(scale=1.5, size=(num_rows, dim))).astype(np.float32), labels


def unit(vectors):
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_retrieval_matches_naive_search():
    database, database_labels = clustered(300, seed=3)
    queries, query_labels = clustered(40, seed=4)
    rows = adaptive_retrieval_report(
        database, queries, database_labels, query_labels, DIMS, k=5, shortlist_sizes=(20, 300), repeats=1
    )
    assert [row["method"] for row in rows] == ["exact"] + ["adaptive"] * 4 + ["funnel"]
    for row in rows:
        assert set(row) >= {"method", "shortlist_dim", "shortlist_size", "qps", "speedup", "recall_vs_exact",
                            "precision_at_k"}
        assert row["qps"] > 0 and row["speedup"] == pytest.approx(row["qps"] / rows[0]["qps"])
    exact_ids = np.argsort(-(unit(queries) @ unit(database).T), axis=1)[:, :5]
    exact = rows[0]
    assert exact["speedup"] == 1.0 and exact["recall_vs_exact"] == 1.0
    assert exact["precision_at_k"] == pytest.approx(np.mean(database_labels[exact_ids] == query_labels[:, None]))
    for row in rows[1:5]:
        if row["shortlist_size"] == 300:  # the whole database: the exact search again
            assert row["recall_vs_exact"] == 1.0 and row["precision_at_k"] == exact["precision_at_k"]
            continue
        d = row["shortlist_dim"]
        shortlist = np.argsort(-(unit(queries[:, :d]) @ unit(database[:, :d]).T), axis=1)[:, :20]
        full_scores = np.take_along_axis(unit(queries) @ unit(database).T, shortlist, 1)
        ids = np.take_along_axis(shortlist, np.argsort(-full_scores, axis=1)[:, :5], 1)
        found = [len(set(ids[q]) & set(exact_ids[q])) / 5 for q in range(len(queries))]
        assert row["recall_vs_exact"] == pytest.approx(np.mean(found))
        assert row["precision_at_k"] == pytest.approx(np.mean(database_labels[ids] == query_labels[:, None]))
    assert rows[-1]["funnel_dims"] == DIMS and rows[-1]["shortlist_dim"] == 8


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"queries": np.zeros((4, 16), np.float32)}, "`queries` have 16 features but `database` has 32"),
        ({"query_labels": np.zeros(3)}, r"`query_labels` must have shape \(4,\)"),
        ({"dims": [16, 8, 32]}, "ascending order"),
        ({"dims": [8, 16]}, "must end at the embeddings' full dim 32"),
        ({"k": 60}, "`k` is 60, more than the 50 database rows"),
        ({"shortlist_sizes": (5,)}, "`shortlist_sizes` holds 5, fewer than `k`=10"),
        ({"shortlist_dims": [32]}, "`shortlist_dims` must be dims below the full dim 32"),
    ],
)
def test_retrieval_rejects_bad_inputs(arguments, message):
    database, database_labels = clustered(50, seed=5)
    queries, query_labels = clustered(4, seed=6)
    values = dict(database=database, queries=queries, database_labels=database_labels, query_labels=query_labels,
                  dims=DIMS)
    values.update(arguments)
    with pytest.raises(ValueError, match=message):
        adaptive_retrieval_report(**values)


def test_cascade_rejects_bad_inputs():
    logits, labels = random_logits(20, seed=7)
    with pytest.raises(ValueError, match="ascending order"):
        adaptive_classification_report(logits, labels, logits, labels, [16, 8, 32])
    with pytest.raises(ValueError, match="`dims` has 2 entries but `logits_per_dim` has 3 heads"):
        adaptive_classification_report(logits, labels, logits, labels, [8, 16])
    with pytest.raises(ValueError, match=r"`labels` must have shape \(20,\)"):
        adaptive_classification_report(logits, labels, logits, labels[:5], DIMS)
    with pytest.raises(ValueError, match="Validation logits have 5 labels but test logits have 3"):
        adaptive_classification_report(logits, labels, logits[..., :3], labels % 3, DIMS)


def test_deployment_report_on_a_tiny_model_writes_its_files(tmp_path, monkeypatch):
    config = MatryoshkaConfig(backbone_config=tiny_vit_config(), matryoshka_dims=[8, 16, 32], num_labels=10)
    model = MatryoshkaForImageClassification(config)
    collator = ImageCollator(image_size=28, num_channels=1)
    val, test = load_fashion_mnist("test", limit=60).train_test_split(test_size=20, seed=0).values()
    database = load_fashion_mnist("train", limit=100)
    retrieval_calls = []

    def recording_retrieval_report(database, queries, database_labels, query_labels, dims, **kwargs):
        retrieval_calls.append((queries.shape, query_labels.shape))
        return adaptive_retrieval_report(database, queries, database_labels, query_labels, dims, **kwargs)

    monkeypatch.setattr(deployment_module, "adaptive_retrieval_report", recording_retrieval_report)
    report = deployment_report(model, val, test, database, collator, batch_size=32, output_dir=tmp_path, max_queries=15)
    assert retrieval_calls == [((15, 32), (15,))]  # the first 15 test rows query; the cascade scores all 20
    assert sum(report["cascade"]["stop_fraction"].values()) == pytest.approx(1.0)
    assert set(report) == {"cascade", "retrieval"}
    assert report["cascade"]["full_dim"] == 32 and set(report["cascade"]["accuracy_at_dim"]) == {8, 16, 32}
    # shortlist sizes 50, 200 and 800 clip to 50 and the 100 database rows, at dims 8 and 16.
    assert [row["method"] for row in report["retrieval"]] == ["exact"] + ["adaptive"] * 4 + ["funnel"]
    written = json.loads((tmp_path / "deployment.json").read_text())
    assert written["cascade"]["cascade_accuracy"] == pytest.approx(report["cascade"]["cascade_accuracy"])
    assert len(written["retrieval"]) == 6
    assert (tmp_path / "deployment.png").read_bytes()[:4] == b"\x89PNG"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["deployment.json", "deployment.png"]
    text = format_deployment_report(report)
    assert "cascade" in text and "at 32" in text and "exact search, full dim" in text and "funnel: 8d keep" in text
    assert sum(line.startswith("|---") for line in text.splitlines()) == 2  # two markdown tables


def test_deployment_report_needs_nested_heads():
    config = MatryoshkaConfig(backbone_config=tiny_vit_config(), matryoshka_dims=[32], num_labels=10)
    rows = load_fashion_mnist("test", limit=4)
    with pytest.raises(ValueError, match="nested heads at two or more dims"):
        deployment_report(MatryoshkaForImageClassification(config), rows, rows, rows, ImageCollator(image_size=28))
    config = MatryoshkaConfig(backbone_config=tiny_vit_config(), matryoshka_dims=[8, 32], num_labels=10)
    with pytest.raises(ValueError, match="`max_queries` must be a positive integer, got 0"):
        deployment_report(
            MatryoshkaForImageClassification(config), rows, rows, rows, ImageCollator(image_size=28), max_queries=0
        )
