"""Baselines give per-dim embeddings the evaluators score exactly like Matryoshka slices."""

import numpy as np
import pytest

from hf_mrl.evaluation import baseline_embeddings, fit_baseline, retrieval_metrics


def clustered(num_rows=120, dim=16, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, size=num_rows)
    # Class signal only in the LAST features: truncation misses it, PCA finds it.
    embeddings = rng.normal(size=(num_rows, dim)) * 0.3
    embeddings[:, -4:] += 3.0 * np.eye(4)[labels]
    return embeddings.astype(np.float32), labels


def test_truncate_and_random_are_nested_column_subsets():
    embeddings, _ = clustered()
    truncated = fit_baseline("truncate", embeddings, [4, 8]).transform(embeddings)
    np.testing.assert_array_equal(truncated[4], embeddings[:, :4])
    random = fit_baseline("random", embeddings, [4, 8], seed=3).transform(embeddings)
    np.testing.assert_array_equal(random[8][:, :4], random[4])  # the first k of one permutation: nested
    again = fit_baseline("random", embeddings, [4, 8], seed=3).transform(embeddings)
    np.testing.assert_array_equal(random[8], again[8])  # seeded
    other = fit_baseline("random", embeddings, [4, 8], seed=4).transform(embeddings)
    assert not np.array_equal(random[8], other[8])
    picked = [int(np.flatnonzero((embeddings == random[8][:, [j]]).all(axis=0))[0]) for j in range(8)]
    assert len(set(picked)) == 8


def test_pca_matches_covariance_eigenvectors_and_is_fit_on_reference_only():
    embeddings, _ = clustered()
    baseline = fit_baseline("pca", embeddings, [2, 6])
    projected = baseline.transform(embeddings)
    np.testing.assert_allclose(projected[6][:, :2], projected[2], rtol=1e-6)
    variances = projected[6].var(axis=0)
    assert (np.diff(variances) <= 1e-6).all()  # components ordered by decreasing variance
    eigenvalues = np.linalg.eigvalsh(np.cov(embeddings.T.astype(np.float64), bias=True))[::-1]
    np.testing.assert_allclose(variances, eigenvalues[:6], rtol=1e-3)
    shifted = baseline.transform(embeddings + 1.0)[2]  # new data uses the reference mean, not its own
    assert not np.allclose(shifted, projected[2])


def test_baselines_scored_by_the_same_metrics():
    reference, labels = clustered(seed=1)
    queries, query_labels = clustered(seed=2)
    per_method = baseline_embeddings(reference, [4], queries=queries)
    assert set(per_method) == {"truncate", "pca", "random"}
    scores = {
        method: retrieval_metrics(
            views["queries"], views["reference"], query_labels=query_labels, corpus_labels=labels, ks=(10,)
        )["retrieval_dim4_precision@10"]
        for method, views in per_method.items()
    }
    assert scores["pca"] > 0.9 > 0.5 > scores["truncate"]  # the signal sits in the last features


def test_bad_arguments():
    embeddings, _ = clustered(num_rows=5)
    with pytest.raises(ValueError, match="`method` must be one of"):
        fit_baseline("umap", embeddings, [4])
    with pytest.raises(ValueError, match=r"`dims` must be an integer from 1 to 16.*got 17"):
        fit_baseline("truncate", embeddings, [17])
    with pytest.raises(ValueError, match="more PCA components than the 5 reference rows"):
        fit_baseline("pca", embeddings, [8])
    with pytest.raises(ValueError, match=r"shape \(n, 16\)"):
        fit_baseline("truncate", embeddings, [4]).transform(embeddings[:, :8])
    with pytest.raises(ValueError, match="`seed` must be an integer"):
        fit_baseline("random", embeddings, [4], seed=None)
    with pytest.raises(ValueError, match="`reference` is the name"):
        baseline_embeddings(embeddings, [4], reference=embeddings)


@pytest.mark.slow
def test_plain_sentence_transformer_plugs_into_the_same_evaluator(minilm_path):
    """The frozen all-MiniLM-L6-v2 through sentence-transformers scores like the same weights wrapped as a
    MatryoshkaModel and run through the evaluator (mean pooling, truncation, renormalisation)."""
    import datasets
    from sentence_transformers import SentenceTransformer
    from transformers import AutoTokenizer

    from hf_mrl import MatryoshkaModel
    from hf_mrl.evaluation import MatryoshkaRetrievalEvaluator, sentence_transformer_embeddings

    rows = []
    with open("/usr/share/wordnet/data.noun") as file:
        for line in file:
            fields, _, gloss = line.partition(" | ")
            if not line.startswith("  ") and gloss and fields.split()[1] in ("05", "13", "20"):
                rows.append({"text": gloss.split('; "')[0].strip(), "label": int(fields.split()[1])})
    data = datasets.Dataset.from_list(rows[::300][:48])
    tokenizer = AutoTokenizer.from_pretrained(minilm_path)

    def collate(examples):
        return tokenizer([example["text"] for example in examples], padding=True, return_tensors="pt")

    evaluator = MatryoshkaRetrievalEvaluator(data, collate_fn=collate, dims=[32, 384], ks=(5,), name="wn")
    wrapped = evaluator(MatryoshkaModel.from_backbone(minilm_path))
    plain = sentence_transformer_embeddings(SentenceTransformer(str(minilm_path), device="cpu"), data["text"])
    assert plain.shape == (48, 384)
    assert evaluator.compute_metrics(plain) == pytest.approx(wrapped, abs=1e-6)
    with pytest.raises(ValueError, match="list of strings"):
        sentence_transformer_embeddings(None, "one text")
