"""`MatryoshkaTrainer` on transformers' `Trainer`: the `TrainingArguments` users reach for work as transformers
documents them (one test per group, on tiny models), and what cannot work is refused before any work."""

import dataclasses
import json

import pytest
import torch
import torch.nn.functional as F
from transformers import EarlyStoppingCallback, TrainingArguments

from hf_mrl import MatryoshkaDualEncoderModel, MatryoshkaModel
from hf_mrl.modeling.configuration_matryoshka import MatryoshkaDualEncoderConfig
from hf_mrl.training import NOT_EXERCISED_FIELDS, MatryoshkaTrainer, MatryoshkaTrainingArguments, checkpoint_path
from hf_mrl.training.arguments import REFUSED

from .tiny import tiny_bert_config, tiny_inputs, tiny_vit_config
from .trainer_helpers import image_rows, tiny_classifier, tiny_trainer, weights


def _saved_bytes(forward) -> tuple[torch.Tensor, int]:
    """The loss `forward()` returns and the bytes autograd keeps for the backward (the activation memory)."""
    total = [0]

    def pack(tensor):
        total[0] += tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = forward()
    return loss, total[0]


def _checkpointed_vs_plain(model, forward):
    model.train()
    plain_loss, plain_bytes = _saved_bytes(forward)
    plain_loss.backward()
    plain_grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    model.activation_checkpointing_enable()
    loss, saved = _saved_bytes(forward)
    loss.backward()
    torch.testing.assert_close(loss, plain_loss, rtol=0, atol=1e-5)
    for name, grad in plain_grads.items():
        torch.testing.assert_close(dict(model.named_parameters())[name].grad, grad, rtol=1e-4, atol=1e-5, msg=name)
    return saved, plain_bytes


# -- gradient checkpointing -----------------------------------------------------------------------------------


def test_gradient_checkpointing_flag_reaches_the_backbone_and_keeps_the_loss(tmp_path):
    trainer = tiny_trainer(tmp_path, gradient_checkpointing=True, max_steps=2)
    trainer.train()
    assert trainer.model.is_gradient_checkpointing
    assert any(getattr(module, "gradient_checkpointing", False) for module in trainer.model.matryoshka.backbone.modules())
    batch = {"pixel_values": torch.randn(8, 1, 28, 28), "labels": torch.arange(8) % 4}
    model = tiny_classifier()
    saved, plain = _checkpointed_vs_plain(model, lambda: model(**batch).loss)
    assert saved < plain / 2, (saved, plain)


def test_gradient_checkpointing_on_both_towers_of_the_dual_encoder():
    torch.manual_seed(0)
    config = MatryoshkaDualEncoderConfig(
        vision_config=tiny_vit_config(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0),
        text_config=tiny_bert_config(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0), projection_dim=16)
    model = MatryoshkaDualEncoderModel(config)
    inputs = {**tiny_inputs("vit", batch=4), **tiny_inputs("bert", batch=4)}
    saved, plain = _checkpointed_vs_plain(model, lambda: model(**inputs, return_loss=True).loss)
    assert saved < plain / 2, (saved, plain)
    for tower in (model.vision_model, model.text_model):
        assert any(getattr(module, "gradient_checkpointing", False) for module in tower.modules())


# -- optimizers, label smoothing, data loading ----------------------------------------------------------------


@pytest.mark.parametrize(("optim", "class_name"), [("adafactor", "Adafactor"), ("adamw_torch_fused", "AdamW"),
                                                    ("sgd", "SGD")])
def test_optim_changes_the_optimizer_and_keeps_the_head_learning_rate(tmp_path, optim, class_name):
    trainer = tiny_trainer(tmp_path, optim=optim, learning_rate=1e-4, head_learning_rate=1e-2, max_steps=2)
    optimizer = trainer.create_optimizer()
    assert type(optimizer).__name__ == class_name
    if optim == "adamw_torch_fused":
        assert optimizer.defaults["fused"] is True
    rate_of = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
    for name, parameter in trainer.model.named_parameters():
        assert rate_of[id(parameter)] == (1e-2 if name.startswith("heads.") else 1e-4), name
    trainer.train()  # and it trains
    assert trainer.state.global_step == 2


def test_optimizer_settings_reach_the_optimizer_and_scheduler(tmp_path):
    trainer = tiny_trainer(tmp_path, adam_beta1=0.8, adam_beta2=0.95, adam_epsilon=1e-6, optim="adamw_torch",
                           optim_args=None, lr_scheduler_type="cosine_with_restarts",
                           lr_scheduler_kwargs={"num_cycles": 2}, warmup_steps=2, max_steps=10)
    trainer.create_optimizer_and_scheduler(num_training_steps=10)
    group = trainer.optimizer.param_groups[0]
    assert group["betas"] == (0.8, 0.95) and group["eps"] == 1e-6
    rates = []
    for _ in range(10):
        rates.append(trainer.lr_scheduler.get_last_lr()[-1])
        trainer.optimizer.step()
        trainer.lr_scheduler.step()
    assert rates[0] == 0.0 and rates[2] == pytest.approx(3e-3)  # warm-up of 2 steps
    assert rates[6] > rates[5]  # a restart: two cycles


def test_label_smoothing_factor_equals_the_smoothed_nested_cross_entropy(tmp_path):
    trainer = tiny_trainer(tmp_path, label_smoothing_factor=0.1)
    batch = next(iter(trainer.get_train_dataloader()))
    model = trainer.model.eval()  # no dropout: the two forwards below see the same embeddings
    with torch.no_grad():
        for parameter in model.heads.parameters():
            parameter.mul_(30)  # confident logits, where smoothing matters
    loss = trainer.compute_loss(model, batch)
    logits = model(pixel_values=batch["pixel_values"], output_matryoshka_logits=True).matryoshka_logits
    reference = sum(F.cross_entropy(dim_logits, batch["labels"], label_smoothing=0.1) for dim_logits in logits)
    torch.testing.assert_close(loss, reference, rtol=1e-5, atol=1e-6)
    unsmoothed = sum(F.cross_entropy(dim_logits, batch["labels"]) for dim_logits in logits)
    assert abs(float((loss - unsmoothed).detach())) > 1e-3


def test_data_workers_see_the_same_batches(tmp_path):
    def batches(workers):
        trainer = tiny_trainer(tmp_path / str(workers), dataloader_num_workers=workers, seed=3)
        return [(batch["pixel_values"], batch["labels"]) for batch in trainer.get_train_dataloader()]

    plain, parallel = batches(0), batches(2)
    assert len(plain) == len(parallel) == 4
    for (pixels, labels), (pixels_w, labels_w) in zip(plain, parallel):
        torch.testing.assert_close(pixels_w, pixels)
        assert labels_w.tolist() == labels.tolist()


def test_sequential_and_group_by_length_sampling(tmp_path):
    trainer = tiny_trainer(tmp_path, train_sampling_strategy="sequential")
    labels = torch.cat([batch["labels"] for batch in trainer.get_train_dataloader()]).tolist()
    assert labels == [index % 4 for index in range(32)]


# -- evaluation, best model, callbacks ------------------------------------------------------------------------


class ScriptedEvaluator:
    """A user evaluator whose top-1 at dim 8 follows a script (the trainer takes any callable)."""

    def __init__(self, values):
        self.values, self.calls = list(values), 0

    def __call__(self, model):
        value = self.values[min(self.calls, len(self.values) - 1)]
        self.calls += 1
        return {"toy_dim8_top1": value, "toy_dim16_top1": 0.5}


def test_load_best_model_at_end_restores_the_best_per_dim_checkpoint(tmp_path):
    evaluator = ScriptedEvaluator([0.2, 0.9, 0.3, 0.1])
    trainer = tiny_trainer(tmp_path, max_steps=4, eval_strategy="steps", eval_steps=1, save_strategy="steps",
                           save_steps=1, save_total_limit=2, load_best_model_at_end=True,
                           metric_for_best_model="eval_toy_dim8_top1", greater_is_better=True, evaluator=evaluator)
    trainer.train()
    best = checkpoint_path(tmp_path, 2)
    assert trainer.state.best_model_checkpoint == str(best) and trainer.state.best_metric == 0.9
    assert sorted(path.name for path in tmp_path.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    from safetensors.torch import load_file

    saved = load_file(best / "model.safetensors")
    restored = weights(trainer.model)
    assert any(torch.equal(restored[name], tensor) for name, tensor in saved.items() if name in restored)
    reloaded = type(trainer.model).from_pretrained(best)
    for name, value in weights(reloaded).items():
        torch.testing.assert_close(restored[name], value, rtol=0, atol=0, msg=name)


def test_early_stopping_callback_stops_on_a_per_dim_metric(tmp_path):
    evaluator = ScriptedEvaluator([0.5, 0.4, 0.3, 0.2, 0.1])
    args = MatryoshkaTrainingArguments(
        output_dir=str(tmp_path), max_steps=10, per_device_train_batch_size=8, eval_strategy="steps", eval_steps=1,
        save_strategy="steps", save_steps=1, load_best_model_at_end=True, metric_for_best_model="toy_dim8_top1",
        report_to="none", disable_tqdm=True)
    trainer = MatryoshkaTrainer(model=tiny_classifier(), args=args, train_dataset=image_rows(), evaluator=evaluator,
                                callbacks=[EarlyStoppingCallback(early_stopping_patience=2)])
    trainer.train()
    assert trainer.state.global_step == 3 and evaluator.calls == 3


def test_tensorboard_receives_the_per_dim_losses(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    trainer = tiny_trainer(tmp_path, report_to="tensorboard", logging_steps=1, max_steps=3)
    trainer.train()
    events = [path for path in tmp_path.rglob("events.out.tfevents.*")]
    assert events
    accumulator = EventAccumulator(str(events[0].parent))
    accumulator.Reload()
    tags = set(accumulator.Tags()["scalars"])
    assert {"train/loss", "train/loss_dim8", "train/loss_dim16"} <= tags
    assert len(accumulator.Scalars("train/loss_dim8")) == 3


def test_evaluate_scores_the_dataset_it_is_given_with_trainer_keys(tmp_path):
    rows = image_rows(32)
    trainer = tiny_trainer(tmp_path, eval_dataset=rows.select(range(8)))
    trainer.name = "toy"
    metrics = trainer.evaluate()
    assert {"eval_toy_dim8_top1", "eval_toy_dim16_1nn"} <= set(metrics)
    other = trainer.evaluate(rows.select(range(8, 32)), metric_key_prefix="test")
    assert set(other) == {key.replace("eval_", "test_", 1) for key in metrics}
    logged = [entry for entry in trainer.state.log_history if "test_toy_dim8_top1" in entry]
    assert len(logged) == 1


# -- refused before any work ----------------------------------------------------------------------------------

REFUSED_VALUES = {
    "prediction_loss_only": True, "eval_accumulation_steps": 2, "include_for_metrics": ["inputs"],
    "batch_eval_metrics": True, "eval_do_concat_batches": False, "eval_use_gather_object": True,
    "label_names": ["labels"], "bf16_full_eval": True, "fp16_full_eval": True, "use_liger_kernel": True,
    "use_cache": True, "hub_strategy": "checkpoint", "train_sampling_strategy": "batch_rebalance",
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_refused_fields_name_the_field_before_any_work(tmp_path, name):
    with pytest.raises(ValueError, match=rf"`{name}`=.* is not supported by MatryoshkaTrainer: "):
        MatryoshkaTrainingArguments(output_dir=str(tmp_path / "out"), **{name: REFUSED_VALUES[name]})
    assert not (tmp_path / "out").exists()


def test_deepspeed_without_its_package_is_a_clear_error(tmp_path):
    import importlib.util

    if importlib.util.find_spec("deepspeed") is not None:
        pytest.skip("deepspeed is installed")
    with pytest.raises(ValueError, match=r"`deepspeed`=.*needs the deepspeed package: pip install 'hf_mrl\[deepspeed\]'"):
        MatryoshkaTrainingArguments(output_dir=str(tmp_path), deepspeed=str(tmp_path / "ds.json"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="FSDP is refused on the CPU only")
def test_fsdp_on_the_cpu_is_refused_rather_than_ignored(tmp_path):
    with pytest.raises(ValueError, match=r"`fsdp`=.*on the CPU Accelerate runs plain data parallel"):
        MatryoshkaTrainingArguments(output_dir=str(tmp_path), fsdp="full_shard")


def _pairs():
    import datasets

    return datasets.Dataset.from_dict({"anchor": ["a cat", "a dog"] * 4, "positive": ["cat", "dog"] * 4})


@pytest.mark.parametrize(("setting", "model_kind", "words"), [
    ({"label_smoothing_factor": 0.1}, "pairs", "contrastive_label_smoothing"),
    ({"neftune_noise_alpha": 5.0}, "vision", "no token embeddings"),
    ({"include_num_input_tokens_seen": "all"}, "pairs", "two towers"),
])
def test_arguments_without_meaning_for_the_task_are_refused(tmp_path, tiny_text_tower, setting, model_kind, words):
    if model_kind == "pairs":
        model, data = MatryoshkaModel.from_backbone(tiny_text_tower, matryoshka_dims=[8, 32]), _pairs()
    else:
        model, data = tiny_classifier(), image_rows()
    args = MatryoshkaTrainingArguments(output_dir=str(tmp_path), report_to="none", **setting)
    with pytest.raises(ValueError, match=words):
        MatryoshkaTrainer(model=model, args=args, train_dataset=data)


@pytest.mark.parametrize("argument", ["compute_metrics", "model_init", "compute_loss_func", "preprocess_logits_for_metrics"])
def test_trainer_arguments_that_evaluators_replace_are_refused(tmp_path, argument):
    with pytest.raises(ValueError, match=rf"`{argument}` is not supported by MatryoshkaTrainer"):
        MatryoshkaTrainer(model=tiny_classifier(), args=TrainingArguments(output_dir=str(tmp_path)),
                          train_dataset=image_rows(), **{argument: lambda *a, **k: None})


def test_neftune_noise_reaches_a_text_classifier(tmp_path, tiny_text_tower):
    import datasets
    from transformers import TrainerCallback

    from hf_mrl import MatryoshkaForSequenceClassification

    class RecordEmbeddings(TrainerCallback):
        """Registered after Trainer's NEFTune hook, so it sees what the encoder gets."""

        def __init__(self, module):
            self.module, self.seen, self.handle = module, [], None

        def on_step_begin(self, args, state, control, **kwargs):
            if self.handle is None:
                self.handle = self.module.register_forward_hook(
                    lambda module, inputs, output: self.seen.append((inputs[0].clone(), output.detach().clone())))

    torch.manual_seed(0)
    model = MatryoshkaForSequenceClassification.from_backbone(tiny_text_tower, num_labels=2, matryoshka_dims=[8, 32])
    data = datasets.Dataset.from_dict({"text": ["a cat", "a car"] * 8, "label": [0, 1] * 8})
    args = MatryoshkaTrainingArguments(output_dir=str(tmp_path), max_steps=1, per_device_train_batch_size=4,
                                       neftune_noise_alpha=5.0, report_to="none", save_strategy="no")
    recorder = RecordEmbeddings(model.get_input_embeddings())
    assert recorder.module is model.matryoshka.backbone.embeddings.word_embeddings
    MatryoshkaTrainer(model=model, args=args, train_dataset=data, callbacks=[recorder]).train()
    ids, noisy = recorder.seen[0]
    recorder.handle.remove()
    clean = recorder.module(ids)  # the NEFTune hook is gone after training
    noise = (noisy - clean).abs()
    bound = 5.0 / (ids.shape[1] * clean.shape[-1]) ** 0.5  # NEFTune: uniform noise scaled by alpha / sqrt(L d)
    assert noise.max() > 0 and noise.max() <= bound + 1e-6


# -- every field works or is refused --------------------------------------------------------------------------

# field -> the test (in this file or another) that exercises it
EXERCISED = {
    "output_dir": "test_training_checkpointing.py::test_training_saves_rotates_and_keeps_the_newest",
    "per_device_train_batch_size": "test_trainer_flags.py::test_data_workers_see_the_same_batches",
    "num_train_epochs": "test_train_supervised.py::test_bert_from_scratch_mrl_e_on_wordnet",
    "max_steps": "test_training_checkpointing.py::test_resume_continues_exactly_where_the_run_stopped",
    "learning_rate": "test_trainer_flags.py::test_optim_changes_the_optimizer_and_keeps_the_head_learning_rate",
    "lr_scheduler_type": "test_trainer_flags.py::test_optimizer_settings_reach_the_optimizer_and_scheduler",
    "lr_scheduler_kwargs": "test_trainer_flags.py::test_optimizer_settings_reach_the_optimizer_and_scheduler",
    "warmup_steps": "test_trainer_flags.py::test_optimizer_settings_reach_the_optimizer_and_scheduler",
    "optim": "test_trainer_flags.py::test_optim_changes_the_optimizer_and_keeps_the_head_learning_rate",
    "optim_args": "test_trainer_flags.py::test_optimizer_settings_reach_the_optimizer_and_scheduler",
    "weight_decay": "test_train_supervised.py::test_new_layers_learn_at_the_head_learning_rate",
    "adam_beta1": "test_trainer_flags.py::test_optimizer_settings_reach_the_optimizer_and_scheduler",
    "adam_beta2": "test_trainer_flags.py::test_optimizer_settings_reach_the_optimizer_and_scheduler",
    "adam_epsilon": "test_trainer_flags.py::test_optimizer_settings_reach_the_optimizer_and_scheduler",
    "gradient_accumulation_steps": "test_trainer_kill_resume.py::test_ten_sigkills_then_resume_equal_an_uninterrupted_run",
    "max_grad_norm": "test_trainer_flags.py::test_max_grad_norm_clips",
    "label_smoothing_factor": "test_trainer_flags.py::test_label_smoothing_factor_equals_the_smoothed_nested_cross_entropy",
    "bf16": "test_train_supervised.py::test_two_processes_with_accelerate_launch",
    "activation_checkpointing": "test_trainer_flags.py::test_gradient_checkpointing_on_both_towers_of_the_dual_encoder",
    "gradient_checkpointing": "test_trainer_flags.py::test_gradient_checkpointing_flag_reaches_the_backbone_and_keeps_the_loss",
    "torch_compile": "test_trainer_compile.py::test_torch_compile_equals_eager",
    "neftune_noise_alpha": "test_trainer_flags.py::test_neftune_noise_reaches_a_text_classifier",
    "logging_steps": "test_trainer_flags.py::test_tensorboard_receives_the_per_dim_losses",
    "disable_tqdm": "test_trainer_flags.py::test_disable_tqdm_keeps_the_output_free_of_bars",
    "report_to": "test_trainer_flags.py::test_tensorboard_receives_the_per_dim_losses",
    "eval_strategy": "test_trainer_flags.py::test_load_best_model_at_end_restores_the_best_per_dim_checkpoint",
    "per_device_eval_batch_size": "test_train_supervised.py::test_vit_mrl_writes_model_card_and_per_dim_results",
    "eval_on_start": "test_train_contrastive.py::test_pairs_run_streams_accumulates_and_saves_everything",
    "save_strategy": "test_training_checkpointing.py::test_training_saves_rotates_and_keeps_the_newest",
    "save_steps": "test_training_checkpointing.py::test_training_saves_rotates_and_keeps_the_newest",
    "save_total_limit": "test_training_checkpointing.py::test_training_saves_rotates_and_keeps_the_newest",
    "push_to_hub": "test_trainer_hub.py::test_push_to_hub_lands_model_and_card_on_the_hub",
    "hub_token": "test_trainer_hub.py::test_push_to_hub_lands_model_and_card_on_the_hub",
    "hub_model_id": "test_trainer_hub.py::test_push_to_hub_lands_model_and_card_on_the_hub",
    "hub_strategy": "test_trainer_flags.py::test_refused_fields_name_the_field_before_any_work",
    "load_best_model_at_end": "test_trainer_flags.py::test_load_best_model_at_end_restores_the_best_per_dim_checkpoint",
    "metric_for_best_model": "test_trainer_flags.py::test_early_stopping_callback_stops_on_a_per_dim_metric",
    "greater_is_better": "test_trainer_flags.py::test_load_best_model_at_end_restores_the_best_per_dim_checkpoint",
    "seed": "test_trainer_flags.py::test_data_workers_see_the_same_batches",
    "data_seed": "test_trainer_flags.py::test_data_seed_sets_the_order_alone",
    "use_cpu": "test_train_supervised.py::test_two_processes_equal_one_process_on_the_global_batch",
    "dataloader_drop_last": "test_trainer_flags.py::test_dataloader_drop_last",
    "dataloader_num_workers": "test_trainer_flags.py::test_data_workers_see_the_same_batches",
    "train_sampling_strategy": "test_trainer_flags.py::test_sequential_and_group_by_length_sampling",
    "resume_from_checkpoint": "test_train_supervised.py::test_sigkill_right_after_a_checkpoint_then_resume_gives_the_same_weights",
    **{name: "test_trainer_flags.py::test_refused_fields_name_the_field_before_any_work" for name in REFUSED},
    "include_num_input_tokens_seen": "test_trainer_flags.py::test_arguments_without_meaning_for_the_task_are_refused",
    "deepspeed": "test_trainer_flags.py::test_deepspeed_without_its_package_is_a_clear_error",
    "fsdp": "test_trainer_flags.py::test_fsdp_on_the_cpu_is_refused_rather_than_ignored",
}


def test_every_training_argument_is_exercised_or_documented():
    import importlib
    from pathlib import Path

    missing, stale = [], []
    for field in dataclasses.fields(TrainingArguments):
        where = EXERCISED.get(field.name) or ""
        if not where and field.name not in NOT_EXERCISED_FIELDS:
            missing.append(field.name)
            continue
        if where:
            module_file, test_name = where.split("::")
            module = importlib.import_module(f"tests.{Path(module_file).stem}")
            if not callable(getattr(module, test_name, None)):
                stale.append(where)
    assert not missing, f"TrainingArguments fields neither tested nor documented: {missing}"
    assert not stale, f"EXERCISED names tests that do not exist: {stale}"
    for name, reason in NOT_EXERCISED_FIELDS.items():
        assert name in {field.name for field in dataclasses.fields(TrainingArguments)}, name
        assert reason and len(reason) > 10, name


def test_max_grad_norm_clips(tmp_path):
    trainer = tiny_trainer(tmp_path, max_grad_norm=1e-3, max_steps=2, learning_rate=1.0, optim="sgd")
    before = weights(trainer.model)
    trainer.train()
    change = sum(float((value - before[name]).pow(2).sum()) for name, value in weights(trainer.model).items()) ** 0.5
    assert change <= 2 * 1e-3 + 1e-6  # two SGD steps of clipped gradients at lr 1 (the head lr is max(lr, 1e-3) = 1)


def test_data_seed_sets_the_order_alone(tmp_path):
    def order(seed, data_seed):
        trainer = tiny_trainer(tmp_path / f"{seed}-{data_seed}", seed=seed, data_seed=data_seed)
        return torch.cat([batch["labels"] for batch in trainer.get_train_dataloader()]).tolist()

    assert order(1, 7) == order(2, 7)
    assert order(1, 7) != order(1, 8)


def test_dataloader_drop_last(tmp_path):
    rows = image_rows(30)
    assert len(tiny_trainer(tmp_path, train_dataset=rows).get_train_dataloader()) == 4
    assert len(tiny_trainer(tmp_path, train_dataset=rows, dataloader_drop_last=True).get_train_dataloader()) == 3


def test_disable_tqdm_keeps_the_output_free_of_bars(tmp_path, capfd):
    tiny_trainer(tmp_path, disable_tqdm=True, max_steps=2).train()
    captured = capfd.readouterr()
    assert "it/s]" not in captured.err and "it/s]" not in captured.out


def test_a_plain_training_arguments_keeps_every_value(tmp_path):
    args = TrainingArguments(output_dir=str(tmp_path), learning_rate=4e-4, max_steps=2, report_to="none",
                             per_device_train_batch_size=8, save_strategy="no")
    trainer = MatryoshkaTrainer(model=tiny_classifier(), args=args, train_dataset=image_rows())
    assert isinstance(trainer.args, MatryoshkaTrainingArguments)
    assert trainer.args.learning_rate == 4e-4 and trainer.args.max_steps == 2
    assert json.loads(json.dumps(trainer.args.to_dict()))["learning_rate"] == 4e-4


def test_a_metric_for_best_model_the_evaluation_never_writes_is_refused_up_front(tmp_path):
    with pytest.raises(ValueError, match=r"`metric_for_best_model`='eval_fmnist_dim12_top1' is not a key .*eval_dim<k>"):
        tiny_trainer(tmp_path, eval_dataset=image_rows(8), eval_strategy="steps", save_strategy="steps",
                     load_best_model_at_end=True, metric_for_best_model="eval_fmnist_dim12_top1")


def test_a_dict_of_eval_datasets_is_scored_one_by_one(tmp_path):
    rows = image_rows(32)
    trainer = tiny_trainer(tmp_path, eval_dataset={"bright": rows.select(range(0, 32, 2)), "dark": rows.select(range(1, 32, 2))})
    metrics = trainer.evaluate()
    assert {"eval_bright_dim8_top1", "eval_dark_dim16_1nn"} <= set(metrics)
