"""Inputs a user-style sweep found still answered silently (issue 22): float images outside the float rule, labels
that are all -100, empty texts, a CSV header that repeats a column, test labels absent from the reference set and
card metadata that does not fit the model or the Hub. Each is refused with one line naming the argument, the value
and what is allowed, before any work."""

import warnings

import datasets
import numpy as np
import pytest
import torch
from PIL import Image
from transformers import BertTokenizerFast

from hf_mrl import MatryoshkaConfig, MatryoshkaModel
from hf_mrl.data import ImageCollator, TextCollator
from hf_mrl.data.generic import load_classification_dataset
from hf_mrl.evaluation import MatryoshkaClassificationEvaluator, MatryoshkaRetrievalEvaluator
from hf_mrl.hub.card import card_from_results
from hf_mrl.modeling.encoding import image_array, prepared_image

from ..tiny import tiny_bert_config, tiny_vit_config
from ..trainer_helpers import image_rows, tiny_classifier, tiny_trainer
from .files_helpers import tiny_model
from .refusals import never, raises_one_line


@pytest.fixture(scope="module")
def image_model():
    torch.manual_seed(0)
    return MatryoshkaModel(MatryoshkaConfig(backbone_config=tiny_vit_config(), matryoshka_dims=[8, 32])).eval()


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "cat", "dog", "big", "small", "red", "blue"]
    path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    path.write_text("\n".join(vocab) + "\n")
    return BertTokenizerFast(vocab_file=str(path))


@pytest.fixture(scope="module")
def text_model(tokenizer):
    torch.manual_seed(0)
    model = MatryoshkaModel(MatryoshkaConfig(backbone_config=tiny_bert_config(), matryoshka_dims=[8, 32])).eval()
    model.processor = tokenizer
    return model


# -- 1. float images: [0, 1] scaled, whole numbers in [0, 255] read as 8-bit, anything else refused ------------------


def test_a_float_image_in_0_2_is_refused_naming_the_index_and_range(image_model, monkeypatch):
    image = np.random.default_rng(0).random((28, 28)) * 2
    monkeypatch.setattr(MatryoshkaModel, "forward", never)
    raises_one_line(lambda: image_model.encode([np.zeros((28, 28), np.uint8), image]), "`inputs[1]`", "0", "2",
            "[0, 1]", "whole numbers from 0 to 255")
    as_pil = Image.fromarray(image.astype(np.float32), "F")
    raises_one_line(lambda: image_model.encode([as_pil]), "`inputs[0]`", "[0, 1]", "whole numbers")


def test_float_images_by_the_rule_give_the_8_bit_pixels():
    grey = np.random.default_rng(1).integers(0, 256, (28, 28), dtype=np.uint8)
    np.testing.assert_array_equal(image_array(grey.astype(np.float32), "x"), grey)  # whole numbers: 8-bit
    np.testing.assert_array_equal(image_array(grey / 255.0, "x"), grey)  # [0, 1]: scaled by 255
    np.testing.assert_array_equal(np.asarray(prepared_image(Image.fromarray(grey.astype(np.float32), "F"), 1)), grey)
    np.testing.assert_array_equal(np.asarray(prepared_image(Image.fromarray((grey / 255.0).astype(np.float32), "F"), 1)),
                                  np.rint((grey / 255.0).astype(np.float32) * 255.0).astype(np.uint8))
    raises_one_line(lambda: image_array(grey + 0.5, "`inputs[2]`"), "`inputs[2]`", "0.5", "255.5")


def test_the_training_collator_refuses_a_float_image_in_0_2_naming_the_row():
    collator = ImageCollator(image_size=28, num_channels=1, label_column=None)
    good = np.random.default_rng(0).random((28, 28))
    raises_one_line(lambda: collator([{"image": good}, {"image": good * 2}]), "`image` row 1", "[0, 1]")
    as_pil = Image.fromarray((good * 2).astype(np.float32), "F")
    raises_one_line(lambda: collator([{"image": good}, {"image": as_pil}]), "`image` row 1", "whole numbers")


# -- 2. labels that are all -100 -------------------------------------------------------------------------------------


def test_a_classifier_forward_with_every_label_ignored_is_refused(monkeypatch):
    model = tiny_model("classifier")
    pixels = torch.randn(3, 1, 28, 28)
    monkeypatch.setattr(type(model.matryoshka), "forward_checked", never)
    raises_one_line(lambda: model(pixel_values=pixels, labels=torch.full((3,), -100)), "`labels`", "-100", "NaN", "0 to 2")


def test_a_classifier_forward_with_some_labels_ignored_still_trains():
    model = tiny_model("classifier")
    loss = model(pixel_values=torch.randn(3, 1, 28, 28), labels=torch.tensor([-100, 1, -100])).loss
    assert torch.isfinite(loss)


def test_the_trainer_refuses_a_train_set_whose_labels_are_all_ignored(tmp_path, monkeypatch):
    monkeypatch.setattr("transformers.Trainer.train", never)
    rows = image_rows(8).cast_column("label", datasets.Value("int64")).map(lambda row: {"label": -100})
    raises_one_line(lambda: tiny_trainer(tmp_path, model=tiny_classifier(), train_dataset=rows).train(),
            "train dataset", "`label`", "-100", "8 rows")


# -- 3. empty, blank and control-only texts ----------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "   ", "\t\n", "\x00\x01", "\u200b"])
def test_encode_refuses_an_empty_text_naming_its_index(text_model, monkeypatch, text):
    monkeypatch.setattr(MatryoshkaModel, "forward", never)
    raises_one_line(lambda: text_model.encode(["a cat", "a dog", "big", text]), "`inputs[3]` is empty", "nothing to embed")
    raises_one_line(lambda: text_model.encode(text), "`inputs[0]` is empty")


def test_evaluators_name_the_column_and_row_of_an_empty_text(tokenizer):
    rows = datasets.Dataset.from_dict({"text": ["a cat", "a dog", None, "big"], "label": [0, 1, 0, 1]})
    collate = TextCollator(tokenizer)
    raises_one_line(lambda: MatryoshkaClassificationEvaluator(rows, collate_fn=collate, knn_k=[1]),
            "`dataset`", "'text'", "row 2", "None")
    blank = datasets.Dataset.from_dict({"text": ["a cat", " ", "red", "big"], "label": [0, 1, 0, 1]})
    raises_one_line(lambda: MatryoshkaClassificationEvaluator(rows.select([0, 1]), reference_dataset=blank,
                                                      collate_fn=collate, knn_k=[1]),
            "`reference_dataset`", "'text'", "row 1", "empty")
    queries = datasets.Dataset.from_dict({"text": ["a cat", ""], "label": [0, 1]})
    raises_one_line(lambda: MatryoshkaRetrievalEvaluator(queries, collate_fn=collate), "`queries`", "row 1", "empty")


# -- 4. a CSV header that repeats a column ---------------------------------------------------------------------------


def test_a_csv_header_repeating_a_column_is_refused_naming_file_and_column(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("text,text,label\na cat,a dog,0\nbig,small,1\n")
    raises_one_line(lambda: load_classification_dataset(str(path), split="train"), "data.csv", "'text'", "repeats")
    tsv = tmp_path / "data.tsv"
    tsv.write_text("label\ttext\tlabel\n0\ta cat\t1\n")
    raises_one_line(lambda: load_classification_dataset(str(tsv), split="train"), "data.tsv", "'label'", "repeats")


# -- 5. test labels absent from the reference labels -----------------------------------------------------------------


def test_no_test_label_in_the_reference_set_is_refused_naming_the_labels():
    test = image_rows(6, num_labels=2)
    reference = datasets.Dataset.from_dict({"image": test["image"], "label": [5, 6, 5, 6, 5, 6]})
    raises_one_line(lambda: MatryoshkaClassificationEvaluator(test, reference_dataset=reference, knn_k=[1]),
            "`dataset`", "`reference_dataset`", "0, 1", "5, 6", "0.0")


def test_some_test_labels_missing_from_the_reference_warn_once():
    test = image_rows(6, num_labels=3)
    reference = datasets.Dataset.from_dict({"image": test["image"], "label": [0, 1, 0, 1, 0, 1]})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        MatryoshkaClassificationEvaluator(test, reference_dataset=reference, knn_k=[1])
    messages = [str(item.message) for item in caught if "reference_dataset" in str(item.message)]
    assert len(messages) == 1 and "2" in messages[0] and "never score" in messages[0], messages


# -- 6. model cards: result dims, licence and dataset ids ----------------------------------------------------------


def test_a_card_refuses_results_at_a_dim_the_model_does_not_have():
    model = tiny_model("embedding")  # 24-d, nesting dims [8, 24]
    raises_one_line(lambda: card_from_results({"eval_dim8_1nn": 0.5, "eval_dim999_1nn": 0.4}, model),
            "eval_dim999_1nn", "999", "24", "[8, 24]")
    assert "eval" in card_from_results({"eval_dim8_1nn": 0.5, "eval_dim24_1nn": 0.6}, model)


@pytest.mark.parametrize("license", ["mit\nfoo: bar", "apache 2.0", "", "mit'"])
def test_a_card_refuses_a_licence_that_is_not_one_hub_identifier(license):
    raises_one_line(lambda: card_from_results(None, tiny_model("embedding"), license=license), "`license`", repr(license),
            "apache-2.0")


def test_a_card_accepts_hub_licences_and_refuses_bad_dataset_ids():
    model = tiny_model("embedding")
    for license in ("mit", "apache-2.0", "other", "cc-by-4.0"):
        assert f"license: {license}" in card_from_results(None, model, license=license)
    raises_one_line(lambda: card_from_results(None, model, datasets=["org/data", "bad id\nfoo: bar"]), "`datasets`",
            "bad id", "Hub dataset id")
    raises_one_line(lambda: card_from_results(None, model, datasets="a/b/c"), "`datasets`", "'a/b/c'")


@pytest.mark.parametrize("query", ["", "  ", "\x01"])
def test_index_search_refuses_an_empty_query(tmp_path, capsys, query):
    from hf_mrl.cli import main

    assert main(["index", "search", str(tmp_path / "no-index"), "--model", str(tmp_path), "--query", "a cat",
                 "--query", query]) == 1
    error = capsys.readouterr().err
    assert "--query #2" in error and "empty" in error and "nothing to embed" in error, error
