"""A saved text model holds its encoder's weights once (in `0_Transformer/`, which sentence-transformers loads; the
root `model.safetensors` keeps the projection and heads), and every loader reads the folder: hf_mrl's
`from_pretrained`, `AutoModel`, trust_remote_code, sentence-transformers, and folders of the older layout (the
encoder in both places)."""

from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub import constants
from safetensors import safe_open
from safetensors.torch import save_file
from sentence_transformers import SentenceTransformer
from transformers import AutoModel, AutoModelForSequenceClassification

from hf_mrl import MatryoshkaConfig, MatryoshkaForSequenceClassification, MatryoshkaModel
from hf_mrl.hub import push_to_hub_with_card, save_with_card
from hf_mrl.modeling.files import record_written_files
from hf_mrl.modeling.saved_weights import ENCODER_FOLDER, WEIGHTS_NAME, encoder_apart, read_state_dict

from .hub_server import FakeHubServer
from .tiny import tiny_vit_config

TEXTS = ["a small dog", "a theory of gravity that explains orbits", "tea", "a red car on a wet road"]


def _keys(path: Path) -> list[str]:
    with safe_open(str(path), framework="pt") as handle:
        return list(handle.keys())


def _weights_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*.safetensors"))


def _assert_same_embeddings(loaded, model, dim: int = 8) -> None:
    np.testing.assert_allclose(loaded.encode(TEXTS, dim=dim), model.encode(TEXTS, dim=dim), atol=1e-5, rtol=0)


@pytest.mark.parametrize("projection", [False, True])
def test_a_text_model_folder_holds_the_encoder_once_and_loads_everywhere(tiny_text_tower, tmp_path, projection):
    torch.manual_seed(0)
    settings = {"embedding_dim": 24, "matryoshka_dims": [8, 16, 24]} if projection else {"matryoshka_dims": [8, 16, 32]}
    model = MatryoshkaModel.from_backbone(tiny_text_tower, **settings)
    folder = tmp_path / "mrl"
    model.save_pretrained(folder)

    encoder_bytes = (Path(tiny_text_tower) / WEIGHTS_NAME).stat().st_size
    assert _weights_bytes(folder) < 1.2 * encoder_bytes
    root_keys = _keys(folder / WEIGHTS_NAME)
    assert sorted(root_keys) == (["projection.bias", "projection.weight"] if projection else [])
    assert "embeddings.word_embeddings.weight" in _keys(folder / ENCODER_FOLDER / WEIGHTS_NAME)
    assert encoder_apart(folder).prefix == "backbone."
    expected = model.state_dict()
    saved = read_state_dict(folder)
    assert sorted(saved) == sorted(expected)
    for name, value in expected.items():
        torch.testing.assert_close(saved[name], value, atol=0, rtol=0)

    _assert_same_embeddings(MatryoshkaModel.from_pretrained(folder), model)
    auto = AutoModel.from_pretrained(folder)
    assert type(auto) is MatryoshkaModel and auto.name_or_path == str(folder)
    _assert_same_embeddings(auto, model)
    st_model = SentenceTransformer(str(folder), device="cpu", truncate_dim=8)
    np.testing.assert_allclose(st_model.encode(TEXTS, normalize_embeddings=True), model.encode(TEXTS, dim=8),
                               atol=1e-5, rtol=0)


def test_loading_info_reports_nothing_missing_or_unexpected(tiny_text_tower, tmp_path):
    model = MatryoshkaModel.from_backbone(tiny_text_tower, matryoshka_dims=[8, 16, 32])
    model.save_pretrained(tmp_path / "mrl")
    _, info = MatryoshkaModel.from_pretrained(tmp_path / "mrl", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]


def test_a_folder_of_the_older_layout_still_loads(tiny_text_tower, tmp_path):
    """Saved before the encoder was kept once: every weight at the root (no metadata), and in 0_Transformer/ too."""
    torch.manual_seed(0)
    model = MatryoshkaModel.from_backbone(tiny_text_tower, embedding_dim=24, matryoshka_dims=[8, 16, 24])
    folder = tmp_path / "old"
    model.save_pretrained(folder)
    save_file({name: value.contiguous() for name, value in model.state_dict().items()}, folder / WEIGHTS_NAME,
              metadata={"format": "pt"})
    record_written_files(folder, [WEIGHTS_NAME])  # as that save recorded it
    assert encoder_apart(folder) is None and (folder / ENCODER_FOLDER / WEIGHTS_NAME).is_file()

    _assert_same_embeddings(MatryoshkaModel.from_pretrained(folder), model)
    _assert_same_embeddings(AutoModel.from_pretrained(folder), model)
    st_model = SentenceTransformer(str(folder), device="cpu", truncate_dim=8)
    np.testing.assert_allclose(st_model.encode(TEXTS, normalize_embeddings=True), model.encode(TEXTS, dim=8),
                               atol=1e-5, rtol=0)
    MatryoshkaModel.from_pretrained(folder).save_pretrained(folder)  # saved again: the encoder once
    assert encoder_apart(folder) is not None
    assert not any(name.startswith("backbone.") for name in _keys(folder / WEIGHTS_NAME))
    _assert_same_embeddings(MatryoshkaModel.from_pretrained(folder), model)


def test_a_corrupted_or_missing_encoder_file_is_named(tiny_text_tower, tmp_path):
    model = MatryoshkaModel.from_backbone(tiny_text_tower, matryoshka_dims=[8, 16, 32])
    model.save_pretrained(tmp_path / "mrl")
    encoder_file = tmp_path / "mrl" / ENCODER_FOLDER / WEIGHTS_NAME
    encoder_file.write_bytes(encoder_file.read_bytes()[:1000])
    with pytest.raises(ValueError, match=rf"{encoder_file} is corrupted or unreadable"):
        MatryoshkaModel.from_pretrained(tmp_path / "mrl")
    encoder_file.unlink()
    with pytest.raises(ValueError, match=rf"keeps the encoder in {ENCODER_FOLDER}/, which holds no {WEIGHTS_NAME}"):
        MatryoshkaModel.from_pretrained(tmp_path / "mrl")


def test_a_text_classifier_keeps_its_heads_at_the_root(tiny_text_tower, tmp_path):
    torch.manual_seed(0)
    model = MatryoshkaForSequenceClassification.from_backbone(
        tiny_text_tower, embedding_dim=16, matryoshka_dims=[8, 16], num_labels=3).eval()
    folder = tmp_path / "classifier"
    model.save_pretrained(folder)
    assert not any("backbone." in name for name in _keys(folder / WEIGHTS_NAME))
    assert encoder_apart(folder).prefix == "matryoshka.backbone."

    inputs = model.processor(TEXTS, padding=True, return_tensors="pt")
    expected = model(**inputs).matryoshka_logits
    for loaded in (MatryoshkaForSequenceClassification.from_pretrained(folder),
                   AutoModelForSequenceClassification.from_pretrained(folder)):
        torch.testing.assert_close(loaded(**inputs).matryoshka_logits, expected, atol=1e-5, rtol=0)
    _assert_same_embeddings(MatryoshkaModel.from_pretrained(folder), model)  # the embedding part alone


def test_save_with_card_keeps_the_encoder_once(tiny_text_tower, tmp_path):
    """Also a trust_remote_code folder; its code loading the encoder kept apart without hf_mrl installed is checked
    in tests/test_hub_without_hf_mrl.py."""
    torch.manual_seed(0)
    model = MatryoshkaModel.from_backbone(tiny_text_tower, embedding_dim=24, matryoshka_dims=[8, 16, 24])
    folder = save_with_card(model, tmp_path / "card", processor=model.processor, trust_remote_code_ready=True)
    assert _weights_bytes(folder) < 1.2 * (Path(tiny_text_tower) / WEIGHTS_NAME).stat().st_size
    assert (folder / "saved_weights.py").is_file() and encoder_apart(folder) is not None
    _assert_same_embeddings(AutoModel.from_pretrained(folder, trust_remote_code=True), model)


def test_a_hub_repo_with_the_encoder_kept_apart_loads_by_its_id(tiny_text_tower, tmp_path, monkeypatch):
    """Pushed to a local fake Hub (tests/hub_server.py), then loaded by repo id: both weights files are downloaded."""
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    torch.manual_seed(0)
    model = MatryoshkaModel.from_backbone(tiny_text_tower, embedding_dim=24, matryoshka_dims=[8, 16, 24])
    with FakeHubServer() as server:
        monkeypatch.setattr(constants, "ENDPOINT", server.endpoint)
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                            server.endpoint + "/{repo_id}/resolve/{revision}/{filename}")
        push_to_hub_with_card(model, "test-user/text", processor=model.processor, token="hf_test_token",
                              endpoint=server.endpoint)
        loaded = MatryoshkaModel.from_pretrained("test-user/text", cache_dir=tmp_path / "cache", token="hf_test_token")
        downloaded = {path.split("/resolve/", 1)[1].split("/", 1)[1] for method, path in server.hub.requests
                      if method == "GET" and "/resolve/" in path}
        assert {WEIGHTS_NAME, f"{ENCODER_FOLDER}/{WEIGHTS_NAME}"} <= downloaded
        _assert_same_embeddings(loaded, model)  # its tokenizer comes from the Hub too


def test_an_image_model_keeps_every_weight_at_the_root(tmp_path):
    vit = MatryoshkaModel(MatryoshkaConfig(backbone_config=tiny_vit_config(), matryoshka_dims=[8, 16, 32]))
    vit.save_pretrained(tmp_path / "vit")
    assert not (tmp_path / "vit" / ENCODER_FOLDER).exists() and encoder_apart(tmp_path / "vit") is None
    assert any(name.startswith("backbone.") for name in _keys(tmp_path / "vit" / WEIGHTS_NAME))
