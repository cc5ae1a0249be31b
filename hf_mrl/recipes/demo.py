"""`hf-mrl demo`: Matryoshka Representation Learning against what a user would do otherwise, in a few minutes on a
CPU, then what the nesting buys at deployment.

- `--data wordnet` (default, text): all-MiniLM-L6-v2 fine-tuned on WordNet's reverse dictionary (definition ->
  word) with the Matryoshka contrastive loss at 8, 16, ..., 384 dims (MRL), and the same model fine-tuned with the
  loss at 384 only ("plain"), same steps, batches and seed. Held-out definitions (split by synset) search the
  held-out words at every dim k: MRL's first k dims against the plain model's first k dims (truncation) and its
  top-k principal components (PCA, fit on the searched words), by recall@10. Then adaptive retrieval on the MRL
  embeddings (shortlist at a low dim, re-rank at 384) against exact 384-d search.
- `--data fashion-mnist` (images): a small ViT from scratch with nested heads against one full-dim head; top-1 of
  the heads and 1-NN per dim, then a confidence cascade and adaptive retrieval (see `demo_images`).

Written to --output_dir: `model/` (the MRL model, loadable by `from_pretrained` and sentence-transformers),
`results.json`, a metric-vs-dim plot, `deployment.json` and `deployment.png`.
"""

from __future__ import annotations

import argparse

from .demo_images import leads_and_trails, run_image_demo, truncated_head_logits
from .demo_text import run_text_demo

__all__ = ["DATA", "add_arguments", "main", "run_demo", "truncated_head_logits", "leads_and_trails"]

DATA = ("wordnet", "fashion-mnist")
# flag -> (type, default, help), training flags named as in `TrainingArguments`; ints are positive or default None.
# A default of None in DEFAULTS' keys is the data's own (DEFAULTS below).
FLAGS = {
    "data": (str, "wordnet", f"one of {list(DATA)}: text (MiniLM on WordNet) or images (a ViT on Fashion-MNIST)"),
    "output_dir": (str, "./hf_mrl_demo", "where the model, results and plots go"),
    "max_steps": (int, None, "optimizer steps per model, each of the two (default: wordnet 200, fashion-mnist 600)"),
    "per_device_train_batch_size": (int, None, "training pairs / images per step (default: wordnet 64, fashion-mnist 128)"),
    "learning_rate": (float, None, "peak learning rate, AdamW (default: wordnet 2e-4, fashion-mnist 1e-3)"),
    "seed": (int, 0, "seeds the splits, the new weights and the batch order"),
    "num_threads": (int, None, "torch CPU threads (default: torch's)"),
    # text
    "model_name_or_path": (str, None, "wordnet: the encoder to fine-tune (default: the local all-MiniLM-L6-v2)"),
    "max_seq_length": (int, 32, "wordnet: tokens per text (WordNet definitions are short)"),
    "bf16": (str, "auto", "wordnet: train and encode under bfloat16 autocast: true, false, or auto (when this CPU's "
                          "bf16 matrix products are measured faster than float32's)"),
    "eval_pairs": (int, None, "wordnet: held-out (word, definition) pairs whose words are searched (default: the whole "
                              "test split, about 20,000)"),
    "num_queries": (int, 2000, "wordnet: held-out definitions that search them (sampled, seeded)"),
    # images
    "hidden_size": (int, 128, "fashion-mnist: = the full embedding dim"),
    "num_layers": (int, 4, "fashion-mnist: ViT layers"),
    "patch_size": (int, 7, "fashion-mnist: ViT patch size (divides 28)"),
    "validation_split_percentage": (int, 10, "fashion-mnist: training images held out (seeded) to fit the cascade"),
    "limit_train": (int, None, "fashion-mnist: train on the first N images (default all)"),
    "limit_eval": (int, None, "fashion-mnist: use the first N validation and test images (default all)"),
    "knn_database_size": (int, 10_000, "fashion-mnist: training images searched by 1-NN and retrieval"),
    "retrieval_queries": (int, 2000, "fashion-mnist: test images used as timed retrieval queries"),
}
DEFAULTS = {
    "wordnet": {"max_steps": 200, "per_device_train_batch_size": 64, "learning_rate": 2e-4},
    "fashion-mnist": {"max_steps": 600, "per_device_train_batch_size": 128, "learning_rate": 1e-3},
}


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    for name, (kind, default, text) in FLAGS.items():
        aliases = ["--batch_size"] if name == "per_device_train_batch_size" else []
        parser.add_argument(f"--{name}", *aliases, dest=name, type=kind, default=default, help=text.replace("%", "%%"))
    return parser


def check_args(args) -> argparse.Namespace:
    """Validates every flag (naming the flag, the value and what is allowed) and fills the data's defaults."""
    if args.data not in DATA:
        raise ValueError(f"`--data` must be one of {list(DATA)}, got {args.data!r}.")
    for name, value in DEFAULTS[args.data].items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    for name, (kind, _, _) in FLAGS.items():
        value = getattr(args, name)
        if kind is int and name != "seed" and value is not None:
            if type(value) is not int or value <= 0:
                raise ValueError(f"`--{name}` must be a positive integer, got {value!r}.")
    for name, ok, allowed in [
        ("learning_rate", args.learning_rate > 0, "positive"),
        ("bf16", str(args.bf16).lower() in ("auto", "true", "false"), "true, false or auto"),
        ("hidden_size", args.hidden_size >= 8 and args.hidden_size % 4 == 0, "a multiple of 4 (attention heads), >= 8"),
        ("patch_size", 28 % args.patch_size == 0, "a divisor of the image size 28"),
        ("validation_split_percentage", args.validation_split_percentage <= 99, "1 to 99"),
        ("eval_pairs", args.eval_pairs is None or args.eval_pairs >= 100, "at least 100 (recall@10 over fewer words "
                                                                         "says little)"),
    ]:
        if not ok:
            raise ValueError(f"`--{name}` must be {allowed}, got {getattr(args, name)!r}.")
    return args


def run_demo(args) -> dict:
    """Runs the demo of `args.data`; returns what it writes to results.json."""
    check_args(args)
    return run_text_demo(args) if args.data == "wordnet" else run_image_demo(args)


def main(args: argparse.Namespace) -> int:
    run_demo(args)
    return 0


if __name__ == "__main__":
    main(add_arguments(argparse.ArgumentParser(description=__doc__.split("\n\n")[0])).parse_args())
