"""Hard negatives and row blocks (`mini_batch_size`) in `matryoshka_contrastive_loss`: equal to the naive per-dim
reference, values and gradients, in float64."""

import pytest
import torch

from hf_mrl import matryoshka_contrastive_loss
from hf_mrl.testing_utils import matryoshka_contrastive_loss_reference

DIMS, WEIGHTS = (4, 8, 16, 32), (1.0, 0.5, 2.0, 1.0)


def _inputs(batch=6, count=2, width=32, seed=0):
    generator = torch.Generator().manual_seed(seed)
    make = lambda *shape: torch.randn(*shape, generator=generator, dtype=torch.float64, requires_grad=True)  # noqa: E731
    return make(batch, width), make(batch, width), make(batch, count, width)


def _grads(output, tensors):
    return torch.autograd.grad(output.loss, tensors)


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("mini_batch_size", [None, 1, 4])
def test_hard_negatives_equal_the_naive_reference(symmetric, smoothing, mini_batch_size):
    images, texts, negatives = _inputs()
    fused = matryoshka_contrastive_loss(images, texts, DIMS, WEIGHTS, 0.05, label_smoothing=smoothing,
                                        symmetric=symmetric, negative_embeds=negatives, mini_batch_size=mini_batch_size)
    naive = matryoshka_contrastive_loss_reference(images, texts, DIMS, WEIGHTS, 0.05, smoothing, symmetric,
                                                  negative_embeds=negatives)
    torch.testing.assert_close(fused.loss, naive.loss, rtol=0, atol=1e-9)
    torch.testing.assert_close(fused.per_dim_losses, naive.per_dim_losses, rtol=0, atol=1e-9)
    for got, want in zip(_grads(fused, (images, texts, negatives)), _grads(naive, (images, texts, negatives))):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-9)


def test_negatives_raise_the_loss_and_a_list_of_columns_equals_the_stacked_tensor():
    images, texts, negatives = _inputs(count=3)
    plain = matryoshka_contrastive_loss(images, texts, DIMS, temperature=0.05)
    stacked = matryoshka_contrastive_loss(images, texts, DIMS, temperature=0.05, negative_embeds=negatives)
    listed = matryoshka_contrastive_loss(images, texts, DIMS, temperature=0.05,
                                         negative_embeds=[negatives[:, j] for j in range(3)])
    assert (stacked.per_dim_losses > plain.per_dim_losses).all()
    torch.testing.assert_close(stacked.loss, listed.loss, rtol=0, atol=1e-12)


def test_negative_ids_mark_a_negative_equal_to_a_positive():
    images, texts, negatives = _inputs(batch=4, count=1)
    text_ids = torch.tensor([0, 1, 2, 3])
    negative_ids = torch.tensor([[1], [7], [8], [9]])  # row 0's negative is row 1's positive text
    with torch.no_grad():
        negatives[0, 0] = texts[1]
    fused = matryoshka_contrastive_loss(images, texts, DIMS, temperature=0.05, text_ids=text_ids,
                                        negative_embeds=negatives, negative_ids=negative_ids, mini_batch_size=3)
    naive = matryoshka_contrastive_loss_reference(images, texts, DIMS, (1.0,) * 4, 0.05, text_ids=text_ids,
                                                  negative_embeds=negatives, negative_ids=negative_ids)
    torch.testing.assert_close(fused.loss, naive.loss, rtol=0, atol=1e-9)
    marked_grad = torch.autograd.grad(fused.loss, negatives)[0]
    torch.testing.assert_close(marked_grad, torch.autograd.grad(naive.loss, negatives)[0], rtol=0, atol=1e-9)
    # Unmarked, the copy of row 1's positive is pushed away from image 1 like any negative.
    unmarked = matryoshka_contrastive_loss(images, texts, DIMS, temperature=0.05, text_ids=text_ids,
                                           negative_embeds=negatives)
    assert not torch.allclose(torch.autograd.grad(unmarked.loss, negatives)[0][0], marked_grad[0])


@pytest.mark.parametrize("ids", ["image", "text"])
def test_duplicate_ids_with_negatives_equal_the_reference(ids):
    images, texts, negatives = _inputs(batch=6, count=2)
    groups = torch.tensor([0, 1, 0, 2, 1, 3])
    kwargs = {"image_ids": groups} if ids == "image" else {"text_ids": groups}
    fused = matryoshka_contrastive_loss(images, texts, DIMS, temperature=0.05, negative_embeds=negatives,
                                        mini_batch_size=4, **kwargs)
    naive = matryoshka_contrastive_loss_reference(images, texts, DIMS, (1.0,) * 4, 0.05, negative_embeds=negatives,
                                                  **kwargs)
    torch.testing.assert_close(fused.loss, naive.loss, rtol=0, atol=1e-9)
    for got, want in zip(_grads(fused, (images, texts, negatives)), _grads(naive, (images, texts, negatives))):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-9)


def test_row_blocks_without_negatives_equal_the_fused_two_way_kernel():
    images, texts, _ = _inputs(batch=9)
    scale = torch.tensor(20.0, dtype=torch.float64, requires_grad=True)
    whole = matryoshka_contrastive_loss(images, texts, DIMS, logit_scale=scale)
    blocks = matryoshka_contrastive_loss(images, texts, DIMS, logit_scale=scale, mini_batch_size=2)
    torch.testing.assert_close(whole.loss, blocks.loss, rtol=0, atol=1e-10)
    for got, want in zip(torch.autograd.grad(blocks.loss, (images, texts, scale)),
                         torch.autograd.grad(whole.loss, (images, texts, scale))):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-10)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"negative_embeds": torch.zeros(5, 2, 32)}, "negative_embeds"),
        ({"negative_embeds": torch.zeros(6, 2, 16)}, "negative_embeds"),
        ({"negative_embeds": torch.zeros(6, 0, 32)}, "negative_embeds"),
        ({"negative_ids": [[0], [1]]}, "negative_ids"),
        ({"mini_batch_size": 0}, "mini_batch_size"),
        ({"negative_embeds": torch.full((6, 1, 32), float("nan"))}, "negative_embeds"),
    ],
)
def test_bad_negatives_and_mini_batch_size_are_refused(kwargs, message):
    images, texts, _ = _inputs()
    with pytest.raises(ValueError, match=message):
        matryoshka_contrastive_loss(images.detach().float(), texts.detach().float(), DIMS, temperature=0.05, **kwargs)
