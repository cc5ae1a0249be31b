#!/usr/bin/env python
"""Contrastive Matryoshka training: one shared text tower on text pairs (`--task pairs`), or an image-text dual
encoder (`--task image-text`), with the contrastive loss at every nesting dim. The flags are transformers'
`TrainingArguments` plus `hf_mrl.data.DataArguments` and `hf_mrl.training.ContrastiveModelArguments`:

    # your own pairs: a JSON-lines file {"anchor": ..., "positive": ...}, all-MiniLM-L6-v2 (the local default)
    python scripts/train_contrastive.py --train_file pairs.jsonl --max_steps 200 --output_dir runs/pairs

    # WordNet definition -> word, one direction (--loss mrl | plain | st-mrl)
    python scripts/train_contrastive.py --dataset_name wordnet-pairs --anchor_column positive \
        --positive_column anchor --no_symmetric --loss mrl --max_steps 400 --output_dir runs/wordnet-mrl

    # image-text: a from-scratch ViT + all-MiniLM-L6-v2 on emoji pictures and their names
    python scripts/train_contrastive.py --task image-text --dataset_name emoji --temperature 0.07 \
        --vision_config '{"image_size": 32, "patch_size": 8, "num_channels": 3, "hidden_size": 128,
                          "num_hidden_layers": 4, "num_attention_heads": 4, "intermediate_size": 512}' \
        --output_dir runs/emoji

    # several pair datasets, each batch from one (its columns read per file; --multi_dataset_batch_sampler
    # proportional | round_robin), no text twice in a batch, evaluated on one file
    python scripts/train_contrastive.py --train_file questions.jsonl titles.jsonl --validation_file dev.jsonl \
        --batch_sampler no_duplicates --max_steps 200 --output_dir runs/multi

    # several processes (the loss sees the global batch), bf16, resumable
    accelerate launch --multi_gpu --num_processes 2 scripts/train_contrastive.py ... --bf16 --save_steps 100 \
        --resume_from_checkpoint latest

`--loss st-mrl` trains the same weights with sentence-transformers' MatryoshkaLoss(MultipleNegativesRankingLoss);
`--max_steps 0` scores the untrained model. Writes `model/`, `results.json` and `recall_vs_dim.png` to --output_dir;
with several train files the loss history holds each dataset's loss (`loss_<file name>`).
"""

import sys

from hf_mrl.data import DataArguments
from hf_mrl.recipes.training import ContrastiveModelArguments, run_contrastive
from hf_mrl.training import MatryoshkaTrainingArguments
from hf_mrl.training.launch import parse_arguments, run_script


def main(argv=None) -> dict:
    return run_contrastive(*parse_arguments((ContrastiveModelArguments, DataArguments, MatryoshkaTrainingArguments), argv))


if __name__ == "__main__":
    sys.exit(run_script(main, prog="train_contrastive.py"))
