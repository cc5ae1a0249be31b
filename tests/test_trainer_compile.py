"""`torch_compile=True` through `MatryoshkaTrainer` (inductor on the CPU): the same losses as eager."""

import pytest

from .trainer_helpers import tiny_trainer


@pytest.mark.slow
def test_torch_compile_equals_eager(tmp_path):
    def losses(**flags):
        trainer = tiny_trainer(tmp_path / str(flags), max_steps=3, logging_steps=1, **flags)
        trainer.train()
        return [entry["loss"] for entry in trainer.state.log_history if "loss" in entry], trainer

    eager, _ = losses()
    compiled, trainer = losses(torch_compile=True)
    assert trainer.model_wrapped is not trainer.model  # the compiled module ran the steps
    assert compiled == pytest.approx(eager, rel=1e-4, abs=1e-5)
