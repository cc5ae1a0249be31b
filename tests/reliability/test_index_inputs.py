"""Index inputs that used to give a silent answer or a raw engine error (issue 22): zero database rows, bad ids,
overflowing norms, filters of the wrong type, payloads Qdrant cannot store, `path=` with `location=":memory:"`.
Each is refused before any work with one line naming the argument, the value and what is allowed (or, for huge
values, handled correctly). Spies fail a case when the work starts before the refusal."""

import numpy as np
import pytest
from qdrant_client import models

from hf_mrl.index import MatryoshkaIndex, QdrantMatryoshkaIndex

from .refusals import never, raises_one_line

DIM = 16




@pytest.fixture
def database():
    return np.random.default_rng(0).normal(size=(50, DIM)).astype(np.float32)


@pytest.fixture
def no_faiss(monkeypatch):
    monkeypatch.setattr("hf_mrl.index.matryoshka_index._build_shortlist", never)


@pytest.fixture
def no_qdrant(monkeypatch):
    monkeypatch.setattr("hf_mrl.index.qdrant_index.open_engine", never)
    monkeypatch.setattr("hf_mrl.index.qdrant_checks.connect", never)


def _qdrant(database, **kwargs):
    return QdrantMatryoshkaIndex(database, shortlist_dim=8, show_progress=False, **kwargs)


# -- 1. database rows that could never be found ------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["faiss", "qdrant"])
def test_all_zero_database_row_is_refused(database, backend, no_faiss, no_qdrant):
    database[[3, 7]] = 0
    build = (lambda: MatryoshkaIndex(database, shortlist_dim=8, show_progress=False)) if backend == "faiss" else (
        lambda: _qdrant(database))
    raises_one_line(build, "`embeddings`", "rows 3, 7", "all zeros", "never be found")


@pytest.mark.parametrize("backend", ["faiss", "qdrant"])
def test_database_row_zero_in_the_smallest_dim_is_refused(database, backend, no_faiss, no_qdrant):
    database[5, :8] = 0
    build = (lambda: MatryoshkaIndex(database, shortlist_dim=8, show_progress=False)) if backend == "faiss" else (
        lambda: _qdrant(database))
    raises_one_line(build, "`embeddings`", "row 5", "first 8 features", "never be found")


def test_rerank_below_the_shortlist_dim_refuses_zero_stored_rows(database, monkeypatch):
    database[4, :4] = 0
    index = MatryoshkaIndex(database, shortlist_dim=8, show_progress=False)
    monkeypatch.setattr(index, "_shortlist", never)
    queries = database[:2] + 1
    raises_one_line(lambda: index.search(queries, 2, rerank_dim=4), "`rerank_dim` is 4", "rows 4", "first 4 features")
    monkeypatch.undo()
    assert index.search(queries, 2, rerank_dim=8)[1].shape == (2, 2)  # non-zero from dim 8 on: searchable


# -- 2. ids -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["faiss", "qdrant"])
@pytest.mark.parametrize(
    ("ids", "words"),
    [
        ([1] * 50, ["`ids` must be unique", "1 repeats"]),
        (list(range(49)) + [-1], ["`ids` must be non-negative", "-1"]),
        (np.arange(50, dtype=np.uint64) + np.uint64(2**63 - 10), ["2**63 - 1", "9223372036854775808"]),
        (list(range(49)) + [2**64], ["2**63 - 1", "18446744073709551616"]),
    ],
)
def test_bad_ids_are_refused(database, backend, ids, words, no_faiss, no_qdrant):
    build = (lambda: MatryoshkaIndex(database, ids=ids, shortlist_dim=8, show_progress=False)) if backend == "faiss" \
        else (lambda: _qdrant(database, ids=ids))
    message = raises_one_line(build, *words)
    assert "-9223372036854775" not in message  # the real value, not the int64 wrap-around


def test_largest_int64_id_is_kept(database):
    ids = np.arange(50, dtype=np.uint64) + np.uint64(2**63 - 50)
    index = MatryoshkaIndex(database, ids=ids, shortlist_dim=8, show_progress=False)
    assert index.search(database[49:50], 1)[1][0, 0] == 2**63 - 1


# -- 3. values whose norm overflows float32 ------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["faiss", "qdrant"])
def test_huge_row_is_normalised_and_found(database, backend):
    direction = np.zeros(DIM, dtype=np.float32)
    direction[:4] = 1
    database[10] = direction * 1e38  # squares overflow float32
    database[11] = direction * 1e-25  # squares underflow float32
    query = direction[None] * 0.5
    with np.errstate(all="raise"):
        if backend == "faiss":
            index = MatryoshkaIndex(database, shortlist_dim=8, show_progress=False)
            scores, ids = index.search(query, 2, shortlist_size=50)
        else:
            with _qdrant(database) as index:
                scores, ids = index.search(query, 2, exact=True)
    assert sorted(ids[0].tolist()) == [10, 11]
    np.testing.assert_allclose(scores[0], 1.0, atol=1e-5)


def test_huge_query_is_normalised(database):
    index = MatryoshkaIndex(database, shortlist_dim=8, show_progress=False)
    scores, ids = index.search(database[:1] * 1e38, 1, shortlist_size=50)
    assert ids[0, 0] == 0 and abs(scores[0, 0] - 1) < 1e-5


# -- 4. Qdrant filters of another type than the payload values ------------------------------------------------------


@pytest.fixture
def typed_index(database):
    payloads = [{"n": i, "s": str(i), "f": i / 2} for i in range(50)]
    with _qdrant(database, payloads=payloads) as index:
        yield index


@pytest.mark.parametrize(
    ("condition", "words"),
    [
        (models.FieldCondition(key="n", match=models.MatchValue(value="3")), ["'n'", "MatchValue of str", "int"]),
        (models.FieldCondition(key="s", range=models.Range(gt=1)), ["'s'", "Range", "str"]),
        (models.FieldCondition(key="n", match=models.MatchAny(any=["1", "2"])), ["'n'", "MatchAny of str", "int"]),
        (models.FieldCondition(key="f", match=models.MatchValue(value=1)), ["'f'", "MatchValue of int", "float"]),
    ],
)
def test_filter_of_another_type_is_refused(typed_index, database, condition, words, monkeypatch):
    monkeypatch.setattr(typed_index._engine, "query", never)
    raises_one_line(lambda: typed_index.search(database[:1], 3, filter=models.Filter(must=[condition])), "`filter`", *words)


def test_filter_of_the_right_type_still_works(typed_index, database):
    condition = models.FieldCondition(key="n", match=models.MatchValue(value=3))
    assert typed_index.search(database[:2], 1, filter=models.Filter(must=[condition]))[1].tolist() == [[3], [3]]
    ranged = models.FieldCondition(key="f", range=models.Range(gte=24))
    assert set(typed_index.search(database[:1], 2, filter=models.Filter(must=[ranged]))[1][0]) == {48, 49}


# -- 5. Qdrant payloads and connection ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bad", "words"),
    [
        ({"tags": {1, 2}}, ["`payloads[2]['tags']`", "set", "list"]),
        ({"score": float("nan")}, ["`payloads[2]['score']`", "nan", "finite"]),
        ({"deep": {"x": [1, float("inf")]}}, ["`payloads[2]['deep']`", "'x'", "inf"]),
        ({1: "a"}, ["`payloads[2]`", "key 1", "int"]),
        ("text", ["`payloads[2]` must be a dict", "str", "'text'"]),
        (None, ["`payloads[2]` must be a dict", "NoneType"]),
    ],
)
def test_bad_payloads_are_refused(database, bad, words, no_qdrant):
    payloads = [{"a": 1} for _ in range(50)]
    payloads[2] = bad
    raises_one_line(lambda: _qdrant(database, payloads=payloads), *words)


def test_payloads_of_wrong_length_are_refused(database, no_qdrant):
    raises_one_line(lambda: _qdrant(database, payloads=[{}] * 3), "`payloads` must be 50 dicts", "3 items")


def test_path_with_memory_location_is_refused(database, tmp_path, monkeypatch):
    monkeypatch.setattr("hf_mrl.index.qdrant_checks.connect", never)  # the check runs in `open_engine`, before it
    raises_one_line(lambda: _qdrant(database, path=tmp_path / "q", location=":memory:"), "`location` ':memory:'", "`path`",
            str(tmp_path / "q"))
    raises_one_line(lambda: QdrantMatryoshkaIndex.open(path=tmp_path / "q", location=":memory:"), "`location`", "`path`")
    raises_one_line(lambda: _qdrant(database, url="http://localhost:1", location=":memory:"), "`location`", "`url`")


def test_path_alone_still_builds(database, tmp_path):
    with _qdrant(database, path=tmp_path / "q") as index:
        assert len(index) == 50
    with QdrantMatryoshkaIndex.open(path=tmp_path / "q") as index:
        assert index.search(database[:1], 1)[1][0, 0] == 0
