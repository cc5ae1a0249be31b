import pytest
import torch
import torch.nn.functional as F
from transformers import AutoConfig, AutoModel

from hf_mrl import MatryoshkaConfig, MatryoshkaDualEncoderConfig, MatryoshkaDualEncoderModel, MatryoshkaModel
from hf_mrl.modeling.losses import matryoshka_contrastive_loss
from hf_mrl.modeling.modeling_dual_encoder import MAX_LOGIT_SCALE

from .tiny import tiny_bert_config, tiny_inputs, tiny_vit_config


def make_model(**kwargs) -> MatryoshkaDualEncoderModel:
    torch.manual_seed(0)
    kwargs.setdefault("projection_dim", 24)
    config = MatryoshkaDualEncoderConfig(vision_config=tiny_vit_config(), text_config=tiny_bert_config(), **kwargs)
    return MatryoshkaDualEncoderModel(config)


def batch(size: int = 4) -> dict:
    return {**tiny_inputs("vit", size), **tiny_inputs("bert", size)}


def test_config_defaults_and_validation():
    config = MatryoshkaDualEncoderConfig(vision_config=tiny_vit_config(), text_config=tiny_bert_config(), projection_dim=48)
    assert config.matryoshka_dims == [8, 16, 32, 48]
    assert config.vision_pooling == "cls" and config.text_pooling == "mean"
    assert config.label_smoothing == 0.0 and config.temperature_init == 0.07
    cases = [
        ({"matryoshka_dims": [8, 64]}, r"`matryoshka_dims` holds 64, above the embedding dim 48"),
        ({"matryoshka_weights": [1.0]}, r"`matryoshka_weights` has 1 entries"),
        ({"temperature_init": 0.0}, r"`temperature_init` must be a finite number in \[0.01, 100\], got 0.0"),
        ({"label_smoothing": 1.5}, r"`label_smoothing` must be a finite number in \[0, 1\), got 1.5"),
        ({"text_pooling": "max"}, r"`text_pooling` must be one of \['cls', 'mean'\], got 'max'"),
        ({"projection_dim": -1}, r"`projection_dim` must be a positive integer, got -1"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            MatryoshkaDualEncoderConfig(
                vision_config=tiny_vit_config(), text_config=tiny_bert_config(), **{"projection_dim": 48, **kwargs}
            )


def test_features_are_truncated_and_renormalised_tensors():
    model = make_model().eval()
    inputs = batch()
    with torch.no_grad():
        full_image = model.get_image_features(inputs["pixel_values"], normalize=False)
        full_text = model.get_text_features(inputs["input_ids"], inputs["attention_mask"], normalize=False)
        for dim in (1, 8, 13, 24):
            image = model.get_image_features(inputs["pixel_values"], dim=dim)
            text = model.get_text_features(inputs["input_ids"], inputs["attention_mask"], dim=dim)
            assert isinstance(image, torch.Tensor) and image.shape == (4, dim) and text.shape == (4, dim)
            torch.testing.assert_close(image, F.normalize(full_image[:, :dim], dim=-1))
            torch.testing.assert_close(text, F.normalize(full_text[:, :dim], dim=-1))
    with pytest.raises(ValueError, match=r"`dim` must be an integer from 1 to 24.*got 25"):
        model.get_image_features(inputs["pixel_values"], dim=25)
    with pytest.raises(ValueError, match=r"`dim` must be an integer from 1 to 24.*got 0"):
        model.get_text_features(inputs["input_ids"], dim=0)


def test_forward_outputs_and_loss_matches_naive_per_dim_reference():
    model = make_model(matryoshka_weights=[1.0, 2.0, 0.5])
    inputs = batch()
    out = model(**inputs, return_loss=True)
    assert out.logits_per_image.shape == (4, 4) and out.logits_per_text.shape == (4, 4)
    torch.testing.assert_close(out.logits_per_image, out.logits_per_text.t())
    torch.testing.assert_close(out.image_embeds.norm(dim=-1), torch.ones(4))
    scale = model.logit_scale.exp()
    torch.testing.assert_close(out.logits_per_image, scale * out.image_embeds @ out.text_embeds.t())
    targets = torch.arange(4)
    per_dim = []
    for dim in model.config.matryoshka_dims:
        image = F.normalize(out.image_embeds[:, :dim], dim=-1)
        text = F.normalize(out.text_embeds[:, :dim], dim=-1)
        logits = scale * image @ text.t()
        per_dim.append((F.cross_entropy(logits, targets) + F.cross_entropy(logits.t(), targets)) / 2)
    per_dim = torch.stack(per_dim)
    torch.testing.assert_close(out.matryoshka_losses, per_dim.detach(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.loss, (per_dim * torch.tensor([1.0, 2.0, 0.5])).sum(), atol=1e-5, rtol=1e-5)
    out.loss.backward()
    assert model.logit_scale.grad is not None and model.visual_projection.weight.grad is not None
    assert model(**inputs).loss is None


def test_logit_scale_is_clamped_like_clip():
    model = make_model()
    with torch.no_grad():
        model.logit_scale.fill_(10.0)
    out = model(**batch(), return_loss=True)
    torch.testing.assert_close(out.logit_scale, torch.tensor(MAX_LOGIT_SCALE).exp())


def test_bad_batches_are_rejected_before_work():
    model = make_model()
    inputs = batch()
    with pytest.raises(ValueError, match=r"`pixel_values` has 4 items but `input_ids` has 3"):
        model(pixel_values=inputs["pixel_values"], input_ids=inputs["input_ids"][:3], return_loss=True)
    with pytest.raises(ValueError, match=r"`pixel_values` is empty"):
        model(pixel_values=inputs["pixel_values"][:0], input_ids=inputs["input_ids"], return_loss=True)
    with pytest.raises(ValueError, match=r"`input_ids` is empty"):
        model.get_text_features(inputs["input_ids"][:0])


def test_repeated_captions_are_positives():
    model = make_model()
    inputs = batch()
    text_ids = torch.tensor([0, 0, 1, 2])  # items 0 and 1 share a caption id
    out = model(**inputs, text_ids=text_ids, return_loss=True)
    expected = matryoshka_contrastive_loss(
        out.image_embeds, out.text_embeds, model.config.matryoshka_dims, model.config.matryoshka_weights,
        logit_scale=out.logit_scale, text_ids=text_ids,
    )
    torch.testing.assert_close(out.loss, expected.loss)
    assert not torch.allclose(out.loss, model(**inputs, return_loss=True).loss)


def test_save_load_round_trip_through_auto_model_is_exact(tmp_path):
    model = make_model(label_smoothing=0.1, temperature_init=0.05).eval()
    with torch.no_grad():
        model.logit_scale.fill_(3.3)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists() and not list(tmp_path.glob("*.bin"))
    assert isinstance(AutoConfig.from_pretrained(tmp_path), MatryoshkaDualEncoderConfig)
    loaded = AutoModel.from_pretrained(tmp_path).eval()
    assert type(loaded) is MatryoshkaDualEncoderModel
    assert loaded.logit_scale.item() == pytest.approx(3.3)
    inputs = batch()
    before, after = model(**inputs, return_loss=True), loaded(**inputs, return_loss=True)
    for name in ("loss", "logits_per_image", "image_embeds", "text_embeds"):
        assert torch.equal(before[name], after[name]), name


def test_from_vision_text_pretrained_reuses_towers(tmp_path, minilm_path):
    torch.manual_seed(0)
    vision = MatryoshkaModel(MatryoshkaConfig(backbone_config=tiny_vit_config(), pooling="mean")).eval()
    vision.save_pretrained(tmp_path / "vision")
    model = MatryoshkaDualEncoderModel.from_vision_text_pretrained(
        str(tmp_path / "vision"), minilm_path, projection_dim=64
    ).eval()
    assert model.config.vision_pooling == "mean" and model.config.text_pooling == "mean"
    assert model.config.matryoshka_dims == [8, 16, 32, 64]
    pixel_values = tiny_inputs("vit")["pixel_values"]
    expected = vision(pixel_values=pixel_values).last_hidden_state
    torch.testing.assert_close(model.vision_model(pixel_values=pixel_values).last_hidden_state, expected)
    text_tower = AutoModel.from_pretrained(minilm_path).eval()
    ids = torch.tensor([[101, 2023, 2003, 1037, 3899, 102]])
    torch.testing.assert_close(
        model.text_model(input_ids=ids).last_hidden_state, text_tower(input_ids=ids).last_hidden_state
    )
