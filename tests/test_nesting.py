import pytest
import torch

from hf_mrl.modeling.nesting import (
    NestedLinear,
    block_bounds,
    default_direct_dims,
    default_matryoshka_dims,
    truncate_embeddings,
    validate_dim,
    validate_matryoshka_dims,
    validate_matryoshka_weights,
)
from hf_mrl.testing_utils import nested_linear_reference


def test_default_dims_are_powers_of_two_plus_the_full_dim():
    assert default_matryoshka_dims(2048) == [8, 16, 32, 64, 128, 256, 512, 1024, 2048]
    assert default_matryoshka_dims(384) == [8, 16, 32, 64, 128, 256, 384]
    assert default_matryoshka_dims(8) == [8]
    assert default_matryoshka_dims(5) == [5]


def test_validate_dims_sorts_and_rejects_bad_values():
    assert validate_matryoshka_dims([32, 8, 16], 32) == [8, 16, 32]
    cases = {
        "positive integers, got 0": [0, 8],
        "positive integers, got -4": [-4, 8],
        "positive integers, got 8.0": [8.0],
        "positive integers, got True": [True, 8],
        "above the embedding dim 32": [8, 64],
        "duplicate dims [8]": [8, 8, 16],
        "non-empty list": [],
    }
    for message, dims in cases.items():
        with pytest.raises(ValueError, match=r"`matryoshka_dims`.*" + message.replace("[", r"\[").replace("]", r"\]")):
            validate_matryoshka_dims(dims, 32)


def test_validate_weights():
    assert validate_matryoshka_weights([1, 0.5], 2) == [1.0, 0.5]
    with pytest.raises(ValueError, match=r"`matryoshka_weights` has 1 entries"):
        validate_matryoshka_weights([1.0], 2)
    with pytest.raises(ValueError, match=r"finite numbers >= 0, got -1"):
        validate_matryoshka_weights([1.0, -1], 2)
    with pytest.raises(ValueError, match=r"all zero"):
        validate_matryoshka_weights([0, 0.0], 2)


def test_truncate_then_normalise(device):
    embeddings = torch.tensor([[3.0, 4.0, 100.0], [0.0, 2.0, -7.0]], device=device)
    truncated = truncate_embeddings(embeddings, 2)
    assert torch.allclose(truncated, torch.tensor([[0.6, 0.8], [0.0, 1.0]], device=device))
    assert torch.equal(truncate_embeddings(embeddings, 2, normalize=False), embeddings[:, :2])
    assert truncate_embeddings(embeddings).shape == (2, 3)
    for bad in (0, 4, -1, 2.5, "8"):
        with pytest.raises(ValueError, match=r"`dim` must be an integer from 1 to 3"):
            truncate_embeddings(embeddings, bad)
    assert validate_dim(None, 7) == 7


def test_block_bounds():
    assert block_bounds([8, 16, 32]) == [(0, 8), (8, 16), (16, 32)]


def test_default_direct_dims_only_for_tiny_dims():
    assert default_direct_dims([8, 16, 32, 64, 128, 256, 512, 1024, 2048]) == 4
    assert default_direct_dims([8, 16, 32]) == 0
    assert default_direct_dims([8]) == 0


HEAD_VARIANTS = [
    pytest.param(False, None, id="mrl"),
    pytest.param(True, 0, id="mrl-e-running-sum"),
    pytest.param(True, 2, id="mrl-e-two-direct"),
    pytest.param(True, 4, id="mrl-e-all-direct"),
]


@pytest.mark.parametrize(("efficient", "num_direct"), HEAD_VARIANTS)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("input_width", [20, 23])
def test_nested_linear_matches_naive_reference_forward_and_backward(efficient, num_direct, bias, input_width, device):
    torch.manual_seed(0)
    dims = [3, 8, 16, 20]
    head = NestedLinear(dims, out_features=7, efficient=efficient, bias=bias, num_direct=num_direct).double().to(device)
    # A width above the largest nesting dim: the extra features feed no head and get zero gradient.
    inputs = torch.randn(5, input_width, dtype=torch.float64).to(device).requires_grad_()
    upstream = torch.randn(len(dims), 5, 7, dtype=torch.float64).to(device)

    fast = head(inputs)
    (fast * upstream).sum().backward()
    fast_grads = [inputs.grad.clone()] + [p.grad.clone() for p in head.parameters()]
    inputs.grad = None
    head.zero_grad()

    reference = nested_linear_reference(head, inputs)
    (reference * upstream).sum().backward()
    reference_grads = [inputs.grad] + [p.grad for p in head.parameters()]

    assert fast.shape == (4, 5, 7)
    torch.testing.assert_close(fast, reference, atol=1e-5, rtol=0)
    for got, want in zip(fast_grads, reference_grads):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("efficient", [False, True])
def test_nested_linear_float32_and_extra_leading_dims(efficient, device):
    torch.manual_seed(0)
    head = NestedLinear([8, 16, 32], out_features=5, efficient=efficient).to(device)
    inputs = torch.randn(2, 3, 32).to(device)
    out = head(inputs)
    assert out.shape == (3, 2, 3, 5)
    torch.testing.assert_close(out, nested_linear_reference(head, inputs), atol=1e-5, rtol=0)


@pytest.mark.parametrize("efficient", [False, True])
def test_nested_linear_under_bf16_autocast(efficient, device):
    torch.manual_seed(0)
    head = NestedLinear([8, 16, 32], out_features=5, efficient=efficient).to(device)
    inputs = torch.randn(4, 32).to(device).requires_grad_()
    with torch.autocast(device.type, dtype=torch.bfloat16):
        out = head(inputs)
    assert out.dtype == torch.bfloat16
    out.float().sum().backward()
    assert inputs.grad is not None and all(p.grad is not None for p in head.parameters())
    torch.testing.assert_close(out.float(), nested_linear_reference(head, inputs), atol=0.1, rtol=0.05)


def test_logits_at_any_dim_for_mrl_e_only_nesting_dims_for_mrl(device):
    torch.manual_seed(0)
    inputs = torch.randn(3, 16).to(device)
    efficient = NestedLinear([4, 8, 16], out_features=5, efficient=True).to(device)
    expected = inputs[:, :6] @ efficient.classifier.weight[:, :6].T + efficient.classifier.bias
    torch.testing.assert_close(efficient.logits_at(inputs, 6), expected)
    torch.testing.assert_close(efficient.logits_at(inputs, 8), efficient(inputs)[1])
    separate = NestedLinear([4, 8, 16], out_features=5).to(device)
    torch.testing.assert_close(separate.logits_at(inputs, 8), separate(inputs)[1])
    with pytest.raises(ValueError, match=r"one of the nesting dims \[4, 8, 16\].*got 6"):
        separate.logits_at(inputs, 6)
    with pytest.raises(ValueError, match=r"from 1 to 16"):
        efficient.logits_at(inputs, 17)
