"""Datasets and collators.

Loaders return `datasets.Dataset` (one split) or `DatasetDict` with standard column names
(`image`, `text`, `label`; `anchor` / `positive` for text pairs). `load_splits` / `load_split`
(with `DataArguments`) pick the right loader for a built-in name, a Hub id, a folder or data files,
and are what the scripts and the CLI call. Each loader has an offline default
read from a Debian package and also takes Hub ids or local folders. Collators turn lists of
rows into the tensors the models take.
"""

from ..modeling.lazy_exports import lazy_exports

# Loaded on first use: `datasets` is imported only by what needs it (`hf-mrl --help` reads `DataArguments` alone).
_EXPORTS = {
    "arguments": ["BUILTIN_DATASETS", "DataArguments"],
    "collators": ["ImageCollator", "ImageTextCollator", "PairCollator", "TextCollator", "ids_by_value"],
    "corruptions": ["CORRUPTION_SEVERITIES", "CORRUPTIONS", "corrupt_dataset", "corrupt_image", "corrupted_datasets"],
    "emoji": ["emoji_base", "load_emoji_pairs"],
    "fashion_mnist": [
        "FASHION_MNIST_CAPTION_TEMPLATES",
        "FASHION_MNIST_CLASS_NAMES",
        "fashion_mnist_class_prompts",
        "load_fashion_mnist",
        "load_fashion_mnist_captions",
    ],
    "generic": [
        "load_classification_dataset",
        "load_image_text_dataset",
        "standardize_classification_columns",
        "standardize_image_text_columns",
    ],
    "resolve": [
        "DatasetSplits", "check_splits", "load_split", "load_splits", "slice_split", "split_names",
        "validate_data_arguments",
    ],
    "subsets": ["long_tailed_counts", "long_tailed_subset", "split_classes"],
    "wordnet": ["WORDNET_NOUN_CATEGORIES", "load_wordnet_nouns", "load_wordnet_pairs", "wordnet_noun_super_classes"],
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())

__all__ = [
    "BUILTIN_DATASETS",
    "CORRUPTIONS",
    "CORRUPTION_SEVERITIES",
    "DataArguments",
    "DatasetSplits",
    "FASHION_MNIST_CAPTION_TEMPLATES",
    "FASHION_MNIST_CLASS_NAMES",
    "WORDNET_NOUN_CATEGORIES",
    "ImageCollator",
    "ImageTextCollator",
    "PairCollator",
    "TextCollator",
    "check_splits",
    "corrupt_dataset",
    "corrupt_image",
    "corrupted_datasets",
    "emoji_base",
    "fashion_mnist_class_prompts",
    "ids_by_value",
    "load_classification_dataset",
    "load_emoji_pairs",
    "load_fashion_mnist",
    "load_fashion_mnist_captions",
    "load_image_text_dataset",
    "load_wordnet_nouns",
    "load_split",
    "load_splits",
    "load_wordnet_pairs",
    "long_tailed_counts",
    "long_tailed_subset",
    "slice_split",
    "split_classes",
    "split_names",
    "standardize_classification_columns",
    "standardize_image_text_columns",
    "validate_data_arguments",
    "wordnet_noun_super_classes",
]
