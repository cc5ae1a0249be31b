"""scripts/bench_cached_contrastive.py on a tiny batch: the four contenders run and the cached losses agree."""

import pytest

from .script_loading import load_script


@pytest.mark.slow
def test_bench_cached_contrastive_runs_and_the_cached_losses_agree(tiny_text_tower, tmp_path):
    summary = load_script("bench_cached_contrastive").main([
        "--model_name_or_path", tiny_text_tower, "--batch_size", "24", "--mini_batch_size", "8",
        "--max_seq_length", "16", "--output", str(tmp_path / "bench.json"),
    ])
    ratios = summary["ratios"]
    assert ratios["|hf_mrl loss - sentence-transformers loss|"] < 1e-5
    assert ratios["|cached loss - uncached loss|"] < 1e-5
    assert len(summary["results"]) == 4 and all(result["peak_bytes"] > 0 for result in summary["results"].values())
    assert (tmp_path / "bench.json").stat().st_size > 0
