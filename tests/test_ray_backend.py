"""The Ray backend of `l2t compare`: the same records as the local backend, a killed driver resumes
with no lost and no duplicated rows, a failed unit is reported without stopping the others, and
bad settings (no Ray, a malformed address, negative resources) exit 2 before any work.

One local Ray (2 CPUs) serves every test that needs a cluster; the CLI runs in subprocesses join
it through its address, as they would join a real cluster.
"""

import os
import pickle
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

# The tests' Ray (and the drivers they start) talk over loopback only; read by Ray at import.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

from analysis.cli import main  # noqa: E402
from analysis.ray_backend import (
    RayBackendError,
    RayOptions,
    UnitsFailed,
    check_address,
    probe_storage,
    run_pending_ray,
)
from analysis.records import COEFF_COLUMNS, COLUMNS, RecordStore
from analysis.runner import Grid, prepare, run_grid
from teachers.base import TeachingSpec

ROOT = Path(__file__).resolve().parents[1]
KEY = ["teacher", "budget", "seed", "student_seed", "phase", "episode", "step", "metric"]
SPEC = TeachingSpec(horizon=3, interval=10, dev_subset=64, device="cpu")
GRID_ARGS = [
    "--teachers",
    "ce,random",
    "--seeds",
    "2",
    "--budget",
    "5",
    "--horizon",
    "3",
    "--interval",
    "10",
    "--device",
    "cpu",
    "--quiet",
    "--no-plots",
]


@pytest.fixture(scope="session")
def ray_address():
    """One local Ray for the whole session, shut down (with its processes) at the end."""
    ray = pytest.importorskip("ray")
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=100 * 2**20,
        logging_level="WARNING",
    )
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


def _canon(df: pd.DataFrame, key: list[str]) -> pd.DataFrame:
    """Rows without timings, in a fixed order: what must not depend on where a unit ran."""
    if "metric" in df:
        df = df[~df["metric"].str.endswith("wall_time")].drop(columns="wall_time")
    return df.sort_values(key).reset_index(drop=True)


def test_units_pickle():
    grid = Grid(["ce", "random"], 2, [5, 10], SPEC, teacher_configs={"random": {"family": "ce"}})
    assert pickle.loads(pickle.dumps(grid)) == grid
    assert pickle.loads(pickle.dumps(RayOptions("auto", 0.5, 0.25))) == RayOptions(
        "auto", 0.5, 0.25
    )


def test_ray_and_local_backends_give_identical_records(ray_address, tmp_path):
    grid = Grid(["ce", "random"], 2, [5], SPEC)
    run_grid(grid, tmp_path / "local", progress=False)
    store = prepare(grid, tmp_path / "ray")
    run_pending_ray(grid, store, RayOptions(cpus_per_unit=2), progress=False)
    local, remote = RecordStore(tmp_path / "local"), RecordStore(tmp_path / "ray")
    assert remote.completed() == local.completed() and len(remote.completed()) == 4
    pd.testing.assert_frame_equal(_canon(remote.read(), KEY), _canon(local.read(), KEY))
    coeff_key = [c for c in COEFF_COLUMNS if c != "value"]
    pd.testing.assert_frame_equal(
        _canon(remote.read_coeffs(), coeff_key), _canon(local.read_coeffs(), coeff_key)
    )
    assert sorted(p.name for p in (tmp_path / "ray" / "teachers").iterdir()) == sorted(
        p.name for p in (tmp_path / "local" / "teachers").iterdir()
    )
    assert not list((tmp_path / "ray").glob(".ray-probe-*")), "the storage probe cleans up"


def test_failed_unit_is_reported_and_the_others_finish(ray_address, tmp_path):
    grid = Grid(["ce", "random"], 2, [5], SPEC)
    store = prepare(grid, tmp_path)
    # the teacher file of one unit cannot be written: that unit raises in its worker
    (store.teacher_path("random__b5__s1")).mkdir()
    with pytest.raises(UnitsFailed) as failed:
        run_pending_ray(grid, store, RayOptions(), progress=False)
    assert list(failed.value.failures) == ["random__b5__s1"]
    assert re.search(r"random__b5__s1: RuntimeError: .*Is a directory", str(failed.value))
    assert store.completed() == {"ce__b5__s0", "ce__b5__s1", "random__b5__s0"}

    # fixed, the same command resumes and runs only the failed unit
    store.teacher_path("random__b5__s1").rmdir()
    run_pending_ray(grid, store, RayOptions(), progress=False)
    assert len(store.completed()) == 4
    assert not store.read().duplicated([*KEY, "wall_time"]).any()


def test_cli_reports_failed_units_with_exit_1(ray_address, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["compare", *GRID_ARGS, "--seeds", "1", "--out", str(out), "--backend", "ray"]
    RecordStore(out).teachers_dir.mkdir(parents=True)
    (RecordStore(out).teacher_path("ce__b5__s0")).mkdir()
    assert main([*argv, "--address", ray_address]) == 1
    err = capsys.readouterr().err
    assert "1 unit(s) failed" in err and re.search(
        r"ce__b5__s0: RuntimeError: .*Is a directory", err
    )
    assert RecordStore(out).completed() == {"random__b5__s0"}


def test_unwritable_output_folder_is_caught_before_any_unit(ray_address, tmp_path):
    with pytest.raises(RayBackendError, match=r"cannot write to .*shared storage"):
        probe_storage(tmp_path / "not-there", RayOptions())


def test_units_no_node_can_hold_are_refused(ray_address, tmp_path):
    with pytest.raises(RayBackendError, match=r"no node .* 1 GPU"):
        probe_storage(tmp_path, RayOptions(gpus_per_unit=1))
    with pytest.raises(RayBackendError, match=r"no node .* 3 CPU"):
        probe_storage(tmp_path, RayOptions(cpus_per_unit=3))


def _l2t_ray(out: Path, address: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "analysis.cli", "compare", *GRID_ARGS, "--out", str(out)]
        + [
            "--backend",
            "ray",
            "--address",
            address,
            "--cpus-per-unit",
            "2",
        ],  # one worker: quick to start
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_killed_driver_resumes_without_lost_or_duplicated_rows(ray_address, tmp_path):
    out = tmp_path / "run"
    proc = _l2t_ray(out, ray_address)
    records = out / "records"
    deadline = time.monotonic() + 600  # a hang guard: a loaded 2-core machine took > 180 s
    while not list(records.glob("*.parquet")) and proc.poll() is None:
        assert time.monotonic() < deadline, "no unit finished in 600 s"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)  # the driver dies; its tasks may be mid-write
    proc.wait()
    done_at_kill = len(list(records.glob("*.parquet")))
    assert 1 <= done_at_kill < 4, "the kill should land after the first unit, before the last"

    resumed = _l2t_ray(out, ray_address)
    stdout, stderr = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, stderr
    assert "test error" in stdout  # the printed table
    got = RecordStore(out).read()
    assert len(list(records.glob("*.parquet"))) == 4
    assert not got.duplicated(KEY).any()
    assert not list(out.glob("*/.*.tmp")) and not list(out.glob(".ray-probe-*"))

    ref_dir = tmp_path / "ref"
    spec = TeachingSpec(horizon=3, interval=10, device="cpu")  # what GRID_ARGS ask for
    run_grid(Grid(["ce", "random"], 2, [5], spec), ref_dir, progress=False)
    pd.testing.assert_frame_equal(_canon(got, KEY), _canon(RecordStore(ref_dir).read(), KEY))
    assert set(got.columns) == set(COLUMNS)


def test_without_ray_the_backend_exits_2_saying_how_to_install(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_:
        main(["compare", *GRID_ARGS, "--out", str(out), "--backend", "ray"])
    assert exit_.value.code == 2
    assert 'pip install -e ".[ray]"' in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize(
    "extra, match",
    [
        (["--address", "nohost"], "--address: expected auto, local, HOST:PORT"),
        (["--address", "10.0.0.5:99999"], "--address: expected"),
        (["--address", "http://10.0.0.5:6379"], "--address: expected"),
        (["--cpus-per-unit", "-1"], "--cpus-per-unit: expected a positive number"),
        (["--cpus-per-unit", "0"], "--cpus-per-unit: expected a positive number"),
        (["--cpus-per-unit", "1.5"], "fraction below 1 or a whole number"),
        (["--gpus-per-unit", "-0.5"], "--gpus-per-unit: expected a non-negative number"),
        (["--gpus-per-unit", "nan"], "--gpus-per-unit: expected a non-negative number"),
        (["--device", "cuda"], "needs --gpus-per-unit > 0"),
    ],
)
def test_bad_ray_settings_exit_2_before_any_work(extra, match, tmp_path, capsys):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_:
        main(["compare", *GRID_ARGS, "--out", str(out), "--backend", "ray", *extra])
    assert exit_.value.code == 2
    assert re.search(match, capsys.readouterr().err)
    assert not out.exists()


def test_ray_options_need_the_ray_backend(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["compare", *GRID_ARGS, "--out", str(tmp_path / "o"), "--gpus-per-unit", "1"])
    assert exit_.value.code == 2
    assert "--gpus-per-unit applies only to --backend ray" in capsys.readouterr().err


def test_unreachable_address_exits_2(tmp_path, capsys):
    pytest.importorskip("ray")
    with pytest.raises(SystemExit) as exit_:
        main(["compare", *GRID_ARGS, "--out", str(tmp_path), "--backend", "ray"]
             + ["--address", "127.0.0.1:1"])  # fmt: skip
    assert exit_.value.code == 2
    assert "no Ray cluster answers at --address 127.0.0.1:1" in capsys.readouterr().err


@pytest.mark.parametrize("address", ["auto", "local", "10.0.0.5:6379", "ray://head:10001"])
def test_good_addresses(address):
    assert check_address(address) == address
