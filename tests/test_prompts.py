"""Prompts (E5-style "query: " / "passage: " prefixes): `encode(prompt=, prompt_name=)` and the config's default,
saved with the config and in the sentence-transformers layout (both ways), and the training prompts the collators
put before a column's texts."""

import json

import datasets
import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer import modules as st_modules
from transformers import AutoTokenizer

import hf_mrl
from hf_mrl import MatryoshkaConfig, MatryoshkaModel
from hf_mrl.data import ImageTextCollator, PairCollator, TextCollator
from hf_mrl.data.prompts import check_training_prompts, resolve_prompts
from hf_mrl.training import MatryoshkaTrainingArguments

from .tiny import tiny_bert_config, tiny_inputs, tiny_vit_config

TEXTS = ["a small dog", "a theory of gravity that explains orbits", "tea"]
PROMPTS = {"query": "query: ", "passage": "passage: "}


@pytest.fixture(scope="module")
def model(tiny_text_tower) -> MatryoshkaModel:
    return MatryoshkaModel.from_backbone(tiny_text_tower, matryoshka_dims=[8, 16, 32], prompts=PROMPTS)


@pytest.fixture(scope="module")
def tokenizer(tiny_text_tower):
    return AutoTokenizer.from_pretrained(tiny_text_tower)


@pytest.fixture(scope="module")
def saved(tmp_path_factory, model):
    """The model saved with `default_prompt_name="passage"`: hf_mrl's folder and the sentence-transformers layout."""
    model.config.default_prompt_name = "passage"
    folder = tmp_path_factory.mktemp("prompts") / "model"
    try:
        model.save_pretrained(folder)
    finally:
        model.config.default_prompt_name = None
    return folder


def prefixed(prompt: str) -> list[str]:
    return [prompt + text for text in TEXTS]


def test_a_prompt_is_prefixed_to_every_text_before_tokenisation(model):
    with_prompt = model.encode(TEXTS, prompt="query: ", dim=16)
    torch.testing.assert_close(with_prompt, model.encode(prefixed("query: "), dim=16), atol=0, rtol=0)
    assert not np.allclose(with_prompt, model.encode(TEXTS, dim=16), atol=1e-3)  # the prompt changes the vectors
    torch.testing.assert_close(model.encode(TEXTS[0], prompt="query: "), model.encode("query: " + TEXTS[0]), atol=0, rtol=0)


def test_prompt_name_looks_up_the_configs_prompts(model):
    for name, prompt in PROMPTS.items():
        torch.testing.assert_close(model.encode(TEXTS, prompt_name=name), model.encode(prefixed(prompt)), atol=0, rtol=0)
    with pytest.raises(ValueError, match=r"`prompt_name`='document' is not one of .*\['passage', 'query'\]"):
        model.encode(TEXTS, prompt_name="document")


def test_the_default_prompt_applies_unless_another_is_given(model):
    plain, query, passage = (model.encode(prefixed(prompt)) for prompt in ("", "query: ", "passage: "))
    model.config.default_prompt_name = "query"
    try:
        torch.testing.assert_close(model.encode(TEXTS), query, atol=0, rtol=0)
        torch.testing.assert_close(model.encode(TEXTS, prompt_name="passage"), passage, atol=0, rtol=0)
        torch.testing.assert_close(model.encode(TEXTS, prompt=""), plain, atol=0, rtol=0)  # "" overrides, as in ST
    finally:
        model.config.default_prompt_name = None


def test_prompt_wins_over_prompt_name_with_a_warning(model):
    with pytest.warns(UserWarning, match="`prompt` is used"):
        both = model.encode(TEXTS, prompt="passage: ", prompt_name="query")
    torch.testing.assert_close(both, model.encode(prefixed("passage: ")), atol=0, rtol=0)


def test_prompts_are_refused_where_there_is_no_raw_text(model):
    with pytest.raises(ValueError, match="`prompt`='query: ' prefixes raw texts; tensor inputs"):
        model.encode(prompt="query: ", **tiny_inputs("bert"))
    vision = MatryoshkaModel(MatryoshkaConfig(backbone_config=tiny_vit_config()))
    with pytest.raises(ValueError, match="`prompt_name`='query' prefixes raw texts; images"):
        vision.encode([np.zeros((28, 28), dtype=np.uint8)], prompt_name="query")
    with pytest.raises(ValueError, match="`prompt` must be a string or None, got int"):
        model.encode(TEXTS, prompt=3)


@pytest.mark.parametrize(
    ("prompts", "default", "match"),
    [
        (["query: "], None, r"`prompts` must be a dict of prompt names"),
        ({"query": 1}, None, r"`prompts\['query'\]` is a int \(1\); prompts are strings"),
        ({"": "x"}, None, r"`prompts` must be a dict of prompt names \(non-empty strings\)"),
        (PROMPTS, "document", r"`default_prompt_name`='document' is not a key of `prompts`; available: \['passage'"),
        (None, "query", r"`default_prompt_name`='query' is not a key of `prompts`; available: \[\]"),
    ],
)
def test_the_config_refuses_bad_prompts(prompts, default, match):
    with pytest.raises(ValueError, match=match):
        MatryoshkaConfig(backbone_config=tiny_bert_config(), prompts=prompts, default_prompt_name=default)
    with pytest.raises(ValueError, match=match):
        hf_mrl.MatryoshkaDualEncoderConfig(vision_config=tiny_vit_config(), text_config=tiny_bert_config(),
                                           projection_dim=16, prompts=prompts, default_prompt_name=default)


def test_prompts_round_trip_with_the_config_and_the_model(tmp_path, saved, model):
    config = MatryoshkaConfig(backbone_config=tiny_bert_config(), prompts=PROMPTS, default_prompt_name="query")
    config.save_pretrained(tmp_path)
    loaded = MatryoshkaConfig.from_pretrained(tmp_path)
    assert loaded.prompts == PROMPTS and loaded.default_prompt_name == "query"
    assert MatryoshkaConfig(backbone_config=tiny_bert_config()).prompts is None
    assert json.loads((saved / "config.json").read_text())["prompts"] == PROMPTS
    reloaded = MatryoshkaModel.from_pretrained(saved)
    assert reloaded.config.prompts == PROMPTS and reloaded.config.default_prompt_name == "passage"
    torch.testing.assert_close(reloaded.encode(TEXTS), model.encode(TEXTS, prompt_name="passage"), atol=1e-6, rtol=0)


def test_sentence_transformers_reads_the_prompts_and_encodes_alike(saved, model):
    settings = json.loads((saved / "config_sentence_transformers.json").read_text())
    assert {key: settings["prompts"][key] for key in PROMPTS} == PROMPTS
    assert settings["default_prompt_name"] == "passage"
    for dim in (8, 16):
        st = SentenceTransformer(str(saved), truncate_dim=dim, device="cpu")
        # sentence-transformers truncates after its Normalize module: normalize_embeddings renormalises, as hf_mrl does
        for name in ("query", None):  # None: the default prompt ("passage") on both sides
            expected = model.encode(TEXTS, dim=dim, prompt_name=name or "passage")
            got = st.encode(TEXTS, prompt_name=name, normalize_embeddings=True)  # numpy, as hf_mrl's
            torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_the_sentence_transformers_export_carries_the_prompts(tmp_path, model, tokenizer):
    from hf_mrl.hub import export_sentence_transformer

    folder = export_sentence_transformer(model, tmp_path / "st", tokenizer, truncate_dim=8)
    st = SentenceTransformer(str(folder), device="cpu")
    assert {key: st.prompts[key] for key in PROMPTS} == PROMPTS
    torch.testing.assert_close(st.encode(TEXTS, prompt_name="passage", normalize_embeddings=True),
                               model.encode(TEXTS, dim=8, prompt_name="passage"), atol=1e-5, rtol=0)


def test_a_sentence_transformers_folder_gives_its_prompts_back(saved, tmp_path, tiny_text_tower):
    SentenceTransformer(str(saved), device="cpu").save(str(tmp_path / "st"))
    read = MatryoshkaModel.from_pretrained(tmp_path / "st")
    assert {key: read.config.prompts[key] for key in PROMPTS} == PROMPTS and read.config.default_prompt_name == "passage"
    reference = SentenceTransformer(str(tmp_path / "st"), device="cpu")
    torch.testing.assert_close(read.encode(TEXTS, prompt_name="query"),
                               reference.encode(TEXTS, prompt_name="query"), atol=1e-5, rtol=0)
    # sentence-transformers saves empty placeholder prompts for every model: those are no prompts
    plain = SentenceTransformer(modules=[st_modules.Transformer(tiny_text_tower), st_modules.Pooling(32, "mean")],
                                device="cpu")
    plain.save(str(tmp_path / "plain"))
    assert MatryoshkaModel.from_backbone(str(tmp_path / "plain")).config.prompts is None


def test_the_dual_encoder_prompts_its_texts(tokenizer):
    config = hf_mrl.MatryoshkaDualEncoderConfig(
        vision_config=tiny_vit_config(), text_config=tiny_bert_config(vocab_size=tokenizer.vocab_size),
        projection_dim=16, prompts=PROMPTS, default_prompt_name="query",
    )
    dual = hf_mrl.MatryoshkaDualEncoderModel(config)
    dual.tokenizer = tokenizer
    for name, prompt in PROMPTS.items():  # prompt="": the texts as given, overriding the default
        torch.testing.assert_close(dual.encode_text(TEXTS, prompt_name=name),
                                   dual.encode_text(prefixed(prompt), prompt=""), atol=0, rtol=0)
    torch.testing.assert_close(dual.encode_text(TEXTS), dual.encode_text(TEXTS, prompt_name="query"), atol=0, rtol=0)
    assert not np.allclose(dual.encode_text(TEXTS), dual.encode_text(TEXTS, prompt=""), atol=1e-3)


def test_collators_tokenise_the_prefixed_texts(tokenizer):
    rows = [{"anchor": text, "positive": text[::-1], "text": text, "label": 0} for text in TEXTS]

    def ids(texts):
        return tokenizer(texts, padding=True, return_tensors="pt")["input_ids"]

    batch = PairCollator(tokenizer, max_length=32, prompts={"anchor": "query: "})(rows)
    assert torch.equal(batch["anchor"]["input_ids"], ids(prefixed("query: ")))
    assert torch.equal(batch["positive"]["input_ids"], ids([text[::-1] for text in TEXTS]))  # not named: no prompt
    assert set(batch) == {"anchor", "positive", "anchor_ids", "positive_ids"}
    both = PairCollator(tokenizer, max_length=32, prompts="p: ")(rows)
    assert torch.equal(both["positive"]["input_ids"], ids(["p: " + text[::-1] for text in TEXTS]))
    assert torch.equal(TextCollator(tokenizer, prompts="query: ")(rows)["input_ids"], ids(prefixed("query: ")))
    images = [dict(row, image=np.zeros((28, 28), dtype=np.uint8)) for row in rows]
    captions = ImageTextCollator(tokenizer, image_size=28, prompts={"text": "a photo: "})(images)
    assert torch.equal(captions["input_ids"], ids(prefixed("a photo: ")))
    with pytest.raises(ValueError, match=r"`prompts` names \['anchr'\], not text columns of this data; text columns: "
                                         r"\['anchor', 'positive'\]"):
        PairCollator(tokenizer, prompts={"anchr": "query: "})
    with pytest.raises(ValueError, match="`prompts` must be a string or a dict of text columns to prompts"):
        TextCollator(tokenizer, prompts={"text": 1})


def test_training_arguments_parse_and_check_the_prompts(tmp_path):
    def args(prompts):
        return MatryoshkaTrainingArguments(output_dir=str(tmp_path), report_to="none", prompts=prompts)

    assert args('{"anchor": "query: "}').prompts == {"anchor": "query: "}  # a JSON dict string (command line)
    assert args("query: ").prompts == "query: "
    nested = {"nli": {"anchor": "query: "}, "qa": {"positive": "passage: "}}
    assert args(json.dumps(nested)).prompts == nested
    assert args("{}").prompts is None
    for bad, match in [
        ('{"anchor": 1}', "mixes shapes or holds non-strings"),
        ('{"anchor": ', "starts with '{' but is not valid JSON"),
        ({"anchor": "q: ", "nli": {"anchor": "q: "}}, "mixes shapes"),
        (["query: "], r"is not a string, \{\"column\": \"prompt\"\}"),
    ]:
        with pytest.raises(ValueError, match=match) as error:
            args(bad)
        assert str(error.value).startswith("`prompts`=") and "\n" not in str(error.value)


def test_prompts_resolve_for_one_dataset():
    columns = ("anchor", "positive")
    assert resolve_prompts("q: ", None, columns) == {"anchor": "q: ", "positive": "q: "}
    assert resolve_prompts({"anchor": "q: "}, None, columns) == {"anchor": "q: "}
    with pytest.raises(ValueError, match="mixes shapes"):  # dataset entries are all strings or all dicts
        check_training_prompts({"nli": {"anchor": "q: "}, "qa": "p: "})
    by_dataset = {"nli": {"anchor": "q: "}, "qa": {"positive": "p: "}}
    assert resolve_prompts(by_dataset, "qa", columns) == {"positive": "p: "}
    assert resolve_prompts(by_dataset, "other", columns) == {}  # a dataset without an entry: no prompts (as ST)
    assert resolve_prompts({"anchor": "q: ", "title": "t: "}, "qa", columns) == {"anchor": "q: "}  # shared by datasets
    assert resolve_prompts({"qa": "p: "}, "qa", columns) == {"anchor": "p: ", "positive": "p: "}  # {dataset: prompt}
    with pytest.raises(ValueError, match=r"keyed by dataset names \['nli', 'qa'\], which needs a dict of training"):
        resolve_prompts(by_dataset, None, columns)
    with pytest.raises(ValueError, match="no text column"):
        resolve_prompts("q: ", None, ())


def test_the_trainer_puts_the_prompts_before_the_texts(tmp_path, tiny_text_tower, tokenizer):
    rows = datasets.Dataset.from_dict({"anchor": TEXTS, "positive": [text.upper() for text in TEXTS]})
    model = MatryoshkaModel.from_backbone(tiny_text_tower, matryoshka_dims=[8, 32])

    def trainer(prompts):
        args = MatryoshkaTrainingArguments(output_dir=str(tmp_path), report_to="none", prompts=prompts)
        return hf_mrl.MatryoshkaTrainer(model=model, args=args, train_dataset=rows)

    batch = trainer('{"anchor": "query: ", "positive": "passage: "}').data_collator(list(rows))
    for column, prompt in (("anchor", "query: "), ("positive", "passage: ")):
        expected = tokenizer([prompt + text for text in rows[column]], padding=True, return_tensors="pt")["input_ids"]
        assert torch.equal(batch[column]["input_ids"], expected)
    assert model.config.prompts is None  # training prompts are not written into the model (as sentence-transformers)
    assert trainer(None).data_collator.prompts == {}
    with pytest.raises(ValueError, match="keyed by dataset names"):
        trainer({"nli": {"anchor": "query: "}})
