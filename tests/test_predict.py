"""mnist37-predict on pictures the test draws itself: MNIST-like, RGB, large, dark-on-light, photos
of real digits on uneven noisy paper, broken files; and which checkpoint it picks."""

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from helpers import photo_of, trained
from mnist37 import save_checkpoint
from mnist37.models import LinearModel, MLP
from mnist37.predict import best_checkpoint, main, read_image, to_mnist
from mnist37.loop import train


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, digits37):
    return save_checkpoint(tmp_path_factory.mktemp("run") / "model.pt", trained(LinearModel, digits37, epochs=10))


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


def test_an_mnist_image_goes_through_unchanged(digits37):
    three = digits37.valid.x[0].reshape(28, 28)
    again = to_mnist(as_picture(three, 28))
    assert torch.equal(again, (three * 255).byte().float() / 255)  # only the PNG's 8 bits


def test_enlarged_mnist_images_come_back_nearly_as_they_were(digits37, checkpoint):
    """Blown up tenfold and read back: the same digits, and nearly the same pixels (MNIST's own
    20x20 fit was of the digit before anti-aliasing, so a refit differs a little at the edges)."""
    from mnist37.checkpoints import load_model

    x, y = digits37.valid.x, digits37.valid.y
    again = torch.stack([to_mnist(as_picture(image.reshape(28, 28), 280)) for image in x])
    assert again.shape == (len(x), 28, 28) and 0 <= again.min() and again.max() <= 1
    assert (again.reshape(len(x), -1) - x).abs().mean() < 0.1
    model = load_model(checkpoint)
    clean, enlarged = ((model.classes(model(images)) == y).float().mean() for images in (x, again))
    assert enlarged >= clean - 0.02  # at most 4 of the 200 images


@pytest.mark.parametrize("model_class", [LinearModel, MLP])
def test_photos_of_digits_on_paper_are_read_as_well_as_clean_digits(model_class, digits37):
    """Every valid-split digit as a photo: dark ink on uneven, noisy, off-white paper, 150-500 px,
    blurred, JPEG. Accuracy must stay within 3 points of the same model on the clean images."""
    import numpy as np

    model = trained(model_class, digits37, epochs=20)
    x, y = digits37.valid.x, digits37.valid.y
    rng = np.random.default_rng(0)
    photos = torch.stack([to_mnist(photo_of(image.reshape(28, 28), rng)) for image in x])
    with torch.no_grad():
        clean = (model.classes(model(x)) == y).float().mean().item()
        photographed = (model.classes(model(photos)) == y).float().mean().item()
    assert clean > 0.95 and photographed >= clean - 0.03, (clean, photographed)


def test_uneven_light_and_noise_never_become_the_digit(digits37):
    """The ink's bounding box is the digit's, not the sheet's: the digit fills 20 px of the 28."""
    import numpy as np

    rng = np.random.default_rng(1)
    for image in digits37.valid.x[:20]:
        digit = to_mnist(photo_of(image.reshape(28, 28), rng))
        assert (digit[:2] < 0.05).all() and (digit[-2:] < 0.05).all()  # black margins, as in MNIST
        rows, cols = torch.nonzero(digit > 0.3, as_tuple=True)
        assert 17 <= max(rows.max() - rows.min(), cols.max() - cols.min()) + 1 <= 21


def test_any_size_and_polarity_becomes_the_same_digit(pictures):
    small = read_image(next(p for p in pictures if p.name == "three.png"))
    large = read_image(next(p for p in pictures if p.name == "three_large.jpg"))
    assert (small - large).abs().mean() < 0.1
    paper = read_image(next(p for p in pictures if p.name == "seven_paper.png"))
    screen = read_image(next(p for p in pictures if p.name == "seven_rgb.png"))
    assert (paper - screen).abs().mean() < 0.1


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


def test_default_checkpoint_is_the_best_completed_run_for_the_digits(tmp_path, monkeypatch, pictures, capsys):
    outputs = tmp_path / "outputs"
    runs = {  # name: (status, valid accuracy, digits)
        "runs/good": ("completed", 0.95, [3, 7]),
        "multirun/s/0_best": ("completed", 0.975, [3, 7]),
        "multirun/s/1_newest_worse": ("completed", 0.90, [3, 7]),
        "multirun/s/2_interrupted": ("interrupted", 0.99, [3, 7]),
        "multirun/s/3_nan": ("completed", float("nan"), [3, 7]),
        "multirun/t/0_other_digits": ("completed", 0.999, [1, 8]),
    }
    for name, (status, accuracy, digits) in runs.items():
        folder = outputs / name
        folder.mkdir(parents=True)
        save_checkpoint(folder / "model.pt", LinearModel(digits))
        (folder / "metrics.json").write_text(json.dumps({"status": status, "valid_accuracy": accuracy, "digits": digits}))
    (outputs / "runs" / "no_metrics").mkdir()
    save_checkpoint(outputs / "runs" / "no_metrics" / "model.pt", LinearModel())
    monkeypatch.chdir(tmp_path)
    best, metrics = best_checkpoint()
    assert best == Path("outputs/multirun/s/0_best/model.pt") and metrics["valid_accuracy"] == 0.975
    assert best_checkpoint(digits=(1, 8))[0] == Path("outputs/multirun/t/0_other_digits/model.pt")

    picture = str(next(iter(pictures)))
    assert main([picture]) == 0
    assert capsys.readouterr().out.startswith(f"checkpoint: {best} (LinearModel, digits 3,7)\n")
    assert main(["--json", "--digits", "1,8", picture]) == 0
    assert json.loads(capsys.readouterr().out)["checkpoint"] == "outputs/multirun/t/0_other_digits/model.pt"
    assert main(["--digits", "2,5", picture]) == 2
    assert "no completed run for digits 2,5 under outputs/ (its runs are for 1,8 or 3,7)" in capsys.readouterr().err


def test_no_checkpoint_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["x.png"]) == 2
    assert "no completed run found under outputs/" in capsys.readouterr().err


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
