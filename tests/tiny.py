"""Tiny random configs and inputs shared by the tests (hidden 32, 2 layers: each model builds in ms)."""

import torch
from transformers import BertConfig, ViTConfig


def tiny_vit_config(**overrides) -> ViTConfig:
    values = dict(
        image_size=28, patch_size=7, num_channels=1, hidden_size=32, num_hidden_layers=2,
        num_attention_heads=2, intermediate_size=37,
    )
    values.update(overrides)
    return ViTConfig(**values)


def tiny_bert_config(**overrides) -> BertConfig:
    values = dict(
        vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=37, max_position_embeddings=64,
    )
    values.update(overrides)
    return BertConfig(**values)


def tiny_inputs(kind: str, batch: int = 4, seed: int = 0) -> dict:
    generator = torch.Generator().manual_seed(seed)
    if kind == "vit":
        return {"pixel_values": torch.randn(batch, 1, 28, 28, generator=generator)}
    input_ids = torch.randint(1, 99, (batch, 12), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[0, 8:] = 0  # one padded row, so masked mean pooling is exercised
    return {"input_ids": input_ids, "attention_mask": attention_mask}


BACKBONES = {"vit": tiny_vit_config, "bert": tiny_bert_config}
