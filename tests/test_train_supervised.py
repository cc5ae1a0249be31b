"""scripts/train_supervised.py run for a few steps on small slices of the real datasets, with tiny models."""

import csv
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from accelerate.state import AcceleratorState
from safetensors.torch import load_file
from transformers import AutoModelForImageClassification

import hf_mrl  # noqa: F401
from hf_mrl.training import PAUSE_AFTER_CHECKPOINT_ENV, MatryoshkaTrainer, MatryoshkaTrainingArguments, build_classifier

from .launch import accelerate_launch
from .tiny import tiny_vit_config

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "train_supervised.py"
_spec = importlib.util.spec_from_file_location("train_supervised", SCRIPT)
train_supervised = importlib.util.module_from_spec(_spec)
sys.modules["train_supervised"] = train_supervised  # dataclasses look their module up there
_spec.loader.exec_module(train_supervised)

TINY_VIT = ["--backbone", "vit", "--hidden_size", "32", "--num_layers", "2", "--num_attention_heads", "2",
            "--learning_rate", "1e-3"]
QUICK = ["--max_train_samples", "64", "--max_eval_samples", "32", "--per_device_train_batch_size", "16",
         "--per_device_eval_batch_size", "64"]


def run(tmp_path, *arguments, name="run") -> tuple[dict, Path]:
    output_dir = tmp_path / name
    try:
        summary = train_supervised.main([*arguments, "--output_dir", str(output_dir)])
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
    return summary, output_dir


def test_vit_mrl_writes_model_card_and_per_dim_results(tmp_path):
    summary, output_dir = run(
        tmp_path, "--dataset_name", "fashion-mnist", *TINY_VIT, *QUICK, "--matryoshka_dims", "8", "16", "32",
        "--max_steps", "3", "--report_to", "tensorboard",
    )
    assert summary["steps"] == 3 and summary["final_split"] == "test"
    for dim in (8, 16, 32):
        for metric in ("top1", "1nn"):
            assert 0.0 <= summary["final"][f"fashion-mnist_dim{dim}_{metric}"] <= 1.0
    assert summary["knn_database"] == "train"
    model_dir = output_dir / "model"
    for name in ("model.safetensors", "config.json", "preprocessor_config.json", "README.md", "matryoshka_results.png"):
        assert (model_dir / name).is_file(), name
    assert not list(model_dir.glob("*.bin"))
    assert "| 16 |" in (model_dir / "README.md").read_text()
    assert json.loads((output_dir / "results.json").read_text())["final"] == summary["final"]
    assert list(output_dir.rglob("events.out.tfevents.*"))
    assert (output_dir / "accuracy_vs_dim.png").stat().st_size > 0

    model = AutoModelForImageClassification.from_pretrained(model_dir)
    assert model.config.matryoshka_dims == [8, 16, 32]
    assert model.config.id2label[7] == "Sneaker"  # class names flow into the saved config
    assert model.encode(pixel_values=torch.zeros(2, 1, 28, 28), dim=8).shape == (2, 8)


def test_ff_baseline_is_one_low_dim_model_scored_at_its_truncations(tmp_path):
    summary, output_dir = run(
        tmp_path, "--dataset_name", "fashion-mnist", *TINY_VIT, *QUICK, "--heads", "ff", "--ff_dim", "16", "--max_steps", "2"
    )
    assert {key: summary["model"][key] for key in ("heads", "embedding_dim", "matryoshka_dims")} == {
        "heads": "ff", "embedding_dim": 16, "matryoshka_dims": [16]
    }
    final = summary["final"]
    assert "fashion-mnist_dim16_top1" in final and "fashion-mnist_dim8_1nn" in final
    assert "fashion-mnist_dim8_top1" not in final  # one head, at 16
    config = json.loads((output_dir / "model" / "config.json").read_text())
    assert config["embedding_dim"] == 16 and config["matryoshka_dimensions"] == [16]


@pytest.mark.slow
def test_bert_from_scratch_mrl_e_on_wordnet(tmp_path, minilm_path):
    summary, output_dir = run(
        tmp_path, "--dataset_name", "wordnet-nouns", "--backbone", "bert", "--tokenizer_name", str(minilm_path),
        "--hidden_size", "32", "--num_layers", "1", "--num_attention_heads", "2", "--heads", "mrl-e",
        "--matryoshka_dims", "8", "32", *QUICK, "--num_train_epochs", "2", "--dropout", "0.1", "--max_seq_length", "32",
        "--use_projection", "--eval_strategy", "epoch", "--learning_rate", "1e-3",
    )
    assert summary["steps"] == 8  # 64 rows / 16 per batch, 2 epochs
    assert [entry["epoch"] for entry in summary["history"]] == [1, 2]  # every epoch's end, as Trainer does
    assert summary["final_split"] == "test" and summary["history"][0]["wordnet-nouns_dim8_top1"] >= 0
    assert set(summary["final"]) == {f"wordnet-nouns_dim{dim}_{metric}" for dim in (8, 32) for metric in ("top1", "1nn")}
    assert (output_dir / "model" / "tokenizer.json").is_file()
    tokenizer_config = json.loads((output_dir / "model" / "tokenizer_config.json").read_text())
    assert tokenizer_config["model_max_length"] == 32  # the training length travels with the model
    saved_config = json.loads((output_dir / "model" / "config.json").read_text())
    assert saved_config["efficient"] is True and saved_config["use_projection"] is True
    assert "matryoshka.projection.weight" in load_file(output_dir / "model" / "model.safetensors")


def test_local_csv_with_column_overrides_streamed(tmp_path, minilm_path):
    rows = [("a cat and a dog", "animal"), ("a car on a road", "vehicle")] * 16
    path = tmp_path / "data.csv"
    with open(path, "w", newline="") as handle:
        csv.writer(handle).writerows([("sentence", "category"), *rows])
    summary, _ = run(
        tmp_path, "--train_file", str(path), "--text_column", "sentence", "--label_column", "category",
        "--eval_split", "train", "--backbone", "bert", "--tokenizer_name", str(minilm_path), "--hidden_size", "32",
        "--num_layers", "1", "--num_attention_heads", "2", "--streaming", "--max_steps", "3",
        "--per_device_train_batch_size", "8", "--matryoshka_dims", "8", "32",
    )
    assert summary["steps"] == 3
    assert summary["knn_database"] == "train, leave-one-out"  # a stream is no 1-NN database
    assert summary["final"]["data_dim8_top1"] >= 0.0


def test_a_test_file_is_the_test_split_and_names_the_final_metrics(tmp_path, minilm_path):
    """train + test files: the eval split is 10% of the train file held out (never the test file), and the final
    metrics, the card and the plot name the test file."""
    for name, count in (("reviews_train", 40), ("reviews_test", 12)):
        with open(tmp_path / f"{name}.csv", "w", newline="") as handle:
            rows = [(f"a cat and a dog {i}", "animal") if i % 2 else (f"a car on a road {i}", "vehicle") for i in range(count)]
            csv.writer(handle).writerows([("text", "label"), *rows])
    summary, output = run(
        tmp_path, "--train_file", str(tmp_path / "reviews_train.csv"), "--test_file", str(tmp_path / "reviews_test.csv"),
        "--backbone", "bert", "--tokenizer_name", str(minilm_path), "--hidden_size", "32", "--num_layers", "1",
        "--num_attention_heads", "2", "--max_steps", "2", "--per_device_train_batch_size", "8",
        "--matryoshka_dims", "8", "32", "--eval_strategy", "steps", "--eval_steps", "2",
    )
    assert summary["final_split"] == "test"
    assert set(summary["final"]) and all(key.startswith("reviews_test_dim") for key in summary["final"])
    assert all(key.startswith("reviews_train_dim") for entry in summary["history"] for key in entry
               if "_dim" in key)  # the held-out part of the train file
    assert "reviews_test" in (output / "model" / "README.md").read_text()


def test_new_layers_learn_at_the_head_learning_rate():
    model = build_classifier(10, "ff", backbone_config=tiny_vit_config(hidden_size=32), ff_dim=16)
    args = MatryoshkaTrainingArguments(output_dir="unused", learning_rate=1e-4, head_learning_rate=1e-2, weight_decay=0.1)
    rows = datasets.Dataset.from_dict({"image": [np.zeros((28, 28), dtype=np.uint8)], "label": [0]})
    optimizer = MatryoshkaTrainer(model=model, args=args, train_dataset=rows).create_optimizer()
    rate_of = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
    decay_of = {id(p): group["weight_decay"] for group in optimizer.param_groups for p in group["params"]}
    for name, parameter in model.named_parameters():
        added = name.startswith(("heads.", "matryoshka.projection."))
        assert rate_of[id(parameter)] == (1e-2 if added else 1e-4), name
        plain = parameter.ndim < 2 or name.endswith(("position_embeddings", "cls_token"))
        assert decay_of[id(parameter)] == (0.0 if plain else 0.1), name
    assert len(rate_of) == len(list(model.parameters()))


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--dataset_name", "fashion-mnist", *TINY_VIT, "--per_device_train_batch_size", "0"], "per_device_train_batch_size"),
        (["--dataset_name", "fashion-mnist", *TINY_VIT, "--matryoshka_dims", "8", "64"], "above the embedding dim 32"),
        (["--dataset_name", "fashion-mnist", *TINY_VIT, "--heads", "ff", "--ff_dim", "48"], "ff_dim"),
        (["--dataset_name", "fashion-mnist", *TINY_VIT, "--heads", "ff", "--matryoshka_dims", "8"], "ff_dim"),
        (["--dataset_name", "./no/such/folder", *TINY_VIT], "does not exist"),
        (["--dataset_name", "fashion-mnist", *TINY_VIT, "--text_column", "text"], "text_column"),
        (["--dataset_name", "fashion-mnist"], "exactly one of"),
        (["--dataset_name", "fashion-mnist", *TINY_VIT, "--learning_rate", "nan"], "learning_rate"),
        (["--dataset_name", "wordnet-nouns", "--backbone", "bert"], "--tokenizer_name"),
        (["--dataset_name", "fashion-mnist", *TINY_VIT, "--num_attention_heads", "3"], "multiple of `num_attention_heads`"),
        (["--dataset_name", "wordnet", *TINY_VIT], "wordnet-nouns"),
    ],
)
def test_bad_arguments_fail_before_any_work(tmp_path, arguments, message):
    with pytest.raises((ValueError, FileNotFoundError), match=message.replace("(", r"\(")):
        train_supervised.main([*arguments, "--output_dir", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


def test_text_data_for_a_vision_model_is_named_before_training(tmp_path):
    with pytest.raises(ValueError, match="no `image` column"):
        run(tmp_path, "--dataset_name", "wordnet-nouns", *TINY_VIT, *QUICK, "--max_steps", "1")
    assert not (tmp_path / "run" / "model").exists()


def test_unknown_column_is_named(tmp_path, minilm_path):
    path = tmp_path / "data.csv"
    path.write_text("sentence,category\na cat,animal\na car,vehicle\n")
    with pytest.raises(ValueError, match="'text'.*text_column.*columns"):
        run(tmp_path, "--train_file", str(path), "--text_column", "text", "--label_column", "category", "--backbone",
            "bert", "--tokenizer_name", str(minilm_path), "--hidden_size", "32", "--num_attention_heads", "2")
    assert not (tmp_path / "run" / "model").exists()


RESUMABLE = [
    "--dataset_name", "fashion-mnist", *TINY_VIT, "--max_train_samples", "64", "--max_eval_samples", "16",
    "--per_device_train_batch_size", "8", "--gradient_accumulation_steps", "2", "--num_train_epochs", "2",
    "--dropout", "0.1", "--save_steps", "3", "--save_total_limit", "1", "--max_knn_reference_samples", "16",
    "--seed", "3", "--eval_strategy", "epoch",
]


@pytest.mark.slow
def test_sigkill_right_after_a_checkpoint_then_resume_gives_the_same_weights(tmp_path):
    killed_dir = tmp_path / "killed"
    env = dict(os.environ, **{PAUSE_AFTER_CHECKPOINT_ENV: "120", "OMP_NUM_THREADS": "1"})
    process = subprocess.Popen(
        [sys.executable, str(SCRIPT), *RESUMABLE, "--output_dir", str(killed_dir)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        while not list(killed_dir.glob("checkpoint-*")):
            assert process.poll() is None, process.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert [path.name for path in killed_dir.glob("checkpoint-*")] == ["checkpoint-3"]
    assert not (killed_dir / "model").exists()

    resumed, _ = run(tmp_path, *RESUMABLE, "--resume_from_checkpoint", "latest", name="killed")
    uninterrupted, _ = run(tmp_path, *RESUMABLE, name="uninterrupted")
    assert resumed["steps"] == uninterrupted["steps"] == 8  # 8 batches of 8, 2 per optimizer step, 2 epochs
    expected = load_file(tmp_path / "uninterrupted" / "model" / "model.safetensors")
    actual = load_file(killed_dir / "model" / "model.safetensors")
    assert expected.keys() == actual.keys()
    for name, tensor in expected.items():
        torch.testing.assert_close(actual[name], tensor, rtol=0, atol=1e-6, msg=name)
    assert resumed["history"] == uninterrupted["history"]


@pytest.mark.slow
def test_two_processes_with_accelerate_launch(tmp_path):
    output_dir = tmp_path / "ddp"
    launch = ["--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "bf16",
              "--dynamo_backend", "no"]
    script_args = [
        "--dataset_name", "fashion-mnist", *TINY_VIT, "--max_train_samples", "64", "--max_eval_samples", "16",
        "--per_device_train_batch_size", "8", "--max_steps", "3", "--bf16", "--save_steps", "2",
        "--output_dir", str(output_dir), "--matryoshka_dims", "8", "32",
    ]
    completed = accelerate_launch(launch, SCRIPT, script_args, output_dir, dict(os.environ, OMP_NUM_THREADS="1"))
    assert completed.returncode == 0, completed.stderr[-3000:]
    summary = json.loads((output_dir / "results.json").read_text())
    assert summary["steps"] == 3
    # 64 rows over 2 processes of 8: 4 optimizer steps per epoch, so 3 steps stay in epoch 0
    state = json.loads((output_dir / "checkpoint-2" / "trainer_state.json").read_text())
    assert state["global_step"] == 2 and state["epoch"] == 0.5
    assert (output_dir / "checkpoint-2" / "rng_state_1.pth").is_file()  # one RNG state per process
    assert (output_dir / "model" / "model.safetensors").is_file()


@pytest.mark.slow
def test_accelerate_launch_cpu_flag(tmp_path):
    """The issue's literal `accelerate launch --num_processes 2 --cpu`: with accelerate 1.15 it starts one CPU
    process (several need --multi_gpu, tested above, or mpirun); the script must train and save under it."""
    output_dir = tmp_path / "cpu"
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--cpu", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no",
        str(SCRIPT), "--dataset_name", "fashion-mnist", *TINY_VIT, "--max_train_samples", "32", "--max_eval_samples", "16",
        "--per_device_train_batch_size", "8", "--max_steps", "2", "--output_dir", str(output_dir), "--matryoshka_dims", "8", "32",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    summary = json.loads((output_dir / "results.json").read_text())
    assert summary["steps"] == 2
    assert set(summary["final"]) == {f"fashion-mnist_dim{dim}_{metric}" for dim in (8, 32) for metric in ("top1", "1nn")}
    assert (output_dir / "model" / "model.safetensors").is_file()


@pytest.mark.slow
def test_two_processes_equal_one_process_on_the_global_batch(tmp_path):
    common = [
        "--dataset_name", "fashion-mnist", *TINY_VIT, "--max_train_samples", "64", "--max_eval_samples", "16",
        "--max_steps", "3", "--matryoshka_dims", "8", "32", "--seed", "5",
    ]
    launch = ["--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
              "--dynamo_backend", "no"]
    script_args = [*common, "--per_device_train_batch_size", "8", "--output_dir", str(tmp_path / "two")]
    completed = accelerate_launch(launch, SCRIPT, script_args, tmp_path / "two", dict(os.environ, OMP_NUM_THREADS="1"))
    assert completed.returncode == 0, completed.stderr[-3000:]
    run(tmp_path, *common, "--per_device_train_batch_size", "16", name="one")
    two = load_file(tmp_path / "two" / "model" / "model.safetensors")
    one = load_file(tmp_path / "one" / "model" / "model.safetensors")
    for name, tensor in one.items():
        torch.testing.assert_close(two[name], tensor, rtol=0, atol=2e-5, msg=name)
    assert json.loads((tmp_path / "two" / "results.json").read_text())["steps"] == 3


def test_help_names_each_default_once(capsys):
    """A help text that names its own default ("default: full") gets no "(default: None)" from argparse."""
    from hf_mrl.data import DataArguments
    from hf_mrl.recipes.training import SupervisedModelArguments
    from hf_mrl.training.launch import parse_arguments

    with pytest.raises(SystemExit):
        parse_arguments((SupervisedModelArguments, DataArguments, MatryoshkaTrainingArguments), ["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "the one dim of --heads ff (default: full) --" in text
    assert "default: the encoder's hidden size --" in text
    assert "(default: max(learning_rate, 1e-3)) --" in text
    assert "NUM_TRAIN_EPOCHS Total number of training epochs to perform. (default: 3.0)" in text  # others keep theirs


def test_script_takes_every_trainer_flag(tmp_path):
    """The flags a user reaches for when the model grows reach Trainer through the script."""
    summary, output_dir = run(
        tmp_path, "--dataset_name", "fashion-mnist", *TINY_VIT, *QUICK, "--matryoshka_dims", "8", "32",
        "--max_steps", "4", "--gradient_checkpointing", "--optim", "adafactor", "--dataloader_num_workers", "2",
        "--eval_strategy", "steps", "--eval_steps", "2", "--save_steps", "2", "--load_best_model_at_end",
        "--metric_for_best_model", "eval_fashion-mnist_dim8_top1", "--label_smoothing_factor", "0.1",
    )
    assert summary["steps"] == 4 and [entry["step"] for entry in summary["history"]] == [2, 4]
    state = json.loads((output_dir / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["best_model_checkpoint"] in (str(output_dir / "checkpoint-2"), str(output_dir / "checkpoint-4"))
    assert state["best_metric"] == max(entry["fashion-mnist_dim8_top1"] for entry in summary["history"])
    assert summary["args"]["optim"] == "adafactor" and summary["args"]["gradient_checkpointing"] is True
    assert all("loss_dim8" in entry and "loss_dim32" in entry for entry in summary["loss_history"])
