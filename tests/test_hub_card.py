"""Model cards: results parsing, metadata (model-index per dim), tables, snippets, template location."""

from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard

from hf_mrl import (
    MatryoshkaConfig,
    MatryoshkaForImageClassification,
    MatryoshkaForSequenceClassification,
    MatryoshkaModel,
)
from hf_mrl.hub import MRL_CITATION, TEMPLATE_PATH, card_from_results, describe_model, group_results, save_results_plot
from hf_mrl.modeling.configuration_matryoshka import MatryoshkaDualEncoderConfig
from hf_mrl.modeling.modeling_dual_encoder import MatryoshkaDualEncoderModel

from .tiny import tiny_bert_config, tiny_vit_config

RESULTS = {
    "wordnet_dim8_recall@10": 0.41,
    "wordnet_dim16_recall@10": 0.52,
    "wordnet_dim32_recall@10": 0.6,
    "wordnet_dim8_mrr@10": 0.3,
    "wordnet_dim32_mrr@10": 0.5,
    "fashion_mnist_dim8_top1": 0.7,
    "fashion_mnist_dim32_top1": 0.8,
    "fashion_mnist_dim32_20nn": 0.78,
    "wordnet_primary_metric": "wordnet_dim32_recall@10",  # not per-dim: skipped
    "encode_seconds": 1.5,
}


def text_model(**overrides):
    return MatryoshkaModel(MatryoshkaConfig(backbone_config=tiny_bert_config(), matryoshka_dims=[8, 16, 32], **overrides))


def test_group_results_parses_names_dims_and_metrics():
    grouped = group_results(RESULTS)
    assert list(grouped) == ["fashion_mnist", "wordnet"]
    assert grouped["wordnet"] == {8: {"recall@10": 0.41, "mrr@10": 0.3}, 16: {"recall@10": 0.52}, 32: {"recall@10": 0.6, "mrr@10": 0.5}}
    assert grouped["fashion_mnist"][32] == {"top1": 0.8, "20nn": 0.78}


@pytest.mark.parametrize(
    "results, message",
    [
        ({"accuracy": 0.9}, "no key of the form"),
        ({}, "no key of the form"),
        ([("a_dim8_top1", 0.5)], "must be a dict"),
        ({"a_dim8_top1": float("nan")}, r"results\['a_dim8_top1'\].*finite"),
        ({"a_dim8_top1": "0.5"}, "finite number"),
    ],
)
def test_group_results_rejects_bad_results(results, message):
    with pytest.raises(ValueError, match=message):
        group_results(results)


def test_card_metadata_tables_snippets_and_citation():
    card_text = card_from_results(
        RESULTS,
        text_model(),
        repo_id="my-org/mrl-minilm",
        base_model="sentence-transformers/all-MiniLM-L6-v2",
        datasets=["wordnet"],
        license="mit",
        tags=["wordnet"],
        plot_file="matryoshka_results.png",
    )
    card = ModelCard(card_text)
    data = card.data
    assert data.library_name == "transformers"
    assert {"matryoshka", "hf_mrl", "wordnet"} <= set(data.tags)
    assert data.base_model == "sentence-transformers/all-MiniLM-L6-v2"
    assert data.datasets == ["wordnet"] and data.license == "mit"
    assert data.model_name == "mrl-minilm"
    index = card.data.to_dict()["model-index"][0]["results"]
    dims_by_dataset = sorted((result["dataset"]["name"], result["dataset"]["config"]) for result in index)
    assert dims_by_dataset == [("fashion_mnist", "dim32"), ("fashion_mnist", "dim8"), ("wordnet", "dim16"), ("wordnet", "dim32"), ("wordnet", "dim8")]
    wordnet_32 = next(r for r in index if r["dataset"]["name"] == "wordnet" and r["dataset"]["config"] == "dim32")
    assert {m["type"]: m["value"] for m in wordnet_32["metrics"]} == {"mrr": 0.5, "recall": 0.6}  # the Hub's names
    assert {m["config"] for m in wordnet_32["metrics"]} == {"mrr@10, dim=32", "recall@10, dim=32"}
    assert wordnet_32["task"]["type"] == "retrieval"
    assert next(r for r in index if r["dataset"]["name"] == "fashion_mnist")["task"]["type"] == "text-classification"
    # saving and re-loading through huggingface_hub keeps one result per dim
    assert len(ModelCard(str(card)).data.to_dict()["model-index"][0]["results"]) == 5

    assert "| 16 | - | 0.5200 |" in card_text  # wordnet table: mrr@10 missing at dim 16
    assert "![metrics against embedding dim](matryoshka_results.png)" in card_text
    assert 'AutoModel.from_pretrained("my-org/mrl-minilm")' in card_text
    assert 'model.encode(["a small dog", "a large cat"], dim=16)' in card_text
    assert "truncate_dim=16" in card_text
    assert "MatryoshkaIndex(" in card_text and "rerank_dim=32" in card_text
    assert MRL_CITATION in card_text and "Kusupati" in card_text


def test_card_without_results_has_no_results_section():
    card_text = card_from_results(None, text_model())
    assert "## Results" not in card_text
    assert "model-index" not in card_text
    assert 'from_pretrained("path/to/model")' in card_text


def test_local_backbone_path_is_not_written_as_base_model(tmp_path):
    model = text_model()
    model.config.backbone_config._name_or_path = str(tmp_path)  # as `from_backbone(local_folder)` records
    assert describe_model(model).base_model is None
    model.config.backbone_config._name_or_path = "sentence-transformers/all-MiniLM-L6-v2"
    assert describe_model(model).base_model == "sentence-transformers/all-MiniLM-L6-v2"
    with pytest.raises(ValueError, match="base_model"):
        card_from_results(None, model, base_model=str(tmp_path))


@pytest.mark.parametrize(
    "build, pipeline_tag, snippet",
    [
        (lambda: MatryoshkaModel(MatryoshkaConfig(backbone_config=tiny_vit_config())), "image-feature-extraction", "model.encode(images, dim="),
        (
            lambda: MatryoshkaForImageClassification(MatryoshkaConfig(backbone_config=tiny_vit_config(), num_labels=10)),
            "image-classification",
            "AutoModelForImageClassification",
        ),
        (
            lambda: MatryoshkaForSequenceClassification(MatryoshkaConfig(backbone_config=tiny_bert_config(), num_labels=3, efficient=True)),
            "text-classification",
            "MRL-E",
        ),
        (
            lambda: MatryoshkaDualEncoderModel(
                MatryoshkaDualEncoderConfig(vision_config=tiny_vit_config(), text_config=tiny_bert_config(), projection_dim=16)
            ),
            "zero-shot-image-classification",
            "encode_text([\"a photo of a dog\"",
        ),
    ],
)
def test_card_for_every_model_class(build, pipeline_tag, snippet):
    card_text = card_from_results(None, build())
    assert ModelCard(card_text).data.pipeline_tag == pipeline_tag
    assert snippet in card_text


def test_sentence_transformers_card():
    card_text = card_from_results(None, text_model(), library_name="sentence-transformers", default_truncate_dim=8)
    data = ModelCard(card_text).data
    assert data.library_name == "sentence-transformers" and "sentence-transformers" in data.tags
    assert "SentenceTransformer(" in card_text and "defaults to 8" in card_text
    assert "import hf_mrl" not in card_text


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"library_name": "keras"}, "library_name"),
        ({"repo_id": "a/b/c"}, "repo_id"),
        ({"datasets": [""]}, "datasets"),
        ({"template": "/nonexistent/card.jinja"}, "template"),
    ],
)
def test_card_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        card_from_results(None, text_model(), **kwargs)


def test_card_rejects_non_matryoshka_model():
    with pytest.raises(ValueError, match="hf_mrl model"):
        card_from_results(None, torch.nn.Linear(2, 2))


def test_custom_template(tmp_path):
    template = tmp_path / "card.jinja"
    template.write_text("---\n{{ card_data }}\n---\n# {{ model_name }} at {{ summary.matryoshka_dims | join('/') }}\n")
    assert card_from_results(None, text_model(), template=template).endswith("# MatryoshkaModel at 8/16/32\n")


def test_results_plot_is_a_png(tmp_path):
    path = save_results_plot(RESULTS, tmp_path / "plot.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_model_cards_folder_holds_the_packaged_template():
    repo_template = Path(__file__).parents[1] / "model_cards" / "model_card.md.jinja"
    assert repo_template.read_text() == TEMPLATE_PATH.read_text()
