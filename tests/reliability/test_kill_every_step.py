"""SIGKILL at every file-system step of a folder replacement (model, index, checkpoint): afterwards the artefact
loads at its name (the old one or the new one, complete), the user's file in it is intact, and the next save
leaves no hidden folder. Each kill happens in a forked child that counts its own file-system calls."""

import os
import shutil
import signal

import numpy as np
import pytest
import torch

import hf_mrl.modeling.files as files
from hf_mrl.index import MatryoshkaIndex
from hf_mrl.modeling.files import move_into_place, remove_stale_temp_folders
from hf_mrl.modeling.modeling_matryoshka import MatryoshkaModel
from hf_mrl.training.checkpointing import CHECKPOINT_FOLDER, check_checkpoint_files, list_checkpoints

from ..trainer_helpers import save_checkpoint_at
from .files_helpers import debris, tiny_index, tiny_model

pytestmark = pytest.mark.slow

FILE_SYSTEM_CALLS = ("replace", "rename", "link", "unlink", "rmdir", "mkdir", "symlink")
USER_FILE = ("notes.txt", "the user's, never lost")


def _killed_at(step: int, action) -> bool:
    """Runs `action` in a forked child that SIGKILLs itself at its `step`-th file-system call; False when the
    action finished first."""
    pid = os.fork()
    if pid == 0:  # the child: count, kill, or finish
        code = 1
        try:
            signal.alarm(60)  # a hung child dies of SIGALRM, which the parent reports
            calls = [0]

            def counting(real):
                def call(*args, **kwargs):
                    calls[0] += 1
                    if calls[0] == step:
                        os.kill(os.getpid(), signal.SIGKILL)
                    return real(*args, **kwargs)
                return call

            for name in FILE_SYSTEM_CALLS:
                setattr(os, name, counting(getattr(os, name)))
            files._exchange = counting(files._exchange)
            action()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        assert os.WTERMSIG(status) == signal.SIGKILL, f"the child died of signal {os.WTERMSIG(status)} at step {step}"
        return True
    assert os.WEXITSTATUS(status) == 0, f"the save failed at step {step}"
    return False


def _every_step(tmp_path, target, save_old, save_new, read, old, new) -> int:
    """Kills `save_new` at each of its steps in turn; returns how many steps there were."""
    torch.set_num_threads(1)  # no thread pool for the forked children to inherit mid-use
    step = 0
    while True:
        step += 1
        save_old()
        (target / USER_FILE[0]).write_text(USER_FILE[1])
        if not _killed_at(step, save_new):
            return step - 1
        assert read() in (old, new), f"after a kill at step {step} the folder holds neither save"
        assert (target / USER_FILE[0]).read_text() == USER_FILE[1], f"the user's file changed at step {step}"
        save_new()
        assert read() == new and debris(tmp_path) == [], f"a kill at step {step} left {debris(tmp_path)}"
        assert (target / USER_FILE[0]).read_text() == USER_FILE[1]


def test_a_model_save_killed_at_every_step(tmp_path):
    target = tmp_path / "model"
    old_model, new_model = tiny_model(seed=0), tiny_model(seed=1)

    def read():
        weight = MatryoshkaModel.from_pretrained(target).state_dict()["projection.weight"]
        return "old" if torch.equal(weight, old_model.projection.weight) else "new" if torch.equal(
            weight, new_model.projection.weight) else "other"

    steps = _every_step(tmp_path, target, lambda: old_model.save_pretrained(target),
                        lambda: new_model.save_pretrained(target), read, "old", "new")
    assert steps >= 5


def test_an_index_save_killed_at_every_step(tmp_path):
    target = tmp_path / "index"
    old_index, new_index = tiny_index(count=40, seed=0), tiny_index(count=30, seed=1)
    steps = _every_step(tmp_path, target, lambda: old_index.save(target), lambda: new_index.save(target),
                        lambda: MatryoshkaIndex.load(target).count, 40, 30)
    assert steps >= 5


def test_a_checkpoint_save_killed_at_every_step(tmp_path):
    old_source = save_checkpoint_at(tmp_path / "run-a", 1, seed=0)
    new_source = save_checkpoint_at(tmp_path / "run-b", 1, seed=1)
    runs = tmp_path / "out"
    runs.mkdir()
    target = runs / "checkpoint-1"

    def save(source):  # as MatryoshkaTrainer._save_checkpoint: sweep, stage, swap
        def run():
            remove_stale_temp_folders(target, CHECKPOINT_FOLDER, name_pattern="checkpoint-*")
            staging = runs / ".checkpoint-1.tmp-save"
            shutil.copytree(source, staging)
            (staging / files.RECORD_NAME).unlink()  # recorded again at the swap, as a fresh save is
            move_into_place(staging, target, CHECKPOINT_FOLDER)
        return run

    def read():
        check_checkpoint_files(target)
        assert [path for _, path in list_checkpoints(runs)] == [target]
        weights = (target / "model.safetensors").read_bytes()
        return {(old_source / "model.safetensors").read_bytes(): "old",
                (new_source / "model.safetensors").read_bytes(): "new"}.get(weights, "other")

    steps = _every_step(runs, target, save(old_source), save(new_source), read, "old", "new")
    assert steps >= 5
    assert np.all([not name.startswith(".") or name == files.RECORD_NAME for name in os.listdir(target)])
