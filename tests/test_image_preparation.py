"""Any PNG that training accepts encodes the same way: RGBA, palette with transparency, 16-bit and grey images go
through one preparation (`hf_mrl.modeling.encoding.prepared_image`) in the collators and in `encode`."""

import numpy as np
import pytest
import torch
from PIL import Image

from hf_mrl import MatryoshkaConfig, MatryoshkaModel
from hf_mrl.data import ImageCollator
from hf_mrl.modeling.encoding import prepared_image

from .tiny import tiny_vit_config


def _grey() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8)


def _pngs(folder) -> dict:
    grey = _grey()
    alpha = np.where(grey > 128, 255, 40).astype(np.uint8)
    palette = Image.fromarray(grey, "P")
    palette.putpalette([value for level in range(256) for value in (level, level, level)])
    palette.info["transparency"] = 0
    images = {
        "L": Image.fromarray(grey),
        "RGBA": Image.fromarray(np.stack([grey, grey, grey, alpha], axis=-1), "RGBA"),
        "P+transparency": palette,
        "16-bit": Image.fromarray(grey.astype(np.uint16) * 257),
        "RGB": Image.fromarray(np.stack([grey] * 3, axis=-1)),
    }
    paths = {}
    for name, image in images.items():
        paths[name] = folder / f"{name}.png"
        image.save(paths[name])
    return paths


def test_every_png_kind_becomes_the_same_grey_pixels(tmp_path):
    for name, path in _pngs(tmp_path).items():
        with Image.open(path) as image:
            prepared = prepared_image(image, 1)
        assert prepared.mode == "L", name
        np.testing.assert_array_equal(np.asarray(prepared), _grey(), err_msg=name)


def test_training_collator_and_encode_agree_on_every_png_kind(tmp_path):
    paths = _pngs(tmp_path)
    collator = ImageCollator(image_size=28, num_channels=1, label_column=None)
    reference = collator([{"image": Image.open(paths["L"])}])["pixel_values"]
    torch.manual_seed(0)
    model = MatryoshkaModel(MatryoshkaConfig(backbone_config=tiny_vit_config(), matryoshka_dims=[8, 32])).eval()
    expected = model.encode([str(paths["L"])], dim=8)
    for name, path in paths.items():
        torch.testing.assert_close(collator([{"image": Image.open(path)}])["pixel_values"], reference, msg=name)
        torch.testing.assert_close(model.encode([str(path)], dim=8), expected, msg=name)
        torch.testing.assert_close(model.encode(Image.open(path), dim=8), expected[0], msg=name)  # one image: one vector


@pytest.mark.parametrize("kind", ["RGBA", "P+transparency", "16-bit"])
def test_a_colour_model_encodes_any_png_kind(tmp_path, kind):
    torch.manual_seed(0)
    model = MatryoshkaModel(MatryoshkaConfig(backbone_config=tiny_vit_config(num_channels=3), matryoshka_dims=[8, 32]))
    embedding = model.eval().encode([str(_pngs(tmp_path)[kind])], dim=8)
    assert embedding.shape == (1, 8) and np.isfinite(embedding).all()
