"""A save owns only what it recorded: files it did not write (or that changed since) are never deleted, moved or
overwritten, whatever their names; a symlinked target is written through."""

import json
import os

import numpy as np
import pytest
import torch

from hf_mrl.hub import save_with_card
from hf_mrl.index import MatryoshkaIndex
from hf_mrl.modeling.files import RECORD_NAME, not_written_by_hf_mrl
from hf_mrl.modeling.modeling_matryoshka import MatryoshkaModel
from hf_mrl.training.checkpointing import rotate_checkpoints

from ..trainer_helpers import save_checkpoint_at
from .files_helpers import debris, snapshot, tiny_index, tiny_model

MODEL_LIKE_NAMES = {
    "teacher_embeddings.safetensors": b"the user's embeddings",
    "1_results.csv": b"dim,score\n8,0.5\n",
    "pytorch_model_notes.bin": b"notes",
    "config_notes.json": b"{}",
}


def _projection(path) -> torch.Tensor:
    return MatryoshkaModel.from_pretrained(path).state_dict()["projection.weight"]


def test_files_named_like_model_files_survive_a_resave(tmp_path):
    target = tmp_path / "model"
    tiny_model().save_pretrained(target)
    for name, content in MODEL_LIKE_NAMES.items():
        (target / name).write_bytes(content)
    tiny_model(seed=1).save_pretrained(target)
    assert {name: (target / name).read_bytes() for name in MODEL_LIKE_NAMES} == MODEL_LIKE_NAMES
    torch.testing.assert_close(_projection(target), tiny_model(seed=1).state_dict()["projection.weight"])
    assert debris(tmp_path) == []


def test_a_recorded_file_changed_by_the_user_is_theirs(tmp_path):
    target = tmp_path / "model"
    save_with_card(tiny_model(), target)
    (target / "README.md").write_text("my own card")
    before = snapshot(target)
    with pytest.raises(FileExistsError, match=r"README\.md.*not hf_mrl's"):
        save_with_card(tiny_model(seed=1), target)  # it would write README.md again
    assert snapshot(target) == before and debris(tmp_path) == []
    with pytest.warns(UserWarning, match=r"kept README\.md.*yours now"):
        tiny_model(seed=1).save_pretrained(target)  # writes no card: the user's card stays
    assert (target / "README.md").read_text() == "my own card"
    assert not_written_by_hf_mrl(target) == (["README.md"], [])  # not recorded by the new save: the user's


def test_a_user_file_in_the_way_of_a_save_refuses_it(tmp_path):
    target = tmp_path / "model"
    tiny_model().save_pretrained(target)
    (target / RECORD_NAME).unlink()  # as an older version's save: nothing in it is known to be hf_mrl's
    before = snapshot(target)
    with pytest.raises(FileExistsError, match=r"config\.json.*nothing was changed"):
        tiny_model(seed=1).save_pretrained(target)
    assert snapshot(target) == before and debris(tmp_path) == []


@pytest.mark.parametrize("saver", ["save_pretrained", "save_with_card", "MatryoshkaIndex.save"])
def test_a_symlinked_target_is_written_through(tmp_path, saver):
    save = {
        "save_pretrained": lambda path, seed: tiny_model(seed=seed).save_pretrained(path),
        "save_with_card": lambda path, seed: save_with_card(tiny_model(seed=seed), path),
        "MatryoshkaIndex.save": lambda path, seed: tiny_index(seed=seed).save(path),
    }[saver]
    real = tmp_path / "storage" / "artefact"
    save(real, 0)
    (real / "mine.txt").write_text("keep me")
    link = tmp_path / "link"
    link.symlink_to(real, target_is_directory=True)
    save(link, 1)
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert (real / "mine.txt").read_text() == "keep me"
    if saver == "MatryoshkaIndex.save":
        vectors = np.random.default_rng(1).standard_normal((40, 16)).astype(np.float32)  # tiny_index(seed=1)'s
        np.testing.assert_array_equal(MatryoshkaIndex.load(real).search(vectors[:3], k=1)[1][:, 0], [0, 1, 2])
    else:
        torch.testing.assert_close(_projection(real), tiny_model(seed=1).state_dict()["projection.weight"])
    assert debris(tmp_path) == [] and debris(real.parent) == []


def test_an_edited_index_manifest_cannot_claim_a_user_file(tmp_path):
    target = tiny_index().save(tmp_path / "index")
    (target / "mine.npy").write_bytes(b"the user's array")
    manifest = json.loads((target / "manifest.json").read_text())
    manifest["files"]["mine.npy"] = {"sha256": "0" * 64, "bytes": 16}
    (target / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(FileExistsError, match=r"manifest\.json.*changed since"):
        tiny_index(seed=1).save(target)  # the edited manifest is the user's now: neither it nor mine.npy is touched
    assert (target / "mine.npy").read_bytes() == b"the user's array"


def test_rotation_keeps_the_users_files_whatever_their_names(tmp_path):
    first = save_checkpoint_at(tmp_path, 1)
    (first / "extra.safetensors").write_bytes(b"mine")
    (first / "optimizer_notes.pt").write_bytes(b"mine too")
    save_checkpoint_at(tmp_path, 2, resume_from_checkpoint=str(first))
    with pytest.warns(UserWarning, match="not written by hf_mrl"):
        rotate_checkpoints(tmp_path, 1)
    assert sorted(path.name for path in first.iterdir()) == ["extra.safetensors", "optimizer_notes.pt"]


def test_a_users_file_named_like_the_record_is_never_overwritten(tmp_path):
    from hf_mrl.output_folder import record_outputs

    (tmp_path / RECORD_NAME).write_text("my notes")
    (tmp_path / "results.json").write_text("{}")
    with pytest.raises(FileExistsError, match="not hf_mrl's record"):
        record_outputs(tmp_path, ["results.json"])
    assert (tmp_path / RECORD_NAME).read_text() == "my notes"


@pytest.mark.parametrize("backup", [".model.old-v1", ".model.del-mine", ".model.tmp-backup", ".model.tmp-12-notours"])
def test_a_users_hidden_folder_named_like_ours_is_left_alone(tmp_path, backup):
    target = tmp_path / "model"
    tiny_model().save_pretrained(target)
    (tmp_path / backup).mkdir()
    (tmp_path / backup / "precious.txt").write_text("mine")
    tiny_model(seed=1).save_pretrained(target)
    assert (tmp_path / backup / "precious.txt").read_text() == "mine"
    assert not (target / "precious.txt").exists()


def test_an_edit_that_keeps_size_and_mtime_is_still_the_users(tmp_path):
    target = tmp_path / "model"
    tiny_model().save_pretrained(target)
    config = target / "config.json"
    stat = config.stat()
    config.write_text(config.read_text().replace("vit", "VIT", 1))  # as `cp -p` / `rsync -a` keep the mtime
    os.utime(config, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    with pytest.raises(FileExistsError, match="config.json"):
        tiny_model(seed=1).save_pretrained(target)
    assert "VIT" in config.read_text()


def _dead_pid() -> int:
    import subprocess

    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


@pytest.mark.parametrize("artefact", ["model", "index"])
def test_a_load_removes_what_a_killed_save_left(tmp_path, monkeypatch, artefact):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "system-temp"))
    (tmp_path / "system-temp").mkdir()
    target = tmp_path / artefact
    tiny_model().save_pretrained(target) if artefact == "model" else tiny_index().save(target)
    pid = _dead_pid()
    staging = tmp_path / f".{artefact}.tmp-{pid}-0123abcd"
    staging.mkdir()
    (staging / "model.safetensors").write_bytes(b"half written")
    scratch = tmp_path / "system-temp" / f"hf_mrl-st-{pid}-k2j4h5g6"
    scratch.mkdir()
    MatryoshkaModel.from_pretrained(target) if artefact == "model" else MatryoshkaIndex.load(target)
    assert debris(tmp_path) == [] and not scratch.exists()


def test_a_load_brings_back_a_folder_caught_between_two_renames(tmp_path):
    target = tmp_path / "model"
    tiny_model().save_pretrained(target)
    target.rename(tmp_path / f".model.old-{_dead_pid()}-0123abcd")  # where the swap is not available
    torch.testing.assert_close(_projection(target), tiny_model().state_dict()["projection.weight"])
    assert debris(tmp_path) == []


def test_write_card_never_replaces_a_users_file(tmp_path):
    from hf_mrl.hub import write_card

    (tmp_path / "README.md").write_text("my own readme")
    with pytest.raises(ValueError, match=r"README\.md \(not written by hf_mrl\)"):
        write_card(tmp_path / "README.md", tiny_model(), plot=False)
    assert (tmp_path / "README.md").read_text() == "my own readme"
    write_card(tmp_path / "CARD.md", tiny_model(), plot=False)
    write_card(tmp_path / "CARD.md", tiny_model(), plot=False)  # its own card: replaced


@pytest.mark.parametrize("resume", [None, "latest"])
def test_a_users_checkpoint_named_folder_is_refused_before_training(tmp_path, resume, monkeypatch):
    from transformers import Trainer

    from ..trainer_helpers import tiny_trainer

    (tmp_path / "checkpoint-3").mkdir()
    (tmp_path / "checkpoint-3" / "notes.txt").write_text("mine")
    monkeypatch.setattr(Trainer, "train", lambda *args, **kwargs: pytest.fail("training started"))
    with pytest.raises(ValueError, match=r"checkpoint-3' is not a saved training checkpoint folder \(it holds notes.txt\); refusing to replace"):
        tiny_trainer(tmp_path, max_steps=3, save_strategy="steps", save_steps=3).train(resume_from_checkpoint=resume)
    assert (tmp_path / "checkpoint-3" / "notes.txt").read_text() == "mine"


def test_a_checkpoint_deletion_cut_short_is_finished_before_training(tmp_path):
    from ..trainer_helpers import tiny_trainer

    first = save_checkpoint_at(tmp_path, 1)
    (first / "trainer_state.json").unlink()  # a rotation killed after its first step
    tiny_trainer(tmp_path, max_steps=1).train()
    assert not first.exists()
