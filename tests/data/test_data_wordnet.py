import datasets
import pytest

from hf_mrl.data import WORDNET_NOUN_CATEGORIES, load_wordnet_nouns, load_wordnet_pairs


@pytest.fixture(scope="module")
def nouns():
    return load_wordnet_nouns()


def test_noun_features_and_sizes(nouns):
    assert set(nouns) == {"train", "validation", "test"}
    assert sum(len(part) for part in nouns.values()) == 82115
    label = nouns["train"].features["label"]
    assert isinstance(label, datasets.ClassLabel) and label.num_classes == 26
    assert label.names == list(WORDNET_NOUN_CATEGORIES)
    assert len(nouns["test"]) > 7000 and len(nouns["validation"]) > 7000


def test_splits_are_disjoint_by_synset(nouns):
    synsets = {name: set(part["synset"][:]) for name, part in nouns.items()}
    assert not synsets["train"] & synsets["test"]
    assert not synsets["train"] & synsets["validation"]
    assert not synsets["validation"] & synsets["test"]


def test_known_synsets(nouns):
    rows = {}
    for part in nouns.values():
        rows.update(zip(part["synset"][:], zip(part["text"][:], part["label"][:], strict=True), strict=True))
    text, label = rows["02084071-n"]  # dog, domestic dog, Canis familiaris
    assert WORDNET_NOUN_CATEGORIES[label] == "noun.animal" and "Canis" in text
    text, label = rows["00003993-n"]  # congener: its quoted examples are cut off
    assert text == "a whole (a thing or person) of the same kind or category as another"
    assert WORDNET_NOUN_CATEGORIES[label] == "noun.Tops"


def test_seed_changes_the_split_and_limit_samples_every_category(nouns):
    other = load_wordnet_nouns(split="test", seed=1)
    assert set(other["synset"][:]) != set(nouns["test"]["synset"][:])
    sample = load_wordnet_nouns(split="train", limit=500)
    assert len(sample) == 500 and set(sample["synset"][:]) <= set(nouns["train"]["synset"][:])
    assert len(set(sample["label"][:])) > 15
    assert sample["synset"][:] == load_wordnet_nouns(split="train", limit=500)["synset"][:]


def test_word_pairs():
    pairs = load_wordnet_pairs(parts_of_speech=["noun"])
    assert pairs["train"].column_names == ["anchor", "positive", "synset"]
    assert sum(len(part) for part in pairs.values()) == 146347
    synsets = {name: set(part["synset"][:]) for name, part in pairs.items()}
    assert not synsets["train"] & synsets["test"] and not synsets["validation"] & synsets["test"]
    everything = {}
    for part in pairs.values():
        rows = [index for index, synset in enumerate(part["synset"][:]) if synset == "02084071-n"]
        everything.update({row["anchor"]: row for row in part.select(rows)})
    assert {"dog", "domestic dog", "Canis familiaris"} <= set(everything)  # underscores became spaces
    assert everything["dog"]["positive"] == everything["domestic dog"]["positive"]


def test_adjective_markers_are_stripped():
    pairs = load_wordnet_pairs(parts_of_speech=["adj"], split="train")
    anchors = set(pairs["anchor"][:])
    assert not any(anchor.endswith(("(a)", "(p)", "(ip)")) for anchor in anchors)


def test_example_pairs():
    pairs = load_wordnet_pairs(kind="example", parts_of_speech=["noun"], split="validation", limit=50)
    assert len(pairs) == 50
    for row in pairs:
        assert '"' not in row["anchor"] and row["anchor"] != row["positive"]


def test_missing_files_name_the_package(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install wordnet-base"):
        load_wordnet_nouns(data_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="data.verb"):
        load_wordnet_pairs(data_dir=tmp_path)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"kind": "sentence"}, "kind"),
        ({"parts_of_speech": "noun"}, "parts_of_speech"),
        ({"validation_fraction": 0.5, "test_fraction": 0.5}, "test_fraction"),
        ({"split": "dev"}, "split"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        load_wordnet_pairs(**kwargs)
