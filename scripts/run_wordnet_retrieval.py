"""WordNet reverse-dictionary retrieval (definition -> word) at every embedding dim, for four models built
on all-MiniLM-L6-v2 and trained with the same budget (steps, batches, optimizer, schedule, seed):

- frozen: the pretrained model, truncated;
- plain:  contrastive training at the full dim only, truncated afterwards;
- mrl:    hf_mrl's Matryoshka contrastive loss over 8, 16, ..., 384;
- st-mrl: sentence-transformers' MatryoshkaLoss(MultipleNegativesRankingLoss) over the same dims;
- mrl-negatives: mrl with one hard negative per pair (`wordnet-triplets`: a word of a sister synset, e.g.
  "house" for the definition of "observatory");
- mrl-cached: mrl with batches 4x as large (`--cached_batch_factor`), encoded in cached mini-batches of
  `--batch_size` (GradCache): more in-batch negatives in the same memory, same number of steps.

Every run is `scripts/train_contrastive.py --task pairs` (query = definition, document = word,
one direction, temperature 0.05 as in MNRL's scale 20), split by synset, scored by recall@10 over the
distinct definitions of `--test_limit` held-out pairs. Runs go one after another; a finished run (its
results.json exists) is skipped and a killed one resumes from its latest checkpoint, so the script can be
started again at any time. Then writes a table (markdown + JSON) and a recall-vs-dim plot.

    python scripts/run_wordnet_retrieval.py --work_dir /tmp/wordnet --results_dir results/wordnet_retrieval
    python scripts/run_wordnet_retrieval.py --max_train_steps 20 --test_limit 500   # a quick look
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from hf_mrl.evaluation import load_results, markdown_table, plot_metric_vs_dim, save_results

RUNS = ("frozen", "mrl", "plain", "st-mrl", "mrl-negatives", "mrl-cached")
DEFAULT_RUNS = ("frozen", "mrl", "plain", "st-mrl")
METRIC = "recall@10"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work_dir", required=True, help="checkpoints and per-run outputs (large; keep it out of the repository)")
    parser.add_argument("--results_dir", default="results/wordnet_retrieval", help="where the table, JSON and plot go")
    parser.add_argument("--runs", nargs="+", default=list(DEFAULT_RUNS), choices=RUNS)
    parser.add_argument("--cached_batch_factor", type=int, default=4, help="mrl-cached: batch = this x --batch_size")
    parser.add_argument("--max_train_steps", type=int, default=400)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--learning_rate", type=float, default=2e-4, help="2e-4: with 5e-5 the small dims barely move in 400 steps")
    parser.add_argument("--test_limit", type=int, default=10_000, help="held-out (word, definition) pairs scored")
    parser.add_argument("--eval_limit", type=int, default=1000, help="validation pairs scored during training")
    parser.add_argument("--eval_steps", default="200")
    parser.add_argument("--mixed_precision", default="bf16", choices=["no", "bf16"],
                        help="training precision of every trained run (evaluation is float32); bf16 halves CPU time here")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--text_model_name_or_path", default=None, help="default: the local all-MiniLM-L6-v2")
    return parser.parse_args(argv)


def run_command(args, run: str) -> list[str]:
    # Query = definition, document = word; the old script's defaults kept explicit (warm-up 10%, weight decay 0.01,
    # 64 tokens, no gradient clipping) so the runs stay comparable with the earlier tables.
    dataset = "wordnet-triplets" if run == "mrl-negatives" else "wordnet-pairs"
    batch_size = args.batch_size * (args.cached_batch_factor if run == "mrl-cached" else 1)
    command = [
        sys.executable, str(Path(__file__).with_name("train_contrastive.py")),
        "--task", "pairs", "--dataset_name", dataset, "--anchor_column", "positive", "--positive_column", "anchor",
        "--no_symmetric", "--temperature", "0.05", "--train_sampling_strategy", "group_by_length",
        "--per_device_train_batch_size", str(batch_size), "--learning_rate", str(args.learning_rate),
        "--warmup_steps", "0.1", "--weight_decay", "0.01", "--max_seq_length", "64", "--max_grad_norm", "0",
        "--max_eval_samples", str(args.eval_limit), "--max_test_samples", str(args.test_limit),
        "--seed", str(args.seed), "--output_dir", str(Path(args.work_dir) / run),
        "--save_steps", "50", "--save_total_limit", "1", "--resume_from_checkpoint", "latest",
    ]
    if args.mixed_precision == "bf16":
        command.append("--bf16")
    if args.text_model_name_or_path is not None:
        command += ["--model_name_or_path", args.text_model_name_or_path]
    if run == "frozen":
        return [*command, "--max_steps", "0"]
    evaluation = ["--eval_strategy", "no"] if args.eval_steps == "no" else ["--eval_strategy", "steps", "--eval_steps", args.eval_steps]
    if run == "mrl-cached":
        command += ["--mini_batch_size", str(args.batch_size)]
    loss = "mrl" if run.startswith("mrl") else run
    return [*command, "--loss", loss, "--max_steps", str(args.max_train_steps), *evaluation]


def summarise(args, summaries: dict[str, dict], argv: list[str]) -> str:
    """The side-by-side table (markdown), also written with the JSON and the plot to `--results_dir`."""
    results_dir = Path(args.results_dir)
    by_run = {run: summary["final"] for run, summary in summaries.items()}
    table = markdown_table(by_run, metrics=[METRIC], digits=3)
    recall = {run: _by_dim(metrics) for run, metrics in by_run.items()}
    checks = []
    if {"mrl", "plain"} <= recall.keys():
        full = max(recall["mrl"])
        for dim in (8, 16):
            gap = recall["mrl"][dim] - recall["plain"][dim]
            checks.append(f"- MRL - plain at dim {dim}: {100 * gap:+.1f} points (target >= +10): {'met' if gap >= 0.10 else 'NOT met'}")
        gap = recall["mrl"][full] - recall["plain"][full]
        checks.append(f"- MRL - plain at dim {full}: {100 * gap:+.1f} points (target >= -2): {'met' if gap >= -0.02 else 'NOT met'}")
    if {"mrl", "st-mrl"} <= recall.keys():
        worst = min(recall["mrl"][dim] - recall["st-mrl"][dim] for dim in recall["mrl"])
        checks.append(f"- MRL - sentence-transformers, worst dim: {100 * worst:+.1f} points (target >= -1): {'met' if worst >= -0.01 else 'NOT met'}")
    for run in ("mrl-negatives", "mrl-cached"):
        if {"mrl", run} <= recall.keys():
            gains = ", ".join(f"{100 * (recall[run][dim] - recall['mrl'][dim]):+.1f} at {dim}" for dim in (8, 16, 32, 64))
            better = all(recall[run][dim] > recall["mrl"][dim] for dim in (8, 16, 32, 64))
            checks.append(f"- {run} - mrl (points): {gains} (target > 0 at 8-64): {'met' if better else 'NOT met'}")
    if {"mrl", "st-mrl"} <= recall.keys():
        checks.append("- mrl and st-mrl compute the same loss on the same batches (their plot lines overlap).")
    timings = [
        f"- {run}: {summary['steps']} steps, {summary['seconds_per_step']:.2f} s/step" for run, summary in summaries.items() if summary["steps"]
    ]
    timings.append("(wall-clock on cores shared with other jobs: it tracks their load, not the losses' costs)")
    text = "\n".join([
        f"# WordNet definition -> word {METRIC} by embedding dim\n",
        f"{args.text_model_name_or_path or 'all-MiniLM-L6-v2'}; {args.max_train_steps} steps of batch {args.batch_size}, AdamW lr {args.learning_rate}, "
        f"linear schedule with 10% warm-up, {args.mixed_precision} autocast, seed {args.seed}; recall@10 over the distinct "
        f"definitions of {args.test_limit} held-out (word, definition) pairs (split by synset), all their words as the corpus.\n",
        table, "Targets:", *checks, "", "Training time (2 CPU cores, one thread per run):", *timings, "",
        "Reproduce: `OMP_NUM_THREADS=1 python scripts/run_wordnet_retrieval.py " + " ".join(argv) + "`", "",
    ])
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / "README.md").write_text(text)
    save_results({run: {"metrics": {k: v for k, v in s["final"].items() if k.endswith(("recall@1", "recall@10", "mrr@10"))},
                        "steps": s["steps"], "seconds_per_step": s["seconds_per_step"]} for run, s in summaries.items()},
                 results_dir / "results.json")
    plot_metric_vs_dim(by_run, METRIC, results_dir / "recall_vs_dim.png", title=f"WordNet definition -> word {METRIC}")
    return text


def _by_dim(metrics: dict[str, float]) -> dict[int, float]:
    from hf_mrl.evaluation import parse_metric_key

    parsed = (parse_metric_key(key) for key in metrics)
    return {dim: metrics[f"{name}_dim{dim}_{metric}"] for name, dim, metric in parsed if metric == METRIC}


def main(argv=None) -> None:
    args = parse_args(argv)
    summaries = {}
    for run in args.runs:
        results = Path(args.work_dir) / run / "results.json"
        if not results.is_file():
            print(f"== {run}: " + " ".join(run_command(args, run)), flush=True)
            subprocess.run(run_command(args, run), check=True)
        summaries[run] = load_results(results)
    print(summarise(args, summaries, argv if argv is not None else sys.argv[1:]))


if __name__ == "__main__":
    main()
