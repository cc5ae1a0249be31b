"""scripts/train_contrastive.py (and the experiment scripts built on it) run for a few steps on small slices of the
real datasets, with a tiny random text tower."""

import importlib.util
import json
import os
import re
import shutil
import sys
from pathlib import Path

import pytest
import torch
from accelerate.state import AcceleratorState
from safetensors.torch import load_file
from transformers import AutoModel

from hf_mrl import MatryoshkaDualEncoderModel, MatryoshkaModel
from hf_mrl.modeling.saved_weights import read_state_dict
from hf_mrl.training import list_checkpoints

from .launch import accelerate_launch

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "train_contrastive.py"
TINY_VIT = '{"image_size": 28, "patch_size": 7, "num_channels": 1, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 37}'


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, SCRIPT.with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


train_contrastive = load_script("train_contrastive")


def run(argv: list[str]) -> dict:
    """Runs the script in this process (as `python scripts/train_contrastive.py ...` would)."""
    try:
        return train_contrastive.main(argv)
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)


def pair_args(tower: str, output_dir, *extra: str) -> list[str]:
    """WordNet definition -> word (query = the `positive` column), 96 training pairs, 48 eval and test pairs."""
    return [
        "--task", "pairs", "--dataset_name", "wordnet-pairs", "--model_name_or_path", tower,
        "--anchor_column", "positive", "--positive_column", "anchor", "--max_train_samples", "96",
        "--max_eval_samples", "48", "--max_test_samples", "48", "--per_device_train_batch_size", "16",
        "--matryoshka_dims", "8", "16", "32", "--logging_steps", "1", "--output_dir", str(output_dir), *extra,
    ]


def image_text_args(tower: str, output_dir, *extra: str) -> list[str]:
    return [
        "--task", "image-text", "--dataset_name", "fashion-mnist-captions", "--vision_config", TINY_VIT,
        "--model_name_or_path", tower, "--embedding_dim", "24", "--max_train_samples", "64", "--max_eval_samples", "40",
        "--per_device_train_batch_size", "16", "--output_dir", str(output_dir), *extra,
    ]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--per_device_train_batch_size", "0"], r"`per_device_train_batch_size` must be a positive integer, got 0"),
        (["--matryoshka_dims", "8", "64"], r"`--matryoshka_dims` holds 64, above the embedding dim 32"),
        (["--eval_dims", "8", "33"], r"`--eval_dims` holds 33, above the embedding dim 32"),
        (["--dataset_name", "/no/such/dataset"], r"`dataset_name` '/no/such/dataset' looks like a local path but does not exist"),
        (["--dataset_name", "emoji"], r"`dataset_name` 'emoji' is a built-in image-text dataset; built-in pairs datasets: \['wordnet-pairs', 'wordnet-triplets'\]"),
        (["--dataset_name", "wordnet"], r"`dataset_name` 'wordnet' is not a built-in dataset any more: use .*'wordnet-pairs'"),
        (["--task", "text-text"], r"`--task` must be 'pairs' or 'image-text', got 'text-text'"),
        (["--loss", "st-mrl", "--embedding_dim", "16"], r"`--embedding_dim` must be 32"),
        (["--streaming"], r"`--streaming` needs `--max_steps` > 0"),
        (["--vision_config", TINY_VIT], r"`--task pairs` has no image tower"),
        (["--max_train_samples", "0"], r"`max_train_samples` must be None or a positive integer, got 0"),
        (["--warmup_steps", "-1"], r"`warmup_steps` must be a finite number >= 0, got -1.0"),
        (["--resume_from_checkpoint", "/no/such/checkpoint"], r"`resume_from_checkpoint` '/no/such/checkpoint' is not a folder"),
    ],
)
def test_bad_arguments_are_rejected_before_any_work(tiny_text_tower, tmp_path, extra, message):
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        run(pair_args(tiny_text_tower, tmp_path / "out", *extra))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--eval_strategy", "often"], r"argument --eval_strategy.*invalid choice: 'often'"),
        (["--eval_steps", "often"], r"argument --eval_steps.*invalid float value: 'often'"),
        (["--dataset", "wordnet-pairs"], r"ambiguous option: --dataset could match --dataset_name"),  # the old flag
        (["--ks", "1", "10"], r"unrecognized arguments: --ks 1 10"),  # a removed flag
    ],
)
def test_malformed_flags_stop_the_parser(tiny_text_tower, tmp_path, capsys, extra, message):
    with pytest.raises(SystemExit) as stopped:
        run(pair_args(tiny_text_tower, tmp_path / "out", *extra))
    assert stopped.value.code == 2
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "out").exists()


def test_several_files_hard_negatives_cached_batches_and_prompts(tiny_text_tower, tmp_path):
    """Two files with their own columns (one with a hard-negative column), cached mini-batches, prompts, no
    duplicates in a batch: each file's loss is logged, the run is scored on the validation file."""
    words = [f"word{i}" for i in range(24)]
    questions = [{"question": f"what is {w}?", "answer": f"{w} is a thing"} for w in words]
    triplets = [{"anchor": f"define {w}", "positive": f"{w}: a thing", "negative": f"{w}: not it"} for w in words]
    for name, rows in (("questions", questions), ("triplets", triplets), ("dev", triplets[:12])):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    output = tmp_path / "run"
    summary = run([
        "--task", "pairs", "--model_name_or_path", tiny_text_tower, "--train_file", str(tmp_path / "questions.jsonl"),
        str(tmp_path / "triplets.jsonl"), "--validation_file", str(tmp_path / "dev.jsonl"),
        "--matryoshka_dims", "8", "16", "32", "--per_device_train_batch_size", "8", "--mini_batch_size", "3",
        "--prompts", '{"anchor": "query: ", "question": "query: "}', "--batch_sampler", "no_duplicates",
        "--max_steps", "4", "--logging_steps", "1", "--output_dir", str(output),
    ])
    assert summary["steps"] == 4
    logged = {key for entry in summary["loss_history"] for key in entry}
    assert {"loss_questions", "loss_triplets", "loss_dim8"} <= logged, logged
    assert any(key.startswith("dev_dim32_") for key in summary["final"]), summary["final"]


def test_a_run_logged_to_a_file_prints_loss_lines_and_the_final_table(tiny_text_tower, tmp_path, capfd):
    """Output captured (no terminal): no bars (training, encoding, "Loading weights", "Writing model shards"), one
    line per logged step with each dim's loss, and the final per-dim table."""
    rows = [{"anchor": f"define word{i}", "positive": f"word{i}: a thing"} for i in range(24)]
    for name, part in (("train", rows), ("test", rows[:12])):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in part))
    run([
        "--task", "pairs", "--model_name_or_path", tiny_text_tower, "--train_file", str(tmp_path / "train.jsonl"),
        "--test_file", str(tmp_path / "test.jsonl"), "--matryoshka_dims", "8", "16", "32",
        "--per_device_train_batch_size", "8", "--max_steps", "2", "--logging_steps", "1",
        "--save_strategy", "steps", "--save_steps", "1", "--output_dir", str(tmp_path / "run"),
    ])
    captured = capfd.readouterr()
    assert "\r" not in captured.err and "it/s" not in captured.err, captured.err
    assert "Loading weights" not in captured.err and "Writing model shards" not in captured.err, captured.err
    lines = captured.out.splitlines()
    for step in (1, 2):
        assert any(line.startswith(f"step {step}/2 | epoch ") and " | loss " in line and "(dim8 " in line
                   and ", dim32 " in line for line in lines), captured.out
    table = captured.out[captured.out.index("final results (test"):].splitlines()
    assert table[1].startswith("| dim | ") and "recall@10" in table[1], captured.out
    assert [row.split(" | ")[0] for row in table[3:6]] == ["| 8", "| 16", "| 32"], captured.out


def test_final_metrics_are_named_after_the_validation_file_scored(tiny_text_tower, tmp_path):
    rows = [{"anchor": f"what is word{i}?", "positive": f"word{i} is a thing"} for i in range(24)]
    for name, part in (("train_pairs", rows), ("dev_pairs", rows[:12])):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in part))
    summary = run(["--task", "pairs", "--model_name_or_path", tiny_text_tower,
                   "--train_file", str(tmp_path / "train_pairs.jsonl"), "--validation_file", str(tmp_path / "dev_pairs.jsonl"),
                   "--matryoshka_dims", "8", "32", "--per_device_train_batch_size", "8", "--max_steps", "1",
                   "--output_dir", str(tmp_path / "run")])
    assert summary["final_split"] == "validation"
    assert summary["final"] and all(key.startswith("dev_pairs_dim") for key in summary["final"]), summary["final"]


def test_bad_checkpoint_rotation_is_rejected_before_training(tiny_text_tower, tmp_path):
    with pytest.raises(ValueError, match=r"`save_total_limit` must be None \(keep all\) or a positive integer, got 0"):
        run(pair_args(tiny_text_tower, tmp_path / "out", "--max_steps", "2", "--save_total_limit", "0"))
    assert not (tmp_path / "out").exists()


def test_bad_image_text_arguments(tiny_text_tower, tmp_path):
    base = ["--task", "image-text", "--dataset_name", "emoji", "--model_name_or_path", tiny_text_tower,
            "--output_dir", str(tmp_path / "out")]
    with pytest.raises(ValueError, match=r"needs exactly one of `--vision_model_name_or_path` and `--vision_config`"):
        run(base)
    with pytest.raises(ValueError, match=r"`--loss st-mrl` .* is for `--task pairs` only"):
        run([*base, "--vision_config", TINY_VIT, "--loss", "st-mrl"])
    with pytest.raises(ValueError, match=r"`--vision_config` must be a JSON dict"):
        run([*base, "--vision_config", "{not json"])
    with pytest.raises(ValueError, match=r"`--freeze_text_tower` is for `--task image-text`"):
        run(pair_args(tiny_text_tower, tmp_path / "out", "--freeze_text_tower"))
    assert not (tmp_path / "out").exists()


def test_unknown_column_of_a_local_jsonl_is_rejected_before_training(tiny_text_tower, tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"question": f"q{i}", "answer": f"a{i}"}) + "\n" for i in range(8)))
    argv = pair_args(tiny_text_tower, tmp_path / "out", "--max_steps", "1")
    argv[argv.index("--dataset_name"):argv.index("--dataset_name") + 2] = ["--train_file", str(pairs)]
    argv[argv.index("--anchor_column") + 1] = "question"
    with pytest.raises(ValueError, match=r"`positive_column` 'anchor' is not a column of the dataset; columns: \['question', 'answer'\]"):
        run(argv)
    assert not list_checkpoints(tmp_path / "out") and not (tmp_path / "out" / "model").exists()


@pytest.mark.slow
def test_pairs_run_streams_accumulates_and_saves_everything(tiny_text_tower, tmp_path):
    output = tmp_path / "run"
    summary = run(pair_args(
        tiny_text_tower, output, "--streaming", "--max_steps", "4", "--gradient_accumulation_steps", "2",
        "--eval_strategy", "steps", "--eval_steps", "2", "--save_steps", "2", "--save_total_limit", "1",
        "--report_to", "tensorboard", "--eval_on_start",
    ))
    assert summary["steps"] == 4 and summary["steps_this_run"] == 4 and summary["final_split"] == "test"
    # eval_on_start (step 0), then every 2 steps (the last one too, as Trainer does); then the final (test) evaluation.
    assert [entry["step"] for entry in summary["history"]] == [0, 2, 4]
    for dim in (8, 16, 32):
        assert 0.0 <= summary["final"][f"wordnet-pairs_dim{dim}_recall@10"] <= 1.0
    assert set(summary["initial_metrics"]) == set(summary["final"])
    assert [step for step, _ in list_checkpoints(output)] == [4]
    saved = json.loads((output / "results.json").read_text())
    assert saved["final"] == pytest.approx(summary["final"]) and saved["seconds_per_step"] > 0
    assert (output / "recall_vs_dim.png").stat().st_size > 0
    assert list(output.rglob("events.out.tfevents.*")), "no tensorboard event file"
    model = AutoModel.from_pretrained(output / "model")
    assert isinstance(model, MatryoshkaModel) and model.config.matryoshka_dims == [8, 16, 32]
    assert "recall@10" in (output / "model" / "README.md").read_text()


@pytest.mark.slow
def test_resume_from_latest_gives_the_uninterrupted_weights(tiny_text_tower, tmp_path):
    output = tmp_path / "run"
    argv = pair_args(tiny_text_tower, output, "--max_steps", "6", "--save_steps", "2", "--save_total_limit", "3",
                     "--train_sampling_strategy", "group_by_length", "--resume_from_checkpoint", "latest")
    run(argv)
    uninterrupted = read_state_dict(output / "model")
    # A run killed after step 4: only checkpoint-4 (and the older ones) are left.
    shutil.rmtree(output / "checkpoint-6")
    shutil.rmtree(output / "model")
    summary = run(argv)
    assert summary["steps"] == 6 and summary["steps_this_run"] == 2 and summary["train_seconds"] > 0
    resumed = read_state_dict(output / "model")
    for name, tensor in uninterrupted.items():
        torch.testing.assert_close(resumed[name], tensor, msg=name)


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["plain", "st-mrl"])
def test_plain_and_sentence_transformers_losses_train_the_same_tower(tiny_text_tower, tmp_path, loss):
    output = tmp_path / loss
    summary = run(pair_args(tiny_text_tower, output, "--loss", loss, "--max_steps", "3", "--no_symmetric"))
    assert summary["matryoshka_dims"] == ([32] if loss == "plain" else [8, 16, 32])
    assert summary["eval_dims"] == [8, 16, 32]  # a one-dim model is scored at its truncations too
    assert {f"wordnet-pairs_dim{dim}_recall@10" for dim in (8, 16, 32)} <= set(summary["final"])
    before = load_file(Path(tiny_text_tower) / "model.safetensors")
    after = read_state_dict(output / "model")
    key = "encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(before[key], after[f"backbone.{key}"]), "training did not change the encoder"


def test_image_text_run_with_duplicate_captions(tiny_text_tower, tmp_path, recwarn):
    output = tmp_path / "run"
    summary = run(image_text_args(tiny_text_tower, output, "--max_steps", "3"))
    assert not [warning for warning in recwarn if "No artists" in str(warning.message)], "an empty recall plot"
    assert summary["matryoshka_dims"] == [8, 16, 24] and summary["steps"] == 3
    for dim in (8, 16, 24):
        for key in ("t2i_recall@1", "i2t_recall@10", "zero_shot_top1"):
            assert 0.0 <= summary["final"][f"fashion-mnist-captions_dim{dim}_{key}"] <= 1.0
    model = MatryoshkaDualEncoderModel.from_pretrained(output / "model")
    assert model.config.projection_dim == 24 and model.config.vision_config.hidden_size == 32


@pytest.mark.slow
@pytest.mark.parametrize("task, cached", [("pairs", False), ("image-text", False), ("pairs", True), ("image-text", True)])
def test_accelerate_launch_two_processes(tiny_text_tower, tmp_path, task, cached):
    """DDP on two CPU processes; cached: GradCache mini-batches (no_sync before the last one) under DDP."""
    output = tmp_path / "ddp"
    arguments = (pair_args if task == "pairs" else image_text_args)(
        tiny_text_tower, output, "--max_steps", "2", "--save_steps", "2", *(["--mini_batch_size", "4"] if cached else [])
    )
    # `--cpu` would start ONE process; `--multi_gpu` with no GPU starts two CPU (gloo) processes.
    launch = ["--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
              "--dynamo_backend", "no"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    finished = accelerate_launch(launch, SCRIPT, arguments, output, env, timeout=300)
    assert finished.returncode == 0, finished.stderr[-3000:]
    summary = json.loads((output / "results.json").read_text())
    metric = "wordnet-pairs_dim32_recall@10" if task == "pairs" else "fashion-mnist-captions_dim24_t2i_recall@10"
    assert summary["steps"] == 2 and metric in summary["final"]
    assert [step for step, _ in list_checkpoints(output)] == [2]
    assert (output / "checkpoint-2" / "rng_state_1.pth").is_file()  # one RNG state per process: two ran


@pytest.mark.slow
def test_wordnet_experiment_script_trains_and_tabulates(tiny_text_tower, tmp_path):
    results_dir = tmp_path / "results"
    # Two of the four runs (each is a subprocess); the other losses are tested above.
    load_script("run_wordnet_retrieval").main([
        "--work_dir", str(tmp_path / "work"), "--results_dir", str(results_dir), "--text_model_name_or_path", tiny_text_tower,
        "--runs", "frozen", "plain", "--max_train_steps", "2", "--batch_size", "8", "--test_limit", "40", "--eval_limit", "20",
        "--eval_steps", "no", "--mixed_precision", "no",
    ])
    saved = json.loads((results_dir / "results.json").read_text())
    assert sorted(saved) == ["frozen", "plain"]
    assert saved["frozen"]["steps"] == 0 and saved["plain"]["steps"] == 2
    table = (results_dir / "README.md").read_text()
    assert "| 8 |" in table and "| 32 |" in table and "frozen recall@10" in table and "plain recall@10" in table
    assert (results_dir / "recall_vs_dim.png").stat().st_size > 0


@pytest.mark.slow
def test_emoji_experiment_script_reports_before_and_after(tiny_text_tower, tmp_path):
    results_dir = tmp_path / "results"
    argv = [
        "--output_dir", str(tmp_path / "work"), "--results_dir", str(results_dir), "--text_model_name_or_path", tiny_text_tower,
        "--limit", "48", "--epochs", "1", "--hidden_size", "32", "--num_layers", "1", "--embedding_dim", "16",
        "--batch_size", "16", "--mixed_precision", "no",
    ]
    experiment = load_script("run_emoji_dual_encoder")
    summary = experiment.main(argv)
    assert summary["steps"] == 3 and summary["initial_metrics"].keys() == summary["final"].keys()
    table = (results_dir / "README.md").read_text()
    assert "before t2i_recall@1" in table and "| 16 |" in table and "Trained beats untrained at every dim" in table
    # Run again: the finished run is reported, not trained again.
    assert experiment.main(argv)["train_seconds"] == summary["train_seconds"]
