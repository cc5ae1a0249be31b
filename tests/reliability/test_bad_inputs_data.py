"""Bad data arguments (the data layer the scripts and the CLI share): one-line `ValueError`s naming the argument,
the value and what is allowed; a split that does not exist is found before any split is loaded, and never
replaced by another one."""

import pytest

from hf_mrl.data import DataArguments, check_splits, load_split, load_splits

BUILTIN = {"dataset_name": "fashion-mnist", "max_train_samples": 8, "max_eval_samples": 8}


@pytest.fixture
def no_loading(monkeypatch):
    """The built-in Fashion-MNIST loader fails the test: the splits must be checked before it runs."""

    def spy(*args, **kwargs):
        raise AssertionError("a split was loaded before the bad split name was found")

    monkeypatch.setattr("hf_mrl.data.resolve.load_fashion_mnist", spy)


@pytest.fixture
def csv_file(tmp_path):
    path = tmp_path / "reviews.csv"
    path.write_text("text,label\n" + "".join(f"review {i},{i % 2}\n" for i in range(10)))
    return str(path)


CASES = [
    pytest.param(lambda csv: load_splits(DataArguments(**BUILTIN, eval_split="nosuch")), ["eval_split", "'nosuch'", "available splits: ['train', 'test']"], id="eval-split"),
    pytest.param(lambda csv: load_splits(DataArguments(**BUILTIN, eval_split="validation")), ["eval_split", "'validation'", "available splits"], id="eval-split-validation-missing"),
    pytest.param(lambda csv: load_splits(DataArguments(**BUILTIN, test_split="nosuch[:10]")), ["test_split", "'nosuch[:10]'", "available splits"], id="test-split-sliced"),
    pytest.param(lambda csv: load_splits(DataArguments(**BUILTIN, train_split="training")), ["train_split", "'training'", "available splits"], id="train-split"),
    pytest.param(lambda csv: check_splits(DataArguments(**BUILTIN, eval_split="nosuch")), ["eval_split", "available splits"], id="check-splits"),
    pytest.param(lambda csv: load_split(DataArguments(**BUILTIN), "nosuch", argument="split"), ["split", "'nosuch'", "available splits"], id="load-split"),
    pytest.param(lambda csv: load_splits(DataArguments(train_file=csv, eval_split="validation")), ["eval_split", "'validation'", "available splits: ['train']"], id="csv-eval-split"),
    pytest.param(lambda csv: load_splits(DataArguments(**BUILTIN, eval_split="test[:x]")), ["eval_split", "test[:x]", "bad slice"], id="bad-slice"),
    pytest.param(lambda csv: load_splits(DataArguments(**BUILTIN, eval_split="test", validation_split_percentage=10)), ["eval_split", "validation_split_percentage", "not both"], id="split-and-percentage"),
    pytest.param(lambda csv: load_splits(DataArguments(dataset_name="fashion-mnist", max_eval_samples=0)), ["max_eval_samples", "positive integer", "0"], id="max-eval-samples-0"),
    pytest.param(lambda csv: load_splits(DataArguments(dataset_name="fashion-mnist"), task="pairs"), ["fashion-mnist", "classification", "pairs"], id="task-mismatch"),
]


@pytest.mark.parametrize(("call", "words"), CASES)
def test_bad_data_argument(no_loading, csv_file, call, words):
    with pytest.raises(ValueError) as error:
        call(csv_file)
    message = str(error.value)
    assert "\n" not in message and not [word for word in words if word not in message], message


def test_an_eval_only_run_ignores_the_train_split(no_loading):
    """With need_train=False the train split is neither checked nor loaded: only the named eval split is."""
    with pytest.raises(ValueError, match="`eval_split` 'nosuch'"):
        load_splits(DataArguments(dataset_name="fashion-mnist", train_split="training", eval_split="nosuch"),
                    need_train=False)
