"""`hf-mrl`: the command line of hf_mrl.

    hf-mrl demo ...                         the demo (its options: hf-mrl demo --help)
    hf-mrl eval MODEL --dataset_name X      per-dim results table, JSON and plot
    hf-mrl index build MODEL OUT ...        encode a dataset into a MatryoshkaIndex folder
    hf-mrl index build MODEL --backend qdrant --path DIR (or --url URL)   ... into a Qdrant collection
    hf-mrl index search INDEX --model ...   adaptive search (shortlist at few dims, re-rank at many; --exact:
                                            every row at full dim); INDEX: an index folder or a Qdrant folder
                                            (or --url URL); queries: --query, --queries_file or --query_image
    hf-mrl export-st MODEL OUT              plain sentence-transformers folder
    hf-mrl card RESULTS.json --model MODEL  README.md model card from evaluation results

Each handler parses, checks and calls library functions (data through `hf_mrl.data.load_split`);
library `ValueError`s and `OSError`s are printed as one line `hf-mrl: error: ...` with exit status 1
(argparse's own errors exit with 2). Options are spelled with underscores, like the training scripts'
(`--output_dir`); the dashed spelling (`--output-dir`) works too.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import sys
import typing
from pathlib import Path

from .index.choices import SHORTLIST_INDEXES, STORAGES

__all__ = ["main", "build_parser"]

def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _dims(text: str) -> list[int]:
    try:
        dims = [int(part) for part in text.split(",") if part.strip()]
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"must be comma-separated integers such as 8,16,32, got {text!r}") from error
    if not dims or min(dims) <= 0:
        raise argparse.ArgumentTypeError(f"must be comma-separated positive integers such as 8,16,32, got {text!r}")
    return dims


def _epilog(*lines: str) -> str:
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)


def _option(group, name: str, *aliases: str, **kwargs) -> argparse.Action:
    """Adds `--name_with_underscores` (and `aliases`), plus its dashed spelling `--name-with-dashes` as a hidden
    alias with the same dest, so commands written either way work."""
    action = group.add_argument(name, *aliases, **kwargs)
    dashed = name.replace("_", "-")
    if dashed != name:
        same = {key: value for key, value in kwargs.items() if key in ("type", "action", "choices", "nargs")}
        group.add_argument(dashed, dest=action.dest, help=argparse.SUPPRESS, default=argparse.SUPPRESS, **same)
    return action


# The data flags every data-reading command takes: `DataArguments` fields (the one source of their type, default and
# help), each with its aliases. `--split` is the CLI's own (one split per command).
DATA_FLAGS: dict[str, tuple[str, ...]] = {
    "dataset_name": ("--dataset",),
    "dataset_config_name": (),
    "train_file": (),
    "validation_file": (),
    "test_file": (),
    "max_eval_samples": ("--limit",),
    "text_column": (),
    "image_column": (),
    "label_column": (),
}


def _add_dataclass_flags(group, dataclass_type, flags: dict[str, tuple[str, ...]], extra_help: dict[str, str]) -> None:
    """`--<field>` (and its aliases) for each field of `dataclass_type` named in `flags`, as `HfArgumentParser`
    builds them: the type from the annotation (`X | None` reads X; an `int` is a count, so a positive integer), the
    field's default, and the help of its metadata (plus `extra_help[name]`)."""
    hints = typing.get_type_hints(dataclass_type)
    for spec in dataclasses.fields(dataclass_type):
        if spec.name not in flags:
            continue
        kind = next((arg for arg in typing.get_args(hints[spec.name]) if arg is not type(None)), hints[spec.name])
        help_text = spec.metadata.get("help", "") + extra_help.get(spec.name, "")
        kwargs = {"action": "store_true"} if kind is bool else {"type": _positive_int if kind is int else kind}
        _option(group, f"--{spec.name}", *flags[spec.name], default=spec.default, help=help_text, **kwargs)


def _add_data_arguments(parser: argparse.ArgumentParser, split: str | None, dataset_default: bool = True) -> None:
    from .data.arguments import DataArguments

    group = parser.add_argument_group("data")
    extra = {"dataset_name": " (default: wordnet-nouns when no data file is given)"} if dataset_default else {}
    _add_dataclass_flags(group, DataArguments, DATA_FLAGS, extra)
    split_help = f"split to use, slicing allowed: train[:90%%], test[100:200] (default: {split})" if split else (
        "split to evaluate, slicing allowed: train[:90%%], test[100:200], or 'heldout' (the part of the train split "
        "the training scripts hold out: same share and seed) (default: test; a dataset with neither test nor "
        "validation split: heldout; data files without --test_file: validation, else train)"
    )
    _option(group, "--split", default=split, help=split_help)


def _add_model_arguments(parser: argparse.ArgumentParser, batch_size: bool = True) -> None:
    _option(parser, "--processor", help="tokenizer / image processor folder or Hub id (default: the model's)")
    if batch_size:
        _option(parser, "--batch_size", type=_positive_int, default=64, help="encoding batch size (default: 64)")


def _add_qdrant_arguments(group, path: bool = True) -> None:
    if path:
        _option(group, "--path", type=Path, help="folder of the embedded Qdrant engine (Qdrant Edge)")
    _option(group, "--url", help="a Qdrant server or cluster, e.g. http://localhost:6333")
    _option(group, "--api_key", help="API key of --url (default: $QDRANT_API_KEY)")
    _option(group, "--collection_name", default="hf_mrl", help="the collection (default: hf_mrl)")
    _option(group, "--max_search_threads", type=int,
            help="search threads of the embedded engine, kept with the collection (default: Qdrant's, one per CPU)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hf-mrl",
        description="Matryoshka Representation Learning for Hugging Face models: evaluate every embedding size, "
        "build adaptive indexes, export and document models.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_epilog(
            "hf-mrl eval my-model --dataset_name wordnet-nouns --task retrieval --max_eval_samples 2000",
            "hf-mrl <command> --help",
        ),
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="command")
    formatter = argparse.RawDescriptionHelpFormatter

    demo = commands.add_parser("demo", help="run the demo (options: hf-mrl demo --help)", add_help=False)
    demo.set_defaults(handler=_run_demo)

    evaluate = commands.add_parser(
        "eval",
        help="per-dim results of a model on a dataset",
        description="Encodes the data once and scores every nesting dim: a markdown table on stdout, and "
        "results.json, eval_info.json (split, reference, dataset, classes), results.md and a metric-vs-dim PNG "
        "in --output_dir. k-NN / retrieval search the --reference_split; when it is the evaluated split itself "
        "(or 'none', or there is no train data), each row is left out of its own search (leave-one-out).",
        formatter_class=formatter,
        epilog=_epilog(
            "hf-mrl eval runs/wordnet-mrl --dataset_name wordnet-nouns --task classification --max_eval_samples 1000 "
            "--output_dir eval/",
            "hf-mrl eval runs/fmnist-vit --dataset_name fashion-mnist --dims 8,16,32,64 --output_dir eval/",
            "hf-mrl eval runs/reviews --train_file train.csv --test_file test.csv --text_column review "
            "--label_column stars",
        ),
    )
    evaluate.add_argument("model", help="hf_mrl model folder or Hub id")
    _option(evaluate, "--task", choices=("classification", "retrieval"), default="classification",
            help="classification: nested-head top-k and k-NN accuracy; retrieval: same-label retrieval "
            "(mAP, recall, nDCG, MRR) (default: classification)")
    _option(evaluate, "--reference_split",
            help="k-NN database / retrieval corpus split; 'none' searches the evaluated split itself, leave-one-out "
            "(default: train when the data has a train split, else leave-one-out)")
    _option(evaluate, "--max_train_samples", type=_positive_int,
            help="keep the first N rows of the reference split (default: --max_eval_samples)")
    _option(evaluate, "--validation_split_percentage", type=_positive_int,
            help=f"with --split {HELDOUT}: the share of the train split held out, as the training scripts' "
            "--validation_split_percentage (default: 10)")
    _option(evaluate, "--dims", type=_dims, help="comma-separated dims to score (default: the model's nesting dims)")
    _option(evaluate, "--name", help="results key prefix (default: the dataset name)")
    _option(evaluate, "--output_dir", type=Path, help="write results.json, eval_info.json, results.md and the plot here")
    _add_model_arguments(evaluate)
    _add_data_arguments(evaluate, split=None)
    evaluate.set_defaults(handler=_run_eval)

    index = commands.add_parser("index", help="build or search a MatryoshkaIndex (faiss folder or Qdrant collection)")
    index_commands = index.add_subparsers(dest="index_command", required=True, metavar="action")
    build = index_commands.add_parser(
        "build",
        help="encode a dataset into an index folder",
        formatter_class=formatter,
        epilog=_epilog(
            "hf-mrl index build runs/wordnet-mrl wordnet-index --dataset_name wordnet-nouns --split train "
            "--shortlist_dim 16",
            "hf-mrl index build runs/wordnet-mrl --backend qdrant --path wordnet-qdrant --shortlist_dim 16 "
            "--rerank_dim 64,384",
            "hf-mrl index build runs/wordnet-mrl --backend qdrant --url http://localhost:6333 --collection_name wordnet",
        ),
    )
    build.add_argument("model", help="hf_mrl model folder or Hub id")
    build.add_argument("output", type=Path, nargs="?", help="index folder to write (faiss backend)")
    _option(build, "--backend", choices=("faiss", "qdrant"), default="faiss",
            help="faiss: a MatryoshkaIndex folder (OUTPUT); qdrant: a Qdrant collection (--path or --url)")
    _option(build, "--shortlist_dim", type=_dims, help="dim(s) of the shortlist indexes, comma-separated")
    faiss_group = build.add_argument_group("faiss backend")
    _option(faiss_group, "--storage", default="float32", choices=STORAGES, help="stored re-rank vectors (default: float32)")
    _option(faiss_group, "--shortlist_index", default="flat", choices=SHORTLIST_INDEXES, help="default: flat")
    _option(faiss_group, "--shortlist_storage", default="float32", choices=STORAGES,
            help="what the shortlist stores (default: float32)")
    qdrant_group = build.add_argument_group("qdrant backend")
    _add_qdrant_arguments(qdrant_group)
    _option(qdrant_group, "--rerank_dim", type=_dims, help="dim(s) of the re-rank vectors (default: the full dim)")
    _option(qdrant_group, "--shortlist_quantization", choices=("binary", "int8"),
            help="Qdrant quantisation of the shortlist vectors (default: none)")
    _option(qdrant_group, "--overwrite", action="store_true",
            help="replace a collection of the same name that holds another build (default: refuse)")
    _add_model_arguments(build)
    _add_data_arguments(build, split="train")
    build.set_defaults(handler=_run_index_build)

    search = index_commands.add_parser(
        "search",
        help="adaptive search of text or image queries",
        description="Encodes the queries at full dim, shortlists at --shortlist_dim, re-ranks at --rerank_dim "
        "(--exact: scores every row at the full dim instead); prints one JSON line per query. Pass the data "
        "options used at build time to show the rows found (labels as class names).",
        formatter_class=formatter,
        epilog=_epilog(
            'hf-mrl index search wordnet-index --model runs/wordnet-mrl --query "a large cat" -k 5 '
            "--dataset_name wordnet-nouns --split train",
            'hf-mrl index search wordnet-qdrant --model runs/wordnet-mrl --query "a large cat" -k 5',
            "hf-mrl index search wordnet-index --model runs/wordnet-mrl --queries_file queries.txt --exact",
        ),
    )
    search.add_argument("index", type=Path, nargs="?",
                        help="folder written by `hf-mrl index build` (a MatryoshkaIndex, or a Qdrant --path)")
    qdrant_search = search.add_argument_group("qdrant collection")
    _add_qdrant_arguments(qdrant_search, path=False)
    _option(qdrant_search, "--exact_shortlist", action="store_true",
            help="the shortlist by full scan without HNSW or quantisation, then the re-rank")
    _option(search, "--model", required=True, help="the model that built the index")
    _option(search, "--query", action="append", default=[], help="a text query (repeatable)")
    _option(search, "--queries_file", type=Path,
            help="text queries from a file: .txt one per line (blank lines skipped), or .jsonl / .csv with a "
            "--queries_column column")
    _option(search, "--queries_column", default="text", help="the text column of a .jsonl / .csv --queries_file "
            "(default: text)")
    _option(search, "--query_image", action="append", default=[], type=Path, help="an image query file (repeatable)")
    _option(search, "-k", type=_positive_int, default=10, help="results per query (default: 10)")
    _option(search, "--exact", action="store_true",
            help="exact search of every row at the full dim (or --rerank_dim), no shortlist: brute force on the "
            "float32 vectors (an index built with --storage float32), or Qdrant's exact search")
    _option(search, "--shortlist_dim", type=_positive_int, help="shortlist dim (default: the smallest built)")
    _option(search, "--shortlist_size", type=_positive_int, help="shortlist length (default: max(k, 200))")
    _option(search, "--rerank_dim", type=_positive_int, help="re-rank dim (default: the stored dim)")
    _add_model_arguments(search)
    _add_data_arguments(search, split="train", dataset_default=False)
    search.set_defaults(handler=_run_index_search)

    export = commands.add_parser(
        "export-st",
        help="export a text model as a plain sentence-transformers folder",
        description="Writes Transformer + Pooling (+ Dense) + Normalize modules: the folder loads with "
        "SentenceTransformer(folder, truncate_dim=k) without hf_mrl.",
        formatter_class=formatter,
        epilog=_epilog("hf-mrl export-st runs/wordnet-mrl exported/ --truncate_dim 64"),
    )
    export.add_argument("model", help="hf_mrl text model folder or Hub id")
    export.add_argument("output", type=Path, help="folder to write")
    _option(export, "--tokenizer", help="tokenizer folder or Hub id (default: the model's)")
    _option(export, "--truncate_dim", type=_positive_int, help="default truncate_dim of the exported model")
    _option(export, "--max_seq_length", type=_positive_int, help="longest input in tokens")
    _option(export, "--results", type=Path, help="results JSON for the model card")
    export.set_defaults(handler=_run_export)

    card = commands.add_parser(
        "card",
        help="write a README.md model card from results JSON",
        description="Renders the model card (metadata with a model-index result per dim, per-dim tables, plot, "
        "usage, citation) from the flat '{name}_dim{k}_{metric}' results that `hf-mrl eval` writes.",
        formatter_class=formatter,
        epilog=_epilog("hf-mrl card eval/results.json --model runs/wordnet-mrl --output runs/wordnet-mrl/README.md "
                       "--repo_id my-org/wordnet-mrl --base_model sentence-transformers/all-MiniLM-L6-v2"),
    )
    card.add_argument("results", type=Path, help="results JSON ({name}_dim{k}_{metric} keys)")
    _option(card, "--model", required=True, help="the hf_mrl model the card describes")
    _option(card, "--output", type=Path, required=True, help="card file to write (the plot goes beside it)")
    _option(card, "--repo_id", help="Hub id used in the card")
    _option(card, "--base_model", help="Hub id of the pretrained encoder")
    _option(card, "--dataset", dest="datasets", action="append", help="Hub id of training data (repeatable)")
    _option(card, "--license", default="apache-2.0", help="licence id (default: apache-2.0)")
    _option(card, "--tag", dest="tags", action="append", help="extra tag (repeatable)")
    _option(card, "--no_plot", action="store_true", help="do not write the results plot")
    _option(card, "--template", type=Path, help="another Jinja template")
    card.set_defaults(handler=_run_card)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of `hf-mrl`; returns the exit status."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command != "demo" and extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return args.handler(args, extra) or 0
    except (ValueError, OSError) as error:  # bad input, missing files or models: a message, not a traceback
        print(f"hf-mrl: error: {error}", file=sys.stderr)
        return 1


# -- handlers -------------------------------------------------------------------------------------------------


def _datasets_bars_where_wanted(handler):
    """`handler` with `datasets`' bars (loading, `map`) only where hf_mrl draws bars: not into a log file."""

    @functools.wraps(handler)
    def run(args, extra):
        from .data._common import datasets_progress_bars

        with datasets_progress_bars():
            return handler(args, extra)

    return run


def _run_demo(args, extra: list[str]) -> int:
    from .recipes import demo

    parser = argparse.ArgumentParser(prog="hf-mrl demo", description=demo.__doc__)
    demo.add_arguments(parser)
    return demo.main(parser.parse_args(extra)) or 0


def _check_paths(args, output_dir: bool = False, output_kind=None) -> None:
    """Before any loading: local model / processor paths exist ("folder not found: PATH"), `--output_dir` is no
    file, and the `output` folder is new, empty or of `output_kind` (the kind of folder the command replaces)."""
    from .modeling.file_checks import check_local_path
    from .modeling.files import check_folder_target, check_output_folder

    check_local_path(args.model, "model")
    for name in ("processor", "tokenizer"):
        if getattr(args, name, None) is not None:
            check_local_path(getattr(args, name), f"--{name}")
    if output_dir and args.output_dir is not None:
        check_output_folder(args.output_dir, "--output_dir")
    if output_kind is not None:
        check_folder_target(args.output, output_kind, "output")


def _load_model(name_or_path: str):
    """A `MatryoshkaModel` or classifier (the commands encode with `model(**batch).embeddings`)."""
    from .hub import load_matryoshka_model
    from .modeling.configuration_matryoshka import MatryoshkaConfig

    model = load_matryoshka_model(name_or_path).eval()
    if not isinstance(model.config, MatryoshkaConfig):
        raise ValueError(
            f"`{name_or_path}` is a {type(model).__name__}; this command takes a MatryoshkaModel or a Matryoshka "
            "classifier (for the dual encoder use its get_image_features / get_text_features)."
        )
    return model


def _is_text(model) -> bool:
    return model.main_input_name == "input_ids"


def _data_arguments(args, default_dataset: str | None = "wordnet-nouns"):
    """The resolver's `DataArguments` from the data flags; without a dataset or file, `default_dataset`. Checked
    here (names, files, columns), so that a wrong dataset is reported before the model loads."""
    from .data import DataArguments, validate_data_arguments

    files = {name: getattr(args, name) for name in ("train_file", "validation_file", "test_file")}
    dataset_name = args.dataset_name
    if dataset_name is None and not any(files.values()):
        dataset_name = default_dataset
    data_args = DataArguments(
        dataset_name=dataset_name,
        dataset_config_name=args.dataset_config_name,
        **files,
        text_column=args.text_column,
        image_column=args.image_column,
        label_column=args.label_column,
        max_eval_samples=args.max_eval_samples,
    )
    if dataset_name is not None or any(files.values()):
        validate_data_arguments(data_args)
    return data_args


def _describe_data(data_args) -> str:
    if data_args.dataset_name is not None:
        return data_args.dataset_name
    return ", ".join(
        f"{name}={getattr(data_args, name)}" for name in ("train_file", "validation_file", "test_file")
        if getattr(data_args, name) is not None
    )


HELDOUT = "heldout"  # --split: the rows the training scripts hold out of the train split


def _default_name(data_args, split: str | None = None) -> str:
    """The results key prefix: the dataset's name, or the name (without extension) of the data file scored: the
    test file for the test split, the validation file for the validation split, else the first data file."""
    split_files = {"test": data_args.test_file, "validation": data_args.validation_file}
    scored = split_files.get((split or "").split("[")[0])
    source = (data_args.dataset_name or scored or data_args.train_file or data_args.validation_file
              or data_args.test_file)
    path = Path(source.rstrip("/"))
    return (path.stem if path.suffix else path.name).replace("-", "_")


def _check_modality(model, dataset, data_args) -> None:
    column = "text" if _is_text(model) else "image"
    if column not in dataset.column_names:
        raise ValueError(
            f"the model takes {column}s but {_describe_data(data_args)!r} has columns {dataset.column_names}; "
            f"pass --{column}_column or a {column} dataset."
        )


def _class_names(dataset, model) -> list[str] | None:
    """Class names from the dataset's `ClassLabel`, else from the model's `config.id2label`."""
    import datasets

    from .hub import model_class_names

    feature = dataset.features.get("label") if dataset is not None else None
    if isinstance(feature, datasets.ClassLabel):
        return list(feature.names)
    return model_class_names(model) if hasattr(model, "heads") else None


def _default_eval_split(data_args) -> str:
    """"test", except for data files without a test file: "validation" when given, else "train"; a named dataset
    without a test or validation split: the part the training scripts hold out (`HELDOUT`)."""
    if data_args.dataset_name is not None:
        from .data import split_names

        names = split_names(data_args)
        return "test" if "test" in names else "validation" if "validation" in names else HELDOUT
    if data_args.test_file is not None:
        return "test"
    return "validation" if data_args.validation_file is not None else "train"


def _heldout_splits(args, data_args):
    """(evaluated rows, reference rows or None) for `--split heldout`: the rows the training scripts hold out of
    the train split (same share, same seed), searched against the rest of the train split by default."""
    from dataclasses import replace

    from .data import load_splits
    from .data.arguments import DEFAULT_VALIDATION_PERCENTAGE
    from .data.resolve import HELD_OUT_SEED

    percentage = args.validation_split_percentage or DEFAULT_VALIDATION_PERCENTAGE
    splits = load_splits(replace(data_args, validation_split_percentage=percentage), seed=HELD_OUT_SEED)
    if args.reference_split is None:
        return splits.eval, splits.train
    if args.reference_split.strip().lower() == "none":
        return splits.eval, None
    raise ValueError(f"--reference_split {args.reference_split!r} with --split {HELDOUT}: the held-out rows are "
                     "searched against the rest of the train split (the default) or themselves ('none').")


def _reference_split(args, data_args, split: str) -> str | None:
    """The reference split to search, or None for leave-one-out within the evaluated split."""
    from .data import split_names

    reference = args.reference_split
    if reference is None:
        reference = "train" if "train" in split_names(data_args) else "none"
    if reference.strip().lower() == "none" or reference.replace(" ", "") == split.replace(" ", ""):
        return None
    return reference


def _check_eval_dims(args) -> None:
    """`--dims` against the model's embedding dim, read from its config before any data or weights load (a config
    that cannot be read here is reported by `_load_model`)."""
    if args.dims is None:
        return
    from transformers import AutoConfig

    from .modeling.configuration_matryoshka import MatryoshkaConfig
    from .modeling.nesting import resolve_dims

    try:
        config = AutoConfig.from_pretrained(args.model)
    except (OSError, ValueError, KeyError):
        return
    if isinstance(config, MatryoshkaConfig):
        resolve_dims(config, args.dims, name="--dims")


def _same_source(data_args, first: str, second: str) -> str | None:
    """How two split names read the same data: the same name, or data files that are one file or hold the same
    bytes (a description for the error), else None."""
    import filecmp
    import os

    if first == second:
        return f"both read split {first!r}"
    if data_args.dataset_name is not None:
        return None
    files = {name: getattr(data_args, f"{name}_file", None) for name in (first, second)}
    if None in files.values():
        return None
    one, other = (files[first], files[second])
    flags = f"--{first}_file and --{second}_file"
    try:
        if os.path.samefile(one, other):
            return f"{flags} are the same file {one!r}"
        if filecmp.cmp(one, other, shallow=False):
            return f"{flags} hold the same rows ({one!r}, {other!r})"
    except OSError:
        return None
    return None


def _slices_overlap(first: str | None, second: str | None) -> bool:
    """Whether two slices of one split may share rows: always when either is the whole split; percentage slices
    are compared on a nominal length, absolute ones as given; mixed forms are trusted to be disjoint."""
    import datasets

    if first is None or second is None or first.replace(" ", "") == second.replace(" ", ""):
        return True
    units = {"%" in first, "%" in second}
    if len(units) != 1:
        return False
    length = 10**6 if "%" in first else 10**12
    (a,) = datasets.ReadInstruction.from_spec(f"split{first}").to_absolute({"split": length})
    (b,) = datasets.ReadInstruction.from_spec(f"split{second}").to_absolute({"split": length})
    return max(a.from_, b.from_) < min(a.to, b.to)


def _check_distinct_splits(data_args, split: str, reference_split: str | None) -> None:
    """Refuses (before the model loads) a k-NN / retrieval reference that holds the evaluated rows themselves: each
    row would find itself (1-NN 1.0 whatever the model); leave-one-out is `--reference_split none`."""
    if reference_split is None:
        return
    from .data.resolve import _parse_split_spec

    name, bracket = _parse_split_spec(split, "split")
    reference_name, reference_bracket = _parse_split_spec(reference_split, "reference_split")
    same = _same_source(data_args, name, reference_name)
    if same is None or not _slices_overlap(bracket, reference_bracket):
        return
    leave_one_out = (
        f"--split {name} --reference_split none" if data_args.dataset_name is not None
        else "the file once as --train_file with --split train --reference_split none"
    )
    raise ValueError(
        f"--split {split!r} and --reference_split {reference_split!r} hold the same rows ({same}): each evaluated row "
        f"would find itself among the references (a score of 1.0 whatever the model); for leave-one-out pass "
        f"{leave_one_out}, else give a separate reference split."
    )


def _eval_output_names(task: str, name: str) -> list[str]:
    """The files `hf-mrl eval` may write into --output_dir (the plot is named after the primary metric: top-1 of
    the heads, else 1-NN; retrieval: nDCG@10)."""
    plots = [f"{name}_top1.png", f"{name}_1nn.png"] if task == "classification" else [f"{name}_ndcg@10.png"]
    return ["results.json", "eval_info.json", "results.md", *plots]


@_datasets_bars_where_wanted
def _run_eval(args, extra) -> int:
    from dataclasses import replace

    from .data import load_split
    from .data.collators import collator_for_model
    from .data.generic import align_class_labels
    from .evaluation import (
        MatryoshkaClassificationEvaluator,
        MatryoshkaRetrievalEvaluator,
        markdown_table,
        plot_metric_vs_dim,
        save_results,
    )
    from .modeling.files import write_file_atomically
    from .output_folder import check_output_names, write_output

    _check_paths(args, output_dir=True)
    _check_eval_dims(args)
    data_args = _data_arguments(args)
    split = args.split or _default_eval_split(data_args)
    name = args.name or _default_name(data_args, split)
    if args.output_dir is not None:  # a file of the user's under a name eval writes: refused before any loading
        check_output_names(args.output_dir, _eval_output_names(args.task, name), "--output_dir")
    reference_split = _reference_split(args, data_args, split)
    _check_distinct_splits(data_args, split, reference_split)
    if args.validation_split_percentage is not None and split != HELDOUT:
        raise ValueError(f"--validation_split_percentage applies to --split {HELDOUT} only (got --split {split!r}).")
    heldout = _heldout_splits(args, data_args) if split == HELDOUT else None
    model = _load_model(args.model)
    collate_fn = collator_for_model(model, args.model, processor=args.processor)
    dataset = heldout[0] if heldout else load_split(data_args, split, argument="split")
    _check_modality(model, dataset, data_args)
    reference = None
    if heldout:
        reference = heldout[1]
        reference_split = None if reference is None else f"train less the held-out {len(dataset)} rows"
    elif reference_split is not None:
        reference_args = replace(data_args, max_eval_samples=args.max_train_samples or args.max_eval_samples)
        reference = load_split(reference_args, reference_split, argument="reference_split")
    source = _describe_data(data_args)
    common = dict(collate_fn=collate_fn, dims=args.dims, name=name, batch_size=args.batch_size)
    if args.task == "classification":
        if hasattr(model, "heads"):  # the heads' class ids, by class name
            dataset = align_class_labels(dataset, model.config.id2label)
            reference = align_class_labels(reference, model.config.id2label) if reference is not None else None
        # k-NN votes up to 20, fewer on a small reference set (leave-one-out leaves one row fewer).
        database_size = len(reference) if reference is not None else len(dataset) - 1
        knn_k = [k for k in (1, 20) if k <= database_size] or [1]
        evaluator = MatryoshkaClassificationEvaluator(
            dataset, reference, use_heads=hasattr(model, "heads"), knn_k=knn_k, **common
        )
    else:
        evaluator = MatryoshkaRetrievalEvaluator(dataset, reference, **common)
    results = evaluator(model)
    class_names = _class_names(dataset, model)
    searched = "k-NN database" if args.task == "classification" else "retrieval corpus"
    info = {
        "dataset": source,
        "split": split,
        "reference_split": reference_split if reference_split is not None else "leave-one-out",
        "task": args.task,
        "num_rows": len(dataset),
        "class_names": class_names,
    }
    header = (
        f"{name}: {args.task} on {source}, split {split!r} ({len(dataset)} rows); {searched}: "
        + (f"split {reference_split!r} ({len(reference)} rows)" if reference is not None else "leave-one-out within the split")
        + "\n"
    )
    if class_names:
        header += f"classes ({len(class_names)}): {', '.join(class_names)}\n"
    table = header + "\n" + markdown_table({name: results})
    print(table, end="")
    if args.output_dir is not None:
        write_output(args.output_dir, "results.json", lambda path: save_results(results, path))
        write_output(args.output_dir, "eval_info.json", lambda path: save_results(info, path))
        write_output(args.output_dir, "results.md",
                     lambda path: write_file_atomically(path, lambda file: file.write_text(table)))
        metric = evaluator.primary_metric_name
        write_output(args.output_dir, f"{name}_{metric}.png",
                     lambda path: plot_metric_vs_dim({name: results}, metric, path))
        print(f"wrote {args.output_dir}/results.json, eval_info.json, results.md, {name}_{metric}.png", file=sys.stderr)
    return 0


def _check_backend_options(args) -> None:
    """Each backend's options, checked before any loading: faiss writes OUTPUT, qdrant needs --path or --url."""
    faiss_options = {"--storage": args.storage != "float32", "--shortlist_index": args.shortlist_index != "flat",
                     "--shortlist_storage": args.shortlist_storage != "float32"}
    qdrant_options = {"--path": args.path is not None, "--url": args.url is not None,
                      "--api_key": args.api_key is not None, "--collection_name": args.collection_name != "hf_mrl",
                      "--max_search_threads": args.max_search_threads is not None, "--rerank_dim": args.rerank_dim is not None,
                      "--shortlist_quantization": args.shortlist_quantization is not None, "--overwrite": args.overwrite}
    other = qdrant_options if args.backend == "faiss" else faiss_options
    misplaced = [name for name, given in other.items() if given]
    if misplaced:
        raise ValueError(f"{', '.join(misplaced)} do not apply to --backend {args.backend}.")
    if args.backend == "qdrant":  # before loading the model; the index checks it again when it connects
        from .index.qdrant_checks import check_max_search_threads

        check_max_search_threads(args.max_search_threads, server=args.url is not None)
    if args.backend == "faiss" and args.output is None:
        raise ValueError("--backend faiss writes an index folder: give OUTPUT.")
    if args.backend == "qdrant" and (args.output is not None or (args.path is None) == (args.url is None)):
        raise ValueError("--backend qdrant takes one of --path DIR (the embedded engine) or --url URL (a server), "
                         f"not OUTPUT; got OUTPUT={args.output}, --path={args.path}, --url={args.url}.")


@_datasets_bars_where_wanted
def _run_index_build(args, extra) -> int:
    from .data import load_split
    from .data.collators import collator_for_model
    from .index import MatryoshkaIndex, QdrantMatryoshkaIndex
    from .index.persistence import INDEX_FOLDER
    from .index.validation import _check_shortlist_dims

    _check_backend_options(args)
    _check_paths(args, output_kind=INDEX_FOLDER if args.backend == "faiss" else None)
    model = _load_model(args.model)
    _check_shortlist_dims(args.shortlist_dim, model.config.embedding_dim, args.shortlist_storage)  # before encoding
    data_args = _data_arguments(args)
    dataset = load_split(data_args, args.split, argument="split")
    _check_modality(model, dataset, data_args)
    build = (model, dataset, collator_for_model(model, args.model, processor=args.processor), args.batch_size)
    if args.backend == "qdrant":
        with QdrantMatryoshkaIndex.from_dataset(
            *build, shortlist_dim=args.shortlist_dim, rerank_dim=args.rerank_dim,
            shortlist_quantization=args.shortlist_quantization, overwrite=args.overwrite,
            **_qdrant_connection(args, args.path),
        ) as index:
            print(f"wrote {index!r}", file=sys.stderr)
        return 0
    index = MatryoshkaIndex.from_dataset(
        *build,
        storage=args.storage,
        shortlist_index=args.shortlist_index,
        shortlist_dim=args.shortlist_dim,
        shortlist_storage=args.shortlist_storage,
    )
    index.save(args.output)
    print(f"wrote {args.output}: {index!r}", file=sys.stderr)
    return 0


def _qdrant_connection(args, path) -> dict:
    api_key = args.api_key or (os.environ.get("QDRANT_API_KEY") if args.url else None)
    return {"path": path, "url": args.url, "api_key": api_key, "collection_name": args.collection_name,
            "max_search_threads": args.max_search_threads}


def _is_qdrant_folder(folder: Path) -> bool:
    """A folder of the embedded Qdrant engine: one sub-folder per collection, each with its `edge_config.json`."""
    return folder.is_dir() and any((sub / "edge_config.json").is_file() for sub in folder.iterdir())


def _open_index(args):
    """The index to search: a Qdrant collection (--url, or a Qdrant folder) or a MatryoshkaIndex folder."""
    from .index import MatryoshkaIndex, QdrantMatryoshkaIndex

    if args.url is not None or (args.index is not None and _is_qdrant_folder(args.index)):
        if args.url is not None and args.index is not None:
            raise ValueError(f"give INDEX (a folder) or --url, not both; got {args.index} and {args.url}.")
        return QdrantMatryoshkaIndex.open(**_qdrant_connection(args, args.index))
    if args.index is None:
        raise ValueError("give INDEX (an index folder) or --url URL (a Qdrant server).")
    if args.exact_shortlist or args.collection_name != "hf_mrl" or args.max_search_threads is not None:
        raise ValueError(f"--exact_shortlist, --collection_name and --max_search_threads apply to Qdrant collections; "
                         f"{args.index} is not a Qdrant folder.")
    return MatryoshkaIndex.load(args.index)


QUERIES_FILE_SUFFIXES = (".txt", ".jsonl", ".csv")


def _read_queries_file(path: Path, column: str) -> list[str]:
    """The text queries of `--queries_file`: a .txt file's lines (blank ones skipped), or the `column` of each row
    of a .jsonl / .csv file. Every query must be a string with text in it; errors name the line."""
    import csv

    from .modeling.encoding import has_text

    suffix = path.suffix.lower()
    if suffix not in QUERIES_FILE_SUFFIXES:
        raise ValueError(f"--queries_file {str(path)!r} has suffix {path.suffix!r}; allowed: {', '.join(QUERIES_FILE_SUFFIXES)}.")
    if not path.is_file():
        raise FileNotFoundError(f"--queries_file not found: {path}")
    where = f"--queries_file {str(path)!r}"
    with open(path, encoding="utf-8", newline="") as handle:
        if suffix == ".txt":
            rows = [(number, line.rstrip("\r\n")) for number, line in enumerate(handle, start=1) if line.strip()]
        elif suffix == ".csv":
            reader = csv.DictReader(handle)
            if column not in (reader.fieldnames or []):
                raise ValueError(f"--queries_column {column!r} is not a column of {where}; its columns: "
                                 f"{reader.fieldnames or []}.")
            rows = [(reader.line_num, row[column]) for row in reader]
        else:
            rows = []
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as error:
                    raise ValueError(f"{where} line {number} is not JSON ({error.msg}); allowed: one JSON object per "
                                     "line.") from None
                if not isinstance(row, dict) or column not in row:
                    found = f"keys {sorted(row)}" if isinstance(row, dict) else f"a {type(row).__name__}"
                    raise ValueError(f"{where} line {number} has no --queries_column {column!r} (it holds {found}); "
                                     f"allowed: an object with a {column!r} string.")
                rows.append((number, row[column]))
    for number, text in rows:
        if not isinstance(text, str) or not has_text(text):
            raise ValueError(f"{where} line {number}: the query is {text!r}, nothing to embed; allowed: a string with "
                             "text in it.")
    if not rows:
        raise ValueError(f"{where} holds no queries; allowed: a file with at least one.")
    return [text for _, text in rows]


def _run_index_search(args, extra) -> int:
    from .modeling.encoding import has_text

    blank = next((i for i, text in enumerate(args.query) if not has_text(text)), None)
    if blank is not None:
        raise ValueError(f"--query #{blank + 1} {args.query[blank]!r} is empty: nothing to embed; give it text.")
    if args.queries_file is None and args.queries_column != "text":
        raise ValueError(f"--queries_column {args.queries_column!r} names a column of --queries_file; give the file.")
    if args.queries_file is not None:
        args.query = [*args.query, *_read_queries_file(args.queries_file, args.queries_column)]
    if bool(args.query) == bool(args.query_image):
        raise ValueError("give text queries (--query, --queries_file) or image queries (--query_image), one kind and "
                         "at least one.")
    if args.exact:
        given = [flag for flag, value in (("--shortlist_dim", args.shortlist_dim), ("--shortlist_size", args.shortlist_size),
                                          ("--exact_shortlist", args.exact_shortlist or None)) if value is not None]
        if given:
            raise ValueError(f"--exact scores every row without a shortlist, so {given[0]} does not apply; allowed: "
                             f"--exact without {', '.join(given)}.")
    _check_paths(args)
    index = _open_index(args)
    try:
        _check_search_arguments(index, args)
        return _search_index(args, index)
    finally:
        if hasattr(index, "close"):  # a Qdrant collection: release the embedded engine's lock
            index.close()


def _search_index(args, index) -> int:
    import torch
    from PIL import Image

    from .data import load_split
    from .data.collators import collator_for_model

    model = _load_model(args.model)
    index.check_model(model, args.model)  # another model's embeddings would match wrong rows, in silence
    if _is_text(model) != bool(args.query):
        kind = "text" if _is_text(model) else "image"
        raise ValueError(f"`--model` {args.model!r} is a {kind} model; give {kind} queries.")
    data_args = _data_arguments(args, default_dataset=None)
    corpus = None
    if data_args.dataset_name is not None or data_args.train_file or data_args.validation_file or data_args.test_file:
        corpus = load_split(data_args, args.split, argument="split")
        if len(corpus) != len(index):
            raise ValueError(
                f"the index holds {len(index)} rows but split {args.split!r} of {_describe_data(data_args)!r} has "
                f"{len(corpus)}; pass the data options used at build time."
            )
    collate_fn = collator_for_model(model, args.model, processor=args.processor, label_column=None)
    rows = [{"text": text} for text in args.query] or [{"image": path} for path in args.query_image]
    batches = []
    with torch.no_grad():
        for start in range(0, len(rows), args.batch_size):
            batch = rows[start : start + args.batch_size]
            if args.query_image:
                batch = [{"image": Image.open(row["image"])} for row in batch]
            batches.append(model(**collate_fn(batch)).embeddings)
    queries = torch.cat(batches)
    if args.exact:
        scores, ids = index.search(queries, args.k, rerank_dim=args.rerank_dim, exact=True)
    else:
        qdrant = {"exact_shortlist": True} if args.exact_shortlist else {}
        scores, ids = index.search(queries, args.k, shortlist_dim=args.shortlist_dim, shortlist_size=args.shortlist_size,
                                   rerank_dim=args.rerank_dim, **qdrant)
    class_names = _class_names(corpus, model)
    shown = "text" if corpus is not None and "text" in corpus.column_names else None
    stored = hasattr(index, "payloads") and corpus is None  # a Qdrant collection keeps each row's text and label
    for query, row_scores, row_ids in zip(args.query or map(str, args.query_image), scores, ids):
        hits = [{"id": int(i), "score": round(float(s), 6)} for s, i in zip(row_scores, row_ids) if i >= 0]
        if stored:
            for hit, payload in zip(hits, index.payloads([hit["id"] for hit in hits])):
                hit.update({key: payload[key] for key in ("label", "text") if key in payload})
                if "label_name" in payload:
                    hit["label"] = payload["label_name"]
        if corpus is not None:
            for hit in hits:
                row = corpus[hit["id"]]
                label = row.get("label")
                if class_names is not None and isinstance(label, int) and 0 <= label < len(class_names):
                    label = class_names[label]
                hit["label"] = label
                if shown:
                    hit["text"] = row[shown]
        print(json.dumps({"query": query, "results": hits}))
    return 0


def _check_search_arguments(index, args) -> None:
    """The search options against the index, before the model is loaded and the queries encoded."""
    if args.shortlist_dim is not None and args.shortlist_dim not in index.shortlist_dims:
        raise ValueError(
            f"`--shortlist_dim` is {args.shortlist_dim}, but the index has shortlists only at dims {index.shortlist_dims} "
            "(chosen at build time)."
        )
    stored_dims = getattr(index, "stored_dims", None)  # a Qdrant collection stores named vectors at some dims only
    if args.rerank_dim is not None and stored_dims is not None and args.rerank_dim not in stored_dims:
        raise ValueError(f"`--rerank_dim` must be one of the stored dims {stored_dims}, got {args.rerank_dim}.")
    if args.rerank_dim is not None and args.rerank_dim > index.stored_dim:
        raise ValueError(f"`--rerank_dim` must be from 1 to {index.stored_dim} (the stored dim), got {args.rerank_dim}.")
    if args.shortlist_size is not None and args.shortlist_size < args.k:
        raise ValueError(f"`--shortlist_size` is {args.shortlist_size}, fewer than -k {args.k}; allowed: at least k.")
    storage = getattr(index, "storage", "float32")  # a Qdrant collection keeps float32 vectors
    if args.exact and storage != "float32":
        raise ValueError(f"--exact reads full-precision vectors, but {args.index} stores {storage} codes (built with "
                         f"--storage {storage}); allowed: an index built with --storage float32 (--shortlist_storage "
                         "binary keeps a binary shortlist beside it).")


def _run_export(args, extra) -> int:
    from .evaluation import load_results
    from .hub import export_sentence_transformer
    from .modeling.files import MODEL_FOLDER

    _check_paths(args, output_kind=MODEL_FOLDER)
    results = load_results(args.results) if args.results is not None else None
    model = _load_model(args.model)
    folder = export_sentence_transformer(
        model, args.output, args.tokenizer or args.model, truncate_dim=args.truncate_dim,
        max_seq_length=args.max_seq_length, results=results,
    )
    print(f"wrote {folder}", file=sys.stderr)
    return 0


def _run_card(args, extra) -> int:
    from .evaluation import load_results
    from .hub import write_card

    _check_paths(args)
    if args.output.is_dir():
        raise ValueError(f"`--output` {str(args.output)!r} is a folder; give the card's file path, e.g. "
                         f"{str(args.output / 'README.md')!r}.")
    results = load_results(args.results)
    path = write_card(
        args.output,
        _load_model(args.model),
        results,
        plot=not args.no_plot,
        repo_id=args.repo_id,
        base_model=args.base_model,
        datasets=args.datasets,
        license=args.license,
        tags=args.tags,
        template=args.template,
    )
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
