"""Run a comparison grid on a Ray cluster: one Ray task per unit, records written by the workers.

The local backend (:func:`analysis.runner.run_pending`) spreads units over processes of one
machine; this one hands each unit to Ray as a task asking for ``cpus_per_unit`` CPUs and
``gpus_per_unit`` GPUs, so a grid can use every node of a cluster. Nothing else changes: the
task calls the same :func:`analysis.runner.complete_unit`, which writes the unit's part-files
through the same temporary name and atomic rename (``analysis.records``). Hence

* results do not depend on the backend (a unit's seeds fix everything it computes);
* resuming works as before: the driver skips units whose records file exists, so a killed
  driver re-run with the same command finishes the grid with no lost and no duplicated rows;
* the output folder must be storage every node reaches at the same path (NFS, a cluster file
  system, or one machine): :func:`probe_storage` checks this before any unit starts, by having a
  worker on every node write and rename a file there that the driver must then see.

Plain tasks, not Ray Tune trials: units are fixed, independent and run to completion, with no
search, scheduler or early stopping for Tune to add, and the record store already gives the
resumability Tune's experiment folders would (in a second, differently shaped, results tree).

Ray is an optional dependency (``pip install -e ".[ray]"``); this module imports it only when a
Ray run is asked for, so the rest of the suite works without it.
"""

from __future__ import annotations

import logging
import math
import os
import re
import socket
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from analysis.records import RecordStore, unit_id
from analysis.runner import Grid, complete_unit

INSTALL_HINT = 'install it with: pip install -e ".[ray]"  (or: pip install "ray>=2.9")'
PROBE_TIMEOUT_S = 300.0
"""how long the storage probe waits for a worker on every node (a busy cluster may be slow)"""
CONNECT_TIMEOUT_S = 10.0
"""the TCP check of a HOST:PORT address, so that a wrong one fails fast (Ray itself waits ~minutes)"""
LOCAL_OBJECT_STORE_BYTES = 256 * 2**20
"""a Ray started here holds little in its object store: the grid, and one unit id per task"""
_ADDRESS = re.compile(r"^(?:ray://)?(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.\-_]+):(?P<port>\d+)$")


class RayBackendError(ValueError):
    """The Ray backend cannot run this grid (no Ray, no cluster, storage not shared, ...); raised
    before any unit starts, so the CLI reports it as bad input (exit status 2)."""


class UnitsFailed(RuntimeError):
    """Some units raised; the others ran to completion and are kept (re-running resumes)."""

    def __init__(self, failures: dict[str, str], completed: int, root: Path) -> None:
        self.failures = failures
        lines = "\n".join(f"  {uid}: {why}" for uid, why in failures.items())
        super().__init__(
            f"{len(failures)} unit(s) failed:\n{lines}\n{completed} unit(s) of this run completed "
            f"and are kept in {root}: fix the cause and re-run the same command to resume"
        )


@dataclass(frozen=True)
class RayOptions:
    """Where and with what resources each unit runs; the ``l2t compare --backend ray`` options."""

    address: str | None = None
    """None: the cluster in RAY_ADDRESS, else a new Ray on this machine; "auto": the cluster
    `ray start --head` started on this machine; "local": a new Ray here; HOST:PORT (the head's
    GCS port, 6379 by default) or ray://HOST:PORT (Ray Client, port 10001)"""
    cpus_per_unit: float = 1.0
    """CPUs Ray reserves for each unit; the unit uses max(1, floor(this)) torch threads"""
    gpus_per_unit: float = 0.0
    """GPUs Ray reserves for each unit; a fraction (0.25) packs 4 small students on one GPU"""

    def __post_init__(self) -> None:
        if self.address is not None:
            check_address(self.address)
        _check_resource("--cpus-per-unit", self.cpus_per_unit, minimum_exclusive=True)
        _check_resource("--gpus-per-unit", self.gpus_per_unit, minimum_exclusive=False)

    @property
    def threads(self) -> int:
        """torch CPU threads per unit: the whole CPUs it reserved (at least one)."""
        return max(1, math.floor(self.cpus_per_unit))

    @property
    def starts_local_ray(self) -> bool:
        """Whether connecting starts a new Ray on this machine rather than joining a cluster."""
        return self.address == "local" or (
            self.address is None and not os.environ.get("RAY_ADDRESS")
        )


def check_address(address: str) -> str:
    """`auto`, `local`, HOST:PORT or ray://HOST:PORT, port in 1..65535; else a ValueError."""
    if address in ("auto", "local"):
        return address
    match = _ADDRESS.match(address)
    if not match or not 1 <= int(match["port"]) <= 65535:
        raise ValueError(
            f"--address: expected auto, local, HOST:PORT or ray://HOST:PORT (e.g. "
            f"10.0.0.5:6379, the address `ray start --head` prints), got {address!r}"
        )
    return address


def _check_resource(option: str, value: float, *, minimum_exclusive: bool) -> None:
    """Ray's rule for task resources: a fraction below 1, or a whole number."""
    bound = "positive" if minimum_exclusive else "non-negative"
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise ValueError(f"{option}: expected a {bound} number, got {value!r}")
    if value < 0 or (minimum_exclusive and value == 0):
        raise ValueError(f"{option}: expected a {bound} number, got {value}")
    if value > 1 and value != int(value):
        raise ValueError(
            f"{option}: Ray takes a fraction below 1 or a whole number, got {value} "
            f"(use {math.floor(value)} or {math.ceil(value)})"
        )


def options_from_cli(
    backend: str,
    address: str | None,
    cpus_per_unit: float | None,
    gpus_per_unit: float | None,
    device: str,
) -> RayOptions | None:
    """The Ray settings of an ``l2t compare`` (None for the local backend), checked before any
    work: Ray importable, resources and address well formed, a CUDA device only with GPUs."""
    given = {
        "--address": address,
        "--cpus-per-unit": cpus_per_unit,
        "--gpus-per-unit": gpus_per_unit,
    }
    if backend != "ray":
        named = [k for k, v in given.items() if v is not None]
        if named:
            which = ", ".join(named[:-1]) + " and " + named[-1] if len(named) > 1 else named[0]
            verb = "applies" if len(named) == 1 else "apply"
            raise ValueError(f"{which} {verb} only to --backend ray")
        return None
    options = RayOptions(
        address=address,
        cpus_per_unit=1.0 if cpus_per_unit is None else cpus_per_unit,
        gpus_per_unit=0.0 if gpus_per_unit is None else gpus_per_unit,
    )
    if device.startswith("cuda") and options.gpus_per_unit == 0:
        raise ValueError(
            f"--device {device} with --backend ray needs --gpus-per-unit > 0: Ray hides the "
            f"GPUs from tasks that reserve none (e.g. --gpus-per-unit 0.25 packs 4 units a GPU)"
        )
    import_ray()
    return options


def import_ray() -> Any:
    """The ray module, or a RayBackendError saying how to install it.

    A Ray that this process starts itself (no --address) serves this machine only, so its nodes
    bind to loopback rather than to the machine's network address: Ray reads this switch once, at
    import. Set RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=1 to start a local Ray that others may join.
    """
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        import ray
    except ImportError as err:
        raise RayBackendError(
            f"--backend ray needs Ray, which cannot be imported here ({err}); {INSTALL_HINT}"
        ) from None
    return ray


def connect(options: RayOptions) -> bool:
    """Join (or start) the Ray cluster; True when this call did, so the caller disconnects.

    A Ray already initialised in this process (a notebook, the tests) is used as it is.
    """
    ray = import_ray()
    address = options.address
    if address not in (None, "auto", "local"):
        _check_reachable(address)
    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {"logging_level": logging.WARNING}
    if options.starts_local_ray:
        kwargs.update(include_dashboard=False, object_store_memory=LOCAL_OBJECT_STORE_BYTES)
    try:
        ray.init(address=address, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as err:
        where = f"--address {address}" if address else os.environ.get("RAY_ADDRESS", "this machine")
        raise RayBackendError(
            f"cannot start or join Ray at {where} ({type(err).__name__}: {err}); start a "
            f"cluster with `ray start --head` and pass the address it prints"
        ) from None
    return True


def _check_reachable(address: str) -> None:
    match = _ADDRESS.match(address)
    assert match is not None  # checked by RayOptions
    host, port = match["host"].strip("[]"), int(match["port"])
    try:
        socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as err:
        raise RayBackendError(
            f"no Ray cluster answers at --address {address} ({err}); start one with "
            f"`ray start --head` on the head node and pass the address it prints"
        ) from None


def _probe_write(root: str, name: str) -> str:
    """In a worker: write a file into `root` through a temporary name and a rename, as records
    are written; return the node's host name."""
    path = Path(root) / name
    tmp = path.with_name(f".{name}.tmp")
    tmp.write_text(socket.gethostname())
    os.replace(tmp, path)
    return socket.gethostname()


def probe_storage(root: str | Path, options: RayOptions) -> None:
    """Check that a worker on every node that can run a unit can write into `root`, and that
    the driver sees what it wrote (the folder is shared, not each node's own local copy)."""
    ray = import_ray()
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    root = Path(root).resolve()
    need = {"CPU": options.cpus_per_unit, "GPU": options.gpus_per_unit}
    nodes = [
        n
        for n in ray.nodes()
        if n.get("Alive") and all(n["Resources"].get(k, 0) >= v for k, v in need.items() if v)
    ]
    if not nodes:
        have = [
            {k: v for k, v in n["Resources"].items() if k in need}
            for n in ray.nodes()
            if n["Alive"]
        ]
        raise RayBackendError(
            f"no node of the Ray cluster has {options.cpus_per_unit:g} CPU(s) and "
            f"{options.gpus_per_unit:g} GPU(s) for a unit (nodes have {have}): lower "
            f"--cpus-per-unit / --gpus-per-unit or add nodes"
        )
    probe = ray.remote(num_cpus=0, max_retries=0)(_probe_write)
    token = uuid.uuid4().hex[:12]
    names = {n["NodeID"]: f".ray-probe-{token}-{i}" for i, n in enumerate(nodes)}
    refs = {
        probe.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False)
        ).remote(str(root), name): (node_id, name)
        for node_id, name in names.items()
    }
    try:
        for ref, (node_id, name) in refs.items():
            node = next(n["NodeManagerAddress"] for n in nodes if n["NodeID"] == node_id)
            try:
                ray.get(ref, timeout=PROBE_TIMEOUT_S)
            except ray.exceptions.GetTimeoutError:
                raise RayBackendError(
                    f"no worker on node {node} started within {PROBE_TIMEOUT_S:g} s to check "
                    f"that it can write to {root}"
                ) from None
            except ray.exceptions.RayError as err:
                raise RayBackendError(
                    f"a worker on node {node} cannot write to {root} "
                    f"({_reason(err)}): --out must be a folder every node reaches at the same "
                    f"path (shared storage such as NFS), and l2t-gym must be installed on "
                    f"every node"
                ) from None
            if not (root / name).exists():
                raise RayBackendError(
                    f"a worker on node {node} wrote into its own {root}, which this driver "
                    f"does not see: --out must be shared storage every node reaches at the same "
                    f"path (e.g. NFS), or records would be lost"
                )
    finally:
        for name in names.values():
            (root / name).unlink(missing_ok=True)


def _ray_unit(grid: Grid, root: str, unit: tuple[str, int, int], threads: int) -> str:
    """One unit in a Ray worker, with the torch threads its CPU reservation allows."""
    torch.set_num_threads(threads)
    return complete_unit(grid, root, unit)


def run_pending_ray(
    grid: Grid, store: RecordStore, options: RayOptions, *, progress: bool = True
) -> RecordStore:
    """Run every unit not already complete in `store` as a Ray task; raise :class:`UnitsFailed`
    at the end if any unit raised (the others still run and are written)."""
    units = grid.units()
    todo = [u for u in units if not store.is_complete(unit_id(*u))]
    bar = tqdm(total=len(todo), desc="units (ray)", unit="unit", disable=not progress)
    if len(todo) < len(units) and progress:
        bar.write(f"resuming {store.root}: {len(units) - len(todo)} unit(s) already complete")
    if not todo:
        bar.close()
        return store
    started = connect(options)
    ray = import_ray()
    pending: dict[Any, tuple[str, int, int]] = {}
    try:
        probe_storage(store.root, options)
        task = ray.remote(_ray_unit)
        grid_ref = ray.put(grid)
        root = str(store.root.resolve())
        for unit in todo:
            ref = task.options(
                num_cpus=options.cpus_per_unit,
                num_gpus=options.gpus_per_unit,
                retry_exceptions=False,  # a unit that raises would raise again: report it instead
                name=f"l2t {unit_id(*unit)}",
            ).remote(grid_ref, root, unit, options.threads)
            pending[ref] = unit
        failures: dict[str, str] = {}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            unit = pending.pop(done[0])
            uid = unit_id(*unit)
            try:
                ray.get(done[0])
            except ray.exceptions.RayError as err:
                failures[uid] = _reason(err)
                bar.write(f"unit {uid} failed: {failures[uid]}")
            bar.set_postfix_str(uid)
            bar.update()
    finally:  # on an error or Ctrl-C, do not leave units running for nobody
        for ref in pending:
            ray.cancel(ref, force=True)
        bar.close()
        if started:
            ray.shutdown()
    if failures:
        raise UnitsFailed(failures, len(todo) - len(failures), store.root)
    return store


def _reason(err: BaseException) -> str:
    """The user's exception behind a Ray error (its type and message), else Ray's own."""
    cause = getattr(err, "cause", None)
    if isinstance(cause, BaseException):
        return f"{type(cause).__name__}: {cause}"
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[-1] if text else ''}"
