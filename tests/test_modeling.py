import pytest
import torch
import torch.nn.functional as F
from transformers import (
    AutoModel,
    AutoModelForImageClassification,
    AutoModelForSequenceClassification,
)

from hf_mrl import (
    MatryoshkaConfig,
    MatryoshkaForImageClassification,
    MatryoshkaForSequenceClassification,
    MatryoshkaModel,
)

from .tiny import BACKBONES, tiny_inputs

CLASSIFIERS = {"vit": MatryoshkaForImageClassification, "bert": MatryoshkaForSequenceClassification}
AUTO_CLASSIFIERS = {"vit": AutoModelForImageClassification, "bert": AutoModelForSequenceClassification}


def make_config(kind, **kwargs):
    return MatryoshkaConfig(backbone_config=BACKBONES[kind](), **kwargs)


@pytest.mark.parametrize("embedding_dim", [None, 24])
def test_embeddings_and_truncated_encode(backbone_kind, embedding_dim):
    torch.manual_seed(0)
    model = MatryoshkaModel(make_config(backbone_kind, embedding_dim=embedding_dim)).eval()
    inputs = tiny_inputs(backbone_kind)
    width = embedding_dim or 32
    output = model(**inputs)
    assert output.embeddings.shape == (4, width)
    assert output.last_hidden_state.shape[0] == 4 and output.last_hidden_state.shape[-1] == 32
    assert (model.projection is not None) == (embedding_dim is not None)
    for dim in (1, 5, 8, 13, width):
        encoded = model.encode(**inputs, dim=dim, convert_to_tensor=True)
        assert encoded.shape == (4, dim)
        torch.testing.assert_close(encoded, F.normalize(output.embeddings[:, :dim], dim=-1))
    torch.testing.assert_close(model.encode(**inputs, dim=8, normalize=False, convert_to_tensor=True), output.embeddings[:, :8])
    assert model.encode(**inputs).shape == (4, width)
    for bad in (0, width + 1, -3, 2.0):
        with pytest.raises(ValueError, match=rf"`dim` must be an integer from 1 to {width}.*got {bad!r}"):
            model.encode(**inputs, dim=bad)


def test_mean_pooling_ignores_padding():
    torch.manual_seed(0)
    model = MatryoshkaModel(make_config("bert")).eval()
    inputs = tiny_inputs("bert")
    full = model(**inputs)
    mask = inputs["attention_mask"][0].bool()
    expected = full.last_hidden_state[0][mask].mean(dim=0)
    torch.testing.assert_close(full.embeddings[0], expected)


@pytest.mark.parametrize("efficient", [False, True])
def test_classifier_outputs_and_weighted_loss(backbone_kind, efficient):
    torch.manual_seed(0)
    config = make_config(backbone_kind, num_labels=5, efficient=efficient, matryoshka_weights=[1.0, 0.5, 2.0])
    model = CLASSIFIERS[backbone_kind](config)
    labels = torch.tensor([0, 1, 2, 4])
    assert model(**tiny_inputs(backbone_kind), labels=labels).matryoshka_logits is None  # fused loss: not built
    output = model(**tiny_inputs(backbone_kind), labels=labels, output_matryoshka_logits=True)
    assert output.logits.shape == (4, 5)
    assert output.matryoshka_logits.shape == (3, 4, 5)
    torch.testing.assert_close(output.logits, output.matryoshka_logits[-1])
    per_dim = torch.stack([F.cross_entropy(logits, labels) for logits in output.matryoshka_logits])
    torch.testing.assert_close(output.matryoshka_losses, per_dim.detach())
    torch.testing.assert_close(output.loss, (per_dim * torch.tensor([1.0, 0.5, 2.0])).sum())
    output.loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    assert model(**tiny_inputs(backbone_kind)).loss is None


def test_predict_at_one_granularity(backbone_kind):
    torch.manual_seed(0)
    inputs = tiny_inputs(backbone_kind)
    mrl = CLASSIFIERS[backbone_kind](make_config(backbone_kind, num_labels=5)).eval()
    out = mrl(**inputs)
    assert torch.equal(mrl.predict(**inputs, dim=16), out.matryoshka_logits[1].argmax(-1))
    assert torch.equal(mrl.predict(**inputs), out.logits.argmax(-1))
    with pytest.raises(ValueError, match=r"one of the nesting dims \[8, 16, 32\].*got 12"):
        mrl.predict(**inputs, dim=12)
    mrl_e = CLASSIFIERS[backbone_kind](make_config(backbone_kind, num_labels=5, efficient=True)).eval()
    embeddings = mrl_e(**inputs).embeddings
    weight, bias = mrl_e.heads.classifier.weight, mrl_e.heads.classifier.bias
    expected = embeddings[:, :12] @ weight[:, :12].T + bias
    torch.testing.assert_close(mrl_e.predict(**inputs, dim=12, return_logits=True), expected)


def test_classifier_rejects_too_few_labels():
    with pytest.raises(ValueError, match=r"`num_labels` must be an integer >= 2.*got 1"):
        MatryoshkaForSequenceClassification(make_config("bert", num_labels=1))


@pytest.mark.parametrize("task", ["embedding", "classification"])
def test_save_load_round_trip_through_auto_classes_is_exact(backbone_kind, task, tmp_path):
    torch.manual_seed(0)
    inputs = tiny_inputs(backbone_kind)
    if task == "embedding":
        model, auto_class = MatryoshkaModel(make_config(backbone_kind, embedding_dim=20)), AutoModel
    else:
        config = make_config(backbone_kind, num_labels=3, efficient=backbone_kind == "vit")
        model, auto_class = CLASSIFIERS[backbone_kind](config), AUTO_CLASSIFIERS[backbone_kind]
    model.eval().save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists() and (tmp_path / "config.json").exists()
    assert not list(tmp_path.glob("*.bin")) and not list(tmp_path.glob("*.pt"))
    loaded = auto_class.from_pretrained(tmp_path).eval()
    assert type(loaded) is type(model)
    before, after = model(**inputs), loaded(**inputs)
    assert torch.equal(before.embeddings, after.embeddings)
    if task == "classification":
        assert torch.equal(before.matryoshka_logits, after.matryoshka_logits)
        # The bare embedding model loads from a classifier checkpoint too, with the same embeddings.
        bare = AutoModel.from_pretrained(tmp_path).eval()
        assert type(bare) is MatryoshkaModel and torch.equal(bare(**inputs).embeddings, before.embeddings)


def test_from_backbone_matches_sentence_transformers(minilm_path):
    from sentence_transformers import SentenceTransformer
    from transformers import AutoTokenizer

    texts = ["a small dog barking", "the theory of relativity", "an apple"]
    reference = SentenceTransformer(str(minilm_path), device="cpu").encode(texts, convert_to_tensor=True)
    model = MatryoshkaModel.from_backbone(minilm_path).eval()
    assert model.config.embedding_dim == 384 and model.config.pooling == "mean"
    assert model.config.matryoshka_dims == [8, 16, 32, 64, 128, 256, 384]
    tokens = AutoTokenizer.from_pretrained(minilm_path)(texts, padding=True, return_tensors="pt")
    torch.testing.assert_close(model.encode(**tokens, convert_to_tensor=True), reference, atol=1e-5, rtol=0)
    truncated = model.encode(**tokens, dim=64, convert_to_tensor=True)
    torch.testing.assert_close(truncated, F.normalize(reference[:, :64], dim=-1), atol=1e-5, rtol=0)


def test_from_backbone_on_a_local_vit_checkpoint(tmp_path):
    from transformers import ViTModel

    torch.manual_seed(0)
    plain = ViTModel(BACKBONES["vit"]()).eval()
    plain.save_pretrained(tmp_path)
    model = MatryoshkaForImageClassification.from_backbone(str(tmp_path), num_labels=4, embedding_dim=16).eval()
    pixel_values = tiny_inputs("vit")["pixel_values"]
    hidden = model.matryoshka(pixel_values=pixel_values).last_hidden_state
    assert torch.equal(hidden, plain(pixel_values=pixel_values).last_hidden_state)
    assert model.config.matryoshka_dims == [8, 16]


def test_text_classification_pipeline(minilm_path):
    from transformers import AutoTokenizer, pipeline

    model = MatryoshkaForSequenceClassification.from_backbone(
        minilm_path, num_labels=3, id2label={0: "animal", 1: "plant", 2: "artifact"}
    )
    classify = pipeline("text-classification", model=model, tokenizer=AutoTokenizer.from_pretrained(minilm_path))
    predictions = classify(["a dog", "an oak tree"])
    assert len(predictions) == 2 and {p["label"] for p in predictions} <= {"animal", "plant", "artifact"}
    assert all(0.0 < p["score"] <= 1.0 for p in predictions)
