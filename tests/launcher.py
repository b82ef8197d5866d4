"""The command that starts a script as two processes, for the tests that launch them for real."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A TCP port nothing listens on now (for the launcher's rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def accelerate_launch(script: str, *args: str) -> list[str]:
    """``accelerate launch --multi_gpu --num_processes 2 scripts/SCRIPT ARGS`` with this interpreter: on a
    machine without a GPU, two processes over gloo (``--cpu`` would start one)."""
    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(free_port()),
        str(ROOT / "scripts" / script),
        *args,
    ]
