#!/usr/bin/env python
"""Reruns the MRL paper's analyses on this project's own models and writes their tables (markdown + JSON) and plots
to `results/analyses/<analysis>/<dataset>/`:

    python scripts/run_analyses.py                                    # every analysis, images then text
    python scripts/run_analyses.py --image_analyses shift routing --text_analyses   # some, images only
    python scripts/run_analyses.py --runs_dir /data/runs --image_epochs 5           # elsewhere, a larger budget

- shift (Fashion-MNIST): MRL vs FF top-1, 1-NN and mAP@10 under noise, blur, contrast and rotation;
- few_shot: n-shot accuracy, on Fashion-MNIST with two classes held out of training, and on WordNet;
- long_tail: per-class accuracy by training frequency, super-class errors, confusions (a long-tailed Fashion-MNIST
  subset, trained for as many steps as the other runs; a WordNet sample, whose categories are long-tailed, with
  hypernym super-classes);
- routing: the confidence cascade vs disagreement routing vs both, at equal expected dims;
- weights (Fashion-MNIST): the loss-weight presets and a small search, against FF (`scripts/tune_weights.py`).

Every model is trained here through `run_supervised` (the recipe of `scripts/train_supervised.py`) into
`--runs_dir`; finished runs are reused and killed ones resume, so rerunning continues where it stopped. Budgets are
small (a 2-core CPU): a ViT of hidden size 64 for 2 epochs per Fashion-MNIST run (about 2 minutes), all-MiniLM-L6-v2
on 4,000 WordNet definitions for 2 epochs (about 3 minutes). Set OMP_NUM_THREADS to the cores you can spare.
"""

import argparse
import os
import sys
from pathlib import Path

from hf_mrl.data.corruptions import check_corruption
from hf_mrl.recipes.analyses import (
    IMAGE_ANALYSES,
    TEXT_ANALYSES,
    AnalysisSettings,
    run_image_analyses,
    run_text_analyses,
)
from hf_mrl.training.launch import run_script

REPO = Path(__file__).resolve().parents[1]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image_analyses", nargs="*", choices=IMAGE_ANALYSES, default=list(IMAGE_ANALYSES))
    parser.add_argument("--text_analyses", nargs="*", choices=TEXT_ANALYSES, default=list(TEXT_ANALYSES))
    parser.add_argument("--runs_dir", type=Path, default=Path(os.environ.get("HF_MRL_RUNS_DIR", "runs")) / "analyses",
                        help="where the training runs go (reused when finished); default runs/analyses")
    parser.add_argument("--results_dir", type=Path, default=REPO / "results" / "analyses")
    defaults = AnalysisSettings(runs_dir=Path(), results_dir=Path())
    parser.add_argument("--image_epochs", type=int, default=defaults.image_epochs)
    parser.add_argument("--image_hidden_size", type=int, default=defaults.image_hidden_size)
    parser.add_argument("--image_test_rows", type=int, default=defaults.image_test_rows,
                        help="test rows scored under shift and in few-shot episodes")
    parser.add_argument("--imbalance", type=float, default=defaults.imbalance,
                        help="largest / smallest class of the long-tailed Fashion-MNIST subset")
    parser.add_argument("--severities", type=int, nargs="+", default=list(defaults.severities))
    parser.add_argument("--text_train_samples", type=int, default=defaults.text_train_samples)
    parser.add_argument("--text_epochs", type=int, default=defaults.text_epochs)
    parser.add_argument("--text_ff_dims", type=int, nargs="+", default=None, help="FF dims trained on WordNet (default all)")
    parser.add_argument("--weight_search", type=int, default=defaults.weight_search,
                        help="random weightings tried with a quarter of the budget")
    parser.add_argument("--weight_proposed", type=int, default=defaults.weight_proposed,
                        help="of those, how many are retrained with the full budget")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    args = parser.parse_args(argv)
    for name in ("image_epochs", "image_hidden_size", "image_test_rows", "text_train_samples", "text_epochs"):
        if getattr(args, name) < 1:
            raise ValueError(f"`--{name}` must be a positive integer, got {getattr(args, name)}.")
    if not args.imbalance >= 1:
        raise ValueError(f"`--imbalance` must be a number >= 1, got {args.imbalance}.")
    for severity in args.severities:
        check_corruption("noise", severity)
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    settings = AnalysisSettings(
        runs_dir=args.runs_dir, results_dir=args.results_dir, image_epochs=args.image_epochs,
        image_hidden_size=args.image_hidden_size, image_test_rows=args.image_test_rows, imbalance=args.imbalance,
        severities=tuple(args.severities), text_train_samples=args.text_train_samples, text_epochs=args.text_epochs,
        text_ff_dims=tuple(args.text_ff_dims) if args.text_ff_dims else None, weight_search=args.weight_search,
        weight_proposed=args.weight_proposed, seed=args.seed,
    )
    done = {}
    if args.image_analyses:
        done["fmnist"] = run_image_analyses(settings, args.image_analyses)
    if args.text_analyses:
        done["wordnet"] = run_text_analyses(settings, args.text_analyses)
    for analyses in done.values():
        for output in analyses.values():
            print(f"wrote {output['folder']}", flush=True)
    return done


if __name__ == "__main__":
    sys.exit(run_script(main, prog="run_analyses.py"))
