"""Training prompts: text prefixes put before a column's texts by the collators, as sentence-transformers'
`prompts` training argument (e.g. E5's "query: " / "passage: ").

Three shapes: one string for every text column, `{column: prompt}`, or `{dataset_name: {column: prompt}}` for a
dict of training datasets (`{dataset_name: prompt}` too, as in sentence-transformers). `check_training_prompts` checks the shape (and parses the JSON dict string a command
line gives); `resolve_prompts` turns any shape into the `{column: prompt}` of one dataset, which the collators
take. Inference prompts are the model's own (`config.prompts`); training ones are never written into it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

__all__ = ["check_training_prompts", "column_prompts", "resolve_prompts"]

_SHAPES = 'a string, {"column": "prompt"} or {"dataset_name": {"column": "prompt"}}'


def _is_str_map(value) -> bool:
    return isinstance(value, Mapping) and all(isinstance(key, str) and isinstance(item, str) for key, item in value.items())


def check_training_prompts(prompts, name: str = "prompts"):
    """`prompts` in one of its shapes: None, a string, `{column: prompt}` or `{dataset_name: {column: prompt}}`
    (plain dicts); a string starting with "{" is read as JSON first. An empty dict is None."""
    if isinstance(prompts, str) and prompts.lstrip().startswith("{"):
        try:
            prompts = json.loads(prompts)
        except json.JSONDecodeError as error:
            raise ValueError(f"`{name}`={prompts!r} starts with '{{' but is not valid JSON ({error}); give {_SHAPES}.") from None
    if prompts is None or isinstance(prompts, str):
        return prompts
    if not isinstance(prompts, Mapping) or not all(isinstance(key, str) and key for key in prompts):
        raise ValueError(f"`{name}`={prompts!r} is not {_SHAPES} (keys are non-empty strings).")
    if not prompts:
        return None
    if _is_str_map(prompts):
        return dict(prompts)
    if all(_is_str_map(value) for value in prompts.values()):
        return {dataset: dict(value) for dataset, value in prompts.items()}
    raise ValueError(
        f"`{name}`={prompts!r} mixes shapes or holds non-strings; give {_SHAPES} (every value a string, or every "
        "value a dict of strings)."
    )


def column_prompts(prompts, columns: Sequence[str], name: str = "prompts") -> dict[str, str]:
    """`{column: prompt}` for a collator's text `columns`: a string prefixes every one of them, a dict names some
    (a key that is not one of them is refused, so a misspelt column is not silently left without its prompt)."""
    if prompts is None:
        return {}
    if isinstance(prompts, str):
        if not columns:
            raise ValueError(f"`{name}`={prompts!r} prefixes texts, but this data has no text column.")
        return {column: prompts for column in columns}
    if not _is_str_map(prompts):
        raise ValueError(f"`{name}` must be a string or a dict of text columns to prompts (strings), got {prompts!r}.")
    unknown = sorted(set(prompts) - set(columns))
    if unknown:
        raise ValueError(f"`{name}` names {unknown}, not text columns of this data; text columns: {list(columns)}.")
    return dict(prompts)


def resolve_prompts(prompts, dataset_name: str | None, columns: Sequence[str]) -> dict[str, str]:
    """The `{column: prompt}` of one training dataset with text `columns`, from `prompts` in any shape (see
    `check_training_prompts`), as sentence-transformers' collator resolves them. `dataset_name` (None: a single
    dataset, which cannot use a dict keyed by dataset names) picks its entry of `{dataset_name: {column: prompt}}`
    (a dataset without one gets no prompts) or of `{dataset_name: prompt}`. A `{column: prompt}` dict shared by
    several named datasets may name columns one of them lacks; for a single dataset every key must be a column."""
    prompts = check_training_prompts(prompts)
    if isinstance(prompts, dict) and dataset_name is not None:
        if dataset_name in prompts:
            return column_prompts(prompts[dataset_name], columns, f"prompts[{dataset_name!r}]")
        if _is_str_map(prompts):
            return {column: prompt for column, prompt in prompts.items() if column in columns}
        return {}
    if isinstance(prompts, dict) and not _is_str_map(prompts):
        raise ValueError(
            f"`prompts` is keyed by dataset names {sorted(prompts)}, which needs a dict of training datasets; for "
            'one dataset give a string or {"column": "prompt"}.'
        )
    return column_prompts(prompts, columns)
