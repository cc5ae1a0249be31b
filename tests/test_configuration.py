import json

import pytest

from hf_mrl import MatryoshkaConfig, MatryoshkaModel

from .tiny import tiny_bert_config, tiny_vit_config


def test_defaults_follow_the_backbone():
    vit = MatryoshkaConfig(backbone_config=tiny_vit_config(hidden_size=48))
    assert vit.embedding_dim == 48 and vit.pooling == "cls"
    assert vit.matryoshka_dims == [8, 16, 32, 48] and vit.matryoshka_weights == [1.0] * 4
    assert not vit.uses_projection and vit.normalize and not vit.efficient
    bert = MatryoshkaConfig(backbone_config=tiny_bert_config(), embedding_dim=64)
    assert bert.pooling == "mean" and bert.uses_projection
    assert bert.matryoshka_dims == [8, 16, 32, 64]


def test_projection_at_the_hidden_size_on_request(tmp_path):
    config = MatryoshkaConfig(backbone_config=tiny_bert_config(), use_projection=True)
    assert config.embedding_dim == config.backbone_config.hidden_size and config.uses_projection
    config.save_pretrained(tmp_path)
    assert MatryoshkaConfig.from_pretrained(tmp_path).uses_projection
    model = MatryoshkaModel(config)
    assert model.projection.in_features == model.projection.out_features == config.embedding_dim


def test_dims_sorted_with_their_weights():
    config = MatryoshkaConfig(
        backbone_config=tiny_bert_config(), matryoshka_dims=[32, 8, 16], matryoshka_weights=[3.0, 1.0, 2.0]
    )
    assert config.matryoshka_dims == [8, 16, 32]
    assert config.matryoshka_weights == [1.0, 2.0, 3.0]


def test_config_json_carries_the_keys_inference_servers_read(tmp_path):
    config = MatryoshkaConfig(backbone_config=tiny_bert_config(), matryoshka_dims=[8, 32, 16], num_labels=3)
    config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["is_matryoshka"] is True
    assert saved["matryoshka_dimensions"] == [32, 16, 8]
    assert saved["model_type"] == "matryoshka"
    assert saved["backbone_config"]["model_type"] == "bert"
    loaded = MatryoshkaConfig.from_pretrained(tmp_path)
    assert loaded.to_dict() == config.to_dict()
    assert loaded.num_labels == 3 and type(loaded.backbone_config).__name__ == "BertConfig"


def test_backbone_config_as_dict():
    config = MatryoshkaConfig(backbone_config=tiny_vit_config().to_dict())
    assert type(config.backbone_config).__name__ == "ViTConfig"
    with pytest.raises(ValueError, match=r"`backbone_config` given as a dict must have a 'model_type'"):
        MatryoshkaConfig(backbone_config={"hidden_size": 32})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"matryoshka_dims": [8, 8]}, r"`matryoshka_dims` holds duplicate dims \[8\]"),
        ({"matryoshka_dims": [0, 8]}, r"`matryoshka_dims` must hold positive integers, got 0"),
        ({"matryoshka_dims": [-8, 16]}, r"`matryoshka_dims` must hold positive integers, got -8"),
        ({"matryoshka_dims": [8, 12.5]}, r"`matryoshka_dims` must hold positive integers, got 12.5"),
        ({"matryoshka_dims": [8, 64]}, r"`matryoshka_dims` holds 64, above the embedding dim 32"),
        ({"embedding_dim": 16, "matryoshka_dims": [8, 32]}, r"holds 32, above the embedding dim 16"),
        ({"matryoshka_weights": [1.0, 1.0]}, r"`matryoshka_weights` has 2 entries .* there are 3 matryoshka dims"),
        ({"matryoshka_weights": [1.0, -1.0, 1.0]}, r"`matryoshka_weights` must hold finite numbers >= 0, got -1.0"),
        ({"matryoshka_weights": [0, 0, 0]}, r"`matryoshka_weights` are all zero"),
        ({"pooling": "max"}, r"`pooling` must be one of \['cls', 'mean'\], got 'max'"),
        ({"embedding_dim": 0}, r"`embedding_dim` must be a positive integer, got 0"),
        ({"use_projection": "yes"}, r"`use_projection` must be True, False or None, got 'yes'"),
        ({"embedding_dim": 16, "use_projection": False}, r"`use_projection=False` needs `embedding_dim` equal to"),
    ],
)
def test_bad_arguments_name_argument_value_and_allowed(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MatryoshkaConfig(backbone_config=tiny_bert_config(), **kwargs)


def test_saved_configs_name_no_local_folder_but_keep_hub_ids(tmp_path, tiny_text_tower):
    """A saved model must not carry the path of the machine it was trained on; a Hub id (the card's base model) stays."""
    import json

    from hf_mrl import MatryoshkaModel

    model = MatryoshkaModel.from_backbone(tiny_text_tower, matryoshka_dims=[8, 32])
    assert model.config.backbone_config._name_or_path == tiny_text_tower  # in memory: still known
    model.save_pretrained(tmp_path / "saved")
    saved = json.loads((tmp_path / "saved" / "config.json").read_text())
    assert tiny_text_tower not in json.dumps(saved) and saved["backbone_config"]["_name_or_path"] == ""
    model.config.backbone_config._name_or_path = "sentence-transformers/all-MiniLM-L6-v2"
    assert model.config.to_dict()["backbone_config"]["_name_or_path"] == "sentence-transformers/all-MiniLM-L6-v2"
