"""SIGKILL at random moments of saving, then a normal save: what was there is complete, and no temp folder is left.

A child process saves an index, a model (`save_pretrained`), a model with its card and a training checkpoint in a
loop; it is killed several times at random moments. After each kill every saved folder must load; after the
next save from this process, no `.tmp-` / `.old-` folder may be left.
"""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hf_mrl.hub import load_matryoshka_model, save_with_card
from hf_mrl.index import MatryoshkaIndex
from hf_mrl.training import latest_checkpoint

from ..trainer_helpers import save_checkpoint_at
from .files_helpers import debris, tiny_index, tiny_model

REPO = Path(__file__).resolve().parents[2]
SAVE_FOREVER = """
import sys
from pathlib import Path
import numpy as np, torch
from hf_mrl import MatryoshkaConfig, MatryoshkaModel
from hf_mrl.hub import save_with_card
from hf_mrl.index import MatryoshkaIndex
from transformers import ViTConfig

root = Path(sys.argv[1])
vectors = np.random.default_rng(0).standard_normal((20000, 64)).astype(np.float32)  # 5 MB: saves take a while
index = MatryoshkaIndex(vectors, shortlist_dim=16, show_progress=False)
config = ViTConfig(image_size=28, patch_size=7, num_channels=1, hidden_size=128, num_hidden_layers=4,
                   num_attention_heads=4, intermediate_size=256)
model = MatryoshkaModel(MatryoshkaConfig(backbone_config=config))
sys.path.insert(0, str(Path(sys.argv[2])))
from transformers import TrainerCallback
from tests.trainer_helpers import tiny_trainer


class SaveTheRest(TrainerCallback):
    # after each checkpoint (one every step), the other savers: the run is saving almost all the time

    def on_save(self, args, state, control, **kwargs):
        index.save(root / "index")
        model.save_pretrained(root / "model")
        save_with_card(model, root / "card")


trainer = tiny_trainer(root / "run", max_steps=10**6, save_strategy="steps", save_steps=1, save_total_limit=2)
trainer.add_callback(SaveTheRest())
print("ready", flush=True)
trainer.train(resume_from_checkpoint="latest")
"""


def _kill_during_saves(root: Path, seed: int) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen([sys.executable, "-c", SAVE_FOREVER, str(root), str(REPO)], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, env=env, cwd=REPO, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        time.sleep(random.Random(seed).uniform(0.3, 2.0))
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()


def _assert_complete(root: Path) -> None:
    """Whatever a killed save left in place is complete: it loads."""
    if (root / "index").exists():
        assert MatryoshkaIndex.load(root / "index").count == 20000
    for name in ("model", "card"):
        if (root / name).exists():
            assert load_matryoshka_model(root / name).config.embedding_dim == 128
    if latest_checkpoint(root / "run") is not None:
        assert (latest_checkpoint(root / "run") / "model.safetensors").is_file()


@pytest.mark.slow
def test_kills_during_saves_leave_complete_folders_and_the_next_save_cleans_up(tmp_path):
    seen = []
    for seed in range(5):
        _kill_during_saves(tmp_path, seed)
        seen += debris(tmp_path) + (debris(tmp_path / "run") if (tmp_path / "run").is_dir() else [])
        _assert_complete(tmp_path)  # the loads also remove what the killed save left
    assert seen, "no kill landed inside a save: the test did not exercise the clean-up"

    tiny_index().save(tmp_path / "index")
    tiny_model().save_pretrained(tmp_path / "model")
    save_with_card(tiny_model(), tmp_path / "card")
    save_checkpoint_at(tmp_path / "run", 3)
    assert debris(tmp_path) == [] and debris(tmp_path / "run") == []
    assert MatryoshkaIndex.load(tmp_path / "index").count == 40
    assert load_matryoshka_model(tmp_path / "model").config.embedding_dim == 24
