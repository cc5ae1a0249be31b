"""Paths and names: a missing local folder is "folder not found: PATH" (never a Hub error), an unknown dataset
name lists the built-in ones, and an output path that is a file is refused before any work."""

from pathlib import Path

import datasets
import numpy as np
import pytest
from transformers import TrainingArguments

from hf_mrl import (
    MatryoshkaForImageClassification,
    MatryoshkaForSequenceClassification,
    MatryoshkaModel,
)
from hf_mrl.cli import main as cli_main
from hf_mrl.data import BUILTIN_DATASETS, DataArguments, load_split
from hf_mrl.hub import load_matryoshka_model
from hf_mrl.index import MatryoshkaIndex
from hf_mrl.modeling.file_checks import check_local_path, looks_like_local_path
from hf_mrl.modeling.modeling_dual_encoder import MatryoshkaDualEncoderModel
from hf_mrl.training import MatryoshkaTrainer, MatryoshkaTrainingArguments

from ..script_loading import load_script
from .files_helpers import snapshot, tiny_model

HUB_WORDS = ("repo id", "repo_id", "huggingface.co", "connection", "couldn't reach", "valid model identifier")




train_supervised = load_script("train_supervised", "reliability_train_supervised")
train_contrastive = load_script("train_contrastive", "reliability_train_contrastive")
TINY_VIT = ["--backbone", "vit", "--hidden_size", "32", "--num_layers", "2", "--num_attention_heads", "2"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model") / "model"
    tiny_model().save_pretrained(folder)
    return folder


# -- what looks like a local path ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "local"),
    [
        ("./model", True), ("../model", True), ("/srv/models/mrl", True), ("~/models/mrl", True),
        ("runs/exp1/model", True), ("C:\\models\\mrl", True), ("C:/models/mrl", True), ("models\\mrl", True),
        (".", True), (Path("model"), True),
        ("bert-base-uncased", False), ("my-org/mrl-minilm", False), ("my-org/mrl.v2", False), ("", False), (None, False),
    ],
)
def test_what_looks_like_a_local_path(name, local):
    assert looks_like_local_path(name) is local


def test_check_local_path_passes_hub_ids_and_existing_paths(tmp_path):
    for name in ("bert-base-uncased", "my-org/mrl-minilm", str(tmp_path), tmp_path):
        check_local_path(name, "model")


# -- a missing local folder, at every entry point ---------------------------------------------------------------

MISSING = "./no/such/model"
LOADERS = {
    "MatryoshkaModel.from_pretrained": lambda path: MatryoshkaModel.from_pretrained(path),
    "MatryoshkaForImageClassification.from_pretrained": lambda path: MatryoshkaForImageClassification.from_pretrained(path),
    "MatryoshkaForSequenceClassification.from_pretrained": lambda path: MatryoshkaForSequenceClassification.from_pretrained(path),
    "MatryoshkaModel.from_backbone": lambda path: MatryoshkaModel.from_backbone(path),
    "MatryoshkaDualEncoderModel.from_pretrained": lambda path: MatryoshkaDualEncoderModel.from_pretrained(path),
    "MatryoshkaDualEncoderModel.from_vision_text_pretrained": lambda path: MatryoshkaDualEncoderModel.from_vision_text_pretrained(path, path),
    "load_matryoshka_model": lambda path: load_matryoshka_model(path),
    "MatryoshkaIndex.load": lambda path: MatryoshkaIndex.load(path),
}


@pytest.mark.parametrize("path", [MISSING, "/no/such/model", "runs/no/such/model", "C:\\no\\such\\model"])
@pytest.mark.parametrize("loader", sorted(LOADERS))
def test_a_missing_local_folder_is_named_before_any_hub_lookup(loader, path):
    with pytest.raises(FileNotFoundError) as error:
        LOADERS[loader](path)
    message = str(error.value)
    assert message.startswith(f"folder not found: {path}")
    assert not any(word in message.lower() for word in HUB_WORDS)


@pytest.mark.parametrize(
    "argv",
    [
        ["eval", MISSING],
        ["index", "build", MISSING, "out-index"],
        ["export-st", MISSING, "out-st"],
        ["card", "results.json", "--model", MISSING, "--output", "README.md"],
        ["eval", "{model}", "--processor", MISSING],
        ["index", "search", "{model}", "--model", MISSING, "--query", "a cat"],
    ],
)
def test_cli_names_a_missing_local_folder(capsys, model_dir, argv):
    argv = [part.replace("{model}", str(model_dir)) for part in argv]
    assert cli_main(argv) == 1
    err = capsys.readouterr().err
    assert f"hf-mrl: error: folder not found: {MISSING}" in err


@pytest.mark.parametrize(
    ("script", "argv"),
    [
        ("supervised", ["--model_name_or_path", MISSING, "--dataset_name", "fashion-mnist"]),
        ("supervised", ["--backbone", "bert", "--tokenizer_name", MISSING, "--dataset_name", "wordnet-nouns"]),
        ("contrastive", ["--model_name_or_path", MISSING, "--dataset_name", "wordnet-pairs"]),
        ("contrastive", ["--task", "image-text", "--vision_model_name_or_path", MISSING, "--dataset_name", "emoji"]),
    ],
)
def test_scripts_name_a_missing_local_folder(tmp_path, script, argv):
    main = {"supervised": train_supervised.main, "contrastive": train_contrastive.main}[script]
    with pytest.raises(FileNotFoundError, match=f"^folder not found: {MISSING}"):
        main([*argv, "--output_dir", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


# -- dataset names ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"dataset_name": "nosuch"}, ValueError, ["not a built-in dataset", *BUILTIN_DATASETS, "offline mode"]),
        ({"dataset_name": "someone/nosuch"}, ValueError, ["not a built-in dataset", "fashion-mnist", "Hub could not"]),
        ({"dataset_name": "fashion-mnst"}, ValueError, ["did you mean 'fashion-mnist'", "built-in datasets"]),
        ({"dataset_name": "./no/such/data"}, FileNotFoundError, ["folder not found: ./no/such/data", "Hub was not asked"]),
        ({"dataset_name": "missing.csv"}, FileNotFoundError, ["file not found: missing.csv"]),
        ({"train_file": "/no/such/train.csv"}, FileNotFoundError, ["file not found: /no/such/train.csv", "`train_file`"]),
        ({"dataset_name": "C:\\data\\reviews"}, FileNotFoundError, ["folder not found: C:\\data\\reviews"]),
    ],
)
def test_dataset_names_and_files(monkeypatch, kwargs, error, words):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(error) as raised:
        load_split(DataArguments(**kwargs), "train")
    for word in words:
        assert word in str(raised.value)


def test_cli_lists_the_built_in_datasets_for_an_unknown_name(capsys, model_dir):
    assert cli_main(["eval", str(model_dir), "--dataset_name", "nosuch"]) == 1
    err = capsys.readouterr().err
    assert "not a built-in dataset" in err and "wordnet-nouns" in err and "fashion-mnist" in err


# -- output paths that are files, refused before any work -------------------------------------------------------


@pytest.fixture
def a_file(tmp_path):
    path = tmp_path / "results"
    path.write_text("keep me")
    return path


def test_training_arguments_refuse_an_output_dir_that_is_a_file(a_file):
    with pytest.raises(ValueError, match=r"`output_dir` .*results' is a file, not a folder"):
        MatryoshkaTrainingArguments(output_dir=str(a_file))
    with pytest.raises(ValueError, match=r"cannot be created: .*results' is a file"):
        MatryoshkaTrainingArguments(output_dir=str(a_file / "run"))


def test_trainer_refuses_a_plain_training_arguments_output_dir_that_is_a_file(a_file):
    rows = datasets.Dataset.from_dict({"image": [np.zeros((28, 28), dtype=np.uint8)], "label": [0]})
    with pytest.raises(ValueError, match="is a file, not a folder"):
        MatryoshkaTrainer(model=tiny_model("classifier"), args=TrainingArguments(output_dir=str(a_file)), train_dataset=rows)
    assert a_file.read_text() == "keep me"


@pytest.mark.parametrize(
    ("script", "argv"),
    [
        ("supervised", ["--dataset_name", "fashion-mnist", *TINY_VIT]),
        ("contrastive", ["--dataset_name", "wordnet-pairs", "--max_steps", "1"]),
    ],
)
def test_scripts_refuse_an_output_dir_that_is_a_file(a_file, script, argv):
    main = {"supervised": train_supervised.main, "contrastive": train_contrastive.main}[script]
    with pytest.raises(ValueError, match="is a file, not a folder"):
        main([*argv, "--output_dir", str(a_file)])
    assert a_file.read_text() == "keep me"


def test_scripts_refuse_a_foreign_model_folder_before_training(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text('{"model_type": "bert"}')
    (tmp_path / "model" / "data.csv").write_text("x\n")
    before = snapshot(tmp_path)
    with pytest.raises(ValueError, match="refusing to replace"):
        train_supervised.main(["--dataset_name", "fashion-mnist", *TINY_VIT, "--output_dir", str(tmp_path)])
    assert snapshot(tmp_path) == before  # no checkpoint, no results: refused before training


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["eval", "{model}", "--output_dir", "{file}"], "`--output_dir` '{file}' is a file, not a folder"),
        (["index", "build", "{model}", "{file}"], "`output` '{file}' is a file, not a folder"),
        (["export-st", "{model}", "{file}"], "`output` '{file}' is a file, not a folder"),
        (["card", "r.json", "--model", "{model}", "--output", "{folder}"], "`--output` '{folder}' is a folder"),
    ],
)
def test_cli_refuses_bad_output_paths_before_loading(capsys, model_dir, a_file, argv, words):
    fill = {"{model}": str(model_dir), "{file}": str(a_file), "{folder}": str(a_file.parent)}
    for key, value in fill.items():
        argv = [part.replace(key, value) for part in argv]
        words = words.replace(key, value)
    assert cli_main(argv) == 1
    assert words in capsys.readouterr().err
    assert a_file.read_text() == "keep me"
