"""sentence-transformers both ways: ST models in (folders and objects, with a Dense layer), hf_mrl folders out
(loadable with hf_mrl hidden), a round trip through `SentenceTransformerTrainer`, and ST models through the
evaluators, the index and the CLI."""

import json
import subprocess
import sys

import datasets
import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer, SentenceTransformerTrainingArguments
from sentence_transformers.sentence_transformer import modules as models
from sentence_transformers.sentence_transformer.losses import MatryoshkaLoss, MultipleNegativesRankingLoss
from transformers import AutoTokenizer

import hf_mrl
from hf_mrl.cli import main as cli_main
from hf_mrl.data import TextCollator

TEXTS = ["a small dog", "a theory of gravity that explains orbits", "tea", "a red car on a wet road"]


@pytest.fixture(scope="module")
def st_dense_folder(tmp_path_factory, tiny_text_tower) -> str:
    """A tiny sentence-transformers model with a Dense layer (identity activation) and Normalize."""
    tower = tiny_text_tower
    transformer = models.Transformer(str(tower), max_seq_length=64)
    dense = models.Dense(32, 24, activation_function=torch.nn.Identity())
    model = SentenceTransformer(modules=[transformer, models.Pooling(32, "mean"), dense, models.Normalize()], device="cpu")
    folder = tmp_path_factory.mktemp("st_dense")
    model.save(str(folder))
    return str(folder)


@pytest.mark.parametrize("as_object", [False, True])
def test_sentence_transformers_model_in_keeps_pooling_dense_and_normalize(st_dense_folder, as_object):
    reference = SentenceTransformer(st_dense_folder, device="cpu")
    source = reference if as_object else st_dense_folder
    model = hf_mrl.MatryoshkaModel.from_backbone(source, matryoshka_dims=[8, 24])
    assert model.config.embedding_dim == 24 and model.config.use_projection
    expected = reference.encode(TEXTS, convert_to_tensor=True)
    torch.testing.assert_close(model.encode(TEXTS, convert_to_tensor=True), expected, atol=1e-5, rtol=0)
    truncated = torch.nn.functional.normalize(expected[:, :8], dim=-1)
    torch.testing.assert_close(model.encode(TEXTS, dim=8, convert_to_tensor=True), truncated, atol=1e-5, rtol=0)


def test_sentence_transformers_model_without_dense_needs_no_projection(st_dense_folder, tmp_path):
    dense_model = SentenceTransformer(st_dense_folder, device="cpu")
    plain = SentenceTransformer(modules=[dense_model[0], dense_model[1], models.Normalize()], device="cpu")
    plain.save(str(tmp_path / "plain"))
    model = hf_mrl.MatryoshkaModel.from_backbone(str(tmp_path / "plain"), matryoshka_dims=[8, 32])
    assert model.projection is None and model.config.embedding_dim == 32
    np.testing.assert_allclose(model.encode(TEXTS), plain.encode(TEXTS), atol=1e-5, rtol=0)  # numpy, both


def test_an_unsupported_module_is_refused(st_dense_folder, tmp_path):
    model = SentenceTransformer(st_dense_folder, device="cpu")
    tanh = SentenceTransformer(modules=[model[0], model[1], models.Dense(32, 16), models.Normalize()], device="cpu")
    tanh.save(str(tmp_path / "tanh"))
    with pytest.raises(ValueError, match="activation"):
        hf_mrl.MatryoshkaModel.from_backbone(str(tmp_path / "tanh"))


def test_encode_returns_what_sentence_transformers_encode_returns(tiny_text_tower, tmp_path):
    """`model.encode(texts, dim=k)` and `SentenceTransformer(folder, truncate_dim=k).encode(texts,
    normalize_embeddings=True)` on a saved hf_mrl folder: the same type (numpy float32, 2-D for a list, 1-D for one
    string) and the same values; with `convert_to_tensor=True`, tensors both."""
    model = hf_mrl.MatryoshkaModel.from_backbone(tiny_text_tower, matryoshka_dims=[8, 16, 32])
    model.save_pretrained(tmp_path / "mrl")
    for dim in (8, 16, 32):
        st_model = SentenceTransformer(str(tmp_path / "mrl"), device="cpu", truncate_dim=dim)
        ours, theirs = model.encode(TEXTS, dim=dim), st_model.encode(TEXTS, normalize_embeddings=True)
        assert type(ours) is type(theirs) is np.ndarray
        assert ours.dtype == theirs.dtype == np.float32 and ours.shape == theirs.shape == (len(TEXTS), dim)
        np.testing.assert_allclose(ours, theirs, atol=1e-5, rtol=0)
        one, st_one = model.encode(TEXTS[0], dim=dim), st_model.encode(TEXTS[0], normalize_embeddings=True)
        assert type(one) is type(st_one) is np.ndarray and one.shape == st_one.shape == (dim,)
        np.testing.assert_allclose(one, st_one, atol=1e-5, rtol=0)
        as_tensors = (model.encode(TEXTS, dim=dim, convert_to_tensor=True),
                      st_model.encode(TEXTS, normalize_embeddings=True, convert_to_tensor=True))
        assert all(isinstance(tensor, torch.Tensor) for tensor in as_tensors)
        torch.testing.assert_close(*as_tensors, atol=1e-5, rtol=0)

@pytest.mark.slow
def test_hf_mrl_folder_loads_in_sentence_transformers_without_hf_mrl(st_dense_folder, tmp_path):
    model = hf_mrl.MatryoshkaModel.from_backbone(st_dense_folder, matryoshka_dims=[8, 16, 24])
    model.save_pretrained(tmp_path / "mrl")
    code = (
        "import sys, json; sys.modules['hf_mrl'] = None\n"
        "from sentence_transformers import SentenceTransformer\n"
        f"texts = {TEXTS!r}\n"
        "out = {}\n"
        "for k in (8, 16, 24):\n"
        f"    st = SentenceTransformer({str(tmp_path / 'mrl')!r}, truncate_dim=k, device='cpu')\n"
        "    out[k] = st.encode(texts, normalize_embeddings=True).tolist()\n"
        "print(json.dumps(out))\n"
    )
    finished = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr[-2000:]
    loaded = json.loads(finished.stdout.strip().splitlines()[-1])
    for dim in (8, 16, 24):
        np.testing.assert_allclose(loaded[str(dim)], model.encode(TEXTS, dim=dim), atol=1e-5)


def test_round_trip_through_sentence_transformers_trainer_with_our_evaluator(st_dense_folder, tmp_path):
    model = hf_mrl.MatryoshkaModel.from_backbone(st_dense_folder, matryoshka_dims=[8, 16, 24])
    model.save_pretrained(tmp_path / "mrl")
    st_model = SentenceTransformer(str(tmp_path / "mrl"), device="cpu")
    pairs = datasets.Dataset.from_dict({"anchor": ["a cat", "a dog", "a car", "a tree"] * 4,
                                        "positive": ["feline", "canine", "vehicle", "plant"] * 4})
    labelled = datasets.Dataset.from_dict({"text": TEXTS * 3, "label": [0, 1, 0, 1] * 3})
    evaluator = hf_mrl.MatryoshkaClassificationEvaluator(
        labelled, collate_fn=TextCollator(AutoTokenizer.from_pretrained(tmp_path / "mrl")), dims=[8, 24], name="toy", knn_k=(1,),
        use_heads=False,
    )
    loss = MatryoshkaLoss(st_model, MultipleNegativesRankingLoss(st_model), [8, 16, 24])
    args = SentenceTransformerTrainingArguments(output_dir=str(tmp_path / "st_out"), max_steps=2, per_device_train_batch_size=8,
                                                report_to="none", use_cpu=True, save_strategy="no", eval_strategy="steps",
                                                eval_steps=1)
    trainer = SentenceTransformerTrainer(model=st_model, args=args, train_dataset=pairs, eval_dataset=pairs, loss=loss,
                                         evaluator=evaluator)
    trainer.train()
    metrics = trainer.evaluate()
    assert any(key.endswith("toy_dim24_1nn") for key in metrics)
    st_model.save(str(tmp_path / "after"))
    back = hf_mrl.MatryoshkaModel.from_pretrained(tmp_path / "after")
    assert back.config.matryoshka_dims == [8, 16, 24]
    torch.testing.assert_close(back.encode(TEXTS, convert_to_tensor=True), st_model.encode(TEXTS, convert_to_tensor=True),
                               atol=1e-5, rtol=0)


def test_sentence_transformers_model_through_the_index_and_the_cli(st_dense_folder, tmp_path, capsys):
    rows = datasets.Dataset.from_dict({"text": TEXTS * 2, "label": [0, 1, 0, 1] * 2})
    st_model = SentenceTransformer(st_dense_folder, device="cpu")
    collator = TextCollator(st_model.tokenizer)
    index = hf_mrl.MatryoshkaIndex.from_dataset(st_model, rows, collator, 4, show_progress=False)
    expected = st_model.encode(TEXTS * 2, convert_to_numpy=True)
    scores, ids = index.search(expected[:1], 1)
    assert ids[0, 0] in (0, 4)
    csv = tmp_path / "rows.csv"
    datasets.Dataset.from_dict({"text": [f"{text} {i}" for i in range(8) for text in TEXTS], "label": [0, 1, 0, 1] * 8}).to_csv(csv)
    assert cli_main(["eval", st_dense_folder, "--train_file", str(csv), "--split", "train", "--reference_split", "train",
                     "--dims", "8,24", "--output_dir", str(tmp_path / "eval")]) == 0
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert {key.split("_dim")[1].split("_")[0] for key in results} == {"8", "24"}


def test_cli_eval_collator_cuts_texts_at_the_sentence_transformers_max_seq_length(tiny_text_tower, tmp_path):
    """`hf-mrl eval` reads a sentence-transformers folder with the model's own max length (6 here, its tokenizer says
    512): its embeddings equal `SentenceTransformer.encode` at every truncation."""
    from hf_mrl.data.collators import collator_for_model

    transformer = models.Transformer(str(tiny_text_tower), max_seq_length=6)
    st_model = SentenceTransformer(modules=[transformer, models.Pooling(32, "mean"), models.Normalize()], device="cpu")
    st_model.save(str(tmp_path / "st"))
    # As all-MiniLM-L6-v2's folder: the tokenizer says 512, sentence_bert_config.json 256 (here 6).
    settings = tmp_path / "st" / "tokenizer_config.json"
    settings.write_text(json.dumps({**json.loads(settings.read_text()), "model_max_length": 512}))
    (tmp_path / "st" / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 6}))
    assert SentenceTransformer(str(tmp_path / "st"), device="cpu").max_seq_length == 6
    model = hf_mrl.MatryoshkaModel.from_pretrained(str(tmp_path / "st")).eval()
    collator = collator_for_model(model, str(tmp_path / "st"), label_column=None)
    assert collator.max_length == 6
    with torch.no_grad():
        ours = model(**collator([{"text": text} for text in TEXTS])).embeddings
    for dim in (8, 16, 32):
        expected = SentenceTransformer(str(tmp_path / "st"), device="cpu", truncate_dim=dim).encode(
            TEXTS, convert_to_tensor=True, normalize_embeddings=True)
        torch.testing.assert_close(torch.nn.functional.normalize(ours[:, :dim], dim=-1), expected, atol=1e-5, rtol=0)
