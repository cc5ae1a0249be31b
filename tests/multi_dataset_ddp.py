"""Run by tests/test_multi_dataset.py under `accelerate launch` (two CPU processes): a pair run on two datasets (or
on one), recording each process's batches (step, dataset name, anchor texts) and logs in `<output_dir>/<tag><i>.json`.

    python -m accelerate.commands.launch --multi_gpu --num_processes 2 tests/multi_dataset_ddp.py TOWER OUTPUT \
        '{"batch_sampler": "no_duplicates", "max_steps": 8}'

Settings (JSON): batch_sampler, max_steps, save_steps (0: no checkpoints), resume (a checkpoint folder name),
datasets ("two" or "one"), tag (the record's file name).
"""

import json
import os
import sys
from pathlib import Path

import datasets
import torch

from hf_mrl import MatryoshkaModel
from hf_mrl.training import MatryoshkaTrainer, MatryoshkaTrainingArguments


def main(tower: str, output_dir: str, settings: str) -> None:
    settings = {"batch_sampler": "batch_sampler", "max_steps": 8, "save_steps": 0, "resume": None, "datasets": "two",
                "tag": "rank", **json.loads(settings)}
    questions = datasets.Dataset.from_dict({"anchor": [f"question {index % 7}" for index in range(40)],
                                            "positive": [f"answer {index}" for index in range(40)]})
    titles = datasets.Dataset.from_dict({"title": [f"title {index}" for index in range(24)],
                                         "body": [f"body {index}" for index in range(24)]})
    torch.manual_seed(0)
    model = MatryoshkaModel.from_backbone(tower, matryoshka_dims=[8, 32])
    saving = {"save_strategy": "steps", "save_steps": settings["save_steps"]} if settings["save_steps"] else {"save_strategy": "no"}
    args = MatryoshkaTrainingArguments(output_dir=output_dir, per_device_train_batch_size=4, max_steps=settings["max_steps"],
                                       logging_steps=1, report_to="none", disable_tqdm=True,
                                       batch_sampler=settings["batch_sampler"], **saving)
    train = {"questions": questions, "titles": titles} if settings["datasets"] == "two" else questions
    trainer = MatryoshkaTrainer(model=model, args=args, train_dataset=train)
    tokenizer, seen, compute_loss = trainer.processing_class, [], trainer.compute_loss

    def recording(model, inputs, *more, **options):
        name = inputs.get("dataset_name")
        anchor = trainer.columns[name][0] if name is not None else trainer.columns[0]
        texts = tokenizer.batch_decode(inputs[anchor]["input_ids"], skip_special_tokens=True)
        seen.append({"step": trainer.state.global_step, "dataset_name": name, "anchors": texts})
        return compute_loss(model, inputs, *more, **options)

    trainer.compute_loss = recording
    resume = str(Path(output_dir) / settings["resume"]) if settings["resume"] else None
    trainer.train(resume_from_checkpoint=resume)
    record = {"batches": seen, "logs": trainer.state.log_history}
    (Path(output_dir) / f"{settings['tag']}{trainer.accelerator.process_index}.json").write_text(json.dumps(record))
    trainer.accelerator.wait_for_everyone()
    torch.distributed.destroy_process_group()
    # gloo's threads sometimes abort the interpreter's exit ("terminate called without an active exception"),
    # whichever sampler ran: the records are written, so leave without the C++ teardown
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main(*sys.argv[1:])
