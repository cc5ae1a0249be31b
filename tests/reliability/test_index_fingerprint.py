"""The index knows which model built it: a search with another model is refused (API and CLI), an index of raw
embeddings searches as before, and an edited manifest is named, field by field, at load."""

import json
import os
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from hf_mrl.cli import main as cli_main
from hf_mrl.data import ImageCollator
from hf_mrl.hub import load_matryoshka_model
from hf_mrl.index import MatryoshkaIndex, model_fingerprint

from .files_helpers import tiny_index, tiny_model

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("kind", ["embedding", "classifier", "dual"])
def test_the_fingerprint_survives_save_and_load(tmp_path, kind):
    model = tiny_model(kind)
    model.save_pretrained(tmp_path / "model")
    assert model_fingerprint(load_matryoshka_model(tmp_path / "model")) == model_fingerprint(model)


def _nudged(model):
    with torch.no_grad():
        next(model.parameters()).view(-1)[0] += 1e-6
    return model


@pytest.mark.parametrize(
    "other",
    [
        lambda: tiny_model(seed=1),  # same architecture and width, other weights
        lambda: _nudged(tiny_model()),  # one weight moved by 1e-6
        lambda: _with_config(tiny_model(), normalize=False),  # same weights, other settings
    ],
    ids=["other-weights", "one-weight-nudged", "other-config"],
)
def test_the_fingerprint_tells_models_apart(other):
    assert model_fingerprint(other()) != model_fingerprint(tiny_model())


def _with_config(model, **changes):
    for key, value in changes.items():
        setattr(model.config, key, value)
    return model


@pytest.mark.slow
def test_the_fingerprint_is_the_same_in_another_process():
    code = ("from tests.reliability.files_helpers import tiny_model; from hf_mrl.index import model_fingerprint; "
            "print(model_fingerprint(tiny_model()))")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == model_fingerprint(tiny_model())


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    pictures = [Image.fromarray(rng.integers(0, 255, (28, 28), dtype=np.uint8)) for _ in range(24)]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")})
    return datasets.Dataset.from_dict({"image": pictures, "label": [i % 3 for i in range(24)]}, features=features)


def _built(model, images):
    collate = ImageCollator(image_size=28, num_channels=1)
    return MatryoshkaIndex.from_dataset(model, images, collate, batch_size=8, shortlist_dim=8, show_progress=False)


def test_an_index_refuses_another_model_after_save_and_load(tmp_path, images):
    model = tiny_model().eval()
    index = _built(model, images)
    assert index.model["fingerprint"] == model_fingerprint(model)
    loaded = MatryoshkaIndex.load(index.save(tmp_path / "index"))
    assert loaded.model == index.model
    loaded.check_model(model)
    model.save_pretrained(tmp_path / "model")
    loaded.check_model(load_matryoshka_model(tmp_path / "model"))  # the same model, read back
    other = tiny_model(seed=1)
    with pytest.raises(ValueError) as error:
        loaded.check_model(other, "runs/other-model")
    message = str(error.value)
    assert "runs/other-model" in message and index.model["fingerprint"][:16] in message
    assert model_fingerprint(other)[:16] in message and "rebuild the index" in message


def test_an_index_of_raw_embeddings_accepts_any_model(tmp_path):
    loaded = MatryoshkaIndex.load(tiny_index(dim=24).save(tmp_path / "index"))
    assert loaded.model is None
    loaded.check_model(tiny_model(seed=3))


def test_bad_model_records_are_refused():
    with pytest.raises(ValueError, match="`model` must be None or a dict with a 'fingerprint' string"):
        tiny_index(model={"name_or_path": "x"})


@pytest.fixture(scope="module")
def cli_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli-index")
    tiny_model(seed=0).save_pretrained(root / "model")
    tiny_model(seed=1).save_pretrained(root / "other")
    Image.fromarray(np.full((28, 28), 128, dtype=np.uint8)).save(root / "query.png")
    data = ["--dataset_name", "fashion-mnist", "--split", "test", "--max_eval_samples", "32"]
    assert cli_main(["index", "build", str(root / "model"), str(root / "index"), "--shortlist_dim", "8", *data]) == 0
    return root


def test_cli_search_with_the_building_model_works(cli_setup, capsys):
    capsys.readouterr()
    assert cli_main(["index", "search", str(cli_setup / "index"), "--model", str(cli_setup / "model"), "--query_image",
                     str(cli_setup / "query.png"), "-k", "3"]) == 0
    assert len(json.loads(capsys.readouterr().out)["results"]) == 3


def test_cli_search_with_another_model_of_the_same_width_is_refused(cli_setup, capsys):
    capsys.readouterr()
    assert cli_main(["index", "search", str(cli_setup / "index"), "--model", str(cli_setup / "other"), "--query_image",
                     str(cli_setup / "query.png")]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""  # no results at all
    assert "this index was built by" in captured.err and str(cli_setup / "model") in captured.err
    assert str(cli_setup / "other") in captured.err


# -- edited manifests -------------------------------------------------------------------------------------------

EDITS = {
    "dim": (lambda m: m.update(dim=32), "field `dim` was changed"),
    "dim below stored_dim": (lambda m: m.update(dim=8), "field `dim` is 8, smaller than `stored_dim` 16"),
    "count": (lambda m: m.update(count=30), "count=30"),
    "stored_dim": (lambda m: m.update(stored_dim=12, dim=16), "field `nesting_dims` [8, 16] must rise and end at `stored_dim` 12"),
    "storage": (lambda m: m.update(storage="float16"), "storage='float16'"),
    "storage unknown": (lambda m: m.update(storage="float8"), "field `storage` must be one of"),
    "nesting_dims": (lambda m: m.update(nesting_dims=[4, 16]), "field `nesting_dims` was changed"),
    "int8_scale": (lambda m: m.update(int8_scale="vector"), "field `int8_scale` was changed"),
    "shortlist_files": (lambda m: m.update(shortlist_files={"32": "shortlist_8.faiss"}), "field `shortlist_files` has dim '32'"),
    "shortlist dim": (lambda m: m.update(shortlist_files={"4": "shortlist_8.faiss"}), "holds 40 vectors of dim 8, but the manifest says 40 of dim 4"),
    "index_params": (lambda m: m["index_params"].update(ef_search=1), "field `index_params` was changed"),
    "model fingerprint": (lambda m: m.update(model={"fingerprint": "0" * 64, "name_or_path": "x"}), "field `model` was changed"),
    "count not a number": (lambda m: m.update(count="40"), "field `count` must be a positive integer"),
    "a field removed": (lambda m: m.pop("shortlist_index"), "lacks the keys ['shortlist_index']"),
    "a checksum removed field": (lambda m: m.pop("model"), "field `model` was removed"),
}


@pytest.mark.parametrize("edit", sorted(EDITS))
def test_an_edited_manifest_is_named_at_load(tmp_path, edit):
    folder = tiny_index().save(tmp_path / "index")
    manifest = json.loads((folder / "manifest.json").read_text())
    change, words = EDITS[edit]
    change(manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    with pytest.raises(ValueError) as error:
        MatryoshkaIndex.load(folder)
    assert str(folder / "manifest.json") in str(error.value) or "vectors.npy" in str(error.value) or "shortlist_8" in str(error.value)
    assert words in str(error.value)


def test_an_unedited_manifest_loads(tmp_path):
    folder = tiny_index().save(tmp_path / "index")
    manifest = json.loads((folder / "manifest.json").read_text())
    (folder / "manifest.json").write_text(json.dumps(manifest))  # reformatted, same values
    assert MatryoshkaIndex.load(folder).count == 40
