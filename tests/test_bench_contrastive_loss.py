"""scripts/bench_contrastive_loss.py at a small dim: its default nesting dims follow --dim, bad dims are refused."""

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_contrastive_loss.py"


def run_script(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *arguments], capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_default_dims_halve_a_small_dim_down_to_one():
    done = run_script("--dim", "32", "--batch", "64", "--repeats", "1", "--skip-naive", "--threads", "1")
    assert done.returncode == 0, done.stderr
    assert "6 nesting dims [1, 2, 4, 8, 16, 32]" in done.stdout and "ratio (a)/(b) = " in done.stdout


@pytest.mark.slow
def test_dims_past_the_full_dim_are_refused():
    done = run_script("--dim", "32", "--dims", "8", "64")
    assert done.returncode == 2 and "--dims must lie in 1..--dim (32), got [8, 64]" in done.stderr
