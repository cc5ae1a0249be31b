import pytest
import torch

from hf_mrl import MatryoshkaForImageClassification, MatryoshkaForSequenceClassification
from hf_mrl.training import build_classifier, head_settings, results_table, scratch_backbone_config

from .tiny import tiny_bert_config, tiny_inputs, tiny_vit_config


def test_head_settings_per_kind():
    assert head_settings("mrl", 32) == {"embedding_dim": 32, "matryoshka_dims": [8, 16, 32], "efficient": False}
    assert head_settings("mrl-e", 32, [16, 8])["efficient"] is True
    assert head_settings("mrl-e", 32, [16, 8])["matryoshka_dims"] == [8, 16]
    assert head_settings("ff", 32, ff_dim=8) == {"embedding_dim": 8, "matryoshka_dims": [8], "efficient": False}
    assert head_settings("ff", 32)["matryoshka_dims"] == [32]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (("nested", 32), "`heads` must be one of"),
        (("mrl", 32, [8, 64]), "above the embedding dim 32"),
        (("ff", 32, None, 64), "`ff_dim` holds 64"),
        (("ff", 32, [8]), "does not apply to heads='ff'"),
        (("mrl", 32, None, 8), "applies to heads='ff' only"),
    ],
)
def test_head_settings_rejects(arguments, message):
    with pytest.raises(ValueError, match=message):
        head_settings(*arguments)


def test_scratch_backbone_config_checks_sizes():
    config = scratch_backbone_config("vit", 32, 2, 2, patch_size=7)
    assert (config.image_size, config.patch_size, config.num_channels, config.intermediate_size) == (28, 7, 1, 128)
    with pytest.raises(ValueError, match="multiple of `num_attention_heads`"):
        scratch_backbone_config("vit", 30, 2, 4)
    with pytest.raises(ValueError, match="multiple of `patch_size`"):
        scratch_backbone_config("vit", 32, 2, 2, patch_size=5)
    with pytest.raises(ValueError, match="vocab_size"):
        scratch_backbone_config("bert", 32, 2, 2)


def test_build_classifier_ff_projects_to_its_dim(backbone_kind):
    config = tiny_vit_config() if backbone_kind == "vit" else tiny_bert_config()
    model = build_classifier(5, "ff", backbone_config=config, ff_dim=8)
    expected = MatryoshkaForImageClassification if backbone_kind == "vit" else MatryoshkaForSequenceClassification
    assert isinstance(model, expected)
    assert model.config.uses_projection and model.config.embedding_dim == 8
    outputs = model(**tiny_inputs(backbone_kind), labels=torch.tensor([0, 1, 2, 3]), output_matryoshka_logits=True)
    assert outputs.embeddings.shape == (4, 8) and outputs.matryoshka_logits.shape == (1, 4, 5)


def test_build_classifier_from_pretrained_loads_the_encoder(minilm_path):
    from transformers import AutoModel

    model = build_classifier(3, "mrl", model_name_or_path=str(minilm_path), matryoshka_dims=[16, 384])
    pretrained = AutoModel.from_pretrained(minilm_path)
    name = "encoder.layer.0.attention.self.query.weight"
    torch.testing.assert_close(model.matryoshka.backbone.state_dict()[name], pretrained.state_dict()[name])
    assert model.config.matryoshka_dims == [16, 384] and not model.config.uses_projection
    projected = build_classifier(3, "mrl", model_name_or_path=str(minilm_path), use_projection=True)
    assert projected.matryoshka.projection.weight.shape == (384, 384)
    with pytest.raises(ValueError, match="exactly one of"):
        build_classifier(3, "mrl")


def test_results_table_rows_per_dim():
    table = results_table({"x_dim8_top1": 0.5, "x_dim16_top1": 0.75, "x_dim16_1nn": 0.25})
    assert table.splitlines()[0] == "| dim | 1nn | top1 |"
    assert "| 16 | 0.2500 | 0.7500 |" in table and "| 8 | - | 0.5000 |" in table
    with pytest.raises(ValueError, match="no"):
        results_table({"loss": 1.0})
