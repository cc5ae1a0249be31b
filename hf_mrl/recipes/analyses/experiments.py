"""The analyses on this project's own models, end to end: train (or reuse) the runs each needs, then score them.

Images: Fashion-MNIST, a small ViT from scratch (`fmnist_arguments`), MRL heads at 8, 16, 32, 64 and FF models at
each of those dims, in three training settings: all ten classes (shift, routing, loss weights), two classes held
out (few-shot on novel classes), and a long-tailed subset (per-class accuracy). Text: all-MiniLM-L6-v2 on a seeded
sample of WordNet noun definitions, whose 26 categories are as unevenly frequent as in WordNet (per-class accuracy
with hypernym super-classes, few-shot, routing).

Runs live in `<runs_dir>/<setting>/<run>` (a finished run is reused, a killed one resumes); each analysis writes
`<results_dir>/<analysis>/<dataset>/`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...data import (
    FASHION_MNIST_CLASS_NAMES,
    WORDNET_NOUN_CATEGORIES,
    load_fashion_mnist,
    load_wordnet_nouns,
    long_tailed_subset,
    split_classes,
    wordnet_noun_super_classes,
)
from .runs import (
    FMNIST_BATCH_SIZE,
    FMNIST_DIMS,
    WORDNET_DIMS,
    ff_arguments,
    fmnist_arguments,
    mrl_arguments,
    save_splits,
    train_run,
    wordnet_arguments,
)
from .studies import few_shot_study, long_tail_study, routing_study, shift_study, weights_study
from .weights import tune_matryoshka_weights

__all__ = [
    "FASHION_MNIST_SUPER_CLASSES",
    "FMNIST_NOVEL_CLASSES",
    "IMAGE_ANALYSES",
    "TEXT_ANALYSES",
    "AnalysisSettings",
    "run_image_analyses",
    "run_text_analyses",
]

IMAGE_ANALYSES = ("shift", "few_shot", "long_tail", "routing", "weights")
TEXT_ANALYSES = ("long_tail", "few_shot", "routing")
CORRUPTIONS = ("noise", "blur", "contrast", "rotation")
# A user mapping of the ten classes to garment kinds (the super-classes of the long-tail analysis).
FASHION_MNIST_SUPER_CLASSES = {
    0: "upper body", 2: "upper body", 3: "upper body", 4: "upper body", 6: "upper body",
    1: "legs", 5: "footwear", 7: "footwear", 9: "footwear", 8: "bag",
}  # fmt: skip
FMNIST_NOVEL_CLASSES = (5, 6)  # Sandal (distinct) and Shirt (easily confused with T-shirt, pullover, coat)
FMNIST_VALIDATION_START = 54000


@dataclass
class AnalysisSettings:
    """Where runs and results go, and the (small) budgets.

    image_epochs / image_hidden_size: every Fashion-MNIST run (the long-tailed runs take as many steps as the others);
    image_test_rows: test rows for shift and few-shot; imbalance: the long-tailed subset's largest / smallest class;
    severities: of every corruption;
    text_train_samples / text_epochs: every WordNet run; text_ff_dims: the FF dims trained there (default all);
    weight_search / weight_proposed: random weightings tried / retrained in the loss-weight search.
    """

    runs_dir: Path
    results_dir: Path
    image_epochs: int = 2
    image_hidden_size: int = 64
    image_test_rows: int = 5000
    imbalance: float = 20.0
    severities: tuple[int, ...] = (1, 3, 5)
    text_train_samples: int = 4000
    text_epochs: int = 2
    text_ff_dims: tuple[int, ...] | None = None
    text_validation_rows: int = 4000
    weight_search: int = 4
    weight_proposed: int = 2
    seed: int = 0


def _train_mrl_and_ff(base_arguments, dims, folder: Path, ff_dims=None) -> tuple[Path, dict[int, Path]]:
    train_run([*base_arguments, *mrl_arguments(dims)], folder / "mrl")
    ff_runs = {}
    for dim in ff_dims or dims:
        train_run([*base_arguments, *ff_arguments(dim)], folder / f"ff{dim}")
        ff_runs[dim] = folder / f"ff{dim}"
    return folder / "mrl", ff_runs


def run_image_analyses(settings: AnalysisSettings, analyses=IMAGE_ANALYSES) -> dict[str, dict]:
    """The Fashion-MNIST analyses named in `analyses` (of `IMAGE_ANALYSES`); returns {analysis: its data}."""
    unknown = sorted(set(analyses) - set(IMAGE_ANALYSES))
    if unknown:
        raise ValueError(f"`analyses` holds {unknown}; the image analyses are {list(IMAGE_ANALYSES)}.")
    runs, results = Path(settings.runs_dir), Path(settings.results_dir)
    full_train = load_fashion_mnist(split="train")
    train = full_train.select(range(FMNIST_VALIDATION_START))
    validation = full_train.select(range(FMNIST_VALIDATION_START, len(full_train)))
    test = load_fashion_mnist(split="test")
    test_rows = test.select(range(min(settings.image_test_rows, len(test))))
    budget = {"epochs": settings.image_epochs, "hidden_size": settings.image_hidden_size, "seed": settings.seed}
    base = fmnist_arguments(**budget)
    done = {}
    if {"shift", "routing", "weights"} & set(analyses):
        mrl, ff = _train_mrl_and_ff(base, FMNIST_DIMS, runs / "fmnist")
        if "shift" in analyses:
            done["shift"] = shift_study(results / "shift" / "fmnist", mrl, ff, test_rows, train.select(range(10000)),
                                        CORRUPTIONS, settings.severities, "Fashion-MNIST ViT", seed=settings.seed)
        if "routing" in analyses:
            done["routing"] = routing_study(results / "routing" / "fmnist", mrl, validation, test, "Fashion-MNIST ViT")
        if "weights" in analyses:
            report = tune_matryoshka_weights(base, FMNIST_DIMS, runs / "fmnist", validation,
                                             num_search=settings.weight_search, num_proposed=settings.weight_proposed,
                                             seed=settings.seed)
            done["weights"] = weights_study(results / "weights" / "fmnist", report, "Fashion-MNIST ViT")
    subset_splits = ("train", "validation", "test")
    if "few_shot" in analyses:
        held = "-".join(map(str, FMNIST_NOVEL_CLASSES))
        folder = save_splits({"train": split_classes(train, FMNIST_NOVEL_CLASSES)[0],
                              "validation": split_classes(validation, FMNIST_NOVEL_CLASSES)[0], "test": test},
                             runs / "data" / f"fmnist-without-{held}")
        mrl, ff = _train_mrl_and_ff(fmnist_arguments(folder, splits=subset_splits, **budget), FMNIST_DIMS,
                                    runs / f"fmnist-without-{held}")
        done["few_shot"] = few_shot_study(results / "few_shot" / "fmnist", mrl, ff, train, test_rows,
                                          list(FMNIST_NOVEL_CLASSES), FASHION_MNIST_CLASS_NAMES, "Fashion-MNIST ViT")
    if "long_tail" in analyses:
        long_tailed = long_tailed_subset(train, settings.imbalance, seed=settings.seed)
        name = f"fmnist-longtail-{settings.imbalance:g}"
        folder = save_splits({"train": long_tailed, "validation": validation, "test": test}, runs / "data" / name)
        # As many steps as the runs on the whole training split: the same compute, more passes over fewer rows.
        steps = math.ceil(len(train) / FMNIST_BATCH_SIZE) * settings.image_epochs
        arguments = [*fmnist_arguments(folder, splits=subset_splits, **budget), "--max_steps", str(steps)]
        mrl, ff = _train_mrl_and_ff(arguments, FMNIST_DIMS, runs / name)
        title = "Fashion-MNIST ViT, long-tailed training set"
        done["long_tail"] = long_tail_study(results / "long_tail" / "fmnist", mrl, ff, test, np.asarray(long_tailed["label"]),
                                            FASHION_MNIST_SUPER_CLASSES, title)
        if "routing" in analyses:  # its heads disagree more than the balanced model's
            done["routing-longtail"] = routing_study(results / "routing" / "fmnist-longtail", mrl, validation, test, title)
    return done


def run_text_analyses(settings: AnalysisSettings, analyses=TEXT_ANALYSES, model_name_or_path: str | None = None) -> dict:
    """The WordNet analyses named in `analyses` (of `TEXT_ANALYSES`) on all-MiniLM-L6-v2 (or `model_name_or_path`)."""
    from ..training import default_text_model

    unknown = sorted(set(analyses) - set(TEXT_ANALYSES))
    if unknown:
        raise ValueError(f"`analyses` holds {unknown}; the text analyses are {list(TEXT_ANALYSES)}.")
    runs, results = Path(settings.runs_dir), Path(settings.results_dir)
    base = wordnet_arguments(model_name_or_path or default_text_model(), settings.text_train_samples,
                             settings.text_epochs, settings.seed)
    mrl, ff = _train_mrl_and_ff(base, WORDNET_DIMS, runs / f"wordnet-{settings.text_train_samples}",
                                settings.text_ff_dims)
    # The rows the runs trained on: the loader's seeded sample (what `--max_train_samples` takes for WordNet).
    train = load_wordnet_nouns(split="train", limit=settings.text_train_samples, seed=settings.seed)
    test = load_wordnet_nouns(split="test", seed=settings.seed)
    title = f"all-MiniLM-L6-v2 on {settings.text_train_samples} WordNet definitions"
    done = {}
    if "long_tail" in analyses:
        done["long_tail"] = long_tail_study(results / "long_tail" / "wordnet", mrl, ff, test, np.asarray(train["label"]),
                                            wordnet_noun_super_classes(), title)
    if "few_shot" in analyses:
        support = load_wordnet_nouns(split="train", seed=settings.seed)
        done["few_shot"] = few_shot_study(results / "few_shot" / "wordnet", mrl, ff, support, test, [],
                                          WORDNET_NOUN_CATEGORIES, title)
    if "routing" in analyses:
        validation = load_wordnet_nouns(split="validation", limit=settings.text_validation_rows, seed=settings.seed)
        done["routing"] = routing_study(results / "routing" / "wordnet", mrl, validation, test, title)
    return done
