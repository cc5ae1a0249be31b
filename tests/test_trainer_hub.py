"""`push_to_hub=True` through `MatryoshkaTrainer`: the model, its processor and hf_mrl's card (per-dim table, class
names) land on the Hub (the local fake Hub of tests/hub_server.py)."""

import pytest
from huggingface_hub import constants

from .hub_server import FakeHubServer
from .trainer_helpers import image_rows, tiny_trainer

TOKEN = "hf_test_token"


@pytest.fixture
def hub(monkeypatch, tmp_path):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    with FakeHubServer() as server:
        monkeypatch.setattr(constants, "ENDPOINT", server.endpoint)
        yield server


def test_push_to_hub_lands_model_and_card_on_the_hub(hub, tmp_path):
    rows = image_rows(32)
    trainer = tiny_trainer(tmp_path / "run", eval_dataset=rows.select(range(16)), push_to_hub=True,
                           hub_model_id="test-user/tiny-trained", hub_token=TOKEN, hub_strategy="end", max_steps=2)
    trainer.name = "toy"
    trainer.train()
    assert hub.hub.repos == {}  # hub_strategy="end": nothing during training
    trainer.evaluate()
    trainer.save_model()  # pushes, as Trainer.save_model does with push_to_hub
    repo = hub.hub.repos["test-user/tiny-trained"]
    assert {"model.safetensors", "config.json", "preprocessor_config.json", "README.md",
            "matryoshka_results.png"} <= set(repo.files)
    assert not any(name.endswith((".bin", ".pt", ".pth", ".pkl")) for name in repo.files)
    card = repo.files["README.md"].decode()
    assert "| 8 |" in card and "| 16 |" in card  # the per-dim table
    assert "class0" in repo.files["config.json"].decode()  # class names in config.id2label


def test_every_save_pushes_each_checkpoint(hub, tmp_path):
    trainer = tiny_trainer(tmp_path / "run", push_to_hub=True, hub_model_id="test-user/every", hub_token=TOKEN,
                           save_strategy="steps", save_steps=1, max_steps=2)
    trainer.train()
    commits = [path for method, path in hub.hub.requests if method == "POST" and "/commit/" in path]
    assert len(commits) == 2 and "model.safetensors" in hub.hub.repos["test-user/every"].files
