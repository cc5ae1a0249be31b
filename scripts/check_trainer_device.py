#!/usr/bin/env python
"""`MatryoshkaTrainer` with the `TrainingArguments` that need an accelerator, each on a tiny ViT classifier for a few
steps: mixed precision (bf16, fp16), tf32, gradient checkpointing, torch_compile, FSDP (through `accelerate launch`,
one process per GPU) and DeepSpeed ZeRO-2 (when installed). Prints one line per check (ok / FAILED / skipped, with
the last loss) and exits non-zero when one failed. `scripts/device_check.sh` runs it; on the CPU only the checks
that mean something there run (bf16, gradient checkpointing).

    python scripts/check_trainer_device.py --device cuda
    python scripts/check_trainer_device.py --device cpu
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import datasets
import numpy as np
import torch
from PIL import Image
from transformers import ViTConfig

from hf_mrl import MatryoshkaConfig, MatryoshkaForImageClassification
from hf_mrl.training import MatryoshkaTrainer, MatryoshkaTrainingArguments

TRAIN_SCRIPT = Path(__file__).with_name("train_supervised.py")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", choices=["cpu", "cuda"])
    parser.add_argument("--steps", type=int, default=4)
    return parser.parse_args(argv)


def _rows(count: int = 64) -> datasets.Dataset:
    rng = np.random.default_rng(0)
    labels = [index % 4 for index in range(count)]
    images = [Image.fromarray(np.clip(rng.normal(40 + 50 * label, 30, (28, 28)), 0, 255).astype(np.uint8)) for label in labels]
    return datasets.Dataset.from_dict({"image": images, "label": labels},
                                      features=datasets.Features({"image": datasets.Image(),
                                                                  "label": datasets.ClassLabel(num_classes=4)}))


def _train(output_dir: str, steps: int, **flags) -> float:
    torch.manual_seed(0)
    backbone = ViTConfig(image_size=28, patch_size=7, num_channels=1, hidden_size=64, num_hidden_layers=2,
                         num_attention_heads=2, intermediate_size=128)
    model = MatryoshkaForImageClassification(MatryoshkaConfig(backbone_config=backbone, num_labels=4,
                                                              matryoshka_dims=[8, 16, 64]))
    args = MatryoshkaTrainingArguments(output_dir=output_dir, max_steps=steps, per_device_train_batch_size=16,
                                       learning_rate=1e-3, logging_steps=1, save_strategy="no", report_to="none",
                                       disable_tqdm=True, **flags)
    trainer = MatryoshkaTrainer(model=model, args=args, train_dataset=_rows())
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    if not losses or not all(math.isfinite(loss) for loss in losses):
        raise RuntimeError(f"losses {losses}")
    return losses[-1]


def _launch(output_dir: str, steps: int, *flags: str) -> float:
    """`accelerate launch` (one process per GPU) of scripts/train_supervised.py with `flags`."""
    processes = str(max(1, torch.cuda.device_count()))
    command = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", processes, "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", str(TRAIN_SCRIPT), "--dataset_name", "fashion-mnist",
               "--backbone", "vit", "--hidden_size", "64", "--num_layers", "2", "--num_attention_heads", "2",
               "--max_train_samples", "256", "--max_eval_samples", "64", "--per_device_train_batch_size", "16",
               "--max_steps", str(steps), "--save_strategy", "no", "--output_dir", output_dir, *flags]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=900, env=dict(os.environ))
    if completed.returncode != 0:
        raise RuntimeError(completed.stderr.strip().splitlines()[-1] if completed.stderr.strip() else "failed")
    summary = json.loads((Path(output_dir) / "results.json").read_text())
    return summary["final"][next(iter(summary["final"]))]


def _zero2_config(output_dir: str) -> str:
    path = Path(output_dir) / "ds_zero2.json"
    path.write_text(json.dumps({"zero_optimization": {"stage": 2}, "train_micro_batch_size_per_gpu": "auto",
                                "gradient_accumulation_steps": "auto", "train_batch_size": "auto"}))
    return str(path)


def main(argv=None) -> int:
    args = parse_args(argv)
    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        print("check_trainer_device: --device cuda, but torch.cuda.is_available() is False", file=sys.stderr)
        return 2
    checks = {
        "bf16": lambda out: _train(out, args.steps, bf16=True),
        "gradient_checkpointing": lambda out: _train(out, args.steps, gradient_checkpointing=True),
    }
    if cuda:
        checks.update({
            "fp16": lambda out: _train(out, args.steps, fp16=True),
            "tf32": lambda out: _train(out, args.steps, tf32=True),
            "torch_compile": lambda out: _train(out, args.steps, torch_compile=True),
            "fsdp full_shard (accelerate launch)": lambda out: _launch(
                out, args.steps, "--fsdp", "full_shard auto_wrap",
                "--fsdp_config", json.dumps({"transformer_layer_cls_to_wrap": ["ViTLayer"]})),
            "deepspeed ZeRO-2 (accelerate launch)": None if importlib.util.find_spec("deepspeed") is None else (
                lambda out: _launch(out, args.steps, "--deepspeed", _zero2_config(out))),
        })
    failed = 0
    print("| check | result | last loss / final metric |")
    print("|---|---|---|")
    for name, check in checks.items():
        if check is None:
            print(f"| {name} | skipped (not installed: pip install 'hf_mrl[deepspeed]') | - |")
            continue
        with tempfile.TemporaryDirectory(prefix="check_trainer-") as output_dir:
            try:
                value = check(output_dir)
                print(f"| {name} | ok | {value:.4f} |", flush=True)
            except Exception as error:  # noqa: BLE001 - every check reports, then the exit status says
                failed = 1
                print(f"| {name} | FAILED: {str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__} | - |", flush=True)
    return failed


if __name__ == "__main__":
    sys.exit(main())
