"""The analyses end to end on tiny ViTs trained for a few steps on slices of Fashion-MNIST: each study writes its
markdown, JSON and plot, compares MRL with the FF model of each dim, and its numbers are the evaluators'."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
from accelerate.state import AcceleratorState

from hf_mrl.data import load_fashion_mnist
from hf_mrl.evaluation import MatryoshkaShiftEvaluator, load_results
from hf_mrl.recipes.analyses import load_classifier, train_run
from hf_mrl.recipes.analyses.runs import ff_arguments, mrl_arguments
from hf_mrl.recipes.analyses.studies import few_shot_study, long_tail_study, routing_study, shift_study

REPO = Path(__file__).resolve().parents[1]
DIMS = [8, 16, 32]
TINY = ["--dataset_name", "fashion-mnist", "--train_split", "train[:64]", "--eval_split", "train[64:96]",
        "--test_split", "test[:32]", "--backbone", "vit", "--hidden_size", "32", "--num_layers", "1",
        "--num_attention_heads", "2", "--per_device_train_batch_size", "16", "--max_steps", "3",
        "--eval_strategy", "no", "--max_knn_reference_samples", "32", "--seed", "0"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("analyses_runs")
    try:
        train_run([*TINY, *mrl_arguments(DIMS)], folder / "mrl")
        for dim in (8, 32):
            train_run([*TINY, *ff_arguments(dim)], folder / f"ff{dim}")
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
    return folder / "mrl", {8: folder / "ff8", 32: folder / "ff32"}


@pytest.fixture(scope="module")
def data():
    train = load_fashion_mnist(split="train", limit=120)
    return train.select(range(96)), train.select(range(96, 120)), load_fashion_mnist(split="test", limit=40)


@pytest.mark.slow
def test_finished_runs_are_reused(runs, capsys):
    mrl, _ = runs
    before = (mrl / "results.json").stat().st_mtime_ns
    summary = train_run([*TINY, *mrl_arguments(DIMS)], mrl)
    assert summary["steps"] == 3 and (mrl / "results.json").stat().st_mtime_ns == before
    assert "finished already" in capsys.readouterr().out
    with pytest.raises(ValueError, match=r"holds a run trained with other settings \(--hidden_size 32 there, 64 now\)"):
        train_run([*TINY, "--hidden_size", "64", *mrl_arguments(DIMS)], mrl)  # another study's run is not reused
    model, collate_fn = load_classifier(mrl)
    assert model.config.matryoshka_dims == DIMS and not model.training and collate_fn.image_processor is not None
    with pytest.raises(ValueError, match=r"No saved model in"):
        load_classifier(mrl / "missing")


@pytest.mark.slow
def test_shift_study_compares_mrl_with_ff_at_each_dim(runs, data, tmp_path):
    mrl, ff = runs
    train, _, test = data
    output = shift_study(tmp_path, mrl, ff, test, train, ["noise", "blur"], [1, 5], "tiny")
    results = output["results"]
    assert sorted({int(key.split("_dim")[1].split("_")[0]) for key in results["MRL"]}) == DIMS
    assert sorted({int(key.split("_dim")[1].split("_")[0]) for key in results["FF"]}) == [8, 32]
    for name in ("shift.md", "shift.json", "shift.png"):
        assert (tmp_path / name).is_file()
    assert load_results(tmp_path / "shift.json")["results"]["MRL"] == pytest.approx(results["MRL"])
    # The study's MRL numbers are the evaluator's on the same sets.
    model, collate_fn = load_classifier(mrl)
    direct = MatryoshkaShiftEvaluator(test, corruptions=["noise", "blur"], severities=[1, 5], reference_dataset=train,
                                      collate_fn=collate_fn, retrieval_metric_names=("mrl_map",), name="shift")(model)
    assert results["MRL"] == pytest.approx(direct)
    drops = output["drops"]["top1"]["noise"]["MRL"]
    expected = np.mean([results["MRL"][f"shift_dim8_noise-{s}_top1_drop"] for s in (1, 5)])
    assert drops["mean_dim8_drop"] == pytest.approx(expected)
    markdown = (tmp_path / "shift.md").read_text()
    assert "| dim | MRL top-1 (head) | FF top-1 (head) | MRL - FF top-1 (head)" in markdown
    clean = markdown.split("## Clean accuracy")[1].split("##")[0]
    assert f"| 8 | {100 * results['MRL']['shift_dim8_clean_top1']:.2f} | {100 * results['FF']['shift_dim8_clean_top1']:.2f} |" in clean
    assert "| 16 | " in clean and "| 16 | - | - | -" not in clean and "noise MRL" in markdown


@pytest.mark.slow
def test_few_shot_long_tail_and_routing_studies(runs, data, tmp_path):
    mrl, ff = runs
    train, validation, test = data
    few = few_shot_study(tmp_path / "few", mrl, ff, train, test, [5, 6], [str(c) for c in range(10)], "tiny",
                         shots=(1, 2), num_episodes=2)
    assert "few_shot_dim16_2shot_ncm_novel" in few["results"]["MRL"]
    assert "few_shot_dim8_1shot_logistic_base" in few["results"]["FF"]
    assert "novel" in (tmp_path / "few" / "few_shot.md").read_text()

    super_classes = {label: "even" if label % 2 == 0 else "odd" for label in range(10)}
    tail = long_tail_study(tmp_path / "tail", mrl, ff, test, np.asarray(train["label"]), super_classes, "tiny")
    assert sorted(tail["reports"]["MRL"]["per_dim"]) == DIMS and len(tail["reports"]["FF"]) == 2
    assert tail["results"]["MRL"]["per_class_dim8_acc"] == tail["reports"]["MRL"]["per_dim"][8]["accuracy"]
    assert (tmp_path / "tail" / "long_tail.png").is_file()

    routing = routing_study(tmp_path / "routing", mrl, validation, test, "tiny")
    assert set(routing["points"]) == {"single head", "cascade", "disagreement", "cascade + agreement"}
    assert 0 <= routing["full_dim_accuracy"] <= routing["oracle_accuracy"] <= 1
    text = (tmp_path / "routing" / "routing.md").read_text()
    assert text.count("| 8 & 16 | 32 |") == 1 and "| 8 & 16 | 16 |" not in text  # that would be head 16 alone


def test_run_analyses_rejects_bad_budgets_before_any_work():
    spec = importlib.util.spec_from_file_location("run_analyses", REPO / "scripts" / "run_analyses.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["run_analyses"] = module
    spec.loader.exec_module(module)
    with pytest.raises(ValueError, match=r"`--image_epochs` must be a positive integer, got 0"):
        module.parse_args(["--image_epochs", "0"])
    with pytest.raises(ValueError, match=r"`severity` must be an integer from 1 to 5, got 7"):
        module.parse_args(["--severities", "7"])
    with pytest.raises(SystemExit):
        module.parse_args(["--image_analyses", "sketch"])
    args = module.parse_args(["--image_analyses", "shift", "--text_analyses"])
    assert args.image_analyses == ["shift"] and args.text_analyses == []
