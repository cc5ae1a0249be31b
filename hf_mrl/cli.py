"""`hf-mrl`: the command line of hf_mrl.

    hf-mrl demo ...                         the demo (its options: hf-mrl demo --help)
    hf-mrl eval MODEL --dataset wordnet     per-dim results table, JSON and plot
    hf-mrl index build MODEL OUT ...        encode a dataset into a MatryoshkaIndex folder
    hf-mrl index search INDEX --model ...   adaptive search (shortlist at few dims, re-rank at many)
    hf-mrl export-st MODEL OUT              plain sentence-transformers folder
    hf-mrl card RESULTS.json --model MODEL  README.md model card from evaluation results

Each handler parses, checks and calls library functions; library `ValueError`s are printed as
`hf-mrl: error: ...` with exit status 1 (argparse's own errors exit with 2).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["main", "build_parser"]

DATASETS_HELP = (
    "'wordnet' (WordNet noun definitions, 26 classes), 'fashion-mnist' (images, 10 classes), or any other "
    "classification source: a Hub id, a local dataset folder or a data file with text/image and label columns"
)


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


def _add_data_arguments(parser: argparse.ArgumentParser, split: str, dataset: str | None = "wordnet") -> None:
    group = parser.add_argument_group("data")
    group.add_argument("--dataset", default=dataset, help=f"{DATASETS_HELP} (default: {dataset or 'none'})")
    group.add_argument("--split", default=split, help=f"split to use (default: {split})")
    group.add_argument("--limit", type=_positive_int, help="keep a sample of this many rows (quick runs)")
    group.add_argument("--text-column", help="text column of a custom --dataset")
    group.add_argument("--image-column", help="image column of a custom --dataset")
    group.add_argument("--label-column", default="label", help="label column of a custom --dataset (default: label)")


def _add_model_arguments(parser: argparse.ArgumentParser, batch_size: bool = True) -> None:
    parser.add_argument("--processor", help="tokenizer / image processor folder or Hub id (default: the model's)")
    if batch_size:
        parser.add_argument("--batch-size", type=_positive_int, default=64, help="encoding batch size (default: 64)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hf-mrl",
        description="Matryoshka Representation Learning for Hugging Face models: evaluate every embedding size, "
        "build adaptive indexes, export and document models.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_epilog("hf-mrl eval my-model --dataset wordnet --task retrieval --limit 2000", "hf-mrl <command> --help"),
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="command")
    formatter = argparse.RawDescriptionHelpFormatter

    demo = commands.add_parser("demo", help="run the demo (options: hf-mrl demo --help)", add_help=False)
    demo.set_defaults(handler=_run_demo)

    evaluate = commands.add_parser(
        "eval",
        help="per-dim results of a model on a dataset",
        description="Encodes the data once and scores every nesting dim: a markdown table on stdout, and "
        "results.json, results.md and a metric-vs-dim PNG in --output-dir.",
        formatter_class=formatter,
        epilog=_epilog(
            "hf-mrl eval runs/wordnet-mrl --dataset wordnet --task classification --limit 1000 --output-dir eval/",
            "hf-mrl eval runs/fmnist-vit --dataset fashion-mnist --dims 8,16,32,64 --output-dir eval/",
        ),
    )
    evaluate.add_argument("model", help="hf_mrl model folder or Hub id")
    evaluate.add_argument("--task", choices=("classification", "retrieval"), default="classification",
                          help="classification: nested-head top-k and k-NN accuracy; retrieval: same-label retrieval "
                          "(mAP, recall, nDCG, MRR) (default: classification)")
    evaluate.add_argument("--reference-split", default="train",
                          help="k-NN database / retrieval corpus split; 'none' searches the evaluated split itself "
                          "(default: train)")
    evaluate.add_argument("--dims", type=_dims, help="comma-separated dims to score (default: the model's nesting dims)")
    evaluate.add_argument("--name", help="results key prefix (default: the dataset name)")
    evaluate.add_argument("--output-dir", type=Path, help="write results.json, results.md and the plot here")
    _add_model_arguments(evaluate)
    _add_data_arguments(evaluate, split="test")
    evaluate.set_defaults(handler=_run_eval)

    index = commands.add_parser("index", help="build or search a MatryoshkaIndex")
    index_commands = index.add_subparsers(dest="index_command", required=True, metavar="action")
    build = index_commands.add_parser(
        "build",
        help="encode a dataset into an index folder",
        formatter_class=formatter,
        epilog=_epilog("hf-mrl index build runs/wordnet-mrl wordnet-index --dataset wordnet --split train --shortlist-dim 16"),
    )
    build.add_argument("model", help="hf_mrl model folder or Hub id")
    build.add_argument("output", type=Path, help="index folder to write")
    build.add_argument("--storage", default="float32", help="stored re-rank vectors: float32, float16, bfloat16, int8, binary")
    build.add_argument("--shortlist-index", default="flat", help="flat, hnsw or ivf (default: flat)")
    build.add_argument("--shortlist-dim", type=_dims, help="dim(s) of the shortlist indexes, comma-separated")
    build.add_argument("--shortlist-storage", default="float32", help="what the shortlist stores (default: float32)")
    _add_model_arguments(build)
    _add_data_arguments(build, split="train")
    build.set_defaults(handler=_run_index_build)

    search = index_commands.add_parser(
        "search",
        help="adaptive search of text or image queries",
        description="Encodes the queries at full dim, shortlists at --shortlist-dim, re-ranks at --rerank-dim; "
        "prints one JSON line per query. Pass the --dataset options used at build time to show the rows found.",
        formatter_class=formatter,
        epilog=_epilog(
            'hf-mrl index search wordnet-index --model runs/wordnet-mrl --query "a large cat" -k 5 --dataset wordnet --split train'
        ),
    )
    search.add_argument("index", type=Path, help="index folder written by `hf-mrl index build`")
    search.add_argument("--model", required=True, help="the model that built the index")
    search.add_argument("--query", action="append", default=[], help="a text query (repeatable)")
    search.add_argument("--query-image", action="append", default=[], type=Path, help="an image query file (repeatable)")
    search.add_argument("-k", type=_positive_int, default=10, help="results per query (default: 10)")
    search.add_argument("--shortlist-dim", type=_positive_int, help="shortlist dim (default: the smallest built)")
    search.add_argument("--shortlist-size", type=_positive_int, help="shortlist length (default: max(k, 200))")
    search.add_argument("--rerank-dim", type=_positive_int, help="re-rank dim (default: the stored dim)")
    _add_model_arguments(search, batch_size=False)
    _add_data_arguments(search, split="train", dataset=None)
    search.set_defaults(handler=_run_index_search)

    export = commands.add_parser(
        "export-st",
        help="export a text model as a plain sentence-transformers folder",
        description="Writes Transformer + Pooling (+ Dense) + Normalize modules: the folder loads with "
        "SentenceTransformer(folder, truncate_dim=k) without hf_mrl.",
        formatter_class=formatter,
        epilog=_epilog("hf-mrl export-st runs/wordnet-mrl exported/ --truncate-dim 64"),
    )
    export.add_argument("model", help="hf_mrl text model folder or Hub id")
    export.add_argument("output", type=Path, help="folder to write")
    export.add_argument("--tokenizer", help="tokenizer folder or Hub id (default: the model's)")
    export.add_argument("--truncate-dim", type=_positive_int, help="default truncate_dim of the exported model")
    export.add_argument("--max-seq-length", type=_positive_int, help="longest input in tokens")
    export.add_argument("--results", type=Path, help="results JSON for the model card")
    export.set_defaults(handler=_run_export)

    card = commands.add_parser(
        "card",
        help="write a README.md model card from results JSON",
        description="Renders the model card (metadata with a model-index result per dim, per-dim tables, plot, "
        "usage, citation) from the flat '{name}_dim{k}_{metric}' results that `hf-mrl eval` writes.",
        formatter_class=formatter,
        epilog=_epilog("hf-mrl card eval/results.json --model runs/wordnet-mrl --output runs/wordnet-mrl/README.md "
                       "--repo-id my-org/wordnet-mrl --base-model sentence-transformers/all-MiniLM-L6-v2"),
    )
    card.add_argument("results", type=Path, help="results JSON ({name}_dim{k}_{metric} keys)")
    card.add_argument("--model", required=True, help="the hf_mrl model the card describes")
    card.add_argument("--output", type=Path, required=True, help="card file to write (the plot goes beside it)")
    card.add_argument("--repo-id", help="Hub id used in the card")
    card.add_argument("--base-model", help="Hub id of the pretrained encoder")
    card.add_argument("--dataset", dest="datasets", action="append", help="Hub id of training data (repeatable)")
    card.add_argument("--license", default="apache-2.0", help="licence id (default: apache-2.0)")
    card.add_argument("--tag", dest="tags", action="append", help="extra tag (repeatable)")
    card.add_argument("--no-plot", action="store_true", help="do not write the results plot")
    card.add_argument("--template", type=Path, help="another Jinja template")
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


def _run_demo(args, extra: list[str]) -> int:
    from . import demo

    parser = argparse.ArgumentParser(prog="hf-mrl demo", description=demo.__doc__)
    demo.add_arguments(parser)
    return demo.main(parser.parse_args(extra)) or 0


def _load_model(name_or_path: str):
    """A `MatryoshkaModel` or classifier (the commands encode with `model(**batch).embeddings`)."""
    from .configuration_matryoshka import MatryoshkaConfig
    from .hub import load_matryoshka_model

    model = load_matryoshka_model(name_or_path).eval()
    if not isinstance(model.config, MatryoshkaConfig):
        raise ValueError(
            f"`{name_or_path}` is a {type(model).__name__}; this command takes a MatryoshkaModel or a Matryoshka "
            "classifier (for the dual encoder use its get_image_features / get_text_features)."
        )
    return model


def _is_text(model) -> bool:
    return model.main_input_name == "input_ids"


def _collator(model, processor: str | None, name_or_path: str, label_column: str | None = "label"):
    """TextCollator with the model's (or --processor's) tokenizer, or ImageCollator with its image processor when
    the folder has one, else resizing to the backbone's image size and channels and scaling to [-1, 1], as the
    training scripts do."""
    from transformers import AutoImageProcessor, AutoTokenizer

    from .data import ImageCollator, TextCollator

    if _is_text(model):
        return TextCollator(AutoTokenizer.from_pretrained(processor or name_or_path), label_column=label_column)
    source = processor or name_or_path
    if processor is not None or (Path(source) / "preprocessor_config.json").is_file():
        return ImageCollator(AutoImageProcessor.from_pretrained(source), label_column=label_column)
    backbone = model.config.backbone_config
    return ImageCollator(image_size=backbone.image_size, num_channels=backbone.num_channels, label_column=label_column)


def _load_split(args, split: str | None):
    from . import data

    if split is None:
        return None
    if args.dataset == "wordnet":
        return data.load_wordnet_nouns(split=split, limit=args.limit)
    if args.dataset == "fashion-mnist":
        return data.load_fashion_mnist(split=split, limit=args.limit)
    return data.load_classification_dataset(
        args.dataset, text_column=args.text_column, image_column=args.image_column, label_column=args.label_column,
        split=split, limit=args.limit,
    )


def _run_eval(args, extra) -> int:
    from .evaluation import (
        MatryoshkaClassificationEvaluator,
        MatryoshkaRetrievalEvaluator,
        markdown_table,
        plot_metric_vs_dim,
        save_results,
    )

    model = _load_model(args.model)
    collate_fn = _collator(model, args.processor, args.model)
    dataset = _load_split(args, args.split)
    reference = _load_split(args, None if args.reference_split.lower() == "none" else args.reference_split)
    name = args.name or args.dataset.replace("-", "_").split("/")[-1]
    common = dict(collate_fn=collate_fn, dims=args.dims, name=name, batch_size=args.batch_size)
    if args.task == "classification":
        evaluator = MatryoshkaClassificationEvaluator(dataset, reference, use_heads=hasattr(model, "heads"), **common)
    else:
        evaluator = MatryoshkaRetrievalEvaluator(dataset, reference, **common)
    results = evaluator(model)
    table = markdown_table({name: results})
    print(table, end="")
    if args.output_dir is not None:
        args.output_dir.mkdir(parents=True, exist_ok=True)
        save_results(results, args.output_dir / "results.json")
        (args.output_dir / "results.md").write_text(table)
        metric = evaluator.primary_metric_name
        plot_metric_vs_dim({name: results}, metric, args.output_dir / f"{name}_{metric}.png")
        print(f"wrote {args.output_dir}/results.json, results.md, {name}_{metric}.png", file=sys.stderr)
    return 0


def _run_index_build(args, extra) -> int:
    from .index import MatryoshkaIndex

    model = _load_model(args.model)
    dataset = _load_split(args, args.split)
    index = MatryoshkaIndex.from_dataset(
        model,
        dataset,
        _collator(model, args.processor, args.model),
        args.batch_size,
        storage=args.storage,
        shortlist_index=args.shortlist_index,
        shortlist_dim=args.shortlist_dim,
        shortlist_storage=args.shortlist_storage,
    )
    index.save(args.output)
    print(f"wrote {args.output}: {index!r}", file=sys.stderr)
    return 0


def _run_index_search(args, extra) -> int:
    import torch
    from PIL import Image

    from .index import MatryoshkaIndex

    if bool(args.query) == bool(args.query_image):
        raise ValueError("give text queries (--query) or image queries (--query-image), one kind and at least one.")
    index = MatryoshkaIndex.load(args.index)
    model = _load_model(args.model)
    if _is_text(model) != bool(args.query):
        kind = "text" if _is_text(model) else "image"
        raise ValueError(f"`--model` {args.model!r} is a {kind} model; give {kind} queries.")
    collate_fn = _collator(model, args.processor, args.model, label_column=None)
    rows = [{"text": text} for text in args.query] or [{"image": Image.open(path)} for path in args.query_image]
    with torch.no_grad():
        queries = model(**{key: value for key, value in collate_fn(rows).items()}).embeddings
    scores, ids = index.search(
        queries, args.k, shortlist_dim=args.shortlist_dim, shortlist_size=args.shortlist_size, rerank_dim=args.rerank_dim
    )
    corpus = _load_split(args, args.split) if args.dataset is not None else None
    shown = "text" if corpus is not None and "text" in corpus.column_names else None
    for query, row_scores, row_ids in zip(args.query or map(str, args.query_image), scores, ids):
        hits = [{"id": int(i), "score": round(float(s), 6)} for s, i in zip(row_scores, row_ids) if i >= 0]
        if corpus is not None:
            for hit in hits:
                hit["label"] = corpus[hit["id"]].get("label")
                if shown:
                    hit["text"] = corpus[hit["id"]][shown]
        print(json.dumps({"query": query, "results": hits}))
    return 0


def _run_export(args, extra) -> int:
    from .evaluation import load_results
    from .hub import export_sentence_transformer

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
