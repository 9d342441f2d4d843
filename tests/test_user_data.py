"""Your own data end to end: in-memory Splits and .npz files through TeachingSpec, every teacher, the
runner and `l2t compare`, with the data named and hashed in config.json."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from analysis.cli import main
from analysis.records import RecordStore
from analysis.runner import Grid, run_grid
from students.data import from_tensors, load_dataset, load_npz
from students.user_data import NPZ_KEYS, file_sha256, splits_sha256
from teachers import TEACHERS, TeachingSpec, make_teacher

SMALL = {  # per-teacher configs that keep the networks tiny
    "reinforce": {"hidden": 16},
    "ppo": {"net_arch": [16]},
    "a2c": {"net_arch": [16]},
}


def arrays(n_train: int = 240, n_test: int = 60, seed: int = 0) -> dict[str, np.ndarray]:
    """Four classes of 8x8 one-channel images whose class shifts the mean: learnable."""
    rng = np.random.default_rng(seed)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        y = rng.integers(0, 4, n)
        x = rng.normal(0, 1, (n, 1, 8, 8)).astype(np.float32) + y[:, None, None, None]
        out[f"x_{split}"], out[f"y_{split}"] = x, y
    return out


def spec(dataset) -> TeachingSpec:
    return TeachingSpec(
        dataset=dataset,
        horizon=2,
        interval=5,
        batch_size=16,
        dev_subset=24,
        device="cpu",
        student_kwargs={"hidden": 16},
    )


@pytest.fixture
def npz(tmp_path):
    path = tmp_path / "mine.npz"
    np.savez(path, **arrays())
    return path


@pytest.mark.parametrize("name", sorted(TEACHERS))
def test_every_teacher_fits_and_teaches_on_in_memory_splits(name):
    """In-memory Splits are hashed by nobody (a dict inside the spec once broke a cache), taught
    on by every teacher, and left as the user gave them."""
    splits = from_tensors(**arrays(n_test=61), name="mine")
    before = splits_sha256(splits)
    teacher = make_teacher(name, **SMALL.get(name, {}))
    s = spec(splits)
    teacher.fit(s, 2 * s.episode_steps, seed=0)
    result = teacher.teach(s, seed=7)
    # the error is of the user's 61 test examples: a whole number of them
    wrong = result.final["test_error"] * 61
    assert abs(wrong - round(wrong)) < 1e-4, result.final["test_error"]
    assert splits_sha256(splits) == before  # fit and teach did not write into the user's tensors


def test_npz_loads_like_from_tensors(npz):
    a = load_npz(npz)
    b = from_tensors(**arrays())
    for name in ("x_train", "y_train", "x_dev", "y_dev", "x_test", "y_test"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert a.name == str(npz.resolve())
    assert torch.equal(load_dataset(str(npz)).y_train, a.y_train)  # through the one loader


def test_bad_npz_files_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_npz(tmp_path / "absent.npz")
    partial = tmp_path / "partial.npz"
    np.savez(partial, x_train=np.zeros((4, 3)), y_train=np.zeros(4, int))
    with pytest.raises(ValueError, match="lacks arrays.*x_test"):
        load_npz(partial)
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a readable"):
        load_npz(junk)


@pytest.mark.parametrize(
    "y_train, y_test, says",
    [
        (
            np.arange(1, 5),
            np.arange(1, 5),
            r"labels are 1\.\.4, not 0\.\.C-1 .*class\(es\) 0.*y - 1",
        ),
        (
            np.array(["cat", "dog", "cat", "emu"]),
            np.array(["dog"] * 4),
            r"strings \('cat', 'dog', 'emu'\)",
        ),
        (np.array([0.0, 1.0, 1.0, 0.0]), np.array([0.0] * 4), r"floats \(0\.0, 1\.0\)"),
        (
            np.array([0, 1, 3, 3]),
            np.array([0] * 4),
            r"labels are 0, 1, 3.*class\(es\) 2 would have no",
        ),
        (
            np.array([0, 1, 1, 0]),
            np.array([0, 2, 1, 0]),
            r"y_test has label\(s\) 2 that no y_train",
        ),
        (np.array([-1, 0, 1, 1]), np.array([0] * 4), r"negative labels \(-1\)"),
    ],
)
def test_labels_other_than_0_to_c_minus_1_are_refused_naming_them(tmp_path, y_train, y_test, says):
    """Labels 1..10 used to train an 11-way student with an empty class 0, string labels to fail
    as 'a keyword was not accepted'; neither is remapped behind the user's back."""
    path = tmp_path / "labels.npz"
    x = np.zeros((4, 3), np.float32)
    np.savez(path, x_train=x, y_train=y_train, x_test=x, y_test=y_test)
    with pytest.raises(ValueError, match=says) as err:
        load_npz(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    assert "numpy.unique" in str(err.value) or "y_test" in str(err.value)


def test_runner_on_splits_records_name_and_hash(tmp_path):
    splits = from_tensors(**arrays(), name="mine")
    store = run_grid(Grid(["ce", "gce"], 2, [5], spec(splits)), tmp_path / "run", progress=False)
    config = store.config()
    assert config["spec"]["dataset"] == "mine"
    assert config["data"]["source"] == "splits" and len(config["data"]["sha256"]) == 64
    assert set(store.read()["dataset"]) == {"mine"}


def test_compare_on_an_npz_file_names_it_and_its_sha256(npz, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["compare", "--teachers", "ce,random", "--dataset", str(npz), "--seeds", "2"]
    argv += ["--budget", "10", "--horizon", "2", "--interval", "5", "--device", "cpu"]
    main([*argv, "--quiet", "--no-plots", "--out", str(out)])
    config = RecordStore(out).config()
    assert config["data"] == {
        "source": "npz",
        "name": str(npz.resolve()),
        "path": str(npz.resolve()),
        "sha256": file_sha256(npz),
    }
    assert config["spec"]["dataset"] == str(npz.resolve())
    records = RecordStore(out).read()
    assert set(records["dataset"]) == {str(npz.resolve())}
    assert (out / "summary.csv").exists()
    # a missing file is refused before anything is written
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--out", str(tmp_path / "x"), "--dataset", str(tmp_path / "no.npz")])
    assert exit_.value.code == 2 and "not found" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_npz_keys_are_documented():
    assert NPZ_KEYS == ("x_train", "y_train", "x_test", "y_test")
