"""scripts/run_experiments_supervised.py: every run's command parses as `train_supervised.py` flags with the
experiments' hyper-parameters, and the summary reads the results JSON that `train_supervised.py` writes."""

import json

import pytest
from accelerate.state import AcceleratorState

from hf_mrl.data import DataArguments
from hf_mrl.recipes.training import SupervisedModelArguments
from hf_mrl.training import MatryoshkaTrainingArguments
from hf_mrl.training.launch import parse_arguments

from .script_loading import load_script

experiments = load_script("run_experiments_supervised")


def parsed(name: str, run: str, tmp_path):
    command = experiments.train_command(experiments.experiment_runs(name)[run], tmp_path / run)
    assert command[1] == str(experiments.TRAIN_SCRIPT)
    return parse_arguments((SupervisedModelArguments, DataArguments, MatryoshkaTrainingArguments), command[2:])


def test_fmnist_runs_keep_their_hyper_parameters(tmp_path):
    runs = experiments.experiment_runs("fmnist-3ep")
    assert list(runs) == ["mrl", "ff128", "ff8", "ff16", "ff32", "ff64", "mrl-e"]
    model, data, training = parsed("fmnist-3ep", "mrl", tmp_path)
    assert (model.backbone, model.hidden_size, model.num_layers, model.patch_size, model.heads) == ("vit", 128, 4, 7, "mrl")
    assert model.matryoshka_dims == [8, 16, 32, 64, 128] and data.dataset_name == "fashion-mnist"
    assert (training.learning_rate, training.weight_decay, training.warmup_steps, training.max_grad_norm) == (1e-3, 0.05, 0.05, 1.0)
    assert training.lr_scheduler_type == "cosine" and training.eval_strategy == "epoch" and training.num_train_epochs == 3
    assert (training.per_device_train_batch_size, training.per_device_eval_batch_size, training.seed) == (128, 256, 0)
    assert (training.save_steps, training.save_total_limit, training.resume_from_checkpoint) == (200, 1, "latest")
    assert not training.bf16
    model, _, _ = parsed("fmnist-3ep", "ff16", tmp_path)
    assert (model.heads, model.ff_dim) == ("ff", 16)


def test_wordnet_runs_keep_their_hyper_parameters(tmp_path):
    model, data, training = parsed("wordnet-3ep-lr2e-4", "mrl", tmp_path)
    assert model.model_name_or_path == experiments.minilm_path() and model.use_projection
    assert model.matryoshka_dims == [8, 16, 32, 64, 128, 256, 384]
    assert (data.dataset_name, data.max_train_samples, data.max_eval_samples) == ("wordnet-nouns", 10_000, None)
    assert (training.learning_rate, training.head_learning_rate, training.weight_decay, training.warmup_steps) == (2e-4, 1e-2, 0.01, 0.1)
    assert training.lr_scheduler_type == "cosine" and training.eval_strategy == "epoch" and training.max_grad_norm == 1.0
    assert (training.per_device_train_batch_size, training.per_device_eval_batch_size, training.max_seq_length) == (32, 128, 32)
    assert training.bf16 and training.num_train_epochs == 3


@pytest.mark.slow
def test_summary_reads_what_train_supervised_writes(tmp_path):
    """A tiny MRL run stands in for the fmnist MRL run; the summary tables it."""
    runs_dir, results_dir = tmp_path / "runs", tmp_path / "results"
    try:
        load_script("train_supervised").main([
            "--dataset_name", "fashion-mnist", "--backbone", "vit", "--hidden_size", "32", "--num_layers", "1",
            "--num_attention_heads", "2", "--matryoshka_dims", "8", "16", "32", "--max_train_samples", "64",
            "--max_eval_samples", "32", "--per_device_train_batch_size", "16", "--max_steps", "2",
            "--output_dir", str(runs_dir / "fmnist-3ep" / "mrl"),
        ])
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
    experiments.summarize("fmnist-3ep", runs_dir, results_dir)
    table = (results_dir / "supervised_fmnist-3ep.md").read_text()
    assert "| 8 | " in table and "| mrl | 2 |" in table
    rows = json.loads((results_dir / "supervised_fmnist-3ep.json").read_text())["rows"]
    assert [row["dim"] for row in rows] == [8, 16, 32, 64, 128]
    assert 0.0 <= rows[0]["mrl_top1"] <= 1.0 and rows[-1]["mrl_top1"] is None  # the tiny model stops at 32
    assert (results_dir / "supervised_fmnist-3ep_top1.png").stat().st_size > 0
