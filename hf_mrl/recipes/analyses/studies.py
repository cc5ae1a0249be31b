"""The analyses, each on trained MRL and FF models: it scores them, writes `<name>.md`, `<name>.json` and a plot
to its folder, and returns its data (plus "markdown" and "folder").

- `shift_study`: accuracy, 1-NN and retrieval mAP@10 under image corruptions, and their drop from clean data;
- `few_shot_study`: n-shot nearest-class-mean and logistic-regression accuracy, novel classes apart;
- `long_tail_study`: per-class accuracy by training frequency (head / torso / tail), errors within a
  super-class, and the low dims' confusions;
- `routing_study`: the confidence cascade, disagreement routing and both combined at equal expected dims;
- `weights_study`: the loss-weight tuning's table and plot.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ...data.corruptions import corrupted_datasets
from ...evaluation import (
    MatryoshkaFewShotEvaluator,
    MatryoshkaPerClassEvaluator,
    MatryoshkaShiftEvaluator,
    accuracy_at_budget,
    cost_accuracy_envelope,
    encode_dataset,
    group_by_dim,
    per_class_metrics,
    routing_tradeoffs,
)
from .compare import comparison_table, evaluate_mrl_and_ff, plot_panels, score_models, write_analysis
from .runs import load_classifier
from .weights import weights_table

__all__ = ["WEIGHTS_STUDY_FILES", "few_shot_study", "long_tail_study", "routing_study", "shift_study", "weights_study"]

STYLE = {"MRL": {"marker": "o"}, "FF": {"marker": "s", "linestyle": "--"}}


def _draw_vs_dim(results_by_label, metric, ylabel, scale=100.0):
    def draw(axis):
        for label, results in results_by_label.items():
            points = sorted((dim, row[metric]) for dim, row in group_by_dim(results).items() if metric in row)
            axis.plot([d for d, _ in points], [scale * v for _, v in points], label=label, **STYLE.get(label, {}))
        axis.set_xscale("log", base=2)
        axis.set_xlabel("embedding dim")
        axis.set_ylabel(ylabel)
        axis.legend()

    return draw


def _mean_drop(results: Mapping[str, float], corruption: str, severities, metric: str) -> dict[str, float]:
    """{"mean_dim{d}_drop": the drop of `metric` under `corruption`, averaged over `severities`} per dim."""
    means = {}
    for dim in sorted(group_by_dim(results)):
        values = [results.get(f"shift_dim{dim}_{corruption}-{severity}_{metric}_drop") for severity in severities]
        if all(value is not None for value in values):
            means[f"mean_dim{dim}_drop"] = float(np.mean(values))
    return means


def shift_study(folder, mrl_run, ff_runs, test, reference, corruptions, severities, title: str, seed: int = 0) -> dict:
    """MRL vs FF under every corruption at every severity, scored on `test` (k-NN database and retrieval corpus:
    `reference`, clean)."""
    shifted = corrupted_datasets(test, corruptions, severities, seed=seed)

    def make_evaluator(collate_fn):
        return MatryoshkaShiftEvaluator(
            test, shifted_datasets=shifted, reference_dataset=reference, collate_fn=collate_fn, top_k=(1,), knn_k=(1,),
            retrieval_ks=(10,), retrieval_metric_names=("mrl_map",), name="shift", batch_size=512,
        )

    results = evaluate_mrl_and_ff(make_evaluator, mrl_run, ff_runs)
    metrics = (("top1", "top-1 (head)"), ("1nn", "1-NN"), ("mrl_map@10", "mAP@10"))
    sections = [f"# Robustness under shift: {title}", "",
                f"Test rows: {len(test)} clean, the same rows corrupted by {', '.join(corruptions)} at severities "
                f"{', '.join(map(str, severities))} (`hf_mrl.data.corruptions`, seed {seed}). 1-NN and mAP@10 search "
                f"{len(reference)} clean training rows. Drops are clean minus corrupted, in points, averaged over "
                "the severities; a larger drop means less robust. FF: a separate model trained at each dim alone.", "",
                "## Clean accuracy (%)", "", comparison_table(results, [(f"clean_{m}", t) for m, t in metrics]),
                "## Mean accuracy over every corruption and severity (%)", "",
                comparison_table(results, [(f"shifted_{m}", t) for m, t in metrics]),
                "## Mean drop over every corruption and severity (points)", "",
                comparison_table(results, [(f"shifted_{m}_drop", t) for m, t in metrics])]
    drops = {}
    for metric, name in metrics:
        drops[metric] = {
            corruption: {label: _mean_drop(flat, corruption, severities, metric) for label, flat in results.items()}
            for corruption in corruptions
        }
        by_column = {f"{corruption} {label}": values for corruption, by_label in drops[metric].items()
                     for label, values in by_label.items()}
        sections += [f"## {name} drop per corruption (points)", "",
                     comparison_table(by_column, [("drop", "")], difference=False)]
    panels = [(f"{corruption}: top-1 drop (points)", _draw_vs_dim(drops["top1"][corruption], "drop", "drop (points)"))
              for corruption in corruptions]
    plot_panels(Path(folder) / "shift.png", panels)
    markdown = "\n".join(sections) + "\n![drops](shift.png)\n"
    write_analysis(folder, "shift", markdown, {"results": results, "drops": drops})
    return {"results": results, "drops": drops, "markdown": markdown, "folder": str(folder)}


def few_shot_study(folder, mrl_run, ff_runs, support, queries, novel_classes, class_names, title: str,
                   shots: Sequence[int] = (1, 5, 10), num_episodes: int = 5) -> dict:
    """n-shot accuracy of MRL vs FF; with `novel_classes` (held out of the models' training) scored apart."""

    def make_evaluator(collate_fn):
        return MatryoshkaFewShotEvaluator(support, queries, collate_fn=collate_fn, shots=shots, num_episodes=num_episodes,
                                          novel_classes=novel_classes or None, name="few_shot", batch_size=512)

    results = evaluate_mrl_and_ff(make_evaluator, mrl_run, ff_runs)
    scope = "novel" if novel_classes else None
    names = ", ".join(class_names[label] for label in novel_classes) if novel_classes else ""
    sections = [f"# Few-shot learning: {title}", "",
                f"Episodes: n labelled examples of each of the {len(set(queries['label']))} classes drawn from the "
                f"support pool ({len(support)} rows), {num_episodes} seeded episodes per n; accuracy in % on "
                f"{len(queries)} query rows. NCM: nearest class mean (cosine); logistic: logistic regression on the shots."]
    if novel_classes:
        sections += ["", f"Novel classes ({names}) were held out of every model's training; `novel` is the accuracy "
                     "on their query rows, `base` on the other classes'."]
    for method in ("ncm", "logistic"):
        for suffix in ([scope, "base"] if scope else [None]):
            columns = [(f"{n}shot_{method}" + (f"_{suffix}" if suffix else ""), f"{n}-shot") for n in shots]
            heading = f"{'NCM' if method == 'ncm' else 'Logistic regression'}" + (f", {suffix} classes" if suffix else "")
            sections += ["", f"## {heading}", "", comparison_table(results, columns)]
    key = "ncm_novel" if scope else "ncm"
    panels = [(f"{n}-shot NCM{' (novel classes)' if scope else ''}", _draw_vs_dim(results, f"{n}shot_{key}", "accuracy (%)"))
              for n in shots]
    plot_panels(Path(folder) / "few_shot.png", panels, columns=len(panels))
    markdown = "\n".join(sections) + "\n![few-shot](few_shot.png)\n"
    write_analysis(folder, "few_shot", markdown, {"results": results, "novel_classes": list(novel_classes or [])})
    return {"results": results, "markdown": markdown, "folder": str(folder)}


def _confusion_lines(report: Mapping, dim: int, label: str) -> list[str]:
    names = report["class_names"] or {}
    lines = []
    for entry in report["per_dim"][dim]["confusions"]:
        same = " (same super-class)" if entry.get("same_super_class") else ""
        lines.append(f"- {label} at {dim} dims: {names.get(entry['true'], entry['true'])} -> "
                     f"{names.get(entry['predicted'], entry['predicted'])}: {entry['count']} "
                     f"({100 * entry['share_of_errors']:.1f}% of errors){same}")
    return lines


def long_tail_study(folder, mrl_run, ff_runs, test, train_labels, super_classes, title: str) -> dict:
    """Per-class accuracy of MRL vs FF by training frequency, super-class errors and the confusions."""
    def make_evaluator(collate_fn):
        return MatryoshkaPerClassEvaluator(test, train_labels=train_labels, super_classes=super_classes,
                                           collate_fn=collate_fn, name="per_class", batch_size=512)

    reports = score_models(make_evaluator, mrl_run, ff_runs, score=lambda evaluator, model: evaluator.report(model))
    mrl_report, ff_reports = reports["MRL"], list(reports["FF"].values())
    results = {
        "MRL": per_class_metrics(mrl_report, "per_class"),
        "FF": {key: value for report in ff_reports for key, value in per_class_metrics(report, "per_class").items()},
    }
    counts = mrl_report["train_counts"]
    buckets = mrl_report["buckets"]
    names = mrl_report["class_names"] or {label: str(label) for label in counts}
    bucket_text = "; ".join(f"{bucket}: " + ", ".join(f"{names[c]} ({counts[c]})" for c in members)
                            for bucket, members in buckets.items())
    dims = sorted(mrl_report["per_dim"])
    sections = [f"# Long tail and per-class accuracy: {title}", "",
                f"Test rows: {len(test)}. Classes by training rows (head / torso / tail thirds): {bucket_text}. "
                "Bucket accuracy is the mean per-class accuracy of its classes, in %. `errors within super-class`: "
                "share of the errors that stay in the true class's super-class (`chance`: the share if errors fell "
                "uniformly on the other classes).", "",
                "## Accuracy by training frequency", "",
                comparison_table(results, [("acc", "all"), ("balanced_acc", "balanced"), ("head_acc", "head"),
                                           ("torso_acc", "torso"), ("tail_acc", "tail")]),
                "## Errors within the true super-class", "",
                comparison_table(results, [("errors_within_super_class", "within"),
                                           ("errors_within_super_class_chance", "chance")], difference=False),
                "## Most frequent confusions", ""]
    ff_by_dim = {dim: report for report in ff_reports for dim in report["per_dim"]}
    for dim in (dims[0], dims[-1]):
        sections += _confusion_lines(mrl_report, dim, "MRL")
        if dim in ff_by_dim:
            sections += _confusion_lines(ff_by_dim[dim], dim, f"FF-{dim}")
    panels = [(f"{bucket} classes: accuracy", _draw_vs_dim(results, f"{bucket}_acc", "accuracy (%)"))
              for bucket in ("head", "torso", "tail")]
    panels.append(("errors within the true super-class", _draw_vs_dim(results, "errors_within_super_class", "% of errors")))
    plot_panels(Path(folder) / "long_tail.png", panels)
    markdown = "\n".join(sections) + "\n\n![long tail](long_tail.png)\n"
    data = {"results": results, "reports": {"MRL": mrl_report, "FF": ff_reports}}
    write_analysis(folder, "long_tail", markdown, data)
    return {**data, "markdown": markdown, "folder": str(folder)}


def routing_study(folder, mrl_run, validation, test, title: str) -> dict:
    """Cascade, disagreement routing and both combined on the MRL model's heads: fit on `validation`, scored on
    `test`, compared at equal expected dims."""
    model, collate_fn = load_classifier(mrl_run)
    dims = list(model.config.matryoshka_dims)
    val_logits = encode_dataset(model, validation, collate_fn, 512, "Encoding validation").matryoshka_logits
    test_logits = encode_dataset(model, test, collate_fn, 512, "Encoding test").matryoshka_logits
    tradeoffs = routing_tradeoffs(val_logits, np.asarray(validation["label"]), test_logits, np.asarray(test["label"]), dims)
    points = tradeoffs["points"]
    lines = [f"# Routing across dims: {title}", "",
             f"Heads of the MRL model at {', '.join(map(str, dims))} dims; cascades fit on {len(validation)} validation "
             f"rows, everything scored on {len(test)} test rows. Cost: the largest head read per input (mean: "
             f"expected dims). Full-dim head: {100 * tradeoffs['full_dim_accuracy']:.2f}%. Oracle (an input counts as "
             f"right when any head is right): {100 * tradeoffs['oracle_accuracy']:.2f}%.", "",
             "## Disagreement routing against the cascades at the same expected dims", "",
             "Last three columns: the best accuracy of that method at no more expected dims than the routing row "
             "(single head: the most accurate head of at most that many dims).", "",
             "| pair | route to | agree % | expected dims | accuracy | single head | cascade | cascade + agreement |",
             "|---|---|---|---|---|---|---|---|"]
    for point in points["disagreement"]:
        budget = point["expected_dim"]
        cells = [accuracy_at_budget(points[method], budget) for method in ("single head", "cascade", "cascade + agreement")]
        lines.append(f"| {point['pair'][0]} & {point['pair'][1]} | {point['route_to']} | {100 * point['agreement']:.1f} | "
                     f"{budget:.1f} | {100 * point['accuracy']:.2f} | "
                     + " | ".join("-" if cell is None else f"{100 * cell:.2f}" for cell in cells) + " |")
    lines += ["", "## Cascades by target (full-dim validation accuracy minus the drop)", "",
              "| target drop | cascade dims | cascade accuracy | + agreement dims | + agreement accuracy |",
              "|---|---|---|---|---|"]
    for plain, combined in zip(points["cascade"], points["cascade + agreement"]):
        lines.append(f"| {100 * plain['target_drop']:.2f} | {plain['expected_dim']:.1f} | {100 * plain['accuracy']:.2f} | "
                     f"{combined['expected_dim']:.1f} | {100 * combined['accuracy']:.2f} |")

    def draw(axis):
        for method in ("single head", "cascade", "cascade + agreement"):
            envelope = cost_accuracy_envelope(points[method])
            axis.plot([c for c, _ in envelope], [100 * a for _, a in envelope], marker="o", label=method)
        axis.scatter([p["expected_dim"] for p in points["disagreement"]], [100 * p["accuracy"] for p in points["disagreement"]],
                     marker="x", color="black", label="disagreement routing", zorder=3)
        axis.axhline(100 * tradeoffs["oracle_accuracy"], color="grey", linestyle=":", label="oracle")
        axis.set_xscale("log", base=2)
        axis.set_xlabel("expected dims")
        axis.set_ylabel("accuracy (%)")
        axis.legend()

    plot_panels(Path(folder) / "routing.png", [(f"{title}: accuracy vs expected dims", draw)], columns=1)
    markdown = "\n".join(lines) + "\n\n![routing](routing.png)\n"
    write_analysis(folder, "routing", markdown, tradeoffs)
    return {**tradeoffs, "markdown": markdown, "folder": str(folder)}


WEIGHTS_STUDY_FILES = ("weights.md", "weights.json", "weights.png")


def weights_study(folder, report: Mapping, title: str) -> dict:
    """Writes the weight tuning's table (`weights_table`) and a plot of each weighting's gain over uniform per dim
    (`WEIGHTS_STUDY_FILES`)."""
    dims = report["dims"]
    uniform = report["weightings"]["uniform"]["test"]
    sections = [f"# Loss weights: {title}", "",
                f"Test top-1 (%) of the nested heads per dim, each weighting trained with the same budget; FF: a "
                f"separate model per dim. The search trained {len(report['search']) - 1} seeded random weightings "
                f"for {report['search_steps']} steps and scored them on the validation split; the best of its "
                "validation Pareto front were retrained with the full budget. Chosen: the weighting of the "
                "validation front with the best mean validation top-1. The uniform weighting retrained with another training "
                "seed shows the noise between runs.", "", weights_table(report)]

    def draw(axis):
        for label, entry in report["weightings"].items():
            axis.plot(dims, [100 * (entry["test"][d] - uniform[d]) for d in dims], marker="o", label=label)
        axis.plot([d for d in dims if d in report["ff"]], [100 * (report["ff"][d] - uniform[d]) for d in dims if d in report["ff"]],
                  marker="s", linestyle="--", color="black", label="FF")
        axis.axhline(0, color="grey", linewidth=0.8)
        axis.set_xscale("log", base=2)
        axis.set_xlabel("embedding dim")
        axis.set_ylabel("top-1 minus uniform MRL (points)")
        axis.legend(fontsize=8)

    plot_panels(Path(folder) / "weights.png", [(f"{title}: gain over uniform weights", draw)], columns=1)
    markdown = "\n".join(sections) + "\n![weights](weights.png)\n"
    write_analysis(folder, "weights", markdown, report)
    return {**report, "markdown": markdown, "folder": str(folder)}
