"""push_to_hub_with_card against a local fake Hub (tests/hub_server.py), then snapshot_download and load."""

import json
import tempfile

import pytest
import torch
from huggingface_hub import ModelCard, constants, snapshot_download
from huggingface_hub.errors import HfHubHTTPError

from hf_mrl import MatryoshkaConfig, MatryoshkaModel
from hf_mrl.hub import push_to_hub_with_card

from .hub_server import FakeHub, FakeHubServer
from .tiny import tiny_bert_config, tiny_inputs

TOKEN = "hf_test_token"
RESULTS = {"wordnet_dim8_recall@10": 0.4, "wordnet_dim16_recall@10": 0.5, "wordnet_dim24_recall@10": 0.55}


@pytest.fixture
def online(monkeypatch, tmp_path):
    """Network allowed (to 127.0.0.1 only: the fake server), no stored or environment token, a private
    download cache and a private temp dir, so leftovers of a failed push would be visible."""
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HF_OIDC_RESOURCE", raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    temp_dir = tmp_path / "tmp"
    temp_dir.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp_dir))
    return temp_dir


@pytest.fixture
def model():
    torch.manual_seed(0)
    config = MatryoshkaConfig(backbone_config=tiny_bert_config(), embedding_dim=24, matryoshka_dims=[8, 16, 24])
    return MatryoshkaModel(config).eval()


def test_push_then_download_and_load(online, model, tmp_path):
    with FakeHubServer() as server:
        info = push_to_hub_with_card(
            model, "test-user/tiny-mrl", RESULTS, token=TOKEN, endpoint=server.endpoint, commit_message="first"
        )
        repo = server.hub.repos["test-user/tiny-mrl"]
        assert info.oid == repo.sha
        assert {"model.safetensors", "config.json", "README.md", "matryoshka_results.png"} <= set(repo.files)
        assert not any(name.endswith((".bin", ".pt", ".pkl")) for name in repo.files)
        folder = snapshot_download(
            "test-user/tiny-mrl", endpoint=server.endpoint, token=TOKEN, cache_dir=tmp_path / "cache"
        )
    loaded = MatryoshkaModel.from_pretrained(folder).eval()
    inputs = tiny_inputs("bert")
    torch.testing.assert_close(loaded.encode(**inputs, dim=8), model.encode(**inputs, dim=8))
    config = json.loads(open(f"{folder}/config.json").read())
    assert config["is_matryoshka"] is True and config["matryoshka_dimensions"] == [24, 16, 8]
    card = ModelCard.load(f"{folder}/README.md")
    assert card.data.model_name == "tiny-mrl"
    assert "matryoshka" in card.data.tags
    assert len(card.data.eval_results) == 3  # one per dim


def test_push_to_existing_repo_adds_a_commit(online, model):
    with FakeHubServer() as server:
        first = push_to_hub_with_card(model, "test-user/again", token=TOKEN, endpoint=server.endpoint)
        second = push_to_hub_with_card(model, "test-user/again", RESULTS, token=TOKEN, endpoint=server.endpoint)
        assert first.oid != second.oid
        assert "matryoshka_results.png" in server.hub.repos["test-user/again"].files


def test_push_with_a_bare_name_goes_to_the_token_owner_namespace(online, model):
    with FakeHubServer() as server:
        push_to_hub_with_card(model, "tiny", token=TOKEN, endpoint=server.endpoint)
        assert "model.safetensors" in server.hub.repos["test-user/tiny"].files


def test_push_without_token_fails_before_any_request(online, model):
    with FakeHubServer() as server:
        with pytest.raises(ValueError, match="No Hugging Face token"):
            push_to_hub_with_card(model, "test-user/x", endpoint=server.endpoint)
        assert server.hub.requests == []
    assert list(online.iterdir()) == []


def test_push_with_rejected_token_raises_http_401_and_cleans_up(online, model):
    with FakeHubServer() as server:
        with pytest.raises(HfHubHTTPError) as error:
            push_to_hub_with_card(model, "test-user/x", token="hf_wrong", endpoint=server.endpoint)
        assert error.value.response.status_code == 401
        assert server.hub.repos == {}
    assert list(online.iterdir()) == []


@pytest.mark.parametrize("failing", ["create", "commit"])
def test_push_server_error_leaves_no_local_state(online, model, failing):
    with FakeHubServer(FakeHub(fail_with={failing: 500})) as server:
        with pytest.raises(HfHubHTTPError) as error:
            push_to_hub_with_card(model, "test-user/x", token=TOKEN, endpoint=server.endpoint)
        assert error.value.response.status_code == 500
        repo = server.hub.repos.get("test-user/x")
        assert repo is None or repo.files == {}  # nothing committed
    assert list(online.iterdir()) == []


@pytest.mark.parametrize("repo_id", ["a/b/c", "has space/model", "", "-bad-/x", "x" * 200])
def test_push_malformed_repo_id_fails_before_any_request(online, model, repo_id):
    with FakeHubServer() as server:
        with pytest.raises(ValueError, match="repo_id"):
            push_to_hub_with_card(model, repo_id, token=TOKEN, endpoint=server.endpoint)
        assert server.hub.requests == []
    assert list(online.iterdir()) == []


def test_push_refuses_in_offline_mode(model, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(RuntimeError, match="offline"):
        push_to_hub_with_card(model, "test-user/x", token=TOKEN, endpoint="http://127.0.0.1:9")


def test_push_rejects_bad_results_before_any_request(online, model):
    with FakeHubServer() as server:
        with pytest.raises(ValueError, match="results"):
            push_to_hub_with_card(model, "test-user/x", {"accuracy": 0.5}, token=TOKEN, endpoint=server.endpoint)
        assert server.hub.requests == []
