"""Helpers for the tests, in one place: a config as Hydra composes it, the command line in a fresh
process, MNIST files, photo-like pictures, a briefly trained model."""

import io
import os
import struct
import subprocess
import sys
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from mnist37.loop import train
from mnist37.train import config_dir

REPO = Path(__file__).resolve().parents[1]


def make_config(*overrides: str):
    """The run's config for `overrides`, composed as `python -m mnist37.train` would."""
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides))


def run_cli(*args: str, cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess:
    """`python -m mnist37.train ARGS` in a fresh process, as a user would type it."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, "-m", "mnist37.train", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
    )


def write_idx(path: Path, array: torch.Tensor) -> None:
    """An IDX file as MNIST ships them: magic (0, 0, type 0x08 = ubyte, ndim), big-endian dims, bytes."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.to(torch.uint8).contiguous().numpy().tobytes())


def trained(model_class, data, epochs: int = 3, lr: float = 0.25):
    """A `model_class` for `data`'s digits after `epochs` of SGD on it; seeded before the model is
    built, so it is the same model whatever ran before."""
    torch.manual_seed(0)
    model = model_class(data.digits)
    train(model, data, torch.optim.SGD(model.parameters(), lr=lr), epochs=epochs, progress=False)
    return model


def photo_of(digit: torch.Tensor, rng) -> "PIL.Image.Image":
    """A phone-photo-like JPEG of a (28, 28) MNIST digit in [0, 1]: dark ink (of random strength) on
    off-white paper lit unevenly (a brightness ramp in a random direction), sensor noise, blur, JPEG
    artefacts; 150 to 500 px square, the digit anywhere on it at 45-80% of the picture's size.
    `rng`: a numpy Generator, so a seed gives the same pictures."""
    import numpy as np
    from PIL import Image, ImageFilter

    size = int(rng.integers(150, 501))
    extent = int(size * rng.uniform(0.45, 0.8))
    ink = Image.fromarray((digit.numpy() * 255).astype(np.uint8), "L").resize((extent, extent), Image.BICUBIC)
    page = np.zeros((size, size), np.float32)
    top, left = rng.integers(0, size - extent + 1, size=2)
    page[top: top + extent, left: left + extent] = np.asarray(ink, np.float32) / 255
    ys, xs = np.mgrid[0:size, 0:size] / size
    angle = rng.uniform(0, 2 * np.pi)
    light = rng.uniform(0.75, 0.95) + rng.uniform(0.05, 0.2) * ((xs - 0.5) * np.cos(angle) + (ys - 0.5) * np.sin(angle))
    gray = light * (1 - rng.uniform(0.5, 0.75) * page) + rng.normal(0, rng.uniform(0.01, 0.05), page.shape)
    picture = Image.fromarray((gray.clip(0, 1) * 255).astype(np.uint8), "L")
    picture = picture.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 2.0))).convert("RGB")
    jpeg = io.BytesIO()
    picture.save(jpeg, "JPEG", quality=int(rng.integers(60, 91)))
    return Image.open(io.BytesIO(jpeg.getvalue()))
