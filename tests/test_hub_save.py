"""save_with_card / make_trust_remote_code_ready: the files written, round trips, refusals, atomicity."""

import json

import pytest
import torch
from transformers import AutoModel, AutoModelForImageClassification, AutoModelForSequenceClassification, AutoTokenizer

from hf_mrl import (
    MatryoshkaConfig,
    MatryoshkaForImageClassification,
    MatryoshkaForSequenceClassification,
    MatryoshkaModel,
)
from hf_mrl.hub import make_trust_remote_code_ready, remote_code_auto_map, save_with_card
from hf_mrl.modeling.configuration_matryoshka import MatryoshkaDualEncoderConfig
from hf_mrl.modeling.files import RECORD_NAME
from hf_mrl.modeling.modeling_dual_encoder import MatryoshkaDualEncoderModel

from .tiny import tiny_bert_config, tiny_inputs, tiny_vit_config

RESULTS = {"fmnist_dim8_top1": 0.6, "fmnist_dim16_top1": 0.7}
CODE_FILES = {"configuration_matryoshka.py", "modeling_matryoshka.py", "nesting.py", "fused_cross_entropy.py", "checks.py",
              "encoding.py", "files.py", "file_checks.py", "progress.py", "saved_weights.py",
              "sentence_transformers_format.py"}
# What the dual encoder's modeling file imports on top (the classifiers' needs only the fused cross-entropy).
LOSS_FILES = {"losses.py", "fused_infonce.py"}


def build(name: str):
    torch.manual_seed(0)
    if name == "vit-embedding":
        return MatryoshkaModel(MatryoshkaConfig(backbone_config=tiny_vit_config(), embedding_dim=24, matryoshka_dims=[8, 24]))
    if name == "vit-classifier":
        return MatryoshkaForImageClassification(MatryoshkaConfig(backbone_config=tiny_vit_config(), num_labels=10))
    if name == "bert-classifier":
        return MatryoshkaForSequenceClassification(MatryoshkaConfig(backbone_config=tiny_bert_config(), num_labels=3, efficient=True))
    return MatryoshkaDualEncoderModel(
        MatryoshkaDualEncoderConfig(vision_config=tiny_vit_config(), text_config=tiny_bert_config(), projection_dim=16)
    )


def outputs(model, name: str) -> torch.Tensor:
    with torch.no_grad():
        if name == "dual-encoder":
            return torch.cat([model.get_image_features(**tiny_inputs("vit")), model.get_text_features(**tiny_inputs("bert"))])
        kind = "vit" if name.startswith("vit") else "bert"
        out = model(**tiny_inputs(kind))
        return out.logits if "classifier" in name else out.embeddings


AUTO_CLASS = {
    "vit-embedding": AutoModel,
    "vit-classifier": AutoModelForImageClassification,
    "bert-classifier": AutoModelForSequenceClassification,
    "dual-encoder": AutoModel,
}


@pytest.mark.parametrize("name", sorted(AUTO_CLASS))
def test_save_with_card_writes_a_complete_folder_for_every_model_class(tmp_path, name):
    model = build(name).eval()
    folder = save_with_card(model, tmp_path / "out", RESULTS)
    files = {path.name for path in folder.iterdir()}
    assert {"model.safetensors", "config.json", "README.md", "matryoshka_results.png"} <= files
    assert not any(file.endswith((".bin", ".pt", ".pkl")) for file in files)
    assert not files & (CODE_FILES | LOSS_FILES)  # modeling code only when asked for
    config = json.loads((folder / "config.json").read_text())
    assert config["is_matryoshka"] is True and "auto_map" not in config
    assert "| 16 | 0.7000 |" in (folder / "README.md").read_text()
    loaded = AUTO_CLASS[name].from_pretrained(folder).eval()
    assert type(loaded) is type(model)
    torch.testing.assert_close(outputs(loaded, name), outputs(model, name))
    assert [path.name for path in tmp_path.iterdir()] == ["out"]  # no staging folders left


def test_save_with_card_writes_the_tokenizer(tmp_path, minilm_path):
    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    model = MatryoshkaModel(MatryoshkaConfig(backbone_config=tiny_bert_config(vocab_size=tokenizer.vocab_size)))
    folder = save_with_card(model, tmp_path / "out", processor=tokenizer)
    assert (folder / "tokenizer.json").is_file() and not (folder / "matryoshka_results.png").exists()
    assert AutoTokenizer.from_pretrained(folder)("a dog")["input_ids"] == tokenizer("a dog")["input_ids"]


def test_save_with_card_replaces_a_saved_model_but_refuses_other_folders(tmp_path):
    model = build("vit-embedding")
    folder = save_with_card(model, tmp_path / "out")
    (folder / "model-00002-of-00002.safetensors").write_text("the user's, though named like a shard")
    (folder / "keep.txt").write_text("the user's, not hf_mrl's")
    save_with_card(model, folder, RESULTS)
    assert (folder / "model-00002-of-00002.safetensors").read_text() == "the user's, though named like a shard"
    assert (folder / "matryoshka_results.png").exists()
    assert (folder / "keep.txt").read_text() == "the user's, not hf_mrl's"  # never deleted, carried over

    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="not a saved hf_mrl model folder"):
        save_with_card(model, other)
    assert [path.name for path in other.iterdir()] == ["keep.txt"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="not a folder"):
        save_with_card(model, tmp_path / "file")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"results": {"top1": 0.5}}, "results"),
        ({"results": {"a_dim8_top1": float("inf")}}, "finite"),
        ({"processor": "not a processor"}, "processor"),
        ({"library_name": "keras"}, "library_name"),
    ],
)
def test_bad_arguments_fail_before_anything_is_written(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        save_with_card(build("vit-embedding"), tmp_path / "out", **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_save_with_card_rejects_other_models(tmp_path):
    with pytest.raises(ValueError, match="hf_mrl model"):
        save_with_card(torch.nn.Linear(2, 2), tmp_path / "out")


def test_a_failed_save_leaves_the_previous_folder_intact(tmp_path):
    model = build("vit-embedding")
    folder = save_with_card(model, tmp_path / "out")
    before = {path.name: path.read_bytes() for path in folder.iterdir()}

    class BrokenProcessor:
        def save_pretrained(self, path):
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        save_with_card(model, folder, RESULTS, processor=BrokenProcessor())
    assert {path.name: path.read_bytes() for path in folder.iterdir()} == before
    assert [path.name for path in tmp_path.iterdir()] == ["out"]


def test_trust_remote_code_ready_folder(tmp_path):
    model = build("bert-classifier")
    folder = save_with_card(model, tmp_path / "out", trust_remote_code_ready=True)
    assert CODE_FILES <= {path.name for path in folder.iterdir()}
    config = json.loads((folder / "config.json").read_text())
    assert config["auto_map"] == {
        "AutoConfig": "configuration_matryoshka.MatryoshkaConfig",
        "AutoModel": "modeling_matryoshka.MatryoshkaModel",
        "AutoModelForImageClassification": "modeling_matryoshka.MatryoshkaForImageClassification",
        "AutoModelForSequenceClassification": "modeling_matryoshka.MatryoshkaForSequenceClassification",
    }
    assert "trust_remote_code=True" in (folder / "README.md").read_text()
    # with hf_mrl installed, the registered classes load it without trust_remote_code
    loaded = AutoModelForSequenceClassification.from_pretrained(folder)
    assert type(loaded) is MatryoshkaForSequenceClassification


def test_make_trust_remote_code_ready_on_a_plain_save(tmp_path):
    model = build("dual-encoder")
    model.save_pretrained(tmp_path / "plain")
    make_trust_remote_code_ready(tmp_path / "plain")
    files = {path.name for path in (tmp_path / "plain").iterdir()}
    assert CODE_FILES | LOSS_FILES | {"modeling_dual_encoder.py", "model.safetensors"} <= files
    assert "testing_utils.py" not in files and not any("reference" in name for name in files)  # no test code
    assert not [name for name in files if name.startswith(".") and name != RECORD_NAME]  # no temporary files left
    auto_map = json.loads((tmp_path / "plain" / "config.json").read_text())["auto_map"]
    assert auto_map == remote_code_auto_map(MatryoshkaDualEncoderConfig)
    assert auto_map["AutoModel"] == "modeling_dual_encoder.MatryoshkaDualEncoderModel"


def test_make_trust_remote_code_ready_refuses_other_folders(tmp_path):
    with pytest.raises(ValueError, match="no config.json"):
        make_trust_remote_code_ready(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ValueError, match="model_type 'bert'"):
        make_trust_remote_code_ready(tmp_path)
