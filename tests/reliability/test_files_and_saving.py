"""Saving never deletes what it did not write, never leaves debris, and says "disk full" in plain words.

Every saver of hf_mrl (models, cards, indexes, sentence-transformers exports, checkpoints, the CLI) goes through
`hf_mrl.modeling.files.write_folder_atomically`; these tests hold each of them to the same rules.
"""

import errno
import subprocess
import sys

import pytest
import torch
from safetensors import SafetensorError

from hf_mrl.cli import main as cli_main
from hf_mrl.hub import export_sentence_transformer, load_matryoshka_model, save_with_card
from hf_mrl.index import MatryoshkaIndex
from hf_mrl.modeling.file_checks import describe_os_error
from hf_mrl.modeling.files import MODEL_FOLDER, RECORD_NAME, remove_stale_temp_folders
from hf_mrl.training import list_checkpoints

from ..trainer_helpers import save_checkpoint_at
from .files_helpers import FOREIGN_FOLDERS, debris, make_foreign_folder, snapshot, tiny_index, tiny_model


def _checkpoint_saver(path):
    return save_checkpoint_at(path.parent, int(path.name.split("-")[1]))


def _export_saver(path, minilm_path):
    from hf_mrl import MatryoshkaConfig, MatryoshkaModel

    from ..tiny import tiny_bert_config

    torch.manual_seed(0)
    model = MatryoshkaModel(MatryoshkaConfig(backbone_config=tiny_bert_config(vocab_size=30522, max_position_embeddings=128)))
    return export_sentence_transformer(model, path, minilm_path)


def _cli_saver(command):
    def save(path, model_dir):
        argv = {
            "index build": ["index", "build", str(model_dir), str(path), "--dataset_name", "fashion-mnist"],
            "export-st": ["export-st", str(model_dir), str(path)],
        }[command]
        code = cli_main(argv)
        if code != 0:
            raise ValueError("cli exit status 1")
        return path

    return save


SAVERS = {
    "save_with_card": lambda path, extra: save_with_card(tiny_model(), path),
    "save_pretrained-embedding": lambda path, extra: tiny_model("embedding").save_pretrained(path),
    "save_pretrained-classifier": lambda path, extra: tiny_model("classifier").save_pretrained(path),
    "save_pretrained-dual": lambda path, extra: tiny_model("dual").save_pretrained(path),
    "MatryoshkaIndex.save": lambda path, extra: tiny_index().save(path),
    "export_sentence_transformer": lambda path, extra: _export_saver(path, extra["minilm"]),
    "save_checkpoint": lambda path, extra: _checkpoint_saver(path),
    "cli index build": lambda path, extra: _cli_saver("index build")(path, extra["model_dir"]),
    "cli export-st": lambda path, extra: _cli_saver("export-st")(path, extra["model_dir"]),
}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model") / "model"
    tiny_model().save_pretrained(folder)
    return folder


@pytest.fixture
def extra(model_dir, minilm_path):
    return {"model_dir": model_dir, "minilm": minilm_path}


# -- data loss: a folder hf_mrl did not write is never replaced ------------------------------------------------


@pytest.mark.parametrize("foreign", sorted(FOREIGN_FOLDERS))
@pytest.mark.parametrize("saver", sorted(SAVERS))
def test_a_foreign_folder_is_refused_and_left_untouched(tmp_path, extra, capsys, saver, foreign):
    target = tmp_path / ("checkpoint-1" if saver == "save_checkpoint" else "out")
    before = make_foreign_folder(target, foreign)
    with pytest.raises(ValueError) as error:
        SAVERS[saver](target, extra)
    message = str(error.value) + capsys.readouterr().err
    if saver.startswith("cli"):
        assert "hf-mrl: error:" in message
    assert "refusing to replace" in message and "hf_mrl replaces only folders it wrote" in message
    assert str(target) in message and "data.csv" in message  # names the folder and what it holds
    assert snapshot(target) == before
    assert debris(tmp_path) == []


SAME_KIND = ["save_with_card", "save_pretrained-embedding", "save_pretrained-dual", "MatryoshkaIndex.save",
             "save_checkpoint", "export_sentence_transformer"]


@pytest.mark.parametrize("saver", SAME_KIND)
def test_replacing_our_own_folder_keeps_the_files_we_did_not_write(tmp_path, extra, saver):
    target = tmp_path / ("checkpoint-1" if saver == "save_checkpoint" else "out")
    SAVERS[saver](target, extra)
    (target / "data.csv").write_text("id,text\n1,keep me\n")
    (target / "notes").mkdir()
    (target / "notes" / "todo.txt").write_text("mine")
    SAVERS[saver](target, extra)
    assert (target / "data.csv").read_text() == "id,text\n1,keep me\n"
    assert (target / "notes" / "todo.txt").read_text() == "mine"
    assert debris(tmp_path) == []


def test_a_resave_drops_our_stale_shards_but_keeps_the_users_files(tmp_path, minilm_path):
    from transformers import AutoTokenizer

    target = tmp_path / "out"
    tiny_model().save_pretrained(target, max_shard_size="20KB")  # an earlier save in several shards
    shards = sorted(path.name for path in target.glob("model-*.safetensors"))
    assert len(shards) > 1
    AutoTokenizer.from_pretrained(minilm_path).save_pretrained(target)  # the user's, saved beside the weights
    users = {"teacher_embeddings.safetensors": b"mine", "1_results.csv": b"a,b\n", "pytorch_model_notes.bin": b"x"}
    for name, content in users.items():
        (target / name).write_bytes(content)
    tiny_model(seed=1).save_pretrained(target)
    assert not any((target / name).exists() for name in shards)  # ours, and not written again
    assert all((target / name).read_bytes() == content for name, content in users.items())
    assert (target / "tokenizer.json").is_file() and (target / "tokenizer_config.json").is_file()
    loaded = load_matryoshka_model(target)
    torch.testing.assert_close(loaded.state_dict()["projection.weight"], tiny_model(seed=1).state_dict()["projection.weight"])


def test_a_resaved_index_drops_its_old_shortlists(tmp_path):
    target = tiny_index(shortlist_dim=8).save(tmp_path / "index")
    tiny_index(shortlist_dim=[4]).save(target)
    assert sorted(path.name for path in target.iterdir()) == [
        RECORD_NAME, "manifest.json", "shortlist_4.faiss", "vectors.npy"]
    assert MatryoshkaIndex.load(target).shortlist_dims == [4]


@pytest.mark.parametrize("saver", ["save_with_card", "save_pretrained-embedding", "MatryoshkaIndex.save"])
def test_an_existing_file_is_refused(tmp_path, extra, saver):
    target = tmp_path / "out"
    target.write_text("not a folder")
    with pytest.raises(ValueError, match=r"is a file, not a folder"):
        SAVERS[saver](target, extra)
    assert target.read_text() == "not a folder"


# -- debris: temporary folders of killed saves are removed by the next save ------------------------------------


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


@pytest.mark.parametrize("saver", ["save_with_card", "save_pretrained-classifier", "MatryoshkaIndex.save", "save_checkpoint"])
def test_stale_temp_folders_are_removed_by_the_next_save(tmp_path, extra, saver):
    name = "checkpoint-1" if saver == "save_checkpoint" else "out"
    pid = _dead_pid()
    leftovers = [f".{name}.tmp-{pid}-ab12cd34", f".{name}.del-{pid}-0badc0de"]
    if saver == "save_checkpoint":
        leftovers += [".checkpoint-7.tmp-save"]  # another step's
    for leftover in leftovers:
        (tmp_path / leftover).mkdir()
        (tmp_path / leftover / "model.safetensors").write_bytes(b"x" * 1000)
    SAVERS[saver](tmp_path / name, extra)
    (tmp_path / name).rename(tmp_path / f".{name}.old-{pid}-ef56ab78")  # a replaced folder not yet removed
    SAVERS[saver](tmp_path / name, extra)
    assert debris(tmp_path) == []
    assert [path.name for path in tmp_path.iterdir() if path.name.startswith(".")] == []


def test_a_live_writers_temp_folder_is_left_alone(tmp_path):
    writer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = tmp_path / f".out.tmp-{writer.pid}-00ff00ff"
        live.mkdir()
        save_with_card(tiny_model(), tmp_path / "out")
        assert live.is_dir()
    finally:
        writer.kill()
        writer.wait()
    save_with_card(tiny_model(), tmp_path / "out")
    assert not live.exists()


def test_a_save_killed_between_its_renames_gets_the_previous_folder_back(tmp_path):
    target = tmp_path / "out"
    save_with_card(tiny_model(), target)
    retired = tmp_path / f".out.old-{_dead_pid()}-00000001"
    target.rename(retired)  # where a kill between "old away" and "new in" leaves it
    remove_stale_temp_folders(target, MODEL_FOLDER)
    assert target.is_dir() and not retired.exists()
    assert isinstance(load_matryoshka_model(target), torch.nn.Module)


def test_foreign_files_caught_in_a_retired_folder_are_given_back(tmp_path):
    target = tmp_path / "out"
    save_with_card(tiny_model(), target)
    retired = tmp_path / f".out.old-{_dead_pid()}-00000002"
    retired.mkdir()
    (retired / "data.csv").write_text("keep me")
    (retired / "model.safetensors").write_bytes(b"old weights")  # an older version's folder: no record of it
    with pytest.warns(UserWarning, match="model.safetensors"):
        save_with_card(tiny_model(), target)
    assert (target / "data.csv").read_text() == "keep me"
    assert (retired / "model.safetensors").read_bytes() == b"old weights"  # its place is taken: kept, with a warning


def test_loads_ignore_temp_folders(tmp_path):
    save_checkpoint_at(tmp_path, 1)
    (tmp_path / ".checkpoint-2.tmp-save").mkdir()
    (tmp_path / ".checkpoint-2.tmp-save" / "trainer_state.json").write_text('{"global_step": 2}')
    assert [step for step, _ in list_checkpoints(tmp_path)] == [1]
    tiny_index().save(tmp_path / "index")
    (tmp_path / ".index.tmp-1-ab").mkdir()
    assert MatryoshkaIndex.load(tmp_path / "index").count == 40


# -- full disk and other OS errors: previous content intact, plain words, the path named -----------------------


def _disk_full_after_some_bytes(*args, **kwargs):
    path = args[1] if len(args) > 1 else kwargs.get("filename")
    with open(path, "wb") as handle:
        handle.write(b"\0" * 100)  # a partly written file, as a full disk leaves it
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("saver", ["save_with_card", "save_pretrained-embedding", "save_pretrained-classifier",
                                   "save_pretrained-dual"])
def test_disk_full_while_saving_a_model_keeps_the_previous_folder(tmp_path, extra, monkeypatch, saver):
    target = tmp_path / "out"
    SAVERS[saver](target, extra)
    before = snapshot(target)
    monkeypatch.setattr("transformers.modeling_utils.safe_save_file", _disk_full_after_some_bytes)
    with pytest.raises(OSError) as error:
        SAVERS[saver](target, extra)
    assert error.value.errno == errno.ENOSPC
    assert "disk full" in str(error.value) and "no space left" in str(error.value) and str(target) in str(error.value)
    assert snapshot(target) == before
    assert debris(tmp_path) == []


def test_disk_full_on_a_first_model_save_leaves_no_folder_with_only_config(tmp_path, monkeypatch):
    monkeypatch.setattr("transformers.modeling_utils.safe_save_file", _disk_full_after_some_bytes)
    with pytest.raises(OSError, match="disk full"):
        tiny_model().save_pretrained(tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_disk_full_while_saving_an_index_keeps_the_previous_index(tmp_path, monkeypatch):
    import numpy as np

    target = tiny_index().save(tmp_path / "index")
    before = snapshot(target)

    def numpy_disk_full(file, array, **kwargs):
        raise OSError(f"{array.nbytes} requested and 307168 written")  # numpy's words for a full disk

    monkeypatch.setattr(np, "save", numpy_disk_full)
    with pytest.raises(OSError, match=r"disk full: no space left on the device while writing .*index") as error:
        tiny_index(count=80).save(target)
    assert error.value.errno == errno.ENOSPC
    assert snapshot(target) == before and debris(tmp_path) == []


def test_disk_full_while_checkpointing_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    save_checkpoint_at(tmp_path, 1)
    before = snapshot(tmp_path / "checkpoint-1")

    def storage_full(*args, **kwargs):
        raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left on device" })')

    monkeypatch.setattr("transformers.modeling_utils.safe_save_file", storage_full)
    with pytest.raises(OSError, match=r"disk full.*checkpoint-1"):
        save_checkpoint_at(tmp_path, 1)
    assert snapshot(tmp_path / "checkpoint-1") == before
    assert sorted(path.name for path in tmp_path.iterdir()) == ["checkpoint-1"]


def test_permission_denied_names_the_path(tmp_path, monkeypatch):
    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(args[1]))

    monkeypatch.setattr("transformers.modeling_utils.safe_save_file", denied)
    with pytest.raises(PermissionError, match=r"permission denied: cannot write .*out"):
        tiny_model().save_pretrained(tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("error", "words"),
    [
        (OSError(errno.ENOSPC, "No space left on device"), "disk full"),
        (OSError(errno.EDQUOT, "Disk quota exceeded"), "disk full"),
        (OSError("1280000 requested and 307168 written"), "disk full"),
        (SafetensorError("Error while serializing: IoError(Os { code: 28, kind: StorageFull })"), "disk full"),
        (PermissionError(errno.EACCES, "Permission denied"), "permission denied"),
        (OSError(errno.EROFS, "Read-only file system"), "read-only file system"),
    ],
)
def test_os_errors_are_described_in_plain_words(error, words):
    plain = describe_os_error(error, "/data/run/model")
    assert isinstance(plain, OSError) and words in str(plain) and "/data/run/model" in str(plain)


@pytest.mark.parametrize("error", [ValueError("bad value"), OSError(errno.ENOENT, "No such file"), KeyboardInterrupt()])
def test_other_errors_are_passed_on_unchanged(error):
    assert describe_os_error(error, "/data/run/model") is None
