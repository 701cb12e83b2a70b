"""Regenerate the README's "Why multiply by weights?" pictures and bias figures:

    python docs/why_weights.py

Trains the default linear model (SGD lr 0.25, 20 epochs, seed 0) on the embedded 3-vs-7 split and
writes, in the TensorBoard colours (blue = evidence for 3, red = evidence for 7, white = 0):
  docs/linear_weights.png      the 784 learned weights as a 28x28 image
  docs/mean3_minus_mean7.png   the ideal (mean) 3 minus the ideal 7
Then prints, for a few digit pairs, what the bias is worth: the learned linear model with and
without a bias, and the L2 template (a linear model with weights 2(m_a - m_b)) with and without its
bias |m_b|^2 - |m_a|^2.
"""

from pathlib import Path

import torch
import torch.nn.functional as F
from torchvision.utils import save_image

from mnist37 import LinearModel, load_embedded
from mnist37.loop import train
from mnist37.models import TemplateModel
from mnist37.explain import signed_rgb

HERE = Path(__file__).resolve().parent


def save_map(signed_map: torch.Tensor, name: str) -> None:
    rgb = signed_rgb(signed_map.reshape(1, 28, 28))
    save_image(F.interpolate(rgb, scale_factor=8, mode="nearest"), HERE / name)  # 224x224, crisp pixels
    print(f"wrote {HERE / name}")


def main() -> None:
    data = load_embedded(digits=(3, 7))
    torch.manual_seed(0)
    linear = LinearModel(data.digits)
    history = train(linear, data, torch.optim.SGD(linear.parameters(), lr=0.25), epochs=20, progress=False)
    print(f"linear model: valid accuracy {history[-1].valid_accuracy:.2%}, bias {linear.bias.item():+.3f}")
    save_map(linear.weights.detach(), "linear_weights.png")

    template = TemplateModel(data.digits)
    template.fit(data.train.x, data.train.y)
    save_map(template.means[0] - template.means[1], "mean3_minus_mean7.png")
    similarity = F.cosine_similarity(linear.weights.detach(), template.means[0] - template.means[1], dim=0)
    print(f"cosine similarity of the two pictures: {similarity:.2f}")
    bias_study()


def accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    return ((logits > 0) == (y == 0)).float().mean().item()


def bias_study(pairs=((3, 7), (1, 8), (5, 6))) -> None:
    print("\nvalid accuracy, embedded split        linear: with bias / without   L2 template: with bias / without")
    for pair in pairs:
        data = load_embedded(digits=pair)
        learned = {}
        for bias in (True, False):
            torch.manual_seed(0)
            model = LinearModel(data.digits, bias=bias)
            learned[bias] = train(model, data, torch.optim.SGD(model.parameters(), lr=0.25), epochs=20,
                                  progress=False)[-1].valid_accuracy
        template = TemplateModel(data.digits, distance="l2")
        template.fit(data.train.x, data.train.y)
        weights, bias = template.linear_equivalent()
        x, y = data.valid.x, data.valid.y
        ink = [data.train.x[data.train.y == k].sum(1).mean().item() for k in (0, 1)]
        print(f"  {pair[0]} vs {pair[1]} (mean ink {ink[0]:3.0f} vs {ink[1]:3.0f})"
              f"{learned[True]:>16.1%} / {learned[False]:.1%}"
              f"{accuracy(x @ weights + bias, y):>22.1%} / {accuracy(x @ weights, y):.1%}")


if __name__ == "__main__":
    main()
