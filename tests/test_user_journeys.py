"""A new user's journey on files they wrote themselves: train with the scripts or `MatryoshkaTrainer`, evaluate
with `hf-mrl eval`, and find their class names in the results and the model card."""

import csv
import importlib.util
import json
import random
import sys
from pathlib import Path

import datasets
import pytest
from accelerate.state import AcceleratorState
from transformers import AutoModel, AutoModelForSequenceClassification

import hf_mrl
from hf_mrl.cli import main as cli_main
from hf_mrl.training.launch import run_script

from .tiny import tiny_vit_config

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
CLASSES = {
    "positive": ["a wonderful film", "great acting and a moving story", "I loved every minute", "brilliant and funny"],
    "negative": ["a boring mess", "terrible script and wooden acting", "I walked out early", "dull and far too long"],
    "neutral": ["it was fine", "an average movie", "some good parts and some bad", "watchable once"],
}


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


train_supervised = load_script("train_supervised")
train_contrastive = load_script("train_contrastive")


def run(script, argv):
    try:
        return script.main(argv)
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)


def write_reviews(path: Path, rows: int, seed: int) -> Path:
    generator = random.Random(seed)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["review", "sentiment"])
        for index in range(rows):
            sentiment = generator.choice(sorted(CLASSES))
            writer.writerow([f"{generator.choice(CLASSES[sentiment])} ({index})", sentiment])
    return path


def test_csv_with_string_labels_through_the_script_and_hf_mrl_eval(tmp_path, tiny_text_tower, capsys):
    train_file = write_reviews(tmp_path / "reviews.csv", 60, seed=0)
    test_file = write_reviews(tmp_path / "reviews_test.csv", 24, seed=1)
    output_dir = tmp_path / "run"
    summary = run(train_supervised, [
        "--train_file", str(train_file), "--text_column", "review", "--label_column", "sentiment",
        "--model_name_or_path", tiny_text_tower, "--matryoshka_dims", "8", "32", "--max_steps", "4",
        "--per_device_train_batch_size", "8", "--max_seq_length", "24", "--output_dir", str(output_dir),
    ])
    # Only a train file: 10% is held out and scored, with the class names of the CSV.
    assert summary["final_split"].startswith("10% of train") and summary["model"]["class_names"] == sorted(CLASSES)
    model_dir = output_dir / "model"
    config = json.loads((model_dir / "config.json").read_text())
    assert sorted(config["id2label"].values()) == sorted(CLASSES)
    assert "negative, neutral, positive" in (model_dir / "README.md").read_text()
    assert json.loads((model_dir / "tokenizer_config.json").read_text())["model_max_length"] == 24

    capsys.readouterr()
    assert cli_main([
        "eval", str(model_dir), "--train_file", str(train_file), "--test_file", str(test_file),
        "--text_column", "review", "--label_column", "sentiment", "--output_dir", str(tmp_path / "eval"),
    ]) == 0
    printed = capsys.readouterr()
    assert "| 32 |" in printed.out and "positive" in printed.out + printed.err
    info = json.loads((tmp_path / "eval" / "eval_info.json").read_text())
    assert info["class_names"] == sorted(CLASSES) and info["split"] == "test" and info["reference_split"] == "train"
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert {key.split("_dim")[1].split("_")[0] for key in results} == {"8", "32"}

    loaded = AutoModelForSequenceClassification.from_pretrained(model_dir)
    assert loaded.config.id2label[loaded.config.label2id["neutral"]] == "neutral"


def test_jsonl_pairs_through_the_contrastive_script(tmp_path, tiny_text_tower):
    pairs = tmp_path / "pairs.jsonl"
    words = ["cat", "dog", "car", "tree", "river", "lamp", "bread", "stone", "cloud", "shoe", "boat", "bird"]
    with open(pairs, "w") as handle:
        for index, word in enumerate(words * 10):  # its 10% held out: 12 pairs, enough for @10 metrics
            handle.write(json.dumps({"anchor": f"what is a {word}? ({index})", "positive": f"{word} {index}"}) + "\n")
    output_dir = tmp_path / "pairs"
    summary = run(train_contrastive, [
        "--train_file", str(pairs), "--model_name_or_path", tiny_text_tower, "--matryoshka_dims", "8", "16", "32",
        "--max_steps", "3", "--per_device_train_batch_size", "8", "--output_dir", str(output_dir),
    ])
    assert summary["steps"] == 3 and summary["task"] == "pairs"
    assert {f"pairs_dim{dim}_recall@10" for dim in (8, 16, 32)} <= set(summary["final"])
    model = AutoModel.from_pretrained(output_dir / "model")
    assert isinstance(model, hf_mrl.MatryoshkaModel) and model.config.matryoshka_dims == [8, 16, 32]
    assert (output_dir / "recall_vs_dim.png").stat().st_size > 0


def test_python_api_trains_on_a_csv_read_with_load_dataset(tmp_path, tiny_text_tower):
    train_file = write_reviews(tmp_path / "reviews.csv", 48, seed=2)
    test_file = write_reviews(tmp_path / "reviews_test.csv", 16, seed=3)
    data = datasets.load_dataset("csv", data_files={"train": str(train_file), "test": str(test_file)})
    data = data.rename_columns({"review": "text", "sentiment": "label"})  # string labels, as the CSV has them
    model = hf_mrl.MatryoshkaForSequenceClassification.from_backbone(
        tiny_text_tower, num_labels=3, matryoshka_dims=[8, 16, 32]
    )
    args = hf_mrl.MatryoshkaTrainingArguments(
        output_dir=str(tmp_path / "out"), max_steps=4, per_device_train_batch_size=8, save_steps=2,
        save_total_limit=1, eval_strategy="steps", eval_steps=2, logging_steps=1,
    )
    trainer = hf_mrl.MatryoshkaTrainer(model=model, args=args, train_dataset=data["train"], eval_dataset=data["test"])
    output = trainer.train()
    evaluated = [entry["step"] for entry in trainer.state.log_history if "eval_dim8_top1" in entry]
    assert output.global_step == 4 and evaluated == [2, 4]
    losses = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 4 and all(f"loss_dim{dim}" in entry for entry in losses for dim in (8, 16, 32))
    assert sorted(model.config.id2label.values()) == sorted(CLASSES)
    metrics = trainer.evaluate()
    assert {f"eval_dim{dim}_top1" for dim in (8, 16, 32)} <= set(metrics)
    scored = trainer.evaluate(data["test"], metric_key_prefix="test")  # string labels, as the CSV has them
    assert set(scored) == {key.replace("eval_", "test_", 1) for key in metrics}
    assert scored["test_dim8_top1"] == metrics["eval_dim8_top1"]  # the same rows, numbered by the model's names
    assert [path.name for path in (tmp_path / "out").glob("checkpoint-*")] == ["checkpoint-4"]
    folder = trainer.save_model()
    assert (folder / "tokenizer.json").is_file() and "positive" in (folder / "README.md").read_text()


def test_the_loss_that_does_not_move_is_reported(tmp_path):
    rows = hf_mrl.load_fashion_mnist("train", limit=16)
    config = hf_mrl.MatryoshkaConfig(backbone_config=tiny_vit_config(), num_labels=10, matryoshka_dims=[8, 32])
    model = hf_mrl.MatryoshkaForImageClassification(config)
    args = hf_mrl.MatryoshkaTrainingArguments(output_dir=str(tmp_path), max_steps=25, per_device_train_batch_size=4,
                                               learning_rate=1e-12, head_learning_rate=1e-12, save_strategy="no")
    with pytest.warns(UserWarning, match="loss has not moved"):
        hf_mrl.MatryoshkaTrainer(model=model, args=args, train_dataset=rows).train()


@pytest.mark.parametrize(
    ("make_file", "extra", "message"),
    [
        (lambda path: path.write_text("review,sentiment\na film,positive\n"), ["--text_column", "text"],
         "text_column"),
        (lambda path: path.write_text(""), [], "no rows"),
        (lambda path: path.write_text("review,sentiment\na film,0.5\nanother,1.5\n"), [], "floats"),
        (lambda path: path.write_text("review,sentiment\na film,positive\n"), ["--eval_split", "nosuch"], "nosuch"),
    ],
)
def test_bad_inputs_get_one_clear_line(tmp_path, tiny_text_tower, capsys, make_file, extra, message):
    data = tmp_path / "data.csv"
    make_file(data)
    argv = ["--train_file", str(data), "--text_column", "review", "--label_column", "sentiment",
            "--model_name_or_path", tiny_text_tower, "--output_dir", str(tmp_path / "out"), "--max_steps", "1"]
    argv = argv[:2] + extra + argv[2:] if extra[:1] == ["--eval_split"] else [*argv, *extra]
    try:
        status = run_script(train_supervised.main, argv, prog="train_supervised.py")
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
    error = capsys.readouterr().err.strip().splitlines()
    assert status == 1
    assert error[-1].startswith("train_supervised.py: error: ") and message in error[-1]
    assert "Traceback" not in "\n".join(error)
    assert not (tmp_path / "out" / "model").exists()


def test_the_trainer_uses_the_models_class_ids(tmp_path, tiny_text_tower):
    """A model that already has class names (e.g. trained before) keeps its ids: the data is renumbered by name."""
    rows = datasets.Dataset.from_dict({"text": ["good", "bad", "fine"], "label": ["positive", "negative", "neutral"]})
    model = hf_mrl.MatryoshkaForSequenceClassification.from_backbone(
        tiny_text_tower, num_labels=3, matryoshka_dims=[8, 32],
        id2label={0: "neutral", 1: "positive", 2: "negative"}, label2id={"neutral": 0, "positive": 1, "negative": 2},
    )
    trainer = hf_mrl.MatryoshkaTrainer(model=model, args=hf_mrl.MatryoshkaTrainingArguments(output_dir=str(tmp_path)),
                                       train_dataset=rows)
    assert trainer.train_dataset["label"] == [1, 2, 0]
    assert model.config.id2label == {0: "neutral", 1: "positive", 2: "negative"}
