#!/usr/bin/env python
"""Tunes the relative loss weights of the nesting dims (`matryoshka_weights`) and reports their per-dim Pareto front
against fixed-feature (FF) models: trains MRL with the presets (uniform, the paper's 8-d x2, 8-d x2 + 16-d x1.5),
FF at each dim, and a cheap search (seeded random weightings trained with a fraction of the budget, scored on the
validation split; the best of its validation Pareto front retrained with the full budget).

    python scripts/tune_weights.py                                    # Fashion-MNIST, the analyses' small ViT
    python scripts/tune_weights.py --write_config runs/mine/model     # also set the chosen weighting in a config
    python scripts/tune_weights.py --dims 8 16 32 64 128 -- --dataset_name fashion-mnist --train_split 'train[:90%]' \
        --eval_split 'train[90%:]' --backbone vit --hidden_size 128 --num_train_epochs 3   # any train_supervised.py run

Arguments after `--` are `scripts/train_supervised.py`'s (data, model, budget; no heads, no output dir) and must give
a validation split apart from the test split. Writes `weights.md`, `weights.json` and `weights.png` to
`--output_dir`; runs go to `--runs_dir` (finished runs are reused).
"""

import argparse
import os
import sys
from pathlib import Path

from hf_mrl.analyses.runs import FMNIST_DIMS, fmnist_arguments
from hf_mrl.analyses.studies import weights_study
from hf_mrl.analyses.weights import DEFAULT_PRESETS, tune_matryoshka_weights, validation_split, write_weights_to_config
from hf_mrl.training.launch import run_script

REPO = Path(__file__).resolve().parents[1]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dims", type=int, nargs="+", default=FMNIST_DIMS, help="nesting dims of every MRL run")
    parser.add_argument("--presets", nargs="+", default=list(DEFAULT_PRESETS))
    parser.add_argument("--ff_dims", type=int, nargs="*", default=None, help="FF models to train (default: every dim)")
    parser.add_argument("--num_search", type=int, default=4, help="random weightings tried with the short budget")
    parser.add_argument("--num_proposed", type=int, default=2, help="of those, how many get the full budget")
    parser.add_argument("--search_fraction", type=float, default=0.25, help="the search's share of the full budget")
    parser.add_argument("--seed", type=int, default=0, help="seeds the search's proposals")
    parser.add_argument("--noise_seeds", type=int, nargs="*", default=[1],
                        help="training seeds of extra uniform runs, to measure the noise between runs (none: skip)")
    parser.add_argument("--runs_dir", type=Path,
                        default=Path(os.environ.get("HF_MRL_RUNS_DIR", "runs")) / "analyses" / "fmnist")
    parser.add_argument("--output_dir", type=Path, default=REPO / "results" / "analyses" / "weights" / "fmnist")
    parser.add_argument("--write_config", default=None, help="a Matryoshka config.json (or its folder) to set the chosen weighting in")
    parser.add_argument("train_arguments", nargs="*", help="train_supervised.py arguments, after `--`")
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    base = args.train_arguments or fmnist_arguments()
    validation = validation_split(base)  # checked before any training
    report = tune_matryoshka_weights(
        base, args.dims, args.runs_dir, validation, presets=args.presets, ff_dims=args.ff_dims or None,
        num_search=args.num_search, num_proposed=args.num_proposed, search_fraction=args.search_fraction, seed=args.seed,
        noise_seeds=args.noise_seeds,
    )
    print(weights_study(args.output_dir, report, "loss weights")["markdown"], flush=True)
    if args.write_config:
        weights = write_weights_to_config(args.write_config, report["weightings"][report["chosen"]]["weights"])
        print(f"wrote matryoshka_weights={weights} ({report['chosen']}) into {args.write_config}", flush=True)
    return report


if __name__ == "__main__":
    sys.exit(run_script(main, prog="tune_weights.py"))
