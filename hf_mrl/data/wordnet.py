"""WordNet 3.0 (Debian package `wordnet-base`) as text classification data and text pairs.

Each synset line of `data.{noun,verb,adj,adv}` reads
`offset lex_filenum ss_type w_cnt word lex_id [word lex_id ...] p_cnt [pointers ...] | gloss`,
with `w_cnt` in hexadecimal and the gloss holding the definition, then optional quoted
examples. Every loader splits BY SYNSET (a seeded hash of the synset id), so no synset's
text sits in two splits.
"""

from __future__ import annotations

import functools
import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import datasets

from ._common import assign_split, check_fraction, check_limit, check_seed, check_split, missing_files_error

__all__ = [
    "WORDNET_DIR",
    "WORDNET_NOUN_CATEGORIES",
    "WORDNET_POS",
    "WordNetSynset",
    "iter_wordnet_synsets",
    "load_wordnet_nouns",
    "load_wordnet_pairs",
    "wordnet_noun_super_classes",
]

WORDNET_DIR = Path("/usr/share/wordnet")
WORDNET_POS = ("noun", "verb", "adj", "adv")
# The 26 noun lexicographer files, numbered 03 to 28 (`man 5 lexnames`).
WORDNET_NOUN_CATEGORIES = (
    "noun.Tops",
    "noun.act",
    "noun.animal",
    "noun.artifact",
    "noun.attribute",
    "noun.body",
    "noun.cognition",
    "noun.communication",
    "noun.event",
    "noun.feeling",
    "noun.food",
    "noun.group",
    "noun.location",
    "noun.motive",
    "noun.object",
    "noun.person",
    "noun.phenomenon",
    "noun.plant",
    "noun.possession",
    "noun.process",
    "noun.quantity",
    "noun.relation",
    "noun.shape",
    "noun.state",
    "noun.substance",
    "noun.time",
)
_FIRST_NOUN_LEXFILE = 3
_SPLITS = ("train", "validation", "test")
_PAIR_KINDS = ("word", "example")
# Adjective syntactic markers glued to a word: "galore(ip)", "elect(p)", "beautiful(a)".
# Pointer symbols to a more general synset: hypernym, instance hypernym.
_HYPERNYM_POINTERS = ("@", "@i")
_ADJECTIVE_MARKER = re.compile(r"\((?:a|p|ip)\)$")
_QUOTED = re.compile(r'"([^"]+)"')


@dataclass(frozen=True)
class WordNetSynset:
    """One synset line: `synset` is "offset-ss_type" (unique across parts of speech); `hypernyms` are the
    synset ids of its (instance) hypernyms, in file order."""

    synset: str
    lexfile: int
    words: tuple[str, ...]
    definition: str
    examples: tuple[str, ...]
    hypernyms: tuple[str, ...] = ()


def _parse_gloss(gloss: str) -> tuple[str, tuple[str, ...]]:
    """Splits a gloss into its definition (text before the first quote) and quoted examples."""
    quote = gloss.find('"')
    if quote < 0:
        return gloss.strip().rstrip(";").strip(), ()
    examples = tuple(example.strip() for example in _QUOTED.findall(gloss[quote:]) if example.strip())
    return gloss[:quote].strip().rstrip(";").strip(), examples


def iter_wordnet_synsets(path: Path) -> Iterator[WordNetSynset]:
    """Yields the synsets of one `data.<pos>` file in file order (words: underscores -> spaces)."""
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("  "):  # licence header
                continue
            head, _, gloss = line.partition(" | ")
            fields = head.split()
            word_count = int(fields[3], 16)
            words = []
            for raw in fields[4 : 4 + 2 * word_count : 2]:
                word = _ADJECTIVE_MARKER.sub("", raw).replace("_", " ")
                if word not in words:
                    words.append(word)
            definition, examples = _parse_gloss(gloss)
            pointer_start = 5 + 2 * word_count  # after p_cnt; each pointer: symbol, offset, pos, source/target
            pointers = fields[pointer_start : pointer_start + 4 * int(fields[pointer_start - 1])]
            hypernyms = tuple(
                f"{pointers[index + 1]}-{pointers[index + 2]}"
                for index in range(0, len(pointers), 4)
                if pointers[index] in _HYPERNYM_POINTERS
            )
            yield WordNetSynset(
                f"{fields[0]}-{fields[2]}", int(fields[1]), tuple(words), definition, examples, hypernyms
            )


@functools.lru_cache(maxsize=8)
def _cached_synsets(path: str, modified_ns: int) -> tuple[WordNetSynset, ...]:
    return tuple(iter_wordnet_synsets(Path(path)))


def _synsets(path: Path) -> tuple[WordNetSynset, ...]:
    """The parsed file, kept in memory: loaders called again (other split, seed) skip parsing."""
    return _cached_synsets(str(path), path.stat().st_mtime_ns)


def _data_files(data_dir: str | Path | None, parts_of_speech: Sequence[str]) -> list[Path]:
    data_dir = WORDNET_DIR if data_dir is None else Path(data_dir)
    files = [data_dir / f"data.{pos}" for pos in parts_of_speech]
    missing = [path for path in files if not path.is_file()]
    if missing:
        raise missing_files_error(
            "WordNet data files", missing, "wordnet-base", "pass `data_dir=` (a folder with WordNet 3.0 data.* files)"
        )
    return files


def _split_fractions(validation_fraction: float, test_fraction: float) -> dict[str, float]:
    check_fraction(validation_fraction, "validation_fraction")
    check_fraction(test_fraction, "test_fraction")
    if validation_fraction + test_fraction >= 1.0:
        raise ValueError(
            f"`validation_fraction` + `test_fraction` must be below 1, got {validation_fraction} + {test_fraction}."
        )
    return {
        "test": test_fraction,
        "validation": validation_fraction,
        "train": 1.0 - validation_fraction - test_fraction,
    }


def _build(
    rows: list[dict], features: datasets.Features, split: str | None, limit: int | None, seed: int, fractions: dict
) -> datasets.Dataset | datasets.DatasetDict:
    """Groups rows by their synset's split; with `limit`, keeps a seeded sample of each split
    (in file order), since the files are sorted by category and a plain head would hold one."""
    by_split: dict[str, list[dict]] = {name: [] for name in _SPLITS}
    for row in rows:
        by_split[assign_split(row["synset"], seed, fractions)].append(row)
    parts = {}
    for name in _SPLITS if split is None else (split,):
        chosen = by_split[name]
        if limit is not None and limit < len(chosen):
            keep = sorted(random.Random(f"{seed}-{name}").sample(range(len(chosen)), limit))
            chosen = [chosen[index] for index in keep]
        columns = {column: [row[column] for row in chosen] for column in features}
        parts[name] = datasets.Dataset.from_dict(columns, features=features, split=name)
    return parts[split] if split is not None else datasets.DatasetDict(parts)


def load_wordnet_nouns(
    split: str | None = None,
    limit: int | None = None,
    seed: int = 0,
    validation_fraction: float = 0.1,
    test_fraction: float = 0.1,
    data_dir: str | Path | None = None,
) -> datasets.Dataset | datasets.DatasetDict:
    """The 82,115 WordNet noun definitions labelled with their 26 lexicographer categories.

    Columns: `text` (the definition, without quoted examples), `label` (`ClassLabel` named
    after `WORDNET_NOUN_CATEGORIES`, e.g. "noun.animal"), `synset` (e.g. "02084071-n").

    Args:
        split: "train", "validation" or "test"; None returns a `DatasetDict` of all three.
        limit: keep a seeded sample of `limit` rows per split (for quick tests).
        seed: seeds the synset -> split assignment and the `limit` sample.
        validation_fraction, test_fraction: shares of synsets in those splits.
        data_dir: folder with `data.noun`; defaults to `WORDNET_DIR`.
    """
    check_split(split, _SPLITS)
    check_limit(limit)
    check_seed(seed)
    fractions = _split_fractions(validation_fraction, test_fraction)
    (path,) = _data_files(data_dir, ("noun",))
    rows = [
        {"text": synset.definition, "label": synset.lexfile - _FIRST_NOUN_LEXFILE, "synset": synset.synset}
        for synset in _synsets(path)
        if synset.definition
    ]
    features = datasets.Features(
        {
            "text": datasets.Value("string"),
            "label": datasets.ClassLabel(names=list(WORDNET_NOUN_CATEGORIES)),
            "synset": datasets.Value("string"),
        }
    )
    return _build(rows, features, split, limit, seed, fractions)


def load_wordnet_pairs(
    kind: str = "word",
    split: str | None = None,
    parts_of_speech: Sequence[str] = WORDNET_POS,
    limit: int | None = None,
    seed: int = 0,
    validation_fraction: float = 0.1,
    test_fraction: float = 0.1,
    data_dir: str | Path | None = None,
    hard_negatives: bool = False,
) -> datasets.Dataset | datasets.DatasetDict:
    """WordNet text pairs in sentence-transformers' (`anchor`, `positive`) layout, plus `synset`.

    - kind="word": `anchor` is a word or phrase ("hot dog"), `positive` its definition; one row
      per word of each synset (207k rows over all parts of speech, 146k for nouns). Words of
      one synset share a definition: rows with equal `synset` are positives of each other.
    - kind="example": `anchor` is an example sentence, `positive` the definition it illustrates.

    `synset` ("offset-ss_type") tells duplicates apart; sentence-transformers feeds every
    column but `label`/`score` to the loss, so drop it there (`remove_columns("synset")`).

    Args:
        kind: "word" or "example".
        split: "train", "validation" or "test"; None returns a `DatasetDict` of all three.
        parts_of_speech: any of "noun", "verb", "adj", "adv".
        limit, seed, validation_fraction, test_fraction, data_dir: as in `load_wordnet_nouns`.
        hard_negatives: kind="word" only: adds a `negative` column, a word of a sister synset (same first
            hypernym: "dachshund" for "poodle") in the same split, else of a synset of the same lexicographer file
            and split; never one of the row's own synset's words. A hard negative for the reverse dictionary
            (definition -> word): close in meaning, wrong.
    """
    if kind not in _PAIR_KINDS:
        raise ValueError(f"`kind` must be one of {list(_PAIR_KINDS)}, got {kind!r}.")
    if (
        isinstance(parts_of_speech, str)
        or not parts_of_speech
        or any(pos not in WORDNET_POS for pos in parts_of_speech)
    ):
        raise ValueError(
            f"`parts_of_speech` must be a non-empty list drawn from {list(WORDNET_POS)}, got {parts_of_speech!r}."
        )
    check_split(split, _SPLITS)
    check_limit(limit)
    check_seed(seed)
    if not isinstance(hard_negatives, bool) or (hard_negatives and kind != "word"):
        raise ValueError(f"`hard_negatives` must be True (with kind='word') or False, got {hard_negatives!r} "
                         f"with kind={kind!r}.")
    fractions = _split_fractions(validation_fraction, test_fraction)
    synsets = [synset for path in _data_files(data_dir, tuple(dict.fromkeys(parts_of_speech)))
               for synset in _synsets(path) if synset.definition]
    pick_negative = _sister_words(synsets, seed, fractions) if hard_negatives else None
    rows = []
    for synset in synsets:
        anchors = synset.words if kind == "word" else synset.examples
        for anchor in anchors:
            row = {"anchor": anchor, "positive": synset.definition, "synset": synset.synset}
            if pick_negative is not None:
                row["negative"] = pick_negative(synset, anchor)
            rows.append(row)
    columns = ("anchor", "positive", "synset") + (("negative",) if hard_negatives else ())
    features = datasets.Features({column: datasets.Value("string") for column in columns})
    return _build(rows, features, split, limit, seed, fractions)


def _sister_words(synsets: Sequence[WordNetSynset], seed: int, fractions: dict):
    """`pick(synset, anchor)`: a seeded word of a sister synset in the same split (else of the same lexicographer
    file and split), not one of `synset`'s own words."""
    split_of = {synset.synset: assign_split(synset.synset, seed, fractions) for synset in synsets}
    children: dict[str, list[WordNetSynset]] = {}
    by_file: dict[tuple[int, str], list[WordNetSynset]] = {}
    for synset in synsets:
        if synset.hypernyms:
            children.setdefault(synset.hypernyms[0], []).append(synset)
        by_file.setdefault((synset.lexfile, split_of[synset.synset]), []).append(synset)

    def pick(synset: WordNetSynset, anchor: str) -> str:
        chooser = random.Random(f"{seed}-{synset.synset}-{anchor}")
        own, split = set(synset.words), split_of[synset.synset]
        sisters = children.get(synset.hypernyms[0], []) if synset.hypernyms else []
        candidates = [word for other in sisters if other is not synset and split_of[other.synset] == split
                      for word in other.words if word not in own]
        if candidates:
            return chooser.choice(candidates)
        pool = by_file[(synset.lexfile, split)]
        for _ in range(20):  # a few draws from the file's synsets (drawing is cheaper than listing them all)
            other = chooser.choice(pool)
            words = [word for word in other.words if word not in own]
            if other is not synset and words:
                return chooser.choice(words)
        other = chooser.choice(synsets)
        return next((word for word in other.words if word not in own), other.words[0])

    return pick


def _ancestor_at_depth(synset: str, by_id: dict[str, WordNetSynset], depth: int) -> str:
    """The synset `depth` steps below the root on the first-hypernym path of `synset` (itself when shallower)."""
    path = [synset]
    while by_id[path[-1]].hypernyms and len(path) <= len(by_id):
        path.append(by_id[path[-1]].hypernyms[0])
    path.reverse()  # root first
    return path[min(depth, len(path) - 1)]


def wordnet_noun_super_classes(depth: int = 2, data_dir: str | Path | None = None) -> dict[int, str]:
    """Super-classes of the 26 noun categories from the WordNet hypernym hierarchy: {label of
    `load_wordnet_nouns`: super-class name}.

    Each noun synset's first-hypernym path is followed up to the root ("entity"); the super-class of a category
    is the ancestor `depth` steps below the root that most of its synsets share, named by its first word
    (depth 1: "physical entity" / "abstraction" / "thing"; depth 2: e.g. "object", "matter", "attribute",
    "psychological feature"). Categories whose synsets sit higher take their own ancestor at that level.
    """
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise ValueError(f"`depth` must be a positive integer (levels below the root), got {depth!r}.")
    (path,) = _data_files(data_dir, ("noun",))
    synsets = _synsets(path)
    by_id = {synset.synset: synset for synset in synsets}
    votes: dict[int, dict[str, int]] = {}
    for synset in synsets:
        ancestor = _ancestor_at_depth(synset.synset, by_id, depth)
        category = votes.setdefault(synset.lexfile - _FIRST_NOUN_LEXFILE, {})
        category[ancestor] = category.get(ancestor, 0) + 1
    return {
        label: by_id[max(sorted(counts), key=counts.get)].words[0]
        for label, counts in sorted(votes.items())
    }
