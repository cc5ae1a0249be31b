"""`hf-mrl demo` (`--data wordnet`): MRL against a plain fine-tune, truncated or PCA-reduced, on a task where the
choice matters, then adaptive retrieval on the MRL embeddings.

Both models start from the same encoder (all-MiniLM-L6-v2, offline) and see the same batches: WordNet's reverse
dictionary (query = a definition, document = a word of its synset; one direction, temperature 0.05, in-batch
negatives), split by synset. MRL's loss runs at every nesting dim (8 ... 384), the plain model's at 384 only. On
held-out pairs, `--num_queries` distinct definitions search every distinct word of the test split (about 19,000;
exact search), at each dim k:
- MRL: its first k dims, renormalised;
- plain (truncated): the plain model's first k dims, what a user gets by cutting an ordinary embedding;
- plain + PCA: the plain model's top-k principal components (fit on the searched words' embeddings).
The margin is MRL minus the better of the two baselines, in recall@10 points. Then adaptive retrieval over the same
words with the MRL embeddings: a flat shortlist at a low dim re-ranked at 384 against exact 384-d search
(`adaptive_retrieval_report`: queries/s and recall of the exact top 10).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from transformers import AutoTokenizer, set_seed

from ..data.wordnet import load_wordnet_pairs
from ..evaluation import (
    MatryoshkaRetrievalEvaluator,
    adaptive_retrieval_report,
    fastest_adaptive_setting,
    fit_baseline,
    format_deployment_report,
    group_by_dim,
    save_results,
)
from ..evaluation.deployment import describe_search, plot_deployment
from ..evaluation.report import draw_metric_vs_dim, save_figure
from ..modeling.modeling_matryoshka import MatryoshkaModel
from ..training import MatryoshkaTrainer, MatryoshkaTrainingArguments
from ..training.evaluators import pair_retrieval_evaluator
from .training import default_text_model

__all__ = ["run_text_demo", "bf16_is_faster", "margins"]

METRIC = "recall@10"
QUERY, DOCUMENT = "positive", "anchor"  # load_wordnet_pairs: anchor = word, positive = its definition
MARGIN_DIMS = (8, 16)
EQUAL_QUALITY = 0.005  # "equal recall": within half a point of exact full-dim search
COLUMNS = {"MRL": "MRL (first k dims)", "plain": "plain (first k dims)", "plain + PCA": "plain + PCA (top k components)"}


def bf16_is_faster(size: int = 512, repeats: int = 5) -> bool:
    """Whether this CPU multiplies bfloat16 matrices clearly faster than float32 ones (bf16 units such as AMX or
    AVX512-BF16); without them bf16 runs several times slower. Times `size`-square products (a few ms)."""
    seconds = {}
    for dtype in (torch.float32, torch.bfloat16):
        matrix = torch.randn(size, size).to(dtype)
        matrix @ matrix  # warm-up
        started = time.perf_counter()
        for _ in range(repeats):
            matrix @ matrix
        seconds[dtype] = time.perf_counter() - started
    return seconds[torch.bfloat16] < 0.75 * seconds[torch.float32]


def margins(results: dict[str, dict[str, float]], dims=MARGIN_DIMS) -> dict[int, float]:
    """{dim: MRL minus the best baseline} in `METRIC` points, from the flat per-dim results of each model."""
    by_dim = {label: group_by_dim(values) for label, values in results.items()}
    baselines = [label for label in by_dim if label != "MRL"]
    return {dim: round(100 * (by_dim["MRL"][dim][METRIC] - max(by_dim[b][dim][METRIC] for b in baselines)), 2)
            for dim in dims if all(dim in values for values in by_dim.values())}


def reverse_dictionary_evaluator(pairs, tokenizer, max_length: int, num_queries: int, seed: int):
    """Definition -> word retrieval: `num_queries` of the distinct definitions in `pairs` (seeded sample) search
    every distinct word of `pairs`; a definition's relevant words are its synset's."""
    every = pair_retrieval_evaluator(pairs, (QUERY, DOCUMENT), tokenizer, max_length, dims=None, name="wordnet",
                                     batch_size=256, ks=(10,))
    count = len(every.queries)
    chosen = np.sort(np.random.default_rng(seed).permutation(count)[: min(num_queries, count)])  # keeps length order
    return MatryoshkaRetrievalEvaluator(
        every.queries.select(chosen), every.corpus, collate_fn=every.collate_fn,
        relevant_ids=[every.relevant_ids[i] for i in chosen], ks=(10,), primary_metric_name="recall",
        name="wordnet", batch_size=256)


def _training_args(args, bf16: bool) -> MatryoshkaTrainingArguments:
    return MatryoshkaTrainingArguments(
        output_dir=args.output_dir, max_steps=args.max_steps, learning_rate=args.learning_rate, seed=args.seed,
        per_device_train_batch_size=args.per_device_train_batch_size, per_device_eval_batch_size=256,
        warmup_steps=0.1, weight_decay=0.01, max_grad_norm=0.0, lr_scheduler_type="linear", logging_steps=25,
        max_seq_length=args.max_seq_length, anchor_column=QUERY, positive_column=DOCUMENT, symmetric=False,
        temperature=0.05, train_sampling_strategy="group_by_length", bf16=bf16, save_strategy="no",
        eval_strategy="no", report_to="none",
    )


def _table(results: dict[str, dict[str, float]]) -> str:
    by_dim = {label: group_by_dim(values) for label, values in results.items()}
    lines = ["| dim | " + " | ".join(COLUMNS[label] for label in by_dim) + " |", "|---" * (len(by_dim) + 1) + "|"]
    for dim in sorted(by_dim["MRL"]):
        cells = [f"{100 * by_dim[label][dim][METRIC]:.2f}" if dim in by_dim[label] else "-" for label in by_dim]
        lines.append(f"| {dim} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _plot(results: dict[str, dict[str, float]], path: Path) -> None:
    from matplotlib.figure import Figure  # no pyplot: no GUI backend involved

    figure = Figure(figsize=(6.5, 4.2))
    axis = figure.subplots()
    percent = {COLUMNS[label]: {key: 100 * value for key, value in values.items()} for label, values in results.items()}
    draw_metric_vs_dim(axis, percent, METRIC, "WordNet reverse dictionary, held-out definitions")
    axis.set_ylabel(f"{METRIC} (%)")
    save_figure(figure, path)


def run_text_demo(args) -> dict:
    """Trains both models, scores them and the baselines per dim, times adaptive retrieval; writes and returns
    results.json. `args`: `hf-mrl demo`'s flags, checked (`demo.check_args`)."""
    started = time.perf_counter()
    if args.num_threads is not None:
        torch.set_num_threads(args.num_threads)
    model_path = args.model_name_or_path or default_text_model()
    bf16 = bf16_is_faster() if args.bf16.lower() == "auto" else args.bf16.lower() == "true"
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    pairs = load_wordnet_pairs("word", seed=args.seed)
    train = pairs["train"].remove_columns("synset")
    held_out = pairs["test"]
    if args.eval_pairs is not None:
        held_out = held_out.shuffle(seed=args.seed).select(range(min(args.eval_pairs, len(held_out))))
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    evaluator = reverse_dictionary_evaluator(held_out, tokenizer, args.max_seq_length, args.num_queries, args.seed)
    sizes = {"train_pairs": len(train), "eval_pairs": len(held_out), "queries": len(evaluator.queries),
             "words": len(evaluator.corpus)}
    print(f"WordNet reverse dictionary: {sizes['train_pairs']:,} training pairs; {sizes['queries']:,} held-out "
          f"definitions search the {sizes['words']:,} words of {sizes['eval_pairs']:,} held-out pairs (split by "
          f"synset). Both models start "
          f"from {model_path}; {args.max_steps} steps of {args.per_device_train_batch_size} pairs each, "
          f"{'bf16' if bf16 else 'float32'}.", flush=True)

    results, embeddings, seconds, trainers, dims = {}, {}, {}, {}, None
    for label in ("MRL", "plain"):
        set_seed(args.seed)  # the same batches for both
        model = MatryoshkaModel.from_backbone(model_path, **({} if dims is None else {"matryoshka_dims": [dims[-1]]}))
        dims = dims or model.config.matryoshka_dims
        trainer = MatryoshkaTrainer(model=model, args=_training_args(args, bf16), train_dataset=train,
                                    processing_class=tokenizer, name="wordnet")
        print(f"\nTraining {label} (contrastive loss at {'every nesting dim' if label == 'MRL' else f'{dims[-1]} only'}):",
              flush=True)
        seconds[label] = trainer.train().metrics["train_runtime"]
        model.eval()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            embeddings[label] = evaluator.encode(model)
        results[label] = evaluator.compute_metrics(**embeddings[label], dims=dims)
        trainers[label] = trainer
    pca_dims = [dim for dim in dims if dim <= sizes["words"]]  # no more components than words
    pca = fit_baseline("pca", embeddings["plain"]["corpus_embeddings"], pca_dims)
    results["plain + PCA"] = evaluator.compute_metrics(
        pca.transform(embeddings["plain"]["query_embeddings"]), pca.transform(embeddings["plain"]["corpus_embeddings"]),
        dims=pca_dims)
    table, margin = _table(results), margins(results)
    print(f"\nHeld-out {METRIC} (%) at each embedding dim k ({sizes['queries']:,} definitions, {sizes['words']:,} words):\n"
          f"{table}\n\nMRL minus the better baseline, {METRIC} points: "
          + ", ".join(f"{value:+.2f} at {dim} dims" for dim, value in margin.items()), flush=True)

    retrieval_started = time.perf_counter()
    retrieval = adaptive_retrieval_report(
        embeddings["MRL"]["corpus_embeddings"], embeddings["MRL"]["query_embeddings"], dims=dims,
        relevant_ids=evaluator.relevant_ids, shortlist_dims=[dim for dim in dims[:-1] if dim <= 64])
    best = fastest_adaptive_setting(retrieval, equal_quality=EQUAL_QUALITY)
    exact = retrieval[0]
    verdict = "no adaptive setting reaches it" if best is None else (
        f"{describe_search(best)}: recall@10 {100 * best['recall_at_k']:.2f}%, {best['qps']:,.0f} queries/s, "
        f"{best['speedup']:.1f}x exact search")
    print(f"\nWhat the nesting buys at deployment (MRL embeddings; {sizes['queries']:,} definitions as queries over the "
          f"{sizes['words']:,} words, top 10):\n{format_deployment_report({'retrieval': retrieval})}\n\n"
          f"Fastest search at equal recall@10 (within {100 * EQUAL_QUALITY:.1f} point of exact search's "
          f"{100 * exact['recall_at_k']:.2f}%, {exact['qps']:,.0f} queries/s): {verdict}.", flush=True)
    deployment = {"retrieval": retrieval}
    save_results(deployment, output_dir / "deployment.json")
    plot_deployment(deployment, output_dir / "deployment.png")
    retrieval_seconds = time.perf_counter() - retrieval_started

    trainers["MRL"].save_model(results=results["MRL"], metrics=[METRIC], description=(
        "all-MiniLM-L6-v2 fine-tuned by `hf-mrl demo` on WordNet's reverse dictionary (definition -> word) with the "
        f"Matryoshka contrastive loss at {', '.join(map(str, dims))} dims."))
    _plot(results, output_dir / "recall_vs_dim.png")
    timings = {"train_seconds": {label: round(value, 1) for label, value in seconds.items()},
               "retrieval_seconds": round(retrieval_seconds, 1), "total_seconds": round(time.perf_counter() - started, 1)}
    summary = {
        "settings": {key: value for key, value in vars(args).items() if key != "handler"}, "data": "wordnet",
        "model": model_path, "bf16": bf16, "dims": dims, "sizes": sizes, "metric": METRIC, "results": results,
        "table": table, "margin_vs_best_baseline": margin,
        "retrieval_speedup": None if best is None else round(best["speedup"], 2), "deployment": deployment,
        "timings": timings,
    }
    save_results(summary, output_dir / "results.json")
    print(f"\nTraining took {seconds['MRL']:.0f} s (MRL) and {seconds['plain']:.0f} s (plain), retrieval "
          f"{retrieval_seconds:.0f} s, the whole demo {timings['total_seconds']:.0f} s. Wrote model/, results.json, "
          f"recall_vs_dim.png, deployment.json and deployment.png to {output_dir}.", flush=True)
    return summary
