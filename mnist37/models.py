"""Models: the lesson's linear classifier, a small MLP, and the pixel-similarity baseline.

The whole idea of the lesson is in `LinearModel.forward`: every pixel is multiplied by a weight,
the products are summed, and a bias is added: `x @ w + b`. A positive weight means "ink here is
evidence for the first digit", a negative one "evidence for the second"; the bias moves the point
where the evidence tips from one answer to the other.

Two digits give one logit per image (logit > 0 means `digits[0]`) and binary cross-entropy;
more digits give one logit per digit and cross-entropy.
"""

from __future__ import annotations

import contextlib
import inspect
import math

import torch
import torch.nn.functional as F
from torch import nn

from mnist37.errors import BadInputError

N_PIXELS = 28 * 28


class Classifier(nn.Module):
    """What every mnist37 model shares: the digits it tells apart and how logits become answers.

    A model defines `forward` (images as (N, 784) rows, or (N,28,28) / (N,1,28,28) -> logits) and
    says what else it can do; each has a default, so a new model (yours, chosen by a YAML file with
    its `_target_`) trains, logs and is explained without a change anywhere else:
      fits_in_one_pass     False: trained by gradient steps; True: `fit(x, y)` once, no optimizer
      weight_images()      None, or (K, H, W) signed maps of what it looks for in the pixels
      explain_rows(...)    how one answer came about; by default "gradient x input" saliency
      linear_equivalent()  None, or the (weights, bias) of a linear model deciding exactly as it does
    Its constructor takes `digits` and keyword settings, passed on here as `hparams`: a checkpoint
    stores them to build the model again.
    """

    fits_in_one_pass = False

    def __init__(self, digits=(3, 7), **hparams):
        super().__init__()
        self.digits = tuple(int(d) for d in digits)
        self.hparams = hparams  # constructor arguments, saved in checkpoints to rebuild the model
        self.n_outputs = 1 if len(self.digits) == 2 else len(self.digits)

    def loss_targets(self, y: torch.Tensor) -> torch.Tensor:
        """Class indices as the loss wants them; done once per split, not once per step."""
        return (y == 0).float() if self.n_outputs == 1 else y

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self.n_outputs == 1:
            return F.binary_cross_entropy_with_logits(logits, targets)
        return F.cross_entropy(logits, targets)

    def classes(self, logits: torch.Tensor) -> torch.Tensor:
        """Class index (position in `digits`) of each logit row."""
        if self.n_outputs == 1:
            return (logits <= 0).long()  # logit > 0 -> class 0, the first digit
        return logits.argmax(dim=-1)

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """(N, n_digits) probability of each digit."""
        if self.n_outputs == 1:
            first = torch.sigmoid(logits)
            return torch.stack([first, 1 - first], dim=-1)
        return torch.softmax(logits, dim=-1)

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Predicted digit (e.g. 3 or 7) for float images (N,28,28), (N,1,28,28) or (N,784) in [0, 1]."""
        classes = self.classes(self(flatten_images(images)))
        return torch.tensor(self.digits, device=classes.device)[classes]

    def weight_images(self) -> torch.Tensor | None:
        return None

    def linear_equivalent(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        return None

    def explain_rows(self, x, logits, probabilities, predicted, runner_up) -> list:
        """One mnist37.explain.Explanation per row of x (see there); this default works for any model."""
        from mnist37.explain import explain_saliency

        return explain_saliency(self, x, logits, probabilities, predicted, runner_up)


def keyword_settings(target) -> set[str] | None:
    """The keyword arguments a class or function takes (its settings in a config or a checkpoint),
    or None when it takes any (**kwargs): what a YAML file or a checkpoint may set, and no more."""
    parameters = inspect.signature(target).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return None
    return set(parameters) - {"self"}


@contextlib.contextmanager
def evaluating(model: nn.Module):
    """Eval mode for the duration, then back to whatever mode the model was in."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def flatten_images(images: torch.Tensor) -> torch.Tensor:
    """(N, 784) rows from (N,28,28), (N,1,28,28) or (N,784) images, with a clear error otherwise."""
    if images.ndim < 2 or images[0].numel() != N_PIXELS:
        raise ValueError(
            f"expected images of shape (N,28,28), (N,1,28,28) or (N,784), got {tuple(images.shape)}"
        )
    return images.reshape(len(images), N_PIXELS).float()


class LinearModel(Classifier):
    """One weight per pixel (per digit) plus a bias: the lesson's model.

    init_std: weights and bias start as `torch.randn(...) * init_std`, as fast.ai's `init_params`
    does (init_std=1.0 there, which trains slower: big random weights must first be unlearned);
    0 starts from all zeros.
    """

    def __init__(self, digits=(3, 7), bias: bool = True, init_std: float = 0.01):
        if not isinstance(bias, bool):
            raise BadInputError(f"model.bias={bias!r} is not valid: use true or false")
        if isinstance(init_std, bool) or not isinstance(init_std, (int, float)) or not 0 <= init_std < math.inf:
            raise BadInputError(f"model.init_std={init_std!r} is not valid: use a finite number >= 0")
        super().__init__(digits, bias=bias, init_std=init_std)
        # One column per output; a single output is a plain vector, so `x @ w` is already (N,).
        shape = () if self.n_outputs == 1 else (self.n_outputs,)
        self.weights = nn.Parameter(torch.randn(N_PIXELS, *shape) * init_std)
        self.bias = nn.Parameter(torch.randn(shape) * init_std) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)  # image-shaped input (N,28,28) or (N,1,28,28) -> (N,784) rows
        if self.bias is None:
            return x @ self.weights
        return x @ self.weights + self.bias

    def weight_images(self) -> torch.Tensor:
        return self.weights.detach().reshape(N_PIXELS, -1).T.reshape(-1, 28, 28)

    def explain_rows(self, x, logits, probabilities, predicted, runner_up) -> list:
        """Exact: the logit *is* sum(x * w) + b."""
        from mnist37.explain import explain_linear

        return explain_linear(self, x, logits, probabilities, predicted, runner_up)


class MLP(Classifier):
    """784 -> hidden -> ReLU -> 1 (or one logit per digit): fast.ai's `simple_net`."""

    def __init__(self, digits=(3, 7), hidden: int = 30):
        if isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 1:
            raise BadInputError(f"model.hidden={hidden!r} is not valid: use a whole number >= 1")
        super().__init__(digits, hidden=hidden)
        self.layers = nn.Sequential(
            nn.Linear(N_PIXELS, hidden), nn.ReLU(), nn.Linear(hidden, self.n_outputs)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.layers(x.flatten(1))
        return logits.squeeze(-1) if self.n_outputs == 1 else logits

    def weight_images(self) -> torch.Tensor:
        """Each hidden unit's input weights: the pattern that unit responds to."""
        return self.layers[0].weight.detach().reshape(-1, 28, 28)


class TemplateModel(Classifier):
    """fast.ai's pixel-similarity baseline: the mean ("ideal") image of each digit; the closest wins.

    It is not trained by gradient descent: `fit` averages the training images of each digit, once.
    distance="l1" scores an image by the mean of `abs(pixel - mean pixel)`, exactly the asker's idea;
    "l2" by the mean squared difference. Logits are minus the distances (two digits: one logit,
    d(second) - d(first), so logit > 0 still means the first digit).

    L2 is secretly linear: |x - m0|^2 - |x - m1|^2 expands to x @ 2(m0 - m1) + |m1|^2 - |m0|^2 plus
    nothing that depends on the digit, so `linear_equivalent` gives the weights and bias of a
    LinearModel that makes the same decisions.
    """

    fits_in_one_pass = True

    def __init__(self, digits=(3, 7), distance: str = "l1"):
        if distance not in ("l1", "l2"):
            raise BadInputError(f"model.distance={distance!r} is not valid: use l1 or l2")
        super().__init__(digits, distance=distance)
        self.register_buffer("means", torch.zeros(len(self.digits), N_PIXELS))

    @torch.no_grad()
    def fit(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Set each digit's mean image from rows `x` with class indices `y`."""
        sums = torch.zeros_like(self.means).index_add_(0, y, x)
        counts = torch.bincount(y, minlength=len(self.digits)).clamp_min(1)
        self.means.copy_(sums / counts[:, None])

    def pixel_distances(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """(N, 784) distance of each pixel to digit k's mean image: |x - m| (l1) or (x - m)^2 (l2)."""
        power = 1 if self.hparams["distance"] == "l1" else 2
        return (x - self.means[k]).abs().pow(power)

    def distances(self, x: torch.Tensor) -> torch.Tensor:
        """(N, n_digits) mean distance of each image to each digit's mean image."""
        return torch.stack([self.pixel_distances(x, k).mean(dim=1) for k in range(len(self.digits))], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        distances = self.distances(x.flatten(1))
        if self.n_outputs == 1:
            return distances[:, 1] - distances[:, 0]
        return -distances

    def weight_images(self) -> torch.Tensor:
        """The mean image of each digit: what this model compares every image with."""
        return self.means.reshape(-1, 28, 28)

    def explain_rows(self, x, logits, probabilities, predicted, runner_up) -> list:
        """The asker's idea itself: |x - m| to the two candidate digits' mean images."""
        from mnist37.explain import explain_template

        return explain_template(self, x, logits, probabilities, predicted, runner_up)

    def linear_equivalent(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(weights (784,), bias) of the linear model deciding exactly like this two-digit L2 model;
        None for L1 or more digits, which no linear model matches."""
        if self.hparams["distance"] != "l2" or self.n_outputs != 1:
            return None
        first, second = self.means
        # mean squared distances: the expansion above divided by N_PIXELS, which changes no decision
        weights = 2 * (first - second) / N_PIXELS
        bias = (second.square().sum() - first.square().sum()) / N_PIXELS
        return weights, bias


class CNN(Classifier):
    """A small convolutional net, fast.ai's `simple_cnn` (fastbook chapter 13) with batch norm:
    stride-2 3x3 convolutions halve the image (28 -> 14 -> 7 -> 4 -> 2) while the channels grow, and
    a last one turns the 2x2 maps into one logit per output. Where the linear model has one weight
    per pixel, each first-layer filter here is 9 weights slid over every place in the image."""

    def __init__(self, digits=(3, 7), channels=(16, 32, 64, 128)):
        if not channels or not all(isinstance(c, int) and not isinstance(c, bool) and c >= 1 for c in channels):
            raise BadInputError(f"model.channels={channels!r} is not valid: give one or more whole numbers >= 1")
        channels = list(channels)
        super().__init__(digits, channels=channels)
        layers, inputs = [], 1
        for width in channels:
            layers += [nn.Conv2d(inputs, width, 3, stride=2, padding=1), nn.BatchNorm2d(width), nn.ReLU()]
            inputs = width
        layers += [nn.Conv2d(inputs, self.n_outputs, 3, stride=2, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.layers(x.reshape(-1, 1, 28, 28))
        return logits.squeeze(-1) if self.n_outputs == 1 else logits

    def weight_images(self) -> torch.Tensor:
        """The first layer's 3x3 filters, enlarged 9 times: the strokes each one responds to."""
        filters = self.layers[0].weight.detach()[:, 0]
        return filters.repeat_interleave(9, dim=-2).repeat_interleave(9, dim=-1)


# Checkpoints name their model by class name; these classes are rebuilt from a file by name (any
# other only when the caller hands it over: load_model(path, model_class=MyModel)).
MODELS = {cls.__name__: cls for cls in (LinearModel, MLP, TemplateModel, CNN)}
