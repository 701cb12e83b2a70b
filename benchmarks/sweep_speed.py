"""What a sweep job costs beyond Hydra's own floor, and what the joblib launcher gains.

    python benchmarks/sweep_speed.py                 # ~2 minutes on 2 CPU cores
    python benchmarks/sweep_speed.py --rounds 5 --skip-launchers

1. Floor: the sweep `-m 'seed=range(8)' data=embedded device=cpu` (8 default jobs, one process, Hydra's
   default launcher) run by mnist37 and by `benchmarks/hydra_floor.py`, a Hydra app on the same
   configs whose task only imports torch. Alternated over --rounds; prints the medians and the ratio.
2. Launchers: the 8 jobs `model=linear,mlp optimizer=sgd,adam seed=0,1` with the default launcher,
   then with joblib, and mnist37-report's table of the joblib sweep. Extra arguments after `--` go
   to both sweeps (e.g. `-- trainer.epochs=60`).
"""

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FLOOR_APP = Path(__file__).resolve().parent / "hydra_floor.py"
FLOOR_SWEEP = ["-m", "seed=range(8)", "data=embedded", "device=cpu"]
LAUNCHER_SWEEP = ["-m", "data=embedded", "model=linear,mlp", "optimizer=sgd,adam", "seed=0,1"]


def timed(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=900)
    return time.perf_counter() - start


def floor_table(rounds: int, data_root: Path, folder: str) -> None:
    apps = {"hydra_floor.py (imports torch)": [sys.executable, str(FLOOR_APP)],
            "mnist37 (default run)": [sys.executable, "-m", "mnist37.train"]}
    seconds = {name: [] for name in apps}
    for r in range(rounds):
        for i, (name, app) in enumerate(apps.items()):
            seconds[name].append(timed([*app, *FLOOR_SWEEP, f"data.root={data_root}",
                                        f"hydra.sweep.dir={folder}/floor{r}_{i}"]))
    print(f"sweep {' '.join(FLOOR_SWEEP[1:])}: 8 jobs, default launcher, median of {rounds} [min, max]")
    for name, runs in seconds.items():
        print(f"  {name:32} {statistics.median(runs):6.2f} s [{min(runs):.2f}, {max(runs):.2f}]")
    floor, ours = (statistics.median(runs) for runs in seconds.values())
    print(f"  mnist37 / floor: {ours / floor:.2f}x   (per job beyond the floor: {(ours - floor) / 8:.2f} s)\n")


def launcher_table(extra: list[str], data_root: Path, folder: str) -> None:
    seconds = {}
    for launcher in ("basic", "joblib"):
        argv = [sys.executable, "-m", "mnist37.train", *LAUNCHER_SWEEP, f"hydra/launcher={launcher}",
                f"data.root={data_root}", f"hydra.sweep.dir={folder}/{launcher}", *extra]
        seconds[launcher] = timed(argv)
        print(f"{launcher:7} launcher: 8 jobs in {seconds[launcher]:6.1f} s", flush=True)
    print(f"joblib is {seconds['basic'] / seconds['joblib']:.2f}x faster\n")
    subprocess.run([sys.executable, "-m", "mnist37.report", f"{folder}/joblib"], check=True, timeout=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip-floor", action="store_true")
    parser.add_argument("--skip-launchers", action="store_true")
    parser.add_argument("extra", nargs="*", help="overrides for the launcher sweeps (after --)")
    args = parser.parse_args()
    data_root = Path("data").resolve()  # shared cache of the parsed embedded set
    with tempfile.TemporaryDirectory() as folder:
        timed([sys.executable, "-m", "mnist37.train", "data=embedded", f"data.root={data_root}", "trainer.epochs=1",
               f"hydra.run.dir={folder}/warm-up"])  # parses the embedded set once, warms the file cache
        if not args.skip_floor:
            floor_table(args.rounds, data_root, folder)
        if not args.skip_launchers:
            launcher_table(args.extra, data_root, folder)


if __name__ == "__main__":
    main()
