"""The floor under a sweep job: a Hydra app on mnist37's own configs whose task only imports torch.

    python benchmarks/hydra_floor.py -m 'seed=range(8)' data=embedded device=cpu

Whatever an mnist37 sweep takes beyond this app's sweep is the cost of its jobs' own work
(`benchmarks/sweep_speed.py` runs both and prints the ratio).
"""

import hydra
from omegaconf import DictConfig

from mnist37.train import config_dir


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="train")
def main(cfg: DictConfig) -> float:
    import torch

    return float(torch.zeros(()))


if __name__ == "__main__":
    main()
