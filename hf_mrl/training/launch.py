"""The training scripts' command line and exit status."""

from __future__ import annotations

__all__ = ["parse_arguments", "run_script"]


def parse_arguments(dataclass_types, argv=None):
    """The scripts' command line: one `HfArgumentParser` over the argument dataclasses (flags named as the fields,
    e.g. `--per_device_train_batch_size`); every check in their `__post_init__` runs before any work. An unknown
    flag is argparse's error (usage line, exit status 2)."""
    from transformers import HfArgumentParser, TrainingArguments

    parser = HfArgumentParser(dataclass_types)
    for action in parser._actions:
        if action.help and "default:" in action.help and "%(default)" not in action.help:
            # The help names its own default ("default: full"): "%(default).0s" prints nothing and keeps
            # argparse from adding "(default: None)" after it.
            action.help += "%(default).0s"
    namespace, unknown = parser.parse_known_args(argv)  # before the dataclasses' checks, which would name a default
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    parsed = parser.parse_args_into_dataclasses(args=argv)
    if getattr(namespace, "output_dir", "given") is None:  # TrainingArguments picked transformers' default folder
        _check_default_output_dir(next(value for value in parsed if isinstance(value, TrainingArguments)))
    return parsed


def _check_default_output_dir(training_args) -> None:
    """No `--output_dir` given: says where the run writes (TrainingArguments' default, `trainer_output`), and
    refuses a default folder that holds an earlier run unless the run continues it (`--resume_from_checkpoint`)."""
    from ..output_folder import check_default_output_folder

    check_default_output_folder(
        training_args.output_dir, "transformers' default output folder",
        f"`--output_dir {training_args.output_dir}` to write into it anyway (the earlier run's results and model are "
        "replaced), or `--resume_from_checkpoint latest` to continue it",
        continuing=bool(training_args.resume_from_checkpoint), say=training_args.process_index == 0,
    )


def run_script(main, argv=None, prog: str = "hf_mrl") -> int:
    """Runs a script's `main(argv)`; a bad argument or input is one line on stderr and exit status 1, not a
    traceback."""
    import sys

    try:
        main(argv)
    except (ValueError, FileNotFoundError) as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 1
    return 0
