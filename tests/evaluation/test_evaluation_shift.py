"""Robustness under shift: built-in corruptions (deterministic, of the promised strength), per-set metrics and
drops against a per-set brute-force reference, and the evaluator on a tiny real model (one pass per set)."""

import math

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from hf_mrl import ImageCollator, MatryoshkaConfig, MatryoshkaForImageClassification
from hf_mrl.data import CORRUPTION_SEVERITIES, CORRUPTIONS, corrupt_dataset, corrupt_image
from hf_mrl.evaluation import MatryoshkaShiftEvaluator, encode_dataset, shift_metrics

from ..tiny import tiny_vit_config

DIMS = [8, 16, 32]


def image_dataset(num_rows=24, seed=0):
    rng = np.random.default_rng(seed)
    images = [Image.fromarray(rng.integers(0, 256, size=(28, 28), dtype=np.uint8)) for _ in range(num_rows)]
    return datasets.Dataset.from_dict(
        {"image": images, "label": [index % 3 for index in range(num_rows)]},
        features=datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(num_classes=3)}),
    )


def pixels(image):
    return np.asarray(image, dtype=np.float64) / 255


# -- corruptions ---------------------------------------------------------------------------------------------


def test_corruptions_keep_mode_and_size_and_are_deterministic():
    dataset = image_dataset(6)
    for corruption in CORRUPTIONS:
        first = corrupt_dataset(dataset, corruption, 3, seed=1)
        again = corrupt_dataset(dataset, corruption, 3, seed=1)
        assert first.column_names == dataset.column_names and first["label"] == dataset["label"]
        for image, repeat, original in zip(first["image"], again["image"], dataset["image"]):
            assert image.mode == original.mode and image.size == original.size
            np.testing.assert_array_equal(np.asarray(image), np.asarray(repeat))
            assert not np.array_equal(np.asarray(image), np.asarray(original))
    # Row i's draws do not depend on which rows come with it.
    whole = corrupt_dataset(dataset, "noise", 2, seed=1)["image"][4]
    alone = corrupt_image(dataset["image"][4], "noise", 2, np.random.default_rng([1, 4, CORRUPTIONS.index("noise")]))
    np.testing.assert_array_equal(np.asarray(whole), np.asarray(alone))
    other_seed = corrupt_dataset(dataset, "noise", 2, seed=2)["image"][4]
    assert not np.array_equal(np.asarray(whole), np.asarray(other_seed))


def test_corruption_strengths_match_their_definitions():
    grey = Image.fromarray(np.full((28, 28), 128, dtype=np.uint8))
    noisy = [pixels(corrupt_image(grey, "noise", s, np.random.default_rng(0))) - 128 / 255 for s in (1, 5)]
    for residual, std in zip(noisy, (CORRUPTION_SEVERITIES["noise"][0], CORRUPTION_SEVERITIES["noise"][4])):
        assert residual.std() == pytest.approx(std, rel=0.15)

    image = image_dataset(1)["image"][0]
    original = pixels(image)
    for severity in (1, 5):
        factor = CORRUPTION_SEVERITIES["contrast"][severity - 1]
        low = pixels(corrupt_image(image, "contrast", severity, np.random.default_rng(0)))
        assert low.mean() == pytest.approx(original.mean(), abs=2 / 255)
        assert low.std() == pytest.approx(original.std() * factor, abs=2 / 255)
    blurred = [pixels(corrupt_image(image, "blur", s, np.random.default_rng(0))).std() for s in (1, 3, 5)]
    assert original.std() > blurred[0] > blurred[1] > blurred[2]

    bar = np.zeros((28, 28), dtype=np.uint8)
    bar[4:24, 13:15] = 255  # a vertical bar: rotating it by 90 degrees would make it horizontal
    rotated = pixels(corrupt_image(Image.fromarray(bar), "rotation", 5, np.random.default_rng(0)))
    columns = np.flatnonzero(rotated.sum(axis=0) > 0.5)
    width = 20 * math.sin(math.radians(60))  # the bar's horizontal extent after 60 degrees
    assert columns.max() - columns.min() == pytest.approx(width, abs=3)


@pytest.mark.parametrize(
    "arguments, message",
    [
        (("fog", 1), r"`corruption` must be one of \['noise', 'blur', 'contrast', 'rotation'\], got 'fog'"),
        (("noise", 0), r"`severity` must be an integer from 1 to 5, got 0"),
        (("blur", 6), r"`severity` must be an integer from 1 to 5, got 6"),
    ],
)
def test_bad_corruptions_are_rejected(arguments, message):
    with pytest.raises(ValueError, match=message):
        corrupt_dataset(image_dataset(2), *arguments)
    with pytest.raises(ValueError, match="`image_column` 'picture' is not a column"):
        corrupt_dataset(image_dataset(2), "noise", 1, image_column="picture")


# -- metrics against a brute-force reference -----------------------------------------------------------------


def brute_force(query, labels, reference, reference_labels, dim):
    def view(array):
        cut = array[:, :dim]
        return cut / np.linalg.norm(cut, axis=1, keepdims=True)

    nearest = (view(query) @ view(reference).T).argmax(axis=1)
    return float((reference_labels[nearest] == labels).mean())


def test_metrics_and_drops_match_a_per_set_reference():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(4, 32))
    reference_labels = np.repeat(np.arange(4), 10)
    reference = centers[reference_labels] + 0.3 * rng.normal(size=(40, 32))
    labels = {"clean": np.arange(20) % 4, "noisy": np.arange(15) % 4, "far": np.arange(12) % 4}
    embeddings = {
        "clean": centers[labels["clean"]] + 0.3 * rng.normal(size=(20, 32)),
        "noisy": centers[labels["noisy"]] + 1.5 * rng.normal(size=(15, 32)),
        "far": rng.normal(size=(12, 32)),
    }
    head = np.stack([np.eye(4)[labels["clean"]] * (dim / 32) for dim in DIMS])  # right at every dim
    logits = {"clean": head, "noisy": np.zeros((3, 15, 4)), "far": np.stack([np.eye(4)[(labels["far"] + 1) % 4]] * 3)}
    results = shift_metrics(
        embeddings, labels, dims=DIMS, reference_embeddings=reference, reference_labels=reference_labels,
        matryoshka_logits=logits, nesting_dims=DIMS, retrieval_ks=(5,), name="toy",
    )
    for dim in DIMS:
        for set_name in embeddings:
            expected = brute_force(embeddings[set_name], labels[set_name], reference, reference_labels, dim)
            assert results[f"toy_dim{dim}_{set_name}_1nn"] == pytest.approx(expected)
        assert results[f"toy_dim{dim}_clean_top1"] == 1.0
        assert results[f"toy_dim{dim}_noisy_top1"] == pytest.approx(np.mean(labels["noisy"] == 0))  # ties -> class 0
        assert results[f"toy_dim{dim}_far_top1"] == 0.0
        assert results[f"toy_dim{dim}_far_top1_drop"] == 1.0
        for metric in ("1nn", "top1", "recall@5", "mrl_map@5"):
            clean = results[f"toy_dim{dim}_clean_{metric}"]
            shifted = [results[f"toy_dim{dim}_{s}_{metric}"] for s in ("noisy", "far")]
            for set_name, value in zip(("noisy", "far"), shifted):
                assert results[f"toy_dim{dim}_{set_name}_{metric}_drop"] == pytest.approx(clean - value)
            assert results[f"toy_dim{dim}_shifted_{metric}"] == pytest.approx(np.mean(shifted))
            assert results[f"toy_dim{dim}_shifted_{metric}_drop"] == pytest.approx(clean - np.mean(shifted))
    assert results["toy_dim32_clean_1nn"] > results["toy_dim32_far_1nn"]
    assert not any("precision" in key or "ndcg" in key for key in results)  # only the chosen retrieval metrics


@pytest.mark.parametrize(
    "change, message",
    [
        ({"embeddings": {"noisy": np.zeros((3, 8))}}, r"must hold the in-distribution set 'clean'"),
        ({"embeddings": {"clean": np.ones((3, 8)), "my_set": np.ones((3, 8))}}, r"names must be non-empty strings without '_'"),
        ({"labels": {"clean": np.zeros(3)}}, r"`labels` must name the same sets"),
        ({"retrieval_metric_names": ["hits"]}, r"`retrieval_metric_names` must be a list drawn from"),
        ({"reference_labels": np.zeros(5)}, r"Give both `reference_embeddings` and `reference_labels`"),
    ],
)
def test_bad_metric_inputs_are_rejected(change, message):
    rng = np.random.default_rng(0)
    arguments = {
        "embeddings": {"clean": rng.normal(size=(3, 8)), "noisy": rng.normal(size=(3, 8))},
        "labels": {"clean": np.arange(3), "noisy": np.arange(3)},
    }
    arguments.update(change)
    with pytest.raises(ValueError, match=message):
        shift_metrics(**arguments)


# -- the evaluator on a tiny real model ----------------------------------------------------------------------


def classifier():
    torch.manual_seed(0)
    config = MatryoshkaConfig(backbone_config=tiny_vit_config(), matryoshka_dims=DIMS, num_labels=3)
    return MatryoshkaForImageClassification(config)


def test_evaluator_encodes_each_set_once_and_matches_the_metrics_function():
    model = classifier()
    test, reference = image_dataset(24, 0), image_dataset(30, 1)
    collator = ImageCollator()
    user_shift = image_dataset(12, 2)
    evaluator = MatryoshkaShiftEvaluator(
        test, shifted_datasets={"other": user_shift}, corruptions=["noise", "rotation"], severities=[1, 5],
        reference_dataset=reference, collate_fn=collator, retrieval_ks=(5,), name="toy", batch_size=16,
    )
    assert evaluator.set_names == ["clean", "other", "noise-1", "noise-5", "rotation-1", "rotation-5"]
    calls = []
    hook = model.matryoshka.backbone.register_forward_hook(lambda *args: calls.append(1))
    results = evaluator(model)
    hook.remove()
    sizes = [24, 12, 24, 24, 24, 24, 30]
    assert len(calls) == sum(math.ceil(size / 16) for size in sizes)  # one pass per set, none per dim

    encoded = {name: encode_dataset(model, data, collator) for name, data in evaluator.datasets.items()}
    expected = shift_metrics(
        {name: item.embeddings for name, item in encoded.items()},
        {name: np.asarray(data["label"]) for name, data in evaluator.datasets.items()},
        reference_embeddings=encode_dataset(model, reference, collator).embeddings,
        reference_labels=np.asarray(reference["label"]),
        matryoshka_logits={name: item.matryoshka_logits for name, item in encoded.items()},
        nesting_dims=DIMS, retrieval_ks=(5,), name="toy",
    )
    assert results.keys() == expected.keys()
    for key, value in expected.items():
        assert results[key] == pytest.approx(value, abs=1e-6)
    assert evaluator.primary_metric == "toy_dim32_shifted_top1" and evaluator.primary_metric in results
    assert evaluator.greater_is_better


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({}, r"Give at least one shifted set"),
        ({"corruptions": ["snow"]}, r"`corruption` must be one of"),
        ({"corruptions": ["noise"], "severities": [0]}, r"`severity` must be an integer from 1 to 5, got 0"),
        ({"shifted_datasets": {"clean": None}}, r"may not name a set 'clean'"),
        ({"shifted_datasets": {"a_b": None}}, r"names must be non-empty strings without '_'"),
        ({"corruptions": ["noise"], "label_column": "class"}, r"`dataset` has no label column 'class'"),
        ({"corruptions": ["noise"], "knn_k": [50]}, r"`knn_k` holds 50, more than the 5 reference items"),
    ],
)
def test_bad_evaluator_arguments_are_rejected(arguments, message):
    with pytest.raises(ValueError, match=message):
        MatryoshkaShiftEvaluator(image_dataset(6), **arguments)
