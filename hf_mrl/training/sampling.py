"""The training order: a seeded shuffle per epoch, so a resumed run replays the killed run's order."""

from __future__ import annotations

import torch
from torch.utils.data import Sampler

__all__ = ["EpochShuffleSampler"]


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
