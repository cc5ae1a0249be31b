import torch
from datasets import Dataset
from transformers import Trainer, TrainingArguments

from hf_mrl import MatryoshkaConfig, MatryoshkaForImageClassification, MatryoshkaForSequenceClassification

from .tiny import tiny_bert_config, tiny_vit_config


def _train(model, dataset, tmp_path):
    args = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=16,
        num_train_epochs=30,
        lr_scheduler_type="constant",
        learning_rate=3e-3,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
    )
    trainer = Trainer(model=model, args=args, train_dataset=dataset)
    trainer.train()
    return [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]


def test_trainer_trains_image_classifier_unchanged(tmp_path):
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    dataset = Dataset.from_dict(
        {
            "pixel_values": torch.randn(16, 1, 28, 28, generator=generator).numpy(),
            "labels": torch.arange(16) % 4,
        }
    ).with_format("torch")
    model = MatryoshkaForImageClassification(MatryoshkaConfig(backbone_config=tiny_vit_config(), num_labels=4))
    losses = _train(model, dataset, tmp_path)
    assert len(losses) == 30
    assert losses[-1] < 0.5 * losses[0]


def test_trainer_trains_mrl_e_text_classifier_unchanged(tmp_path):
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(1)
    dataset = Dataset.from_dict(
        {
            "input_ids": torch.randint(1, 99, (16, 10), generator=generator).numpy(),
            "attention_mask": torch.ones(16, 10, dtype=torch.long).numpy(),
            "labels": torch.arange(16) % 3,
        }
    ).with_format("torch")
    config = MatryoshkaConfig(backbone_config=tiny_bert_config(), num_labels=3, efficient=True)
    losses = _train(MatryoshkaForSequenceClassification(config), dataset, tmp_path)
    assert losses[-1] < 0.5 * losses[0]
