"""Matryoshka Representation Learning in a few minutes on a CPU: train a small ViT on Fashion-MNIST with
nested heads at 8, 16, 32, 64 and 128 dims, and the same ViT trained the usual way (one head at the full
dim) with the same budget; then compare both at every size of the embedding.

The default budget, 800 steps of 128 images per model (1.7 epochs), took 166 s end to end on an idle 2-core
machine (78 s + 70 s of training); on cores shared with other jobs it took up to 10 minutes.

At each dim k the demo prints
- top-1 of the head at k: MRL's nested head, vs the plain model's full head cut to its first k inputs;
- 1-NN accuracy of the first k embedding features, renormalised (training images as the database).

It writes to --output_dir: `model/` (the MRL model, its image processor and a model card with the per-dim
results), `results.json` (both models, per dim, with timings) and `accuracy_vs_dim.png`.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from .data import ImageCollator, load_fashion_mnist
from .evaluation import MatryoshkaClassificationEvaluator, group_by_dim, save_results
from .nesting import default_matryoshka_dims
from .training import build_classifier, progress_bar, scratch_backbone_config

__all__ = ["add_arguments", "main", "run_demo", "truncated_head_logits"]

MRL_LABEL = "MRL"
PLAIN_LABEL = "plain"


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--output_dir", default="./hf_mrl_demo", help="where the model, results and plot go")
    parser.add_argument("--max_steps", type=int, default=800, help="optimizer steps per model (each of the two)")
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--hidden_size", type=int, default=128, help="= the full embedding dim")
    parser.add_argument("--num_layers", type=int, default=4)
    parser.add_argument("--patch_size", type=int, default=7)
    parser.add_argument("--limit_train", type=int, default=None, help="train on the first N images (default all)")
    parser.add_argument("--limit_eval", type=int, default=None, help="score the first N test images (default all)")
    parser.add_argument("--knn_database_size", type=int, default=10_000, help="training images for 1-NN")
    parser.add_argument("--num_threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def _check_args(args) -> None:
    for name in ("max_steps", "batch_size", "hidden_size", "num_layers", "patch_size", "knn_database_size"):
        value = getattr(args, name)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"`--{name}` must be a positive integer, got {value!r}.")
    for name in ("limit_train", "limit_eval", "num_threads"):
        value = getattr(args, name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
            raise ValueError(f"`--{name}` must be a positive integer, got {value!r}.")
    if not args.learning_rate > 0:
        raise ValueError(f"`--learning_rate` must be positive, got {args.learning_rate!r}.")
    if args.hidden_size < 8 or args.hidden_size % 4:
        raise ValueError(f"`--hidden_size` must be a multiple of 4 (attention heads), at least 8; got {args.hidden_size}.")
    if 28 % args.patch_size:
        raise ValueError(f"`--patch_size` must divide the image size 28, got {args.patch_size}.")


def truncated_head_logits(head: torch.nn.Linear, embeddings: np.ndarray, dim: int) -> np.ndarray:
    """What plain truncation gives a non-MRL classifier: its full-dim head applied to the first `dim`
    features only, `z[:, :dim] @ W[:, :dim].T + b`. (n, d) embeddings -> (n, num_labels) logits."""
    features = torch.from_numpy(embeddings[:, :dim]).to(head.weight)
    with torch.no_grad():
        logits = features @ head.weight[:, :dim].T
        if head.bias is not None:
            logits = logits + head.bias
    return logits.float().cpu().numpy()


def _train(model, dataset, collator, args, label: str) -> float:
    """`args.max_steps` AdamW steps (cosine schedule, 5% warm-up), epochs reshuffled; returns seconds."""
    from accelerate import Accelerator
    from transformers import get_scheduler

    accelerator = Accelerator()
    generator = torch.Generator().manual_seed(args.seed)
    loader = DataLoader(dataset, batch_size=args.batch_size, shuffle=True, collate_fn=collator, generator=generator)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=0.05)
    scheduler = get_scheduler(
        "cosine", optimizer, num_warmup_steps=max(1, args.max_steps // 20), num_training_steps=args.max_steps
    )
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    model.train()
    bar = progress_bar(accelerator, args.max_steps, desc=f"Training {label}")
    started, step = time.perf_counter(), 0
    while step < args.max_steps:
        for batch in loader:
            loss = model(**batch).loss
            accelerator.backward(loss)
            accelerator.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            step += 1
            bar.update(1)
            if step % 20 == 0:
                bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
            if step == args.max_steps:
                break
    bar.close()
    model.eval()
    return time.perf_counter() - started


def _plain_results(model, evaluator, dims: list[int]) -> dict[str, float]:
    """The plain model scored like MRL: truncated embeddings for 1-NN, its full head cut to k for top-1."""
    inputs = evaluator.encode(model)
    head = model.heads.heads[0]
    return evaluator.compute_metrics(
        embeddings=inputs["embeddings"],
        reference_embeddings=inputs["reference_embeddings"],
        logits_at=lambda dim: truncated_head_logits(head, inputs["embeddings"], dim),
        dims=dims,
    )


def _print_table(by_label: dict[str, dict[str, float]]) -> str:
    mrl, plain = (group_by_dim(by_label[label]) for label in (MRL_LABEL, PLAIN_LABEL))
    lines = [
        "| dim | MRL top-1 | plain top-1 (head cut to k) | MRL 1-NN | plain 1-NN (truncated) |",
        "|---|---|---|---|---|",
    ]
    for dim in sorted(mrl):
        cells = [mrl[dim].get("top1"), plain[dim].get("top1"), mrl[dim].get("1nn"), plain[dim].get("1nn")]
        lines.append(f"| {dim} | " + " | ".join("-" if value is None else f"{100 * value:.2f}" for value in cells) + " |")
    table = "\n".join(lines)
    print(table, flush=True)
    return table


def _plot(by_label: dict[str, dict[str, float]], path: Path) -> None:
    """Top-1 and 1-NN against dim (log2 axis), MRL vs plain, in one PNG written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for axis, metric, title in zip(axes, ("top1", "1nn"), ("top-1 of the head at k", "1-NN of the first k dims")):
        for label, style in ((MRL_LABEL, "o-"), (PLAIN_LABEL, "s--")):
            points = sorted((dim, row[metric]) for dim, row in group_by_dim(by_label[label]).items() if metric in row)
            axis.plot([dim for dim, _ in points], [100 * value for _, value in points], style, label=label)
        axis.set_xscale("log", base=2)
        axis.set_xlabel("embedding dim k")
        axis.set_ylabel("accuracy (%)")
        axis.set_title(f"Fashion-MNIST: {title}")
        axis.grid(True, alpha=0.3)
        axis.legend()
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".png")
    with os.fdopen(handle, "wb") as file:
        figure.savefig(file, format="png", dpi=120, bbox_inches="tight")
    plt.close(figure)
    os.replace(temporary, path)


def run_demo(args) -> dict:
    """Trains both models, evaluates them at every dim, writes the outputs; returns the results dict."""
    from transformers import ViTImageProcessorPil

    from .hub import save_with_card

    _check_args(args)
    if args.num_threads is not None:
        torch.set_num_threads(args.num_threads)
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    train = load_fashion_mnist("train", limit=args.limit_train)
    test = load_fashion_mnist("test", limit=args.limit_eval)
    database = train.select(range(min(args.knn_database_size, len(train))))
    collator = ImageCollator(image_size=28, num_channels=1, mean=0.5, std=0.5)
    dims = default_matryoshka_dims(args.hidden_size)
    evaluator = MatryoshkaClassificationEvaluator(
        test, reference_dataset=database, collate_fn=collator, dims=dims, top_k=(1,), knn_k=(1,),
        name="fashion-mnist", batch_size=256,
    )
    backbone = scratch_backbone_config(
        "vit", args.hidden_size, args.num_layers, num_attention_heads=4, patch_size=args.patch_size
    )
    print(
        f"Fashion-MNIST: {len(train)} training images, {len(test)} test images; ViT hidden {args.hidden_size}, "
        f"{args.num_layers} layers, patch {args.patch_size}; {args.max_steps} steps of {args.batch_size} per model.",
        flush=True,
    )
    results, seconds, models = {}, {}, {}
    for label, heads in ((MRL_LABEL, "mrl"), (PLAIN_LABEL, "ff")):
        torch.manual_seed(args.seed)  # both models start from the same backbone weights
        model = build_classifier(10, heads, backbone_config=backbone, matryoshka_dims=dims if heads == "mrl" else None)
        seconds[label] = _train(model, train, collator, args, label)
        models[label] = model
        results[label] = evaluator(model) if heads == "mrl" else _plain_results(model, evaluator, dims)

    print(f"\nTest accuracy (%) at each embedding dim ({len(test)} test images, 1-NN over {len(database)} training images):")
    table = _print_table(results)
    processor = ViTImageProcessorPil(size={"height": 28, "width": 28}, image_mean=[0.5], image_std=[0.5])
    save_with_card(
        models[MRL_LABEL], output_dir / "model", results=results[MRL_LABEL], processor=processor,
        description="A small ViT trained from scratch on Fashion-MNIST by `hf-mrl demo` (nested heads at "
        f"{', '.join(map(str, dims))} dims).", metrics=["top1", "1nn"],
    )
    summary = {
        "settings": {key: value for key, value in vars(args).items() if key != "handler"},
        "dims": dims,
        "train_seconds": {label: round(value, 1) for label, value in seconds.items()},
        "seconds_per_step": {label: round(value / args.max_steps, 4) for label, value in seconds.items()},
        "results": results,
        "table": table,
    }
    save_results(summary, output_dir / "results.json")
    _plot(results, output_dir / "accuracy_vs_dim.png")
    print(
        f"\nTraining took {seconds[MRL_LABEL]:.0f} s (MRL) and {seconds[PLAIN_LABEL]:.0f} s (plain). Wrote "
        f"{output_dir / 'model'}, {output_dir / 'results.json'} and {output_dir / 'accuracy_vs_dim.png'}.",
        flush=True,
    )
    return summary


def main(args: argparse.Namespace) -> int:
    run_demo(args)
    return 0


if __name__ == "__main__":
    main(add_arguments(argparse.ArgumentParser(description=__doc__.split("\n\n")[0])).parse_args())
