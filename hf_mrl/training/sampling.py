"""The training order: seeded shuffles per epoch (`seed + epoch`, `set_epoch`), so a resumed run replays the killed
run's order (Trainer skips the batches the killed run had trained on).

- `EpochShuffleSampler`: one dataset's rows, for Trainer's own batching;
- `ShuffledBatchSampler`: one dataset's rows cut into batches;
- `NoDuplicatesBatchSampler`: batches in which no two rows share a text (no false in-batch negatives), as
  sentence-transformers' `BatchSamplers.NO_DUPLICATES`;
- `MultiDatasetBatchSampler`: the batches of several datasets, each batch from one of them, "proportional" or
  "round_robin", as sentence-transformers' `MultiDatasetBatchSamplers`.

The batch samplers plan the batches of every process: each training step takes `num_processes` consecutive
batches, which together hold one global batch (one dataset's, without repeated texts for no_duplicates), and an
epoch has a multiple of `num_processes` batches. Accelerate deals them whole, batch i to process i % num_processes
(their `batch_size` is None, so it neither cuts nor pads them), and the contrastive loss all-gathers one global
batch of one dataset. Their length is fixed by the data, not by the shuffle: Trainer plans its steps from it.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence

import torch
from torch.utils.data import Sampler

from ..modeling.checks import check_positive_int

__all__ = [
    "BATCH_SAMPLERS",
    "MULTI_DATASET_BATCH_SAMPLERS",
    "EpochShuffleSampler",
    "ShuffledBatchSampler",
    "NoDuplicatesBatchSampler",
    "MultiDatasetBatchSampler",
]

BATCH_SAMPLERS = ("batch_sampler", "no_duplicates")
MULTI_DATASET_BATCH_SAMPLERS = ("proportional", "round_robin")


def _permutation(num_rows: int, seed: int) -> list[int]:
    return torch.randperm(num_rows, generator=torch.Generator().manual_seed(seed)).tolist()


class EpochShuffleSampler(Sampler):
    """Shuffles `num_rows` with `seed + epoch` (`set_epoch`). With `lengths`, each run of 50 batches is sorted by
    length and the batches shuffled: batches of similar lengths pad little."""

    def __init__(self, num_rows: int, seed: int, batch_size: int, lengths: list[int] | None = None):
        self.num_rows, self.seed, self.batch_size, self.lengths, self.epoch = num_rows, seed, batch_size, lengths, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_rows

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(self.num_rows, generator=generator).tolist()
        if self.lengths is None:
            return iter(order)
        group = 50 * self.batch_size
        runs = [sorted(order[i : i + group], key=self.lengths.__getitem__, reverse=True) for i in range(0, len(order), group)]
        batches = [run[i : i + self.batch_size] for run in runs for i in range(0, len(run), self.batch_size)]
        shuffled = torch.randperm(len(batches), generator=generator).tolist()
        return iter([index for position in shuffled for index in batches[position]])


def _per_process(batch: list[int], num_processes: int) -> list[list[int]]:
    """A global batch cut into `num_processes` consecutive batches whose sizes differ by at most one. A batch with
    fewer rows than processes (a last short batch) is repeated so that every process gets a row."""
    if len(batch) < num_processes:
        batch = [batch[position % len(batch)] for position in range(num_processes)]
    size, extra = divmod(len(batch), num_processes)
    bounds = [process * size + min(process, extra) for process in range(num_processes + 1)]
    return [batch[bounds[process] : bounds[process + 1]] for process in range(num_processes)]


class _EpochBatchSampler(Sampler):
    """What the batch samplers share: the settings' checks, `set_epoch` and the per-process cut of global batches."""

    batch_size = None  # Accelerate deals the batches whole (see the module docstring); `rows_per_batch` is the size

    def __init__(self, num_rows: int, batch_size: int, seed: int, drop_last: bool, num_processes: int):
        check_positive_int(batch_size, "batch_size")
        check_positive_int(num_processes, "num_processes")
        self.num_rows, self.rows_per_batch, self.seed = num_rows, batch_size, seed
        self.drop_last, self.num_processes, self.epoch = bool(drop_last), num_processes, 0
        self.global_batch = batch_size * num_processes

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _global_batches(self) -> int:
        whole, rest = divmod(self.num_rows, self.global_batch)
        return whole + (1 if rest and not self.drop_last else 0)

    def __len__(self) -> int:
        return self._global_batches() * self.num_processes

    def __iter__(self):
        for batch in self._plan():
            yield from _per_process(batch, self.num_processes)

    def _plan(self) -> list[list[int]]:
        raise NotImplementedError


class ShuffledBatchSampler(_EpochBatchSampler):
    """`num_rows` row ids shuffled with `seed + epoch`, cut into batches of `batch_size` per process; the last,
    shorter global batch is kept unless `drop_last`."""

    def __init__(self, num_rows: int, batch_size: int, seed: int, drop_last: bool = False, num_processes: int = 1):
        super().__init__(num_rows, batch_size, seed, drop_last, num_processes)

    def _plan(self) -> list[list[int]]:
        order = _permutation(self.num_rows, self.seed + self.epoch)
        size = self.global_batch
        return [order[start : start + size] for start in range(0, self._global_batches() * size, size)]


class NoDuplicatesBatchSampler(_EpochBatchSampler):
    """Batches (global over `num_processes`) in which no two rows share a value of `texts`, as sentence-transformers'
    `NoDuplicatesBatchSampler`: rows are taken in a `seed + epoch` shuffle, and a row that shares a text with the
    batch waits for a later one.

    Args:
        texts: for each row, its text values (e.g. anchor and positive); values other than strings compare by `str`.
        batch_size: rows per batch and process.
        seed: shuffle seed (`seed + epoch`).
        drop_last: drop the shorter batch of the epoch's last rows.
        num_processes: processes the global batches are cut between.

    An epoch has as many batches as a plain batch sampler would (`ceil(rows / global batch)`, or the floor with
    `drop_last`): in data with many repeated texts its last batches may be shorter, and the rows they leave over
    wait for the next epoch's shuffle.
    """

    def __init__(self, texts: Sequence[Iterable[Hashable]], batch_size: int, seed: int, drop_last: bool = False,
                 num_processes: int = 1):
        super().__init__(len(texts), batch_size, seed, drop_last, num_processes)
        self.texts = [frozenset(value if isinstance(value, str) else str(value) for value in row) for row in texts]

    def _plan(self) -> list[list[int]]:
        remaining = dict.fromkeys(_permutation(self.num_rows, self.seed + self.epoch))
        batches = []
        while remaining and len(batches) < self._global_batches():
            batch, seen = [], set()
            for index in remaining:
                values = self.texts[index]
                if seen.isdisjoint(values):
                    batch.append(index)
                    seen.update(values)
                    if len(batch) == self.global_batch:
                        break
            for index in batch:
                del remaining[index]
            batches.append(batch)
        return batches


class MultiDatasetBatchSampler(Sampler):
    """The batches of several datasets laid end to end (a `ConcatDataset`): every training step's batches come from
    one dataset, in a `seed + epoch` order.

    Args:
        batch_samplers: one batch sampler per dataset, over its own row ids (e.g. `ShuffledBatchSampler`,
            `NoDuplicatesBatchSampler`), planned for the same `num_processes`.
        dataset_sizes: rows of each dataset, in the same order (dataset k's ids start at the sum of the sizes before).
        strategy: "proportional": each dataset's steps in proportion to its size (all of them, shuffled);
            "round_robin": one step from each dataset in turn, until the one with the fewest steps runs out.
        seed: seed of the order of the datasets' steps (`seed + epoch`).
        num_processes: batches per step (`num_processes` consecutive batches form one global batch).
    """

    batch_size = None  # Accelerate deals the batches whole (see the module docstring)

    def __init__(self, batch_samplers: Sequence, dataset_sizes: Sequence[int], strategy: str = "proportional",
                 seed: int = 0, num_processes: int = 1):
        if strategy not in MULTI_DATASET_BATCH_SAMPLERS:
            raise ValueError(f"`strategy` must be one of {list(MULTI_DATASET_BATCH_SAMPLERS)}, got {strategy!r}.")
        if not batch_samplers or len(batch_samplers) != len(dataset_sizes):
            raise ValueError(f"`batch_samplers` ({len(batch_samplers)}) and `dataset_sizes` ({len(dataset_sizes)}) "
                             "must give one entry per dataset, at least one.")
        check_positive_int(num_processes, "num_processes")
        uneven = next((len(sampler) for sampler in batch_samplers if len(sampler) % num_processes), None)
        if uneven is not None:
            raise ValueError(f"`batch_samplers` must plan whole steps of {num_processes} batches (`num_processes`); "
                             f"one has {uneven} batches.")
        self.batch_samplers, self.strategy, self.seed = list(batch_samplers), strategy, seed
        self.num_processes, self.epoch = num_processes, 0
        self.offsets = [sum(dataset_sizes[:position]) for position in range(len(dataset_sizes))]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        for sampler in self.batch_samplers:
            if hasattr(sampler, "set_epoch"):
                sampler.set_epoch(epoch)

    def _steps(self) -> list[int]:
        return [len(sampler) // self.num_processes for sampler in self.batch_samplers]

    def dataset_order(self) -> list[int]:
        """The dataset (its position) of each step of this epoch."""
        steps = self._steps()
        if self.strategy == "round_robin":
            return list(range(len(steps))) * min(steps)
        order = [position for position, count in enumerate(steps) for _ in range(count)]
        shuffle = _permutation(len(order), self.seed + self.epoch)
        return [order[position] for position in shuffle]

    def __len__(self) -> int:
        steps = self._steps()
        total = min(steps) * len(steps) if self.strategy == "round_robin" else sum(steps)
        return total * self.num_processes

    def __iter__(self):
        batches = [iter(sampler) for sampler in self.batch_samplers]
        for position in self.dataset_order():
            offset = self.offsets[position]
            for _ in range(self.num_processes):
                yield [offset + index for index in next(batches[position])]
