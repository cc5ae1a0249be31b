"""The classification evaluator on tiny real models: one encoding pass, per-dim head and k-NN metrics
that match a per-dim brute-force computation."""

import math

import datasets
import numpy as np
import pytest
import torch

from hf_mrl import MatryoshkaConfig, MatryoshkaForImageClassification, MatryoshkaModel
from hf_mrl.evaluation import MatryoshkaClassificationEvaluator, classification_metrics, load_results

from ..tiny import tiny_bert_config, tiny_vit_config

DIMS = [8, 16, 32]


def image_dataset(num_rows, seed):
    rng = np.random.default_rng(seed)
    return datasets.Dataset.from_dict(
        {
            "pixel_values": rng.normal(size=(num_rows, 1, 28, 28)).astype(np.float32),
            "label": rng.integers(0, 3, size=num_rows),
        }
    )


def image_collate(examples):
    return {
        "pixel_values": torch.tensor(np.array([example["pixel_values"] for example in examples]), dtype=torch.float32),
        "labels": torch.tensor([example["label"] for example in examples]),
    }


def classifier(efficient=False):
    torch.manual_seed(0)
    config = MatryoshkaConfig(
        backbone_config=tiny_vit_config(), matryoshka_dims=DIMS, num_labels=3, efficient=efficient
    )
    return MatryoshkaForImageClassification(config)


def brute_force_knn(query, reference, query_labels, reference_labels, k, leave_one_out):
    scores = query @ reference.T
    if leave_one_out:
        np.fill_diagonal(scores, -np.inf)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    correct = 0
    for row, neighbors in enumerate(order):
        votes = {}
        for label in reference_labels[neighbors]:
            votes[label] = votes.get(label, 0) + 1
        best = max(votes.values())
        winner = next(label for label in reference_labels[neighbors] if votes[label] == best)
        correct += winner == query_labels[row]
    return correct / len(query)


def pixel_batch(dataset):
    return torch.tensor(np.array(dataset["pixel_values"]), dtype=torch.float32)


@pytest.mark.parametrize("efficient", [False, True])
def test_one_pass_matches_per_dim_brute_force(efficient):
    model = classifier(efficient)
    queries, reference = image_dataset(30, 1), image_dataset(40, 2)
    dims = [8, 12, 16, 32]  # 12 sits between nesting dims
    evaluator = MatryoshkaClassificationEvaluator(
        queries, reference, collate_fn=image_collate, dims=dims, knn_k=(1, 5), name="toy", batch_size=16
    )
    calls = []
    hook = model.matryoshka.backbone.register_forward_hook(lambda *args: calls.append(1))
    results = evaluator(model)
    hook.remove()
    assert len(calls) == math.ceil(30 / 16) + math.ceil(40 / 16)  # each dataset encoded once, not once per dim
    assert model.training  # the evaluator restores the mode it found

    model.eval()
    query_pixels, reference_pixels = pixel_batch(queries), pixel_batch(reference)
    query_labels, reference_labels = np.array(queries["label"]), np.array(reference["label"])
    for dim in dims:
        query = model.encode(pixel_values=query_pixels, dim=dim)
        ref = model.encode(pixel_values=reference_pixels, dim=dim)
        for k in (1, 5):
            expected = brute_force_knn(query, ref, query_labels, reference_labels, k, leave_one_out=False)
            assert results[f"toy_dim{dim}_{k}nn"] == pytest.approx(expected)
        if dim in DIMS or efficient:
            predicted = model.predict(pixel_values=query_pixels, dim=dim).numpy()
            assert results[f"toy_dim{dim}_top1"] == pytest.approx((predicted == query_labels).mean())
        else:
            assert f"toy_dim{dim}_top1" not in results  # separate MRL heads exist only at nesting dims
    assert "toy_dim8_top5" not in results  # 3 classes: top-5 is meaningless
    assert evaluator.primary_metric == "toy_dim32_top1" and evaluator.greater_is_better


def test_leave_one_out_knn_and_model_without_heads(tmp_path):
    torch.manual_seed(0)
    model = MatryoshkaModel(MatryoshkaConfig(backbone_config=tiny_vit_config(), matryoshka_dims=DIMS))
    queries = image_dataset(25, 3)
    evaluator = MatryoshkaClassificationEvaluator(queries, knn_k=(1, 3), name="loo")
    results = evaluator(model, output_path=tmp_path / "results.json")
    assert set(results) == {f"loo_dim{dim}_{k}nn" for dim in DIMS for k in (1, 3)}  # default dims: nesting dims
    assert load_results(tmp_path / "results.json") == pytest.approx(results)
    assert evaluator.primary_metric == "loo_dim32_1nn"
    pixels, labels = pixel_batch(queries), np.array(queries["label"])
    for dim in DIMS:
        embedded = model.eval().encode(pixel_values=pixels, dim=dim)
        assert results[f"loo_dim{dim}_3nn"] == pytest.approx(
            brute_force_knn(embedded, embedded, labels, labels, 3, True)
        )


def test_text_model_and_precomputed_embeddings_agree():
    torch.manual_seed(0)
    model = MatryoshkaModel(MatryoshkaConfig(backbone_config=tiny_bert_config(), matryoshka_dims=[4, 32]))
    rng = np.random.default_rng(0)
    data = datasets.Dataset.from_dict(
        {"input_ids": rng.integers(1, 99, size=(20, 10)).tolist(), "label": rng.integers(0, 2, 20).tolist()}
    )
    evaluator = MatryoshkaClassificationEvaluator(data, knn_k=(1,), dims=[4, 7, 32], name="text")
    from_model = evaluator(model)
    embeddings = model.eval()(input_ids=torch.tensor(data["input_ids"])).embeddings.detach().numpy()
    assert evaluator.compute_metrics(embeddings) == pytest.approx(from_model)
    as_function = classification_metrics(embeddings, data["label"], dims=[4, 7, 32], knn_k=(1,), name="text")
    assert as_function == pytest.approx(from_model)


def test_bad_arguments_fail_before_encoding():
    model = classifier()
    data = image_dataset(10, 0)
    with pytest.raises(ValueError, match=r"`dims` must be an integer from 1 to 32.*got 64"):
        MatryoshkaClassificationEvaluator(data, dims=[8, 64], knn_k=(1,))(model)
    with pytest.raises(ValueError, match="`dims` must hold positive integers"):
        MatryoshkaClassificationEvaluator(data, dims=[0, 8], knn_k=(1,))
    with pytest.raises(ValueError, match="`knn_k` must be a non-empty list of positive integers"):
        MatryoshkaClassificationEvaluator(data, knn_k=(0,))
    with pytest.raises(ValueError, match="no label column 'target'"):
        MatryoshkaClassificationEvaluator(data, label_column="target", knn_k=(1,))
    with pytest.raises(ValueError, match="`search` must be one of"):
        MatryoshkaClassificationEvaluator(data, search="annoy", knn_k=(1,))
    with pytest.raises(ValueError, match="`batch_size` must be a positive integer"):
        MatryoshkaClassificationEvaluator(data, batch_size=0, knn_k=(1,))
    with pytest.raises(ValueError, match="more than the 9 reference items"):
        MatryoshkaClassificationEvaluator(data, knn_k=(10,))
    with pytest.raises(ValueError, match="more than the 5 reference items"):
        MatryoshkaClassificationEvaluator(data, image_dataset(5, 1), knn_k=(6,))
    with pytest.raises(ValueError, match="`labels` must have shape"):
        classification_metrics(np.zeros((5, 8)), [0, 1], dims=[8])
    with pytest.raises(ValueError, match="`matryoshka_logits` must have shape"):
        classification_metrics(
            np.ones((4, 8)),
            [0, 1, 0, 1],
            dims=[8],
            knn_k=(1,),
            matryoshka_logits=np.zeros((2, 3, 2)),
            nesting_dims=[4, 8],
        )
