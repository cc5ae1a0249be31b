import datasets
import numpy as np
import pytest

from hf_mrl.data import long_tailed_counts, long_tailed_subset, split_classes


def labelled(num_per_class, num_classes=5):
    labels = np.repeat(np.arange(num_classes), num_per_class)
    return datasets.Dataset.from_dict({"row": np.arange(len(labels)), "label": labels})


def test_split_classes_holds_novel_classes_out():
    dataset = labelled(5)
    kept, held_out = split_classes(dataset, [2, 4])
    assert sorted(set(kept["label"])) == [0, 1, 3] and sorted(set(held_out["label"])) == [2, 4]
    assert sorted([*kept["row"], *held_out["row"]]) == list(range(25))
    with pytest.raises(ValueError, match=r"`classes` holds labels \[9\] absent from `dataset`"):
        split_classes(dataset, [9])
    with pytest.raises(ValueError, match=r"`dataset` has no label column 'class'"):
        split_classes(dataset, [1], label_column="class")


def test_long_tailed_counts_fall_exponentially():
    assert long_tailed_counts(1000, 3, 100.0) == [1000, 100, 10]
    assert long_tailed_counts(50, 5, 1.0) == [50] * 5
    assert long_tailed_counts(10, 3, 1000.0)[-1] == 1  # never below one row


def test_long_tailed_subset_is_seeded_and_keeps_dataset_order():
    dataset = labelled(100)
    subset = long_tailed_subset(dataset, imbalance=20, seed=3)
    counts = sorted(np.bincount(subset["label"], minlength=5).tolist(), reverse=True)
    assert counts == long_tailed_counts(100, 5, 20.0)
    assert list(subset["row"]) == sorted(subset["row"])
    assert list(subset["row"]) == list(long_tailed_subset(dataset, imbalance=20, seed=3)["row"])
    other = long_tailed_subset(dataset, imbalance=20, seed=4)
    assert list(other["row"]) != list(subset["row"])
    with pytest.raises(ValueError, match=r"`imbalance` must be a number >= 1"):
        long_tailed_subset(dataset, imbalance=0.5)
