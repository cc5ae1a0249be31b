"""The fused losses run their kernels within the CPUs this process may use, give torch's thread setting back, and
compute the same values with any thread count."""

import pytest
import torch

from hf_mrl.modeling import cpu_threads, fused_cross_entropy, fused_infonce
from hf_mrl.modeling.fused_cross_entropy import nested_heads_cross_entropy
from hf_mrl.modeling.losses import matryoshka_contrastive_loss
from hf_mrl.modeling.nesting import NestedLinear

DIMS = [4, 8, 16]


@pytest.fixture(autouse=True)
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def one_usable_cpu(monkeypatch):
    """This process may use one CPU, while torch is set to 3 threads (a launcher's OMP_NUM_THREADS for a bigger
    machine)."""
    monkeypatch.setattr(cpu_threads, "usable_cpus", lambda: 1)
    torch.set_num_threads(3)


def spy_threads(monkeypatch, module, name: str) -> list[int]:
    """Records torch's thread count each time `module.name` runs inside the kernel."""
    seen, original = [], getattr(module, name)

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, spy)
    return seen


def contrastive_values(threads: int):
    torch.set_num_threads(threads)
    generator = torch.Generator().manual_seed(0)
    queries = torch.randn(24, 16, generator=generator, dtype=torch.float64, requires_grad=True)
    keys = (queries.detach() + torch.randn(24, 16, generator=generator, dtype=torch.float64)).requires_grad_()
    output = matryoshka_contrastive_loss(queries, keys, DIMS, [1.0] * len(DIMS), 0.05)
    return (output.per_dim_losses, *torch.autograd.grad(output.loss, [queries, keys]))


def cross_entropy_values(threads: int, chunk_size=None):
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    heads = NestedLinear(DIMS, 50, efficient=True).double()
    inputs = torch.randn(12, max(DIMS), dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 50, (12,))
    output = nested_heads_cross_entropy(heads, inputs, labels, [1.0] * len(DIMS), chunk_size=chunk_size)
    return (output.per_dim_losses, *torch.autograd.grad(output.loss, [inputs, *heads.parameters()]))


def test_kernel_threads_are_torchs_capped_at_the_usable_cpus(monkeypatch):
    monkeypatch.setattr(cpu_threads, "usable_cpus", lambda: 2)
    cpu = torch.zeros(1)
    torch.set_num_threads(1)
    assert cpu_threads.kernel_threads(cpu) == 1
    torch.set_num_threads(4)
    assert cpu_threads.kernel_threads(cpu) == 2
    assert cpu_threads.kernel_threads(torch.zeros(1, device="meta")) == 1  # not a CPU: chunks do not scale


def test_the_setting_comes_back_after_an_error(one_usable_cpu):
    with pytest.raises(RuntimeError, match="inside"):
        with cpu_threads.threads_within_cpus(torch.device("cpu")):
            assert torch.get_num_threads() == 1
            raise RuntimeError("inside")
    assert torch.get_num_threads() == 3


def test_contrastive_kernel_runs_within_the_usable_cpus(one_usable_cpu, monkeypatch):
    seen = spy_threads(monkeypatch, fused_infonce, "_block_elements")
    per_dim, *grads = contrastive_values(3)
    assert seen and set(seen) == {1}  # forward and backward, both row-blocked, both on one thread
    assert torch.get_num_threads() == 3
    reference = contrastive_values(1)
    for value, expected in zip([per_dim, *grads], reference, strict=True):
        torch.testing.assert_close(value, expected, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("chunk_size", [None, 16], ids=["one pass", "label chunks"])
def test_cross_entropy_kernel_runs_within_the_usable_cpus(one_usable_cpu, monkeypatch, chunk_size):
    kernel = "_one_pass" if chunk_size is None else "_two_pass_forward"
    seen = spy_threads(monkeypatch, fused_cross_entropy, kernel)
    backward = spy_threads(monkeypatch, fused_cross_entropy, "_two_pass_backward")
    per_dim, *grads = cross_entropy_values(3, chunk_size)
    assert seen == [1] and set(backward) <= {1} and (chunk_size is None or backward == [1])
    assert torch.get_num_threads() == 3
    reference = cross_entropy_values(1, chunk_size)
    for value, expected in zip([per_dim, *grads], reference, strict=True):
        torch.testing.assert_close(value, expected, atol=1e-12, rtol=1e-12)


def test_more_threads_within_the_cpus_are_kept(monkeypatch):
    """Two usable CPUs and two threads: the kernels run on both."""
    monkeypatch.setattr(cpu_threads, "usable_cpus", lambda: 2)
    seen = spy_threads(monkeypatch, fused_infonce, "_block_elements")
    contrastive_values(2)
    assert set(seen) == {2}
