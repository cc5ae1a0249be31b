"""Loss-weight presets, the per-dim Pareto front, the search's proposals, writing a weighting into a config, and
scripts/tune_weights.py end to end on a tiny ViT and a slice of Fashion-MNIST."""

import json

import pytest

from hf_mrl import MatryoshkaConfig
from hf_mrl.modeling.nesting import MATRYOSHKA_WEIGHT_PRESETS, matryoshka_weights_preset
from hf_mrl.recipes.analyses import pareto_front, propose_weightings, write_weights_to_config
from hf_mrl.recipes.analyses.weights import SEARCH_MULTIPLIERS

from .script_loading import load_script
from .tiny import tiny_vit_config


def test_presets_give_one_weight_per_dim_and_reach_the_config():
    assert list(MATRYOSHKA_WEIGHT_PRESETS) == ["uniform", "paper_8x2", "paper_8x2_16x1.5"]
    assert matryoshka_weights_preset("uniform", [8, 16, 32]) == [1.0, 1.0, 1.0]
    assert matryoshka_weights_preset("paper_8x2", [8, 16, 32]) == [2.0, 1.0, 1.0]
    assert matryoshka_weights_preset("paper_8x2_16x1.5", [8, 16, 32, 64]) == [2.0, 1.5, 1.0, 1.0]
    config = MatryoshkaConfig(backbone_config=tiny_vit_config(), matryoshka_dims=[32, 16, 8],
                              matryoshka_weights="paper_8x2_16x1.5")
    assert config.matryoshka_dims == [8, 16, 32] and config.matryoshka_weights == [2.0, 1.5, 1.0]
    with pytest.raises(ValueError, match=r"`matryoshka_weights` 'double' is not a preset; allowed: \['uniform'"):
        MatryoshkaConfig(backbone_config=tiny_vit_config(), matryoshka_weights="double")
    with pytest.raises(ValueError, match=r"preset 'paper_8x2' weights dims \[8\], which are not among the nesting dims"):
        MatryoshkaConfig(backbone_config=tiny_vit_config(), matryoshka_dims=[16, 32], matryoshka_weights="paper_8x2")


def test_pareto_front_against_hand_computed_dominance():
    scores = {
        "uniform": [0.80, 0.85, 0.86],
        "boost8": [0.82, 0.85, 0.85],  # better at 8, worse at 32: on the front
        "worse": [0.79, 0.85, 0.86],  # dominated by uniform
        "tie": [0.80, 0.85, 0.86],  # equal to uniform: neither dominates the other
        "best32": [0.70, 0.70, 0.90],
    }
    assert pareto_front(scores) == ["uniform", "boost8", "tie", "best32"]
    with pytest.raises(ValueError, match=r"must be a 1-D list of the same length"):
        pareto_front({"a": [1, 2], "b": [1]})
    with pytest.raises(ValueError, match=r"`scores` must be a non-empty dict"):
        pareto_front({})


def test_proposals_are_seeded_distinct_and_skip_excluded_weightings():
    dims = [8, 16, 32]
    proposals = propose_weightings(dims, 6, seed=3, exclude=[[1.0, 1.0, 1.0], [2.0, 1.0, 1.0]])
    assert list(proposals) == [f"search-{index}" for index in range(1, 7)]
    weights = [tuple(values) for values in proposals.values()]
    assert len(set(weights)) == 6 and (1.0, 1.0, 1.0) not in weights and (2.0, 1.0, 1.0) not in weights
    assert all(values[-1] == 1.0 and set(values[:-1]) <= set(SEARCH_MULTIPLIERS) for values in weights)
    assert propose_weightings(dims, 6, seed=3, exclude=[[1.0, 1.0, 1.0], [2.0, 1.0, 1.0]]) == proposals
    with pytest.raises(ValueError, match=r"`num` is 30, more than the 24 weightings left"):
        propose_weightings(dims, 30, exclude=[[1.0, 1.0, 1.0]])


def test_write_weights_to_config(tmp_path):
    config = MatryoshkaConfig(backbone_config=tiny_vit_config(), matryoshka_dims=[8, 16, 32])
    config.save_pretrained(tmp_path)
    assert write_weights_to_config(tmp_path, [3.0, 1.5, 1.0]) == [3.0, 1.5, 1.0]
    assert MatryoshkaConfig.from_pretrained(tmp_path).matryoshka_weights == [3.0, 1.5, 1.0]
    assert write_weights_to_config(tmp_path / "config.json", "paper_8x2") == [2.0, 1.0, 1.0]
    with pytest.raises(ValueError, match=r"`matryoshka_weights` has 2 entries"):
        write_weights_to_config(tmp_path, [1.0, 2.0])
    assert json.loads((tmp_path / "config.json").read_text())["matryoshka_weights"] == [2.0, 1.0, 1.0]  # unchanged
    with pytest.raises(ValueError, match=r"is not a config.json file or a folder holding one"):
        write_weights_to_config(tmp_path / "missing", [1.0])


@pytest.mark.slow
def test_tune_weights_script_on_a_tiny_vit(tmp_path):
    from accelerate.state import AcceleratorState

    tune_weights = load_script("tune_weights")
    target = tmp_path / "target"
    MatryoshkaConfig(backbone_config=tiny_vit_config(), matryoshka_dims=[8, 16, 32]).save_pretrained(target)
    tiny = ["--dataset_name", "fashion-mnist", "--train_split", "train[:64]", "--eval_split", "train[64:96]",
            "--test_split", "test[:32]", "--backbone", "vit", "--hidden_size", "32", "--num_layers", "1",
            "--num_attention_heads", "2", "--per_device_train_batch_size", "16", "--max_steps", "4",
            "--eval_strategy", "no", "--max_knn_reference_samples", "32", "--seed", "0"]
    try:
        report = tune_weights.main([
            "--runs_dir", str(tmp_path / "runs"), "--output_dir", str(tmp_path / "out"), "--dims", "8", "16", "32",
            "--presets", "uniform", "paper_8x2", "--ff_dims", "8", "32", "--num_search", "2", "--num_proposed", "1",
            "--search_fraction", "0.5", "--noise_seeds", "1", "--write_config", str(target), "--", *tiny,
        ])
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
    assert set(report["weightings"]) == {"uniform", "paper_8x2", *report["weightings"]} and len(report["weightings"]) == 3
    assert set(report["search"]) == {"uniform", "search-1", "search-2"} and report["search_steps"] == 2
    for entry in report["weightings"].values():
        assert sorted(entry["test"]) == sorted(entry["validation"]) == [8, 16, 32]
    assert sorted(report["ff"]) == [8, 32]
    assert sorted(report["noise"][1]["test"]) == [8, 16, 32]
    assert json.loads((tmp_path / "runs" / "mrl-seed1" / "results.json").read_text())["args"]["seed"] == 1
    assert report["chosen"] in report["pareto_validation"]
    written = MatryoshkaConfig.from_pretrained(target).matryoshka_weights
    assert written == report["weightings"][report["chosen"]]["weights"]
    for name in ("weights.md", "weights.json", "weights.png"):
        assert (tmp_path / "out" / name).is_file()
    assert "FF (one model per dim)" in (tmp_path / "out" / "weights.md").read_text()
    assert "uniform, training seed 1 (noise)" in (tmp_path / "out" / "weights.md").read_text()
    assert (tmp_path / "runs" / "mrl-paper_8x2" / "model" / "config.json").is_file()
