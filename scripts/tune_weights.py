#!/usr/bin/env python
"""Tunes the relative loss weights of the nesting dims (`matryoshka_weights`) and reports their per-dim Pareto front
against fixed-feature (FF) models: trains MRL with the presets (uniform, the paper's 8-d x2, 8-d x2 + 16-d x1.5),
FF at each dim, and a cheap search (seeded random weightings trained with a fraction of the budget, scored on the
validation split; the best of its validation Pareto front retrained with the full budget).

    python scripts/tune_weights.py                                    # Fashion-MNIST, the analyses' small ViT
    python scripts/tune_weights.py --write_config runs/mine/model     # also set the chosen weighting in a config
    python scripts/tune_weights.py --dims 8 16 32 64 128 -- --dataset_name fashion-mnist --train_split 'train[:90%]' \
        --eval_split 'train[90%:]' --backbone vit --hidden_size 128 --num_train_epochs 3   # any train_supervised.py run

Arguments after `--` are `scripts/train_supervised.py`'s (data, model, budget; no heads, no output dir: refused) and
must give a validation split apart from the test split. Every argument and every run's arguments are checked before
the first training run. Writes `weights.md`, `weights.json` and `weights.png` to `--output_dir` (default:
`./tune_weights_output`, which must be new or empty; files of yours there are never replaced); runs go to
`--runs_dir` (finished runs are reused when their settings are this study's; one of another study is refused).
"""

import argparse
import os
import sys
from pathlib import Path

from hf_mrl.modeling.files import check_output_folder
from hf_mrl.output_folder import check_default_output_folder, check_output_names, record_outputs
from hf_mrl.recipes.analyses.runs import FMNIST_DIMS, fmnist_arguments
from hf_mrl.recipes.analyses.studies import WEIGHTS_STUDY_FILES, weights_study
from hf_mrl.recipes.analyses.weights import (
    DEFAULT_PRESETS,
    check_weights_config,
    tune_matryoshka_weights,
    write_weights_to_config,
)
from hf_mrl.training.launch import run_script

DEFAULT_OUTPUT_DIR = Path("tune_weights_output")


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
    parser.add_argument("--output_dir", type=Path, default=None,
                        help=f"where the table and plot go (default: ./{DEFAULT_OUTPUT_DIR}, new or empty)")
    parser.add_argument("--write_config", default=None, help="a Matryoshka config.json (or its folder) to set the chosen weighting in")
    parser.add_argument("train_arguments", nargs="*", help="train_supervised.py arguments, after `--`")
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    base = args.train_arguments or fmnist_arguments()
    if args.output_dir is None:
        output_dir = check_default_output_folder(DEFAULT_OUTPUT_DIR, "tune_weights.py's default output folder",
                                                 f"`--output_dir {DEFAULT_OUTPUT_DIR}` to write into it anyway (an earlier study's "
                                                 "table is replaced; files of yours there are not)")
    else:
        output_dir = check_output_names(args.output_dir, WEIGHTS_STUDY_FILES)
    check_output_folder(args.runs_dir, "--runs_dir")
    if args.write_config:
        check_weights_config(args.write_config, args.dims)
    report = tune_matryoshka_weights(  # checks every run's arguments before the first training run
        base, args.dims, args.runs_dir, presets=args.presets, ff_dims=args.ff_dims or None,
        num_search=args.num_search, num_proposed=args.num_proposed, search_fraction=args.search_fraction, seed=args.seed,
        noise_seeds=args.noise_seeds,
    )
    check_output_names(output_dir, WEIGHTS_STUDY_FILES)  # again: a file of yours may have appeared meanwhile
    print(weights_study(output_dir, report, "loss weights")["markdown"], flush=True)
    record_outputs(output_dir, WEIGHTS_STUDY_FILES)
    if args.write_config:
        weights = write_weights_to_config(args.write_config, report["weightings"][report["chosen"]]["weights"])
        print(f"wrote matryoshka_weights={weights} ({report['chosen']}) into {args.write_config}", flush=True)
    return report


if __name__ == "__main__":
    sys.exit(run_script(main, prog="tune_weights.py"))
