"""Several training datasets in one run, as sentence-transformers' trainer takes a dict `train_dataset`: the
datasets are laid end to end (`NamedConcatDataset`), each batch holds rows of one of them
(`sampling.MultiDatasetBatchSampler`), and `MultiDatasetCollator` collates it with that dataset's collator and
adds the dataset's name to the batch (`batch["dataset_name"]`, a str the losses ignore and the logs read).
`train_batch_sampler` builds the batch sampler of a run (several datasets, or `batch_sampler="no_duplicates"`),
and `check_train_datasets` / `check_batch_sampling` refuse what it cannot do, before any work.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Mapping
from contextlib import contextmanager

import datasets
import torch

from .sampling import MultiDatasetBatchSampler, NoDuplicatesBatchSampler, ShuffledBatchSampler

__all__ = [
    "DATASET_NAME",
    "NamedConcatDataset",
    "MultiDatasetCollator",
    "check_batch_sampling",
    "check_train_datasets",
    "dataset_named",
    "train_batch_sampler",
]

DATASET_NAME = "dataset_name"  # the batch key (and row key) holding the dataset's name


def check_train_datasets(train_datasets: Mapping) -> None:
    """Refuses, before any work, a dict of training datasets that cannot be batched by name: no dataset, a name
    that is not a non-empty string, a stream (the order needs each dataset's length) or a `dataset_name` column."""
    if not train_datasets:
        raise ValueError("`train_dataset` is an empty dict; give {name: dataset} with at least one dataset.")
    for name, dataset in train_datasets.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"`train_dataset` keys name the datasets (in `loss_<name>` logs): non-empty strings, "
                             f"got {name!r}.")
        if isinstance(dataset, (datasets.IterableDataset, torch.utils.data.IterableDataset)) \
                or not hasattr(dataset, "__len__"):
            raise ValueError(f"`train_dataset[{name!r}]` is a stream ({type(dataset).__name__}); several training "
                             "datasets need map-style datasets, whose lengths set each dataset's share of the batches.")
        if DATASET_NAME in (getattr(dataset, "column_names", None) or ()):
            raise ValueError(f"`train_dataset[{name!r}]` has a {DATASET_NAME!r} column, the key that carries each "
                             "batch's dataset name; rename the column.")


@contextmanager
def dataset_named(dataset_name: str | None):
    """A `ValueError` raised inside about one of several training datasets names it (None: a single dataset)."""
    try:
        yield
    except ValueError as error:
        if dataset_name is None:
            raise
        raise ValueError(f"`train_dataset[{dataset_name!r}]`: {error}") from None


def check_batch_sampling(args, task: str, model, train_dataset) -> None:
    """Refuses, before any work, what our batch samplers (several training datasets, `batch_sampler`=
    'no_duplicates') cannot do: no_duplicates on a stream or without texts, another row order, and Accelerate
    cutting or dispatching batches."""
    several = isinstance(train_dataset, Mapping)
    no_duplicates = args.batch_sampler == "no_duplicates"
    if train_dataset is None or not (several or no_duplicates):
        return
    why = "several training datasets" if several else "`batch_sampler`='no_duplicates'"
    for name, part in (train_dataset.items() if several else [(None, train_dataset)]):
        if no_duplicates and not isinstance(part, datasets.Dataset):
            where = "`train_dataset`" if name is None else f"`train_dataset[{name!r}]`"
            raise ValueError(f"`batch_sampler`='no_duplicates' reads the texts of every row up front; {where} is a "
                             f"{type(part).__name__}: give a map-style datasets.Dataset or use 'batch_sampler'.")
    if no_duplicates and task == "classification" and model.main_input_name == "pixel_values":
        raise ValueError("`batch_sampler`='no_duplicates' keeps repeated texts out of a batch; an image classifier "
                         "trains on no text: use 'batch_sampler'.")
    strategy = str(getattr(args.train_sampling_strategy, "value", args.train_sampling_strategy))
    if strategy != "random":
        raise ValueError(f"`train_sampling_strategy`={strategy!r} orders the rows of one dataset; with {why} the batch "
                         "sampler orders the batches (a seeded shuffle per epoch): use 'random'.")
    for setting in ("split_batches", "dispatch_batches"):
        if getattr(args.accelerator_config, setting, None):
            raise ValueError(f"`accelerator_config.{setting}`=True lets Accelerate cut or hand out batches; with {why} "
                             "the batch sampler plans every process's batches: turn it off.")


def train_batch_sampler(train_dataset, text_columns: Callable[[str | None], tuple[str, ...]], batch_sampler: str,
                        strategy: str, *, batch_size: int, seed: int, drop_last: bool, num_processes: int):
    """The batch sampler of a run on `train_dataset` (a `datasets.Dataset`, or `{name: Dataset}`): per dataset a
    `NoDuplicatesBatchSampler` over its `text_columns(name)` (`batch_sampler`="no_duplicates") or a
    `ShuffledBatchSampler`, dataset k's rows shuffled with `seed + (k << 32) + epoch`; for a dict, a
    `MultiDatasetBatchSampler` (`strategy`) over them, the order of the datasets' steps shuffled with `seed + epoch`."""
    parts = train_dataset if isinstance(train_dataset, Mapping) else {None: train_dataset}
    samplers = []
    for position, (name, dataset) in enumerate(parts.items()):
        settings = dict(batch_size=batch_size, seed=seed + (position << 32), drop_last=drop_last,
                        num_processes=num_processes)
        if batch_sampler == "no_duplicates":
            texts = list(zip(*(dataset[column] for column in text_columns(name)), strict=True))
            samplers.append(NoDuplicatesBatchSampler(texts, **settings))
        else:
            samplers.append(ShuffledBatchSampler(len(dataset), **settings))
    if not isinstance(train_dataset, Mapping):
        return samplers[0]
    return MultiDatasetBatchSampler(samplers, [len(dataset) for dataset in parts.values()], strategy, seed,
                                    num_processes)


class NamedConcatDataset(torch.utils.data.ConcatDataset):
    """`{name: dataset}` laid end to end (a `torch.utils.data.ConcatDataset`: dataset k's rows follow those before
    it); each row comes back with its dataset's name under `dataset_name`."""

    def __init__(self, datasets_by_name: Mapping[str, torch.utils.data.Dataset]):
        super().__init__(list(datasets_by_name.values()))
        self.names = list(datasets_by_name)

    def __getitem__(self, index: int) -> dict:
        if index < 0:
            index += len(self)
        position = bisect.bisect_right(self.cumulative_sizes, index)
        start = self.cumulative_sizes[position - 1] if position else 0
        return {**self.datasets[position][index - start], DATASET_NAME: self.names[position]}


class MultiDatasetCollator:
    """Rows of one dataset (each with its `dataset_name`, as `NamedConcatDataset` gives them) -> that dataset's
    collator's batch, plus `batch["dataset_name"]`.

    Args:
        collators: `{dataset name: collator}`, or one collator for every dataset.
    """

    def __init__(self, collators: Mapping[str, Callable] | Callable):
        self.collators = collators

    def __call__(self, rows: list[dict]) -> dict:
        names = {row.get(DATASET_NAME) for row in rows}
        if len(names) != 1 or None in names:
            raise ValueError(f"A batch of several training datasets must hold rows of one dataset, each with its "
                             f"`{DATASET_NAME}`; got {sorted(map(str, names))}.")
        name = names.pop()
        collator = self.collators[name] if isinstance(self.collators, Mapping) else self.collators
        batch = collator([{key: value for key, value in row.items() if key != DATASET_NAME} for row in rows])
        batch[DATASET_NAME] = name
        return batch
