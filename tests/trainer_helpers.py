"""Tiny `MatryoshkaTrainer` runs shared by the trainer, checkpoint and file-safety tests (a ViT of hidden 16 on
random 28x28 images: a step takes milliseconds)."""

from pathlib import Path

import datasets
import numpy as np
import torch
from PIL import Image

from hf_mrl import MatryoshkaConfig, MatryoshkaForImageClassification
from hf_mrl.training import MatryoshkaTrainer, MatryoshkaTrainingArguments, checkpoint_path

from .tiny import tiny_vit_config


def image_rows(count: int = 32, num_labels: int = 4, seed: int = 0) -> datasets.Dataset:
    """Random grey 28x28 images whose mean brightness sets the label (so a model can learn it)."""
    rng = np.random.default_rng(seed)
    labels = [index % num_labels for index in range(count)]
    images = [Image.fromarray(np.clip(rng.normal(40 + 50 * label, 30, (28, 28)), 0, 255).astype(np.uint8))
              for label in labels]
    features = datasets.Features({"image": datasets.Image(),
                                  "label": datasets.ClassLabel(names=[f"class{i}" for i in range(num_labels)])})
    return datasets.Dataset.from_dict({"image": images, "label": labels}, features=features)


def tiny_classifier(seed: int = 0, dims=(8, 16), dropout: float = 0.0, efficient: bool = False):
    torch.manual_seed(seed)
    config = tiny_vit_config(hidden_size=16, intermediate_size=32, hidden_dropout_prob=dropout)
    return MatryoshkaForImageClassification(MatryoshkaConfig(backbone_config=config, num_labels=4,
                                                             matryoshka_dims=list(dims), efficient=efficient))


def tiny_trainer(output_dir, model=None, train_dataset=None, eval_dataset=None, evaluator=None,
                 **overrides) -> MatryoshkaTrainer:
    values = dict(output_dir=str(output_dir), per_device_train_batch_size=8, max_steps=4, learning_rate=3e-3,
                  logging_steps=1, save_strategy="no", report_to="none", disable_tqdm=True, seed=0)
    values.update(overrides)
    return MatryoshkaTrainer(model=model if model is not None else tiny_classifier(),
                             args=MatryoshkaTrainingArguments(**values),
                             train_dataset=train_dataset if train_dataset is not None else image_rows(),
                             eval_dataset=eval_dataset, evaluator=evaluator)


def save_checkpoint_at(output_dir, step: int, **overrides) -> Path:
    """A complete checkpoint `<output_dir>/checkpoint-<step>` of a tiny run trained `step` steps (weights,
    optimizer, scheduler, RNG state, trainer state), saved at its last step."""
    overrides = {"max_steps": step, "save_strategy": "steps", "save_steps": step, **overrides}
    tiny_trainer(output_dir, **overrides).train()
    return checkpoint_path(output_dir, step)


def weights(model) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in model.state_dict().items()}
