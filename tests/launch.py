"""Runs a script under `accelerate launch` with two processes, for the multi-process tests."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def accelerate_launch(launch_args: list[str], script: Path, script_args: list[str], output_dir: Path, env: dict,
                      timeout: float = 240) -> subprocess.CompletedProcess:
    """`accelerate launch LAUNCH_ARGS --main_process_port PORT SCRIPT SCRIPT_ARGS`. A run that has not exited after
    `timeout` seconds (two processes waiting on each other: a rendezvous port taken between `free_port` and the
    launch, say, or gloo's teardown) is killed with its workers and run once more on a fresh port and an empty
    `output_dir`; its stderr is reported as a warning, or in the failure when the second run hangs too."""
    for attempt in (1, 2):
        command = [sys.executable, "-m", "accelerate.commands.launch", *launch_args, "--main_process_port",
                   str(free_port()), str(script), *script_args]
        process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   start_new_session=True)  # its own process group, killed as one
        try:
            stdout, stderr = process.communicate(timeout=timeout)
            return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            # torch's workers run in sessions of their own: find them by the output folder on their command line
            subprocess.run(["pkill", "-9", "-f", str(output_dir)], check=False)
            try:
                _, stderr = process.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                stderr = "(no stderr: a worker still held the pipe)"
        if attempt == 2:
            pytest.fail(f"accelerate launch hung twice ({timeout:g} s each); stderr of the second run:\n{stderr[-3000:]}")
        warnings.warn(f"accelerate launch hung for {timeout:g} s and was run again; its stderr:\n{stderr[-3000:]}",
                      stacklevel=2)
        shutil.rmtree(output_dir, ignore_errors=True)
    raise AssertionError("unreachable")
