import json

import pytest
import torch
from accelerate import Accelerator

from hf_mrl.training import (
    TEMP_PREFIX,
    checkpoint_path,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    parse_checkpointing_steps,
    resolve_resume_checkpoint,
    rotate_checkpoints,
    save_checkpoint,
)


def _prepared(seed: int = 0):
    torch.manual_seed(seed)
    accelerator = Accelerator(cpu=True)
    model = torch.nn.Linear(4, 3)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    model, optimizer = accelerator.prepare(model, optimizer)
    return accelerator, model, optimizer


def _step(accelerator, model, optimizer):
    loss = model(torch.randn(8, 4)).pow(2).mean()
    accelerator.backward(loss)
    optimizer.step()
    optimizer.zero_grad()


def test_save_rotates_and_keeps_newest(tmp_path):
    accelerator, model, optimizer = _prepared()
    for step in (1, 2, 3, 4):
        _step(accelerator, model, optimizer)
        saved = save_checkpoint(accelerator, tmp_path, step, keep_last=2, trainer_state={"epoch": 0})
        assert saved == checkpoint_path(tmp_path, step)
    assert [step for step, _ in list_checkpoints(tmp_path)] == [3, 4]
    assert latest_checkpoint(tmp_path) == checkpoint_path(tmp_path, 4)
    state = json.loads((checkpoint_path(tmp_path, 4) / "trainer_state.json").read_text())
    assert state == {"step": 4, "epoch": 0}
    assert (checkpoint_path(tmp_path, 4) / "model.safetensors").is_file()
    assert not any(path.name.startswith(TEMP_PREFIX) for path in tmp_path.iterdir())


def test_half_written_checkpoint_is_ignored(tmp_path):
    accelerator, model, optimizer = _prepared()
    save_checkpoint(accelerator, tmp_path, 1)
    (tmp_path / f"{TEMP_PREFIX}2").mkdir()  # a save killed before its rename
    (tmp_path / "checkpoint-3").mkdir()  # no trainer_state.json: not ours or not complete
    assert resolve_resume_checkpoint(tmp_path, "latest") == checkpoint_path(tmp_path, 1)
    save_checkpoint(accelerator, tmp_path, 2)
    assert [step for step, _ in list_checkpoints(tmp_path)] == [1, 2]


def test_load_restores_weights_optimizer_and_rng(tmp_path):
    accelerator, model, optimizer = _prepared()
    _step(accelerator, model, optimizer)
    save_checkpoint(accelerator, tmp_path, 1, trainer_state={"epoch": 0, "batches_in_epoch": 1})
    _step(accelerator, model, optimizer)
    expected = {name: value.clone() for name, value in model.state_dict().items()}

    accelerator, model, optimizer = _prepared(seed=123)
    state = load_checkpoint(accelerator, resolve_resume_checkpoint(tmp_path, "latest"))
    assert state == {"step": 1, "epoch": 0, "batches_in_epoch": 1}
    _step(accelerator, model, optimizer)  # same RNG draws and Adam moments as the first run's second step
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, expected[name], rtol=0, atol=1e-7)


def test_resolve_resume_checkpoint_arguments(tmp_path):
    assert resolve_resume_checkpoint(tmp_path, None) is None
    assert resolve_resume_checkpoint(tmp_path, "latest") is None  # nothing saved yet: start fresh
    with pytest.raises(ValueError, match="resume_from_checkpoint"):
        resolve_resume_checkpoint(tmp_path, tmp_path / "missing")
    with pytest.raises(ValueError, match="trainer_state.json"):
        resolve_resume_checkpoint(tmp_path, tmp_path)


def test_parse_checkpointing_steps_and_keep_last(tmp_path):
    assert parse_checkpointing_steps(None) is None
    assert parse_checkpointing_steps("no") is None
    assert parse_checkpointing_steps("epoch") == "epoch"
    assert parse_checkpointing_steps("25") == 25
    for bad in ("0", "-3", "often", 0, True):
        with pytest.raises(ValueError, match="checkpointing_steps"):
            parse_checkpointing_steps(bad)
    with pytest.raises(ValueError, match="keep_last"):
        rotate_checkpoints(tmp_path, 0)
