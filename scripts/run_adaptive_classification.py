"""Adaptive classification report: a confidence cascade over a Matryoshka classifier's nested heads.

    python scripts/run_adaptive_classification.py --model PATH/TO/fmnist-mrl/model --output_dir results/adaptive

The Fashion-MNIST test split is cut in two halves by a fixed seed: thresholds are fit on one half
(target: the full-dim head's accuracy there), then the cascade is reported on the other half:
accuracy, expected dims, the ratio full dim / expected dims, and where inputs stop. Writes
`adaptive_classification.json`, a markdown table and a plot of the stop shares.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from transformers import AutoImageProcessor

from hf_mrl import ImageCollator, MatryoshkaForImageClassification, load_fashion_mnist
from hf_mrl.evaluation import adaptive_classification_report, encode_dataset, save_results, top_k_accuracy


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="folder of a MatryoshkaForImageClassification trained on Fashion-MNIST")
    parser.add_argument("--output_dir", default="results/adaptive_classification")
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tolerance", type=float, default=0.0, help="accuracy points the cascade may lose on validation")
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    model_dir = Path(args.model)
    if not (model_dir / "config.json").is_file():
        raise ValueError(f"`--model` must be a saved model folder with a config.json, got {str(model_dir)!r}.")
    model = MatryoshkaForImageClassification.from_pretrained(model_dir).eval()
    dims = model.config.matryoshka_dims
    collator = ImageCollator(AutoImageProcessor.from_pretrained(model_dir))
    test = load_fashion_mnist(split="test")
    encoded = encode_dataset(model, test, collator, batch_size=args.batch_size, description="Encoding test")
    logits, labels = encoded.matryoshka_logits, np.asarray(test["label"])

    order = np.random.default_rng(args.seed).permutation(len(labels))
    val, held_out = order[: len(order) // 2], order[len(order) // 2 :]
    target = max(0.0, top_k_accuracy(logits[-1, val], labels[val]) - args.tolerance / 100)
    report = adaptive_classification_report(
        logits[:, val], labels[val], logits[:, held_out], labels[held_out], dims, target_accuracy=target
    )

    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    save_results(report, output / "adaptive_classification.json")
    lines = [
        f"Cascade on {len(held_out)} held-out Fashion-MNIST test images (thresholds fit on the other {len(val)}).",
        "",
        "| | accuracy | expected dims |",
        "|---|---|---|",
        f"| full-dim head ({dims[-1]}) | {100 * report['full_accuracy']:.2f} | {dims[-1]} |",
        f"| cascade | {100 * report['cascade_accuracy']:.2f} | {report['cascade_expected_dim']:.1f} |",
        "",
        f"Full dim / expected dims: {dims[-1] / report['cascade_expected_dim']:.1f}x.",
        "",
        "| dim | head accuracy | share stopping here | threshold |",
        "|---|---|---|---|",
    ]
    for dim in dims:
        threshold = report["thresholds"].get(dim)
        lines.append(
            f"| {dim} | {100 * report['accuracy_at_dim'][dim]:.2f} | {100 * report['stop_fraction'][dim]:.1f}% | "
            f"{'-' if threshold is None else f'{threshold:.3f}'} |"
        )
    (output / "adaptive_classification.md").write_text("\n".join(lines) + "\n")
    _plot(report, dims, output / "adaptive_classification.png")
    print("\n".join(lines))
    return report


def _plot(report: dict, dims: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 3.5))
    axis.bar([str(dim) for dim in dims], [100 * report["stop_fraction"][dim] for dim in dims])
    axis.set_xlabel("dim where the cascade stops")
    axis.set_ylabel("share of inputs (%)")
    axis.set_title(
        f"cascade {100 * report['cascade_accuracy']:.2f}% at {report['cascade_expected_dim']:.1f} dims "
        f"(full {dims[-1]}: {100 * report['full_accuracy']:.2f}%)"
    )
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


if __name__ == "__main__":
    main()
