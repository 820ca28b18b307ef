"""DDP gradient buckets and parameter layout: no "Grad strides do not match bucket view strides" warning.

DDP lays its buckets out with each parameter's strides; a gradient of another layout (cuDNN gives NHWC weight
gradients for NHWC inputs) makes every rank warn and copy. The PatchGAN runs NHWC on CUDA, so its weights are NHWC.
"""
from __future__ import annotations

import subprocess

import pytest
import torch
from conftest import PYTHON, ROOT, cli_env, free_port

from rectok_core.config import build_config
from rectok_core.training.config import TOKENIZER_PRESETS, TokenizerTrainConfig
from rectok_core.training.tokenizer import build_trainer

pytestmark = pytest.mark.usefixtures("one_thread")

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
def test_nhwc_discriminator_weights_match_their_gradients(device):
    dev = torch.device(device)
    cfg = build_config(TokenizerTrainConfig, TOKENIZER_PRESETS, "tiny", dict(teacher="none", gan_weight=0.1,
                                                                             device=device))
    tr = build_trainer(cfg.model, cfg.loss, cfg.optim, dev, "fp32", 1e-3, None, None, True, channels_last=True)
    convs = [p for p in tr.disc.parameters() if p.dim() == 4]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    img = torch.rand(4, 3, 32, 32, device=dev) * 2 - 1
    fake = torch.rand(4, 3, 32, 32, device=dev) * 2 - 1
    tr.disc_loss(img, fake)["disc"].backward()
    for name, p in tr.disc.named_parameters():
        assert p.grad is not None and p.grad.stride() == p.stride(), name


@pytest.mark.slow
def test_two_process_gloo_run_prints_no_grad_stride_warning(tmp_path):
    cmd = [PYTHON, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           "-m", "rectok_cli.main", "train-tokenizer", "--preset", "tiny", "--steps", "2", "--batch-size", "4",
           "--out", str(tmp_path / "run"), "--disc-start", "0", "--gan-weight", "0.1", "--log-every", "1",
           "--device", "cpu"]
    p = subprocess.run(cmd, cwd=ROOT, env={**cli_env(), "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "Grad strides do not match" not in p.stderr and "bucket view" not in p.stderr
