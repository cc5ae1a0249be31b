"""Emoji image <-> text pairs: Noto Color Emoji pictures (Debian `fonts-noto-color-emoji`) with
their CLDR English names and keywords (Debian `unicode-cldr-core`), ~3,600 real pairs.

Rendering takes a few seconds, so the full rendered dataset is cached on disk (see
`default_cache_dir`) and later calls only read it.
"""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from collections.abc import Iterator
from pathlib import Path

import datasets
import numpy as np
from PIL import Image, ImageDraw, ImageFont
from tqdm.auto import tqdm

from ..modeling.progress import should_show_progress
from ._common import (
    assign_split,
    check_fraction,
    check_limit,
    check_seed,
    check_split,
    default_cache_dir,
    fingerprint,
    first_rows,
    is_saved_dataset,
    missing_files_error,
    save_atomically,
)

__all__ = [
    "EMOJI_FONT_PATH",
    "CLDR_ANNOTATION_DIR",
    "emoji_base",
    "read_cldr_annotations",
    "render_emoji",
    "load_emoji_pairs",
]

EMOJI_FONT_PATH = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
CLDR_ANNOTATION_DIR = Path("/usr/share/unicode/cldr/common")
_ANNOTATION_FILES = ("annotations/en.xml", "annotationsDerived/en.xml")
_FONT_SIZE = 109  # the bitmap font's only strike
_CANVAS = (136, 128)
_UNASSIGNED = "\U0010fffd"  # a private-use code point no font draws: gives the missing-glyph picture
_SPLITS = ("train", "test")
_CACHE_VERSION = 1  # bump when the rendering changes

_ZWJ = "\u200d"
_VARIATION_SELECTOR_16 = "\ufe0f"
_SKIN_TONES = "".join(chr(code) for code in range(0x1F3FB, 0x1F400))
# Gendered people and their neutral forms, so "man cook", "woman cook" and "cook" share a group.
_NEUTRAL_PERSON = str.maketrans(
    {
        "\U0001f468": "\U0001f9d1",  # man -> person
        "\U0001f469": "\U0001f9d1",  # woman -> person
        "\U0001f466": "\U0001f9d2",  # boy -> child
        "\U0001f467": "\U0001f9d2",  # girl -> child
        "\U0001f474": "\U0001f9d3",  # old man -> older person
        "\U0001f475": "\U0001f9d3",  # old woman -> older person
        "\U0001f934": "\U0001fac5",  # prince -> person with crown
        "\U0001f478": "\U0001fac5",  # princess -> person with crown
    }
)


def emoji_base(emoji: str) -> str:
    """The group key of an emoji: without skin tones, U+FE0F, ZWJ + female/male sign, and with
    gendered people made neutral. Variants of one emoji share it, so they share a split."""
    base = emoji.replace(_VARIATION_SELECTOR_16, "")
    base = base.replace(_ZWJ + "\u2640", "").replace(_ZWJ + "\u2642", "")
    base = "".join(char for char in base if char not in _SKIN_TONES).translate(_NEUTRAL_PERSON)
    return base or emoji  # a lone skin-tone swatch is its own group


def read_cldr_annotations(cldr_dir: Path = CLDR_ANNOTATION_DIR) -> dict[str, tuple[str, list[str]]]:
    """Maps each annotated code point sequence to (short name, keywords), in file order:
    `annotations/en.xml` first, then `annotationsDerived/en.xml` (skin tones, sequences)."""
    names: dict[str, str] = {}
    keywords: dict[str, list[str]] = {}
    for relative in _ANNOTATION_FILES:
        for node in ElementTree.parse(cldr_dir / relative).getroot().iter("annotation"):
            text = (node.text or "").strip()
            if node.get("type") == "tts":
                names.setdefault(node.get("cp"), text)
            elif node.get("type") is None:
                keywords.setdefault(node.get("cp"), [word.strip() for word in text.split("|") if word.strip()])
    return {emoji: (name, keywords.get(emoji, [])) for emoji, name in names.items()}


def render_emoji(font: ImageFont.FreeTypeFont, emoji: str) -> Image.Image:
    """Draws `emoji` on a transparent 136x128 RGBA canvas, the font's native size."""
    canvas = Image.new("RGBA", _CANVAS, (0, 0, 0, 0))
    ImageDraw.Draw(canvas).text((0, 0), emoji, font=font, embedded_color=True)
    return canvas


def _to_square_rgb(canvas: Image.Image, image_size: int) -> Image.Image:
    """Composites on white, pads to a square (no distortion) and resizes to `image_size`."""
    white = Image.new("RGBA", canvas.size, (255, 255, 255, 255))
    flat = Image.alpha_composite(white, canvas).convert("RGB")
    side = max(flat.size)
    square = Image.new("RGB", (side, side), (255, 255, 255))
    square.paste(flat, ((side - flat.width) // 2, (side - flat.height) // 2))
    return square.resize((image_size, image_size), Image.Resampling.LANCZOS, reducing_gap=3.0)


def _drawable(font: ImageFont.FreeTypeFont, missing: Image.Image, glyph_width: float):
    """Returns a check that an emoji draws as exactly one real glyph: not blank, not the
    missing-glyph picture, and not several side-by-side glyphs (a sequence the font lacks)."""
    missing_pixels = np.asarray(missing) if missing.getbbox() is not None else None

    def check(emoji: str, canvas: Image.Image) -> bool:
        if canvas.getbbox() is None:  # nothing drawn (alpha 0 everywhere)
            return False
        if missing_pixels is not None and np.array_equal(np.asarray(canvas), missing_pixels):
            return False
        return font.getlength(emoji) <= 1.5 * glyph_width

    return check


def _iter_rendered(font_path: Path, cldr_dir: Path, image_size: int, progress: bool) -> Iterator[dict]:
    """Yields a row per annotated emoji that draws, in CLDR order."""
    font = ImageFont.truetype(str(font_path), _FONT_SIZE)
    annotations = read_cldr_annotations(cldr_dir)
    check = _drawable(font, render_emoji(font, _UNASSIGNED), font.getlength("\U0001f600"))
    for emoji, (name, keywords) in tqdm(annotations.items(), desc="rendering emoji", disable=not progress):
        canvas = render_emoji(font, emoji)
        if check(emoji, canvas):
            image = _to_square_rgb(canvas, image_size)
            yield {"image": image, "text": name, "keywords": keywords, "emoji": emoji, "base": emoji_base(emoji)}


def _features() -> datasets.Features:
    return datasets.Features(
        {
            "image": datasets.Image(),
            "text": datasets.Value("string"),
            "keywords": datasets.List(datasets.Value("string")),
            "emoji": datasets.Value("string"),
            "base": datasets.Value("string"),
        }
    )


def _from_rows(rows: list[dict]) -> datasets.Dataset:
    return datasets.Dataset.from_dict(
        {column: [row[column] for row in rows] for column in _features()}, features=_features()
    )


def load_emoji_pairs(
    split: str | None = None,
    image_size: int = 32,
    limit: int | None = None,
    seed: int = 0,
    test_fraction: float = 0.2,
    cache_dir: str | Path | None = None,
    font_path: str | Path = EMOJI_FONT_PATH,
    cldr_dir: str | Path = CLDR_ANNOTATION_DIR,
) -> datasets.Dataset | datasets.DatasetDict:
    """Emoji pictures and their names: 3,635 of the 4,022 CLDR-annotated emoji draw with Noto
    Color Emoji (the others are punctuation and symbols the font lacks).

    Columns: `image` (`datasets.Image`, RGB `image_size` square on white), `text` (CLDR short
    name, e.g. "grinning face"), `keywords` (list of CLDR keywords: extra captions), `emoji`
    (the code point sequence: an image id) and `base` (group key of `emoji_base`). Rows with
    the same `base` (skin-tone and gender variants) always share a split.

    Args:
        split: "train" or "test"; None returns a `DatasetDict` with both.
        image_size: side of the square output images, in pixels.
        limit: keep the first `limit` rows of each split (CLDR order); without a cache only
            those are rendered.
        seed: seeds the base -> split assignment.
        test_fraction: share of base groups in the test split.
        cache_dir: where the full rendering is cached; defaults to `$HF_MRL_CACHE` or
            `~/.cache/hf_mrl` (folder `emoji_<image_size>_<fingerprint>`).
        font_path: the Noto Color Emoji font file.
        cldr_dir: the CLDR `common` folder holding `annotations/en.xml`.
    """
    check_split(split, _SPLITS)
    check_limit(limit)
    check_seed(seed)
    check_fraction(test_fraction, "test_fraction")
    if not isinstance(image_size, int) or isinstance(image_size, bool) or image_size <= 0:
        raise ValueError(f"`image_size` must be a positive integer, got {image_size!r}.")
    font_path, cldr_dir = Path(font_path), Path(cldr_dir)
    if not font_path.is_file():
        raise missing_files_error("The emoji font", [font_path], "fonts-noto-color-emoji", "pass `font_path=`")
    missing = [cldr_dir / relative for relative in _ANNOTATION_FILES if not (cldr_dir / relative).is_file()]
    if missing:
        raise missing_files_error(
            "CLDR annotations", missing, "unicode-cldr-core", "pass `cldr_dir=` (CLDR's common folder)"
        )

    fractions = {"test": test_fraction, "train": 1.0 - test_fraction}
    wanted = _SPLITS if split is None else (split,)
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    cache = (
        cache
        / f"emoji_{image_size}_{fingerprint(font_path, cldr_dir / _ANNOTATION_FILES[0], cldr_dir / _ANNOTATION_FILES[1], _CACHE_VERSION)}"
    )

    if is_saved_dataset(cache):
        rendered = datasets.load_from_disk(str(cache))
        assigned = [assign_split(base, seed, fractions) for base in rendered["base"][:]]
        parts = {
            name: first_rows(rendered.select([index for index, part in enumerate(assigned) if part == name]), limit)
            for name in wanted
        }
    elif limit is not None:
        # Render only until every wanted split has `limit` rows; nothing is cached.
        rows: dict[str, list[dict]] = {name: [] for name in _SPLITS}
        for row in _iter_rendered(font_path, cldr_dir, image_size, progress=False):
            rows[assign_split(row["base"], seed, fractions)].append(row)
            if all(len(rows[name]) >= limit for name in wanted):
                break
        parts = {name: _from_rows(rows[name][:limit]) for name in wanted}
    else:
        save_atomically(_from_rows(list(_iter_rendered(font_path, cldr_dir, image_size, progress=should_show_progress()))), cache)
        return load_emoji_pairs(split, image_size, None, seed, test_fraction, cache.parent, font_path, cldr_dir)
    return parts[split] if split is not None else datasets.DatasetDict(parts)
