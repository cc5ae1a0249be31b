#!/usr/bin/env python
"""Supervised Matryoshka training of a classifier: MRL heads (one per nesting dim), MRL-E heads (one shared
matrix) or a fixed-feature (FF) baseline trained at one dim, on a pretrained encoder or a ViT / BERT from scratch.
The flags are transformers' `TrainingArguments` plus `hf_mrl.data.DataArguments` and
`hf_mrl.training.SupervisedModelArguments` (`--help` lists them). The same command runs on a CPU, one GPU or
several (`accelerate launch`):

    # your own data: a CSV with text and string labels, all-MiniLM-L6-v2 (or any encoder), 10% held out
    python scripts/train_supervised.py --train_file reviews.csv --text_column review --label_column sentiment \
        --model_name_or_path sentence-transformers/all-MiniLM-L6-v2 --num_train_epochs 3 --output_dir runs/reviews

    # Fashion-MNIST, a small ViT from scratch, MRL heads at 8..128, then the FF baseline at 16 dims
    python scripts/train_supervised.py --dataset_name fashion-mnist --backbone vit --hidden_size 128 \
        --num_layers 4 --patch_size 7 --matryoshka_dims 8 16 32 64 128 --learning_rate 1e-3 \
        --per_device_train_batch_size 128 --num_train_epochs 3 --output_dir runs/fmnist-mrl
    python scripts/train_supervised.py ... --heads ff --ff_dim 16 --output_dir runs/fmnist-ff16

    # two processes, bf16, a checkpoint every 200 steps; after a crash, continue exactly where it stopped
    accelerate launch --multi_gpu --num_processes 2 scripts/train_supervised.py ... --bf16 --save_steps 200 \
        --save_total_limit 2 --resume_from_checkpoint latest

Writes to --output_dir: `checkpoint-<step>/`, `model/` (weights, tokenizer or image processor with the max length,
model card with per-dim results), `results.json` (final top-1 and 1-NN per dim, history, timings) and
`accuracy_vs_dim.png`. 1-NN uses the training split as the database (leave-one-out within a split otherwise).
"""

import sys

from hf_mrl.data import DataArguments
from hf_mrl.recipes.training import SupervisedModelArguments, run_supervised
from hf_mrl.training import MatryoshkaTrainingArguments
from hf_mrl.training.launch import parse_arguments, run_script


def main(argv=None) -> dict:
    return run_supervised(*parse_arguments((SupervisedModelArguments, DataArguments, MatryoshkaTrainingArguments), argv))


if __name__ == "__main__":
    sys.exit(run_script(main, prog="train_supervised.py"))
