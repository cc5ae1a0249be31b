import datasets
import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from hf_mrl import MatryoshkaDualEncoderConfig, MatryoshkaDualEncoderModel
from hf_mrl.data import ImageCollator, fashion_mnist_class_prompts, load_fashion_mnist_captions
from hf_mrl.evaluation.image_text import (
    MatryoshkaImageTextEvaluator,
    image_text_relevance,
    image_text_retrieval_metrics,
    zero_shot_accuracy,
)

from .tiny import tiny_bert_config, tiny_vit_config


def normalised(array: np.ndarray, dim: int) -> np.ndarray:
    sliced = array[:, :dim]
    return sliced / np.linalg.norm(sliced, axis=1, keepdims=True)


def naive_recall(queries, corpus, relevant, k: int) -> float:
    """Share of queries with a relevant item among the k highest scores (brute force, stable ties)."""
    scores = queries @ corpus.T
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return float(np.mean([relevant[row, top[row]].any() for row in range(len(queries))]))


def test_retrieval_matches_brute_force_with_shared_images_and_multi_image_captions():
    rng = np.random.default_rng(0)
    images, texts = rng.normal(size=(40, 16)), rng.normal(size=(30, 16))
    text_to_image = [[row] for row in rng.integers(0, 40, size=30)]
    text_to_image[3] = [5, 6, 7]  # one caption describing three images
    image_ids = rng.integers(0, 25, size=40)  # some images show the same thing
    results = image_text_retrieval_metrics(images, texts, [4, 16], (1, 5), text_to_image, image_ids, name="toy")
    # relevant[j, i]: image i shows what text j describes
    relevant = np.zeros((30, 40), dtype=bool)
    for text, rows in enumerate(text_to_image):
        for row in rows:
            relevant[text] |= image_ids == image_ids[row]
    assert sorted(results) == sorted(
        f"toy_dim{dim}_{direction}_recall@{k}" for dim in (4, 16) for direction in ("t2i", "i2t") for k in (1, 5)
    )
    for dim in (4, 16):
        for k in (1, 5):
            expected_t2i = naive_recall(normalised(texts, dim), normalised(images, dim), relevant, k)
            expected_i2t = naive_recall(normalised(images, dim), normalised(texts, dim), relevant.T, k)
            assert results[f"toy_dim{dim}_t2i_recall@{k}"] == pytest.approx(expected_t2i)
            assert results[f"toy_dim{dim}_i2t_recall@{k}"] == pytest.approx(expected_i2t)


def test_matching_embeddings_score_one_and_text_ids_merge_captions():
    rng = np.random.default_rng(1)
    images = rng.normal(size=(12, 8))
    results = image_text_retrieval_metrics(images, images.copy(), [8], (1,))
    assert results["image_text_dim8_t2i_recall@1"] == 1.0 and results["image_text_dim8_i2t_recall@1"] == 1.0
    # Texts 0 and 1 share an id: each is relevant to both their images, so swapping them changes nothing.
    swapped = images[[1, 0, *range(2, 12)]]
    plain = image_text_retrieval_metrics(images, swapped, [8], (1,))
    merged = image_text_retrieval_metrics(images, swapped, [8], (1,), text_ids=[0, 0, *range(1, 11)])
    assert plain["image_text_dim8_t2i_recall@1"] == pytest.approx(10 / 12)
    assert merged["image_text_dim8_t2i_recall@1"] == 1.0 and merged["image_text_dim8_i2t_recall@1"] == 1.0


def test_relevance_table():
    image_group, text_group, table = image_text_relevance(4, [[0], [1, 2], [3]], image_ids=["a", "b", "b", "c"])
    assert image_group.tolist() == [0, 1, 1, 2] and text_group.tolist() == [0, 1, 2]
    assert table.tolist() == [[True, False, False], [False, True, False], [False, False, True]]


def test_zero_shot_matches_naive_and_ensembles_prompts():
    rng = np.random.default_rng(2)
    images, prompts, labels = rng.normal(size=(50, 12)), rng.normal(size=(5, 3, 12)), rng.integers(0, 5, size=50)
    results = zero_shot_accuracy(images, prompts, labels, dims=[4, 12], ks=(1, 2), name="zs")
    for dim in (4, 12):
        classes = np.stack([normalised(prompts[c], dim).mean(0) for c in range(5)])
        classes /= np.linalg.norm(classes, axis=1, keepdims=True)
        order = np.argsort(-(normalised(images, dim) @ classes.T), axis=1)
        assert results[f"zs_dim{dim}_zero_shot_top1"] == pytest.approx(np.mean(order[:, 0] == labels))
        assert results[f"zs_dim{dim}_zero_shot_top2"] == pytest.approx(np.mean((order[:, :2] == labels[:, None]).any(1)))
    single = zero_shot_accuracy(images, prompts[:, 0], labels, dims=[12])
    assert 0.0 <= single["image_text_dim12_zero_shot_top1"] <= 1.0


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: image_text_retrieval_metrics(np.ones((3, 4)), np.ones((2, 4))), r"Give `text_to_image` when the numbers"),
        (lambda: image_text_retrieval_metrics(np.ones((3, 4)), np.ones((3, 5))), r"the same width"),
        (lambda: image_text_retrieval_metrics(np.ones((3, 4)), np.ones((2, 4)), text_to_image=[0, 3]), r"image rows from 0 to 2"),
        (lambda: image_text_retrieval_metrics(np.ones((3, 4)), np.ones((3, 4)), dims=[8]), r"dims"),
        (lambda: image_text_retrieval_metrics(np.ones((3, 4)), np.ones((3, 4)), ks=[0]), r"`ks` must be"),
        (lambda: zero_shot_accuracy(np.ones((3, 4)), np.ones((2, 4)), [0, 1, 2]), r"`labels` must lie in \[0, 1\]"),
        (lambda: zero_shot_accuracy(np.ones((3, 4)), np.ones((2, 5)), [0, 1, 1]), r"of the same d"),
    ],
)
def test_bad_inputs_are_rejected(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.fixture(scope="module")
def fashion_pairs():
    return load_fashion_mnist_captions(split="test", limit=24)


@pytest.fixture(scope="module")
def tiny_dual_encoder():
    torch.manual_seed(0)
    config = MatryoshkaDualEncoderConfig(
        vision_config=tiny_vit_config(),
        text_config=tiny_bert_config(vocab_size=30522, max_position_embeddings=128),
        projection_dim=24,
        matryoshka_dims=[8, 16, 24],
    )
    return MatryoshkaDualEncoderModel(config).eval()


def test_evaluator_encodes_once_and_scores_every_dim(fashion_pairs, tiny_dual_encoder, minilm_path):
    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    evaluator = MatryoshkaImageTextEvaluator(
        fashion_pairs, tokenizer, image_collator=ImageCollator(label_column=None), image_id_column="label",
        class_prompts=fashion_mnist_class_prompts(), label_column="label", ks=(1, 5), name="fmnist", batch_size=10,
    )
    assert len(evaluator.texts) == len(set(fashion_pairs["text"])) < len(fashion_pairs)  # captions repeat
    results = evaluator(tiny_dual_encoder)
    assert evaluator.primary_metric == "fmnist_dim24_t2i_recall@5"
    for dim in (8, 16, 24):
        for key in ("t2i_recall@1", "t2i_recall@5", "i2t_recall@1", "i2t_recall@5", "zero_shot_top1"):
            assert 0.0 <= results[f"fmnist_dim{dim}_{key}"] <= 1.0

    # The same numbers from embeddings computed by hand at the full dim.
    with torch.no_grad():
        pixels = ImageCollator(label_column=None)(list(fashion_pairs))["pixel_values"]
        image_embeds = tiny_dual_encoder.get_image_features(pixels).numpy()
        text_embeds = tiny_dual_encoder.get_text_features(**tokenizer(evaluator.texts, padding=True, return_tensors="pt")).numpy()
        flat_prompts = [prompt for group in fashion_mnist_class_prompts() for prompt in group]
        prompt_embeds = tiny_dual_encoder.get_text_features(**tokenizer(flat_prompts, padding=True, return_tensors="pt")).numpy()
    labels = np.asarray(fashion_pairs["label"])
    # A caption names a class: every image of that class is relevant to it.
    relevant = np.array([[labels[row] == labels[evaluator.text_to_image[t][0]] for row in range(len(labels))] for t in range(len(evaluator.texts))])
    for dim in (8, 24):
        assert results[f"fmnist_dim{dim}_t2i_recall@1"] == pytest.approx(
            naive_recall(normalised(text_embeds, dim), normalised(image_embeds, dim), relevant, 1), abs=1e-6
        )
        assert results[f"fmnist_dim{dim}_i2t_recall@5"] == pytest.approx(
            naive_recall(normalised(image_embeds, dim), normalised(text_embeds, dim), relevant.T, 5), abs=1e-6
        )
    expected = zero_shot_accuracy(image_embeds, prompt_embeds.reshape(10, -1, 24), labels, dims=[8, 16, 24], name="fmnist")
    for key, value in expected.items():
        assert results[key] == pytest.approx(value, abs=1e-6)


def test_evaluator_rejects_bad_arguments(fashion_pairs, tiny_dual_encoder, minilm_path):
    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    with pytest.raises(ValueError, match=r"`image_id_column`='emoji' is not a column of `dataset`"):
        MatryoshkaImageTextEvaluator(fashion_pairs, tokenizer, image_id_column="emoji")
    with pytest.raises(ValueError, match=r"needs both `class_prompts` and `label_column`"):
        MatryoshkaImageTextEvaluator(fashion_pairs, tokenizer, label_column="label")
    listed = datasets.Dataset.from_dict({"image": fashion_pairs["image"][:2], "text": [["a", "b"], ["c"]]})
    with pytest.raises(ValueError, match=r"column 'text' row 0 is list \['a', 'b'\], not a string"):
        MatryoshkaImageTextEvaluator(listed, tokenizer)
    evaluator = MatryoshkaImageTextEvaluator(fashion_pairs, tokenizer, dims=[8, 32])
    with pytest.raises(ValueError, match=r"32"):
        evaluator(tiny_dual_encoder)
