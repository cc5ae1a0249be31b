"""`hf-mrl index build --backend qdrant` and `hf-mrl index search` on its folder, beside the faiss index; `--exact`
and `--queries_file` on both backends."""

import json

import numpy as np
import pytest
import torch

from hf_mrl import DataArguments, load_matryoshka_model, load_split
from hf_mrl.cli import main
from hf_mrl.data.collators import collator_for_model
from hf_mrl.index import MatryoshkaIndex, QdrantMatryoshkaIndex, encode_embeddings

from .index_vectors import exact_search
from .test_cli import text_model_dir  # noqa: F401 (a fixture: a tiny MatryoshkaModel folder)

DATA = ["--dataset_name", "wordnet-nouns", "--split", "train", "--max_eval_samples", "80"]


def search_lines(capsys, argv) -> list[dict]:
    assert main(argv) == 0
    return [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]


def test_qdrant_build_and_search_match_the_faiss_index(tmp_path, text_model_dir, capsys):  # noqa: F811
    model = str(text_model_dir)
    assert main(["index", "build", model, str(tmp_path / "faiss"), *DATA, "--shortlist_dim", "8"]) == 0
    qdrant = ["index", "build", model, "--backend", "qdrant", "--path", str(tmp_path / "qdrant"), *DATA,
              "--shortlist_dim", "8", "--rerank_dim", "16,32"]
    assert main(qdrant) == 0
    assert main(qdrant) == 0  # building again upserts the same ids: still 80 points
    with QdrantMatryoshkaIndex.open(path=tmp_path / "qdrant") as index:
        assert len(index) == 80 and index.rerank_dims == [16, 32]

    queries = ["--model", model, "-k", "3", "--query", "a large cat", "--query", "a tool for cutting"]
    faiss_lines = search_lines(capsys, ["index", "search", str(tmp_path / "faiss"), *queries, *DATA])
    qdrant_lines = search_lines(capsys, ["index", "search", str(tmp_path / "qdrant"), *queries, "--exact"])
    assert [line["query"] for line in qdrant_lines] == ["a large cat", "a tool for cutting"]
    # The collection's payloads give the same text and class name as the dataset options do for faiss.
    assert qdrant_lines == faiss_lines
    assert all(hit["label"].startswith("noun.") and hit["text"] for line in qdrant_lines for hit in line["results"])
    rerank16 = search_lines(capsys, ["index", "search", str(tmp_path / "qdrant"), *queries, "--rerank_dim", "16"])
    assert [hit["score"] for hit in rerank16[0]["results"]] != [hit["score"] for hit in qdrant_lines[0]["results"]]


def test_qdrant_options_are_checked_before_loading(tmp_path, text_model_dir, capsys):  # noqa: F811
    model = str(text_model_dir)
    cases = [
        (["index", "build", model, str(tmp_path / "out"), "--backend", "qdrant"], "takes one of --path DIR"),
        (["index", "build", model, "--backend", "qdrant", "--path", "a", "--url", "http://localhost:6333"],
         "takes one of --path DIR"),
        (["index", "build", model, str(tmp_path / "out"), "--path", str(tmp_path)], "--path do not apply to --backend faiss"),
        (["index", "build", model, str(tmp_path / "out"), "--max_search_threads", "1"],
         "--max_search_threads do not apply to --backend faiss"),
        (["index", "build", model, "--backend", "qdrant", "--url", "http://localhost:1", "--max_search_threads", "1"],
         "`max_search_threads` 1 sets the embedded engine's search threads (`path` or `location=':memory:'`); a Qdrant "
         "server takes it from its own configuration"),
        (["index", "build", model, "--backend", "qdrant", "--path", "a", "--storage", "int8"],
         "--storage do not apply to --backend qdrant"),
        (["index", "build", model], "--backend faiss writes an index folder: give OUTPUT"),
    ]
    for argv, message in cases:
        assert main(argv) == 1
        assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()

    build = ["index", "build", model, "--backend", "qdrant", "--path", str(tmp_path / "qdrant"), *DATA[:4],
             "--max_eval_samples", "10", "--collection_name", "nouns", "--max_search_threads", "1"]
    assert main(build) == 0
    engine_config = json.loads((tmp_path / "qdrant" / "nouns" / "edge_config.json").read_text())
    assert engine_config["max_search_threads"] == 1
    search = ["index", "search", str(tmp_path / "qdrant"), "--model", model, "--query", "a cat"]
    assert main(search) == 1  # the default collection name is not there
    assert "`collection_name` 'hf_mrl' is not a collection" in capsys.readouterr().err
    (line,) = search_lines(capsys, [*search, "--collection_name", "nouns", "-k", "2"])
    assert len(line["results"]) == 2


# -- --exact and --queries_file ----------------------------------------------------------------------------------

QUERIES = ["a large cat", "a tool for cutting", "a body of water"]


def brute_force(model_dir, texts: list[str], k: int) -> tuple[np.ndarray, np.ndarray]:
    """The exact top k of `texts` over the 80 rows the indexes are built from, by numpy."""
    model = load_matryoshka_model(str(model_dir)).eval()
    corpus = load_split(DataArguments(dataset_name="wordnet-nouns", max_eval_samples=80), "train")
    database = encode_embeddings(model, corpus, collator_for_model(model, str(model_dir)), show_progress=False)
    with torch.no_grad():
        queries = model(**collator_for_model(model, str(model_dir), label_column=None)([{"text": t} for t in texts]))
    return exact_search(database, queries.embeddings.numpy(), database.shape[1], k)


@pytest.fixture(scope="module")
def built(tmp_path_factory, text_model_dir):  # noqa: F811
    """A faiss index (HNSW shortlist at dim 8) and a Qdrant folder (shortlist at 8, re-rank at 16 and 32) of 80 rows."""
    folder, model = tmp_path_factory.mktemp("exact"), str(text_model_dir)
    assert main(["index", "build", model, str(folder / "faiss"), *DATA, "--shortlist_dim", "8", "--shortlist_index",
                 "hnsw"]) == 0
    assert main(["index", "build", model, "--backend", "qdrant", "--path", str(folder / "qdrant"), *DATA,
                 "--shortlist_dim", "8", "--rerank_dim", "16,32"]) == 0
    return folder


def test_exact_search_of_a_queries_file_is_brute_force_on_both_backends(built, text_model_dir, capsys, monkeypatch):  # noqa: F811
    (built / "queries.txt").write_text(f"{QUERIES[0]}\n\n{QUERIES[1]}\r\n  \n{QUERIES[2]}")  # blank lines skipped
    ref_scores, ref_ids = brute_force(text_model_dir, ["a small dog", *QUERIES], 5)
    calls = []
    for index_class in (MatryoshkaIndex, QdrantMatryoshkaIndex):
        search = index_class.search
        monkeypatch.setattr(index_class, "search", lambda self, *args, _search=search, **kwargs: calls.append(kwargs)
                            or _search(self, *args, **kwargs))
    search = ["--model", str(text_model_dir), "-k", "5", "--query", "a small dog", "--queries_file",
              str(built / "queries.txt"), "--exact", "--batch_size", "2"]
    faiss_lines = search_lines(capsys, ["index", "search", str(built / "faiss"), *search])
    qdrant_lines = search_lines(capsys, ["index", "search", str(built / "qdrant"), *search])
    assert calls == [{"rerank_dim": None, "exact": True}] * 2  # no shortlist, on both backends
    for lines in (faiss_lines, qdrant_lines):
        assert [line["query"] for line in lines] == ["a small dog", *QUERIES]
        np.testing.assert_array_equal([[hit["id"] for hit in line["results"]] for line in lines], ref_ids)
        np.testing.assert_allclose([[hit["score"] for hit in line["results"]] for line in lines], ref_scores, atol=2e-6)


@pytest.mark.parametrize(("name", "content", "column"), [
    ("queries.jsonl", "\n".join(json.dumps({"id": i, "question": q}) for i, q in enumerate(QUERIES)) + "\n\n", "question"),
    ("queries.csv", "question,id\n" + "".join(f'"{q}",{i}\n' for i, q in enumerate(QUERIES)), "question"),
    ("queries.csv", "text\n" + "".join(f"{q}\n" for q in QUERIES), None),
])
def test_jsonl_and_csv_queries_files_search_as_txt(built, text_model_dir, capsys, name, content, column):  # noqa: F811
    (built / "queries.txt").write_text("\n".join(QUERIES) + "\n")
    (built / name).write_text(content)
    search = ["index", "search", str(built / "faiss"), "--model", str(text_model_dir), "-k", "3"]
    expected = search_lines(capsys, [*search, "--queries_file", str(built / "queries.txt")])
    columns = [] if column is None else ["--queries_column", column]
    assert search_lines(capsys, [*search, "--queries_file", str(built / name), *columns]) == expected
    assert [line["query"] for line in expected] == QUERIES


def test_exact_and_queries_file_errors_come_before_loading(built, text_model_dir, capsys, tmp_path,  # noqa: F811
                                                           monkeypatch):
    model = str(text_model_dir)
    assert main(["index", "build", model, str(tmp_path / "int8"), *DATA[:4], "--max_eval_samples", "20",
                 "--shortlist_dim", "8", "--storage", "int8"]) == 0
    capsys.readouterr()
    monkeypatch.setattr("hf_mrl.cli._load_model", lambda name: pytest.fail("the model was loaded"))
    files = {"q.json": '["a cat"]', "q.jsonl": '{"text": "a cat"}\n{"body": "a dog"}\n', "bad.jsonl": "{not json\n",
             "q.csv": "body\na cat\n", "blank.csv": 'text\na cat\n""\n', "empty.txt": "\n \n"}
    for name, content in files.items():
        (tmp_path / name).write_text(content)
    faiss, qdrant = str(built / "faiss"), str(built / "qdrant")
    cases = [
        ([faiss, "--query", "a cat", "--exact", "--shortlist_size", "50"],
         "--exact scores every row without a shortlist, so --shortlist_size does not apply"),
        ([qdrant, "--query", "a cat", "--exact", "--exact_shortlist"], "so --exact_shortlist does not apply"),
        ([faiss, "--query", "a cat", "--exact_shortlist"], "--exact_shortlist, --collection_name and --max_search_threads apply to Qdrant"),
        ([faiss, "--query", "a cat", "--max_search_threads", "1"], "--max_search_threads apply to Qdrant collections"),
        ([str(tmp_path / "int8"), "--query", "a cat", "--exact"],
         "--exact reads full-precision vectors, but " + str(tmp_path / "int8") + " stores int8 codes (built with "
         "--storage int8); allowed: an index built with --storage float32"),
        ([faiss, "--queries_file", str(tmp_path / "q.json")], "has suffix '.json'; allowed: .txt, .jsonl, .csv"),
        ([faiss, "--queries_file", str(tmp_path / "missing.txt")], "--queries_file not found: "),
        ([faiss, "--queries_file", str(tmp_path / "q.jsonl")],
         "line 2 has no --queries_column 'text' (it holds keys ['body']); allowed: an object with a 'text' string"),
        ([faiss, "--queries_file", str(tmp_path / "bad.jsonl")], "line 1 is not JSON"),
        ([faiss, "--queries_file", str(tmp_path / "q.csv")], "--queries_column 'text' is not a column of"),
        ([faiss, "--queries_file", str(tmp_path / "blank.csv")], "line 3: the query is '', nothing to embed"),
        ([faiss, "--queries_file", str(tmp_path / "empty.txt")], "holds no queries"),
        ([faiss, "--query", "a cat", "--queries_column", "body"], "--queries_column 'body' names a column of --queries_file"),
    ]
    for argv, message in cases:
        assert main(["index", "search", *argv, "--model", model]) == 1, argv
        error = capsys.readouterr().err
        assert message in error and len(error.splitlines()) == 1, error
