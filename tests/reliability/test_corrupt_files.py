"""Corrupted files are named as corrupted: model weights, checkpoint files (weights, optimizer, scheduler, RNG
state, trainer state) and index files. A garbage RNG state is never resumed from in silence."""

import json
import shutil

import pytest
import torch
from transformers import AutoModel

from hf_mrl import MatryoshkaModel
from hf_mrl.cli import main as cli_main
from hf_mrl.hub import load_matryoshka_model
from hf_mrl.index import MatryoshkaIndex
from hf_mrl.modeling.modeling_dual_encoder import MatryoshkaDualEncoderModel
from hf_mrl.training import resolve_resume_checkpoint

from ..trainer_helpers import save_checkpoint_at, tiny_classifier, tiny_trainer
from .files_helpers import tiny_index, tiny_model


def _garbage(path):
    path.write_bytes(b"\x8f\x02garbage, not what was saved" * 40)


def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _empty(path):
    path.write_bytes(b"")


def _flip_middle_byte(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _flip_a_tensor_byte(path):
    """Flips the first byte of the first tensor stored in a torch.save zip archive (a bit rot of the data)."""
    import zipfile

    with zipfile.ZipFile(path) as archive:
        member = next(info for info in archive.infolist() if "/data/" in info.filename and info.file_size)
    data = bytearray(path.read_bytes())
    offset = member.header_offset
    name_length, extra_length = (int.from_bytes(data[offset + i: offset + i + 2], "little") for i in (26, 28))
    data[offset + 30 + name_length + extra_length] ^= 0xFF
    path.write_bytes(bytes(data))


def _bad_header(path):
    path.write_bytes((64).to_bytes(8, "little") + b"{not json" + b" " * 55 + b"\0" * 16)


CORRUPTIONS = {"garbage": _garbage, "truncated": _truncate, "empty": _empty, "bad header": _bad_header}


# -- model weights ----------------------------------------------------------------------------------------------

LOADERS = {
    "MatryoshkaModel.from_pretrained": lambda path: MatryoshkaModel.from_pretrained(path),
    "AutoModel.from_pretrained": lambda path: AutoModel.from_pretrained(path),
    "load_matryoshka_model": lambda path: load_matryoshka_model(path),
}


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    tiny_model("embedding").save_pretrained(root / "embedding")
    tiny_model("dual").save_pretrained(root / "dual")
    return root


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
@pytest.mark.parametrize("loader", sorted(LOADERS))
def test_corrupted_model_weights_are_named(tmp_path, saved_models, loader, corruption):
    folder = shutil.copytree(saved_models / "embedding", tmp_path / "model")
    CORRUPTIONS[corruption](folder / "model.safetensors")
    with pytest.raises(ValueError, match=rf"{folder / 'model.safetensors'} is corrupted or unreadable"):
        LOADERS[loader](folder)


def test_corrupted_dual_encoder_weights_are_named(tmp_path, saved_models):
    folder = shutil.copytree(saved_models / "dual", tmp_path / "dual")
    _truncate(folder / "model.safetensors")
    with pytest.raises(ValueError, match=r"model\.safetensors is corrupted or unreadable"):
        MatryoshkaDualEncoderModel.from_pretrained(folder)


def test_cli_names_corrupted_weights(tmp_path, saved_models, capsys):
    folder = shutil.copytree(saved_models / "embedding", tmp_path / "model")
    _garbage(folder / "model.safetensors")
    assert cli_main(["eval", str(folder), "--dataset_name", "fashion-mnist", "--max_eval_samples", "8"]) == 1
    assert f"{folder / 'model.safetensors'} is corrupted or unreadable" in capsys.readouterr().err


# -- checkpoints ------------------------------------------------------------------------------------------------


@pytest.fixture
def checkpoint(tmp_path):
    return save_checkpoint_at(tmp_path / "run", 3)


def _resume(checkpoint):
    trainer = tiny_trainer(checkpoint.parent, max_steps=4)
    return trainer.train(resume_from_checkpoint=str(resolve_resume_checkpoint(checkpoint.parent, "latest") or checkpoint))


CHECKPOINT_CASES = [
    ("model.safetensors", _garbage, "is corrupted or unreadable"),
    ("model.safetensors", _truncate, "is corrupted or unreadable"),
    ("optimizer.pt", _garbage, "is corrupted or unreadable"),
    ("optimizer.pt", _truncate, "is corrupted or unreadable"),
    ("optimizer.pt", _flip_a_tensor_byte, "fails its CRC check"),
    ("scheduler.pt", _garbage, "is corrupted or unreadable"),
    ("rng_state.pth", _garbage, "is corrupted or unreadable"),
    ("rng_state.pth", _empty, "is corrupted or unreadable"),
    ("rng_state.pth", lambda path: torch.save({"seed": 1}, path), "is corrupted: an RNG state needs"),
    ("rng_state.pth", lambda path: torch.save([1, 2, 3], path), "is corrupted: an RNG state needs"),
    ("trainer_state.json", _garbage, "is corrupted: it is not valid JSON"),
    ("trainer_state.json", lambda path: path.write_text("[]"), "is corrupted: it holds no integer `global_step`"),
]


@pytest.mark.parametrize(("name", "corrupt", "words"), CHECKPOINT_CASES,
                         ids=[f"{name}-{i}" for i, (name, _, _) in enumerate(CHECKPOINT_CASES)])
def test_resuming_from_a_corrupted_checkpoint_names_the_file(checkpoint, name, corrupt, words):
    corrupt(checkpoint / name)
    with pytest.raises(ValueError) as error:
        _resume(checkpoint)
    assert str(checkpoint / name) in str(error.value) and words in str(error.value)


def test_an_intact_checkpoint_resumes(checkpoint):
    assert _resume(checkpoint).global_step == 4


def test_a_missing_rng_state_is_a_loud_warning(checkpoint):
    (checkpoint / "rng_state.pth").unlink()
    with pytest.warns(UserWarning, match="rng_state.pth: resuming without restoring the random state"):
        _resume(checkpoint)


def test_a_checkpoint_of_another_model_names_the_checkpoint(checkpoint):
    trainer = tiny_trainer(checkpoint.parent, model=tiny_classifier(dims=(4, 16)), max_steps=4)
    with pytest.raises(ValueError, match=rf"cannot resume from {checkpoint}"):
        trainer.train(resume_from_checkpoint=str(checkpoint))


# -- index files ------------------------------------------------------------------------------------------------


def _with_updated_checksum(name, corrupt):
    """Corrupts `name` and records its new size and sha256 in the manifest (the checksums alone cannot tell)."""
    from hf_mrl.index.persistence import _field_sha256
    from hf_mrl.modeling.files import sha256_of_file

    def apply(folder):
        corrupt(folder / name)
        manifest = json.loads((folder / "manifest.json").read_text())
        manifest["files"][name] = {"sha256": sha256_of_file(folder / name), "bytes": (folder / name).stat().st_size}
        manifest["field_sha256"]["files"] = _field_sha256(manifest["files"])
        (folder / "manifest.json").write_text(json.dumps(manifest))

    return apply


INDEX_CASES = {
    "manifest garbage": (lambda folder: _garbage(folder / "manifest.json"), "manifest.json is corrupted: it is not valid JSON"),
    "manifest not an object": (lambda folder: (folder / "manifest.json").write_text("[1, 2]"), "manifest.json is not a MatryoshkaIndex manifest"),
    "vectors flipped": (lambda folder: _flip_middle_byte(folder / "vectors.npy"), "vectors.npy fails its checksum"),
    "vectors truncated": (lambda folder: _truncate(folder / "vectors.npy"), "vectors.npy has"),
    "vectors garbage, checksum updated": (_with_updated_checksum("vectors.npy", _garbage), "vectors.npy is corrupted or unreadable"),
    "ids garbage, checksum updated": (_with_updated_checksum("ids.npy", _garbage), "ids.npy is corrupted or unreadable"),
    "shortlist garbage, checksum updated": (_with_updated_checksum("shortlist_8.faiss", _garbage), "shortlist_8.faiss is unreadable"),
}


@pytest.mark.parametrize("case", sorted(INDEX_CASES))
def test_corrupted_index_files_are_named(tmp_path, case):
    import numpy as np

    folder = tiny_index(ids=np.arange(40) * 7).save(tmp_path / "index")
    corrupt, words = INDEX_CASES[case]
    corrupt(folder)
    with pytest.raises(ValueError, match=words.replace(".", r"\.")):
        MatryoshkaIndex.load(folder)


def test_a_corrupted_results_file_is_named(tmp_path, saved_models, capsys):
    (tmp_path / "results.json").write_text('{"fmnist_dim8_top1": 0.5,')  # cut short
    argv = ["card", str(tmp_path / "results.json"), "--model", str(saved_models / "embedding"), "--output",
            str(tmp_path / "README.md")]
    assert cli_main(argv) == 1
    assert f"{tmp_path / 'results.json'} is corrupted or not a results file" in capsys.readouterr().err
    assert not (tmp_path / "README.md").exists()
