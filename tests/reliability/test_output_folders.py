"""Output folders of the training scripts, `hf-mrl eval` and `tune_weights.py` (issue 22): results go beside the
user's files only under names no user file holds, or the run is refused before any work with the names in the
way; a file an earlier hf_mrl run wrote (recorded, unchanged) may be replaced, one edited since is the user's.
No output folder given: the run says where it writes and never replaces an earlier run. tune_weights checks
every argument and every run folder of its study before the first training run.

Scripts run in-process; training, data loading and model loading are spies that fail the test if reached."""

import json
from pathlib import Path

import pytest

from hf_mrl.modeling.files import RECORD_NAME
from hf_mrl.output_folder import (
    check_default_output_folder,
    check_output_names,
    record_outputs,
    write_output,
)
from hf_mrl.recipes.analyses.runs import RUN_RECORD
from hf_mrl.training import MatryoshkaTrainer
from hf_mrl.training.launch import run_script

from ..script_loading import load_script

REPO = Path(__file__).resolve().parents[2]




train_supervised = load_script("train_supervised")
train_contrastive = load_script("train_contrastive")
tune_weights = load_script("tune_weights")

VIT = ["--backbone", "vit", "--hidden_size", "32", "--num_layers", "1", "--num_attention_heads", "2"]
SUPERVISED = ["--dataset_name", "fashion-mnist", "--max_train_samples", "32", "--max_eval_samples", "16",
              "--max_steps", "1", *VIT]
PAIRS = ["--dataset_name", "wordnet-pairs", "--max_train_samples", "16", "--max_eval_samples", "8", "--max_steps", "1"]
TINY_STUDY = ["--dataset_name", "fashion-mnist", "--train_split", "train[:64]", "--eval_split", "train[64:96]",
              "--test_split", "test[:32]", *VIT, "--per_device_train_batch_size", "16", "--max_steps", "4",
              "--eval_strategy", "no", "--seed", "0"]
STUDY = ["--dims", "8", "16", "32", "--presets", "uniform", "--ff_dims", "8", "--num_search", "1", "--num_proposed", "1",
         "--noise_seeds", "1"]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in folder.iterdir() if path.is_file()}


@pytest.fixture
def no_work(monkeypatch):
    """Training, evaluation, saving, data and model loading fail the test: refusals come before any work."""

    def spy(*args, **kwargs):
        raise AssertionError("work started before the refusal")

    for name in ("train", "evaluate", "save_model"):
        monkeypatch.setattr(MatryoshkaTrainer, name, spy)
    monkeypatch.setattr("hf_mrl.recipes.training.load_splits", spy)
    monkeypatch.setattr("hf_mrl.recipes.training.AutoTokenizer.from_pretrained", spy)
    monkeypatch.setattr("hf_mrl.cli._load_model", spy)
    monkeypatch.setattr("hf_mrl.recipes.analyses.weights.train_run", spy)
    monkeypatch.setattr("hf_mrl.recipes.analyses.weights.validation_split", spy)


def run(script, argv, capsys, prog) -> tuple[int, str]:
    from accelerate.state import AcceleratorState

    try:
        status = run_script(script.main, argv, prog=prog)
    except SystemExit as exit_info:  # argparse
        status = exit_info.code
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
    return status, capsys.readouterr().err


# -- the helper -------------------------------------------------------------------------------------------------


def test_a_user_file_under_an_output_name_is_refused_with_its_name(tmp_path):
    (tmp_path / "results.json").write_text('{"mine": 1}')
    (tmp_path / "notes.txt").write_text("keep")
    before = snapshot(tmp_path)
    with pytest.raises(ValueError, match=r"already holds results.json \(not written by hf_mrl\).*never replaces a file of yours"):
        check_output_names(tmp_path, ["results.json", "plot.png"])
    with pytest.raises(ValueError, match=r"results.json \(not written by hf_mrl\)"):
        write_output(tmp_path, "results.json", lambda path: path.write_text("{}"))
    assert snapshot(tmp_path) == before
    check_output_names(tmp_path, ["plot.png"])  # beside the user's files, under a free name: fine


def test_a_file_hf_mrl_wrote_is_replaced_and_one_edited_since_is_the_users(tmp_path):
    write_output(tmp_path, "results.json", lambda path: path.write_text('{"run": 1}'))
    assert json.loads((tmp_path / RECORD_NAME).read_text())["files"].keys() == {"results.json"}
    write_output(tmp_path, "results.json", lambda path: path.write_text('{"run": 2}'))  # an earlier run's: replaced
    assert (tmp_path / "results.json").read_text() == '{"run": 2}'
    (tmp_path / "results.json").write_text('{"run": 2, "my note": "edited"}')
    with pytest.raises(ValueError, match=r"results.json \(written by an earlier hf_mrl run, changed since: yours now\)"):
        write_output(tmp_path, "results.json", lambda path: path.write_text('{"run": 3}'))
    assert (tmp_path / "results.json").read_text() == '{"run": 2, "my note": "edited"}'


def test_links_and_folders_are_never_written_over(tmp_path):
    target = tmp_path / "elsewhere.json"
    target.write_text("theirs")
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.json").symlink_to(target)
    (out / "plot.png").mkdir()
    with pytest.raises(ValueError, match=r"results.json, plot.png \(not written by hf_mrl\)"):
        check_output_names(out, ["results.json", "plot.png"])
    assert target.read_text() == "theirs"


def test_record_outputs_records_files_another_writer_wrote(tmp_path):
    (tmp_path / "weights.md").write_text("table")
    record_outputs(tmp_path, ["weights.md"])
    check_output_names(tmp_path, ["weights.md"])
    (tmp_path / "weights.md").write_text("my edit")
    with pytest.raises(ValueError, match="yours now"):
        check_output_names(tmp_path, ["weights.md"])


def test_a_default_folder_is_said_and_never_replaced(tmp_path, capsys):
    folder = tmp_path / "trainer_output"
    check_default_output_folder(folder, "the default", "`--output_dir trainer_output`")
    assert f"writing to {folder}" in capsys.readouterr().err
    folder.mkdir()
    (folder / "results.json").write_text("earlier run")
    with pytest.raises(ValueError, match=r"no `--output_dir` given.*holds an earlier run \(results.json\); refusing"):
        check_default_output_folder(folder, "the default", "`--output_dir trainer_output`")
    check_default_output_folder(folder, "the default", "", continuing=True)
    assert (folder / "results.json").read_text() == "earlier run"


# -- the training scripts and hf-mrl eval -----------------------------------------------------------------------


@pytest.mark.parametrize(("script", "argv", "names"), [
    pytest.param(train_supervised, SUPERVISED, ["results.json", "accuracy_vs_dim.png"], id="supervised"),
    pytest.param(train_contrastive, PAIRS, ["results.json", "recall_vs_dim.png"], id="contrastive"),
])
def test_training_scripts_refuse_user_results_before_any_work(tmp_path, capsys, no_work, script, argv, names):
    out = tmp_path / "out"
    out.mkdir()
    for name in names:
        (out / name).write_bytes(b"the user's " + name.encode())
    before = snapshot(out)
    status, error = run(script, [*argv, "--output_dir", str(out)], capsys, "script")
    assert status == 1, error
    assert f"already holds {', '.join(names)} (not written by hf_mrl)" in error and "--output_dir" in error
    assert snapshot(out) == before


def test_no_output_dir_says_where_and_refuses_an_earlier_run(tmp_path, capsys, no_work, monkeypatch):
    monkeypatch.chdir(tmp_path)
    calls = []
    monkeypatch.setattr(train_supervised, "run_supervised", lambda *parsed: calls.append(parsed[2].output_dir))
    status, error = run(train_supervised, SUPERVISED, capsys, "train_supervised.py")
    assert status == 0 and calls == ["trainer_output"]
    assert f"no --output_dir given: writing to {tmp_path / 'trainer_output'}" in error
    (tmp_path / "trainer_output").mkdir()
    (tmp_path / "trainer_output" / "results.json").write_text("the first run")
    status, error = run(train_supervised, SUPERVISED, capsys, "train_supervised.py")
    assert status == 1 and len(calls) == 1
    for words in ("no `--output_dir` given", "holds an earlier run (results.json)", "--output_dir NEW_FOLDER",
                  "--output_dir trainer_output", "--resume_from_checkpoint latest"):
        assert words in error
    assert (tmp_path / "trainer_output" / "results.json").read_text() == "the first run"
    status, error = run(train_supervised, [*SUPERVISED, "--resume_from_checkpoint", "latest"], capsys, "x")
    assert status == 0 and len(calls) == 2  # continuing the earlier run was asked for


def test_eval_refuses_user_results_before_loading_the_model(tmp_path, capsys, no_work):
    from hf_mrl import cli

    out = tmp_path / "out"
    out.mkdir()
    (out / "results.md").write_text("my table")
    (out / "wordnet_nouns_top1.png").write_bytes(b"my plot")
    before = snapshot(out)
    status = cli.main(["eval", "some-org/some-model", "--dataset_name", "wordnet-nouns", "--output_dir", str(out)])
    error = capsys.readouterr().err
    assert status == 1
    assert "already holds results.md, wordnet_nouns_top1.png (not written by hf_mrl)" in error
    assert snapshot(out) == before


# -- tune_weights.py ------------------------------------------------------------------------------------------


def tune(tmp_path, capsys, *extra, train=TINY_STUDY, output=True):
    output_args = ["--output_dir", str(tmp_path / "out")] if output else []
    return run(tune_weights, ["--runs_dir", str(tmp_path / "runs"), *output_args, *STUDY, *extra, "--", *train],
               capsys, "tune_weights.py")


def test_tune_weights_default_output_is_in_the_current_folder_and_never_replaced(tmp_path, capsys, no_work, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tune_weights_output").mkdir()
    (tmp_path / "tune_weights_output" / "weights.md").write_text("an earlier study")
    status, error = tune(tmp_path, capsys, output=False)
    assert status == 1 and "tune_weights_output" in error and "holds an earlier run (weights.md)" in error
    assert (tmp_path / "tune_weights_output" / "weights.md").read_text() == "an earlier study"
    assert not (REPO / "results" / "analyses" / "weights" / "fmnist" / RECORD_NAME).exists()


@pytest.mark.parametrize(("extra", "train", "words"), [
    pytest.param([], [*TINY_STUDY, "--output_dir", "mine"], ["--output_dir", "the study sets on each run", "--runs_dir"],
                 id="output-dir-in-train-arguments"),
    pytest.param([], [*TINY_STUDY, "--matryoshka_dims", "8", "32"], ["--matryoshka_dims", "--dims"], id="dims-in-train-arguments"),
    pytest.param(["--ff_dims", "8", "999"], TINY_STUDY, ["ff_dim", "999"], id="ff-dim-too-large"),
    pytest.param(["--noise_seeds", "-3"], TINY_STUDY, ["seed", "-3"], id="noise-seed-negative"),
    pytest.param(["--num_search", "999"], TINY_STUDY, ["`num` is 999"], id="search-too-many"),
    pytest.param(["--write_config", "/no/such/config"], TINY_STUDY, ["/no/such/config", "config.json"], id="config-missing"),
])
def test_tune_weights_argument_errors_come_before_any_training(tmp_path, capsys, no_work, extra, train, words):
    status, error = tune(tmp_path, capsys, *extra, train=train)
    assert status == 1, error
    assert all(word in error for word in words), error
    assert not (tmp_path / "runs").exists()


def test_tune_weights_refuses_a_config_of_other_dims_before_training(tmp_path, capsys, no_work):
    from hf_mrl import MatryoshkaConfig

    from ..tiny import tiny_vit_config

    MatryoshkaConfig(backbone_config=tiny_vit_config(), matryoshka_dims=[8, 16]).save_pretrained(tmp_path / "target")
    status, error = tune(tmp_path, capsys, "--write_config", str(tmp_path / "target"))
    assert status == 1 and "nesting dims [8, 16]" in error and "[8, 16, 32]" in error


def test_tune_weights_refuses_user_files_in_its_output_dir(tmp_path, capsys, no_work):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "weights.png").write_bytes(b"my plot")
    status, error = tune(tmp_path, capsys)
    assert status == 1 and "weights.png (not written by hf_mrl)" in error
    assert (tmp_path / "out" / "weights.png").read_bytes() == b"my plot"


@pytest.mark.parametrize("recorded", [True, False], ids=["recorded-run", "run-before-records"])
def test_tune_weights_refuses_another_studys_runs(tmp_path, capsys, no_work, recorded):
    run_dir = tmp_path / "runs" / "mrl"
    run_dir.mkdir(parents=True)
    other = {"dataset_name": "my-own-data", "backbone": "vit", "matryoshka_dims": [8, 16, 32]}
    if recorded:
        (run_dir / RUN_RECORD).write_text(json.dumps({"settings": other}))
    else:
        (run_dir / "results.json").write_text(json.dumps({"steps": 4, "final": {}, "args": other}))
    before = snapshot(run_dir)
    status, error = tune(tmp_path, capsys)
    assert status == 1
    assert "holds a run trained with other settings" in error and "'my-own-data' there, 'fashion-mnist' now" in error
    assert snapshot(run_dir) == before


@pytest.mark.slow
def test_a_second_run_replaces_only_what_the_first_wrote(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert run(train_supervised, [*SUPERVISED, "--output_dir", str(out)], capsys, "x")[0] == 0
    first = json.loads((out / "results.json").read_text())
    assert set(json.loads((out / RECORD_NAME).read_text())["files"]) == {"results.json", "accuracy_vs_dim.png"}
    status, error = run(train_supervised, [*SUPERVISED, "--output_dir", str(out), "--seed", "1"], capsys, "x")
    assert status == 0, error
    assert json.loads((out / "results.json").read_text())["args"]["seed"] == 1 != first["args"]["seed"]
    (out / "accuracy_vs_dim.png").write_bytes(b"my own plot now")
    status, error = run(train_supervised, [*SUPERVISED, "--output_dir", str(out)], capsys, "x")
    assert status == 1 and "accuracy_vs_dim.png (written by an earlier hf_mrl run, changed since: yours now)" in error
    assert (out / "accuracy_vs_dim.png").read_bytes() == b"my own plot now" and (out / "notes.txt").read_text() == "mine"
