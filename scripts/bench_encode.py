#!/usr/bin/env python
"""Texts per second of `MatryoshkaModel.encode(texts, batch_size=...)` against `SentenceTransformer.encode` on the
same all-MiniLM-L6-v2 weights and the same WordNet noun definitions, side by side in one run, in float32 and
bfloat16 (weights cast), interleaved and repeated (median). Also checks both give the same embeddings.

    python scripts/bench_encode.py                      # 10,000 definitions, batch 64, 3 repeats
    python scripts/bench_encode.py --num_texts 2000 --repeats 1
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from sentence_transformers import SentenceTransformer

import hf_mrl
from hf_mrl.recipes.training import default_text_model


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_name_or_path", default=None, help="default: the local all-MiniLM-L6-v2")
    parser.add_argument("--num_texts", type=int, default=10_000)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    return parser.parse_args(argv)


def timed(function) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    path = args.model_name_or_path or default_text_model()
    texts = hf_mrl.load_wordnet_nouns("train", limit=args.num_texts)["text"]
    rows = []
    for dtype in (torch.float32, torch.bfloat16):
        ours = hf_mrl.MatryoshkaModel.from_backbone(path).to(dtype)
        theirs = SentenceTransformer(path, device="cpu").to(dtype)
        encoders = {
            "hf_mrl": lambda items, model=ours: model.encode(items, batch_size=args.batch_size),
            "sentence-transformers": lambda items, model=theirs: model.encode(items, batch_size=args.batch_size),
        }
        for encode in encoders.values():  # warm-up: first-call costs (allocations, caches) out of the timing
            encode(texts[:256])
        seconds = {name: [] for name in encoders}
        for _ in range(args.repeats):
            for name, encode in encoders.items():  # interleaved: both see the same machine load
                seconds[name].append(timed(lambda encode=encode: encode(texts)))
        difference = np.abs(ours.encode(texts[:256]) - theirs.encode(texts[:256])).max()  # both numpy float32
        speed = {name: len(texts) / statistics.median(values) for name, values in seconds.items()}
        rows.append({"dtype": str(dtype).removeprefix("torch."), **speed,
                     "ratio": speed["hf_mrl"] / speed["sentence-transformers"], "max_abs_difference": float(difference)})
    print(f"{len(texts)} WordNet definitions, batch {args.batch_size}, {torch.get_num_threads()} threads, median of {args.repeats}")
    print("| dtype | hf_mrl texts/s | sentence-transformers texts/s | ratio | max abs difference |")
    print("|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['dtype']} | {row['hf_mrl']:.0f} | {row['sentence-transformers']:.0f} | {row['ratio']:.2f}x | "
              f"{row['max_abs_difference']:.1e} |")
    return rows


if __name__ == "__main__":
    main()
