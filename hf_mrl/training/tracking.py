"""What a run prints: one readable line per log (the training loss with each nesting dim's loss, evaluations grouped
by dim) and, at the end, the per-dim results as a markdown table."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from transformers.trainer_callback import PrinterCallback, ProgressCallback

from ..evaluation.report import group_by_dim, markdown_table, parse_metric_key

__all__ = ["LogLinesCallback", "LogLinesProgressCallback", "format_log_line", "results_table"]


def results_table(results: Mapping[str, float], label: str = "model", metrics: Sequence[str] | None = None) -> str:
    """A per-dim markdown table (one row per dim) of an evaluator's flat results."""
    if not group_by_dim(results):
        raise ValueError("`results` has no '{name}_dim{k}_{metric}' keys to tabulate.")
    return markdown_table({label: results}, metrics=metrics)


def _number(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def format_log_line(logs: Mapping, step: int, max_steps: int | None = None) -> str:
    """One line for a Trainer log: `step 2/10 | epoch 0.2 | loss 3.21 (dim8 3.4, dim16 3.2) | grad_norm 1.1 | ...`;
    per-dim metrics (`eval_{name}_dim{k}_{metric}`) are grouped by dim: `eval_{name} dim8: recall@10 0.5, ...`."""
    values = {key: value for key, value in logs.items() if key != "total_flos"}
    parts = [f"step {step}/{max_steps}" if max_steps and max_steps > 0 else f"step {step}"]
    if "epoch" in values:
        parts.append(f"epoch {_number(values.pop('epoch'))}")
    if "loss" in values:
        per_dim = sorted((int(key[len("loss_dim"):]), key) for key in values
                         if key.startswith("loss_dim") and key[len("loss_dim"):].isdigit())
        loss = f"loss {_number(values.pop('loss'))}"
        if per_dim:
            loss += " (" + ", ".join(f"dim{dim} {_number(values.pop(key))}" for dim, key in per_dim) + ")"
        parts.append(loss)
    groups: dict[tuple[str, int], list[str]] = {}
    for key, value in values.items():
        try:
            name, dim, metric = parse_metric_key(key)
        except ValueError:
            parts.append(f"{key} {_number(value)}")
            continue
        groups.setdefault((name, dim), []).append(f"{metric} {_number(value)}")
    parts += [f"{name} dim{dim}: {', '.join(metrics)}" for (name, dim), metrics in groups.items()]
    return " | ".join(parts)


class LogLinesCallback(PrinterCallback):
    """Prints each log as one `format_log_line` line (Trainer's `PrinterCallback`, used with `disable_tqdm`, prints
    the dict)."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_local_process_zero and logs:
            print(format_log_line(logs, state.global_step, state.max_steps), flush=True)


class LogLinesProgressCallback(ProgressCallback):
    """Trainer's progress bar, writing each log above it as one `format_log_line` line."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and self.training_bar is not None and logs:
            self.training_bar.write(format_log_line(logs, state.global_step, state.max_steps))
