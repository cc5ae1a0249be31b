"""The flat-loss warning: only when the loss stays within its own noise, with advice that fits the model."""

import random

import torch

from hf_mrl.training.flat_loss import FlatLossWatch


def _run(losses, **kwargs):
    watch = FlatLossWatch(warmup_steps=0, learning_rate=1e-3, **kwargs)
    told = [watch.update(step, torch.tensor(loss)) for step, loss in enumerate(losses, start=1)]
    return [text for text in told if text]


def test_a_loss_within_its_noise_is_reported_once():
    rng = random.Random(0)
    told = _run([2.3026 + rng.gauss(0, 0.02) for _ in range(40)])
    assert len(told) == 1 and "within its own step-to-step noise" in told[0]


def test_a_slow_but_steady_descent_is_not_reported():
    # a model trained from scratch: 0.5% down over 20 steps, far more than its batch-to-batch noise
    rng = random.Random(0)
    assert _run([2.3026 - 0.0006 * step + rng.gauss(0, 0.0005) for step in range(40)]) == []


def test_the_advice_fits_the_model():
    flat = [1.0] * 20
    assert "pretrained encoder (try 2e-5 to 2e-4)" in _run(flat, pretrained=True)[0]
    scratch = _run(flat, pretrained=False)[0]
    assert "trained from scratch (try 1e-4 to 1e-3 with a warm-up)" in scratch and "pretrained" not in scratch
