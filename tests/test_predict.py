"""mnist37-predict on pictures the test draws itself: MNIST-like, RGB, large, dark-on-light, broken."""

import json

import pytest
import torch
from PIL import Image

from mnist37 import save_checkpoint
from mnist37.models import LinearModel, MLP
from mnist37.predict import main, newest_checkpoint, read_image, to_mnist
from mnist37.training import train


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, digits37):
    torch.manual_seed(0)
    model = LinearModel(digits37.digits)
    train(model, digits37, torch.optim.SGD(model.parameters(), lr=0.25), epochs=10, progress=False)
    return save_checkpoint(tmp_path_factory.mktemp("run") / "model.pt", model)


def as_picture(image28: torch.Tensor, size: int, mode: str = "L", dark_on_light: bool = False) -> Image.Image:
    pixels = (1 - image28) if dark_on_light else image28
    picture = Image.fromarray((pixels * 255).byte().numpy(), mode="L").resize((size, size), Image.BILINEAR)
    return picture.convert(mode)


@pytest.fixture(scope="module")
def pictures(tmp_path_factory, digits37):
    """Valid-split 3s and 7s saved as files in several ways, with the digit they show."""
    folder = tmp_path_factory.mktemp("pictures")
    three = digits37.valid.x[digits37.valid.y == 0][0].reshape(28, 28)
    seven = digits37.valid.x[digits37.valid.y == 1][0].reshape(28, 28)
    files = {
        folder / "three.png": (as_picture(three, 28), 3),
        folder / "seven_rgb.png": (as_picture(seven, 28, "RGB"), 7),
        folder / "three_large.jpg": (as_picture(three, 1000, "RGB"), 3),
        folder / "seven_paper.png": (as_picture(seven, 300, dark_on_light=True), 7),
    }
    for path, (picture, _) in files.items():
        picture.save(path)
    return {path: digit for path, (_, digit) in files.items()}


def test_mnist_image_survives_preprocessing(digits37):
    """An MNIST digit is already 20x20-fitted and centred: preprocessing keeps it nearly as it is."""
    three = digits37.valid.x[0].reshape(28, 28)
    again = to_mnist(as_picture(three, 28))
    assert again.shape == (28, 28) and 0 <= again.min() and again.max() <= 1
    assert (again - three).abs().mean() < 0.08


def test_any_size_and_polarity_becomes_the_same_digit(pictures):
    small = read_image(next(p for p in pictures if p.name == "three.png"))
    large = read_image(next(p for p in pictures if p.name == "three_large.jpg"))
    assert (small - large).abs().mean() < 0.05
    paper = read_image(next(p for p in pictures if p.name == "seven_paper.png"))
    screen = read_image(next(p for p in pictures if p.name == "seven_rgb.png"))
    assert (paper - screen).abs().mean() < 0.05


def test_fitted_into_20x20_and_centred():
    big_blob = Image.new("L", (400, 200), 0)
    big_blob.paste(255, (300, 20, 380, 180))  # an 80x160 bar far off centre
    digit = to_mnist(big_blob)
    rows, cols = torch.nonzero(digit > 0.5, as_tuple=True)
    assert rows.max() - rows.min() + 1 <= 20 and rows.max() - rows.min() + 1 >= 18
    centre = (digit.sum(1) * torch.arange(28.0)).sum() / digit.sum(), (digit.sum(0) * torch.arange(28.0)).sum() / digit.sum()
    assert abs(centre[0] - 13.5) <= 1 and abs(centre[1] - 13.5) <= 1


def test_predict_prints_each_digit_and_continues_past_a_broken_file(pictures, checkpoint, tmp_path, capsys):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    blank = tmp_path / "blank.png"
    Image.new("RGB", (50, 50), "white").save(blank)
    files = [*pictures, broken, blank]
    code = main(["--checkpoint", str(checkpoint), *map(str, files)])
    out, err = capsys.readouterr()
    assert code == 1  # something failed, and said so
    for path, digit in pictures.items():
        assert f"{path}: {digit} (p=" in out
    assert f"{broken}: not a readable image" in err and f"{blank}: no digit found" in err


def test_predict_json(pictures, checkpoint, capsys):
    code = main(["--checkpoint", str(checkpoint), "--json", *map(str, pictures)])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["checkpoint"] == str(checkpoint)
    for prediction in report["predictions"]:
        assert prediction["digit"] == pictures[next(p for p in pictures if str(p) == prediction["file"])]
        assert 0.5 <= prediction["probability"] <= 1
        assert sum(prediction["probabilities"].values()) == pytest.approx(1, abs=1e-3)


def test_default_checkpoint_is_the_newest_under_outputs(tmp_path, monkeypatch):
    import os

    older, newer = tmp_path / "outputs" / "runs" / "a", tmp_path / "outputs" / "multirun" / "b" / "0_x"
    for folder in (older, newer):
        folder.mkdir(parents=True)
    save_checkpoint(older / "model.pt", LinearModel())
    save_checkpoint(newer / "model.pt", MLP())
    os.utime(older / "model.pt", (1, 1))
    monkeypatch.chdir(tmp_path)
    assert newest_checkpoint() == newer.relative_to(tmp_path) / "model.pt"


def test_no_checkpoint_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["x.png"]) == 2
    assert "no checkpoint found under outputs/" in capsys.readouterr().err


def test_multi_digit_checkpoint_predicts_all_digits(tmp_path, data_root):
    from mnist37.checkpoints import load_model
    from mnist37.data import load_embedded

    data = load_embedded(data_root, "all")
    torch.manual_seed(0)
    model = LinearModel(data.digits)
    train(model, data, torch.optim.SGD(model.parameters(), lr=0.5), epochs=5, progress=False)
    loaded = load_model(save_checkpoint(tmp_path / "model.pt", model))
    predicted = loaded.predict(data.valid.x)
    assert set(predicted.tolist()) == set(range(10))
    assert (predicted == data.valid.y).float().mean() > 0.75  # class index == digit when digits are 0-9
