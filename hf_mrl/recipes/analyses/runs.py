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

from ...data._common import is_saved_dataset, save_atomically
from ...data.collators import collator_for_model
from ...training.models import classifier_class

__all__ = [
    "FMNIST_DIMS",
    "RUN_RECORD",
    "WORDNET_DIMS",
    "ff_arguments",
    "fmnist_arguments",
    "load_classifier",
    "mrl_arguments",
    "save_splits",
    "check_run",
    "run_settings",
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


# Beside each run: the settings it was trained with (`run_settings`), written before its training starts.
RUN_RECORD = "run_arguments.json"


def _argument_types():
    from ...data import DataArguments
    from ...training import MatryoshkaTrainingArguments
    from ..training import SupervisedModelArguments

    return SupervisedModelArguments, DataArguments, MatryoshkaTrainingArguments


def run_settings(arguments: Sequence[str]) -> dict:
    """{flag: value} of every `train_supervised.py` flag `arguments` set to other than its default (parsed, so
    order and spelling do not matter): what makes two runs the same run."""
    from transformers import HfArgumentParser

    parser = HfArgumentParser(_argument_types())
    namespace, unknown = parser.parse_known_args(list(arguments))
    if unknown:
        raise ValueError(f"unrecognized train_supervised.py arguments: {' '.join(unknown)}")
    defaults = vars(parser.parse_known_args([])[0])
    given = {key: value for key, value in vars(namespace).items() if value != defaults.get(key)}
    return json.loads(json.dumps(given, default=str))


def _same(a, b) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    numbers = all(isinstance(value, (int, float)) and not isinstance(value, bool) for value in (a, b))
    return float(a) == float(b) if numbers else a == b


def _check_run_identity(arguments: Sequence[str], output_dir: Path, ignore: Sequence[str]) -> bool:
    """Refuses a run folder holding a run trained with other settings (its `RUN_RECORD`; a run finished before
    records: the arguments in its `results.json`); returns whether the run there finished."""
    wanted = run_settings(arguments)
    finished = (output_dir / "results.json").is_file()
    if (output_dir / RUN_RECORD).is_file():
        stored = json.loads((output_dir / RUN_RECORD).read_text()).get("settings", {})
        keys = set(wanted) | set(stored)
    elif finished:
        stored = json.loads((output_dir / "results.json").read_text()).get("args")
        if not isinstance(stored, dict):
            raise ValueError(f"{str(output_dir)!r} holds a results.json that is not a training run's (no `args`); "
                             "move it, or pass another --runs_dir.")
        keys = {key for key in wanted if key in stored}
    else:
        return False
    differences = [key for key in sorted(keys - set(ignore)) if not _same(wanted.get(key), stored.get(key))]
    if differences:
        shown = "; ".join(f"--{key} {stored.get(key)!r} there, {wanted.get(key)!r} now" for key in differences[:4])
        raise ValueError(
            f"{str(output_dir)!r} holds a run trained with other settings ({shown}), e.g. another study's: it is "
            "neither reused nor resumed. Pass another --runs_dir (one per model and data), or move that folder."
        )
    return finished


def check_run(arguments: Sequence[str], output_dir: str | Path, ignore: Sequence[str] = ()) -> bool:
    """Every check of the run `train_run(arguments, output_dir)`, before any training: the arguments parse and
    pass `train_supervised.py`'s checks; a run already in `output_dir` was trained with the same settings
    (`ignore`: flags left out of that comparison); an unfinished run's outputs have no user file in the way.
    Returns whether the run finished already. Refusals are `ValueError`s."""
    from ...output_folder import check_output_names
    from ...training.launch import parse_arguments
    from ..training import SUPERVISED_OUTPUTS

    output_dir = Path(output_dir)
    parse_arguments(_argument_types(), [*arguments, "--output_dir", str(output_dir)])
    finished = _check_run_identity(arguments, output_dir, ignore)
    if not finished:
        check_output_names(output_dir, [RUN_RECORD, *SUPERVISED_OUTPUTS], "output_dir")
    return finished


def train_run(arguments: Sequence[str], output_dir: str | Path) -> dict:
    """The `results.json` of the run in `output_dir`: read when the run finished already, else trained first with
    `run_supervised` and `arguments` (resuming from the folder's last checkpoint if a previous try was killed).
    A folder holding a run with other settings is refused (`check_run`)."""
    from accelerate.state import AcceleratorState

    from ...evaluation import save_results
    from ...output_folder import write_output
    from ...training.launch import parse_arguments
    from ..training import run_supervised

    output_dir = Path(output_dir)
    try:
        finished = check_run(arguments, output_dir)
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
    if finished:
        print(f"[{output_dir}] finished already: reusing it", flush=True)
        return json.loads((output_dir / "results.json").read_text())
    print(f"[{output_dir}] training: {' '.join(arguments)}", flush=True)
    parsed = parse_arguments(_argument_types(), [*arguments, "--output_dir", str(output_dir)])
    settings = {"settings": run_settings(arguments)}
    write_output(output_dir, RUN_RECORD, lambda path: save_results(settings, path), "output_dir")
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
