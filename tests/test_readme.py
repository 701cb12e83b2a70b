"""The README's Python examples run as written (with a real run folder in place of <run>)."""

import re
from pathlib import Path

import pytest
import torch

from mnist37 import LinearModel, save_checkpoint

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_python_examples():
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("block", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_python_example_runs(block, tmp_path, monkeypatch, data_root):
    run = tmp_path / "outputs" / "runs" / "example"
    run.mkdir(parents=True)
    save_checkpoint(run / "model.pt", LinearModel())
    (tmp_path / "data").symlink_to(data_root)  # the examples' default data root, already parsed
    monkeypatch.chdir(tmp_path)
    exec(compile(block.replace("<run>", "example"), "README.md", "exec"), {"torch": torch})
