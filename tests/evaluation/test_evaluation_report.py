"""Results on disk (atomic JSON), markdown tables and PNG plots."""

import json
import os

import numpy as np
import pytest

from hf_mrl.evaluation import (
    group_by_dim,
    load_results,
    markdown_table,
    parse_metric_key,
    plot_metric_vs_dim,
    plot_qps_vs_metric,
    save_results,
)

MRL = {"wn_dim8_top1": 0.5, "wn_dim8_1nn": 0.4, "wn_dim16_top1": 0.75, "wn_dim16_1nn": 0.6}
PCA = {"wn_dim8_top1": 0.25, "wn_dim16_top1": 0.5}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_save_and_load_round_trip_leaves_no_temp_files(tmp_path):
    path = tmp_path / "nested" / "results.json"
    save_results({**MRL, "extra": np.float32(0.5), "array": np.arange(3)}, path)
    assert load_results(path) == {**MRL, "extra": 0.5, "array": [0, 1, 2]}
    save_results({"a": 1.0}, path)  # overwrite in place
    assert json.loads(path.read_text()) == {"a": 1.0}
    assert os.listdir(path.parent) == ["results.json"]


def test_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "results.json"
    save_results({"a": 1.0}, path)
    with pytest.raises(TypeError):
        save_results({"a": object()}, path)
    assert load_results(path) == {"a": 1.0}
    assert os.listdir(tmp_path) == ["results.json"]


def test_keys_parse_and_group_by_dim():
    assert parse_metric_key("fmnist_dim16_top1") == ("fmnist", 16, "top1")
    assert parse_metric_key("word_net_dim32_mrl_map@10") == ("word_net", 32, "mrl_map@10")
    assert group_by_dim({**MRL, "epoch": 3}) == {8: {"top1": 0.5, "1nn": 0.4}, 16: {"top1": 0.75, "1nn": 0.6}}
    with pytest.raises(ValueError, match="not of the form"):
        parse_metric_key("accuracy")


def test_markdown_table_rows_are_dims_columns_are_models_and_metrics():
    table = markdown_table({"mrl": MRL, "pca": PCA}, metrics=["top1"])
    assert table.splitlines() == [
        "| dim | mrl top1 | pca top1 |",
        "|---|---|---|",
        "| 8 | 0.5000 | 0.2500 |",
        "| 16 | 0.7500 | 0.5000 |",
    ]
    single = markdown_table({"mrl": MRL}, digits=2).splitlines()
    assert single[0] == "| dim | 1nn | top1 |" and single[2] == "| 8 | 0.40 | 0.50 |"
    assert "| 8 | 0.4000 | - |" in markdown_table({"mrl": MRL, "pca": PCA}, metrics=["1nn"])
    with pytest.raises(ValueError, match="non-empty dict"):
        markdown_table({})


def test_plots_are_png_files(tmp_path):
    plot_metric_vs_dim({"mrl": MRL, "pca": PCA}, "top1", tmp_path / "top1.png")
    plot_qps_vs_metric({"hnsw": [(0.9, 1000.0), (0.95, 500.0)], "flat": [(1.0, 80.0)]}, tmp_path / "qps.png")
    for name in ("top1.png", "qps.png"):
        assert (tmp_path / name).read_bytes()[:8] == PNG_MAGIC
    assert sorted(os.listdir(tmp_path)) == ["qps.png", "top1.png"]
    with pytest.raises(ValueError, match="no results hold the metric 'ndcg@10'"):
        plot_metric_vs_dim({"mrl": MRL}, "ndcg@10", tmp_path / "x.png")
    with pytest.raises(ValueError, match="points must be"):
        plot_qps_vs_metric({"hnsw": [(0.9, 0.0)]}, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_plots_keep_a_readable_y_span():
    from hf_mrl.evaluation.report import keep_y_span, pyplot

    figure, axis = pyplot().subplots()
    try:
        axis.plot([8, 16, 32], [0.808, 0.812, 0.815])
        keep_y_span(axis, [0.808, 0.812, 0.815])
        low, high = axis.get_ylim()
        assert high - low >= 0.1 and low <= 0.808 and high >= 0.815
        axis.plot([8, 16], [0.999, 1.0])
        keep_y_span(axis, [0.999, 1.0])
        assert axis.get_ylim()[1] <= 1.0 + 0.01 and axis.get_ylim()[0] <= 0.9
    finally:
        pyplot().close(figure)
