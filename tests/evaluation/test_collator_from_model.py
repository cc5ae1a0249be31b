"""Evaluators given no `collate_fn` encode raw texts with the model's own tokenizer, as `model.encode` does."""

import datasets
import pytest
from transformers import AutoTokenizer

from hf_mrl import MatryoshkaClassificationEvaluator, MatryoshkaModel, MatryoshkaRetrievalEvaluator
from hf_mrl.data import TextCollator
from hf_mrl.evaluation.base import collator_from_model

TEXTS = ["a small dog", "a big dog", "a red car", "a blue car", "a theory of gravity", "a law of motion"] * 2
LABELS = [0, 0, 1, 1, 2, 2] * 2


@pytest.fixture(scope="module")
def text_model(tiny_text_tower):
    model = MatryoshkaModel.from_backbone(tiny_text_tower, matryoshka_dims=[8, 16, 32])
    model.processor = AutoTokenizer.from_pretrained(tiny_text_tower)
    return model


def test_retrieval_without_collate_fn_equals_an_explicit_text_collator(text_model):
    rows = datasets.Dataset.from_dict({"text": TEXTS, "label": LABELS})
    implicit = MatryoshkaRetrievalEvaluator(rows, ks=[5], name="r")(text_model)
    collator = TextCollator(text_model.processor, max_length=text_model.processor.model_max_length, label_column=None)
    explicit = MatryoshkaRetrievalEvaluator(rows, collate_fn=collator, ks=[5], name="r")(text_model)
    assert implicit == pytest.approx(explicit)


def test_classification_without_collate_fn_reads_any_single_text_column(text_model):
    rows = datasets.Dataset.from_dict({"sentence": TEXTS, "label": LABELS})
    results = MatryoshkaClassificationEvaluator(rows, knn_k=[1, 3], name="c")(text_model)
    assert {"c_dim8_1nn", "c_dim32_3nn"} <= set(results)


def test_no_text_column_is_named():
    rows = datasets.Dataset.from_dict({"a": ["x"], "b": ["y"], "label": [0]})
    model = type("Model", (), {"main_input_name": "input_ids"})()
    with pytest.raises(ValueError, match=r"not one text column.*columns: \['a', 'b', 'label'\]"):
        collator_from_model(model, rows)
