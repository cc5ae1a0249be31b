"""The training runs the analyses need: their `train_supervised.py` arguments in one place, training through
`run_supervised` (the recipe behind `scripts/train_supervised.py`) unless the run's folder already holds a finished
run, loading a trained classifier with its collator, and the data subsets some runs train on.

Budgets are small on purpose (a 2-core CPU): Fashion-MNIST with a ViT of hidden size 64 for 2 epochs (about 2
minutes a run), all-MiniLM-L6-v2 on a few thousand WordNet definitions.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import datasets

from ..data._common import is_saved_dataset, save_atomically
from ..data.collators import collator_for_model
from ..training.models import classifier_class

__all__ = [
    "FMNIST_DIMS",
    "WORDNET_DIMS",
    "ff_arguments",
    "fmnist_arguments",
    "load_classifier",
    "mrl_arguments",
    "save_splits",
    "train_run",
    "wordnet_arguments",
]

FMNIST_DIMS = [8, 16, 32, 64]
FMNIST_BATCH_SIZE = 128
WORDNET_DIMS = [8, 16, 32, 64, 128, 256, 384]
# Fashion-MNIST has no validation split: its last 6,000 training images are one (cascade and weight fitting).
FMNIST_TRAIN_SPLIT, FMNIST_VALIDATION_SPLIT = "train[:54000]", "train[54000:]"
# Every run: no evaluation while training (the analyses score the saved model), a checkpoint every 500 steps so a
# killed run resumes, the final 1-NN against the first 10,000 training rows.
COMMON = [
    "--eval_strategy", "no", "--lr_scheduler_type", "cosine", "--max_grad_norm", "1.0", "--logging_steps", "50",
    "--save_steps", "500", "--save_total_limit", "1", "--resume_from_checkpoint", "latest",
    "--max_knn_reference_samples", "10000",
]  # fmt: skip


def fmnist_arguments(dataset_name: str = "fashion-mnist", epochs: int = 2, hidden_size: int = 64, seed: int = 0,
                     splits: tuple[str, str, str] | None = None) -> list[str]:
    """A small ViT from scratch on Fashion-MNIST (or a saved subset of it, whose splits are `splits`: train,
    validation, test); the heads are added by `mrl_arguments` / `ff_arguments`."""
    train, validation, test = splits or (FMNIST_TRAIN_SPLIT, FMNIST_VALIDATION_SPLIT, "test")
    return [
        "--dataset_name", dataset_name, "--train_split", train, "--eval_split", validation, "--test_split", test,
        "--backbone", "vit", "--hidden_size", str(hidden_size), "--num_layers", "4", "--num_attention_heads", "4",
        "--patch_size", "7", "--per_device_train_batch_size", str(FMNIST_BATCH_SIZE), "--per_device_eval_batch_size", "512",
        "--learning_rate", "2e-3", "--weight_decay", "0.05", "--warmup_steps", "0.05",
        "--num_train_epochs", str(epochs), "--seed", str(seed), *COMMON,
    ]  # fmt: skip


def wordnet_arguments(model_name_or_path: str, max_train_samples: int = 4000, epochs: int = 2, seed: int = 0) -> list[str]:
    """all-MiniLM-L6-v2 fine-tuned on a seeded sample of WordNet noun definitions (their classes as frequent or
    rare as in WordNet: a long tail), with the settings of `run_experiments_supervised.py`'s WordNet runs."""
    return [
        "--dataset_name", "wordnet-nouns", "--model_name_or_path", model_name_or_path,
        "--max_train_samples", str(max_train_samples), "--per_device_train_batch_size", "32",
        "--per_device_eval_batch_size", "128", "--learning_rate", "2e-4", "--head_learning_rate", "1e-2",
        "--use_projection", "--weight_decay", "0.01", "--warmup_steps", "0.1", "--max_seq_length", "32", "--bf16",
        "--num_train_epochs", str(epochs), "--seed", str(seed), *COMMON,
    ]  # fmt: skip


def mrl_arguments(dims: Sequence[int], weights: Sequence[float] | None = None) -> list[str]:
    weighting = [] if weights is None else ["--matryoshka_weights", *(f"{weight:g}" for weight in weights)]
    return ["--heads", "mrl", "--matryoshka_dims", *(str(dim) for dim in dims), *weighting]


def ff_arguments(dim: int) -> list[str]:
    return ["--heads", "ff", "--ff_dim", str(dim)]


def train_run(arguments: Sequence[str], output_dir: str | Path) -> dict:
    """The `results.json` of the run in `output_dir`: read when the run finished already, else trained first with
    `run_supervised` and `arguments` (resuming from the folder's last checkpoint if a previous try was killed)."""
    from ..data import DataArguments
    from ..training import MatryoshkaTrainingArguments
    from ..training.launch import parse_arguments
    from ..training.recipes import SupervisedModelArguments, run_supervised

    output_dir = Path(output_dir)
    finished = output_dir / "results.json"
    if finished.is_file():
        print(f"[{output_dir}] finished already: reusing it", flush=True)
        return json.loads(finished.read_text())
    from accelerate.state import AcceleratorState

    print(f"[{output_dir}] training: {' '.join(arguments)}", flush=True)
    parsed = parse_arguments(
        (SupervisedModelArguments, DataArguments, MatryoshkaTrainingArguments),
        [*arguments, "--output_dir", str(output_dir)],
    )
    try:
        return run_supervised(*parsed)
    finally:
        # Accelerate keeps one process-wide state; the next run in this process may ask for another precision.
        AcceleratorState._reset_state(reset_partial_state=True)


def load_classifier(run_dir: str | Path):
    """(model in eval mode, collate_fn) of the classifier a run saved in `run_dir/model` (or `run_dir` itself)."""
    from transformers import AutoConfig

    folder = Path(run_dir)
    folder = folder / "model" if (folder / "model" / "config.json").is_file() else folder
    if not (folder / "config.json").is_file():
        raise ValueError(f"No saved model in {str(run_dir)!r}: expected `model/config.json` or `config.json` there.")
    config = AutoConfig.from_pretrained(folder)
    model = classifier_class(config.backbone_config).from_pretrained(folder).eval()
    return model, collator_for_model(model, str(folder))


def save_splits(splits: dict[str, datasets.Dataset], folder: str | Path) -> str:
    """Saves {split name: dataset} as one `DatasetDict` folder (atomically; kept when it exists) for
    `--dataset_name`; returns the folder."""
    folder = Path(folder)
    if not is_saved_dataset(folder):
        save_atomically(datasets.DatasetDict(splits), folder)
    return str(folder)
