"""`hf_mrl.data.resolve`: one data layer for built-ins, data files and folders, with split specs and one-line errors."""

import json

import datasets
import numpy as np
import pytest
from PIL import Image

from hf_mrl.data import DataArguments, load_split, load_splits, slice_split, split_names, validate_data_arguments


def _write_csv(path, header, rows):
    path.write_text("\n".join([header, *(",".join(map(str, row)) for row in rows)]) + "\n")
    return str(path)


@pytest.fixture
def labelled_files(tmp_path):
    """Train and test CSVs with string labels; 'fox' appears only in the test file."""
    train = _write_csv(
        tmp_path / "train.csv", "review,stars", [(f"text {i}", ["bad", "good", "ok"][i % 3]) for i in range(30)]
    )
    test = _write_csv(tmp_path / "test.csv", "review,stars", [(f"other {i}", ["good", "fox"][i % 2]) for i in range(6)])
    return train, test


def test_separate_files_share_one_class_label(labelled_files):
    train, test = labelled_files
    args = DataArguments(train_file=train, test_file=test, text_column="review", label_column="stars")
    splits = load_splits(args)
    assert splits.class_names == ["bad", "fox", "good", "ok"]
    assert splits.train.features["label"] == splits.eval.features["label"]
    # The test file is the test split; the eval split is 10% of the train file held out (no validation file).
    assert splits.train.column_names == ["text", "label"] and (len(splits.train), len(splits.eval)) == (27, 3)
    assert (splits.eval_split, splits.test_split) == ("10% of train held out (seed 42)", "test")
    assert splits.test.features["label"].int2str(splits.test[1]["label"]) == "fox"
    assert split_names(args) == ["train", "test"]
    with_validation = load_splits(DataArguments(train_file=train, validation_file=test, test_file=test,
                                                text_column="review", label_column="stars"))
    assert (len(with_validation.train), with_validation.eval_split, with_validation.test_split) == (30, "validation", "test")


def test_single_file_holds_out_a_seeded_validation_part(labelled_files, capsys):
    train, _ = labelled_files
    splits = load_splits(DataArguments(dataset_name=train, text_column="review", label_column="stars"))
    assert (len(splits.train), len(splits.eval)) == (27, 3)
    assert "holding 10% of the train split out as the eval split" in capsys.readouterr().err
    assert set(splits.train["text"]).isdisjoint(splits.eval["text"])
    custom = DataArguments(train_file=train, text_column="review", label_column="stars", validation_split_percentage=20)
    splits = load_splits(custom, seed=1)
    assert (len(splits.train), len(splits.eval)) == (24, 6)
    assert splits.eval_split == "20% of train held out (seed 1)"
    assert load_splits(custom, seed=1).eval["text"] == splits.eval["text"]
    assert load_splits(custom, need_train=False, seed=1).train is None


def test_slicing_and_max_samples(labelled_files):
    train, test = labelled_files
    base = dict(train_file=train, test_file=test, text_column="review", label_column="stars")
    splits = load_splits(
        DataArguments(**base, train_split="train[:50%]", eval_split="train[-10%:]", max_train_samples=4)
    )
    assert splits.train["text"] == [f"text {i}" for i in range(4)]
    assert splits.eval["text"] == ["text 27", "text 28", "text 29"]
    assert load_split(DataArguments(**base), "train[10:12]")["text"] == ["text 10", "text 11"]
    assert len(load_split(DataArguments(**base, max_eval_samples=2), "test")) == 2
    stream = load_splits(DataArguments(**base, streaming=True)).train  # 90% of train: the held-out part is not in it
    assert isinstance(stream, datasets.IterableDataset) and next(iter(stream))["text"] in {f"text {i}" for i in range(30)}


def test_slice_split_rounds_percentages_like_read_instruction():
    rows = datasets.Dataset.from_dict({"x": list(range(10))})
    assert slice_split(rows, "train[:33%]")["x"] == [0, 1, 2]
    assert slice_split(rows, "test[-10%:]")["x"] == [9]
    assert slice_split(rows, "[2:4]")["x"] == [2, 3]
    assert slice_split(rows, "train") is rows


def test_jsonl_pairs_keep_their_columns(tmp_path):
    for name, count in (("train", 8), ("validation", 3)):
        rows = [{"anchor": f"word {i}", "positive": f"definition {i}"} for i in range(count)]
        (tmp_path / f"{name}.jsonl").write_text("\n".join(json.dumps(row) for row in rows))
    args = DataArguments(train_file=str(tmp_path / "train.jsonl"), validation_file=str(tmp_path / "validation.jsonl"))
    splits = load_splits(args, task="pairs")
    assert splits.train.column_names == ["anchor", "positive"] and len(splits.eval) == 3
    assert (splits.eval_split, splits.class_names) == ("validation", None)


def test_parquet_with_integer_labels(tmp_path):
    datasets.Dataset.from_dict({"sentence": ["a", "b", "c", "d"], "y": [0, 1, 1, 0]}).to_parquet(tmp_path / "d.parquet")
    args = DataArguments(
        dataset_name=str(tmp_path / "d.parquet"),
        text_column="sentence",
        label_column="y",
        validation_split_percentage=50,
    )
    splits = load_splits(args)
    assert splits.train.column_names == ["text", "label"] and splits.class_names is None


def test_image_paths_in_a_csv_and_an_image_folder(tmp_path):
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for label in ("cat", "dog"):
            folder = tmp_path / "images" / split / label
            folder.mkdir(parents=True)
            for i in range(2):
                Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)).save(folder / f"{i}.png")
    rows = [(f"images/train/{label}/{i}.png", label) for label in ("cat", "dog") for i in range(2)]
    csv = _write_csv(tmp_path / "pictures.csv", "path,animal", rows)
    splits = load_splits(DataArguments(train_file=csv, test_file=csv, image_column="path", label_column="animal"))
    assert isinstance(splits.train[0]["image"], Image.Image) and splits.class_names == ["cat", "dog"]
    folder = load_splits(DataArguments(dataset_name=str(tmp_path / "images")))
    assert (folder.eval_split, len(folder.eval), folder.class_names) == ("test", 4, ["cat", "dog"])


def test_builtin_fashion_mnist_with_few_rows():
    splits = load_splits(DataArguments(dataset_name="fashion-mnist", max_train_samples=6, max_eval_samples=4))
    assert (len(splits.train), len(splits.eval), splits.eval_split, splits.test) == (6, 4, "test", None)
    assert splits.class_names[0] == "T-shirt/top"
    sliced = load_split(DataArguments(dataset_name="fashion-mnist", max_eval_samples=3), "test[:5]")
    assert (
        sliced["label"] == load_split(DataArguments(dataset_name="fashion-mnist", max_eval_samples=3), "test")["label"]
    )


def _errors(tmp_path):
    """(DataArguments fields, task, exception type, message fragment) of every bad input."""
    good = _write_csv(tmp_path / "good.csv", "text,label", [("a", "x"), ("b", "y"), ("c", "x")])
    floats = _write_csv(tmp_path / "floats.csv", "text,score", [("a", 0.5), ("b", 1.0)])
    (tmp_path / "empty.csv").write_text("")
    _write_csv(tmp_path / "header.csv", "text,label", [])
    (tmp_path / "notes.txt").write_text("hello\n")
    (tmp_path / "val.csv").write_text((tmp_path / "good.csv").read_text())
    return [
        ({}, "classification", ValueError, "Give `dataset_name`"),
        ({"dataset_name": "fashion-mnist", "train_file": good}, "classification", ValueError, "not both"),
        (
            {"dataset_name": "fashion-mnist", "max_train_samples": 0},
            "classification",
            ValueError,
            "`max_train_samples` must be None or a positive integer, got 0.",
        ),
        (
            {"train_file": good, "validation_split_percentage": 100},
            "classification",
            ValueError,
            "`validation_split_percentage` must be an integer from 1 to 99, got 100.",
        ),
        (
            {"dataset_name": "emoji"},
            "classification",
            ValueError,
            "`dataset_name` 'emoji' is a built-in image-text dataset; built-in classification datasets: "
            "['fashion-mnist', 'wordnet-nouns'].",
        ),
        (
            {"dataset_name": "wordnet"},
            "classification",
            ValueError,
            "use 'wordnet-nouns' (classification) or 'wordnet-pairs'",
        ),
        ({"dataset_name": "fashion_mnist"}, "classification", ValueError, "did you mean 'fashion-mnist'?"),
        (
            {"dataset_name": "./missing.csv"},
            "classification",
            FileNotFoundError,
            "'./missing.csv' looks like a local path",
        ),
        ({"train_file": str(tmp_path / "nope.csv")}, "classification", FileNotFoundError, "does not exist"),
        ({"dataset_name": "fashion-mnist", "text_column": "x"}, "classification", ValueError, "has fixed columns"),
        (
            {"train_file": str(tmp_path / "notes.txt")},
            "classification",
            ValueError,
            "unsupported extension; allowed: .csv, .tsv, .json, .jsonl, .parquet.",
        ),
        (
            {"train_file": good, "eval_split": "test"},
            "classification",
            ValueError,
            "`eval_split` 'test' is not a split of",
        ),
        (
            {"train_file": good, "train_split": "train[:x]"},
            "classification",
            ValueError,
            "`train_split` 'train[:x]' has a bad slice",
        ),
        (
            {"train_file": good, "text_column": "body"},
            "classification",
            ValueError,
            "Column 'body' (`text_column`) is not in",
        ),
        (
            {"train_file": str(tmp_path / "empty.csv")},
            "classification",
            ValueError,
            f"`train_file` '{tmp_path / 'empty.csv'}' has no rows.",
        ),
        ({"train_file": str(tmp_path / "header.csv")}, "classification", ValueError, "has no rows."),
        (
            {"train_file": floats, "label_column": "score"},
            "classification",
            ValueError,
            "`label_column` 'score' holds floats (e.g. 0.5); classification needs integer ids or strings.",
        ),
        (
            {"train_file": good, "validation_file": str(tmp_path / "val.csv"), "validation_split_percentage": 10},
            "classification",
            ValueError,
            "has a validation split",
        ),
        (
            {"dataset_name": "some-org/not-a-dataset"},
            "classification",
            ValueError,
            "is not a built-in dataset (built-in: fashion-mnist, wordnet-nouns",
        ),
    ]


def test_every_bad_input_is_one_clear_line(tmp_path):
    for fields, task, error_type, fragment in _errors(tmp_path):
        with pytest.raises(error_type) as error:
            load_splits(DataArguments(**fields), task)
        message = str(error.value)
        assert fragment in message, (fields, message)
        assert "\n" not in message


def test_unknown_split_lists_the_available_ones(labelled_files):
    train, _ = labelled_files
    args = DataArguments(train_file=train, text_column="review", label_column="stars")
    with pytest.raises(ValueError, match=r"`split` 'test' is not a split of .*available splits: \['train'\]"):
        load_split(args, "test")
    with pytest.raises(ValueError, match="`reference_split` 'dev'"):
        load_split(args, "dev", argument="reference_split")
    validate_data_arguments(args, "classification")  # no loading, no error


def test_data_arguments_are_command_line_flags():
    from transformers import HfArgumentParser

    parser = HfArgumentParser(DataArguments)
    assert "train[:90%]" in parser.format_help()
    (args,) = parser.parse_args_into_dataclasses(
        ["--dataset_name", "fashion-mnist", "--max_eval_samples", "5", "--streaming"]
    )
    assert (args.dataset_name, args.max_eval_samples, args.streaming, args.train_split) == (
        "fashion-mnist",
        5,
        True,
        "train",
    )
