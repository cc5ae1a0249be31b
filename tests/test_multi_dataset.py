"""Several training datasets in one run (each batch from one dataset, "proportional" or "round_robin", its loss
logged as `loss_<name>`) and `batch_sampler="no_duplicates"`, as sentence-transformers' trainer does them."""

from collections import Counter

import datasets
import pytest
import torch

from hf_mrl import MatryoshkaModel
from hf_mrl.training import MatryoshkaTrainer, MatryoshkaTrainingArguments, checkpoint_path
from hf_mrl.training.multi_dataset import MultiDatasetCollator, NamedConcatDataset
from hf_mrl.training.sampling import MultiDatasetBatchSampler, NoDuplicatesBatchSampler, ShuffledBatchSampler

from .trainer_helpers import image_rows, tiny_classifier, weights

# -- data -----------------------------------------------------------------------------------------------------


def _questions(count: int = 24) -> datasets.Dataset:
    """anchor / positive pairs."""
    return datasets.Dataset.from_dict({"anchor": [f"question {index}" for index in range(count)],
                                       "positive": [f"answer {index}" for index in range(count)]})


def _titles(count: int = 12) -> datasets.Dataset:
    """Pairs under other column names (`title` / `body`), read by position."""
    return datasets.Dataset.from_dict({"title": [f"title {index}" for index in range(count)],
                                       "body": [f"body text {index}" for index in range(count)]})


def _repetitive(count: int = 40) -> datasets.Dataset:
    """Pairs whose texts repeat a lot: 5 distinct anchors, 8 distinct positives."""
    return datasets.Dataset.from_dict({"anchor": [f"topic {index % 5}" for index in range(count)],
                                       "positive": [f"doc {index % 8}" for index in range(count)]})


def _args(output_dir, **overrides) -> MatryoshkaTrainingArguments:
    values = dict(output_dir=str(output_dir), per_device_train_batch_size=4, max_steps=6, learning_rate=1e-3,
                  logging_steps=1, save_strategy="no", report_to="none", disable_tqdm=True, seed=0)
    values.update(overrides)
    return MatryoshkaTrainingArguments(**values)


def _pair_trainer(tiny_text_tower, output_dir, train_dataset, **overrides) -> MatryoshkaTrainer:
    torch.manual_seed(0)
    model = MatryoshkaModel.from_backbone(tiny_text_tower, matryoshka_dims=[8, 32])
    return MatryoshkaTrainer(model=model, args=_args(output_dir, **overrides), train_dataset=train_dataset)


def _offsets(sizes):
    return [sum(sizes[:position]) for position in range(len(sizes))]


def _dataset_of(batch, sizes) -> int:
    """The dataset (position) every row id of `batch` falls in; fails when the batch mixes datasets."""
    owners = {sum(index >= offset for offset in _offsets(sizes)) - 1 for index in batch}
    assert len(owners) == 1, f"batch {batch} mixes datasets {owners}"
    return owners.pop()


# -- the samplers -----------------------------------------------------------------------------------------------


def test_shuffled_batches_cover_every_row_once_and_follow_seed_and_epoch():
    sampler = ShuffledBatchSampler(10, batch_size=4, seed=3)
    first = list(sampler)
    assert len(first) == len(sampler) == 3 and [len(batch) for batch in first] == [4, 4, 2]
    assert sorted(index for batch in first for index in batch) == list(range(10))
    assert list(ShuffledBatchSampler(10, batch_size=4, seed=3)) == first  # same seed and epoch: same order
    sampler.set_epoch(1)
    assert list(sampler) != first
    assert len(list(ShuffledBatchSampler(10, batch_size=4, seed=3, drop_last=True))) == 2


def test_proportional_draws_every_batch_of_every_dataset_in_a_seeded_order():
    sizes = [40, 12, 20]
    samplers = [ShuffledBatchSampler(size, batch_size=4, seed=position << 32) for position, size in enumerate(sizes)]
    sampler = MultiDatasetBatchSampler(samplers, sizes, "proportional", seed=0)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 10 + 3 + 5
    assert Counter(_dataset_of(batch, sizes) for batch in batches) == {0: 10, 1: 3, 2: 5}  # in proportion to sizes
    assert sorted(index for batch in batches for index in batch) == list(range(sum(sizes)))
    again = MultiDatasetBatchSampler(
        [ShuffledBatchSampler(size, batch_size=4, seed=position << 32) for position, size in enumerate(sizes)],
        sizes, "proportional", seed=0)
    assert list(again) == batches  # same seed and epoch: the same batches in the same order
    sampler.set_epoch(1)
    next_epoch = list(sampler)
    assert next_epoch != batches
    assert [_dataset_of(batch, sizes) for batch in next_epoch] != [_dataset_of(batch, sizes) for batch in batches]
    again.set_epoch(1)
    assert list(again) == next_epoch


def test_round_robin_alternates_until_the_smallest_dataset_runs_out():
    sizes = [40, 12]
    samplers = [ShuffledBatchSampler(size, batch_size=4, seed=position) for position, size in enumerate(sizes)]
    sampler = MultiDatasetBatchSampler(samplers, sizes, "round_robin", seed=0)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 6  # 3 batches of the 12-row dataset, each answered by one of the other
    assert [_dataset_of(batch, sizes) for batch in batches] == [0, 1, 0, 1, 0, 1]


def test_several_processes_take_one_dataset_per_step():
    sizes = [40, 20]
    samplers = [ShuffledBatchSampler(size, batch_size=4, seed=position, num_processes=2)
                for position, size in enumerate(sizes)]
    sampler = MultiDatasetBatchSampler(samplers, sizes, "proportional", seed=0, num_processes=2)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 2 * (5 + 3)  # steps of 2 batches (a global batch of 8 rows)
    steps = [batches[position : position + 2] for position in range(0, len(batches), 2)]
    assert all(_dataset_of(first + second, sizes) is not None for first, second in steps)
    assert sorted(index for batch in batches for index in batch) == list(range(sum(sizes)))


def test_no_duplicates_keeps_repeated_texts_apart_and_keeps_the_epoch_length():
    data = _repetitive(40)
    texts = list(zip(data["anchor"], data["positive"], strict=True))
    for epoch in range(3):
        sampler = NoDuplicatesBatchSampler(texts, batch_size=4, seed=0)
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(batches) == len(sampler) == 10
        for batch in batches:
            values = [value for index in batch for value in texts[index]]
            assert len(values) == len(set(values)), batch
    # two processes: the step's global batch of 8 rows (5 distinct anchors at most, so shorter) holds no repeat
    sampler = NoDuplicatesBatchSampler(texts, batch_size=4, seed=0, num_processes=2)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 10
    for first, second in zip(batches[::2], batches[1::2], strict=True):
        values = [value for index in first + second for value in texts[index]]
        assert len(values) == len(set(values)) and first and second


def test_no_duplicates_without_repeats_is_a_plain_seeded_batching():
    texts = [(f"a{index}", f"b{index}") for index in range(10)]
    batches = list(NoDuplicatesBatchSampler(texts, batch_size=4, seed=1))
    assert [len(batch) for batch in batches] == [4, 4, 2]
    assert sorted(index for batch in batches for index in batch) == list(range(10))
    assert [len(batch) for batch in NoDuplicatesBatchSampler(texts, batch_size=4, seed=1, drop_last=True)] == [4, 4]
    assert list(NoDuplicatesBatchSampler(texts, batch_size=4, seed=1)) == batches


def test_sampler_settings_are_checked():
    with pytest.raises(ValueError, match=r"`strategy` must be one of \['proportional', 'round_robin'\], got 'random'"):
        MultiDatasetBatchSampler([ShuffledBatchSampler(4, 2, 0)], [4], "random")
    with pytest.raises(ValueError, match="`batch_size` must be a positive integer, got 0"):
        ShuffledBatchSampler(4, 0, 0)


def test_collator_adds_the_dataset_name_and_refuses_mixed_rows():
    rows = NamedConcatDataset({"a": [{"x": 1}, {"x": 2}], "b": [{"x": 3}]})
    assert len(rows) == 3 and rows[2] == {"x": 3, "dataset_name": "b"} and rows[-1] == rows[2]
    collator = MultiDatasetCollator({"a": lambda batch: {"sum": sum(row["x"] for row in batch)},
                                     "b": lambda batch: {"count": len(batch)}})
    assert collator([rows[0], rows[1]]) == {"sum": 3, "dataset_name": "a"}
    assert collator([rows[2]]) == {"count": 1, "dataset_name": "b"}
    with pytest.raises(ValueError, match=r"must hold rows of one dataset.*\['a', 'b'\]"):
        collator([rows[0], rows[2]])


# -- the arguments ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("field", "value", "allowed"), [
    ("batch_sampler", "no_duplicate", r"\['batch_sampler', 'no_duplicates'\]"),
    ("multi_dataset_batch_sampler", "random", r"\['proportional', 'round_robin'\]"),
])
def test_bad_sampler_names_are_refused(tmp_path, field, value, allowed):
    with pytest.raises(ValueError, match=rf"^`{field}` must be one of {allowed}, got '{value}'\.$"):
        MatryoshkaTrainingArguments(output_dir=str(tmp_path), **{field: value})


def test_sentence_transformers_sampler_enums_are_taken(tmp_path):
    training_args = pytest.importorskip("sentence_transformers.sentence_transformer.training_args")
    args = MatryoshkaTrainingArguments(output_dir=str(tmp_path), batch_sampler=training_args.BatchSamplers.NO_DUPLICATES,
                                       multi_dataset_batch_sampler=training_args.MultiDatasetBatchSamplers.ROUND_ROBIN)
    assert (args.batch_sampler, args.multi_dataset_batch_sampler) == ("no_duplicates", "round_robin")
    assert type(args.batch_sampler) is str


# -- the trainer ------------------------------------------------------------------------------------------------


def test_each_batch_of_a_multi_dataset_run_comes_from_one_dataset(tmp_path, tiny_text_tower):
    train = {"questions": _questions(24), "titles": _titles(12)}
    trainer = _pair_trainer(tiny_text_tower, tmp_path, train)
    assert trainer.columns == {"questions": ("anchor", "positive"), "titles": ("title", "body")}
    loader = trainer.get_train_dataloader()
    batches = list(loader)
    assert len(batches) == len(loader) == 6 + 3
    names = Counter(batch["dataset_name"] for batch in batches)
    assert names == {"questions": 6, "titles": 3}
    for batch in batches:  # each batch holds the columns of its own dataset, and only those
        columns = trainer.columns[batch["dataset_name"]]
        assert {key for key in batch if isinstance(batch[key], dict)} == set(columns)
        assert batch[columns[0]]["input_ids"].shape[0] == 4


def test_round_robin_run_alternates_datasets(tmp_path, tiny_text_tower):
    trainer = _pair_trainer(tiny_text_tower, tmp_path, {"questions": _questions(24), "titles": _titles(12)},
                            multi_dataset_batch_sampler="round_robin")
    assert [batch["dataset_name"] for batch in trainer.get_train_dataloader()] == ["questions", "titles"] * 3


def test_multi_dataset_training_logs_each_datasets_loss(tmp_path, tiny_text_tower):
    trainer = _pair_trainer(tiny_text_tower, tmp_path, {"questions": _questions(24), "titles": _titles(12)},
                            max_steps=9)
    before = weights(trainer.model)
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logs) == 9
    for entry in logs:  # one step, one batch, one dataset: its loss is the step's loss
        (name,) = [key for key in entry if key in ("loss_questions", "loss_titles")]
        assert entry[name] == pytest.approx(entry["loss"], rel=1e-3)
    assert {key for entry in logs for key in entry} >= {"loss_questions", "loss_titles", "loss_dim8", "loss_dim32"}
    assert any(not torch.equal(value, before[name]) for name, value in weights(trainer.model).items())


def test_dataset_losses_average_the_steps_since_the_last_log(tmp_path, tiny_text_tower):
    trainer = _pair_trainer(tiny_text_tower, tmp_path, {"questions": _questions(24), "titles": _titles(12)},
                            max_steps=6, logging_steps=6)
    order = [batch["dataset_name"] for batch in list(trainer.get_train_dataloader())[:6]]
    steps = Counter(order)
    assert set(steps) == {"questions", "titles"}, order  # seed 0 draws both within the first 6 steps
    trainer.train()
    (entry,) = [entry for entry in trainer.state.log_history if "loss" in entry]
    mean = sum(steps[name] * entry[f"loss_{name}"] for name in steps) / 6  # Trainer's `loss`: the mean of the 6 steps
    assert entry["loss"] == pytest.approx(mean, rel=1e-3)


def test_multi_dataset_resume_replays_the_killed_runs_order(tmp_path, tiny_text_tower):
    train = {"questions": _questions(24), "titles": _titles(12)}
    common = dict(max_steps=13, save_strategy="steps", save_steps=11)  # 9 batches an epoch: resumed in the second
    full = _pair_trainer(tiny_text_tower, tmp_path / "full", train, **common)
    full.train()
    _pair_trainer(tiny_text_tower, tmp_path / "part", train, **common).train()
    torch.manual_seed(123)
    resumed = _pair_trainer(tiny_text_tower, tmp_path / "part", train, **common)
    assert resumed.train(resume_from_checkpoint=str(checkpoint_path(tmp_path / "part", 11))).global_step == 13
    expected = weights(full.model)
    for name, value in weights(resumed.model).items():
        torch.testing.assert_close(value, expected[name], rtol=0, atol=1e-6, msg=name)


def test_no_duplicates_batches_hold_no_repeated_text(tmp_path, tiny_text_tower):
    data = _repetitive(40)
    trainer = _pair_trainer(tiny_text_tower, tmp_path, data, batch_sampler="no_duplicates")
    sampler = trainer.get_train_batch_sampler()
    assert isinstance(sampler, NoDuplicatesBatchSampler)
    for batch in trainer.get_train_dataloader():  # the collator gives equal texts one id: all ids differ
        assert len(set(batch["anchor_ids"].tolist())) == len(batch["anchor_ids"])
        assert len(set(batch["positive_ids"].tolist())) == len(batch["positive_ids"])
        assert "dataset_name" not in batch
    trainer.train()
    assert trainer.state.global_step == 6


def test_no_duplicates_per_dataset_of_a_multi_dataset_run(tmp_path, tiny_text_tower):
    train = {"repetitive": _repetitive(40), "titles": _titles(12)}
    trainer = _pair_trainer(tiny_text_tower, tmp_path, train, batch_sampler="no_duplicates")
    batches = list(trainer.get_train_dataloader())
    assert Counter(batch["dataset_name"] for batch in batches) == {"repetitive": 10, "titles": 3}
    for batch in batches:
        for column in trainer.columns[batch["dataset_name"]]:
            ids = batch[f"{column}_ids"].tolist()
            assert len(set(ids)) == len(ids)


def test_several_image_datasets_train_a_classifier(tmp_path):
    train = {"dark": image_rows(16, seed=1), "light": image_rows(8, seed=2)}
    trainer = MatryoshkaTrainer(model=tiny_classifier(), args=_args(tmp_path, max_steps=3), train_dataset=train)
    batches = list(trainer.get_train_dataloader())
    assert [batch["dataset_name"] for batch in batches].count("light") == 2 and len(batches) == 6
    trainer.train()
    assert any(key.startswith("loss_") and key[5:] in train for entry in trainer.state.log_history for key in entry)


def test_string_labels_of_several_datasets_share_one_class_numbering(tmp_path):
    def with_names(rows, names):
        return datasets.Dataset.from_dict({"image": rows["image"], "label": [names[label] for label in rows["label"]]})

    train = {"a": with_names(image_rows(8, seed=1), ["cat", "dog", "cat", "dog"]),
             "b": with_names(image_rows(8, seed=2), ["emu", "fox", "cat", "dog"])}
    trainer = MatryoshkaTrainer(model=tiny_classifier(), args=_args(tmp_path), train_dataset=train)
    assert list(trainer.model.config.id2label.values()) == ["cat", "dog", "emu", "fox"]
    for name, names in (("a", ["cat", "dog", "cat", "dog"]), ("b", ["emu", "fox", "cat", "dog"])):
        part = trainer.train_dataset[name]
        assert [part.features["label"].int2str(label) for label in part["label"]] == names * 2


def test_a_dataset_that_does_not_fit_the_task_is_named(tmp_path):
    train = {"good": image_rows(8), "unlabelled": image_rows(8).remove_columns("label")}
    with pytest.raises(ValueError, match=r"^`train_dataset\['unlabelled'\]`: A MatryoshkaForImageClassification trains"):
        MatryoshkaTrainer(model=tiny_classifier(), args=_args(tmp_path), train_dataset=train)


def test_prompts_by_dataset_name_reach_each_datasets_batches(tmp_path, tiny_text_tower):
    trainer = _pair_trainer(tiny_text_tower, tmp_path, {"questions": _questions(8), "titles": _titles(8)},
                            prompts={"questions": {"anchor": "query: "}, "titles": {"body": "passage: "}})
    tokenizer = trainer.processing_class
    for batch in trainer.get_train_dataloader():
        first, second = (tokenizer.batch_decode(batch[column]["input_ids"], skip_special_tokens=True)
                         for column in trainer.columns[batch["dataset_name"]])
        if batch["dataset_name"] == "questions":
            assert all(text.startswith("query") for text in first) and not any("passage" in text for text in second)
        else:
            assert all(text.startswith("passage") for text in second) and not any("query" in text for text in first)


@pytest.mark.parametrize(("train", "overrides", "words"), [
    (lambda: {}, {}, r"`train_dataset` is an empty dict"),
    (lambda: {"": _questions()}, {}, r"keys name the datasets.*got ''"),
    (lambda: {"stream": _questions().to_iterable_dataset()}, {}, r"`train_dataset\['stream'\]` is a stream"),
    (lambda: {"q": _questions().add_column("dataset_name", ["x"] * 24)}, {}, r"has a 'dataset_name' column"),
    (lambda: {"q": _questions(), "t": _titles()}, {"anchor_column": "anchor"},
     r"^`train_dataset\['t'\]`: `anchor_column` 'anchor' is not a column"),
    (lambda: {"q": _questions(), "t": _titles()}, {"train_sampling_strategy": "group_by_length"},
     r"`train_sampling_strategy`='group_by_length'.*several training datasets"),
    (lambda: {"q": _questions(), "t": _titles(2)}, {"dataloader_drop_last": True},
     r"`train_dataset\['t'\]` has 2 rows, fewer than one batch of 4"),
    (lambda: _questions().to_iterable_dataset(), {"batch_sampler": "no_duplicates", "max_steps": 2},
     r"`batch_sampler`='no_duplicates' reads the texts .* IterableDataset"),
])
def test_bad_multi_dataset_input_is_refused_before_any_work(tmp_path, tiny_text_tower, train, overrides, words):
    with pytest.raises(ValueError, match=words):
        _pair_trainer(tiny_text_tower, tmp_path, train(), **overrides)


def test_no_duplicates_is_refused_for_an_image_classifier(tmp_path):
    with pytest.raises(ValueError, match="an image classifier trains on no text"):
        MatryoshkaTrainer(model=tiny_classifier(), args=_args(tmp_path, batch_sampler="no_duplicates"),
                          train_dataset=image_rows())


# -- several train files ----------------------------------------------------------------------------------------


def _write_jsonl(path, rows) -> str:
    import json

    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


@pytest.fixture
def pair_files(tmp_path):
    questions = _write_jsonl(tmp_path / "questions.jsonl", [{"anchor": f"q{i}", "positive": f"a{i}"} for i in range(6)])
    titles = _write_jsonl(tmp_path / "titles.jsonl", [{"title": f"t{i}", "body": f"b{i}"} for i in range(4)])
    dev = _write_jsonl(tmp_path / "dev.jsonl", [{"anchor": f"q{i}", "positive": f"a{i}"} for i in range(3)])
    return questions, titles, dev


def test_train_file_takes_several_files_from_the_command_line(pair_files):
    from transformers import HfArgumentParser

    from hf_mrl.data import DataArguments

    parser = HfArgumentParser(DataArguments)
    questions, titles, _ = pair_files
    (several,) = parser.parse_args_into_dataclasses(["--train_file", questions, titles])
    (one,) = parser.parse_args_into_dataclasses(["--train_file", questions])
    assert several.train_file == [questions, titles] and one.train_file == questions  # one file stays a path


def test_several_train_files_load_as_datasets_named_by_file(pair_files):
    from hf_mrl.data import DataArguments, load_splits

    questions, titles, dev = pair_files
    splits = load_splits(DataArguments(train_file=[questions, titles], validation_file=dev, max_train_samples=5),
                         "pairs")
    assert list(splits.train) == ["questions", "titles"]
    assert splits.train["questions"].column_names == ["anchor", "positive"] and len(splits.train["questions"]) == 5
    assert splits.train["titles"].column_names == ["title", "body"] and len(splits.train["titles"]) == 4
    assert splits.eval["anchor"] == ["q0", "q1", "q2"]
    assert load_splits(DataArguments(train_file=[questions, titles], validation_file=dev), "pairs",
                       need_train=False).train is None


@pytest.mark.parametrize(("change", "task", "words"), [
    ({"validation_file": None}, "pairs", r"give `validation_file` \(or `test_file`\) to evaluate on"),
    ({}, "classification", r"a classifier trains on one set of classes"),
    ({"streaming": True}, "pairs", r"`streaming` reads the train split as a stream"),
    ({"validation_split_percentage": 10}, "pairs", r"`validation_split_percentage` holds part of one train split"),
    ("same name", "pairs", r"two files named 'questions'"),
])
def test_bad_train_files_are_refused(pair_files, tmp_path, change, task, words):
    from hf_mrl.data import DataArguments, validate_data_arguments

    questions, titles, dev = pair_files
    values = dict(train_file=[questions, titles], validation_file=dev)
    if change == "same name":
        (tmp_path / "other").mkdir()
        values["train_file"] = [questions, _write_jsonl(tmp_path / "other" / "questions.jsonl", [{"anchor": "x"}])]
    else:
        values.update(change)
    with pytest.raises(ValueError, match=words):
        validate_data_arguments(DataArguments(**values), task)


# -- several processes ------------------------------------------------------------------------------------------


def _launch_two_processes(tiny_text_tower, output, **settings) -> list[dict]:
    """tests/multi_dataset_ddp.py on two CPU processes; each process's record."""
    import json
    import os
    from pathlib import Path

    from .launch import accelerate_launch

    output.mkdir(exist_ok=True)
    launch = ["--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
              "--dynamo_backend", "no"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "OMP_NUM_THREADS": "1"}
    script = Path(__file__).with_name("multi_dataset_ddp.py")
    finished = accelerate_launch(launch, script, [tiny_text_tower, str(output), json.dumps(settings)], output, env,
                                 timeout=300)
    assert finished.returncode == 0, finished.stderr[-3000:]
    tag = settings.get("tag", "rank")
    return [json.loads((output / f"{tag}{rank}.json").read_text()) for rank in (0, 1)]


@pytest.mark.slow
@pytest.mark.parametrize("batch_sampler", ["batch_sampler", "no_duplicates"])
def test_two_processes_train_on_one_dataset_per_step(tiny_text_tower, tmp_path, batch_sampler):
    """DDP on two CPU processes: at every step both hold a batch of the same dataset (the loss all-gathers one
    global batch), with no_duplicates no anchor repeats across the two, and both log the same `loss_<name>`."""
    first, second = _launch_two_processes(tiny_text_tower, tmp_path / "ddp", batch_sampler=batch_sampler)
    assert len(first["batches"]) == len(second["batches"]) == 8
    assert [batch["dataset_name"] for batch in first["batches"]] == [batch["dataset_name"] for batch in second["batches"]]
    assert {batch["dataset_name"] for batch in first["batches"]} == {"questions", "titles"}
    for mine, theirs in zip(first["batches"], second["batches"], strict=True):
        anchors = mine["anchors"] + theirs["anchors"]
        assert mine["anchors"] and theirs["anchors"]
        if batch_sampler == "no_duplicates":
            assert len(set(anchors)) == len(anchors), anchors
    logged = [{key: value for key, value in entry.items() if key.startswith("loss_")} for entry in first["logs"]]
    assert logged == [{key: value for key, value in entry.items() if key.startswith("loss_")} for entry in second["logs"]]
    assert {key for entry in logged for key in entry} >= {"loss_questions", "loss_titles"}


@pytest.mark.slow
@pytest.mark.parametrize("train", ["two", "one"])
def test_two_processes_resumed_in_the_second_epoch_replay_its_order(tiny_text_tower, tmp_path, train):
    """Accelerate's skipping dataloader of a resume does not pass `set_epoch` down to the sampler with several
    processes: the trainer does, so the resumed steps see the batches the killed run saw (two datasets: 8 steps
    an epoch; one: 5)."""
    save = 10 if train == "two" else 7
    output = tmp_path / "ddp"
    full = _launch_two_processes(tiny_text_tower, output, datasets=train, max_steps=14, save_steps=save, tag="full")
    resumed = _launch_two_processes(tiny_text_tower, output, datasets=train, max_steps=14, save_steps=save,
                                    resume=f"checkpoint-{save}", tag="resumed")
    for before, after in zip(full, resumed, strict=True):
        replayed = [batch for batch in before["batches"] if batch["step"] >= save]
        assert len(replayed) == 14 - save and after["batches"] == replayed
