"""`MatryoshkaTrainer` checkpoints: written under a temp name and renamed, rotated without losing the newest or the
best, resumed bit-exactly, found by "latest" / True only when complete."""

import json

import pytest
import torch

from hf_mrl.modeling.files import record_written_files
from hf_mrl.training import (
    TEMP_PREFIX,
    checkpoint_path,
    latest_checkpoint,
    list_checkpoints,
    resolve_resume_checkpoint,
    rotate_checkpoints,
)

from .trainer_helpers import save_checkpoint_at, tiny_classifier, tiny_trainer, weights


def test_training_saves_rotates_and_keeps_the_newest(tmp_path):
    trainer = tiny_trainer(tmp_path, max_steps=4, save_strategy="steps", save_steps=1, save_total_limit=2)
    trainer.train()
    assert [step for step, _ in list_checkpoints(tmp_path)] == [3, 4]
    assert latest_checkpoint(tmp_path) == checkpoint_path(tmp_path, 4)
    folder = checkpoint_path(tmp_path, 4)
    assert json.loads((folder / "trainer_state.json").read_text())["global_step"] == 4
    for name in ("model.safetensors", "config.json", "optimizer.pt", "scheduler.pt", "rng_state.pth"):
        assert (folder / name).is_file(), name
    assert not list(folder.glob("*.bin")) and not list(folder.glob("*.pkl"))  # nothing pickled but torch states
    assert not any(path.name.startswith(TEMP_PREFIX) for path in tmp_path.iterdir())


def test_half_written_checkpoint_is_ignored(tmp_path):
    save_checkpoint_at(tmp_path, 1)
    (tmp_path / f"{TEMP_PREFIX}2.tmp-save").mkdir()  # a save killed before its rename
    cut_short = tmp_path / "checkpoint-3"  # a rotation killed after deleting the trainer state: ours, incomplete
    cut_short.mkdir()
    (cut_short / "optimizer.pt").write_bytes(b"left over")
    record_written_files(cut_short)
    assert resolve_resume_checkpoint(tmp_path, "latest") == checkpoint_path(tmp_path, 1)
    assert resolve_resume_checkpoint(tmp_path, True) == checkpoint_path(tmp_path, 1)
    save_checkpoint_at(tmp_path, 2)
    assert [step for step, _ in list_checkpoints(tmp_path)] == [1, 2]
    assert not (tmp_path / f"{TEMP_PREFIX}2.tmp-save").exists()  # the next save removed the leftovers
    assert not cut_short.exists()


def test_resume_continues_exactly_where_the_run_stopped(tmp_path):
    common = dict(max_steps=6, save_strategy="steps", save_steps=3, per_device_train_batch_size=8)
    full = tiny_trainer(tmp_path / "full", model=tiny_classifier(dropout=0.1), **common)
    full.train()
    first = tiny_trainer(tmp_path / "part", model=tiny_classifier(dropout=0.1), **common)
    first.train()
    # a new process: other weights and RNG states, resumed from the step-3 checkpoint
    torch.manual_seed(123)
    resumed = tiny_trainer(tmp_path / "part", model=tiny_classifier(seed=5, dropout=0.1), **common)
    output = resumed.train(resume_from_checkpoint=str(checkpoint_path(tmp_path / "part", 3)))
    assert output.global_step == 6
    expected = weights(full.model)
    for name, value in weights(resumed.model).items():
        torch.testing.assert_close(value, expected[name], rtol=0, atol=1e-6, msg=name)


def test_rotation_keeps_the_newest_and_the_best(tmp_path):
    for step in (1, 2, 3, 4):
        save_checkpoint_at(tmp_path, step)
    deleted = rotate_checkpoints(tmp_path, 1, keep=checkpoint_path(tmp_path, 2))
    assert [path.name for path in deleted] == ["checkpoint-1", "checkpoint-3"]
    assert [step for step, _ in list_checkpoints(tmp_path)] == [2, 4]


def test_resolve_resume_checkpoint_arguments(tmp_path):
    assert resolve_resume_checkpoint(tmp_path, None) is None
    assert resolve_resume_checkpoint(tmp_path, "latest") is None  # nothing saved yet: start fresh
    with pytest.raises(ValueError, match="resume_from_checkpoint"):
        resolve_resume_checkpoint(tmp_path, tmp_path / "missing")
    with pytest.raises(ValueError, match="trainer_state.json"):
        resolve_resume_checkpoint(tmp_path, tmp_path)
    with pytest.raises(ValueError, match="save_total_limit"):
        rotate_checkpoints(tmp_path, 0)


def test_rotation_keeps_a_users_files_whatever_their_extension(tmp_path):
    for step in (1, 2):
        save_checkpoint_at(tmp_path, step)
    folder = checkpoint_path(tmp_path, 1)
    (folder / "notes.txt").write_text("mine")
    (folder / "data.json").write_text("{}")
    with pytest.warns(UserWarning, match=r"kept \['data.json', 'notes.txt'\]"):
        rotate_checkpoints(tmp_path, 1)
    assert sorted(path.name for path in folder.iterdir()) == ["data.json", "notes.txt"]
    assert [step for step, _ in list_checkpoints(tmp_path)] == [2]
