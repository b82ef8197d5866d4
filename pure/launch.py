"""Checks of a launch by ``accelerate launch`` or ``torchrun``, made before any work: accelerate must see
every launched process, and run FSDP when its config asks for it.

Without them, two silent failures of accelerate 1.15 on a machine without a GPU: processes launched
without ``ACCELERATE_USE_CPU=true`` each believe they are alone (every one trains, or restores, the
whole job into the same folder), and an FSDP config (``ACCELERATE_USE_FSDP=true``) runs plain data
parallelism, because accelerate enables FSDP for GPU-like devices only, never for several CPU processes.
"""

from __future__ import annotations

import os

from pure.errors import PureError

WORLD_SIZE_VARIABLES = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")
"""Where torchrun (and accelerate launch), Intel MPI, Open MPI and MVAPICH put the number of processes;
the variables accelerate reads too."""


class LaunchError(PureError):
    """The processes were launched in a way that would not split the work; the message says the fix."""


def launched_processes() -> int:
    """How many processes the launcher started (1 when the script was run directly), from its variables."""
    for name in WORLD_SIZE_VARIABLES:
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return 1


def check_processes(seen: int) -> None:
    """Raise :class:`LaunchError` when the launcher started several processes but accelerate sees ``seen``."""
    started = launched_processes()
    if started > 1 and seen != started:
        raise LaunchError(
            f"{started} processes were launched, but accelerate sees {seen} (no GPU visible?): on the CPU "
            "set ACCELERATE_USE_CPU=true (training) or device=cpu (inference)"
        )


def check_launch(num_processes: int, distributed_type: str) -> None:
    """A training launch: every process seen (:func:`check_processes`), and FSDP when the accelerate config
    asks for it (``distributed_type``: accelerate's ``DistributedType`` name, e.g. ``MULTI_CPU``)."""
    check_processes(num_processes)
    if os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true" and distributed_type != "FSDP":
        raise LaunchError(
            f"the accelerate config asks for FSDP, but accelerate runs {distributed_type} here (it enables "
            "FSDP on GPUs only): on the CPU launch without the FSDP config, e.g. ACCELERATE_USE_CPU=true "
            "accelerate launch --multi_gpu --num_processes 2 scripts/train.py ..."
        )
