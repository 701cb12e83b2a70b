"""Models: the lesson's linear classifier and a small MLP.

The whole idea of the lesson is in `LinearModel.forward`: every pixel is multiplied by a weight,
the products are summed, and a bias is added: `x @ w + b`. A positive weight means "ink here is
evidence for the first digit", a negative one "evidence for the second"; the bias moves the point
where the evidence tips from one answer to the other.

Two digits give one logit per image (logit > 0 means `digits[0]`) and binary cross-entropy;
more digits give one logit per digit and cross-entropy.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

N_PIXELS = 28 * 28


class Classifier(nn.Module):
    """What every mnist37 model shares: the digits it tells apart and how logits become answers.

    Subclasses define `forward` ((N, 784) rows -> logits) and `weight_images` ((K, 28, 28) signed
    maps of what the model looks for in the pixels).
    """

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
        super().__init__(digits, bias=bias, init_std=init_std)
        # One column per output; a single output is a plain vector, so `x @ w` is already (N,).
        shape = () if self.n_outputs == 1 else (self.n_outputs,)
        self.weights = nn.Parameter(torch.randn(N_PIXELS, *shape) * init_std)
        self.bias = nn.Parameter(torch.randn(shape) * init_std) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.bias is None:
            return x @ self.weights
        return x @ self.weights + self.bias

    def weight_images(self) -> torch.Tensor:
        return self.weights.detach().reshape(N_PIXELS, -1).T.reshape(-1, 28, 28)


class MLP(Classifier):
    """784 -> hidden -> ReLU -> 1 (or one logit per digit): fast.ai's `simple_net`."""

    def __init__(self, digits=(3, 7), hidden: int = 30):
        super().__init__(digits, hidden=hidden)
        self.layers = nn.Sequential(
            nn.Linear(N_PIXELS, hidden), nn.ReLU(), nn.Linear(hidden, self.n_outputs)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.layers(x)
        return logits.squeeze(-1) if self.n_outputs == 1 else logits

    def weight_images(self) -> torch.Tensor:
        """Each hidden unit's input weights: the pattern that unit responds to."""
        return self.layers[0].weight.detach().reshape(-1, 28, 28)


# Checkpoints name their model by class name; only these classes are ever rebuilt from a file.
MODELS = {cls.__name__: cls for cls in (LinearModel, MLP)}
