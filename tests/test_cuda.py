"""CUDA-only checks; skipped without a GPU. Run them with `pytest -m cuda` (benchmarks/gpu_check.sh)."""

import contextlib

import pytest
import torch

from mnist37.models import MLP, LinearModel
from mnist37.loop import evaluate, run_epoch, train

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


@pytest.fixture
def cuda_data(digits37):
    return digits37.to("cuda")


@pytest.mark.parametrize("make_model", [LinearModel, MLP])
def test_steps_never_wait_for_the_gpu(cuda_data, make_model):
    """No .item(), .cpu() or other host sync inside the step loop: CUDA's sync debug mode raises on one."""
    model = make_model(cuda_data.digits).cuda()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.25)
    x, targets = cuda_data.train.x, model.loss_targets(cuda_data.train.y)
    batches = torch.randperm(len(x), device="cuda").split(256)
    run_epoch(model, optimizer, x, targets, batches, contextlib.nullcontext())  # warm-up: lazy init may sync
    torch.cuda.set_sync_debug_mode("error")
    try:
        losses = run_epoch(model, optimizer, x, targets, batches, contextlib.nullcontext())
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert len(losses) == len(batches)


@pytest.mark.parametrize("make_model", [LinearModel, MLP])
def test_cuda_training_matches_cpu(digits37, cuda_data, make_model):
    results = {}
    for device, data in (("cpu", digits37), ("cuda", cuda_data)):
        torch.manual_seed(0)
        model = make_model(data.digits).to(device)
        # the batch order comes from a generator on each device: compare quality, not bits
        history = train(model, data, torch.optim.SGD(model.parameters(), lr=0.25), epochs=5, progress=False)
        results[device] = history[-1].valid_accuracy
    assert results["cuda"] > 0.95 and abs(results["cuda"] - results["cpu"]) < 0.02


def test_compile_and_bf16_on_cuda(cuda_data):
    torch.manual_seed(0)
    model = MLP(cuda_data.digits).cuda()
    model.compile()
    history = train(model, cuda_data, torch.optim.SGD(model.parameters(), lr=0.25), epochs=3, progress=False, bf16=True)
    assert history[-1].valid_accuracy > 0.95
    assert evaluate(model, cuda_data.valid)[1] == pytest.approx(history[-1].valid_accuracy)


def test_cli_on_cuda(tmp_path, data_root):
    import json

    from helpers import run_cli

    result = run_cli("device=cuda", "data=embedded", f"data.root={data_root}", "trainer.epochs=2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (run_dir,) = (tmp_path / "outputs" / "runs").iterdir()
    assert json.loads((run_dir / "metrics.json").read_text())["device"] == "cuda"
