import datasets
import numpy as np
import pytest

from hf_mrl.data import emoji_base, load_emoji_pairs
from hf_mrl.data.emoji import read_cldr_annotations

THUMBS_UP = "\U0001f44d"
DARK = "\U0001f3ff"
RUNNER = "\U0001f3c3"
ZWJ = "\u200d"


def test_base_key_groups_variants():
    assert emoji_base(THUMBS_UP + DARK) == THUMBS_UP
    assert (
        emoji_base(RUNNER + ZWJ + "\u2640\ufe0f") == emoji_base(RUNNER + "\U0001f3fc" + ZWJ + "\u2642\ufe0f") == RUNNER
    )
    cooks = [
        "\U0001f468" + ZWJ + "\U0001f373",
        "\U0001f469\U0001f3fd" + ZWJ + "\U0001f373",
        "\U0001f9d1" + ZWJ + "\U0001f373",
    ]
    assert len({emoji_base(cook) for cook in cooks}) == 1
    assert emoji_base("\u2640") == "\u2640"  # the female sign alone stays itself
    assert emoji_base(DARK) == DARK  # so does a lone skin-tone swatch
    assert emoji_base("\u2764\ufe0f") == "\u2764"


def test_cldr_names_and_keywords():
    annotations = read_cldr_annotations()
    assert len(annotations) == 4022
    name, keywords = annotations["\U0001f600"]
    assert name == "grinning face" and "grin" in keywords
    assert annotations["&"][0] == "ampersand"  # XML entities are decoded
    assert annotations[THUMBS_UP + DARK][0] == "thumbs up: dark skin tone"


def test_features_images_and_disjoint_groups(tmp_path):
    pairs = load_emoji_pairs(limit=40, cache_dir=tmp_path)
    assert set(pairs) == {"train", "test"} and all(len(part) == 40 for part in pairs.values())
    features = pairs["train"].features
    assert isinstance(features["image"], datasets.Image)
    assert features["text"] == datasets.Value("string")
    assert features["keywords"] == datasets.List(datasets.Value("string"))
    assert not set(pairs["train"]["base"][:]) & set(pairs["test"]["base"][:])
    annotations = read_cldr_annotations()
    for row in pairs["test"]:
        assert row["image"].mode == "RGB" and row["image"].size == (32, 32)
        assert (annotations[row["emoji"]][0], annotations[row["emoji"]][1]) == (row["text"], row["keywords"])
        assert np.asarray(row["image"]).min() < 200  # something is drawn on the white background
    assert not list(tmp_path.iterdir())  # a limited load renders only what it returns, caches nothing


def test_image_size_and_single_split(tmp_path):
    test = load_emoji_pairs(split="test", image_size=64, limit=3, cache_dir=tmp_path)
    assert isinstance(test, datasets.Dataset) and test[0]["image"].size == (64, 64)


def test_missing_packages_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install fonts-noto-color-emoji"):
        load_emoji_pairs(font_path=tmp_path / "font.ttf")
    with pytest.raises(FileNotFoundError, match="apt-get install unicode-cldr-core"):
        load_emoji_pairs(cldr_dir=tmp_path)


@pytest.mark.parametrize(
    ("kwargs", "match"), [({"image_size": 0}, "image_size"), ({"test_fraction": 1.0}, "test_fraction")]
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        load_emoji_pairs(**kwargs)


@pytest.mark.slow
def test_full_render_filters_blank_glyphs_and_is_cached(tmp_path):
    pairs = load_emoji_pairs(cache_dir=tmp_path)
    assert sum(len(part) for part in pairs.values()) == 3635  # of 4,022 annotated code points
    texts = set(pairs["train"]["text"][:]) | set(pairs["test"]["text"][:])
    assert "grinning face" in texts and "open curly bracket" not in texts  # "{" has no glyph in the font
    assert not set(pairs["train"]["base"][:]) & set(pairs["test"]["base"][:])
    assert 0.15 < len(pairs["test"]) / 3635 < 0.3
    (cache,) = tmp_path.iterdir()
    assert cache.name.startswith("emoji_32_") and (cache / "state.json").is_file()
    again = load_emoji_pairs(split="test", limit=40, cache_dir=tmp_path)  # read from the cache
    fresh = load_emoji_pairs(split="test", limit=40, cache_dir=tmp_path / "empty")  # rendered anew
    assert again["emoji"][:] == fresh["emoji"][:] == pairs["test"]["emoji"][:40]
    assert np.array_equal(np.asarray(again[7]["image"]), np.asarray(fresh[7]["image"]))
