"""Running ``otseg serve`` in a subprocess for the page and API tests: a free port, a log, a clean stop."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 180  # importing torch and Gradio on a busy machine


def free_port() -> int:
    """A port nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_until_served(url: str, server: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"otseg serve exited with status {server.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"otseg serve did not answer at {url} within {START_TIMEOUT_S} s:\n{log.read_text()}")


@contextmanager
def serving(model_file: Path, log: Path, *options: str) -> Iterator[tuple[str, subprocess.Popen]]:
    """``otseg serve --model model_file *options`` on a free port: yields its URL and process, stops it after."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, "-m", "cli.otseg_cli", "serve", "--model", str(model_file), "--port", str(port)]
    with log.open("w") as out:
        server = subprocess.Popen([*command, *options], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        _wait_until_served(url, server, log)
        yield url, server
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
