"""`hf-mrl index build --backend qdrant` and `hf-mrl index search` on its folder, beside the faiss index."""

import json

from hf_mrl.cli import main
from hf_mrl.index import QdrantMatryoshkaIndex

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
        (["index", "build", model, "--backend", "qdrant", "--path", "a", "--storage", "int8"],
         "--storage do not apply to --backend qdrant"),
        (["index", "build", model], "--backend faiss writes an index folder: give OUTPUT"),
    ]
    for argv, message in cases:
        assert main(argv) == 1
        assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()

    build = ["index", "build", model, "--backend", "qdrant", "--path", str(tmp_path / "qdrant"), *DATA[:4],
             "--max_eval_samples", "10", "--collection_name", "nouns"]
    assert main(build) == 0
    search = ["index", "search", str(tmp_path / "qdrant"), "--model", model, "--query", "a cat"]
    assert main(search) == 1  # the default collection name is not there
    assert "`collection_name` 'hf_mrl' is not a collection" in capsys.readouterr().err
    (line,) = search_lines(capsys, [*search, "--collection_name", "nouns", "-k", "2"])
    assert len(line["results"]) == 2
