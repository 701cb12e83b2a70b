"""One 8-job sweep with Hydra's default launcher, then the same with the joblib launcher.

    python benchmarks/sweep_speed.py                 # default: 20-epoch runs on the embedded set
    python benchmarks/sweep_speed.py trainer.epochs=60

The jobs are `model=linear,mlp optimizer=sgd,adam seed=0,1` (8 jobs); extra arguments are passed to
both sweeps. Prints each sweep's wall time, the ratio, and mnist37-report's table of the joblib sweep.
"""

import subprocess
import sys
import tempfile
import time
from pathlib import Path

SWEEP = ["-m", "data=embedded", "model=linear,mlp", "optimizer=sgd,adam", "seed=0,1"]


def main() -> None:
    extra = sys.argv[1:]
    data_root = Path("data").resolve()  # shared cache of the parsed embedded set
    seconds = {}
    with tempfile.TemporaryDirectory() as folder:
        for launcher in ("basic", "joblib"):
            argv = [sys.executable, "-m", "mnist37.train", *SWEEP, f"hydra/launcher={launcher}",
                    f"data.root={data_root}", f"hydra.sweep.dir={folder}/{launcher}", *extra]
            start = time.perf_counter()
            subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            seconds[launcher] = time.perf_counter() - start
            print(f"{launcher:7} launcher: 8 jobs in {seconds[launcher]:6.1f} s", flush=True)
        print(f"joblib is {seconds['basic'] / seconds['joblib']:.2f}x faster\n")
        subprocess.run([sys.executable, "-m", "mnist37.report", f"{folder}/joblib"], check=True)


if __name__ == "__main__":
    main()
