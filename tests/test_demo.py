"""`hf-mrl demo`: the text demo (WordNet) with a tiny BERT, and the image demo on a slice of Fashion-MNIST with a tiny
ViT, each for a few steps."""

import argparse
import json

import numpy as np
import pytest
import torch
from transformers import AutoModelForImageClassification

import hf_mrl
from hf_mrl.cli import main as cli_main
from hf_mrl.recipes import demo

QUICK = [
    "--data", "fashion-mnist", "--max_steps", "3", "--batch_size", "16", "--hidden_size", "32", "--num_layers", "1", "--limit_train", "64",
    "--limit_eval", "32", "--knn_database_size", "48",
]


def parse(*arguments) -> argparse.Namespace:
    return demo.add_arguments(argparse.ArgumentParser()).parse_args(list(arguments))


def test_demo_through_the_cli_writes_model_results_plots_and_deployment(tmp_path, capsys):
    output_dir = tmp_path / "demo"
    assert cli_main(["demo", "--output_dir", str(output_dir), *QUICK]) == 0
    printed = capsys.readouterr().out
    assert "64 training images, 32 validation images (held out of training), 32 test images" in printed
    assert "| dim | MRL top-1 | plain top-1 (head cut to k) | MRL 1-NN | plain 1-NN (truncated) |" in printed
    assert "| 32 |" in printed
    assert "MRL vs plain, accuracy points (MRL minus plain) at each dim:" in printed
    assert "- top-1 of the head at k: MRL " in printed and "- 1-NN of the first k dims: MRL " in printed
    assert "What the nesting buys at deployment" in printed
    assert "Classification: cascade" in printed and "| cascade: first head confident enough |" in printed
    assert "Retrieval: exact full-dim search vs adaptive search" in printed
    assert "| exact search, full dim, every item |" in printed and "| funnel: 8d keep" in printed

    summary = json.loads((output_dir / "results.json").read_text())
    assert summary["dims"] == [8, 16, 32]
    assert summary["splits"] == {"train": 64, "validation": 32, "test": 32, "database": 48, "retrieval_queries": 32}
    for label in ("MRL", "plain"):
        for dim in (8, 16, 32):
            for metric in ("top1", "1nn"):
                assert 0.0 <= summary["results"][label][f"fashion-mnist_dim{dim}_{metric}"] <= 1.0
    assert set(summary["mrl_vs_plain"]) == {"top1", "1nn"}
    assert summary["settings"]["per_device_train_batch_size"] == 16  # --batch_size is its alias
    assert set(summary["timings"]) == {"train_seconds", "seconds_per_step", "deployment_seconds", "total_seconds"}
    assert set(summary["timings"]["train_seconds"]) == {"MRL", "plain"}

    deployment = json.loads((output_dir / "deployment.json").read_text())
    assert deployment == summary["deployment"]
    assert deployment["cascade"]["full_dim"] == 32
    assert set(deployment["cascade"]["accuracy_at_dim"]) == {"8", "16", "32"}  # JSON keys
    assert deployment["retrieval"][0]["method"] == "exact" and deployment["retrieval"][-1]["method"] == "funnel"
    for name in ("accuracy_vs_dim.png", "deployment.png"):
        assert (output_dir / name).read_bytes()[:4] == b"\x89PNG"
    model = AutoModelForImageClassification.from_pretrained(output_dir / "model")
    assert model.config.matryoshka_dims == [8, 16, 32]
    assert (output_dir / "model" / "preprocessor_config.json").is_file()
    assert "| 16 |" in (output_dir / "model" / "README.md").read_text()
    assert not list(output_dir.glob("checkpoint-*"))


def test_leads_and_trails_says_where_mrl_is_ahead_and_behind():
    mrl = {"x_dim8_1nn": 0.70, "x_dim16_1nn": 0.80, "x_dim32_1nn": 0.85}
    plain = {"x_dim8_1nn": 0.60, "x_dim16_1nn": 0.81, "x_dim32_1nn": 0.85}
    assert demo.leads_and_trails(mrl, plain, "1nn") == "leads at 8 (+10.00); trails at 16 (-1.00); level at 32"
    assert demo.leads_and_trails(mrl, {key: 0.5 for key in plain}, "1nn") == (
        "leads at 8 (+20.00), 16 (+30.00), 32 (+35.00)"
    )


def test_truncated_head_logits_cut_the_full_head():
    head = torch.nn.Linear(6, 3)
    embeddings = np.random.default_rng(0).standard_normal((5, 6)).astype(np.float32)
    with torch.no_grad():
        full = head(torch.from_numpy(embeddings)).numpy()
        first_two = (torch.from_numpy(embeddings[:, :2]) @ head.weight[:, :2].T + head.bias).numpy()
    np.testing.assert_allclose(demo.truncated_head_logits(head, embeddings, 6), full, rtol=1e-6)
    np.testing.assert_allclose(demo.truncated_head_logits(head, embeddings, 2), first_two, rtol=1e-6)


def test_training_flags_keep_their_transformers_names_and_each_data_has_its_defaults():
    assert parse("--per_device_train_batch_size", "32").per_device_train_batch_size == 32
    assert parse("--batch_size", "32").per_device_train_batch_size == 32
    text = demo.check_args(parse())
    assert text.data == "wordnet"
    assert (text.max_steps, text.per_device_train_batch_size, text.learning_rate) == (200, 64, 2e-4)
    images = demo.check_args(parse("--data", "fashion-mnist"))
    assert (images.max_steps, images.per_device_train_batch_size, images.learning_rate) == (600, 128, 1e-3)
    assert (images.hidden_size, images.num_layers, images.patch_size) == (128, 4, 7)
    assert demo.check_args(parse("--data", "fashion-mnist", "--max_steps", "7")).max_steps == 7


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--max_steps", "0"], "--max_steps"),
        (["--batch_size", "0"], "--per_device_train_batch_size"),
        (["--hidden_size", "30"], "--hidden_size"),
        (["--patch_size", "5"], "--patch_size"),
        (["--limit_train", "0"], "--limit_train"),
        (["--learning_rate", "0"], "--learning_rate"),
        (["--validation_split_percentage", "0"], "--validation_split_percentage"),
        (["--data", "mnist"], "--data"),
        (["--bf16", "maybe"], "--bf16"),
        (["--eval_pairs", "20"], "--eval_pairs"),
    ],
)
def test_bad_arguments_fail_before_training(tmp_path, arguments, message):
    with pytest.raises(ValueError, match=message):
        demo.run_demo(parse("--output_dir", str(tmp_path / "demo"), *arguments))
    assert not (tmp_path / "demo").exists()


TEXT_QUICK = ["--max_steps", "2", "--batch_size", "8", "--eval_pairs", "300", "--num_queries", "100", "--max_seq_length", "16",
              "--bf16", "false"]


def test_text_demo_prints_the_baselines_the_margin_and_the_retrieval_speedup(tmp_path, capsys, tiny_text_tower):
    output_dir = tmp_path / "demo"
    assert cli_main(["demo", "--output_dir", str(output_dir), "--model_name_or_path", tiny_text_tower, *TEXT_QUICK]) == 0
    printed = capsys.readouterr().out
    assert "100 held-out definitions search the " in printed and " words of 300 held-out pairs (split by synset)" in printed
    assert "| dim | MRL (first k dims) | plain (first k dims) | plain + PCA (top k components) |" in printed
    assert "MRL minus the better baseline, recall@10 points: " in printed and " at 8 dims" in printed
    assert "Retrieval: exact full-dim search vs adaptive search" in printed

    summary = json.loads((output_dir / "results.json").read_text())
    assert summary["dims"] == [8, 16, 32] and summary["bf16"] is False
    assert summary["sizes"]["eval_pairs"] == 300 and summary["sizes"]["queries"] == 100
    assert summary["sizes"]["words"] >= 250
    assert set(summary["results"]) == {"MRL", "plain", "plain + PCA"}
    for label, values in summary["results"].items():
        for dim in (8, 16, 32):
            assert 0.0 <= values[f"wordnet_dim{dim}_recall@10"] <= 1.0, label
    results = {label: {key: value for key, value in values.items()} for label, values in summary["results"].items()}
    best = {dim: max(results[b][f"wordnet_dim{dim}_recall@10"] for b in ("plain", "plain + PCA")) for dim in (8, 16)}
    for dim in (8, 16):  # the margin is MRL minus the better baseline, in points
        expected = round(100 * (results["MRL"][f"wordnet_dim{dim}_recall@10"] - best[dim]), 2)
        assert summary["margin_vs_best_baseline"][str(dim)] == pytest.approx(expected, abs=0.011)
    retrieval = summary["deployment"]["retrieval"]
    assert retrieval[0]["method"] == "exact" and retrieval[-1]["method"] == "funnel"
    assert summary["retrieval_speedup"] is None or summary["retrieval_speedup"] > 0
    assert set(summary["timings"]) == {"train_seconds", "retrieval_seconds", "total_seconds"}
    for name in ("recall_vs_dim.png", "deployment.png"):
        assert (output_dir / name).read_bytes()[:4] == b"\x89PNG"
    reloaded = hf_mrl.MatryoshkaModel.from_pretrained(output_dir / "model")
    assert reloaded.config.matryoshka_dims == [8, 16, 32]
    assert reloaded.encode(["a small dog"], dim=8).shape == (1, 8)
