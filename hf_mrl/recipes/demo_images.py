"""`hf-mrl demo --data fashion-mnist`: `MatryoshkaTrainer` trains a small ViT on
Fashion-MNIST with nested heads at 8, 16, 32, 64 and 128 dims (MRL), and the same ViT with one head at the full dim
("plain"), same budget. 10% of the training images are held out (seeded) for validation; the first
--knn_database_size of the rest are the 1-NN and retrieval database; results are on the test split.

Printed: per dim k, top-1 of the head at k (MRL's nested head vs plain's full head cut to its first k inputs) and
1-NN of the first k features, renormalised; where MRL leads and trails, in points; then `deployment_report` on the
MRL model: a cascade over the nested heads (thresholds fit on validation) vs the full head, and adaptive retrieval
(low-dim shortlist, full-dim re-rank) vs exact full-dim search (queries/s, recall of the exact top 10).
Written to --output_dir: `model/` (MRL model, image processor, card), `results.json` (both models per dim,
deployment, timings), `accuracy_vs_dim.png`, `deployment.json`, `deployment.png`.
"""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path

import numpy as np
import torch

from ..data import DataArguments, load_splits
from ..evaluation import deployment_report, format_deployment_report, group_by_dim, save_results
from ..evaluation.report import draw_metric_vs_dim, save_figure
from ..modeling.nesting import default_matryoshka_dims
from ..training import MatryoshkaTrainer, MatryoshkaTrainingArguments, build_classifier, scratch_backbone_config

__all__ = ["run_image_demo", "truncated_head_logits", "leads_and_trails"]

LABELS = {"MRL": "mrl", "plain": "ff"}  # printed label -> `build_classifier` heads
METRICS = {"top1": "top-1 of the head at k", "1nn": "1-NN of the first k dims"}


def truncated_head_logits(head: torch.nn.Linear, embeddings: np.ndarray, dim: int) -> np.ndarray:
    """What plain truncation gives a non-MRL classifier: its full-dim head applied to the first `dim`
    features only, `z[:, :dim] @ W[:, :dim].T + b`. (n, d) embeddings -> (n, num_labels) logits."""
    with torch.no_grad():
        features = torch.from_numpy(embeddings[:, :dim]).to(head.weight)
        return torch.nn.functional.linear(features, head.weight[:, :dim], head.bias).float().cpu().numpy()


def leads_and_trails(mrl: dict[str, float], plain: dict[str, float], metric: str) -> str:
    """'leads at 8 (+61.20), 16 (+30.10); trails at 128 (-0.30); level at 64': MRL minus plain in accuracy points
    per dim (of the flat results of each), rounded to 0.01."""
    mrl, plain = group_by_dim(mrl), group_by_dim(plain)
    parts = {"leads": [], "trails": [], "level": []}
    for dim in sorted(mrl):
        diff = round(100 * (mrl[dim][metric] - plain[dim][metric]), 2)
        cell = f"{dim} ({diff:+.2f})" if diff else str(dim)
        parts["leads" if diff > 0 else "trails" if diff < 0 else "level"].append(cell)
    return "; ".join(f"{word} at {', '.join(cells)}" for word, cells in parts.items() if cells)


def _train(label: str, heads: str, splits, evaluator_data, dims: list[int], args) -> tuple[MatryoshkaTrainer, dict, float]:
    """One model through `MatryoshkaTrainer` (AdamW, cosine schedule, 5% warm-up), then its per-dim results and
    its training seconds."""
    torch.manual_seed(args.seed)  # both models start from the same backbone weights
    backbone = scratch_backbone_config("vit", args.hidden_size, args.num_layers, 4, patch_size=args.patch_size)
    model = build_classifier(10, heads, backbone_config=backbone, matryoshka_dims=dims if heads == "mrl" else None)
    training_args = MatryoshkaTrainingArguments(
        output_dir=args.output_dir, max_steps=args.max_steps, learning_rate=args.learning_rate, seed=args.seed,
        per_device_train_batch_size=args.per_device_train_batch_size, per_device_eval_batch_size=256, logging_steps=20,
        weight_decay=0.05, lr_scheduler_type="cosine", warmup_steps=0.05, save_strategy="no", report_to="none",
        optim="adamw_torch",  # torch.optim.AdamW (foreach), as the demo has always trained
    )
    trainer = MatryoshkaTrainer(model=model, args=training_args, train_dataset=splits.train, name="fashion-mnist")
    heads_text = f"nested heads at {', '.join(map(str, dims))}" if heads == "mrl" else "one head at the full dim"
    print(f"\nTraining {label} ({heads_text}):", flush=True)
    seconds = trainer.train().metrics["train_runtime"]
    evaluator = trainer.get_evaluator(*evaluator_data)
    if heads == "mrl":
        return trainer, evaluator(model), seconds
    inputs = evaluator.encode(model)  # the plain model scored like MRL, its full head cut to k for top-1
    return trainer, evaluator.compute_metrics(
        embeddings=inputs["embeddings"], reference_embeddings=inputs["reference_embeddings"], dims=dims,
        logits_at=partial(truncated_head_logits, model.heads.heads[0], inputs["embeddings"])), seconds


def _table(results: dict[str, dict[str, float]]) -> str:
    mrl, plain = group_by_dim(results["MRL"]), group_by_dim(results["plain"])
    lines = ["| dim | MRL top-1 | plain top-1 (head cut to k) | MRL 1-NN | plain 1-NN (truncated) |", "|---" * 5 + "|"]
    for dim in sorted(mrl):
        cells = [row[dim].get(metric) for metric in METRICS for row in (mrl, plain)]
        lines.append(f"| {dim} | " + " | ".join("-" if cell is None else f"{100 * cell:.2f}" for cell in cells) + " |")
    return "\n".join(lines)


def _plot(results: dict[str, dict[str, float]], path: Path) -> None:
    """Top-1 and 1-NN against dim (log2 axis), MRL vs plain, in one PNG written atomically."""
    from matplotlib.figure import Figure  # no pyplot: no GUI backend involved

    figure = Figure(figsize=(10, 3.8))
    axes = figure.subplots(1, 2)
    percent = {label: {key: 100 * value for key, value in values.items()} for label, values in results.items()}
    for axis, (metric, title) in zip(axes, METRICS.items()):
        draw_metric_vs_dim(axis, percent, metric, f"Fashion-MNIST: {title}")
        axis.set_ylabel("test accuracy (%)")
    save_figure(figure, path)


def run_image_demo(args) -> dict:
    """Trains both models, scores them per dim and the MRL model at deployment; writes and returns results.json.
    `args`: `hf-mrl demo`'s flags, checked (`demo.check_args`)."""
    started = time.perf_counter()
    if args.num_threads is not None:
        torch.set_num_threads(args.num_threads)
    splits = load_splits(DataArguments(  # limit_eval caps the validation and the test split
        dataset_name="fashion-mnist", validation_split_percentage=args.validation_split_percentage,
        max_train_samples=args.limit_train, max_eval_samples=args.limit_eval), seed=args.seed)
    database = splits.train.select(range(min(args.knn_database_size, len(splits.train))))
    queries = min(args.retrieval_queries, len(splits.test))
    sizes = {"train": len(splits.train), "validation": len(splits.eval), "test": len(splits.test),
             "database": len(database), "retrieval_queries": queries}
    dims, output_dir = default_matryoshka_dims(args.hidden_size), Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    print(f"Fashion-MNIST: {sizes['train']} training images, {sizes['validation']} validation images (held out of "
          f"training), {sizes['test']} test images; ViT hidden {args.hidden_size}, {args.num_layers} layers, patch "
          f"{args.patch_size}; {args.max_steps} steps of {args.per_device_train_batch_size} per model.", flush=True)
    trainers, results, seconds = {}, {}, {}
    for label, heads in LABELS.items():
        trainers[label], results[label], seconds[label] = _train(label, heads, splits, (splits.test, database), dims, args)
    table = _table(results)
    verdict = {metric: leads_and_trails(results["MRL"], results["plain"], metric) for metric in METRICS}
    print(f"\nTest accuracy (%) at each embedding dim ({sizes['test']} test images, 1-NN over {sizes['database']} "
          f"training images):\n{table}\n\nMRL vs plain, accuracy points (MRL minus plain) at each dim:\n"
          + "\n".join(f"- {METRICS[metric]}: MRL {text}" for metric, text in verdict.items()), flush=True)

    trainer, deployment_started = trainers["MRL"], time.perf_counter()
    deployment = deployment_report(trainer.model, splits.eval, splits.test, database, trainer.data_collator,
                                   batch_size=256, output_dir=output_dir, max_queries=queries)
    deployment_seconds = time.perf_counter() - deployment_started
    print(f"\nWhat the nesting buys at deployment (the MRL model alone; cascade thresholds fit on the "
          f"{sizes['validation']} validation images, scored on the {sizes['test']} test images; retrieval: {queries} "
          f"test images as queries over the {sizes['database']} database images, top 10):\n"
          f"{format_deployment_report(deployment)}", flush=True)
    trainer.save_model(results=results["MRL"], metrics=list(METRICS), description="A small ViT trained from scratch "
                       f"on Fashion-MNIST by `hf-mrl demo` (nested heads at {', '.join(map(str, dims))} dims).")
    _plot(results, output_dir / "accuracy_vs_dim.png")
    timings = {"train_seconds": {label: round(value, 1) for label, value in seconds.items()},
               "seconds_per_step": {label: round(value / args.max_steps, 4) for label, value in seconds.items()},
               "deployment_seconds": round(deployment_seconds, 1),
               "total_seconds": round(time.perf_counter() - started, 1)}
    summary = {"settings": {key: value for key, value in vars(args).items() if key != "handler"}, "dims": dims,
               "splits": sizes, "results": results, "table": table, "mrl_vs_plain": verdict, "deployment": deployment,
               "timings": timings}
    save_results(summary, output_dir / "results.json")
    print(f"\nTraining took {seconds['MRL']:.0f} s (MRL) and {seconds['plain']:.0f} s (plain), the deployment report "
          f"{deployment_seconds:.0f} s, the whole demo {timings['total_seconds']:.0f} s. Wrote model/, results.json, "
          f"accuracy_vs_dim.png, deployment.json and deployment.png to {output_dir}.", flush=True)
    return summary
