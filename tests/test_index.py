"""MatryoshkaIndex: every search mode against a brute-force numpy reference, storage round trips, save/load
integrity, argument errors, and building from a dataset with a tiny real model."""

import json
import warnings

import faiss
import numpy as np
import pytest
import torch
from datasets import Dataset

from hf_mrl.index import STORAGES, MatryoshkaIndex, encode_embeddings
from hf_mrl.modeling.configuration_matryoshka import MatryoshkaConfig
from hf_mrl.modeling.files import RECORD_NAME
from hf_mrl.modeling.modeling_matryoshka import MatryoshkaModel

from .index_vectors import DIM, NUM_VECTORS, exact_scores, exact_search, unit
from .tiny import tiny_vit_config


def funnel_reference(database, queries, dims, sizes, k):
    """Stage by stage, one query at a time: exact top sizes[0] at dims[0], then re-rank the survivors."""
    results = []
    for query in queries[:, None, :]:
        candidates = exact_search(database, query, dims[0], sizes[0])[1][0]
        for dim, size in zip(dims[1:], sizes[1:], strict=True):
            scores = exact_scores(database[candidates], query, dim)[0]
            candidates = candidates[np.argsort(-scores, kind="stable")[:size]]
        results.append(candidates[:k])
    return np.stack(results)


# -- search modes against the reference ---------------------------------------------------------------------


@pytest.mark.parametrize("rerank_dim", [8, 20, 32])
def test_full_shortlist_equals_exact_search_at_rerank_dim(database, queries, rerank_dim):
    index = MatryoshkaIndex(database, shortlist_dim=8, show_progress=False)
    scores, ids = index.search(queries, 10, shortlist_size=NUM_VECTORS, rerank_dim=rerank_dim)
    ref_scores, ref_ids = exact_search(database, queries, rerank_dim, 10)
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_allclose(scores, ref_scores, atol=1e-5)


def test_shortlist_then_rerank_matches_reference(database, queries):
    index = MatryoshkaIndex(database, shortlist_dim=[8, 16], show_progress=False)
    scores, ids = index.search(queries, 5, shortlist_dim=8, shortlist_size=40, rerank_dim=32)
    for row, query in enumerate(queries[:, None, :]):
        shortlist = exact_search(database, query, 8, 40)[1][0]
        rerank = exact_scores(database[shortlist], query, 32)[0]
        expected = shortlist[np.argsort(-rerank, kind="stable")[:5]]
        np.testing.assert_array_equal(ids[row], expected)
        np.testing.assert_allclose(scores[row], np.sort(rerank)[::-1][:5], atol=1e-5)


def test_funnel_matches_stagewise_reference(database, queries):
    index = MatryoshkaIndex(database, shortlist_dim=4, show_progress=False)
    dims, sizes = [4, 8, 16, 32], [300, 120, 40, 10]
    scores, ids = index.funnel_search(queries, 10, dims, sizes)
    np.testing.assert_array_equal(ids, funnel_reference(database, queries, dims, sizes, 10))
    np.testing.assert_allclose(scores, np.take_along_axis(exact_scores(database, queries, 32), ids, 1), atol=1e-5)
    # The default funnel runs end to end and ends at the stored dim.
    default_scores, default_ids = index.funnel_search(queries, 3)
    np.testing.assert_allclose(default_scores, np.take_along_axis(exact_scores(database, queries, 32), default_ids, 1),
                               atol=1e-5)


def test_a_funnel_may_rerank_a_quantised_shortlist_at_its_own_dim(database, queries):
    """dims [8, 8, 32]: the int8 top 60 at 8 dims, re-ranked at 8 from the float vectors (keep 20), then at 32."""
    index = MatryoshkaIndex(database, shortlist_dim=8, shortlist_storage="int8", show_progress=False)
    scores, ids = index.funnel_search(queries, 5, [8, 8, 32], [60, 20, 5])
    _, shortlisted = index.funnel_search(queries, 60, [8], [60])  # one stage: the int8 top 60, scored at 8 in float
    for row, query in enumerate(queries[:, None, :]):
        survivors = shortlisted[row, :20]
        rerank = exact_scores(database[survivors], query, 32)[0]
        np.testing.assert_array_equal(ids[row], survivors[np.argsort(-rerank, kind="stable")[:5]])
        np.testing.assert_allclose(scores[row], np.sort(rerank)[::-1][:5], atol=1e-5)
    # Only the first dim may repeat.
    for dims in ([8, 8, 8], [8, 32, 32]):
        with pytest.raises(ValueError, match=r"only the first may repeat once"):
            index.funnel_search(queries, 5, dims, [60, 20, 5])


def test_funnel_with_whole_database_equals_exact(database, queries):
    index = MatryoshkaIndex(database, shortlist_dim=8, show_progress=False)
    _, ids = index.funnel_search(queries, 10, [8, 16, 32], [NUM_VECTORS, NUM_VECTORS, NUM_VECTORS])
    np.testing.assert_array_equal(ids, exact_search(database, queries, 32, 10)[1])


@pytest.mark.parametrize(
    ("storage", "int8_scale", "atol", "min_overlap"),
    [
        ("float16", "dimension", 5e-4, 0.99),
        ("bfloat16", "dimension", 3e-3, 0.97),
        ("int8", "dimension", 8e-3, 0.95),
        ("int8", "vector", 8e-3, 0.95),
    ],
)
@pytest.mark.parametrize("dim", [8, 16, 32])
def test_quantised_storage_is_close_to_exact_at_every_dim(database, queries, storage, int8_scale, atol, min_overlap, dim):
    """Truncating a quantised vector and renormalising the slice stays close to the float search at that dim."""
    index = MatryoshkaIndex(database, storage=storage, int8_scale=int8_scale, nesting_dims=[8, 16, 32],
                            shortlist_dim=8, show_progress=False)
    scores, ids = index.search(queries, 10, shortlist_size=NUM_VECTORS, rerank_dim=dim)
    reference = exact_scores(database, queries, dim)
    np.testing.assert_allclose(scores, np.take_along_axis(reference, ids, 1), atol=atol)
    overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, exact_search(database, queries, dim, 10)[1],
                                                                  strict=True)])
    assert overlap >= min_overlap


@pytest.mark.parametrize("int8_scale", ["dimension", "vector"])
def test_int8_slices_keep_their_resolution_when_late_features_are_large(database, queries, int8_scale):
    """One scale over the whole vector would let the large late features coarsen the first 8; per-feature
    and per-nesting-block scales keep an 8-dim search precise (a single scale is off by ~0.24 here)."""
    loud_tail = database.copy()
    loud_tail[:, 16:] *= 40
    index = MatryoshkaIndex(loud_tail, storage="int8", int8_scale=int8_scale, nesting_dims=[8, 16, 32],
                            shortlist_dim=8, show_progress=False)
    scores, ids = index.search(queries, 10, shortlist_size=NUM_VECTORS, rerank_dim=8)
    np.testing.assert_allclose(scores, np.take_along_axis(exact_scores(loud_tail, queries, 8), ids, 1), atol=1e-2)


# -- exact search: every vector, no shortlist -------------------------------------------------------------------


@pytest.mark.parametrize(("stored_dim", "rerank_dim"), [(None, None), (None, 20), (24, None), (24, 8)])
def test_exact_search_is_brute_force_over_every_vector(database, queries, stored_dim, rerank_dim):
    """exact=True skips the shortlist (an HNSW graph too narrow to find the top 10 here) and scores every stored
    vector at `rerank_dim` (default: the stored dim): the ids and scores of a numpy brute force."""
    ids = np.arange(NUM_VECTORS, dtype=np.int64)[::-1] * 3
    index = MatryoshkaIndex(database, ids=ids, stored_dim=stored_dim, shortlist_dim=8, shortlist_index="hnsw",
                            index_params={"hnsw_m": 4, "ef_search": 10}, show_progress=False)
    dim = rerank_dim or stored_dim or DIM
    ref_scores, ref_rows = exact_search(database, queries, dim, 10)
    scores, found = index.search(queries, 10, rerank_dim=rerank_dim, exact=True)
    np.testing.assert_array_equal(found, ids[ref_rows])
    np.testing.assert_allclose(scores, ref_scores, atol=1e-5)
    assert scores.dtype == np.float32 and found.dtype == np.int64
    _, shortlisted = index.search(queries, 10, shortlist_size=10, rerank_dim=rerank_dim)  # the adaptive search misses some
    assert (shortlisted != found).any()


def test_exact_search_in_blocks_of_rows(database, queries, monkeypatch):
    """The database is scored a block of rows at a time, keeping the best k across blocks."""
    index = MatryoshkaIndex(database, shortlist_dim=8, show_progress=False)
    monkeypatch.setattr("hf_mrl.index.storage._RERANK_BATCH_BYTES", 4 * (DIM + len(queries)) * 7)  # blocks of 7 rows
    for k in (1, 25, NUM_VECTORS):
        scores, found = index.search(queries, k, exact=True)
        ref_scores, ref_rows = exact_search(database, queries, DIM, k)
        np.testing.assert_array_equal(found, ref_rows)
        np.testing.assert_allclose(scores, ref_scores, atol=1e-5)


def test_exact_search_rejects_shortlist_options_and_quantised_storage(database, queries):
    index = MatryoshkaIndex(database, shortlist_dim=8, show_progress=False)
    for options, name in [(dict(shortlist_size=50), "shortlist_size"), (dict(shortlist_dim=8), "shortlist_dim"),
                          (dict(nprobe=4), "nprobe"), (dict(ef_search=32), "ef_search")]:
        with pytest.raises(ValueError, match=rf"`{name}` is .*, but `exact=True` scores every vector, without a "
                                             rf"shortlist; allowed: leave `{name}` out with exact=True"):
            index.search(queries, 10, exact=True, **options)
    with pytest.raises(ValueError, match=r"`exact` must be True or False, got 'yes'"):
        index.search(queries, 10, exact="yes")
    with pytest.raises(ValueError, match=r"`rerank_dim` must be an integer from 1 to 32 \(the stored dim\), got 40"):
        index.search(queries, 10, rerank_dim=40, exact=True)
    int8 = MatryoshkaIndex(database, storage="int8", shortlist_dim=8, show_progress=False)
    with pytest.raises(ValueError, match=r"`exact=True` reads full-precision vectors, but this index stores int8 codes "
                                         r"\(`storage='int8'`\); allowed: an index built with storage='float32'"):
        int8.search(queries, 10, exact=True)


# -- binary storage ----------------------------------------------------------------------------------------------

BINARY_WARNING = r"storage='binary' re-ranks on the sign bits \(no float vectors are kept\): expect about half"


def recall_at_10(found: np.ndarray, expected: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, expected, strict=True)]))


def test_binary_storage_warns_that_it_reranks_on_sign_bits(tmp_path, database, queries):
    """The documented behaviour: even with every vector shortlisted, a re-rank on sign bits finds about half of the
    exact top 10; the warning says so at build and at load. Float storage under a binary shortlist finds all."""
    exact_ids = exact_search(database, queries, DIM, 10)[1]
    with pytest.warns(UserWarning, match=BINARY_WARNING):
        binary = MatryoshkaIndex(database, storage="binary", shortlist_dim=8, show_progress=False)
    assert recall_at_10(binary.search(queries, 10, shortlist_size=NUM_VECTORS)[1], exact_ids) < 0.6
    with pytest.warns(UserWarning, match=BINARY_WARNING):
        MatryoshkaIndex.load(binary.save(tmp_path / "binary"))
    with pytest.raises(ValueError, match=r"`exact=True` reads full-precision vectors, but this index stores binary codes"):
        binary.search(queries, 10, exact=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning: the re-rank reads floats
        floats = MatryoshkaIndex(database, storage="float32", shortlist_storage="binary", shortlist_dim=16,
                                 show_progress=False)
    assert recall_at_10(floats.search(queries, 10, shortlist_size=NUM_VECTORS)[1], exact_ids) == 1.0


@pytest.mark.filterwarnings("ignore:storage='binary' re-ranks")
def test_binary_storage_scores_are_cosines_with_sign_vectors(database, queries):
    index = MatryoshkaIndex(database, storage="binary", shortlist_dim=8, show_progress=False)
    scores, ids = index.search(queries, 10, shortlist_size=NUM_VECTORS, rerank_dim=24)
    signs = np.where(database[:, :24] > 0, 1.0, -1.0)
    reference = unit(queries, 24) @ signs.T / np.sqrt(24)
    np.testing.assert_allclose(scores, np.take_along_axis(reference, ids, 1), atol=1e-5)
    np.testing.assert_allclose(scores, -np.sort(-reference, axis=1)[:, :10], atol=1e-5)
    assert index.memory_breakdown()["vectors"] == NUM_VECTORS * DIM // 8


def test_binary_shortlist_feeds_a_float_rerank(database, queries):
    index = MatryoshkaIndex(database, shortlist_storage="binary", shortlist_dim=16, show_progress=False)
    size = 50
    scores, ids = index.search(queries, 10, shortlist_size=size, rerank_dim=32)
    bits = database[:, :16] > 0
    hamming = (bits[None, :, :] != (queries[:, None, :16] > 0)).sum(-1)  # (nq, N)
    cutoff = np.sort(hamming, axis=1)[:, size - 1]
    # Every result lies inside the Hamming shortlist and carries its exact full-dim cosine, best first.
    assert (np.take_along_axis(hamming, ids, 1) <= cutoff[:, None]).all()
    np.testing.assert_allclose(scores, np.take_along_axis(exact_scores(database, queries, 32), ids, 1), atol=1e-5)
    assert (np.diff(scores, axis=1) <= 0).all()
    assert index.memory_breakdown()["shortlist@16"] == NUM_VECTORS * 2


def test_ivf_probing_every_list_is_exact(database, queries):
    index = MatryoshkaIndex(database, shortlist_index="ivf", shortlist_dim=8, index_params={"nlist": 8, "nprobe": 8},
                            show_progress=False)
    _, ids = index.search(queries, 10, shortlist_size=NUM_VECTORS, rerank_dim=32)
    np.testing.assert_array_equal(ids, exact_search(database, queries, 32, 10)[1])


@pytest.mark.parametrize("shortlist_storage", ["float32", "int8"])
def test_ivf_clustered_at_a_lower_dim_assigns_by_those_features(database, queries, shortlist_storage):
    """AdANNS-IVF: lists of the 16-d shortlist come from clusters of the first 4 features; every vector sits in
    the list whose centroid is nearest at 4 dims, and probing every list is still exact."""
    params = {"nlist": 6, "nprobe": 6, "cluster_dim": 4}
    index = MatryoshkaIndex(database, shortlist_index="ivf", shortlist_storage=shortlist_storage, shortlist_dim=[4, 16],
                            index_params=params, show_progress=False)
    ivf = index._shortlists[16]
    centroids = faiss.downcast_index(ivf.quantizer).reconstruct_n(0, 6)
    assert centroids.shape == (6, 16) and np.all(centroids[:, 4:] == 0) and np.abs(centroids[:, :4]).sum() > 0
    lists = np.empty(NUM_VECTORS, dtype=np.int64)
    for number in range(6):
        lists[faiss.rev_swig_ptr(ivf.invlists.get_ids(number), ivf.invlists.list_size(number)).copy()] = number
    nearest = np.argmax(unit(database, 4) @ centroids[:, :4].T, axis=1)
    assert (lists == nearest).mean() >= 0.99  # float32 rounding may flip a tie
    assert ivf.quantizer.d == 16 and index._shortlists[4].quantizer.ntotal == 6  # at 4 dims: plain IVF
    _, ids = index.search(queries, 10, shortlist_dim=16, shortlist_size=NUM_VECTORS, rerank_dim=32)
    np.testing.assert_array_equal(ids, exact_search(database, queries, 32, 10)[1])
    # One list of six: a shortlist from the query's nearest cluster at 4 dims, scored at 16.
    _, few = index.search(queries, 10, shortlist_dim=16, shortlist_size=40, rerank_dim=32, nprobe=1)
    query_lists = np.argmax(unit(queries, 4) @ centroids[:, :4].T, axis=1)
    assert all(lists[row[row >= 0]].tolist() == [query_lists[i]] * int((row >= 0).sum()) for i, row in enumerate(few))


def test_short_shortlists_pad_with_minus_one_and_minus_inf(database, queries):
    """IVF probing one small list finds fewer than k candidates: the rest is padded, never invented."""
    ids = np.arange(NUM_VECTORS, dtype=np.int64) + 5000
    index = MatryoshkaIndex(database, ids=ids, shortlist_index="ivf", shortlist_dim=8,
                            index_params={"nlist": 15, "nprobe": 1}, show_progress=False)
    scores, found = index.search(queries, 60, shortlist_size=100)
    missing = found == -1
    assert missing.any() and not missing.all()
    np.testing.assert_array_equal(np.isneginf(scores), missing)
    assert (np.diff(missing.astype(int), axis=1) >= 0).all()  # padding only at the end of each row
    reference = exact_scores(database, queries, DIM)
    rows = np.where(missing, 0, found - 5000)
    np.testing.assert_allclose(scores[~missing], np.take_along_axis(reference, rows, 1)[~missing], atol=1e-5)


@pytest.mark.parametrize("shortlist_storage", ["float32", "float16", "int8", "binary"])
def test_hnsw_shortlist_finds_most_true_neighbours(database, queries, shortlist_storage):
    index = MatryoshkaIndex(database, shortlist_index="hnsw", shortlist_storage=shortlist_storage, shortlist_dim=16,
                            index_params={"hnsw_m": 16}, show_progress=False)
    _, ids = index.search(queries, 10, shortlist_size=100, rerank_dim=32, ef_search=200)
    exact = exact_search(database, queries, 32, 10)[1]
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, exact, strict=True)])
    assert recall >= 0.8


def test_ids_torch_inputs_and_memory(database, queries):
    ids = np.arange(NUM_VECTORS, dtype=np.int64) * 7 + 1000
    index = MatryoshkaIndex(torch.from_numpy(database), ids=torch.from_numpy(ids), shortlist_dim=8, show_progress=False)
    scores, found = index.search(torch.from_numpy(queries), 5, shortlist_size=NUM_VECTORS)
    ref_scores, ref_rows = exact_search(database, queries, DIM, 5)
    np.testing.assert_array_equal(found, ids[ref_rows])
    assert found.dtype == np.int64 and scores.dtype == np.float32
    assert index.memory_breakdown() == {"vectors": NUM_VECTORS * DIM * 4, "shortlist@8": NUM_VECTORS * 8 * 4,
                                        "ids": NUM_VECTORS * 8}
    assert index.memory_per_vector() == DIM * 4 + 8 * 4 + 8
    int8 = MatryoshkaIndex(database, storage="int8", stored_dim=16, shortlist_dim=8, show_progress=False)
    assert int8.memory_breakdown()["vectors"] == NUM_VECTORS * 16 + 16 * 4  # codes + one scale per feature


# -- save / load -------------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:storage='binary' re-ranks")
@pytest.mark.parametrize(
    "settings",
    [
        dict(storage="float32", shortlist_index="flat", shortlist_dim=[8, 16]),
        dict(storage="bfloat16", shortlist_index="hnsw", shortlist_storage="binary", shortlist_dim=16),
        dict(storage="int8", int8_scale="vector", shortlist_index="ivf", shortlist_storage="int8", shortlist_dim=8),
        dict(storage="float32", shortlist_index="ivf", shortlist_dim=[4, 16], index_params={"nlist": 6, "cluster_dim": 4}),
        dict(storage="binary", shortlist_index="hnsw", shortlist_storage="float16", shortlist_dim=8, stored_dim=24),
    ],
)
def test_save_load_round_trip(tmp_path, database, queries, settings):
    ids = np.arange(NUM_VECTORS, dtype=np.int64)[::-1].copy()
    index = MatryoshkaIndex(database, ids=ids, show_progress=False, **settings)
    path = index.save(tmp_path / "index")
    loaded = MatryoshkaIndex.load(path)
    for name in ("count", "dim", "stored_dim", "storage", "shortlist_index", "shortlist_storage", "shortlist_dims",
                 "index_params"):
        assert getattr(loaded, name) == getattr(index, name)
    assert loaded.memory_breakdown() == index.memory_breakdown()
    for run in (lambda idx: idx.search(queries, 10, shortlist_size=60), lambda idx: idx.funnel_search(queries, 5)):
        (scores, found), (loaded_scores, loaded_found) = run(index), run(loaded)
        np.testing.assert_array_equal(found, loaded_found)
        np.testing.assert_array_equal(scores, loaded_scores)
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["count"] == NUM_VECTORS and manifest["storage"] == settings["storage"]
    assert set(manifest["files"]) == {p.name for p in path.iterdir()} - {"manifest.json", RECORD_NAME}
    assert not any(p.suffix == ".pkl" for p in path.iterdir())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index"]  # no temporary folders left behind


def test_save_replaces_an_index_but_refuses_other_paths(tmp_path, database, queries):
    MatryoshkaIndex(database[:100], shortlist_dim=8, show_progress=False).save(tmp_path / "index")
    MatryoshkaIndex(database, shortlist_dim=16, show_progress=False).save(tmp_path / "index")
    loaded = MatryoshkaIndex.load(tmp_path / "index")
    assert loaded.count == NUM_VECTORS and loaded.shortlist_dims == [16]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index"]
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        loaded.save(tmp_path / "notes.txt")
    assert (tmp_path / "notes.txt").read_text() == "keep me"


@pytest.fixture
def saved(tmp_path, database):
    return MatryoshkaIndex(database, storage="int8", shortlist_dim=8, show_progress=False).save(tmp_path / "index")


def test_load_rejects_flipped_byte(saved):
    path = saved / "vectors.npy"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"vectors\.npy fails its checksum"):
        MatryoshkaIndex.load(saved)


def test_load_rejects_truncated_file(saved):
    path = saved / "shortlist_8.faiss"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ValueError, match=r"shortlist_8\.faiss has \d+ bytes but the manifest says \d+: the file is truncated"):
        MatryoshkaIndex.load(saved)


def test_load_rejects_missing_file(saved):
    (saved / "scales.npy").unlink()
    with pytest.raises(ValueError, match=r"lists 'scales\.npy', which is missing"):
        MatryoshkaIndex.load(saved)


def test_load_rejects_files_of_another_index(saved, tmp_path, database):
    """A consistent checksum is not enough: shapes must match the manifest's count and dims."""
    other = MatryoshkaIndex(database[:50], storage="int8", shortlist_dim=8, show_progress=False).save(tmp_path / "other")
    manifest = json.loads((saved / "manifest.json").read_text())
    (saved / "vectors.npy").write_bytes((other / "vectors.npy").read_bytes())
    manifest["files"]["vectors.npy"] = json.loads((other / "manifest.json").read_text())["files"]["vectors.npy"]
    (saved / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=r"vectors\.npy has shape \(50, 32\).*count=600.*imply shape \(600, 32\)"):
        MatryoshkaIndex.load(saved)


def test_load_rejects_bad_manifest(saved, tmp_path):
    (saved / "manifest.json").write_text("{not json")
    with pytest.raises(ValueError, match="is not valid JSON"):
        MatryoshkaIndex.load(saved)
    with pytest.raises(FileNotFoundError, match="folder not found"):
        MatryoshkaIndex.load(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="has no manifest.json"):
        MatryoshkaIndex.load(tmp_path / "empty")


# -- argument errors -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_index(database):
    return MatryoshkaIndex(database, stored_dim=24, shortlist_dim=[8, 16], show_progress=False)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda idx, q: idx.search(q, 10, rerank_dim=32), r"`rerank_dim` must be an integer from 1 to 24 \(the stored dim\), got 32"),
        (lambda idx, q: idx.search(q, 10, shortlist_dim=12), r"`shortlist_dim` is 12, but shortlist indexes exist only at dims \[8, 16\]"),
        (lambda idx, q: idx.search(q, 10, shortlist_size=5), r"`shortlist_size` is 5, fewer than `k`=10"),
        (lambda idx, q: idx.search(q, 0), r"`k` must be a positive integer, got 0"),
        (lambda idx, q: idx.search(q, -3), r"`k` must be a positive integer, got -3"),
        (lambda idx, q: idx.search(q, 601), r"`k` is 601, more than the 600 vectors in the index; allowed: 1 to 600"),
        (lambda idx, q: idx.search(q[:, :24], 10), r"`queries` must have shape \(num_queries, 32\).*got \(25, 24\)"),
        (lambda idx, q: idx.search(q[0], 10), r"`queries` must have shape \(num_queries, 32\).*got \(32,\)"),
        (lambda idx, q: idx.search(np.where(np.arange(32) == 3, np.nan, q), 10),
         r"`queries` holds a non-finite value \(NaN or inf\) at row 0, column 3"),
        (lambda idx, q: idx.search(q, 10, ef_search=0), r"`ef_search` must be a positive integer, got 0"),
        (lambda idx, q: idx.funnel_search(q, 10, [16, 8], [100, 10]), r"`dims` must be strictly rising .*got \[16, 8\]"),
        (lambda idx, q: idx.funnel_search(q, 10, [12, 24], [100, 10]), r"`dims\[0\]` is 12, but shortlist indexes exist only"),
        (lambda idx, q: idx.funnel_search(q, 10, [8, 32], [100, 10]), r"`dims` must be an integer from 1 to 24"),
        (lambda idx, q: idx.funnel_search(q, 10, [8, 24], [10, 100]), r"`shortlist_sizes` must not rise"),
        (lambda idx, q: idx.funnel_search(q, 10, [8, 24], [100, 5]), r"ends with 5, fewer than `k`=10"),
        (lambda idx, q: idx.funnel_search(q, 10, [8, 24], [100]), r"`shortlist_sizes` must be a list of 2 integers"),
    ],
)
def test_search_rejects_bad_arguments(small_index, queries, call, message):
    with pytest.raises(ValueError, match=message):
        call(small_index, queries)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(storage="float8"), r"`storage` must be one of \['float32', 'float16', 'bfloat16', 'int8', 'binary'\], got 'float8'"),
        (dict(shortlist_storage="pq"), r"`shortlist_storage` must be one of .*got 'pq'"),
        (dict(shortlist_index="lsh"), r"`shortlist_index` must be one of \['flat', 'hnsw', 'ivf'\], got 'lsh'"),
        (dict(int8_scale="row"), r"`int8_scale` must be one of \['dimension', 'vector'\], got 'row'"),
        (dict(stored_dim=40), r"`stored_dim` must be an integer from 1 to 32 \(the embedding dim\), got 40"),
        (dict(shortlist_dim=48), r"`shortlist_dim` must be an integer from 1 to 32 \(the stored dim\), got 48"),
        (dict(stored_dim=16, shortlist_dim=24), r"`shortlist_dim` must be an integer from 1 to 16 \(the stored dim\), got 24"),
        (dict(shortlist_storage="binary", shortlist_dim=12), r"multiple of 8 for a binary shortlist, got 12"),
        (dict(index_params={"M": 8}), r"`index_params` has unknown keys \['M'\]"),
        (dict(index_params={"nlist": 0}), r"`index_params\['nlist'\]` must be a positive integer, got 0"),
        (dict(index_params={"cluster_dim": 8}), r"`index_params\['cluster_dim'\]` is 8, but it sets the clusters of IVF "
                                                r"shortlists.*shortlist_index='flat'"),
        (dict(shortlist_index="ivf", shortlist_storage="binary", index_params={"cluster_dim": 8}),
         r"shortlist_storage='binary'. Allowed: shortlist_index='ivf' with a float shortlist_storage"),
        (dict(shortlist_index="ivf", index_params={"cluster_dim": 40}), r"`index_params\['cluster_dim'\]` is 40, above the "
                                                                        r"stored dim 32; allowed: 1 to 32"),
        (dict(shortlist_index="ivf", index_params={"cluster_dim": 0}), r"`index_params\['cluster_dim'\]` must be a "
                                                                       r"positive integer, got 0"),
        (dict(ids=np.arange(5)), r"`ids` must be 600 integers \(one per vector\), got shape \(5,\)"),
        (dict(nesting_dims=[8, 64]), r"`nesting_dims` must be an integer from 1 to 32"),
    ],
)
def test_construction_rejects_bad_arguments(database, kwargs, message):
    with pytest.raises(ValueError, match=message):
        MatryoshkaIndex(database, show_progress=False, **kwargs)


def test_construction_rejects_bad_embeddings(database):
    with pytest.raises(ValueError, match=r"`embeddings` is empty \(0 vectors\)"):
        MatryoshkaIndex(np.zeros((0, 16), dtype=np.float32))
    with pytest.raises(ValueError, match=r"`embeddings` must be a 2-D array \(num_vectors, dim\), got shape \(32,\)"):
        MatryoshkaIndex(database[0])
    broken = database.copy()
    broken[7, 2] = np.inf
    with pytest.raises(ValueError, match=r"`embeddings` holds a non-finite value \(NaN or inf\) at row 7, column 2"):
        MatryoshkaIndex(broken)


# -- encoding a dataset with a real (tiny) model -----------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return MatryoshkaModel(MatryoshkaConfig(backbone_config=tiny_vit_config(), embedding_dim=16)).eval()


@pytest.fixture(scope="module")
def image_dataset():
    pixels = np.random.default_rng(0).standard_normal((37, 1, 28, 28)).astype(np.float32)
    return Dataset.from_dict({"pixel_values": pixels.tolist(), "item_id": list(range(500, 537)), "labels": [0] * 37})


def collate(rows):
    return {
        "pixel_values": torch.tensor([row["pixel_values"] for row in rows]),
        "labels": torch.tensor([row["labels"] for row in rows]),
    }


def test_from_dataset_encodes_in_order_and_keeps_ids(tiny_model, image_dataset):
    index = MatryoshkaIndex.from_dataset(tiny_model, image_dataset, collate, batch_size=8, id_column="item_id",
                                         shortlist_dim=8, show_progress=False)
    with torch.no_grad():
        expected = tiny_model(**{"pixel_values": collate(list(image_dataset))["pixel_values"]}).embeddings.numpy()
    scores, ids = index.search(expected[:5], 1, shortlist_size=37)
    np.testing.assert_array_equal(ids[:, 0], np.arange(500, 505))
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)


def test_encode_dataset_through_accelerate_matches_plain(tiny_model, image_dataset):
    from accelerate import Accelerator

    plain = encode_embeddings(tiny_model, image_dataset, collate, batch_size=10, show_progress=False)
    gathered = encode_embeddings(tiny_model, image_dataset, collate, batch_size=10, accelerator=Accelerator(cpu=True),
                              show_progress=False)
    assert plain.shape == (37, 16)
    np.testing.assert_allclose(gathered, plain, atol=1e-5)
    with pytest.raises(ValueError, match="`id_column` 'missing' is not a column"):
        MatryoshkaIndex.from_dataset(tiny_model, image_dataset, collate, id_column="missing")


@pytest.mark.filterwarnings("ignore:storage='binary' re-ranks")
def test_every_storage_name_is_accepted(database):
    for storage in STORAGES:
        assert MatryoshkaIndex(database[:50], storage=storage, shortlist_dim=8, show_progress=False).storage == storage
