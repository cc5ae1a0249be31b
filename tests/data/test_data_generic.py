import csv

import datasets
import pytest

from hf_mrl.data import (
    FASHION_MNIST_CLASS_NAMES,
    WORDNET_NOUN_CATEGORIES,
    load_classification_dataset,
    load_emoji_pairs,
    load_fashion_mnist,
    load_image_text_dataset,
    load_wordnet_nouns,
)


@pytest.fixture(scope="module")
def saved_emoji(tmp_path_factory):
    """Real emoji pairs saved with non-standard column names, as a user's own dataset might be."""
    folder = tmp_path_factory.mktemp("emoji") / "saved"
    pairs = load_emoji_pairs(limit=5, cache_dir=folder.parent / "cache")
    pairs.rename_columns({"image": "picture", "text": "caption"}).save_to_disk(str(folder))
    return folder, pairs


def test_saved_folder_loads_with_standard_columns(saved_emoji):
    folder, pairs = saved_emoji
    loaded = load_image_text_dataset(folder, image_column="picture", text_column="caption")
    assert isinstance(loaded, datasets.DatasetDict)
    assert {"image", "text"} <= set(loaded["train"].column_names)
    assert loaded["test"]["text"][:] == pairs["test"]["text"][:]
    one = load_image_text_dataset(str(folder), image_column="picture", text_column="caption", split="train", limit=2)
    assert isinstance(one, datasets.Dataset) and len(one) == 2


def test_unknown_column_lists_the_available_ones(saved_emoji):
    folder, _ = saved_emoji
    with pytest.raises(ValueError, match=r"'image'.*`image_column`.*available columns: \['picture', 'caption'"):
        load_image_text_dataset(folder, text_column="caption")
    with pytest.raises(ValueError, match="available splits"):
        load_image_text_dataset(folder, image_column="picture", text_column="caption", split="validation")


def test_streaming_from_a_saved_folder(saved_emoji):
    folder, _ = saved_emoji
    stream = load_image_text_dataset(
        folder, image_column="picture", text_column="caption", split="test", streaming=True
    )
    assert isinstance(stream, datasets.IterableDataset)
    assert next(iter(stream))["image"].mode == "RGB"


def test_csv_with_string_labels_becomes_a_class_label(tmp_path):
    nouns = load_wordnet_nouns(split="test", limit=60)
    path = tmp_path / "nouns.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["definition", "category"])
        for text, label in zip(nouns["text"][:], nouns["label"][:], strict=True):
            writer.writerow([text, WORDNET_NOUN_CATEGORIES[label]])
    loaded = load_classification_dataset(
        path, text_column="definition", label_column="category", cache_dir=str(tmp_path / "hf")
    )
    train = loaded["train"]
    names = train.features["label"].names
    assert names == sorted({WORDNET_NOUN_CATEGORIES[label] for label in nouns["label"][:]})
    assert [names[label] for label in train["label"][:]] == [
        WORDNET_NOUN_CATEGORIES[label] for label in nouns["label"][:]
    ]
    assert train["text"][:] == nouns["text"][:]


def test_string_labels_share_one_numbering_across_splits():
    nouns = load_wordnet_nouns(limit=30)
    named = datasets.DatasetDict(
        {
            name: datasets.Dataset.from_dict(
                {"text": part["text"][:], "category": [WORDNET_NOUN_CATEGORIES[label] for label in part["label"][:]]}
            )
            for name, part in nouns.items()
        }
    )
    loaded = load_classification_dataset(named, label_column="category")
    names = loaded["train"].features["label"].names
    assert all(part.features["label"].names == names for part in loaded.values())
    for name, part in loaded.items():
        expected = [WORDNET_NOUN_CATEGORIES[label] for label in nouns[name]["label"][:]]
        assert [names[label] for label in part["label"][:]] == expected


def test_imagefolder_of_real_images(tmp_path):
    images = load_fashion_mnist(split="test", limit=12)
    root = tmp_path / "folder"
    for index, row in enumerate(images):
        class_dir = root / "train" / FASHION_MNIST_CLASS_NAMES[row["label"]].replace("/", " or ")
        class_dir.mkdir(parents=True, exist_ok=True)
        row["image"].save(class_dir / f"{index}.png")
    loaded = load_classification_dataset(root, split="train", cache_dir=str(tmp_path / "hf"))
    assert len(loaded) == 12 and isinstance(loaded.features["label"], datasets.ClassLabel)
    assert loaded[0]["image"].size == (28, 28)
    assert len(loaded.features["label"].names) == len(set(images["label"][:]))


def test_argument_errors(tmp_path):
    with pytest.raises(ValueError, match="not both"):
        load_classification_dataset("anything", text_column="a", image_column="b")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_classification_dataset(str(tmp_path / "missing" / "data"), text_column="text")
    with pytest.raises(ValueError, match="label_column"):
        load_classification_dataset(load_wordnet_nouns(split="test", limit=3), label_column="category")
    with pytest.raises(ValueError, match="no `image` or `text` column"):
        load_classification_dataset(datasets.Dataset.from_dict({"a": [1], "label": [0]}))


def test_align_class_labels_renumbers_by_name():
    from hf_mrl.data.generic import align_class_labels

    data = datasets.Dataset.from_dict({"label": [0, 1, 1]}, features=datasets.Features({"label": datasets.ClassLabel(names=["b", "a"])}))
    aligned = align_class_labels(data, {0: "a", 1: "b", 2: "c"})
    assert aligned["label"] == [1, 0, 0] and aligned.features["label"].names == ["a", "b", "c"]
    assert align_class_labels(data, {0: "LABEL_0", 1: "LABEL_1"}) is data  # a model without class names
    with pytest.raises(ValueError, match=r"classes \['b'\] that the model does not know"):
        align_class_labels(data, {0: "a", 1: "c"})
