"""The Qdrant backend under faults and bad inputs (issue 22): a build is "complete" only at its end and `open`
refuses a partial one; rebuilds are exact or refused; a user's folder is never built into; in-memory builds
leave no temporary folders; a full disk, a filter on a missing payload key, a server that does not answer and a
collection open elsewhere are plain errors before any work."""

import errno
import gc
import os
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import pytest
from qdrant_client import QdrantClient, models

import hf_mrl.index.base as index_base_module
from hf_mrl.index import QdrantMatryoshkaIndex
from hf_mrl.index.qdrant_build import _MB
from hf_mrl.index.qdrant_engines import TEMPORARY_PREFIX, _EdgeCollection

from .files_helpers import snapshot

QUIET = {"shortlist_dim": 8, "show_progress": False}


def vectors(count: int = 40, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((count, 16)).astype(np.float32)


def fail_upsert_after(monkeypatch, calls: int, error: Exception) -> None:
    upsert, seen = _EdgeCollection.upsert, []

    def failing(self, *args):
        seen.append(1)
        if len(seen) > calls:
            raise error
        upsert(self, *args)

    monkeypatch.setattr(_EdgeCollection, "upsert", failing)


def forbid(monkeypatch, owner, name: str) -> None:
    """A spy: the test fails if `owner.name` runs (work started before the refusal)."""
    def called(*args, **kwargs):
        raise AssertionError(f"{name} ran before the refusal")

    monkeypatch.setattr(owner, name, called)


# -- 1. a build is complete only at its end ----------------------------------------------------------------------


def test_open_refuses_an_interrupted_build_with_its_count(tmp_path, monkeypatch):
    fail_upsert_after(monkeypatch, 2, RuntimeError("engine stopped"))
    with pytest.raises(RuntimeError, match="engine stopped") as stopped:
        QdrantMatryoshkaIndex(vectors(120), batch_size=40, path=tmp_path, **QUIET)
    assert any("stopped after 80 of 120 points" in note for note in stopped.value.__notes__)
    monkeypatch.undo()
    with pytest.raises(ValueError, match=r"is incomplete: its build stopped after 80 of 120 points.*resume.*overwrite=True"):
        QdrantMatryoshkaIndex.open(path=tmp_path)
    with QdrantMatryoshkaIndex(vectors(120), batch_size=40, path=tmp_path, **QUIET) as resumed:
        assert len(resumed) == 120
    with QdrantMatryoshkaIndex.open(path=tmp_path) as index:
        assert len(index) == 120


KILLED_BUILD = textwrap.dedent("""
    import os, signal, sys
    import numpy as np
    from hf_mrl.index import QdrantMatryoshkaIndex
    from hf_mrl.index.qdrant_engines import _EdgeCollection

    held = QdrantMatryoshkaIndex(np.ones((5, 16), np.float32), shortlist_dim=8, show_progress=False)  # in memory
    upsert, calls = _EdgeCollection.upsert, []
    def killing(self, *args):
        calls.append(1)
        if len(calls) == 5:
            os.kill(os.getpid(), signal.SIGKILL)
        upsert(self, *args)
    _EdgeCollection.upsert = killing
    rows = np.random.default_rng(0).standard_normal((600, 16)).astype(np.float32)
    QdrantMatryoshkaIndex(rows, shortlist_dim=8, batch_size=50, path=sys.argv[1], show_progress=False)
""")


@pytest.mark.slow
def test_sigkill_mid_build_is_refused_then_rebuilt_without_debris(tmp_path, monkeypatch):
    temporary, target = tmp_path / "tmp", tmp_path / "qdrant"
    temporary.mkdir()
    env = dict(os.environ, TMPDIR=str(temporary), PYTHONPATH=str(Path(__file__).parents[2]))
    run = subprocess.run([sys.executable, "-c", KILLED_BUILD, str(target)], env=env, capture_output=True, text=True)
    assert run.returncode == -signal.SIGKILL, run.stderr
    assert len(list(temporary.glob(f"{TEMPORARY_PREFIX}*"))) == 1  # the killed process's in-memory collection
    with pytest.raises(ValueError, match=r"is incomplete: its build stopped after (\d+) of 600 points") as refused:
        QdrantMatryoshkaIndex.open(path=target)
    assert int(str(refused.value).split("after ")[1].split(" of")[0]) <= 200
    rows = np.random.default_rng(0).standard_normal((600, 16)).astype(np.float32)
    monkeypatch.setattr(tempfile, "tempdir", str(temporary))
    with QdrantMatryoshkaIndex(vectors(3), **QUIET):  # a new in-memory build removes the dead process's folder
        assert len(list(temporary.glob(f"{TEMPORARY_PREFIX}*"))) == 1
    assert list(temporary.iterdir()) == []
    with QdrantMatryoshkaIndex(rows, batch_size=50, path=target, **QUIET) as resumed:
        assert len(resumed) == 600
    with QdrantMatryoshkaIndex(rows[:100], batch_size=50, path=target, overwrite=True, **QUIET):
        pass
    with QdrantMatryoshkaIndex.open(path=target) as index:
        assert len(index) == 100
    assert [p.name for p in target.iterdir()] == ["hf_mrl"]
    assert [p.name for p in (target / "hf_mrl").iterdir() if p.name.startswith(".")] == []


# -- 2. rebuilds are exact ---------------------------------------------------------------------------------------


def test_rebuild_with_other_vectors_is_refused_then_replaced_with_overwrite(tmp_path):
    with QdrantMatryoshkaIndex(vectors(40), path=tmp_path, **QUIET):
        pass
    before = snapshot(tmp_path)
    with pytest.raises(ValueError, match=rf"at '{tmp_path}'.*build of other data.*nothing was changed.*overwrite=True"):
        QdrantMatryoshkaIndex(vectors(10, seed=1), path=tmp_path, **QUIET)
    assert snapshot(tmp_path) == before
    new = vectors(10, seed=1)
    with QdrantMatryoshkaIndex(new, path=tmp_path, overwrite=True, **QUIET):
        pass
    with QdrantMatryoshkaIndex.open(path=tmp_path) as index:
        assert len(index) == 10
        scores, ids = index.search(new, 1, exact=True)
        np.testing.assert_array_equal(ids[:, 0], np.arange(10))
        np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)


def test_rebuild_from_another_model_keeps_no_old_fingerprint(tmp_path):
    rows = vectors(20)
    with QdrantMatryoshkaIndex(rows, path=tmp_path, model={"fingerprint": "first"}, **QUIET):
        pass
    with pytest.raises(ValueError, match="build of other data.*overwrite=True"):
        QdrantMatryoshkaIndex(rows, path=tmp_path, model={"fingerprint": "second"}, **QUIET)
    with QdrantMatryoshkaIndex(rows, path=tmp_path, model={"fingerprint": "second"}, overwrite=True, **QUIET):
        pass
    with QdrantMatryoshkaIndex.open(path=tmp_path) as index:
        assert index.model == {"fingerprint": "second"} and len(index) == 20


def test_same_build_again_changes_nothing_and_server_rebuilds_are_exact():
    client = QdrantClient(":memory:")
    QdrantMatryoshkaIndex(vectors(30), client=client, **QUIET)
    QdrantMatryoshkaIndex(vectors(30), client=client, **QUIET)  # the same input: opened as is
    with pytest.raises(ValueError, match="through the given QdrantClient.*overwrite=True"):
        QdrantMatryoshkaIndex(vectors(5, seed=2), client=client, **QUIET)
    rebuilt = QdrantMatryoshkaIndex(vectors(5, seed=2), client=client, overwrite=True, **QUIET)
    assert len(rebuilt) == 5 and len(QdrantMatryoshkaIndex.open(client=client)) == 5


# -- 3. a user's folder of the collection's name ------------------------------------------------------------------


def test_user_folder_of_the_collection_name_is_refused_before_work(tmp_path, monkeypatch):
    (tmp_path / "hf_mrl").mkdir()
    (tmp_path / "hf_mrl" / "notes.txt").write_text("mine")
    before = snapshot(tmp_path)
    forbid(monkeypatch, _EdgeCollection, "create")
    with pytest.raises(ValueError, match=rf"`path` '{tmp_path}' already holds 'hf_mrl', which QdrantMatryoshkaIndex "
                                         "did not write"):
        QdrantMatryoshkaIndex(vectors(), path=tmp_path, **QUIET)
    with pytest.raises(ValueError, match="did not write"):
        QdrantMatryoshkaIndex(vectors(), path=tmp_path, overwrite=True, **QUIET)
    forbid(monkeypatch, index_base_module, "encode_for_index")
    with pytest.raises(ValueError, match="did not write"):
        QdrantMatryoshkaIndex.from_dataset(None, [], None, path=tmp_path)
    assert snapshot(tmp_path) == before


def test_path_that_is_a_file_is_refused(tmp_path):
    target = tmp_path / "qdrant"
    target.write_text("mine")
    with pytest.raises(ValueError, match=rf"`path` '{target}' is a file; allowed: a folder"):
        QdrantMatryoshkaIndex(vectors(), path=target, **QUIET)
    assert target.read_text() == "mine"


# -- 4. in-memory builds leave no temporary folders ----------------------------------------------------------------


def dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_in_memory_builds_remove_their_folders_and_dead_ones(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    stale = tmp_path / f"{TEMPORARY_PREFIX}{dead_pid()}-abcd1234"
    alive = tmp_path / f"{TEMPORARY_PREFIX}{os.getppid()}-abcd1234"  # a live process's: kept
    for folder in (stale, alive):
        (folder / "hf_mrl").mkdir(parents=True)
    index = QdrantMatryoshkaIndex(vectors(), **QUIET)
    assert not stale.exists() and alive.exists()
    assert [p.name[len(TEMPORARY_PREFIX):].split("-")[0] for p in tmp_path.glob(f"{TEMPORARY_PREFIX}*")
            if p != alive] == [str(os.getpid())]
    assert index._engine._finalizer.atexit  # interpreter exit removes one still open
    index.close()
    assert list(tmp_path.iterdir()) == [alive]
    QdrantMatryoshkaIndex(vectors(), **QUIET)  # dropped without close: garbage collection removes it
    gc.collect()
    assert list(tmp_path.iterdir()) == [alive]


# -- 5. a full disk ------------------------------------------------------------------------------------------------


def test_full_disk_is_refused_before_work(tmp_path, monkeypatch):
    usage = type("usage", (), {"free": 5 * _MB})
    monkeypatch.setattr("hf_mrl.index.qdrant_build.shutil.disk_usage", lambda folder: usage)
    forbid(monkeypatch, _EdgeCollection, "create")
    with pytest.raises(OSError, match=r"disk full: the Qdrant build at .* needs about \d+ MB, 5 MB free"):
        QdrantMatryoshkaIndex(vectors(), path=tmp_path / "qdrant", **QUIET)
    assert list(tmp_path.iterdir()) == []


def test_disk_full_mid_build_says_so_and_leaves_it_incomplete(tmp_path, monkeypatch):
    fail_upsert_after(monkeypatch, 1, OSError(errno.ENOSPC, "No space left on device"))
    with pytest.raises(OSError, match=r"disk full: the Qdrant build at .* stopped after 20 of 60 points.*resume"):
        QdrantMatryoshkaIndex(vectors(60), batch_size=20, path=tmp_path, **QUIET)
    monkeypatch.undo()
    with pytest.raises(ValueError, match="stopped after 20 of 60 points"):
        QdrantMatryoshkaIndex.open(path=tmp_path)


# -- 6. filters on payload keys no point has -----------------------------------------------------------------------


def test_filter_on_a_missing_payload_key_names_the_keys(tmp_path):
    payloads = [{"cluster": i % 3, "weight": float(i)} for i in range(40)]
    colour = models.FieldCondition(key="colour", match=models.MatchValue(value="red"))
    with QdrantMatryoshkaIndex(vectors(), payloads=payloads, **QUIET) as index:
        for wrong in (models.Filter(must=[colour]), models.Filter(must_not=[colour]),
                      models.Filter(should=[models.Filter(must=[colour])])):
            with pytest.raises(ValueError, match=r"`filter` names payload key 'colour', which no point has; keys the "
                                                 r"points have: \['cluster', 'weight'\]"):
                index.search(vectors(2), 3, filter=wrong)
        cluster = models.Filter(must=[models.FieldCondition(key="cluster", match=models.MatchValue(value=1))])
        assert (index.search(vectors(2), 3, exact=True, filter=cluster)[1] >= 0).all()
    with QdrantMatryoshkaIndex(vectors(), **QUIET) as bare:
        with pytest.raises(ValueError, match="no point has; the points have no payload"):
            bare.funnel_search(vectors(2), 3, filter=models.Filter(must=[colour]))


# -- 7. a server that does not answer, a collection open elsewhere ---------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_url_with_nothing_listening_is_a_connection_error_before_work(monkeypatch):
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ConnectionError, match=rf"`url` '{url}': no Qdrant server answers there"):
        QdrantMatryoshkaIndex(vectors(), url=url, **QUIET)
    forbid(monkeypatch, index_base_module, "encode_for_index")
    with pytest.raises(ConnectionError, match="no Qdrant server answers there"):
        QdrantMatryoshkaIndex.from_dataset(None, [], None, url=url)
    with pytest.raises(ConnectionError, match="no Qdrant server answers there"):
        QdrantMatryoshkaIndex.open(url=url)


def test_collection_open_elsewhere_is_a_clear_error(tmp_path):
    with QdrantMatryoshkaIndex(vectors(), path=tmp_path, **QUIET):
        with pytest.raises(BlockingIOError, match=rf"`path` '{tmp_path}': collection 'hf_mrl' is open in another "
                                                  "process"):
            QdrantMatryoshkaIndex.open(path=tmp_path)
        with pytest.raises(BlockingIOError, match="is open in another process"):
            QdrantMatryoshkaIndex(vectors(5, seed=3), path=tmp_path, overwrite=True, **QUIET)
    with QdrantMatryoshkaIndex.open(path=tmp_path) as index:  # the refused overwrite changed nothing
        assert len(index) == 40
