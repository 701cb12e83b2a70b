"""The pixel-similarity model: the asker's abs(pixel - weight) idea, and why L2 of it is linear."""

import pytest
import torch

from mnist37.errors import BadInputError
from mnist37.models import LinearModel, TemplateModel
from mnist37.loop import fit_in_one_pass


def test_means_are_the_per_digit_means_of_the_split(digits37):
    model = TemplateModel(digits37.digits)
    fit_in_one_pass(model, digits37)
    x, y = digits37.train.x, digits37.train.y
    assert torch.allclose(model.means[0], x[y == 0].mean(0), atol=1e-6)  # the 3s
    assert torch.allclose(model.means[1], x[y == 1].mean(0), atol=1e-6)  # the 7s
    assert model.weight_images().shape == (2, 28, 28)


def hand_made(distance):
    model = TemplateModel((3, 7), distance=distance)
    model.means[0] = 0.0
    model.means[0, :10] = 1.0  # "ideal 3": ink in the first ten pixels
    model.means[1] = 0.0
    model.means[1, -10:] = 1.0  # "ideal 7": ink in the last ten pixels
    return model


@pytest.mark.parametrize("distance", ["l1", "l2"])
def test_closest_mean_wins(distance):
    model = hand_made(distance)
    x = torch.zeros(3, 784)
    x[0, :8] = 1.0  # mostly like the 3
    x[1, -9:] = 1.0  # like the 7
    x[2, :10], x[2, -10:] = 1.0, 0.6  # a full 3 plus a faint 7
    assert model.predict(x).tolist() == [3, 7, 3]


def test_l1_is_mean_absolute_difference_and_l2_mean_squared():
    x = torch.zeros(1, 784)
    x[0, :5] = 0.5
    l1, l2 = hand_made("l1").distances(x), hand_made("l2").distances(x)
    # to the 3: 5 pixels off by 0.5 and 5 by 1.0; to the 7: 5 by 0.5 and 10 by 1.0
    assert torch.allclose(l1, torch.tensor([[(5 * 0.5 + 5) / 784, (5 * 0.5 + 10) / 784]]))
    assert torch.allclose(l2, torch.tensor([[(5 * 0.25 + 5) / 784, (5 * 0.25 + 10) / 784]]))


def test_l2_template_is_a_linear_model(digits37):
    """|x-m3|^2 - |x-m7|^2 = x @ 2(m3-m7) + |m7|^2 - |m3|^2: the same logits, so the same answers."""
    template = TemplateModel(digits37.digits, distance="l2")
    fit_in_one_pass(template, digits37)
    weights, bias = template.linear_equivalent()
    linear = LinearModel(digits37.digits)
    with torch.no_grad():
        linear.weights.copy_(weights)
        linear.bias.copy_(bias)
    x = torch.cat([digits37.valid.x, digits37.train.x])
    assert torch.allclose(linear(x), template(x), atol=1e-6)
    assert torch.equal(linear.predict(x), template.predict(x))


def test_only_two_digit_l2_has_a_linear_equivalent(digits37):
    assert TemplateModel((3, 7), distance="l1").linear_equivalent() is None
    assert TemplateModel((1, 2, 3), distance="l2").linear_equivalent() is None


def test_unknown_distance_is_refused():
    with pytest.raises(BadInputError, match="model.distance='cosine'.*l1 or l2"):
        TemplateModel((3, 7), distance="cosine")


def test_template_reaches_the_book_baseline_on_3_vs_7(digits37):
    history = fit_in_one_pass(TemplateModel(digits37.digits, distance="l1"), digits37)
    assert history[-1].valid_accuracy >= 0.93  # fast.ai book: 95.1% on the full MNIST sample


def test_ten_digit_template(data_root):
    from mnist37.data import load_embedded

    data = load_embedded(data_root, "all")
    model = TemplateModel(data.digits, distance="l2")
    history = fit_in_one_pass(model, data)
    assert model.weight_images().shape == (10, 28, 28)
    assert model(data.valid.x[:4]).shape == (4, 10)
    assert history[-1].valid_accuracy > 0.7  # chance: 0.1


def test_template_checkpoint_round_trip(tmp_path, digits37):
    from mnist37 import load_model, save_checkpoint

    model = TemplateModel(digits37.digits, distance="l2")
    fit_in_one_pass(model, digits37)
    loaded = load_model(save_checkpoint(tmp_path / "model.pt", model))
    assert isinstance(loaded, TemplateModel) and loaded.hparams == {"distance": "l2"}
    assert torch.equal(loaded.means, model.means)
    assert torch.equal(loaded.predict(digits37.valid.x), model.predict(digits37.valid.x))
