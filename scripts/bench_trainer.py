#!/usr/bin/env python
"""Seconds per training step of `MatryoshkaTrainer` (a transformers `Trainer`, the Matryoshka contrastive loss)
against sentence-transformers' `SentenceTransformerTrainer` + `MatryoshkaLoss(MultipleNegativesRankingLoss)` and
against a bare Accelerate loop over the same loss (what hf_mrl ran before it moved onto `Trainer`): the same
all-MiniLM-L6-v2 weights, the same WordNet (definition, word) pairs, batch 64, the same nesting dims, one
direction, AdamW at the same learning rate. Each trainer runs its own whole loop (data loading, callbacks,
logging); a callback times each optimizer step (collation excluded, as all three fetch the batch first). The three
are run in turn, `--repeats` times (interleaved: all see the same machine load), and the medians compared. Peak
memory: one more forward + backward of each, measured by `benchmarking.peak_memory`.

    python scripts/bench_trainer.py                     # 12 timed steps after 3 warm-up steps, 3 repeats
    python scripts/bench_trainer.py --steps 4 --warmup 1 --repeats 1 --num_pairs 512   # a quick look
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
from benchmarking import peak_memory
from transformers import TrainerCallback

import hf_mrl
from hf_mrl.recipes.training import default_text_model
from hf_mrl.training import MatryoshkaTrainer, MatryoshkaTrainingArguments
from hf_mrl.training.tasks import PairContrastiveLoss

DIMS = [8, 16, 32, 64, 128, 256, 384]
CONTENDERS = ("hf_mrl Trainer", "sentence-transformers Trainer", "Accelerate loop")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_name_or_path", default=None, help="default: the local all-MiniLM-L6-v2")
    parser.add_argument("--num_pairs", type=int, default=4096, help="WordNet (definition, word) training pairs")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--max_seq_length", type=int, default=64)
    parser.add_argument("--steps", type=int, default=12, help="timed optimizer steps per run")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--output", default=None, help="also write the results as JSON here")
    return parser.parse_args(argv)


class StepTimer(TrainerCallback):
    """Seconds from each step's begin to its end (forward, backward, optimizer step, Trainer's bookkeeping)."""

    def __init__(self):
        self.seconds, self._started = [], None

    def on_step_begin(self, args, state, control, **kwargs):
        self._started = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.seconds.append(time.perf_counter() - self._started)


def _arguments(args, output_dir: str, **extra) -> dict:
    return dict(output_dir=output_dir, max_steps=args.warmup + args.steps, per_device_train_batch_size=args.batch_size,
                learning_rate=2e-5, warmup_steps=0, weight_decay=0.0, save_strategy="no", report_to="none",
                disable_tqdm=True, logging_steps=10_000, seed=0, optim="adamw_torch", max_grad_norm=1.0, **extra)


def run_hf_mrl(args, pairs, path, output_dir) -> tuple[list[float], int]:
    model = hf_mrl.MatryoshkaModel.from_backbone(path, matryoshka_dims=DIMS)
    training_args = MatryoshkaTrainingArguments(**_arguments(args, output_dir, max_seq_length=args.max_seq_length,
                                                               symmetric=False, head_learning_rate=2e-5))
    timer = StepTimer()
    trainer = MatryoshkaTrainer(model=model, args=training_args, train_dataset=pairs, callbacks=[timer])
    trainer.train()
    batch = next(iter(trainer.get_train_dataloader()))
    peak = peak_memory(lambda: trainer.training_step(trainer.model, batch))
    return timer.seconds[args.warmup:], peak


def run_sentence_transformers(args, pairs, path, output_dir) -> tuple[list[float], int]:
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.sentence_transformer.losses import MatryoshkaLoss, MultipleNegativesRankingLoss

    model = SentenceTransformer(path, device="cpu")
    model.max_seq_length = args.max_seq_length
    loss = MatryoshkaLoss(model, MultipleNegativesRankingLoss(model, scale=20.0), DIMS)
    timer = StepTimer()
    training_args = SentenceTransformerTrainingArguments(**_arguments(args, output_dir), use_cpu=True)
    trainer = SentenceTransformerTrainer(model=model, args=training_args, train_dataset=pairs, loss=loss,
                                         callbacks=[timer])
    trainer.train()
    batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    peak = peak_memory(lambda: trainer.training_step(trainer.model, batch))
    return timer.seconds[args.warmup:], peak


def run_accelerate_loop(args, pairs, path, output_dir) -> tuple[list[float], int]:
    """The loop hf_mrl ran before: prepare, forward, backward, clip, step, zero_grad, schedule."""
    from accelerate import Accelerator
    from torch.utils.data import DataLoader
    from transformers import AutoTokenizer, get_scheduler

    from hf_mrl.data import PairCollator

    torch.manual_seed(0)
    accelerator = Accelerator(cpu=True)
    model = hf_mrl.MatryoshkaModel.from_backbone(path, matryoshka_dims=DIMS)
    loss_module = PairContrastiveLoss(model, ("anchor", "positive"), temperature=0.05, symmetric=False)
    collator = PairCollator(AutoTokenizer.from_pretrained(path), max_length=args.max_seq_length)
    loader = DataLoader(pairs, batch_size=args.batch_size, shuffle=True, collate_fn=collator,
                        generator=torch.Generator().manual_seed(0))
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-5, weight_decay=0.0)
    scheduler = get_scheduler("linear", optimizer, num_warmup_steps=0, num_training_steps=args.warmup + args.steps)
    module, optimizer, loader, scheduler = accelerator.prepare(loss_module, optimizer, loader, scheduler)
    module.train()
    seconds, batches = [], iter(loader)
    for _ in range(args.warmup + args.steps):
        batch = next(batches)
        started = time.perf_counter()
        loss, _ = module(batch)
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(module.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
        scheduler.step()
        seconds.append(time.perf_counter() - started)
    batch = next(batches)
    peak = peak_memory(lambda: accelerator.backward(module(batch)[0]))
    return seconds[args.warmup:], peak


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    path = args.model_name_or_path or default_text_model()
    pairs = hf_mrl.data.load_splits(hf_mrl.data.DataArguments(dataset_name="wordnet-pairs", max_train_samples=args.num_pairs),
                                    "pairs", need_train=True).train
    pairs = pairs.select_columns(["anchor", "positive"])
    runners = {"hf_mrl Trainer": run_hf_mrl, "sentence-transformers Trainer": run_sentence_transformers,
               "Accelerate loop": run_accelerate_loop}
    seconds = {name: [] for name in CONTENDERS}
    peaks = {}
    with tempfile.TemporaryDirectory(prefix="bench_trainer-") as scratch:
        for repeat in range(args.repeats):
            for name in CONTENDERS:  # interleaved
                times, peak = runners[name](args, pairs, path, str(Path(scratch) / f"{repeat}-{len(seconds[name])}"))
                seconds[name] += times
                peaks[name] = peak
    median = {name: statistics.median(values) for name, values in seconds.items()}
    ours = median["hf_mrl Trainer"]
    print(f"CPU: {cpu_name()}; torch threads: {torch.get_num_threads()}; batch {args.batch_size} pairs of WordNet, "
          f"{args.max_seq_length} tokens, dims {DIMS}; {args.steps} timed steps x {args.repeats} repeats")
    print("| trainer | s / step (median) | hf_mrl / this | peak memory of a step (MB) |")
    print("|---|---|---|---|")
    for name in CONTENDERS:
        print(f"| {name} | {median[name]:.3f} | {ours / median[name]:.3f}x | {peaks[name] / 2**20:.0f} |")
    results = {"median_seconds": median, "ratios": {name: ours / median[name] for name in CONTENDERS},
               "peak_bytes": peaks, "cpu": cpu_name(), "threads": torch.get_num_threads(), "args": vars(args)}
    if args.output:
        Path(args.output).write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
