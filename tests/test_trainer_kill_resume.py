"""SIGKILL at random moments of training and of checkpointing, then resume: the final weights equal an
uninterrupted run's (1e-6), and no half-written checkpoint is ever resumed from."""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hf_mrl.training import list_checkpoints

REPO = Path(__file__).resolve().parents[1]
STEPS = 300
TRAIN = f"""
import sys
sys.path.insert(0, {str(REPO)!r})
from tests.trainer_helpers import image_rows, tiny_classifier, tiny_trainer
trainer = tiny_trainer(sys.argv[1], model=tiny_classifier(dropout=0.1), train_dataset=image_rows(40),
                       max_steps={STEPS}, per_device_train_batch_size=8, gradient_accumulation_steps=2,
                       save_strategy="steps", save_steps=1, save_total_limit=2)
print("ready", flush=True)
trainer.train(resume_from_checkpoint="latest")
trainer.save_model()
"""


def _start(output_dir: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen([sys.executable, "-c", TRAIN, str(output_dir)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, env=env, text=True)
    assert child.stdout.readline().strip() == "ready", child.stderr.read()[-3000:]
    return child


@pytest.mark.slow
def test_ten_sigkills_then_resume_equal_an_uninterrupted_run(tmp_path):
    killed, steps_at_kill, rng = tmp_path / "killed", [], random.Random(0)
    while len(steps_at_kill) < 10:
        child = _start(killed)
        time.sleep(rng.uniform(0.05, 1.2))
        child.send_signal(signal.SIGKILL)
        child.wait()
        if (killed / "model").exists():
            pytest.fail(f"the run finished before its 10th kill (kills at steps {steps_at_kill})")
        steps_at_kill.append(list_checkpoints(killed)[-1][0] if list_checkpoints(killed) else 0)
    assert steps_at_kill[-1] < STEPS
    finished = _start(killed)
    assert finished.wait(timeout=300) == 0, finished.stderr.read()[-3000:]
    uninterrupted = _start(tmp_path / "uninterrupted")
    assert uninterrupted.wait(timeout=300) == 0, uninterrupted.stderr.read()[-3000:]
    expected = load_file(tmp_path / "uninterrupted" / "model" / "model.safetensors")
    actual = load_file(killed / "model" / "model.safetensors")
    assert expected.keys() == actual.keys()
    for name, tensor in expected.items():
        torch.testing.assert_close(actual[name], tensor, rtol=0, atol=1e-6, msg=name)
    assert len(set(steps_at_kill)) > 3, steps_at_kill  # the kills landed at different moments
