"""The adaptive-retrieval sweep: rows checked against direct searches + metrics, the MFLOPs formula, the
Pareto front on hand-made points, and the JSON / PNG outputs."""

import json

import faiss
import numpy as np
import pytest

from hf_mrl.evaluation.metrics import mrl_map_at_k, recall_at_k, relevance_from_labels
from hf_mrl.evaluation.sweep import (
    evaluate_funnel,
    evaluate_search,
    id_relevance,
    label_relevance,
    mark_pareto_front,
    save_sweep,
    search_mflops,
    sweep_adaptive_retrieval,
)
from hf_mrl.index import MatryoshkaIndex

NUM_VECTORS, DIM, NUM_CLASSES = 800, 32, 6


@pytest.fixture(scope="module")
def labelled():
    """Class-clustered embeddings (seeded), early features louder than late ones."""
    rng = np.random.default_rng(0)
    scale = np.linspace(2.0, 0.3, DIM)
    centers = rng.standard_normal((NUM_CLASSES, DIM)) * scale
    labels = rng.integers(0, NUM_CLASSES, NUM_VECTORS + 40)
    vectors = (centers[labels] + 1.2 * rng.standard_normal((len(labels), DIM)) * scale).astype(np.float32)
    return vectors[:NUM_VECTORS], labels[:NUM_VECTORS], vectors[NUM_VECTORS:], labels[NUM_VECTORS:]


def exact_top(database, queries, k):
    unit_db = database / np.linalg.norm(database, axis=1, keepdims=True)
    unit_q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    return np.argsort(-(unit_q @ unit_db.T), axis=1, kind="stable")[:, :k]


def test_sweep_rows_match_direct_search_and_metrics(labelled):
    database, labels, queries, query_labels = labelled
    exact = exact_top(database, queries, 10)
    rows = sweep_adaptive_retrieval(
        database, queries, query_labels=query_labels, database_labels=labels, storages=["float32", ("binary", "int8")],
        shortlist_dims=(8, 16, 12), shortlist_sizes=(5, 10, 50), rerank_dims=(16, None), exact_ids=exact,
        show_progress=False,
    )
    # shortlist size 5 < k is skipped; binary drops dim 12 (not a multiple of 8).
    assert len(rows) == 3 * 2 * 2 + 2 * 2 * 2
    expected_keys = {"method", "shortlist_index", "shortlist_storage", "storage", "shortlist_dim", "shortlist_size",
                     "rerank_dim", "map@10", "map@10_stderr", "recall@10", "precision@10", "nn_recall@10", "qps", "mflops_per_query",
                     "bytes_per_vector", "pareto"}
    for row in rows:
        assert set(row) == expected_keys
        index = MatryoshkaIndex(database, storage=row["storage"], shortlist_storage=row["shortlist_storage"],
                                shortlist_dim=row["shortlist_dim"], show_progress=False)
        _, ids = index.search(queries, 10, shortlist_size=row["shortlist_size"], rerank_dim=row["rerank_dim"])
        hits, num_relevant = relevance_from_labels(ids, query_labels, labels)
        assert row["map@10"] == pytest.approx(mrl_map_at_k(hits, num_relevant, 10))
        per_query = [mrl_map_at_k(hits[i : i + 1], num_relevant[i : i + 1], 10) for i in range(len(hits))]
        assert row["map@10_stderr"] == pytest.approx(np.std(per_query, ddof=1) / np.sqrt(len(per_query)))
        assert row["recall@10"] == pytest.approx(recall_at_k(hits, num_relevant, 10))
        assert row["nn_recall@10"] == pytest.approx(recall_at_k(ids, exact, 10))
        assert row["qps"] > 0
        per_distance = 2 if row["shortlist_storage"] == "binary" else row["shortlist_dim"]
        cost = NUM_VECTORS * per_distance + row["shortlist_size"] * row["rerank_dim"]
        assert row["mflops_per_query"] == pytest.approx(cost / 1e6)
    full = [row for row in rows if row["storage"] == "float32" and row["rerank_dim"] == DIM and row["shortlist_size"] == 50]
    assert all(row["nn_recall@10"] > 0.8 for row in full)
    assert any(row["pareto"] for row in rows)


def test_label_and_id_relevance_agree(labelled):
    database, labels, queries, query_labels = labelled
    index = MatryoshkaIndex(database, shortlist_dim=8, show_progress=False)
    relevant_ids = [np.flatnonzero(labels == label) for label in query_labels]
    by_label = evaluate_search(index, queries, label_relevance(query_labels, labels), shortlist_size=40)
    by_ids = evaluate_search(index, queries, id_relevance(relevant_ids), shortlist_size=40)
    assert by_label["map@10"] == pytest.approx(by_ids["map@10"])
    assert by_label["recall@10"] == pytest.approx(by_ids["recall@10"])
    assert by_label["map@10"] > 0.5  # clustered data: most neighbours share the query's class


def test_hnsw_and_ivf_costs_use_faiss_distance_counts(labelled):
    database, labels, queries, query_labels = labelled
    relevance = label_relevance(query_labels, labels)
    hnsw = MatryoshkaIndex(database, shortlist_index="hnsw", shortlist_dim=16, index_params={"hnsw_m": 8},
                           show_progress=False)
    row = evaluate_search(hnsw, queries, relevance, shortlist_size=20, rerank_dim=32, ef_search=20)
    shortlist_cost = row["mflops_per_query"] * 1e6 - 20 * 32
    assert row["ef_search"] == 20
    assert 0 < shortlist_cost < NUM_VECTORS * 16  # a graph search compares fewer vectors than a full scan
    faiss.cvar.hnsw_stats.reset()
    hnsw.search(queries, 10, shortlist_size=20, rerank_dim=32, ef_search=20)
    assert shortlist_cost == pytest.approx(faiss.cvar.hnsw_stats.ndis / len(queries) * 16)
    ivf = MatryoshkaIndex(database, shortlist_index="ivf", shortlist_dim=8, index_params={"nlist": 16, "nprobe": 2},
                          show_progress=False)
    row = evaluate_search(ivf, queries, relevance, shortlist_size=20, rerank_dim=32)
    assert row["nprobe"] == 2
    assert 16 * 8 + 20 * 32 < row["mflops_per_query"] * 1e6 < 16 * 8 + NUM_VECTORS * 8 + 20 * 32


def test_search_mflops_formula(labelled):
    database = labelled[0]
    flat = MatryoshkaIndex(database, shortlist_dim=8, show_progress=False)
    assert search_mflops(flat, 8, [(100, 32)], 0) == pytest.approx((NUM_VECTORS * 8 + 100 * 32) / 1e6)
    binary = MatryoshkaIndex(database, shortlist_storage="binary", shortlist_dim=16, show_progress=False)
    assert search_mflops(binary, 16, [(200, 16), (50, 32)], 0) == pytest.approx(
        (NUM_VECTORS * 2 + 200 * 16 + 50 * 32) / 1e6)


def test_funnel_row(labelled):
    database, labels, queries, query_labels = labelled
    index = MatryoshkaIndex(database, shortlist_dim=8, show_progress=False)
    row = evaluate_funnel(index, queries, label_relevance(query_labels, labels), [8, 16, 32], [200, 50, 10])
    _, ids = index.funnel_search(queries, 10, [8, 16, 32], [200, 50, 10])
    hits, num_relevant = relevance_from_labels(ids, query_labels, labels)
    assert row["method"] == "funnel" and row["funnel_dims"] == [8, 16, 32]
    assert row["map@10"] == pytest.approx(mrl_map_at_k(hits, num_relevant, 10))
    assert row["mflops_per_query"] == pytest.approx((NUM_VECTORS * 8 + 200 * 16 + 50 * 32) / 1e6)


def test_pareto_front_on_hand_made_points():
    rows = [
        {"qps": 100.0, "map@10": 0.90},  # front: the best quality
        {"qps": 1000.0, "map@10": 0.85},  # front
        {"qps": 900.0, "map@10": 0.85},  # dominated by the row above (same quality, slower)
        {"qps": 5000.0, "map@10": 0.60},  # front: the fastest
        {"qps": 500.0, "map@10": 0.70},  # dominated
        {"qps": 100.0, "map@10": 0.90},  # a tie with the first: neither dominates the other
    ]
    assert [row["pareto"] for row in mark_pareto_front(rows)] == [True, True, False, True, False, True]


def test_save_sweep_writes_json_and_png(tmp_path, labelled):
    database, labels, queries, query_labels = labelled
    rows = sweep_adaptive_retrieval(database, queries, query_labels=query_labels, database_labels=labels,
                                    shortlist_dims=(8,), shortlist_sizes=(10, 40), show_progress=False)
    rows.append({"method": "exact full-dim", "qps": 10.0, "map@10": 0.9, "pareto": False})
    save_sweep(rows, tmp_path / "out" / "sweep.json", tmp_path / "out" / "sweep.png")
    assert json.loads((tmp_path / "out" / "sweep.json").read_text()) == rows
    assert (tmp_path / "out" / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["sweep.json", "sweep.png"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(storages=["float8"]), r"`storages` entries must be one of .* got \('float32', 'float8'\)"),
        (dict(storages=[("binary",)]), r"`storages` entries must be one of"),
        (dict(query_labels=None), r"Give the relevance"),
        (dict(relevant_ids=[[0]] * 40), r"Give either `relevant_ids` or"),
        (dict(shortlist_dims=(64,)), r"No shortlist dim in \[64\] fits embeddings of dim 32"),
    ],
)
def test_sweep_rejects_bad_arguments(labelled, kwargs, message):
    database, labels, queries, query_labels = labelled
    arguments = dict(query_labels=query_labels, database_labels=labels, show_progress=False)
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=message):
        sweep_adaptive_retrieval(database, queries, **arguments)
