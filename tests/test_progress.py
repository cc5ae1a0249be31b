"""Progress bars and log lines: bars only on a terminal unless asked for, none while switched off or nested inside
training, transformers' and datasets' switches restored, one readable line per training log."""

import io
import sys

import datasets
import numpy as np
import pytest
import transformers
from PIL import Image

from hf_mrl import ImageCollator
from hf_mrl.data import corrupt_dataset
from hf_mrl.modeling.encoding import encode_dataset
from hf_mrl.modeling.progress import (
    DISABLE_PROGRESS_BAR_ENV,
    quiet_progress,
    should_show_progress,
    transformers_progress_bars,
)
from hf_mrl.training import MatryoshkaTrainingArguments
from hf_mrl.training.tracking import format_log_line

from .trainer_helpers import image_rows, tiny_classifier, tiny_trainer


class Terminal(io.StringIO):
    """A stderr that says it is a terminal, keeping what is written to it."""

    def isatty(self) -> bool:
        return True


def use_terminal(monkeypatch) -> Terminal:
    """stderr is a terminal from here on (called in the test itself: pytest sets its own stderr after set-up)."""
    stream = Terminal()
    monkeypatch.setattr(sys, "stderr", stream)
    return stream


@pytest.fixture(autouse=True)
def bars_switched_on(monkeypatch):
    monkeypatch.delenv(DISABLE_PROGRESS_BAR_ENV, raising=False)
    monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS", raising=False)
    assert transformers.utils.logging.is_progress_bar_enabled() and not datasets.are_progress_bars_disabled()
    yield
    # every switch hf_mrl turned is back as it was
    assert transformers.utils.logging.is_progress_bar_enabled() and not datasets.are_progress_bars_disabled()


def test_bars_only_on_a_terminal_unless_asked_for(monkeypatch):
    use_terminal(monkeypatch)
    assert should_show_progress() and should_show_progress(True) and not should_show_progress(False)
    with quiet_progress():
        assert not should_show_progress() and should_show_progress(True)
    assert should_show_progress()
    monkeypatch.setenv(DISABLE_PROGRESS_BAR_ENV, "1")
    assert not should_show_progress() and should_show_progress(True)
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # a log file
    monkeypatch.delenv(DISABLE_PROGRESS_BAR_ENV)
    assert not should_show_progress() and should_show_progress(True)


def test_transformers_switches_off_are_respected_and_restored(monkeypatch):
    use_terminal(monkeypatch)
    transformers.utils.logging.disable_progress_bar()
    try:
        assert not should_show_progress()
        with transformers_progress_bars(False):  # already off: stays off after
            pass
        assert not transformers.utils.logging.is_progress_bar_enabled()
    finally:
        transformers.utils.logging.enable_progress_bar()
    with transformers_progress_bars(False):
        assert not transformers.utils.logging.is_progress_bar_enabled() and not should_show_progress()
    assert should_show_progress()


def test_encoding_bar_follows_the_terminal_the_request_and_the_environment(monkeypatch):
    terminal = use_terminal(monkeypatch)
    model, rows, collate = tiny_classifier(), image_rows(8), ImageCollator()
    encode_dataset(model, rows, collate, batch_size=4, description="Encoding rows")
    assert "Encoding rows" in terminal.getvalue()  # a terminal: a bar

    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    encode_dataset(model, rows, collate, batch_size=4, description="Encoding rows")
    assert log.getvalue() == ""  # a log file: none
    encode_dataset(model, rows, collate, batch_size=4, description="Encoding rows", show_progress=True)
    assert "Encoding rows" in log.getvalue()  # asked for: one anyway

    monkeypatch.setattr(sys, "stderr", terminal := Terminal())
    monkeypatch.setenv(DISABLE_PROGRESS_BAR_ENV, "1")
    encode_dataset(model, rows, collate, batch_size=4, description="Encoding rows")
    assert terminal.getvalue() == ""


def test_corruptions_draw_one_bar_on_a_terminal_and_none_in_a_log(monkeypatch):
    terminal = use_terminal(monkeypatch)
    images = datasets.Dataset.from_dict({"image": [Image.new("L", (28, 28)) for _ in range(4)], "label": [0, 1, 0, 1]})
    corrupt_dataset(images, "noise", 1)
    assert "Corrupting (noise-1)" in terminal.getvalue()
    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    corrupted = corrupt_dataset(images, "noise", 1)
    assert log.getvalue() == "" and not np.array_equal(np.asarray(corrupted["image"][0]), np.zeros((28, 28)))


def test_saves_draw_no_transformers_bar_and_loads_only_on_a_terminal(monkeypatch, tmp_path):
    terminal = use_terminal(monkeypatch)
    model = tiny_classifier()
    model.save_pretrained(tmp_path / "model")
    assert "Writing model shards" not in terminal.getvalue()
    type(model).from_pretrained(tmp_path / "model")
    assert "Loading weights" in terminal.getvalue()  # transformers' own bar, on a terminal
    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    type(model).from_pretrained(tmp_path / "model")
    assert "Loading weights" not in log.getvalue()


def test_disable_tqdm_defaults_to_true_without_a_terminal(monkeypatch, tmp_path):
    use_terminal(monkeypatch)
    assert MatryoshkaTrainingArguments(output_dir=str(tmp_path)).disable_tqdm is False
    monkeypatch.setenv(DISABLE_PROGRESS_BAR_ENV, "1")
    assert MatryoshkaTrainingArguments(output_dir=str(tmp_path)).disable_tqdm is True
    monkeypatch.delenv(DISABLE_PROGRESS_BAR_ENV)
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert MatryoshkaTrainingArguments(output_dir=str(tmp_path)).disable_tqdm is True
    assert MatryoshkaTrainingArguments(output_dir=str(tmp_path), disable_tqdm=False).disable_tqdm is False  # given


def test_a_run_logged_to_a_file_prints_one_line_per_step_and_no_bar(tmp_path, capfd):
    trainer = tiny_trainer(tmp_path, disable_tqdm=None, max_steps=2, eval_dataset=image_rows(8), eval_strategy="steps",
                           eval_steps=2, save_strategy="steps", save_steps=2)
    assert trainer.args.disable_tqdm is True  # pytest's captured stderr is no terminal
    trainer.train()
    captured = capfd.readouterr()
    assert "\r" not in captured.err and "it/s" not in captured.err, captured.err
    lines = captured.out.splitlines()
    for step in (1, 2):
        assert any(line.startswith(f"step {step}/2 | epoch ") and " | loss " in line
                   and "(dim8 " in line and ", dim16 " in line for line in lines), captured.out
    assert any(line.startswith("step 2/2 | ") and "eval dim16: top1 " in line for line in lines), captured.out


def test_evaluation_inside_training_draws_no_bar_of_its_own(monkeypatch, tmp_path, capfd):
    terminal = use_terminal(monkeypatch)
    trainer = tiny_trainer(tmp_path, disable_tqdm=False, max_steps=2, eval_dataset=image_rows(8),
                           eval_strategy="steps", eval_steps=1)
    trainer.train()
    assert "2/2" in terminal.getvalue()  # the training bar
    assert "Encoding" not in terminal.getvalue()  # no evaluator bar nested in it
    assert "step 1/2 | epoch " in capfd.readouterr().out  # logs written above the bar, one line each


def test_log_line_format():
    logs = {"loss": 1.23456, "grad_norm": 0.5, "learning_rate": 1e-3, "loss_dim16": 1.1, "loss_dim8": 1.3,
            "epoch": 0.25, "total_flos": 7.0}
    assert format_log_line(logs, 3, 12) == (
        "step 3/12 | epoch 0.25 | loss 1.235 (dim8 1.3, dim16 1.1) | grad_norm 0.5 | learning_rate 0.001"
    )
    assert format_log_line({"eval_fmnist_dim8_top1": 0.5, "eval_fmnist_dim8_1nn": 0.25, "eval_fmnist_dim16_top1": 0.75},
                           4) == "step 4 | eval_fmnist dim8: top1 0.5, 1nn 0.25 | eval_fmnist dim16: top1 0.75"
