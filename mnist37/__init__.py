"""mnist37: fast.ai lesson 4's MNIST 3-vs-7 classifier, as a package you can train, inspect and import.

    from mnist37 import load_model
    model = load_model("outputs/runs/<run>/model.pt")
    model.predict(images)  # images: float (N, 28, 28) in [0, 1] -> digits, e.g. tensor([3, 7, ...])
"""

from mnist37.checkpoints import load_model, save_checkpoint
from mnist37.data import Digits, Split, load_embedded, load_mnist
from mnist37.loop import evaluate, resolve_device
from mnist37.models import CNN, MLP, Classifier, LinearModel, TemplateModel

# The training loop is `mnist37.loop.train`; `mnist37.train` is the command line.
__all__ = [
    "CNN", "Classifier", "Digits", "LinearModel", "MLP", "Split", "TemplateModel", "evaluate", "load_embedded",
    "load_mnist", "load_model", "resolve_device", "save_checkpoint",
]
