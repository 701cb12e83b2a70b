"""Inspection: x * w + b taken apart per image, mistakes, confusion, PR curve, predict --explain."""

import json

import pytest
import torch
from PIL import Image

from helpers import trained
from mnist37 import save_checkpoint
from mnist37.explain import confusion_matrix, explain, mistakes, mistakes_grid, predictions, render
from mnist37.models import MLP, LinearModel, TemplateModel
from mnist37.loop import fit_in_one_pass
from mnist37.predict import main as predict_main
from mnist37.predict import read_image


@pytest.fixture(scope="module")
def linear(digits37):
    torch.manual_seed(0)
    return trained(LinearModel, digits37)


def test_contributions_plus_bias_are_the_logits(linear, digits37):
    x = digits37.valid.x[:16]
    logits = linear(x).detach()
    for row, e in enumerate(explain(linear, x)):
        contribution = dict(e.maps)["x * w"]
        assert torch.allclose(contribution.flatten(), x[row] * linear.weights.detach())
        assert e.numbers["sum"] == pytest.approx(float(contribution.sum()), abs=1e-5)
        assert e.numbers["sum"] + e.numbers["bias"] == pytest.approx(float(logits[row]), abs=1e-5)
        assert e.numbers["logit"] == pytest.approx(float(logits[row]), abs=1e-6)
        first = float(torch.sigmoid(logits[row]))
        assert e.numbers["probability"] == pytest.approx(max(first, 1 - first), abs=1e-6)
        assert e.numbers["predicted"] == (3 if logits[row] > 0 else 7)


def test_multi_digit_maps_are_for_the_predicted_digit_and_the_runner_up(data_root):
    from mnist37.data import load_embedded

    data = load_embedded(data_root, "all")
    model = trained(LinearModel, data)
    x = data.valid.x[::97][:8]
    logits = model(x).detach()
    for row, e in enumerate(explain(model, x)):
        best, second = logits[row].topk(2).indices.tolist()
        assert e.numbers["predicted"] == best  # digits 0-9: class index == digit
        for k in (best, second):
            assert e.numbers[f"sum[{k}]"] + e.numbers[f"bias[{k}]"] == pytest.approx(float(logits[row, k]), abs=1e-4)
        assert [title for title, _ in e.maps] == [f"x * w[{best}]", f"runner-up x * w[{second}]"]


def test_mlp_saliency_says_it_is_not_the_logit(digits37):
    model = trained(MLP, digits37)
    x = digits37.valid.x[:4]
    logits = model(x).detach()
    for row, e in enumerate(explain(model, x)):
        assert e.numbers["logit"] == pytest.approx(float(logits[row]), abs=1e-5)
        assert "map sum, not the logit" in e.numbers
    assert model.training  # explaining never leaves the model in eval mode


def test_template_explanation_is_the_two_distance_maps(digits37):
    model = TemplateModel(digits37.digits, distance="l1")
    fit_in_one_pass(model, digits37)
    x = digits37.valid.x[:4]
    distances = model.distances(x)
    for row, e in enumerate(explain(model, x)):
        assert e.numbers["mean distance to 3"] == pytest.approx(float(distances[row, 0]), abs=1e-6)
        assert e.numbers["mean distance to 7"] == pytest.approx(float(distances[row, 1]), abs=1e-6)
        maps = dict(e.maps)
        assert torch.allclose(-maps["|x - m3|"].flatten(), (x[row] - model.means[0]).abs())


def test_mistakes_are_exactly_the_wrong_predictions_most_confident_first(linear, digits37):
    x, y = digits37.valid.x, digits37.valid.y
    rows, predicted, confidence = mistakes(linear, x, y)
    wrong = set((linear.predict(x) != torch.tensor([3, 7])[y]).nonzero().flatten().tolist())
    assert set(rows.tolist()) == wrong and len(rows) == len(wrong)
    assert (predicted != y[rows]).all()
    assert confidence.tolist() == sorted(confidence.tolist(), reverse=True)
    grid, count = mistakes_grid(linear, x, y)
    assert count == len(wrong) and (grid is None) == (count == 0)


def test_confusion_matrix_counts(linear, digits37):
    x, y = digits37.valid.x, digits37.valid.y
    matrix = confusion_matrix(predictions(linear, x)[0], y, 2)
    assert matrix.sum() == len(y) and matrix.sum(dim=1).tolist() == [100, 100]
    correct = (linear.predict(x) == torch.tensor([3, 7])[y]).sum()
    assert matrix.trace() == correct


def test_render_draws_every_panel(linear, digits37):
    card = render(explain(linear, digits37.valid.x[:1])[0])
    assert card.width >= 3 * 28 * 4 and card.height > 28 * 4


def test_tensorboard_has_every_inspection_view(tmp_path, data_root):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from mnist37.checkpoints import load_model
    from mnist37.train import run
    from helpers import make_config

    cfg = make_config("data=embedded", f"data.root={data_root}", "trainer.epochs=5", "device=cpu", "inspect.every=2")
    run(cfg, tmp_path)
    events = EventAccumulator(str(tmp_path), size_guidance={"images": 0, "tensors": 0, "histograms": 0})
    events.Reload()
    assert [e.step for e in events.Scalars("loss/valid")] == [1, 2, 3, 4, 5]  # curves: every epoch
    snapshots = [2, 4, 5]  # every 2 epochs, and the end
    assert [e.step for e in events.Images("explain/examples")] == snapshots
    assert [e.step for e in events.Images("weights/model")] == snapshots
    assert [e.step for e in events.Histograms("params/weights")] == snapshots
    assert {"pr_curve/valid", "confusion/valid/text_summary", "explain/numbers/text_summary"} <= set(events.Tags()["tensors"])
    assert [e.step for e in events.Tensors("pr_curve/valid")] == snapshots
    assert [e.step for e in events.Scalars("mistakes/count")] == snapshots

    from mnist37.data import load_embedded

    model = load_model(tmp_path)
    valid = load_embedded(data_root, (3, 7)).valid
    wrong = int((model.predict(valid.x) != torch.tensor([3, 7])[valid.y]).sum())
    assert events.Scalars("mistakes/count")[-1].value == wrong
    table = events.Tensors("explain/numbers/text_summary")[-1].tensor_proto.string_val[0].decode()
    first_row = table.splitlines()[2].strip("| ").split(" | ")
    assert float(first_row[4]) == pytest.approx(float(model(valid.x[:1]).detach()[0]), abs=1e-3)  # the logit column
    confusion = events.Tensors("confusion/valid/text_summary")[-1].tensor_proto.string_val[0].decode()
    assert "true \\ predicted" in confusion


def test_predict_explain_writes_pngs_whose_numbers_match_the_model(linear, digits37, tmp_path, capsys):
    checkpoint = save_checkpoint(tmp_path / "model.pt", linear)
    picture = tmp_path / "digit.png"
    Image.fromarray((digits37.valid.x[0].reshape(28, 28) * 255).byte().numpy(), "L").resize((200, 200)).save(picture)
    assert predict_main(["--checkpoint", str(checkpoint), "--explain", "--json", str(picture)]) == 0
    (prediction,) = json.loads(capsys.readouterr().out)["predictions"]
    png = Image.open(prediction["explanation_png"])
    png.load()
    assert png.width > 200 and prediction["explanation_png"] == str(tmp_path / "digit.explain.png")
    logit = float(linear(read_image(picture).reshape(1, -1)).detach()[0])
    numbers = prediction["explanation"]
    assert numbers["logit"] == pytest.approx(logit, abs=1e-4)
    assert numbers["sum"] + numbers["bias"] == pytest.approx(logit, abs=1e-4)

    assert predict_main(["--checkpoint", str(checkpoint), "--explain", str(picture)]) == 0
    out = capsys.readouterr().out
    assert f"logit {logit:.3f}" in out and "digit.explain.png" in out


def test_numbers_table_for_many_digits_has_one_summary_column(data_root):
    from mnist37.data import load_embedded
    from mnist37.inspection import numbers_table

    data = load_embedded(data_root, "all")
    model = trained(LinearModel, data)
    x, y = data.valid.x[::100], data.valid.y[::100]
    explanations = explain(model, x)
    table = numbers_table(explanations, [int(d) for d in y]).splitlines()
    assert table[0] == "| # | true | numbers |" and len(table) == 2 + len(x)
    for line, e in zip(table[2:], explanations):
        assert line.endswith(f"| {e.summary()} |")
