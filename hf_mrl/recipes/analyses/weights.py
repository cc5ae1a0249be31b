"""Tuning the relative loss weights of the nesting dims (`matryoshka_weights`), and their per-dim Pareto front.

`tune_matryoshka_weights` trains MRL with every preset weighting (uniform, the paper's 8-d x2, 8-d x2 + 16-d x1.5),
fixed-feature (FF) models at each dim, and runs a cheap search: seeded random weightings trained with a fraction
of the budget and scored on a validation split; the best of them on the validation Pareto front are retrained
with the full budget. Every full-budget run is then scored on the validation split (which picks the chosen
weighting) and on the test split (which reports it). The uniform weighting is also trained with other training
seeds (`noise_seeds`): how far those runs differ is the noise any gain must clear.

A weighting is on the per-dim Pareto front when no other weighting is at least as accurate at every dim and
more accurate at one.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ...evaluation import encode_dataset, group_by_dim, save_results, top_k_accuracy
from ...evaluation.metrics import pareto_optimal
from ...modeling.configuration_matryoshka import resolve_nesting
from ...modeling.nesting import MATRYOSHKA_WEIGHT_PRESETS, matryoshka_weights_preset
from .runs import check_run, ff_arguments, load_classifier, mrl_arguments, run_settings, train_run

__all__ = [
    "DEFAULT_PRESETS",
    "SEARCH_MULTIPLIERS",
    "check_weights_config",
    "head_accuracies",
    "pareto_front",
    "propose_weightings",
    "tune_matryoshka_weights",
    "validation_split",
    "weights_table",
    "write_weights_to_config",
]

DEFAULT_PRESETS = tuple(MATRYOSHKA_WEIGHT_PRESETS)
# Candidate multipliers of each dim's loss in the search; the largest dim keeps 1.0 (it anchors the scale).
SEARCH_MULTIPLIERS = (0.5, 1.0, 1.5, 2.0, 3.0)
# Flags the study sets on each run itself: in the base arguments they would be overridden without a word.
_STUDY_FLAGS = {"output_dir": "--runs_dir", "heads": "--presets", "matryoshka_dims": "--dims",
                "matryoshka_weights": "--presets", "ff_dim": "--ff_dims"}


def pareto_front(scores: Mapping[str, Sequence[float]]) -> list[str]:
    """The labels of `scores` ({label: one score per dim, higher is better}) that no other label dominates (at
    least as good at every dim, better at one), in the order given."""
    if not isinstance(scores, Mapping) or not scores:
        raise ValueError("`scores` must be a non-empty dict {label: per-dim scores}.")
    arrays = {label: np.asarray(values, dtype=np.float64) for label, values in scores.items()}
    lengths = {array.shape for array in arrays.values()}
    if len(lengths) != 1 or len(next(iter(lengths))) != 1:
        raise ValueError(f"Every entry of `scores` must be a 1-D list of the same length, got shapes {sorted(lengths)}.")
    front = pareto_optimal(np.stack(list(arrays.values())))
    return [label for label, kept in zip(arrays, front, strict=True) if kept]


def propose_weightings(dims: Sequence[int], num: int, seed: int = 0, exclude: Sequence[Sequence[float]] = ()) -> dict:
    """{"search-1": weights, ...}: `num` distinct seeded random weightings, each dim but the largest taking one
    of `SEARCH_MULTIPLIERS`; weightings in `exclude` (e.g. the presets) are skipped."""
    if isinstance(num, bool) or not isinstance(num, int) or num < 0:
        raise ValueError(f"`num` must be an integer >= 0, got {num!r}.")
    possible = len(SEARCH_MULTIPLIERS) ** (len(dims) - 1)
    seen = {tuple(float(weight) for weight in weights) for weights in exclude}
    if num > possible - len(seen):
        raise ValueError(f"`num` is {num}, more than the {possible - len(seen)} weightings left to propose.")
    rng = np.random.default_rng(seed)
    proposals = {}
    while len(proposals) < num:
        weights = (*(float(value) for value in rng.choice(SEARCH_MULTIPLIERS, size=len(dims) - 1)), 1.0)
        if weights not in seen:
            seen.add(weights)
            proposals[f"search-{len(proposals) + 1}"] = list(weights)
    return proposals


def validation_split(base_arguments: Sequence[str]):
    """The evaluation split the `train_supervised.py` arguments name (`--eval_split`, or the data's validation
    split): the rows the search and the choice are scored on."""
    from transformers import HfArgumentParser

    from ...data import DataArguments, load_splits
    from ..training import SupervisedModelArguments

    model_args, data_args, _ = HfArgumentParser((SupervisedModelArguments, DataArguments)).parse_args_into_dataclasses(
        args=list(base_arguments), return_remaining_strings=True
    )
    splits = load_splits(data_args, "classification", image_size=model_args.image_size if model_args.backbone else None,
                         need_train=False)
    if splits.eval is None or splits.eval_split.split("[")[0] == "test":
        raise ValueError(
            f"The training arguments give no validation split (evaluation split: {splits.eval_split!r}); the weights "
            "must not be chosen on the test split: pass e.g. `--train_split 'train[:90%]' --eval_split 'train[90%:]'`."
        )
    return splits.eval


def head_accuracies(run_dir, dataset, batch_size: int = 256) -> dict[int, float]:
    """{dim: top-1} of every head of the classifier saved in `run_dir`, on `dataset` (one encoding pass)."""
    model, collate_fn = load_classifier(run_dir)
    logits = encode_dataset(model, dataset, collate_fn, batch_size, f"Scoring {Path(run_dir).name}").matryoshka_logits
    labels = np.asarray(dataset["label"])
    return {dim: top_k_accuracy(logits[index], labels) for index, dim in enumerate(model.config.matryoshka_dims)}


def _test_accuracies(results: dict) -> dict[int, float]:
    """{dim: top-1} of a run's final (test) metrics."""
    return {dim: metrics["top1"] for dim, metrics in group_by_dim(results["final"]).items() if "top1" in metrics}


def tune_matryoshka_weights(
    base_arguments: Sequence[str],
    dims: Sequence[int],
    runs_dir,
    validation_dataset=None,
    presets: Sequence[str] = DEFAULT_PRESETS,
    ff_dims: Sequence[int] | None = None,
    num_search: int = 4,
    num_proposed: int = 2,
    search_fraction: float = 0.25,
    seed: int = 0,
    noise_seeds: Sequence[int] = (1,),
) -> dict:
    """Trains the weightings and FF baselines (see the module docstring) under `runs_dir` and returns the report:
    `dims`, `weightings` ({label: weights, validation and test {dim: top-1}, run}), `ff` ({dim: test top-1}),
    `search` ({label: weights, validation}), `pareto_validation` / `pareto_test` (labels on each front),
    `chosen` (the front's label with the best mean validation accuracy), `search_steps` and `noise` ({training seed:
    validation and test {dim: top-1} of the uniform weighting trained with that seed}).

    base_arguments: `train_supervised.py` arguments of the data, model and full budget (no heads, no output dir).
    validation_dataset: the validation split (rows the training never sees), for the search and the choice
        (default: `validation_split(base_arguments)`).

    Every argument, and every run's arguments, is checked before the first training run; so is every run folder
    already in `runs_dir` (one of another study, trained with other settings, is refused).
    """
    dims = sorted(dims)
    for preset in presets:
        matryoshka_weights_preset(preset, dims, name="presets")
    if not 0 < search_fraction <= 1:
        raise ValueError(f"`search_fraction` must be in (0, 1], got {search_fraction!r}.")
    if isinstance(num_proposed, bool) or not isinstance(num_proposed, int) or not 0 <= num_proposed <= num_search:
        raise ValueError(f"`num_proposed` must be an integer from 0 to `num_search` ({num_search}), got {num_proposed!r}.")
    overridden = [key for key in _STUDY_FLAGS if key in run_settings(base_arguments)]
    if overridden:
        instead = ", ".join(sorted({_STUDY_FLAGS[key] for key in overridden}))
        raise ValueError(
            f"the training arguments set {', '.join(f'--{key}' for key in overridden)}, which the study sets on each "
            f"run itself; drop {'it' if len(overridden) == 1 else 'them'} (tune_weights.py's {instead} say that)."
        )
    runs_dir = Path(runs_dir)
    full = {preset: matryoshka_weights_preset(preset, dims) for preset in presets}
    proposals = propose_weightings(dims, num_search, seed, exclude=[*full.values(), [1.0] * len(dims)])
    _check_study_runs(base_arguments, dims, runs_dir, full, ff_dims or dims, proposals, noise_seeds)
    if validation_dataset is None:
        validation_dataset = validation_split(base_arguments)

    weightings = {}
    for label, weights in full.items():
        given = None if label == "uniform" else weights  # the default weighting, as every other uniform MRL run
        results = train_run([*base_arguments, *mrl_arguments(dims, given)], runs_dir / _run_name(label))
        weightings[label] = {"weights": weights, "run": _run_name(label), "test": _test_accuracies(results),
                             "steps": results["steps"]}
    ff = {}
    for dim in ff_dims or dims:
        ff[dim] = _test_accuracies(train_run([*base_arguments, *ff_arguments(dim)], runs_dir / f"ff{dim}"))[dim]

    steps = next(iter(weightings.values()))["steps"]
    search_steps = max(1, math.ceil(search_fraction * steps))
    search = {}
    for label, weights in {"uniform": [1.0] * len(dims), **proposals}.items():
        run = runs_dir / "search" / label
        train_run([*base_arguments, *mrl_arguments(dims, weights), "--max_steps", str(search_steps)], run)
        search[label] = {"weights": weights, "validation": head_accuracies(run, validation_dataset)}
    front = pareto_front({label: list(entry["validation"].values()) for label, entry in search.items()})
    ranked = sorted(
        (label for label in front if label != "uniform"),
        key=lambda label: -np.mean(list(search[label]["validation"].values())),
    )
    for label in ranked[:num_proposed]:
        weights = search[label]["weights"]
        results = train_run([*base_arguments, *mrl_arguments(dims, weights)], runs_dir / _run_name(label))
        weightings[label] = {"weights": weights, "run": _run_name(label), "test": _test_accuracies(results),
                             "steps": results["steps"]}

    for entry in weightings.values():
        entry["validation"] = head_accuracies(runs_dir / entry["run"], validation_dataset)
    noise = {}
    for noise_seed in noise_seeds:
        run = runs_dir / f"mrl-seed{noise_seed}"
        results = train_run([*base_arguments, *mrl_arguments(dims), "--seed", str(noise_seed)], run)
        noise[noise_seed] = {"test": _test_accuracies(results), "validation": head_accuracies(run, validation_dataset)}
    pareto_validation = pareto_front({label: list(entry["validation"].values()) for label, entry in weightings.items()})
    chosen = max(pareto_validation, key=lambda label: np.mean(list(weightings[label]["validation"].values())))
    return {
        "dims": dims,
        "weightings": weightings,
        "ff": ff,
        "search": search,
        "search_steps": search_steps,
        "pareto_validation": pareto_validation,
        "pareto_test": pareto_front({label: list(entry["test"].values()) for label, entry in weightings.items()}),
        "chosen": chosen,
        "noise": noise,
    }


def _run_name(label: str) -> str:
    return "mrl" if label == "uniform" else f"mrl-{label}"


def _check_study_runs(base_arguments, dims, runs_dir: Path, full: Mapping, ff_dims, proposals: Mapping,
                      noise_seeds) -> None:
    """`check_run` on every run the study may train, before the first: presets, FF, the search (whose step
    budget follows from the first preset run, so `max_steps` is left out of the comparison), every proposal's
    full-budget run and the noise runs."""
    from accelerate.state import AcceleratorState

    runs = [([*base_arguments, *mrl_arguments(dims, None if label == "uniform" else weights)], runs_dir / _run_name(label), ())
            for label, weights in full.items()]
    runs += [([*base_arguments, *ff_arguments(dim)], runs_dir / f"ff{dim}", ()) for dim in ff_dims]
    for label, weights in {"uniform": [1.0] * len(dims), **proposals}.items():
        runs.append(([*base_arguments, *mrl_arguments(dims, weights), "--max_steps", "1"], runs_dir / "search" / label,
                     ("max_steps",)))
    runs += [([*base_arguments, *mrl_arguments(dims, weights)], runs_dir / _run_name(label), ())
             for label, weights in proposals.items()]
    runs += [([*base_arguments, *mrl_arguments(dims), "--seed", str(noise_seed)], runs_dir / f"mrl-seed{noise_seed}", ())
             for noise_seed in noise_seeds]
    try:
        for arguments, folder, ignore in runs:
            check_run(arguments, folder, ignore)
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)


def weights_table(report: Mapping) -> str:
    """Markdown: test top-1 (%) per dim of every weighting and FF, the mean validation top-1, and whether the
    weighting is on the validation / test Pareto front."""
    dims = report["dims"]
    header = ["weighting", "weights", *(f"{dim}-d" for dim in dims), "mean val", "front (val / test)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, entry in report["weightings"].items():
        fronts = " / ".join("yes" if label in report[key] else "no" for key in ("pareto_validation", "pareto_test"))
        name = f"**{label}** (chosen)" if label == report["chosen"] else label
        cells = [f"{100 * entry['test'][dim]:.2f}" for dim in dims]
        mean_val = 100 * np.mean(list(entry["validation"].values()))
        weights = ", ".join(f"{weight:g}" for weight in entry["weights"])
        lines.append(f"| {name} | {weights} | " + " | ".join(cells) + f" | {mean_val:.2f} | {fronts} |")
    for noise_seed, entry in report.get("noise", {}).items():
        cells = [f"{100 * entry['test'][dim]:.2f}" for dim in dims]
        mean_val = 100 * np.mean(list(entry["validation"].values()))
        lines.append(f"| uniform, training seed {noise_seed} (noise) | uniform | " + " | ".join(cells)
                     + f" | {mean_val:.2f} | - |")
    ff_cells = [f"{100 * report['ff'][dim]:.2f}" if dim in report["ff"] else "-" for dim in dims]
    lines.append("| FF (one model per dim) | - | " + " | ".join(ff_cells) + " | - | - |")
    return "\n".join(lines) + "\n"


def check_weights_config(path, dims: Sequence[int] | None = None) -> Path:
    """The Matryoshka `config.json` at `path` (the file or its folder) that a weighting can be written into; with
    `dims`, its nesting dims must be those. Else `ValueError`, before any work."""
    path = Path(path)
    path = path / "config.json" if path.is_dir() else path
    if not path.is_file():
        raise ValueError(f"`path` {str(path)!r} is not a config.json file or a folder holding one.")
    config = json.loads(path.read_text())
    if not isinstance(config, dict) or not config.get("matryoshka_dims"):
        raise ValueError(f"{str(path)!r} is not a Matryoshka config: it has no `matryoshka_dims`.")
    if dims is not None and sorted(config["matryoshka_dims"]) != sorted(dims):
        raise ValueError(f"{str(path)!r} has nesting dims {sorted(config['matryoshka_dims'])}, but the weighting is "
                         f"tuned for {sorted(dims)}; pass the same `--dims`, or another config.")
    return path


def write_weights_to_config(path, weights) -> list[float]:
    """Sets `matryoshka_weights` (a list, one per nesting dim, or a preset name) in a Matryoshka `config.json` (the
    file or its folder), atomically; returns the weights written (in the config's ascending dim order)."""
    path = check_weights_config(path)
    config = json.loads(path.read_text())
    dims = config["matryoshka_dims"]
    _, config["matryoshka_weights"] = resolve_nesting(dims, weights, max(dims))
    save_results(config, path)
    return config["matryoshka_weights"]
