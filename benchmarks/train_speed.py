"""How fast does mnist37 train, against the usual ways of writing the same loop?

    python benchmarks/train_speed.py                  # CPU, both models, 12,800 and 60,000 rows
    python benchmarks/train_speed.py --device cuda    # the same on a GPU

Three loops train the same model on the same data with the same settings (SGD, batch 256, 5 epochs):
  mnist37     mnist37.loop.train, as the command line calls it
  dataloader  the standard way (pytorch/examples mnist): torchvision's MNIST dataset with ToTensor
              and Normalize, read from IDX files, through a DataLoader
  bare        the floor: one on-device tensor, randperm, slice, forward, backward, SGD(foreach=True)
They alternate over several rounds; the table gives train samples/s (optimisation steps only, no
evaluation) as median [min, max], and the ratios of the medians. Then the start-up cost and peak
memory of a whole 1-epoch default run, next to `python -c "import torch, torchvision"`.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from mnist37.data import Digits, Split, load_embedded
from mnist37.models import MLP, LinearModel
from mnist37.loop import synchronize, train

MODELS = {"linear": LinearModel, "mlp": MLP}


def tiled(data: Digits, rows: int) -> Digits:
    """The embedded 3-vs-7 train split repeated to `rows` rows (real digits, realistic sizes)."""
    reps = -(-rows // len(data.train))
    x = data.train.x.repeat(reps, 1)[:rows]
    y = data.train.y.repeat(reps)[:rows]
    return Digits(Split(x, y), data.valid, data.digits, data.source)


def fresh_model(name: str, data: Digits, device: torch.device):
    torch.manual_seed(0)
    return MODELS[name](data.digits).to(device)


def run_mnist37(name, data, device, epochs, batch_size, lr, compile=False, bf16=False) -> float:
    model = fresh_model(name, data, device)
    if compile:
        model.compile()
        warm_up = tiled(data, batch_size * 2)  # compile outside the timed epochs, as a long run would
        train(model, warm_up, torch.optim.SGD(model.parameters(), lr=lr), epochs=1, batch_size=batch_size,
              progress=False, bf16=bf16)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    history = train(model, data, optimizer, epochs=epochs, batch_size=batch_size, progress=False, bf16=bf16)
    return len(data.train) * epochs / sum(m.train_seconds for m in history)


def seconds_of(epochs: int, device: torch.device, one_epoch) -> float:
    """Wall time of `epochs` calls of one_epoch(), with the GPU's queue drained around each."""
    seconds = 0.0
    for _ in range(epochs):
        synchronize(device)
        start = time.perf_counter()
        one_epoch()
        synchronize(device)
        seconds += time.perf_counter() - start
    return seconds


def run_bare(name, data, device, epochs, batch_size, lr) -> float:
    model = fresh_model(name, data, device)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, foreach=True)
    x, target = data.train.x, (data.train.y == 0).float()

    def one_epoch():
        order = torch.randperm(len(x), device=device)
        for i in range(0, len(x), batch_size):
            idx = order[i:i + batch_size]
            loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x[idx]), target[idx])
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()

    return len(x) * epochs / seconds_of(epochs, device, one_epoch)


def write_idx_mnist(data: Digits, root: Path) -> None:
    """The tiled split as MNIST IDX files, so torchvision's MNIST class reads it as the real thing."""
    import struct

    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    digit_of_class = torch.tensor(data.digits)
    for prefix, split in (("train", data.train), ("t10k", data.valid)):
        images = (split.x * 255).round().to(torch.uint8).reshape(-1, 28, 28)
        labels = digit_of_class[split.y].to(torch.uint8)
        for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
            header = struct.pack(">BBBB", 0, 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
            (raw / f"{prefix}-{kind}-ubyte").write_bytes(header + array.numpy().tobytes())


def run_dataloader(name, data, device, epochs, batch_size, lr, root: Path) -> float:
    from torchvision import datasets, transforms

    model = fresh_model(name, data, device)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    # The transform of pytorch/examples' mnist/main.py.
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])
    dataset = datasets.MNIST(root, train=True, transform=transform)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True)
    positive = data.digits[0]

    def one_epoch():
        for images, labels in loader:
            images, labels = images.to(device), labels.to(device)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                model(images.view(len(images), -1)), (labels == positive).float()
            )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    return len(dataset) * epochs / seconds_of(epochs, device, one_epoch)


def throughput_table(args, device: torch.device) -> None:
    base = load_embedded(args.data_root, (3, 7))
    loops = {"mnist37": run_mnist37, "dataloader": run_dataloader, "bare": run_bare}
    if args.skip_dataloader:
        del loops["dataloader"]
    for variant in args.variants:  # e.g. mnist37+compile: the same loop with one option switched on
        loops[f"mnist37+{variant}"] = lambda *common, v=variant, **kw: run_mnist37(*common, **{v: True})
    print(f"train samples/s on {device}, SGD lr {args.lr}, batch {args.batch_size}, {args.epochs} epochs, "
          f"median [min, max] of {args.rounds} rounds, torch {torch.__version__}, {torch.get_num_threads()} threads")
    ratios = [impl for impl in loops if impl != "mnist37"]
    print(f"{'model':6} {'rows':>6}  " + "  ".join(f"{impl:>27}" for impl in loops) + "  "
          + "  ".join(f"{'mnist37/' + impl:>18}" for impl in ratios))
    medians = {}
    with tempfile.TemporaryDirectory() as tmp:
        for rows in args.rows:
            data = tiled(base, rows)
            idx_root = Path(tmp) / str(rows)
            write_idx_mnist(data, idx_root)
            data = data.to(device)
            samples = {(m, impl): [] for m in args.models for impl in loops}
            for _ in range(args.rounds):  # alternate, so that machine noise hits every loop alike
                for m in args.models:
                    for impl, loop in loops.items():
                        extra = {"root": idx_root} if impl == "dataloader" else {}
                        samples[m, impl].append(loop(m, data, device, args.epochs, args.batch_size, args.lr, **extra))
            for m in args.models:
                med = {impl: statistics.median(samples[m, impl]) for impl in loops}
                cells = [f"{med[i]:>9,.0f} [{min(samples[m, i]):>7,.0f}, {max(samples[m, i]):>7,.0f}]" for i in loops]
                print(f"{m:6} {rows:>6}  " + "  ".join(cells) + "  "
                      + "  ".join(f"{med['mnist37'] / med[i]:>17.2f}x" for i in ratios))
                medians.setdefault(m, []).append(med["mnist37"])
    for m, speeds in medians.items():
        if len(speeds) > 1:
            print(f"{m}: mnist37 samples/s at {args.rows[-1]:,} rows / at {args.rows[0]:,} rows = "
                  f"{speeds[-1] / speeds[0]:.2f} (flat = 1.00)")


# A small launcher process runs the command: its peak RSS is the command's own, whereas a child
# forked from this (large) benchmark process would start out counting the benchmark's pages.
LAUNCHER = (
    "import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
)


def timed_process(argv: list[str], cwd: str) -> tuple[float, float]:
    """(wall seconds, peak RSS MiB) of one whole process."""
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", LAUNCHER, *argv], cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {result.stderr[-2000:]}")
    return seconds, int(result.stdout.split()[-1]) / 1024  # ru_maxrss is in KiB on Linux


def startup_table(args) -> None:
    python = sys.executable
    with tempfile.TemporaryDirectory() as cwd:
        # 60,000 rows of 3s and 7s as MNIST IDX files: what load_mnist costs beyond its tensors.
        big = tiled(load_embedded(args.data_root, (3, 7)), 60_000)
        write_idx_mnist(big, Path(cwd) / "idx")
        data_mib = (big.train.x.nbytes + big.valid.x.nbytes) / 2**20
        commands = {
            "import torch, torchvision": [python, "-c", "import torch, torchvision"],
            "mnist37 default run, 1 epoch": [python, "-m", "mnist37.train", "trainer.epochs=1", f"device={args.device}"],
            "load_mnist, 60,000 rows": [
                python, "-c", f"import torchvision; from mnist37.data import load_mnist; load_mnist('{cwd}/idx', download=False)"
            ],
        }
        timed_process(commands["mnist37 default run, 1 epoch"], cwd)  # warm-up: caches, first parse
        results = {name: [] for name in commands}
        for _ in range(args.rounds):
            for name, argv in commands.items():
                results[name].append(timed_process(argv, cwd))
    print(f"\nwhole process, median of {args.rounds} (a default run: data=mnist, offline falls back to embedded)")
    base_seconds = statistics.median(s for s, _ in results["import torch, torchvision"])
    base_rss = statistics.median(r for _, r in results["import torch, torchvision"])
    for name, runs in results.items():
        seconds = statistics.median(s for s, _ in runs)
        rss = statistics.median(r for _, r in runs)
        print(f"  {name:30} {seconds:6.2f} s ({seconds / base_seconds:.2f}x)   peak RSS {rss:7.1f} MiB "
              f"(+{rss - base_rss:.1f} MiB)")
    print(f"  (the float32 tensors of those 60,000 + 200 rows take {data_mib:.1f} MiB; the uint8 files "
          f"{data_mib / 4:.1f} MiB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--rows", nargs="+", type=int, default=[12_800, 60_000])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=0.25)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--data-root", default="data")
    parser.add_argument("--skip-dataloader", action="store_true", help="leave out the slow standard loop")
    parser.add_argument("--variants", nargs="*", default=[], choices=["compile", "bf16"],
                        help="also time mnist37 with trainer.compile / trainer.bf16 switched on")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-startup", action="store_true")
    args = parser.parse_args()
    device = torch.device(args.device)
    if not args.skip_throughput:
        throughput_table(args, device)
    if not args.skip_startup:
        startup_table(args)


if __name__ == "__main__":
    main()
