"""Determinism switches for comparisons (README, "Reproducibility").

Every unit's seeds fix its student inits, data order, teacher init and RL sampling, so on one
machine and torch build a command reproduces its numbers bit for bit. What remains is the choice
of kernels: some CUDA kernels (atomics in scatter/index_add, cuBLAS workspaces) may differ between
runs. ``torch.use_deterministic_algorithms`` picks deterministic kernels where torch has them and
warns (``warn_only``) where it has none; on the CPU the ops the students use are deterministic
already (a demo unit gives bit-identical losses with and without it).
"""

from __future__ import annotations

import os

import torch


def deterministic(enabled: bool = True) -> None:
    """Ask torch for deterministic kernels (and cuBLAS for a fixed workspace, which must be set
    before CUDA starts; a value the user set is kept)."""
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(enabled, warn_only=True)


def init_worker(threads: int, enabled: bool) -> None:
    """Initializer of a spawned worker process: the parent's threads and determinism."""
    torch.set_num_threads(threads)
    deterministic(enabled)
