"""The fused nested-heads cross-entropy against the naive per-dim loop (every dim's logits, then one
cross-entropy each), and the classifiers' outputs with and without `output_matryoshka_logits`."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.profiler import ProfilerActivity, profile

from hf_mrl import (
    MatryoshkaConfig,
    MatryoshkaForImageClassification,
    MatryoshkaForSequenceClassification,
)
from hf_mrl.modeling import fused_cross_entropy
from hf_mrl.modeling.fused_cross_entropy import nested_heads_cross_entropy, nested_linear_cross_entropy
from hf_mrl.modeling.nesting import NestedLinear
from hf_mrl.testing_utils import nested_linear_reference

from .tiny import BACKBONES, tiny_inputs

DIMS = [4, 8, 16, 24]
NUM_LABELS = 23
TOLERANCE = {torch.float64: 1e-9, torch.float32: 1e-5}


def make_heads(efficient: bool, dtype: torch.dtype, device: torch.device, bias: bool = True) -> NestedLinear:
    torch.manual_seed(0)
    return NestedLinear(DIMS, NUM_LABELS, efficient=efficient, bias=bias).to(device, dtype)


def make_batch(dtype: torch.dtype, device: torch.device, batch: int = 6, ignored: tuple[int, ...] = ()):
    """Drawn on the CPU from a seeded generator, then moved: the same values on every device."""
    generator = torch.Generator().manual_seed(1)
    inputs = torch.randn(batch, DIMS[-1], dtype=dtype, generator=generator).to(device).requires_grad_()
    labels = torch.randint(0, NUM_LABELS, (batch,), generator=generator)
    labels[0] = NUM_LABELS - 1  # the last chunk's last label
    labels[list(ignored)] = -100
    return inputs, labels.to(device)


def reference(heads, inputs, labels, weights, label_smoothing=0.0, ignore_index=-100):
    """(loss, per_dim, full-dim logits) from every dim's logits and one F.cross_entropy each."""
    logits = nested_linear_reference(heads, inputs)
    per_dim = torch.stack([
        F.cross_entropy(dim_logits.float() if dim_logits.dtype == torch.bfloat16 else dim_logits, labels,
                        label_smoothing=label_smoothing, ignore_index=ignore_index)
        for dim_logits in logits
    ])
    return (per_dim * torch.tensor(weights, dtype=per_dim.dtype, device=per_dim.device)).sum(), per_dim, logits[-1]


def values_and_grads(run, heads, inputs, upstream):
    """Runs `run()` -> (loss, per_dim, logits), backpropagates loss + <logits, upstream>, returns values and grads."""
    inputs.grad = None
    heads.zero_grad(set_to_none=True)
    loss, per_dim, logits = run()
    (loss + (logits.float() * upstream).sum()).backward()
    grads = [inputs.grad] + [param.grad for param in heads.parameters()]
    return [loss.detach(), per_dim.detach(), logits.detach()], grads


@pytest.mark.parametrize("efficient", [True, False], ids=["mrl-e", "mrl"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("chunk_size", [1, 5, 7, 16, 64])  # 64: all labels in one chunk
@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
def test_fused_equals_the_per_dim_reference(efficient, dtype, chunk_size, label_smoothing, device):
    heads = make_heads(efficient, dtype, device)
    inputs, labels = make_batch(dtype, device, ignored=(2, 4))
    weights = [0.5, 1.0, 0.0, 2.0]
    upstream = torch.randn(inputs.shape[0], NUM_LABELS, dtype=dtype).to(device)
    fused = values_and_grads(
        lambda: nested_heads_cross_entropy(heads, inputs, labels, weights, label_smoothing=label_smoothing,
                                           chunk_size=chunk_size),
        heads, inputs, upstream,
    )
    naive = values_and_grads(lambda: reference(heads, inputs, labels, weights, label_smoothing), heads, inputs, upstream)
    tolerance = TOLERANCE[dtype]
    for got, want in zip([*fused[0], *fused[1]], [*naive[0], *naive[1]]):
        assert got.dtype == want.dtype
        torch.testing.assert_close(got, want, atol=tolerance, rtol=tolerance)


@pytest.mark.parametrize("efficient", [True, False], ids=["mrl-e", "mrl"])
def test_fused_without_bias_and_with_another_ignore_index(efficient, device):
    heads = make_heads(efficient, torch.float64, device, bias=False)
    inputs, labels = make_batch(torch.float64, device)
    labels[1] = 3
    weights = [1.0] * len(DIMS)
    fused = nested_heads_cross_entropy(heads, inputs, labels, weights, ignore_index=3, chunk_size=5)
    fused.loss.backward()
    got = [inputs.grad.clone()] + [param.grad.clone() for param in heads.parameters()]
    inputs.grad = None
    heads.zero_grad(set_to_none=True)
    loss, per_dim, _ = reference(heads, inputs, labels, weights, ignore_index=3)
    loss.backward()
    torch.testing.assert_close(fused.per_dim_losses, per_dim.detach(), atol=1e-9, rtol=1e-9)
    for value, want in zip(got, [inputs.grad] + [param.grad for param in heads.parameters()]):
        torch.testing.assert_close(value, want, atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize("efficient", [True, False], ids=["mrl-e", "mrl"])
@pytest.mark.parametrize("chunk_size", [7, 64])
def test_fused_under_bf16_autocast_matches_the_float32_reference(efficient, chunk_size, device):
    heads = make_heads(efficient, torch.float32, device)
    inputs, labels = make_batch(torch.float32, device, batch=16, ignored=(3,))
    weights = [1.0, 0.5, 1.0, 2.0]
    upstream = torch.zeros(inputs.shape[0], NUM_LABELS, device=device)
    with torch.autocast(device.type, dtype=torch.bfloat16):
        fused = values_and_grads(lambda: nested_heads_cross_entropy(heads, inputs, labels, weights, chunk_size=chunk_size),
                                 heads, inputs, upstream)
        autocast_reference = values_and_grads(lambda: reference(heads, inputs, labels, weights), heads, inputs, upstream)
    naive = values_and_grads(lambda: reference(heads, inputs, labels, weights), heads, inputs, upstream)
    loss, per_dim, logits = fused[0]
    assert loss.dtype == per_dim.dtype == torch.float32 and logits.dtype == torch.bfloat16
    assert all(grad.dtype == torch.float32 for grad in fused[1])
    for got, want in zip([*fused[0], *fused[1]], [*naive[0], *naive[1]]):
        torch.testing.assert_close(got.float(), want, atol=3e-2, rtol=3e-2)
    # The statistics are float32, so the fused loss is at least as close as autocast's own unfused path.
    assert (loss - naive[0][0]).abs() <= (autocast_reference[0][0] - naive[0][0]).abs() + 1e-2


@pytest.mark.parametrize("chunk_size", [5, 64])
def test_a_second_backward_is_refused_or_exact(chunk_size, device):
    heads = make_heads(True, torch.float64, device)
    inputs, labels = make_batch(torch.float64, device)
    loss = nested_heads_cross_entropy(heads, inputs, labels, [1.0] * len(DIMS), chunk_size=chunk_size).loss
    loss.backward(retain_graph=True)
    first = inputs.grad.clone()
    if chunk_size < NUM_LABELS:  # recomputed chunks: backward can run again
        loss.backward()
        torch.testing.assert_close(inputs.grad, 2 * first)
    else:  # one chunk: the gradients were computed in the forward and handed over by the first backward
        with pytest.raises(RuntimeError, match="a second time"):
            loss.backward()


@pytest.mark.parametrize("efficient", [True, False], ids=["mrl-e", "mrl"])
@pytest.mark.parametrize("row_chunk_elements", [1, 200])  # one row per chunk; 2 rows per chunk (4 dims x 23 labels)
def test_one_pass_over_several_row_chunks_equals_the_reference(efficient, row_chunk_elements, device, monkeypatch):
    monkeypatch.setitem(fused_cross_entropy.ROW_CHUNK_ELEMENTS, efficient, row_chunk_elements)
    heads = make_heads(efficient, torch.float64, device)
    inputs, labels = make_batch(torch.float64, device, batch=7, ignored=(3,))
    weights = [1.0, 0.5, 2.0, 1.0]
    upstream = torch.randn(inputs.shape[0], NUM_LABELS, dtype=torch.float64).to(device)
    fused = values_and_grads(lambda: nested_heads_cross_entropy(heads, inputs, labels, weights, label_smoothing=0.1),
                             heads, inputs, upstream)
    naive = values_and_grads(lambda: reference(heads, inputs, labels, weights, 0.1), heads, inputs, upstream)
    for got, want in zip([*fused[0], *fused[1]], [*naive[0], *naive[1]]):
        torch.testing.assert_close(got, want, atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize("chunk_size", [5, 64])
@pytest.mark.parametrize("trainable", ["inputs", "heads"])
def test_only_the_wanted_gradients_and_none_without_grad(chunk_size, trainable, device):
    heads = make_heads(True, torch.float64, device)
    inputs, labels = make_batch(torch.float64, device)
    inputs.requires_grad_(trainable == "inputs")
    heads.requires_grad_(trainable == "heads")
    weights = [1.0] * len(DIMS)
    output = nested_heads_cross_entropy(heads, inputs, labels, weights, chunk_size=chunk_size)
    output.loss.backward()
    want = reference(heads, inputs, labels, weights)[0]
    torch.testing.assert_close(output.loss, want, atol=1e-9, rtol=0)
    assert (inputs.grad is not None) == (trainable == "inputs")
    assert (heads.classifier.weight.grad is not None) == (trainable == "heads")
    with torch.no_grad():
        quiet = nested_heads_cross_entropy(heads, inputs, labels, weights, chunk_size=chunk_size)
    assert not quiet.loss.requires_grad
    torch.testing.assert_close(quiet.loss, want, atol=1e-9, rtol=0)


def test_all_rows_ignored_is_refused_not_nan(device):
    heads = make_heads(True, torch.float64, device)
    inputs, labels = make_batch(torch.float64, device, batch=2, ignored=(0, 1))
    assert torch.isnan(F.cross_entropy(inputs[:, :NUM_LABELS], labels))  # what the plain loss would give
    with pytest.raises(ValueError, match=r"`labels` are all -100"):
        nested_heads_cross_entropy(heads, inputs, labels, [1.0] * len(DIMS))


def test_fused_takes_plain_tensors_and_any_leading_shape(device):
    heads = make_heads(True, torch.float64, device)
    inputs, labels = make_batch(torch.float64, device, batch=6)
    weights = [1.0] * len(DIMS)
    plain = nested_linear_cross_entropy(inputs, heads.classifier.weight, heads.classifier.bias, DIMS, labels, weights)
    shaped = nested_heads_cross_entropy(heads, inputs.view(2, 3, -1), labels.view(2, 3), weights)
    torch.testing.assert_close(plain.loss, shaped.loss, atol=1e-12, rtol=0)
    assert shaped.logits.shape == (2, 3, NUM_LABELS)


def test_fused_never_allocates_every_dims_logits(device):
    heads = make_heads(False, torch.float32, device)
    inputs, labels = make_batch(torch.float32, device, batch=64)
    activities = [ProfilerActivity.CPU] + [ProfilerActivity.CUDA] * (device.type == "cuda")
    with profile(activities=activities, profile_memory=True) as prof:
        nested_heads_cross_entropy(heads, inputs, labels, [1.0] * len(DIMS), chunk_size=4).loss.backward()
    sizes = [event.nbytes() for event in prof.profiler.kineto_results.events()
             if event.name() == "[memory]" and event.device_type().name == device.type.upper()]
    every_dim = len(DIMS) * inputs.shape[0] * NUM_LABELS * 4
    # The largest allocation holds the kept dims' logits but the full-dim ones (here every other dim's).
    assert sizes and max(sizes) <= every_dim * (len(DIMS) - 1) / len(DIMS)


def test_fused_rejects_bad_arguments(device):
    heads = make_heads(True, torch.float32, device)
    inputs, labels = make_batch(torch.float32, device)
    with pytest.raises(ValueError, match=r"`loss_weights` has 2 entries \(\[1.0, 1.0\]\) but there are 4 matryoshka dims"):
        nested_heads_cross_entropy(heads, inputs, labels, [1.0, 1.0])
    with pytest.raises(ValueError, match=r"class ids from 0 to 22.*got 23"):
        nested_heads_cross_entropy(heads, inputs, torch.tensor([0, 23, 1, 1, 1, 1], device=device), [1.0] * 4)
    with pytest.raises(ValueError, match="`chunk_size` must be a positive integer, got 0"):
        nested_heads_cross_entropy(heads, inputs, labels, [1.0] * 4, chunk_size=0)


CLASSIFIERS = {"vit": MatryoshkaForImageClassification, "bert": MatryoshkaForSequenceClassification}


@pytest.mark.parametrize("efficient", [False, True], ids=["mrl", "mrl-e"])
def test_classifier_outputs_agree_with_and_without_matryoshka_logits(backbone_kind, efficient, device):
    torch.manual_seed(0)
    config = MatryoshkaConfig(backbone_config=BACKBONES[backbone_kind](), num_labels=5, efficient=efficient,
                              matryoshka_weights=[1.0, 0.5, 2.0])
    model = CLASSIFIERS[backbone_kind](config).eval().to(device)  # no dropout: both calls see the same network
    inputs = {name: tensor.to(device) for name, tensor in tiny_inputs(backbone_kind).items()}
    labels = torch.tensor([0, 1, -100, 4], device=device)
    runs = []
    for output_matryoshka_logits in (False, True):
        model.zero_grad(set_to_none=True)
        output = model(**inputs, labels=labels, output_matryoshka_logits=output_matryoshka_logits)
        (output.loss + output.logits.square().sum()).backward()
        runs.append((output, {name: param.grad.clone() for name, param in model.named_parameters()}))
    (fused, fused_grads), (full, full_grads) = runs
    assert fused.matryoshka_logits is None and full.matryoshka_logits.shape == (3, 4, 5)
    torch.testing.assert_close(fused.loss, full.loss)
    torch.testing.assert_close(fused.logits, full.logits)
    torch.testing.assert_close(fused.matryoshka_losses, full.matryoshka_losses)
    kept = labels != -100
    per_dim = torch.stack([F.cross_entropy(logits[kept], labels[kept]) for logits in full.matryoshka_logits])
    torch.testing.assert_close(full.matryoshka_losses, per_dim.detach())
    assert fused_grads.keys() == full_grads.keys()
    for name, grad in fused_grads.items():
        torch.testing.assert_close(grad, full_grads[name], msg=name)
    unlabelled = model(**inputs)
    assert unlabelled.loss is None and unlabelled.matryoshka_logits.shape == (3, 4, 5)
    torch.testing.assert_close(unlabelled.logits, fused.logits)


@pytest.mark.slow
def test_bench_heads_with_loss_runs_on_a_tiny_problem():
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "bench_heads.py"
    completed = subprocess.run(
        [sys.executable, str(script), "--batch", "4", "--dim", "32", "--labels", "50", "--with-loss", "--with-unfused",
         "--with-floor", "--chunk-sizes", "16", "64", "--repeats", "1", "--threads", "1", "2"],
        capture_output=True, text=True, timeout=120,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    for name in ("single full-dim nn.Linear", "MRL-E fused, chunk 16", "MRL fused, chunk 64", "MRL-E unfused",
                 "MRL-E products only", "peak MiB", "ratio to one head by threads", "1: "):
        assert name in completed.stdout
    assert "2 threads, float32" in completed.stdout  # one run per --threads value


@pytest.mark.parametrize("kind", ["one head", "mrl-e", "mrl"])
def test_the_bench_floor_runs_the_products_of_a_real_backward(kind):
    """bench_heads' products-only step, with the logits standing in for their gradients, is the backward of
    half the summed squares of every dim's logits: the same products, over chunks of labels that do not divide
    their number."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "bench_heads.py"
    spec = importlib.util.spec_from_file_location("bench_heads", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    torch.manual_seed(0)
    dims = [4, 8, 16]
    head = nn.Linear(16, 50).double() if kind == "one head" else NestedLinear(dims, 50, efficient=kind == "mrl-e").double()
    inputs = torch.randn(6, 16, dtype=torch.float64, requires_grad=True)
    grad_inputs, grad_weights = bench.make_products_step(inputs, head, dims, chunk_size=16)()
    outputs = head(inputs)
    (0.5 * outputs.square().sum()).backward()
    weights = [head.weight] if kind == "one head" else [p for name, p in head.named_parameters() if "weight" in name]
    torch.testing.assert_close(grad_inputs, inputs.grad, atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(grad_weights, [weight.grad for weight in weights], atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize("chunk_size", [5, 64])
def test_a_negative_upstream_gradient(chunk_size, device):
    heads = make_heads(True, torch.float64, device)
    inputs, labels = make_batch(torch.float64, device, ignored=(1,))
    weights = [1.0, 0.0, 2.0, 1.0]
    (-2.0 * nested_heads_cross_entropy(heads, inputs, labels, weights, chunk_size=chunk_size).loss).backward()
    fused = [inputs.grad.clone(), heads.classifier.weight.grad.clone()]
    inputs.grad = None
    heads.zero_grad(set_to_none=True)
    (-2.0 * reference(heads, inputs, labels, weights)[0]).backward()
    torch.testing.assert_close(fused, [inputs.grad, heads.classifier.weight.grad], atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize("efficient", [True, False], ids=["mrl-e", "mrl"])
@pytest.mark.parametrize("chunk_size", [5, 64])
def test_wider_weights_get_zero_gradient_past_their_dim(efficient, chunk_size, device):
    """Weights may be wider than the features their dim reads: those columns get a zero gradient, not garbage."""
    torch.manual_seed(0)
    inputs, labels = make_batch(torch.float64, device)
    extra = 3
    if efficient:
        weight = torch.randn(NUM_LABELS, DIMS[-1] + extra, dtype=torch.float64, device=device, requires_grad=True)
        head_weights, bias = [weight] * len(DIMS), torch.randn(NUM_LABELS, dtype=torch.float64, device=device)
    else:
        weight = [torch.randn(NUM_LABELS, dim + extra, dtype=torch.float64, device=device, requires_grad=True)
                  for dim in DIMS]
        head_weights, bias = weight, None
    fused = nested_linear_cross_entropy(inputs, weight, bias, DIMS, labels, [1.0] * len(DIMS), chunk_size=chunk_size)
    got = torch.autograd.grad(fused.loss, weight if not efficient else [weight])
    bias_term = 0 if bias is None else bias
    naive = sum(F.cross_entropy(inputs[:, :dim] @ head_weight[:, :dim].t() + bias_term, labels)
                for dim, head_weight in zip(DIMS, head_weights))
    want = torch.autograd.grad(naive, weight if not efficient else [weight])
    for got_grad, want_grad, dim in zip(got, want, DIMS[-1:] if efficient else DIMS):
        assert torch.equal(got_grad[:, dim:], torch.zeros_like(got_grad[:, dim:]))
        torch.testing.assert_close(got_grad, want_grad, atol=1e-9, rtol=1e-9)


def test_fused_rejects_weights_narrower_than_their_dim(device):
    inputs, labels = make_batch(torch.float32, device)
    narrow = torch.randn(NUM_LABELS, DIMS[-1] - 1, device=device)
    with pytest.raises(ValueError, match=r"`weight` must be a \(23, 24\) matrix.*got shape \(23, 23\)"):
        nested_linear_cross_entropy(inputs, narrow, None, DIMS, labels, [1.0] * len(DIMS))
    weights = [torch.randn(NUM_LABELS, dim, device=device) for dim in DIMS]
    weights[1] = torch.randn(NUM_LABELS - 1, DIMS[1], device=device)
    with pytest.raises(ValueError, match=r"`weight\[1\]` must be a \(23, 8\) matrix.*got shape \(22, 8\)"):
        nested_linear_cross_entropy(inputs, weights, None, DIMS, labels, [1.0] * len(DIMS))


@pytest.mark.parametrize("dims", [[8, 4, 24], [4, 4, 24], [0, 8, 24], "24", []], ids=["unsorted", "repeated", "zero",
                                                                                    "string", "empty"])
def test_fused_rejects_dims_not_ascending(dims, device):
    inputs, labels = make_batch(torch.float32, device)
    weight = torch.randn(NUM_LABELS, DIMS[-1], device=device)
    with pytest.raises(ValueError, match=r"`dims` must be positive integers in ascending order.*got"):
        nested_linear_cross_entropy(inputs, weight, None, dims, labels, [1.0] * 3)


def test_fused_rejects_biases_of_another_shape(device):
    inputs, labels = make_batch(torch.float32, device)
    weight = torch.randn(NUM_LABELS, DIMS[-1], device=device)
    with pytest.raises(ValueError, match=r"`bias` must have shape \(23,\).*got \(22,\)"):
        nested_linear_cross_entropy(inputs, weight, torch.zeros(NUM_LABELS - 1, device=device), DIMS, labels,
                                    [1.0] * len(DIMS))
    with pytest.raises(ValueError, match="`bias` must hold floating-point numbers"):
        nested_linear_cross_entropy(inputs, weight, torch.zeros(NUM_LABELS, dtype=torch.long, device=device), DIMS,
                                    labels, [1.0] * len(DIMS))
    weights = [torch.randn(NUM_LABELS, dim, device=device) for dim in DIMS]
    biases = [None] * len(DIMS)
    biases[2] = torch.zeros(NUM_LABELS, 1, device=device)
    with pytest.raises(ValueError, match=r"`bias\[2\]` must be 1-D \(num_labels,\)"):
        nested_linear_cross_entropy(inputs, weights, biases, DIMS, labels, [1.0] * len(DIMS))
