"""Cached mini-batches (GradCache): the trainer's contrastive losses with `mini_batch_size` give the parameters the
gradients of encoding the whole batch with a graph (mini-batch by mini-batch, so dropout draws the same masks) and
back-propagating the loss once: text pairs with and without hard negatives, the dual encoder, bf16 autocast, and
two processes with the all-gather."""

import functools
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from hf_mrl import MatryoshkaConfig, MatryoshkaDualEncoderConfig, MatryoshkaDualEncoderModel, MatryoshkaModel
from hf_mrl.modeling.losses import matryoshka_contrastive_loss
from hf_mrl.training.cached import slice_rows
from hf_mrl.training.tasks import ImageTextLoss, PairContrastiveLoss

from .launch import free_port
from .tiny import tiny_bert_config, tiny_inputs, tiny_vit_config

DIMS, WEIGHTS = [4, 8, 16, 32], [1.0, 0.5, 2.0, 1.0]


def _text_model(dtype=torch.float32) -> MatryoshkaModel:
    torch.manual_seed(0)
    config = MatryoshkaConfig(backbone_config=tiny_bert_config(), matryoshka_dims=DIMS, matryoshka_weights=WEIGHTS)
    return MatryoshkaModel(config).to(dtype).train()  # dropout on


def _tokens(rows: int, seed: int) -> dict:
    inputs = tiny_inputs("bert", rows, seed=seed)
    lengths = torch.randint(3, 13, (rows,), generator=torch.Generator().manual_seed(seed))
    inputs["attention_mask"] = (torch.arange(12)[None, :] < lengths[:, None]).long()
    return inputs


def _pair_batch(rows: int, negatives: int) -> tuple[dict, tuple[str, ...]]:
    columns = ("anchor", "positive", *(f"negative_{index}" for index in range(1, negatives + 1)))
    batch = {column: _tokens(rows, seed) for seed, column in enumerate(columns)}
    batch["anchor_ids"] = torch.arange(rows)
    batch["positive_ids"] = torch.arange(rows) % max(rows - 2, 1)  # two repeated positives
    batch["candidate_ids"] = torch.cat([batch["positive_ids"], torch.arange(rows * negatives) + rows])
    return batch, columns


def _encode_in_mini_batches(encode, inputs: dict, size: int) -> torch.Tensor:
    rows = next(iter(inputs.values())).shape[0]
    return torch.cat([encode(slice_rows(inputs, start, min(start + size, rows))) for start in range(0, rows, size)])


def _pair_reference(model, batch, columns, size, symmetric, gather=False):
    """Every column encoded with a graph, mini-batch by mini-batch, then one loss."""
    anchor, positive, *negatives = (_encode_in_mini_batches(lambda part: model(**part).embeddings, batch[column], size)
                                    for column in columns)
    ids = batch["candidate_ids"]
    rows = len(anchor)
    return matryoshka_contrastive_loss(
        anchor, positive, DIMS, WEIGHTS, 0.05, symmetric=symmetric, gather=gather, image_ids=batch["anchor_ids"],
        text_ids=ids[:rows] if negatives else batch["positive_ids"],
        negative_embeds=negatives or None, negative_ids=ids[rows:].view(-1, rows).t() if negatives else None,
    )


def _grads(model) -> list[torch.Tensor]:
    return [parameter.grad.clone() for parameter in model.parameters() if parameter.grad is not None]


def _cached_and_reference(model, loss_module, reference, batch, seed=7):
    torch.manual_seed(seed)
    loss, per_dim = loss_module(batch)
    loss.backward()
    cached_grads, rng_after = _grads(model), torch.get_rng_state()
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    expected = reference()
    expected.loss.backward()
    return loss, per_dim, cached_grads, expected, _grads(model), rng_after


@pytest.mark.parametrize("negatives", [0, 2])
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, 1e-5), (torch.float64, 1e-9)])
def test_cached_pairs_equal_the_uncached_gradients(negatives, symmetric, dtype, tolerance):
    model, (batch, columns), size = _text_model(dtype), _pair_batch(10, negatives), 4
    loss_module = PairContrastiveLoss(model, columns, symmetric=symmetric, mini_batch_size=size)
    loss, per_dim, cached, expected, reference, _ = _cached_and_reference(
        model, loss_module, lambda: _pair_reference(model, batch, columns, size, symmetric), batch)
    torch.testing.assert_close(loss.detach(), expected.loss.detach(), rtol=0, atol=tolerance)
    torch.testing.assert_close(per_dim, expected.per_dim_losses, rtol=0, atol=tolerance)
    assert len(cached) == len(reference) > 10
    for got, want in zip(cached, reference, strict=True):
        torch.testing.assert_close(got, want, rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("index", range(len(DIMS)))
def test_cached_gradients_match_at_every_dim_alone(index):
    torch.manual_seed(0)
    weights = [float(position == index) for position in range(len(DIMS))]
    config = MatryoshkaConfig(backbone_config=tiny_bert_config(), matryoshka_dims=DIMS, matryoshka_weights=weights)
    model = MatryoshkaModel(config).double().train()
    batch, columns = _pair_batch(7, 1)
    loss_module = PairContrastiveLoss(model, columns, mini_batch_size=3)

    def reference():
        anchor, positive, negative = (_encode_in_mini_batches(lambda part: model(**part).embeddings, batch[c], 3)
                                      for c in columns)
        ids = batch["candidate_ids"]
        return matryoshka_contrastive_loss(anchor, positive, DIMS, weights, 0.05, image_ids=batch["anchor_ids"],
                                           text_ids=ids[:7], negative_embeds=negative[:, None],
                                           negative_ids=ids[7:, None])

    _, _, cached, _, expected, _ = _cached_and_reference(model, loss_module, reference, batch)
    for got, want in zip(cached, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)


def test_dropout_draws_differ_without_the_restored_random_state():
    """The check above can fail: encoding the mini-batches again from another random state changes the gradients."""
    model, (batch, columns) = _text_model(torch.float64), _pair_batch(8, 0)
    loss_module = PairContrastiveLoss(model, columns, mini_batch_size=4)
    _, _, cached, _, _, _ = _cached_and_reference(
        model, loss_module, lambda: _pair_reference(model, batch, columns, 4, True), batch)
    model.zero_grad(set_to_none=True)
    torch.manual_seed(8)
    _pair_reference(model, batch, columns, 4, True).loss.backward()
    assert any(not torch.allclose(got, want) for got, want in zip(cached, _grads(model), strict=True))


def test_cached_pairs_under_bf16_autocast_equal_the_uncached_pass():
    model, (batch, columns) = _text_model(), _pair_batch(6, 1)
    loss_module = PairContrastiveLoss(model, columns, mini_batch_size=4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        torch.manual_seed(3)
        loss, _ = loss_module(batch)
    loss.backward()
    cached = _grads(model)
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        torch.manual_seed(3)
        expected = _pair_reference(model, batch, columns, 4, True)
    expected.loss.backward()
    # bf16 rounds differently with and without a graph (attention kernels): compare the gradients as one vector.
    got, want = (torch.cat([grad.flatten() for grad in grads]) for grads in (cached, _grads(model)))
    assert float((got - want).norm() / want.norm()) < 1e-3


def test_cached_dual_encoder_equals_the_uncached_gradients_and_trains_its_temperature():
    torch.manual_seed(0)
    config = MatryoshkaDualEncoderConfig(vision_config=tiny_vit_config(), text_config=tiny_bert_config(),
                                         projection_dim=24, label_smoothing=0.1)
    model = MatryoshkaDualEncoderModel(config).double().train()
    batch = {**tiny_inputs("vit", 9), **_tokens(9, 1), "text_ids": torch.arange(9) % 7}
    batch["pixel_values"] = batch["pixel_values"].double()

    def reference():
        images = _encode_in_mini_batches(lambda part: model(**part).image_features,
                                         {"pixel_values": batch["pixel_values"]}, 4)
        texts = _encode_in_mini_batches(lambda part: model(**part).text_features,
                                        {key: batch[key] for key in ("input_ids", "attention_mask")}, 4)
        return model.contrastive_loss(images, texts, text_ids=batch["text_ids"])

    loss, _, cached, expected, wanted, _ = _cached_and_reference(model, ImageTextLoss(model, mini_batch_size=4),
                                                                 reference, batch)
    torch.testing.assert_close(loss.detach(), expected.loss.detach(), rtol=0, atol=1e-9)
    assert model.logit_scale.grad is not None and model.logit_scale.grad.abs() > 0
    for got, want in zip(cached, wanted, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)


# -- two processes (gloo): each rank's cached gradients equal its uncached ones under the all-gather -------------


def _worker(rank: int, world: int, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        for negatives in (0, 2):
            model = _text_model(torch.float64)
            full, columns = _pair_batch(10, negatives)
            mine = slice(5 * rank, 5 * rank + 5)
            local = {key: ({k: v[mine] for k, v in value.items()} if isinstance(value, dict) else value[mine])
                     for key, value in full.items() if key != "candidate_ids"}
            rows = 10
            ids = full["candidate_ids"]
            local["candidate_ids"] = torch.cat([ids[:rows][mine]] + [ids[rows * (1 + j):][:rows][mine]
                                                                     for j in range(negatives)])
            loss_module = PairContrastiveLoss(model, columns, mini_batch_size=2)
            loss_module.gather = True
            _, _, cached, _, expected, _ = _cached_and_reference(
                model, loss_module, functools.partial(_pair_reference, model, local, columns, 2, True, gather=True),
                local, seed=11 + rank)
            for got, want in zip(cached, expected, strict=True):
                torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_processes_cached_equal_uncached_under_the_all_gather():
    mp.spawn(_worker, args=(2, free_port()), nprocs=2, join=True)


def test_slice_rows_trims_only_trailing_padding():
    ids = torch.arange(12).view(2, 6)
    right = {"input_ids": ids, "attention_mask": torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 0, 0, 0, 0]])}
    left = {"input_ids": ids, "attention_mask": torch.tensor([[0, 0, 0, 1, 1, 1], [0, 0, 0, 0, 1, 1]])}
    assert torch.equal(slice_rows(right, 0, 2)["input_ids"], ids[:, :3])
    assert torch.equal(slice_rows(right, 1, 2)["attention_mask"], torch.tensor([[1, 1]]))
    assert torch.equal(slice_rows(left, 0, 2)["input_ids"], ids)  # a left-padded batch keeps its tokens
