import pytest
import torch

from mnist37.models import MLP, LinearModel, TemplateModel


def test_linear_is_x_times_w_plus_b():
    model = LinearModel((3, 7))
    x = torch.rand(5, 784)
    assert model.weights.shape == (784,) and model.bias.shape == ()
    assert torch.allclose(model(x), (x * model.weights).sum(dim=1) + model.bias)


def test_linear_without_bias_has_no_bias_parameter():
    model = LinearModel((3, 7), bias=False)
    assert [name for name, _ in model.named_parameters()] == ["weights"]
    x = torch.rand(4, 784)
    assert torch.allclose(model(x), x @ model.weights)
    assert torch.equal(model(torch.zeros(1, 784)), torch.zeros(1))  # a blank image sits on the boundary


def test_init_std_reproduces_fastai_init_params():
    torch.manual_seed(0)
    model = LinearModel((3, 7), init_std=1.0)
    torch.manual_seed(0)
    expected = torch.randn(784) * 1.0  # fast.ai: init_params((28*28, 1)) = randn(size) * std
    assert torch.equal(model.weights.detach(), expected)
    assert torch.count_nonzero(LinearModel((3, 7), init_std=0).weights) == 0


def test_mlp_shapes_and_weight_images():
    model = MLP((3, 7), hidden=12)
    assert model(torch.rand(6, 784)).shape == (6,)
    images = model.weight_images()
    assert images.shape == (12, 28, 28)
    assert torch.equal(images[2].flatten(), model.layers[0].weight[2])


def test_linear_weight_image_is_the_weight_vector_as_28x28():
    model = LinearModel((3, 7))
    image = model.weight_images()
    assert image.shape == (1, 28, 28)
    assert torch.equal(image[0, 1, 0], model.weights[28])  # row-major, like the pixels


def test_multi_digit_models_give_one_logit_and_image_per_digit():
    digits = tuple(range(10))
    linear, mlp = LinearModel(digits), MLP(digits, hidden=8)
    x = torch.rand(3, 784)
    assert linear(x).shape == (3, 10) and mlp(x).shape == (3, 10)
    assert linear.weight_images().shape == (10, 28, 28)
    assert torch.equal(linear.weight_images()[4].flatten(), linear.weights[:, 4])


def test_predict_returns_digits_for_every_image_layout():
    model = LinearModel((3, 7), init_std=0)
    with torch.no_grad():
        model.weights[:392] = 1.0  # ink in the top half -> 3
        model.weights[392:] = -1.0  # ink in the bottom half -> 7
    top, bottom = torch.zeros(28, 28), torch.zeros(28, 28)
    top[:5], bottom[-5:] = 1.0, 1.0
    images = torch.stack([top, bottom])
    for layout in (images, images[:, None], images.reshape(2, 784)):
        assert model.predict(layout).tolist() == [3, 7]


def test_predict_multi_digit_maps_argmax_to_digit():
    model = LinearModel((1, 5, 9), init_std=0)
    with torch.no_grad():
        model.bias[:] = torch.tensor([0.0, 0.0, 1.0])
    assert model.predict(torch.zeros(2, 784)).tolist() == [9, 9]


def test_predict_refuses_wrong_image_size():
    with pytest.raises(ValueError, match=r"\(N,28,28\)"):
        LinearModel((3, 7)).predict(torch.zeros(2, 32, 32))


def test_binary_loss_treats_first_digit_as_positive():
    model = LinearModel((3, 7))
    y = torch.tensor([0, 1])  # class 0 is digit 3
    targets = model.loss_targets(y)
    assert targets.tolist() == [1.0, 0.0]
    confident_right = torch.tensor([10.0, -10.0])
    assert model.loss(confident_right, targets) < 1e-3
    assert model.classes(confident_right).tolist() == [0, 1]


@pytest.mark.parametrize("make_model", [LinearModel, MLP, TemplateModel])
def test_logits_for_every_image_layout(make_model):
    model = make_model((3, 7))
    rows = torch.rand(4, 784)
    expected = model(rows)
    assert torch.equal(model(rows.reshape(4, 28, 28)), expected)
    assert torch.equal(model(rows.reshape(4, 1, 28, 28)), expected)


def test_cnn_reaches_98_percent_on_3_vs_7_with_the_defaults(tmp_path, data_root):
    from mnist37.train import run
    from helpers import make_config

    metrics = run(make_config("model=cnn", "data=embedded", f"data.root={data_root}", "device=cpu",
                              "logger=none"), tmp_path)
    assert metrics["model"] == "CNN" and metrics["valid_accuracy"] >= 0.98


@pytest.mark.slow
def test_cnn_reaches_92_percent_on_all_ten_digits_with_the_defaults(tmp_path, data_root):
    from mnist37.train import run
    from helpers import make_config

    metrics = run(make_config("model=cnn", "data=embedded", "data.digits=all", f"data.root={data_root}",
                              "device=cpu", "logger=none"), tmp_path)
    assert metrics["valid_accuracy"] >= 0.92


def test_cnn_shapes_filters_and_saliency():
    from mnist37.explain import explain
    from mnist37.models import CNN

    cnn = CNN((3, 7))
    assert cnn(torch.zeros(2, 784)).shape == (2,) and CNN(range(10))(torch.zeros(2, 28, 28)).shape == (2, 10)
    filters = cnn.weight_images()
    assert filters.shape == (16, 27, 27) and torch.equal(filters[0, :9, :9], cnn.layers[0].weight[0, 0, 0, 0].expand(9, 9))
    (card,) = explain(cnn.eval(), torch.rand(1, 784))
    assert card.maps[0][0] == "x * dlogit/dx" and "map sum, not the logit" in card.numbers  # saliency, said so


USER_MODEL = '''
import torch
from torch import nn
from mnist37 import Classifier


class TwoLayer(Classifier):
    """A model of the user's own: nothing in mnist37 knows it."""

    def __init__(self, digits=(3, 7), width=8):
        super().__init__(digits, width=width)
        self.net = nn.Sequential(nn.Linear(784, width), nn.Tanh(), nn.Linear(width, self.n_outputs))

    def forward(self, x):
        logits = self.net(x.flatten(1))
        return logits.squeeze(-1) if self.n_outputs == 1 else logits
'''


@pytest.mark.slow
def test_a_model_of_your_own_trains_logs_and_loads_through_your_own_config_folder(tmp_path, data_root):
    import importlib
    import os
    import sys

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from helpers import run_cli
    from mnist37 import load_model
    from mnist37.checkpoints import CheckpointError

    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "my_models.py").write_text(USER_MODEL)
    (tmp_path / "my_configs" / "model").mkdir(parents=True)
    (tmp_path / "my_configs" / "model" / "two_layer.yaml").write_text("_target_: my_models.TwoLayer\nwidth: 16\n")
    os.environ["PYTHONPATH"] = f"{tmp_path / 'code'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"
    try:
        result = run_cli(f"hydra.searchpath=[file://{tmp_path / 'my_configs'}]", "model=two_layer", "data=embedded",
                         f"data.root={data_root}", "trainer.epochs=5", "hydra.run.dir=run", cwd=tmp_path)
    finally:
        os.environ["PYTHONPATH"] = os.environ["PYTHONPATH"].split(os.pathsep, 1)[1]
    assert result.returncode == 0, result.stderr
    run = tmp_path / "run"
    events = EventAccumulator(str(run), size_guidance={"images": 0})
    events.Reload()
    assert "explain/examples" in events.Tags()["images"]  # explained by the default saliency
    assert "weights/model" not in events.Tags()["images"]  # it has no weight images, and says so

    with pytest.raises(CheckpointError, match="hand its class over: load_model\\(path, model_class=...\\)"):
        load_model(run)  # never imported from the name in the file
    sys.path.insert(0, str(tmp_path / "code"))
    try:
        model = load_model(run, model_class=importlib.import_module("my_models").TwoLayer)
    finally:
        sys.path.remove(str(tmp_path / "code"))
    assert model.hparams == {"width": 16} and model(torch.zeros(3, 784)).shape == (3,)
