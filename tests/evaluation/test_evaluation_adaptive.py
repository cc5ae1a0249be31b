"""Adaptive classification cascades: synthetic logits with a known best cascade, and a tiny real model."""

import datasets
import numpy as np
import pytest
import torch

from hf_mrl import MatryoshkaConfig, MatryoshkaForImageClassification
from hf_mrl.evaluation import (
    MatryoshkaCascade,
    cascade_predict,
    encode_dataset,
    evaluate_cascade,
    fit_cascade_thresholds,
)

from ..tiny import tiny_vit_config

DIMS = [8, 16, 32]


def synthetic_logits(num_rows=600, num_labels=4, seed=0):
    """Half the inputs are easy (dim 8 confident and right); the rest are hard: dims 8 and 16 unsure and
    often wrong, dim 32 confident and right. Best cascade: easy stop at 8, hard go to 32 -> 20 dims."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_labels, size=num_rows)
    easy = np.arange(num_rows) < num_rows // 2
    rows = np.arange(num_rows)

    def head(confident, right):
        logits = np.zeros((num_rows, num_labels))
        predicted = np.where(right, labels, (labels + 1) % num_labels)
        logits[rows, predicted] = np.where(confident, 6.0, 0.5)
        return logits

    logits = np.stack(
        [
            head(easy, easy | (rng.random(num_rows) < 0.5)),
            head(easy, easy),
            head(np.ones(num_rows, bool), np.ones(num_rows, bool)),
        ]
    )
    return logits, labels, easy


def test_fit_finds_the_known_best_cascade():
    logits, labels, easy = synthetic_logits()
    thresholds = fit_cascade_thresholds(logits, labels, DIMS)
    predictions, stopped = cascade_predict(logits, DIMS, thresholds)
    np.testing.assert_array_equal(stopped, np.where(easy, 8, 32))
    np.testing.assert_array_equal(predictions, labels)
    report = evaluate_cascade(logits, labels, DIMS, thresholds)
    assert report["accuracy"] == 1.0 == report["full_dim_accuracy"]
    assert report["expected_dim"] == pytest.approx(20.0)
    assert report["speedup"] == pytest.approx(32 / 20)
    assert report["stop_share"] == {8: 0.5, 16: 0.0, 32: 0.5}
    assert set(report["thresholds"]) == {8, 16}


def test_lower_target_stops_earlier_and_held_out_data_follows():
    logits, labels, _ = synthetic_logits(seed=1)
    cascade = MatryoshkaCascade(DIMS).fit(logits, labels, target_accuracy=0.7)
    validation = cascade.report(logits, labels)
    assert validation["accuracy"] >= 0.7
    assert validation["expected_dim"] < 20.0  # cheaper than the exact cascade, by accepting some errors
    test_logits, test_labels, _ = synthetic_logits(seed=2)
    test = cascade.report(test_logits, test_labels)
    assert test["accuracy"] == pytest.approx(validation["accuracy"], abs=0.08)
    predictions, stopped = cascade.predict(test_logits)
    assert predictions.shape == stopped.shape == (600,) and set(stopped) <= set(DIMS)


def test_unreachable_target_keeps_everything_at_the_full_dim():
    logits, labels, _ = synthetic_logits()
    logits[-1, :10] = -logits[-1, :10]  # the full-dim head now errs on 10 inputs
    thresholds = fit_cascade_thresholds(logits, labels, DIMS, target_accuracy=1.0)
    _, stopped = cascade_predict(logits, DIMS, thresholds)
    assert np.isinf(thresholds).all() and (stopped == 32).all()


def test_tiny_real_model():
    torch.manual_seed(0)
    config = MatryoshkaConfig(backbone_config=tiny_vit_config(), matryoshka_dims=DIMS, num_labels=3)
    model = MatryoshkaForImageClassification(config)
    rng = np.random.default_rng(0)

    def split(num_rows):
        return datasets.Dataset.from_dict(
            {
                "pixel_values": rng.normal(size=(num_rows, 1, 28, 28)).astype(np.float32),
                "label": rng.integers(0, 3, num_rows),
            }
        )

    validation, test = split(64), split(64)
    val_logits = encode_dataset(model, validation, batch_size=32).matryoshka_logits
    test_logits = encode_dataset(model, test, batch_size=32).matryoshka_logits
    assert val_logits.shape == (3, 64, 3)
    cascade = MatryoshkaCascade(model.config.matryoshka_dims).fit(val_logits, validation["label"])
    on_validation = cascade.report(val_logits, validation["label"])
    assert on_validation["accuracy"] >= on_validation["full_dim_accuracy"]
    assert 8 <= on_validation["expected_dim"] <= 32
    on_test = cascade.report(torch.from_numpy(test_logits), test["label"])  # tensors work as well
    assert sum(on_test["stop_share"].values()) == pytest.approx(1.0)
    model.eval()
    with torch.no_grad():
        direct = model(pixel_values=torch.tensor(np.array(test["pixel_values"]))).matryoshka_logits.numpy()
    np.testing.assert_allclose(test_logits, direct, rtol=1e-5, atol=1e-6)


def test_bad_arguments():
    logits, labels, _ = synthetic_logits(num_rows=20)
    with pytest.raises(ValueError, match="`logits_per_dim` must be 3-D"):
        fit_cascade_thresholds(logits[0], labels, DIMS)
    with pytest.raises(ValueError, match="`dims` has 2 entries but `logits_per_dim` has 3 heads"):
        fit_cascade_thresholds(logits, labels, [8, 16])
    with pytest.raises(ValueError, match="ascending order"):
        fit_cascade_thresholds(logits, labels, [32, 16, 8])
    with pytest.raises(ValueError, match=r"`labels` must have shape \(20,\)"):
        fit_cascade_thresholds(logits, labels[:5], DIMS)
    with pytest.raises(ValueError, match="`target_accuracy` must be a number in"):
        fit_cascade_thresholds(logits, labels, DIMS, target_accuracy=1.5)
    with pytest.raises(ValueError, match="`thresholds` must be 2 numbers"):
        cascade_predict(logits, DIMS, [0.5])
    with pytest.raises(ValueError, match="not fitted yet"):
        MatryoshkaCascade(DIMS).predict(logits)
    with pytest.raises(ValueError, match="`dims` must hold positive integers"):
        MatryoshkaCascade([0, 8])
