"""scripts/bench_retrieval.py end to end at toy size (a random ViT, 600 real Fashion-MNIST encodings): every
method gets measured, results and plot are written, and a rerun reads the cached embeddings back."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest
from retrieval_database import lend_database, wordnet_relevance

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_retrieval.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_retrieval", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_bench(monkeypatch, *arguments: str) -> None:
    module = load_bench()
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), *arguments])
    module.main()


def test_wordnet_relevance_goes_by_word_in_every_copy():
    # "bank" names two synsets: its row under the other synset holds the same text, so it is an answer too.
    word_rows = [("bank", "bank.n.01"), ("depository", "bank.n.01"), ("Bank", "bank.n.02"), ("shore", "bank.n.02"),
                 ("river", "river.n.01")]
    relevant = wordnet_relevance(word_rows, 2, ["bank.n.01", "river.n.01", "unseen.n.01"])
    assert relevant.tolist() == [[0, 1, 2, 5, 6, 7], [4, 9, -1, -1, -1, -1], [-1] * 6]


@pytest.mark.slow
def test_bench_retrieval_runs_every_method_and_caches(tmp_path, monkeypatch, capsys):
    out = tmp_path / "bench"
    small = ["--num_items", "300", "--copies", "2", "--num_queries", "20", "--hnsw_ef", "16,32", "--shortlist_indexes",
             "ivf,hnsw,ivf@8", "--shortlist_dims", "16", "--shortlist_sizes", "10,20", "--nprobe", "4", "--funnels", "16,32,full:40,20,10", "--binary_dims", "32",
             "--ivfpq", "IVF4,PQ8x4", "--ivfpq_nprobe", "1,4", "--repeats", "1", "--paired_rounds", "2", "--paired_seconds", "0.05",
             "--out", str(out)]
    run_bench(monkeypatch, "--model", "random-vit", "--data", "fashion-mnist", *small)
    printed = capsys.readouterr().out
    assert "database: 600 x 64" in printed
    assert "Targets (side by side" in printed or "no adaptive / funnel setting reaches equal quality" in printed
    result = json.loads((out / "retrieval.json").read_text())
    methods = [row["method"] for row in result["rows"]]
    assert methods.count("exact (flat)") == 1 and methods.count("hnsw (full dim)") == 2
    assert methods.count("ivfpq (full dim)") == 2  # nprobe 1 and 4, re-ranked exactly
    assert "ivfpq_IVF4_PQ8x4_s0" in result["summary"]["build_seconds"]
    # ivf, hnsw and ivf@8 (AdANNS: lists clustered at 8 dims) shortlists: 2 sizes each; binary flat: 3 sizes; one
    # funnel per shortlist kind.
    assert methods.count("adaptive") == 2 + 2 + 2 + 3 and methods.count("funnel") == 3
    assert sum(row.get("shortlist_index") == "ivf@8" for row in result["rows"]) == 2 + 1
    assert "ivf@8 @16 x20 nprobe 4 -> @64" in printed
    assert result["database_size"] == 600 and result["num_queries"] == 20
    # The chosen settings were timed again, taking turns; the targets' ratios are medians of the per-turn ratios.
    summary, bench = result["summary"], load_bench()
    turns = summary["side_by_side_seconds"]
    assert "exact (flat)" in turns and set(turns) <= set(bench.PAIRED_METHODS)
    assert all(len(seconds) == 2 for seconds in turns.values()) and result["paired_rounds"] == 2
    if "speedup_vs_exact" in summary:
        ours = summary["ours_best"]["method"]
        per_turn = sorted(e / o for e, o in zip(turns["exact (flat)"], turns[ours]))
        assert summary["speedup_vs_exact"] == pytest.approx(sum(per_turn) / 2)
    for row in result["rows"]:
        assert 0.0 <= row["map@10"] <= 1.0 and row["qps"] > 0 and isinstance(row["pareto"], bool)
    assert (out / "retrieval.png").read_bytes()[:4] == b"\x89PNG"
    (cache,) = (out / "cache").iterdir()
    assert sorted(path.name for path in cache.glob("*.npy")) == [
        "database.npy", "database_labels.npy", "queries.npy", "query_labels.npy"]

    # A rerun from the cached embeddings measures the same qualities (QPS aside).
    run_bench(monkeypatch, "--embeddings", str(cache / "database.npy"), *small)
    rerun = json.loads((out / "retrieval.json").read_text())
    assert [row["map@10"] for row in rerun["rows"]] == [row["map@10"] for row in result["rows"]]


@pytest.mark.slow
def test_bench_retrieval_qdrant_backend_adds_engine_rows(tmp_path, monkeypatch, capsys):
    out = tmp_path / "bench"
    run_bench(monkeypatch, "--model", "random-vit", "--data", "fashion-mnist", "--num_items", "200", "--copies", "1",
              "--num_queries", "12", "--hnsw_ef", "16", "--shortlist_indexes", "hnsw", "--shortlist_dims", "16",
              "--shortlist_sizes", "10,200", "--funnels", "16,32,full:40,20,10", "--binary_dims", "32", "--binary_shortlist_index", "hnsw", "--repeats", "1",
              "--backend", "qdrant", "--qdrant_exact_shortlists", "--qdrant_shortlist_storages", "float32,int8",
              "--paired_rounds", "3", "--paired_seconds", "0.05", "--out", str(out))
    printed = capsys.readouterr().out
    assert "exact @16 x200 -> @64" in printed and "built qdrant collection" in printed
    result = json.loads((out / "retrieval.json").read_text())
    assert result["backend"] == "qdrant"
    rows = {(row["method"], row["shortlist_index"], row["shortlist_storage"], row["shortlist_size"]): row
            for row in result["rows"] if "qdrant" in row["method"]}
    # HNSW (float32, int8) and exact shortlists at 2 sizes, a funnel each, and binary graph shortlists at the 2 sizes
    # (--binary_shortlist_index hnsw), as on the faiss index.
    assert len(rows) == 3 * 2 + 3 + 2
    faiss_binary = [row for row in result["rows"] if row["method"] == "adaptive" and row["shortlist_storage"] == "binary"]
    assert [(row["shortlist_index"], row["shortlist_size"]) for row in faiss_binary] == [("hnsw", 10), ("hnsw", 200)]
    assert rows[("adaptive (qdrant)", "hnsw", "int8", 200)]["bytes_per_vector"] == 4 * (16 + 32 + 64) + 16
    # A shortlist of the whole database makes the search exact at the re-rank dim, as exact full-dim search.
    exact_full = next(row for row in result["rows"] if row["method"] == "exact (flat)")
    assert rows[("adaptive (qdrant)", "exact", "float32", 200)]["nn_recall@10"] == 1.0
    assert rows[("adaptive (qdrant)", "exact", "float32", 200)]["map@10"] == pytest.approx(exact_full["map@10"])
    # So the engine's adaptive search reaches equal quality and is timed again beside faiss's, from the reopened
    # collection.
    summary = result["summary"]
    assert len(summary["side_by_side_seconds"]["adaptive (qdrant)"]) == 3
    assert summary["qdrant_adaptive_vs_faiss"] > 0 and "Qdrant adaptive:" in printed
    # And the engine's row with faiss's chosen setting (its speed on the same plan) is timed beside it.
    faiss_best = summary["side_by_side_seconds"]["adaptive (qdrant, faiss's setting)"]
    assert len(faiss_best) == 3 and summary["qdrant_adaptive_vs_faiss_same_setting"] > 0
    assert "with faiss's setting (the engine's speed on the same plan)" in printed
    # With the quality difference on that setting, paired by query: the engine ranks the same candidates.
    difference, error = summary["qdrant_adaptive_same_setting_map_difference"]
    assert abs(difference) <= 3 * error + 0.02 and error >= 0
    assert "its mAP@10 minus faiss's on that setting, paired by query" in printed


def test_a_cache_with_other_queries_lends_its_database_and_indexes(tmp_path):
    lender = tmp_path / "wordnet-model-abc-nall-c5-q1000-s0-bf16"
    (lender / "qdrant" / "collection").mkdir(parents=True)
    for name in ("database.npy", "queries.npy", "query_relevant.npy", "hnsw_full.faiss", "qdrant/collection/segment"):
        (lender / name).write_text(name)
    (tmp_path / "wordnet-model-abc-nall-c5-q1000-s1-bf16").mkdir()  # another seed: not a lender
    borrower = tmp_path / "wordnet-model-abc-nall-c5-q5000-s0-bf16"
    (borrower / ".hnsw_full.faiss.lending").mkdir(parents=True)  # left by a stopped run
    (borrower / "queries.npy").write_text("own queries")

    assert lend_database(borrower) == lender
    for name in ("database.npy", "hnsw_full.faiss", "qdrant/collection/segment"):
        assert (borrower / name).stat().st_ino == (lender / name).stat().st_ino  # hard links, not copies
    assert (borrower / "queries.npy").read_text() == "own queries"
    assert not (borrower / "query_relevant.npy").exists()
    assert sorted(path.name for path in borrower.iterdir()) == [
        "database.npy", "hnsw_full.faiss", "qdrant", "queries.npy"]
    assert lend_database(tmp_path / "wordnet-model-abc-nall-c5-q5000-s2-bf16") is None
