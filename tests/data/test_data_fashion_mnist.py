import datasets
import numpy as np
import pytest

from hf_mrl.data import (
    FASHION_MNIST_CAPTION_TEMPLATES,
    FASHION_MNIST_CLASS_NAMES,
    fashion_mnist_class_prompts,
    load_fashion_mnist,
    load_fashion_mnist_captions,
)
from hf_mrl.data.fashion_mnist import FASHION_MNIST_DIR, read_idx


def test_class_names_are_the_real_ones():
    assert FASHION_MNIST_CLASS_NAMES == (
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"
    )  # fmt: skip


def test_idx_headers_give_the_split_sizes():
    assert read_idx(FASHION_MNIST_DIR / "train-labels-idx1-ubyte.gz").shape == (60000,)
    assert read_idx(FASHION_MNIST_DIR / "t10k-labels-idx1-ubyte.gz").shape == (10000,)
    images = read_idx(FASHION_MNIST_DIR / "t10k-images-idx3-ubyte.gz", limit=3)
    assert images.shape == (3, 28, 28) and images.dtype == np.uint8


def test_features_images_and_labels():
    dataset = load_fashion_mnist(limit=8)
    assert isinstance(dataset, datasets.DatasetDict) and set(dataset) == {"train", "test"}
    train = dataset["train"]
    assert len(train) == 8
    assert isinstance(train.features["image"], datasets.Image)
    assert train.features["label"].names == list(FASHION_MNIST_CLASS_NAMES)
    image = train[0]["image"]
    assert image.mode == "L" and image.size == (28, 28)
    # The first training image of Fashion-MNIST is an ankle boot (label 9).
    assert train[0]["label"] == 9
    assert np.asarray(image).max() > 0


def test_single_split_is_a_dataset():
    test = load_fashion_mnist(split="test", limit=4)
    assert isinstance(test, datasets.Dataset) and len(test) == 4


def test_missing_debian_files_name_the_package(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"apt-get install dataset-fashion-mnist.*source="):
        load_fashion_mnist(data_dir=tmp_path / "absent")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"split": "validation"}, "split"), ({"limit": 0}, "limit"), ({"source": "x", "data_dir": "y"}, "data_dir")],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        load_fashion_mnist(**kwargs)


def test_local_saved_source_gets_the_standard_features(tmp_path):
    original = load_fashion_mnist(split="train", limit=6)
    # A copy as the Hub's version stores it: plain class names differ, ids are the same.
    hub_like = original.cast_column("label", datasets.ClassLabel(names=[f"class {i}" for i in range(10)]))
    hub_like.save_to_disk(str(tmp_path / "fmnist"))
    loaded = load_fashion_mnist(source=tmp_path / "fmnist")
    assert loaded.features["label"].names == list(FASHION_MNIST_CLASS_NAMES)
    assert loaded["label"][:] == original["label"][:]


def test_captions_match_labels_and_are_deterministic():
    prompts = fashion_mnist_class_prompts()
    assert prompts[9][0] == "a photo of an ankle boot."
    captions = load_fashion_mnist_captions(split="train", limit=40)
    assert set(captions.column_names) == {"image", "text", "label"}
    for text, label in zip(captions["text"], captions["label"], strict=True):
        assert text in prompts[label]
    assert len(set(captions["text"])) > len(FASHION_MNIST_CAPTION_TEMPLATES)  # templates vary
    together = load_fashion_mnist_captions(limit=40)
    assert together["train"]["text"][:] == captions["text"][:]
    assert load_fashion_mnist_captions(split="train", limit=40, seed=1)["text"][:] != captions["text"][:]


def test_bad_templates():
    with pytest.raises(ValueError, match="templates"):
        load_fashion_mnist_captions(templates=["no placeholder"])


def test_full_split_is_cached(tmp_path):
    test = load_fashion_mnist(split="test", cache_dir=tmp_path)
    assert len(test) == 10000 and np.bincount(test["label"][:]).tolist() == [1000] * 10
    (cache,) = tmp_path.iterdir()
    assert cache.name.startswith("fashion_mnist_test_") and (cache / "state.json").is_file()
    again = load_fashion_mnist(split="test", cache_dir=tmp_path)
    assert again.cache_files[0]["filename"].startswith(str(cache))
    assert np.array_equal(np.asarray(again[123]["image"]), np.asarray(test[123]["image"]))
