#!/usr/bin/env python
"""Supervised Matryoshka training of a ViT or BERT classifier with Accelerate: MRL heads (one per nesting
dim), MRL-E heads (one shared matrix) or a fixed-feature (FF) baseline trained at one dim.

The same command runs on a CPU, one GPU or several; `accelerate launch` picks the processes:

    # Fashion-MNIST, a small ViT from scratch, MRL heads at 8..128
    python scripts/train_supervised.py --dataset fashion-mnist --backbone vit --hidden_size 128 --num_layers 4 \
        --patch_size 7 --heads mrl --matryoshka_dims 8 16 32 64 128 --num_epochs 5 --output_dir runs/fmnist-mrl

    # the fixed-feature baseline at 16 dims, same budget
    python scripts/train_supervised.py ... --heads ff --ff_dim 16 --output_dir runs/fmnist-ff16

    # WordNet noun categories, fine-tuning a pretrained text encoder (a Hub id or a local folder)
    python scripts/train_supervised.py --dataset wordnet-nouns --model_name_or_path sentence-transformers/all-MiniLM-L6-v2 \
        --heads mrl --num_epochs 1 --limit_train 10000 --learning_rate 5e-5 --output_dir runs/wordnet-mrl

    # any classification dataset: a Hub id or a local folder / file, with its column names
    python scripts/train_supervised.py --dataset imdb --text_column text --label_column label ...

    # two processes (two GPUs, or two CPU processes over gloo on a machine without GPUs), mixed precision,
    # resumable every 200 steps
    accelerate launch --multi_gpu --num_processes 2 scripts/train_supervised.py ... --mixed_precision bf16 \
        --checkpointing_steps 200 --keep_last 2
    # after a crash or preemption, continue exactly where it stopped
    accelerate launch ... scripts/train_supervised.py ... --resume_from_checkpoint latest

Writes to --output_dir: `checkpoint-<step>/` (resumable states, the newest --keep_last kept), `model/` (the final
model with its image processor or tokenizer, a model card README.md with the per-dim results and the
accuracy-vs-dim plot), `results.json` (final per-dim metrics, per-epoch history, timings) and, with
--report_to tensorboard, the tensorboard logs.

Metrics: top-1 accuracy of the nested head at each nesting dim (`top1`), and 1-NN accuracy of the truncated,
renormalised embeddings at each dim (`1nn`): leave-one-out within the eval split after each epoch, and with the
training split as the database at the end (as in the MRL paper).
"""

from __future__ import annotations

import argparse
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import torch
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.utils import set_seed
from torch.utils.data import DataLoader
from transformers import AutoConfig, AutoTokenizer, ViTImageProcessorPil, get_scheduler

import hf_mrl  # noqa: F401  (registers the Auto classes)
from hf_mrl.data import ImageCollator, TextCollator, load_classification_dataset, load_fashion_mnist, load_wordnet_nouns
from hf_mrl.evaluation import MatryoshkaClassificationEvaluator, save_results
from hf_mrl.hub import save_with_card
from hf_mrl.nesting import default_matryoshka_dims
from hf_mrl.training import (
    BACKBONE_KINDS,
    HEAD_KINDS,
    PerDimLossMeter,
    build_classifier,
    head_settings,
    is_vision_config,
    load_checkpoint,
    parse_checkpointing_steps,
    prefixed,
    progress_bar,
    resolve_resume_checkpoint,
    results_table,
    save_checkpoint,
    scratch_backbone_config,
    use_cpu,
    validate_keep_last,
)

BUILTIN_DATASETS = ("fashion-mnist", "wordnet-nouns")
# Seconds to sleep after each checkpoint: lets the tests kill a run right after a save.
PAUSE_AFTER_CHECKPOINT_ENV = "HF_MRL_PAUSE_AFTER_CHECKPOINT"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    data = parser.add_argument_group("data")
    data.add_argument("--dataset", required=True, help="fashion-mnist, wordnet-nouns, a Hub dataset id or a local path")
    data.add_argument("--text_column", default=None, help="text column of a Hub/local dataset")
    data.add_argument("--image_column", default=None, help="image column of a Hub/local dataset")
    data.add_argument("--label_column", default=None, help="label column of a Hub/local dataset (default: label)")
    data.add_argument("--train_split", default="train")
    data.add_argument("--eval_split", default="test")
    data.add_argument("--streaming", action="store_true", help="stream the training split (needs --max_steps)")
    data.add_argument("--shuffle_buffer", type=int, default=10_000, help="shuffle buffer of a streamed split")
    data.add_argument("--limit_train", type=int, default=None, help="use the first N training rows")
    data.add_argument("--limit_eval", type=int, default=None, help="use the first N eval rows")
    data.add_argument("--limit_knn_reference", type=int, default=None, help="1-NN database: first N training rows")
    data.add_argument("--max_length", type=int, default=128, help="tokens per text")

    model = parser.add_argument_group("model")
    model.add_argument("--model_name_or_path", default=None, help="pretrained encoder (Hub id or folder)")
    model.add_argument("--backbone", choices=BACKBONE_KINDS, default=None, help="encoder built from scratch")
    model.add_argument("--tokenizer_name", default=None, help="tokenizer of a BERT from scratch")
    model.add_argument("--hidden_size", type=int, default=128)
    model.add_argument("--num_layers", type=int, default=4)
    model.add_argument("--num_attention_heads", type=int, default=4)
    model.add_argument("--intermediate_size", type=int, default=None, help="default: 4 x hidden_size")
    model.add_argument("--patch_size", type=int, default=7)
    model.add_argument("--image_size", type=int, default=28)
    model.add_argument("--num_channels", type=int, default=1)
    model.add_argument("--dropout", type=float, default=0.0)
    model.add_argument("--heads", choices=HEAD_KINDS, default="mrl")
    model.add_argument("--embedding_dim", type=int, default=None, help="default: the backbone's hidden size")
    model.add_argument("--matryoshka_dims", type=int, nargs="+", default=None, help="default: 8, 16, ... full")
    model.add_argument("--matryoshka_weights", type=float, nargs="+", default=None)
    model.add_argument(
        "--use_projection", action="store_true", default=None,
        help="a linear projection after pooling even at the hidden size (always there when --embedding_dim differs)",
    )
    model.add_argument("--ff_dim", type=int, default=None, help="the one dim of --heads ff (default: full)")
    model.add_argument("--num_labels", type=int, default=None, help="default: read from the dataset")

    training = parser.add_argument_group("training")
    training.add_argument("--batch_size", type=int, default=128, help="per process")
    training.add_argument("--eval_batch_size", type=int, default=256)
    training.add_argument("--gradient_accumulation_steps", type=int, default=1)
    training.add_argument("--num_epochs", type=int, default=1)
    training.add_argument("--max_steps", type=int, default=None, help="optimizer steps; overrides --num_epochs")
    training.add_argument("--learning_rate", type=float, default=1e-3)
    training.add_argument(
        "--head_learning_rate", type=float, default=None,
        help="learning rate of the new layers on the encoder (projection, heads); default: --learning_rate",
    )
    training.add_argument("--weight_decay", type=float, default=0.05)
    training.add_argument("--lr_scheduler_type", default="cosine", choices=("cosine", "linear", "constant_with_warmup"))
    training.add_argument("--warmup_ratio", type=float, default=0.05)
    training.add_argument("--max_grad_norm", type=float, default=1.0)
    training.add_argument("--mixed_precision", choices=("no", "bf16", "fp16"), default="no")
    training.add_argument("--cpu", action="store_true", help="train on the CPU even when a GPU is there")
    training.add_argument("--seed", type=int, default=0)
    training.add_argument("--no_epoch_eval", action="store_true", help="evaluate only at the end")

    output = parser.add_argument_group("output")
    output.add_argument("--output_dir", required=True)
    output.add_argument("--checkpointing_steps", default=None, help="N (optimizer steps), 'epoch' or 'no'")
    output.add_argument("--keep_last", type=int, default=None, help="checkpoints to keep (default: all)")
    output.add_argument("--resume_from_checkpoint", default=None, help="a checkpoint folder or 'latest'")
    output.add_argument("--report_to", choices=("tensorboard", "none"), default="none")
    output.add_argument("--logging_steps", type=int, default=50)
    output.add_argument("--eval_name", default=None, help="prefix of the metric keys (default: the dataset name)")
    return parser


def _check_positive(args, names, allow_none=False) -> None:
    for name in names:
        value = getattr(args, name)
        if value is None and allow_none:
            continue
        if value is None or value <= 0:
            raise ValueError(f"`--{name}` must be a positive number, got {value!r}.")


def validate_args(args) -> argparse.Namespace:
    """Checks every argument before any data is loaded or model built; fills in `args.embedding_dim`,
    `args.checkpointing_steps` and `args.eval_name`. Raises `ValueError` naming the argument."""
    _check_positive(args, ["batch_size", "eval_batch_size", "gradient_accumulation_steps", "num_epochs", "logging_steps"])
    _check_positive(args, ["learning_rate", "max_length", "shuffle_buffer"])
    _check_positive(
        args, ["max_steps", "limit_train", "limit_eval", "limit_knn_reference", "num_labels", "head_learning_rate"],
        allow_none=True,
    )
    if args.weight_decay < 0 or not 0 <= args.warmup_ratio < 1 or args.max_grad_norm < 0:
        raise ValueError(
            f"`--weight_decay` and `--max_grad_norm` must be >= 0 and `--warmup_ratio` in [0, 1), got "
            f"{args.weight_decay}, {args.max_grad_norm}, {args.warmup_ratio}."
        )
    args.checkpointing_steps = parse_checkpointing_steps(args.checkpointing_steps)
    validate_keep_last(args.keep_last, "--keep_last")
    if args.streaming and args.max_steps is None:
        raise ValueError("`--streaming` needs `--max_steps` (a stream's length is unknown).")

    builtin = args.dataset in BUILTIN_DATASETS
    columns = {"--text_column": args.text_column, "--image_column": args.image_column, "--label_column": args.label_column}
    if builtin and any(value is not None for value in columns.values()):
        given = [name for name, value in columns.items() if value is not None]
        raise ValueError(f"{given} apply to Hub/local datasets; {args.dataset!r} has fixed columns.")
    looks_like_path = args.dataset.startswith((".", "/", "~")) or args.dataset.count("/") > 1 or bool(Path(args.dataset).suffix)
    if not builtin and looks_like_path and not Path(args.dataset).expanduser().exists():
        raise ValueError(
            f"`--dataset` {args.dataset!r} is neither one of {list(BUILTIN_DATASETS)} nor an existing path "
            "(nor a Hub id such as 'org/name')."
        )

    if (args.backbone is None) == (args.model_name_or_path is None):
        raise ValueError("Give exactly one of `--backbone` (vit/bert from scratch) and `--model_name_or_path`.")
    if args.model_name_or_path is not None:
        path = Path(args.model_name_or_path).expanduser()
        if args.model_name_or_path.startswith((".", "/", "~")) and not path.is_dir():
            raise ValueError(f"`--model_name_or_path` {args.model_name_or_path!r} is not a folder.")
        backbone_config = AutoConfig.from_pretrained(args.model_name_or_path)
        hidden_size, vision = backbone_config.hidden_size, is_vision_config(backbone_config)
    else:
        if args.backbone == "bert" and args.tokenizer_name is None:
            raise ValueError("`--backbone bert` from scratch needs `--tokenizer_name` (its vocabulary).")
        scratch_backbone_config(  # checks sizes (hidden vs heads, image vs patch) up front
            args.backbone, args.hidden_size, args.num_layers, args.num_attention_heads, args.intermediate_size,
            args.dropout, args.image_size, args.patch_size, args.num_channels, vocab_size=1,
        )
        hidden_size, vision = args.hidden_size, args.backbone == "vit"
    args.modality = "image" if vision else "text"
    expected = {"fashion-mnist": "image", "wordnet-nouns": "text"}.get(args.dataset)
    if expected is not None and expected != args.modality:
        raise ValueError(
            f"`--dataset {args.dataset}` holds {expected}s but the model is a "
            f"{'vision' if vision else 'text'} encoder."
        )
    args.embedding_dim = args.embedding_dim or hidden_size
    head_settings(args.heads, args.embedding_dim, args.matryoshka_dims, args.ff_dim)
    dataset_path = Path(args.dataset.rstrip("/")).expanduser()
    default_name = dataset_path.stem if dataset_path.is_file() else dataset_path.name
    args.eval_name = (args.eval_name or default_name).replace("_dim", "-dim")
    return args


def parse_args(argv=None) -> argparse.Namespace:
    return validate_args(build_parser().parse_args(argv))


@dataclass
class SupervisedData:
    train_dataloader: DataLoader
    train_dataset: datasets.Dataset | datasets.IterableDataset
    eval_dataset: datasets.Dataset
    collator: ImageCollator | TextCollator
    processor: object
    num_labels: int


def _pick_split(dataset, split: str, argument: str):
    if isinstance(dataset, (datasets.DatasetDict, datasets.IterableDatasetDict)):
        if split not in dataset:
            raise ValueError(f"`{argument}` {split!r} is not a split of the dataset; available: {sorted(dataset)}.")
        return dataset[split]
    return dataset


def load_splits(args):
    """(train, eval) splits with `image` or `text` and `label` columns. Every split of a Hub/local dataset is
    loaded together so that string labels get one class numbering; a streamed training split gets its string
    labels numbered like the eval split's."""
    if args.dataset == "fashion-mnist":
        train, evaluation = load_fashion_mnist("train", limit=args.limit_train), load_fashion_mnist("test", limit=args.limit_eval)
    elif args.dataset == "wordnet-nouns":
        train = load_wordnet_nouns("train", limit=args.limit_train)
        evaluation = load_wordnet_nouns(args.eval_split, limit=args.limit_eval)
    else:
        columns = dict(text_column=args.text_column, image_column=args.image_column, label_column=args.label_column or "label")
        everything = load_classification_dataset(args.dataset, **columns)
        train = _pick_split(everything, args.train_split, "--train_split")
        evaluation = _pick_split(everything, args.eval_split, "--eval_split")
        if args.limit_train is not None:
            train = train.select(range(min(args.limit_train, len(train))))
        if args.limit_eval is not None:
            evaluation = evaluation.select(range(min(args.limit_eval, len(evaluation))))
        if args.streaming:
            stream = _pick_split(load_classification_dataset(args.dataset, streaming=True, **columns), args.train_split, "--train_split")
            stream = stream.take(args.limit_train) if args.limit_train is not None else stream
            return _number_stream_labels(stream, evaluation.features["label"]), evaluation
    return (train.to_iterable_dataset() if args.streaming else train), evaluation


def _number_stream_labels(stream: datasets.IterableDataset, feature) -> datasets.IterableDataset:
    if not isinstance(feature, datasets.ClassLabel):
        return stream
    return stream.map(lambda row: {"label": feature.str2int(row["label"]) if isinstance(row["label"], str) else row["label"]})


def sorted_by_length(dataset: datasets.Dataset) -> datasets.Dataset:
    """Texts shortest first: evaluation batches then pad little (the metrics do not depend on row order)."""
    return dataset.select(np.argsort([len(text) for text in dataset["text"]], kind="stable"))


def _num_labels(args, *splits) -> int:
    if args.num_labels is not None:
        return args.num_labels
    for split in splits:
        feature = (split.features or {}).get("label")
        if isinstance(feature, datasets.ClassLabel):
            return feature.num_classes
    return int(max(splits[-1]["label"])) + 1  # the eval split is always map-style


def get_dataloaders(accelerator, args) -> SupervisedData:
    """Loads the splits (main process first, so caches are built once), the collator that turns rows into
    model inputs, and the training DataLoader (shuffled per epoch with `--seed`)."""
    with accelerator.main_process_first():
        train_dataset, eval_dataset = load_splits(args)
    if args.modality not in eval_dataset.column_names:
        raise ValueError(
            f"The model needs an `{args.modality}` column but {args.dataset!r} has {eval_dataset.column_names}; "
            f"pass `--{args.modality}_column`."
        )
    if args.modality == "image":
        config = AutoConfig.from_pretrained(args.model_name_or_path) if args.model_name_or_path else args
        size, channels = config.image_size, config.num_channels
        collator = ImageCollator(image_size=size, num_channels=channels, mean=0.5, std=0.5)
        # The same preprocessing as a processor people load with the model: resize, [0, 1], (x - 0.5) / 0.5.
        processor = ViTImageProcessorPil(
            size={"height": size, "width": size}, image_mean=[0.5] * channels, image_std=[0.5] * channels
        )
    else:
        eval_dataset = sorted_by_length(eval_dataset)
        processor = AutoTokenizer.from_pretrained(args.tokenizer_name or args.model_name_or_path)
        collator = TextCollator(processor, max_length=args.max_length)
    # An own generator keeps the global RNG (dropout) untouched by the loader, so a resumed run draws the same.
    generator = torch.Generator().manual_seed(args.seed)
    if isinstance(train_dataset, datasets.IterableDataset):
        train_dataset = train_dataset.shuffle(seed=args.seed, buffer_size=args.shuffle_buffer)
        train_dataloader = DataLoader(train_dataset, batch_size=args.batch_size, collate_fn=collator)
    else:
        train_dataloader = DataLoader(
            train_dataset, batch_size=args.batch_size, shuffle=True, collate_fn=collator, generator=generator
        )
    return SupervisedData(
        train_dataloader, train_dataset, eval_dataset, collator, processor, _num_labels(args, train_dataset, eval_dataset)
    )


def build_model(args, num_labels: int, vocab_size: int | None):
    """The pretrained encoder at --model_name_or_path, or one built from the size arguments (random weights)."""
    backbone_config = None
    if args.model_name_or_path is None:
        backbone_config = scratch_backbone_config(
            args.backbone, args.hidden_size, args.num_layers, args.num_attention_heads, args.intermediate_size,
            args.dropout, args.image_size, args.patch_size, args.num_channels, vocab_size=vocab_size,
        )
    return build_classifier(
        num_labels, args.heads, backbone_config=backbone_config, model_name_or_path=args.model_name_or_path,
        embedding_dim=args.embedding_dim, matryoshka_dims=args.matryoshka_dims, ff_dim=args.ff_dim,
        matryoshka_weights=args.matryoshka_weights, use_projection=args.use_projection,
    )


def build_optimizer(model, args) -> torch.optim.Optimizer:
    """AdamW; no weight decay on biases, norms, position embeddings and the CLS token. The layers added on the
    encoder (projection, heads) learn at `--head_learning_rate`: a pretrained encoder fine-tunes at a small
    rate that would leave freshly initialised heads undertrained in a short run."""
    head_rate = args.head_learning_rate or args.learning_rate
    groups: dict[tuple[float, float], list] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        plain = parameter.ndim < 2 or "position_embeddings" in name or "cls_token" in name
        added = name.startswith(("heads.", "matryoshka.projection."))
        key = (head_rate if added else args.learning_rate, 0.0 if plain else args.weight_decay)
        groups.setdefault(key, []).append(parameter)
    return torch.optim.AdamW(
        [{"params": params, "lr": lr, "weight_decay": decay} for (lr, decay), params in sorted(groups.items())],
        lr=args.learning_rate,
    )


def evaluation_dims(model) -> list[int]:
    """Nesting dims for MRL models; for an FF model every power-of-two truncation of its one embedding."""
    config = model.config
    if len(config.matryoshka_dims) == 1:
        return default_matryoshka_dims(config.embedding_dim)
    return list(config.matryoshka_dims)


def training_function(args) -> dict:
    accelerator = Accelerator(
        cpu=use_cpu(args.cpu),
        mixed_precision=args.mixed_precision,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        log_with=None if args.report_to == "none" else args.report_to,
        project_dir=args.output_dir,
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=args.seed),
        step_scheduler_with_optimizer=False,
    )
    set_seed(args.seed)
    data = get_dataloaders(accelerator, args)
    vocab_size = len(data.processor) if args.backbone == "bert" else None
    model = build_model(args, data.num_labels, vocab_size)
    dims = list(model.config.matryoshka_dims)
    optimizer = build_optimizer(model, args)

    batches_per_epoch = None if args.streaming else len(data.train_dataloader)
    if batches_per_epoch is not None:
        per_process = math.ceil(batches_per_epoch / accelerator.num_processes)
        steps_per_epoch = math.ceil(per_process / args.gradient_accumulation_steps)
    else:
        steps_per_epoch = None
    total_steps = args.max_steps or steps_per_epoch * args.num_epochs
    num_epochs = args.num_epochs if args.max_steps is None or steps_per_epoch is None else math.ceil(total_steps / steps_per_epoch)
    if steps_per_epoch is None:
        num_epochs = None  # a stream: epochs until `total_steps`
    scheduler = get_scheduler(
        args.lr_scheduler_type, optimizer, num_warmup_steps=int(args.warmup_ratio * total_steps),
        num_training_steps=total_steps,
    )
    model, optimizer, train_dataloader, scheduler = accelerator.prepare(
        model, optimizer, data.train_dataloader, scheduler
    )
    if accelerator.is_main_process and args.report_to != "none":
        config = {key: value for key, value in vars(args).items() if isinstance(value, (int, float, str, bool))}
        accelerator.init_trackers("train_supervised", config=config)

    state = {"step": 0, "epoch": 0, "batches_in_epoch": 0, "history": [], "train_seconds": 0.0}
    checkpoint = resolve_resume_checkpoint(args.output_dir, args.resume_from_checkpoint)
    if checkpoint is not None:
        state.update(load_checkpoint(accelerator, checkpoint))
        accelerator.print(f"Resumed from {checkpoint} at step {state['step']} (epoch {state['epoch']}).")
    resume_epoch, resume_batches = state["epoch"], state["batches_in_epoch"]

    unwrapped = accelerator.unwrap_model(model)
    eval_dims = evaluation_dims(unwrapped)
    epoch_evaluator = MatryoshkaClassificationEvaluator(
        data.eval_dataset, collate_fn=data.collator, dims=eval_dims, top_k=(1,), knn_k=(1,),
        name=args.eval_name, batch_size=args.eval_batch_size,
    )
    pause = float(os.environ.get(PAUSE_AFTER_CHECKPOINT_ENV, 0))
    meter = PerDimLossMeter(dims)
    bar = progress_bar(accelerator, total_steps, initial=state["step"])
    segment_start = time.perf_counter()

    def checkpoint_now(epoch: int, batches_in_epoch: int) -> None:
        state.update(epoch=epoch, batches_in_epoch=batches_in_epoch)
        state["train_seconds"] += time.perf_counter() - segment_start
        save_checkpoint(accelerator, args.output_dir, state["step"], keep_last=args.keep_last, trainer_state=state)
        if pause:
            time.sleep(pause)

    epoch = resume_epoch
    while state["step"] < total_steps and (num_epochs is None or epoch < num_epochs):
        model.train()
        train_dataloader.set_epoch(epoch)  # the shuffle order of epoch e depends on (seed, e) only
        skip = resume_batches if epoch == resume_epoch else 0
        loader = accelerator.skip_first_batches(train_dataloader, skip) if skip else train_dataloader
        batches_in_epoch = skip
        for batch in loader:
            with accelerator.accumulate(model):
                outputs = model(**batch)
                accelerator.backward(outputs.loss)
                if accelerator.sync_gradients and args.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad()
            batches_in_epoch += 1
            meter.update(outputs.loss, outputs.matryoshka_losses)
            if not accelerator.sync_gradients:
                continue
            scheduler.step()
            state["step"] += 1
            bar.update(1)
            if state["step"] % args.logging_steps == 0 or state["step"] == total_steps:
                logs = meter.logs(accelerator)
                bar.set_postfix(loss=f"{logs['train/loss']:.3f}", refresh=False)
                accelerator.log({**logs, "train/lr": scheduler.get_last_lr()[0]}, step=state["step"])
            if isinstance(args.checkpointing_steps, int) and state["step"] % args.checkpointing_steps == 0:
                checkpoint_now(epoch, batches_in_epoch)
                segment_start = time.perf_counter()
            if state["step"] >= total_steps:
                break
        epoch += 1
        state["train_seconds"] += time.perf_counter() - segment_start
        evaluated = any(entry["epoch"] == epoch for entry in state["history"])
        if not args.no_epoch_eval and state["step"] < total_steps and not evaluated:
            epoch_results = evaluate_epoch(accelerator, epoch_evaluator, unwrapped, args)
            state["history"].append({"epoch": epoch, "step": state["step"], **epoch_results})
        segment_start = time.perf_counter()
        if args.checkpointing_steps == "epoch":
            checkpoint_now(epoch, 0)
            segment_start = time.perf_counter()
    bar.close()

    accelerator.wait_for_everyone()
    summary = {}
    if accelerator.is_main_process:
        summary = finish(args, data, unwrapped, eval_dims, state)
    accelerator.end_training()
    return summary


def evaluate_epoch(accelerator, evaluator, model, args) -> dict:
    """Heads' top-1 and leave-one-out 1-NN on the eval split, on the main process (the others wait)."""
    accelerator.wait_for_everyone()
    results = {}
    if accelerator.is_main_process:
        results = evaluator(model)
        accelerator.print(f"(leave-one-out 1-NN on {args.eval_split}):\n" + results_table(results))
        accelerator.log(prefixed(results, "eval"), step=None)
    accelerator.wait_for_everyone()
    return results


def finish(args, data: SupervisedData, model, eval_dims: list[int], state: dict) -> dict:
    """Final evaluation (1-NN against the training split), then the model folder, its card and results.json."""
    reference = None
    if isinstance(data.train_dataset, datasets.Dataset):
        reference = data.train_dataset
        if args.limit_knn_reference is not None:
            reference = reference.select(range(min(args.limit_knn_reference, len(reference))))
        if "text" in reference.column_names:
            reference = sorted_by_length(reference)
    evaluator = MatryoshkaClassificationEvaluator(
        data.eval_dataset, reference_dataset=reference, collate_fn=data.collator, dims=eval_dims, top_k=(1,),
        knn_k=(1,), name=args.eval_name, batch_size=args.eval_batch_size,
    )
    started = time.perf_counter()
    final = evaluator(model)
    eval_seconds = time.perf_counter() - started
    knn_database = f"{args.train_split} split" if reference is not None else f"{args.eval_split} split, leave-one-out"
    print(f"final results ({args.eval_split}; 1-NN database: {knn_database}):\n" + results_table(final), flush=True)
    output_dir = Path(args.output_dir)
    description = (
        f"Trained with `scripts/train_supervised.py` on `{args.dataset}` ({args.heads} heads, "
        f"{state['step']} steps). Metrics on the {args.eval_split} split: top-1 of the nested head at each dim, "
        f"1-NN of the truncated embeddings ({knn_database})."
    )
    save_with_card(
        model, output_dir / "model", results=final, processor=data.processor, description=description,
        metrics=["top1", "1nn"],
    )
    summary = {
        "config": {key: value for key, value in vars(args).items() if not key.startswith("_")},
        "model": {
            "heads": args.heads,
            "embedding_dim": model.config.embedding_dim,
            "matryoshka_dims": list(model.config.matryoshka_dims),
            "num_parameters": sum(parameter.numel() for parameter in model.parameters()),
        },
        "steps": state["step"],
        "train_seconds": round(state["train_seconds"], 2),
        "seconds_per_step": round(state["train_seconds"] / max(state["step"], 1), 4),
        "eval_seconds": round(eval_seconds, 2),
        "knn_database": knn_database,
        "final": final,
        "history": state["history"],
    }
    save_results(summary, output_dir / "results.json")
    return summary


def main(argv=None) -> dict:
    return training_function(parse_args(argv))


if __name__ == "__main__":
    main()
