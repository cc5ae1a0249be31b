"""`scripts/device_check.sh` end to end on the CPU with tiny benches: the kernel tests and the three benches run,
and one summary table is printed."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "device_check.sh"


@pytest.mark.slow
def test_device_check_cpu_quick_prints_one_summary_table(tmp_path):
    completed = subprocess.run(
        ["bash", str(SCRIPT), "--device", "cpu", "--quick", "--log-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHON": sys.executable},
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-2000:]
    title = f"device_check: --device cpu, quick sizes, full logs in {tmp_path}"
    assert completed.stdout.count(title) == 1
    header, rule, *rows = completed.stdout.split(title, 1)[1].strip().splitlines()
    assert (header, rule) == ("| step | result | headline | seconds |", "|---|---|---|---|")
    steps = ["pytest -m kernels", "bench_heads --with-loss, 100 labels", "bench_contrastive_loss", "bench_eval",
             "check_trainer_device"]
    assert [row.split(" | ")[0] for row in rows] == [f"| {step}" for step in steps]
    assert all(row.split(" | ")[1] == "ok" for row in rows), rows
    assert int(re.search(r"(\d+) passed, \d+ deselected", rows[0]).group(1)) >= 100
    assert "failed" not in rows[0] and "?" not in "".join(rows)  # every headline ratio was found
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "bench_contrastive_loss.log", "bench_eval.log", "bench_heads.log", "tests.log", "trainer.log"
    ]
    assert "| check_trainer_device | ok | 2 flag checks ok, 0 failed |" in completed.stdout
