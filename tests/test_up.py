"""`qtune up` (what the README's `make run` starts): vLLM and the UI come up together on the
embedded model with the shipped adapters, and SIGTERM stops both, leaving no process behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from ui_fixtures import free_port

STARTUP_S = 1200  # a busy 2-core machine can take minutes to start vLLM


def _get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.read().decode()


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if text in cmdline:
                found.append(int(entry.name))
    return found


@pytest.mark.slow
def test_up_serves_the_api_and_the_ui_and_stops_both(tmp_path: Path, embedded_model: Path) -> None:
    api_port, ui_port = free_port(), free_port()
    log = tmp_path / "up.log"
    command = [sys.executable, "-m", "qtune.cli", "up", "--api-port", str(api_port),
               "--port", str(ui_port), "--db", str(tmp_path / "feedback.db"),
               "--startup-timeout", str(STARTUP_S)]
    with log.open("w") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    try:
        deadline = time.monotonic() + STARTUP_S + 120
        while "UI at http" not in log.read_text():
            assert process.poll() is None, f"qtune up exited early:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"qtune up did not start:\n{log.read_text()[-3000:]}"
            time.sleep(2)

        status, models = _get(f"http://127.0.0.1:{api_port}/v1/models")
        assert status == 200
        for name in ("smollm2-135m-instruct", "math-qwth", "math-lora", "counselling-qwth",
                     "counselling-lora"):
            assert f'"{name}"' in models
        status, page = _get(f"http://127.0.0.1:{ui_port}/")
        assert status == 200 and "gradio" in page.lower()

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=120) == 0, log.read_text()[-3000:]
        assert "stopping the UI and vLLM" in log.read_text()
        assert not _processes_mentioning(f"--port {api_port}"), "vLLM outlived qtune up"
        with pytest.raises(OSError):
            _get(f"http://127.0.0.1:{ui_port}/")
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
