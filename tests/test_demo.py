"""`hf-mrl demo` on a slice of Fashion-MNIST with a tiny ViT and a few steps."""

import argparse
import json

import numpy as np
import pytest
import torch
from transformers import AutoModelForImageClassification

import hf_mrl  # noqa: F401
from hf_mrl import demo
from hf_mrl.cli import main as cli_main

QUICK = [
    "--max_steps", "3", "--batch_size", "16", "--hidden_size", "32", "--num_layers", "1", "--limit_train", "64",
    "--limit_eval", "32", "--knn_database_size", "48",
]


def parse(*arguments) -> argparse.Namespace:
    return demo.add_arguments(argparse.ArgumentParser()).parse_args(list(arguments))


def test_demo_through_the_cli_writes_model_results_and_plot(tmp_path, capsys):
    output_dir = tmp_path / "demo"
    assert cli_main(["demo", "--output_dir", str(output_dir), *QUICK]) == 0
    printed = capsys.readouterr().out
    assert "| dim | MRL top-1 | plain top-1 (head cut to k) | MRL 1-NN | plain 1-NN (truncated) |" in printed
    assert "| 32 |" in printed

    summary = json.loads((output_dir / "results.json").read_text())
    assert summary["dims"] == [8, 16, 32]
    for label in ("MRL", "plain"):
        for dim in (8, 16, 32):
            for metric in ("top1", "1nn"):
                assert 0.0 <= summary["results"][label][f"fashion-mnist_dim{dim}_{metric}"] <= 1.0
    assert (output_dir / "accuracy_vs_dim.png").read_bytes()[:4] == b"\x89PNG"
    model = AutoModelForImageClassification.from_pretrained(output_dir / "model")
    assert model.config.matryoshka_dims == [8, 16, 32]
    assert (output_dir / "model" / "preprocessor_config.json").is_file()
    assert "| 16 |" in (output_dir / "model" / "README.md").read_text()


def test_truncated_head_logits_cut_the_full_head():
    head = torch.nn.Linear(6, 3)
    embeddings = np.random.default_rng(0).standard_normal((5, 6)).astype(np.float32)
    with torch.no_grad():
        full = head(torch.from_numpy(embeddings)).numpy()
        first_two = (torch.from_numpy(embeddings[:, :2]) @ head.weight[:, :2].T + head.bias).numpy()
    np.testing.assert_allclose(demo.truncated_head_logits(head, embeddings, 6), full, rtol=1e-6)
    np.testing.assert_allclose(demo.truncated_head_logits(head, embeddings, 2), first_two, rtol=1e-6)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--max_steps", "0"], "--max_steps"),
        (["--hidden_size", "30"], "--hidden_size"),
        (["--patch_size", "5"], "--patch_size"),
        (["--limit_train", "0"], "--limit_train"),
        (["--learning_rate", "0"], "--learning_rate"),
    ],
)
def test_bad_arguments_fail_before_training(tmp_path, arguments, message):
    with pytest.raises(ValueError, match=message):
        demo.run_demo(parse("--output_dir", str(tmp_path / "demo"), *arguments))
    assert not (tmp_path / "demo").exists()
