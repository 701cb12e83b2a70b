import pytest
import torch

from mnist37.errors import BadInputError
from mnist37.models import MLP, LinearModel
from mnist37.loop import evaluate, resolve_device, samples_per_second, train


def fit(data, make_model, epochs=5, seed=0, lr=0.25):
    torch.manual_seed(seed)
    model = make_model(data.digits)
    history = train(model, data, torch.optim.SGD(model.parameters(), lr=lr), epochs=epochs, seed=seed, progress=False)
    return model, history


@pytest.mark.parametrize("make_model", [LinearModel, MLP])
def test_loss_falls_and_accuracy_rises(digits37, make_model):
    torch.manual_seed(0)
    model = make_model(digits37.digits)
    before_loss, before_acc = evaluate(model, digits37.valid)
    _, history = fit(digits37, make_model, epochs=5)
    assert history[-1].train_loss < before_loss / 2
    assert history[-1].valid_accuracy > max(before_acc, 0.9)
    assert [m.epoch for m in history] == [1, 2, 3, 4, 5]


def test_same_seed_same_weights_different_seed_different_weights(digits37):
    a, _ = fit(digits37, LinearModel, epochs=2, seed=1)
    b, _ = fit(digits37, LinearModel, epochs=2, seed=1)
    c, _ = fit(digits37, LinearModel, epochs=2, seed=2)
    assert torch.equal(a.weights, b.weights)
    assert not torch.equal(a.weights, c.weights)


def test_loop_matches_the_straightforward_loop(digits37):
    """Same seed: the optimised loop does exactly what the textbook loop does."""
    model, _ = fit(digits37, LinearModel, epochs=2, seed=3)

    torch.manual_seed(3)
    reference = LinearModel(digits37.digits)
    optimizer = torch.optim.SGD(reference.parameters(), lr=0.25)
    shuffle = torch.Generator().manual_seed(3)
    x, y = digits37.train.x, digits37.train.y
    for _ in range(2):
        order = torch.randperm(len(y), generator=shuffle)
        for start in range(0, len(y), 256):
            idx = order[start:start + 256]
            target = (y[idx] == 0).float()
            loss = torch.nn.functional.binary_cross_entropy_with_logits(x[idx] @ reference.weights + reference.bias, target)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    assert torch.equal(model.weights, reference.weights)


def test_epoch_metrics_equal_a_direct_computation(digits37):
    model, history = fit(digits37, LinearModel, epochs=1)
    with torch.no_grad():
        logits = model(digits37.valid.x)
        expected_loss = model.loss(logits, model.loss_targets(digits37.valid.y)).item()
        expected_acc = (model.predict(digits37.valid.x) == torch.tensor([3, 7])[digits37.valid.y]).float().mean().item()
    assert history[-1].valid_loss == pytest.approx(expected_loss, rel=1e-5)
    assert history[-1].valid_accuracy == pytest.approx(expected_acc)
    assert evaluate(model, digits37.valid, batch_size=7) == pytest.approx((expected_loss, expected_acc), rel=1e-5)


@pytest.mark.parametrize("make_model", [LinearModel, MLP])
def test_multi_digit_training_beats_chance_by_far(data_root, make_model):
    from mnist37.data import load_embedded

    data = load_embedded(data_root, "all")
    _, history = fit(data, make_model, epochs=5, lr=0.5)
    assert history[-1].valid_accuracy > 0.75  # chance is 0.10


def test_on_epoch_end_sees_every_epoch(digits37):
    seen = []
    torch.manual_seed(0)
    model = LinearModel(digits37.digits)
    train(model, digits37, torch.optim.SGD(model.parameters(), lr=0.1), epochs=3, progress=False,
          on_epoch_end=lambda metrics, m: seen.append((metrics.epoch, m is model)))
    assert seen == [(1, True), (2, True), (3, True)]


def test_samples_per_second_counts_train_steps_only(digits37):
    _, history = fit(digits37, LinearModel, epochs=2)
    assert samples_per_second(history, 800) == pytest.approx(1600 / sum(m.train_seconds for m in history))


def test_device_names():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(BadInputError, match="tpu"):
        resolve_device("tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error shown without CUDA")
def test_cuda_without_cuda_is_a_clear_error():
    with pytest.raises(BadInputError, match="CUDA is not available.*device=cpu"):
        resolve_device("cuda")


@pytest.mark.parametrize("make_model", [LinearModel, MLP])
def test_stop_and_continue_gives_the_same_weights(digits37, make_model):
    """A run stopped mid-epoch and continued from its TrainState ends exactly where an unbroken run ends."""
    from mnist37.loop import TrainState

    def fresh():
        torch.manual_seed(5)
        model = make_model(digits37.digits)
        return model, torch.optim.Adam(model.parameters(), lr=1e-3)

    model, optimizer = fresh()
    unbroken = train(model, digits37, optimizer, epochs=3, seed=5, progress=False)

    steps = iter(range(1000))
    stopped_model, stopped_optimizer = fresh()
    state = TrainState()
    first = train(stopped_model, digits37, stopped_optimizer, epochs=3, seed=5, progress=False, state=state,
                  stop=lambda: next(steps) == 6)  # epoch 2, after its 2nd of 4 steps
    assert state.stopped and state.epoch == 1 and state.step == 2 and len(first) == 1
    resumed = train(stopped_model, digits37, stopped_optimizer, epochs=3, seed=5, progress=False, state=state)
    assert [m.epoch for m in resumed] == [1, 2, 3]
    for a, b in zip(model.parameters(), stopped_model.parameters()):
        assert torch.equal(a, b)
    assert resumed[-1].valid_loss == unbroken[-1].valid_loss


def test_bf16_autocast_trains(digits37):
    torch.manual_seed(0)
    model = MLP(digits37.digits)
    history = train(model, digits37, torch.optim.SGD(model.parameters(), lr=0.25), epochs=3, progress=False, bf16=True)
    assert model.layers[0].weight.dtype == torch.float32  # autocast computes in bf16, keeps fp32 weights
    assert history[-1].valid_accuracy > 0.9


@pytest.mark.slow
def test_compiled_model_trains_like_the_eager_one(digits37):
    eager, eager_history = fit(digits37, LinearModel, epochs=2)
    torch.manual_seed(0)
    compiled = LinearModel(digits37.digits)
    compiled.compile()
    history = train(compiled, digits37, torch.optim.SGD(compiled.parameters(), lr=0.25), epochs=2, progress=False)
    assert torch.allclose(compiled.weights, eager.weights, atol=1e-5)
    assert history[-1].valid_accuracy == pytest.approx(eager_history[-1].valid_accuracy, abs=0.01)
