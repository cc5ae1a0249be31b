#!/usr/bin/env python
"""Cached mini-batches (GradCache) for the Matryoshka contrastive loss, side by side in one run: one training step
(forward + backward, no optimizer) of all-MiniLM-L6-v2 on WordNet (definition, word) pairs at every nesting dim.

- uncached, batch `--mini_batch_size` (64): the memory a cached step should stay near;
- uncached, batch `--batch_size` (4,096): the time a cached step should stay near;
- cached, batch 4,096 in mini-batches of 64 (`PairContrastiveLoss(mini_batch_size=64)`);
- sentence-transformers' `MatryoshkaLoss(CachedMultipleNegativesRankingLoss(mini_batch_size=64))`, same weights,
  same pairs (duplicate texts removed, as sentence-transformers has no ids for them), one direction, scale 20.

Models run in eval mode (no dropout), so the two cached losses must give the same value. Time: the median of
`--repeats` steps of each, taken in turn (all see the same machine load) after a warm-up step of the small batch;
peak memory: one more step of each, read by `benchmarking.peak_memory` (torch's allocations during the step, above
what was allocated before it).

    python scripts/bench_cached_contrastive.py                                # batch 4,096, mini-batch 64
    python scripts/bench_cached_contrastive.py --batch_size 512 --repeats 1   # a quick look
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from bench_trainer import cpu_name
from benchmarking import peak_memory
from transformers import AutoConfig, AutoTokenizer

import hf_mrl
from hf_mrl.data import PairCollator
from hf_mrl.modeling.nesting import default_matryoshka_dims
from hf_mrl.recipes.training import default_text_model
from hf_mrl.training.tasks import PairContrastiveLoss


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_name_or_path", default=None, help="default: the local all-MiniLM-L6-v2")
    parser.add_argument("--batch_size", type=int, default=4096)
    parser.add_argument("--mini_batch_size", type=int, default=64)
    parser.add_argument("--max_seq_length", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=1, help="timed steps per contender")
    parser.add_argument("--skip_uncached_batch", action="store_true",
                        help="leave out the uncached step of the whole batch (4,096 pairs uncached need > 21 GB)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--output", default=None, help="also write the results as JSON here")
    return parser.parse_args(argv)


def unique_pairs(count: int):
    """`count` WordNet pairs whose words and definitions are all distinct."""
    pairs = hf_mrl.data.load_splits(hf_mrl.data.DataArguments(dataset_name="wordnet-pairs"), "pairs",
                                    need_train=True).train
    seen_words, seen_definitions, rows = set(), set(), []
    for word, definition in zip(pairs["anchor"], pairs["positive"], strict=True):
        if word not in seen_words and definition not in seen_definitions:
            seen_words.add(word)
            seen_definitions.add(definition)
            rows.append((definition, word))  # query: the definition; document: the word (reverse dictionary)
        if len(rows) == count:
            return rows
    raise ValueError(f"`--batch_size` {count} is more than the {len(rows)} distinct WordNet pairs.")


def hf_mrl_step(path, rows, max_length, mini_batch_size, dims):
    model = hf_mrl.MatryoshkaModel.from_backbone(path, matryoshka_dims=dims).eval()
    loss_module = PairContrastiveLoss(model, ("anchor", "positive"), temperature=0.05, symmetric=False,
                                      mini_batch_size=mini_batch_size)
    collator = PairCollator(AutoTokenizer.from_pretrained(path), max_length=max_length)
    batch = collator([{"anchor": query, "positive": document} for query, document in rows])

    def step() -> float:
        model.zero_grad(set_to_none=True)
        loss, _ = loss_module(batch)
        loss.backward()
        return float(loss.detach())

    return step


def sentence_transformers_step(path, rows, max_length, mini_batch_size, dims):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.losses import CachedMultipleNegativesRankingLoss, MatryoshkaLoss

    model = SentenceTransformer(path, device="cpu").eval()
    model.max_seq_length = max_length
    loss_module = MatryoshkaLoss(model, CachedMultipleNegativesRankingLoss(model, scale=20.0,
                                                                           mini_batch_size=mini_batch_size), dims)
    features = [model.tokenize([row[column] for row in rows]) for column in (0, 1)]

    def step() -> float:
        model.zero_grad(set_to_none=True)
        loss = loss_module([dict(feature) for feature in features], None)
        loss.backward()
        return float(loss.detach())

    return step


def measure(steps: dict, repeats: int) -> dict:
    """Each step's loss, median seconds over `repeats` rounds (the contenders in turn) and peak memory."""
    results = {name: {"seconds": []} for name in steps}
    for round_index in range(repeats):
        for name, step in steps.items():
            started = time.perf_counter()
            results[name]["loss"] = step()
            results[name]["seconds"].append(time.perf_counter() - started)
            print(f"round {round_index + 1}: {name}: {results[name]['seconds'][-1]:.2f} s", flush=True)
    for name, step in steps.items():
        results[name]["seconds"] = statistics.median(results[name]["seconds"])
        results[name]["peak_bytes"] = peak_memory(step)
        print(f"{name}: peak {results[name]['peak_bytes'] / 2**20:.0f} MB", flush=True)
    return results


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    path = args.model_name_or_path or default_text_model()
    rows = unique_pairs(args.batch_size)
    small, big = args.mini_batch_size, args.batch_size
    dims = default_matryoshka_dims(AutoConfig.from_pretrained(path).hidden_size)  # 8, 16, ..., 256, 384 for MiniLM
    contenders = {
        f"uncached, batch {small}": lambda: hf_mrl_step(path, rows[:small], args.max_seq_length, None, dims),
        **({} if args.skip_uncached_batch else {
            f"uncached, batch {big}": lambda: hf_mrl_step(path, rows, args.max_seq_length, None, dims)}),
        f"hf_mrl cached, batch {big} / {small}": lambda: hf_mrl_step(path, rows, args.max_seq_length, small, dims),
        f"sentence-transformers cached, batch {big} / {small}": lambda: sentence_transformers_step(
            path, rows, args.max_seq_length, small, dims),
    }
    steps = {name: build() for name, build in contenders.items()}
    next(iter(steps.values()))()  # warm-up (the small batch): first-call costs out of the timings
    results = measure(steps, args.repeats)
    small_run = results[f"uncached, batch {small}"]
    cached = results[f"hf_mrl cached, batch {big} / {small}"]
    st = results[f"sentence-transformers cached, batch {big} / {small}"]
    ratios = {
        "cached memory / uncached mini-batch memory": cached["peak_bytes"] / small_run["peak_bytes"],
        "hf_mrl cached time / sentence-transformers cached time": cached["seconds"] / st["seconds"],
        "|hf_mrl loss - sentence-transformers loss|": abs(cached["loss"] - st["loss"]),
    }
    big_run = results.get(f"uncached, batch {big}")
    if big_run is not None:
        ratios.update({
            "cached time / uncached batch time": cached["seconds"] / big_run["seconds"],
            "cached memory / uncached batch memory": cached["peak_bytes"] / big_run["peak_bytes"],
            "|cached loss - uncached loss|": abs(cached["loss"] - big_run["loss"]),
        })
    print(f"\nCPU: {cpu_name()}; torch threads: {torch.get_num_threads()}; WordNet (definition -> word) pairs, "
          f"{args.max_seq_length} tokens, dims {dims}, one direction, eval mode; median of {args.repeats} steps")
    print("| step | s / step | peak memory (MB) | loss |")
    print("|---|---|---|---|")
    for name, result in results.items():
        print(f"| {name} | {result['seconds']:.2f} | {result['peak_bytes'] / 2**20:.0f} | {result['loss']:.6f} |")
    print()
    for name, value in ratios.items():
        print(f"{name}: {value:.3g}")
    summary = {"results": results, "ratios": ratios, "cpu": cpu_name(), "threads": torch.get_num_threads(),
               "arguments": vars(args)}
    if args.output:
        with open(args.output, "w") as handle:
            json.dump(summary, handle, indent=2)
    return summary


if __name__ == "__main__":
    main()
