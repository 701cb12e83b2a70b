"""The README renders and its examples run as written: every fence closes, every shell block parses,
and the Python examples run (with a real run folder in place of <run>)."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from mnist37 import LinearModel, save_checkpoint

README = Path(__file__).resolve().parents[1] / "README.md"


def fenced_blocks(text: str) -> list[tuple[str, str, int]]:
    """(language, body, line number) of each fenced block; ValueError for a fence that would render
    wrongly: text after a closing fence on its line, or a fence never closed."""
    blocks, language, body, opened = [], None, [], 0
    for number, line in enumerate(text.splitlines(), start=1):
        if language is None:
            if line.startswith("```"):
                language, body, opened = line[3:].strip(), [], number
        elif line.startswith("```"):
            if line.strip() != "```":
                raise ValueError(f"README.md:{number}: text after a closing fence: {line!r}")
            blocks.append((language, "\n".join(body) + "\n", opened))
            language = None
        else:
            body.append(line)
    if language is not None:
        raise ValueError(f"README.md:{opened}: the fence opened here is never closed")
    return blocks


try:
    BLOCKS, FENCE_ERROR = fenced_blocks(README.read_text()), None
except ValueError as error:
    BLOCKS, FENCE_ERROR = [], str(error)
PYTHON = [body for language, body, _ in BLOCKS if language == "python"]
SHELL = [(body, line) for language, body, line in BLOCKS if language == "bash"]


def test_fence_checker_catches_what_breaks_rendering():
    assert fenced_blocks("```bash\nls\n```\n") == [("bash", "ls\n", 1)]
    with pytest.raises(ValueError, match="text after a closing fence"):
        fenced_blocks("```\nout\n``` and then prose\n")
    with pytest.raises(ValueError, match="never closed"):
        fenced_blocks("text\n```bash\nls\n")


def test_every_readme_fence_closes_cleanly():
    assert FENCE_ERROR is None


def test_readme_has_examples():
    assert len(PYTHON) >= 2 and len(SHELL) >= 5


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
@pytest.mark.parametrize("block,line", SHELL, ids=[f"line{line}" for _, line in SHELL])
def test_readme_shell_block_parses(block, line):
    # <run>, <sweep> and the like are placeholders for the reader to fill in, not redirections.
    filled = re.sub(r"<[^<>\n]+>", "PLACEHOLDER", block)
    result = subprocess.run(["bash", "-n"], input=filled, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, f"README.md:{line}: {result.stderr}"


@pytest.mark.parametrize("block", PYTHON, ids=[f"block{i}" for i in range(len(PYTHON))])
def test_readme_python_example_runs(block, tmp_path, monkeypatch, data_root):
    run = tmp_path / "outputs" / "runs" / "example"
    run.mkdir(parents=True)
    save_checkpoint(run / "model.pt", LinearModel())
    (tmp_path / "data").symlink_to(data_root)  # the examples' default data root, already parsed
    monkeypatch.chdir(tmp_path)
    exec(compile(block.replace("<run>", "example"), "README.md", "exec"), {"torch": torch})
