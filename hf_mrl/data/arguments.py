"""`DataArguments`: which data to load and how to split it, one field per command-line flag.

Light on purpose (no `datasets`, no torch): `hf-mrl --help` builds its data flags from these fields, and
`HfArgumentParser` reads them for the training scripts. `hf_mrl.data.resolve` loads what they name.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["BUILTIN_DATASETS", "DEFAULT_VALIDATION_PERCENTAGE", "DataArguments"]

BUILTIN_DATASETS: dict[str, str] = {
    "fashion-mnist": "classification",
    "wordnet-nouns": "classification",
    "wordnet-pairs": "pairs",
    "wordnet-triplets": "pairs",  # wordnet-pairs + a `negative` column: a word of a sister synset
    "emoji": "image-text",
    "fashion-mnist-captions": "image-text",
}
DEFAULT_VALIDATION_PERCENTAGE = 10
_SPEC_EXAMPLES = "'train', 'train[:90%]', 'train[100:200]' or 'test[-10%:]'"


@dataclass
class DataArguments:
    """Which data to load and how to split it (every field is a command-line flag of the scripts)."""

    dataset_name: str | None = field(
        default=None,
        metadata={
            "help": f"A built-in dataset ({', '.join(BUILTIN_DATASETS)}), a Hub dataset id, a local folder "
            "(save_to_disk output or imagefolder) or one data file (used as the train file)."
        },
    )
    dataset_config_name: str | None = field(default=None, metadata={"help": "The Hub dataset's configuration name."})
    # One path, or a list of several (the scripts' parser reads `nargs`; the CLI's data flags take one file).
    train_file: str | None = field(
        default=None,
        metadata={
            "help": "Training data: .csv, .tsv, .json, .jsonl or .parquet (an image column may hold file paths). "
            "The training scripts take several (--train_file a.jsonl b.jsonl): one training dataset per file, named by "
            "the file's name without extension, each batch from one of them (see --multi_dataset_batch_sampler).",
            "nargs": "+",
        },
    )
    validation_file: str | None = field(default=None, metadata={"help": "Validation data, as `train_file`."})
    test_file: str | None = field(default=None, metadata={"help": "Test data, as `train_file`."})
    # argparse formats help strings with %: the examples' "%" is written "%%".
    train_split: str = field(
        default="train",
        metadata={"help": "Training split, slicing allowed: " + _SPEC_EXAMPLES.replace("%", "%%") + "."},
    )
    eval_split: str | None = field(
        default=None,
        metadata={
            "help": "Evaluation split (default: 'validation' if the data has one, else 'test'; with only a train "
            "split, `validation_split_percentage` percent of it is held out)."
        },
    )
    test_split: str | None = field(
        default=None,
        metadata={"help": "Final test split (default: 'test' when the eval split is a validation split)."},
    )
    validation_split_percentage: int | None = field(
        default=None,
        metadata={
            "help": "Hold this percentage of the train split out as the eval split when the data has no validation split "
            f"(default when the data has only a train split: {DEFAULT_VALIDATION_PERCENTAGE})."
        },
    )
    text_column: str | None = field(
        default=None, metadata={"help": "Text column of a Hub / local dataset (renamed to `text`)."}
    )
    image_column: str | None = field(
        default=None, metadata={"help": "Image column of a Hub / local dataset (renamed to `image`)."}
    )
    label_column: str | None = field(
        default=None, metadata={"help": "Label column of a Hub / local dataset (default: label)."}
    )
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Keep the first N rows of the train split (quick runs)."}
    )
    max_eval_samples: int | None = field(
        default=None, metadata={"help": "Keep the first N rows of the eval split (and of the test split, by default)."}
    )
    max_test_samples: int | None = field(
        default=None, metadata={"help": "Keep the first N rows of the test split (default: max_eval_samples)."}
    )
    streaming: bool = field(default=False, metadata={"help": "Return the train split as an IterableDataset."})

    def __post_init__(self):
        """One file given as a list (`--train_file a.csv`) is that file; several stay a list."""
        if isinstance(self.train_file, (list, tuple)):
            self.train_file = self.train_file[0] if len(self.train_file) == 1 else list(self.train_file)
