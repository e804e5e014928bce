"""The vLLM process group, seen from outside: is its port taken, what did its log say,
and stopping every process of the group (the API server and its engine workers)."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import time
from pathlib import Path

log = logging.getLogger("qtune.serve")


def port_in_use(host: str, port: int) -> bool:
    probe_host = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((probe_host, port)) == 0


def log_tail_of(path: Path, lines: int) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def kill_group(pgid: int, grace: float) -> None:
    """Terminate every process in group ``pgid`` (vLLM's API server and its engines)."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        _reap(pgid)
        if not _group_alive(pgid):
            return
        time.sleep(0.2)
    log.warning("vLLM did not stop within %.0f s; killing it", grace)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        return
    for _ in range(50):
        _reap(pgid)
        if not _group_alive(pgid):
            return
        time.sleep(0.1)


def _reap(pid: int) -> None:
    """Collect the leader's exit status so a zombie does not keep the group 'alive'."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
