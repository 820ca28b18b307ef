"""The CUDA-only code paths against their eager / fp32 / plain counterparts (``pytest -m cuda tests/cuda``).

Every test is skipped without CUDA. ``rectok bench --acceptance`` runs this file on the GPU machine; the map
"CUDA-only branch → test" is in docs/performance.md. ``RECTOK_CUDA_TESTS_DEVICE=cpu`` runs the same test logic
on the CPU (a development check of the tests themselves: the CUDA branches are then not taken, and the
assertions about them are inverted); ``RECTOK_COMPILE_BACKEND=aot_eager`` makes that check fast.

Tolerances: compiled vs eager in bf16 — losses within 3%, gradient cosine > 0.99 (as the bf16 vs fp32 checks
of tests/training/test_equivalence.py); fp32 comparisons run with TF32 off.
"""
from __future__ import annotations

import copy
import os
import socket

import pytest
import torch
from conftest import make_image_folder

from rectok_core.config import build_config
from rectok_core.data.latent_stats import LatentStats
from rectok_core.training import engine
from rectok_core.training.config import FINETUNE_PRESETS, TOKENIZER_PRESETS, FinetuneConfig, TokenizerTrainConfig
from rectok_core.training.dit_config import DIT_TRAIN_PRESETS, DiTTrainConfig
from rectok_core.training.engine import StepRandom
from rectok_core.utils import runtime

DEV = torch.device(os.environ.get("RECTOK_CUDA_TESTS_DEVICE", "cuda"))
ON_CUDA = DEV.type == "cuda"

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(ON_CUDA and not torch.cuda.is_available(),
                       reason="needs a CUDA GPU: torch.cuda.is_available() is False"),
]


@pytest.fixture
def no_tf32():
    """fp32 comparisons: TF32 off (cuda_fast_paths turns it on process-wide), restored afterwards."""
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double().flatten(), b.detach().double().flatten()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def cosine(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    va = torch.cat([x.detach().flatten().double() for x in a])
    vb = torch.cat([x.detach().flatten().double() for x in b])
    return float(va @ vb / (va.norm() * vb.norm()))


def grads_before_step(opt) -> dict[int, torch.Tensor]:
    seen: dict[int, torch.Tensor] = {}

    def hook(o, args, kwargs):
        for g in o.param_groups:
            for p in g["params"]:
                if p.grad is not None:
                    seen[id(p)] = p.grad.detach().clone()

    opt.register_step_pre_hook(hook)
    return seen


def masked_steps(lo: float, hi: float, n: int) -> list[int]:
    """The first ``n`` steps whose mask ratio is positive (a ratio of 0 is another compiled graph)."""
    return [s for s in range(200) if StepRandom(7, 0, DEV).at(s).uniform(lo, hi) > 0.05][:n]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------------------------
# Builders: the trainers the commands build, tiny, on DEV
# ---------------------------------------------------------------------------------------------------------
def tokenizer_trainer(stage: str, precision: str):
    from rectok_core.losses.perceptual import LPIPS, PerceptualLoss
    from rectok_core.training.tokenizer import build_teacher_for, build_trainer

    torch.manual_seed(0)
    cfg = build_config(TokenizerTrainConfig, TOKENIZER_PRESETS, "tiny",
                       dict(teacher="inception-s", gan_weight=0.1, batch_size=8, device=DEV.type))
    if stage == "stage1":
        M, L, O = cfg.model, cfg.loss, cfg.optim
        teacher, frozen = build_teacher_for(cfg, DEV), ()
    else:  # decoder fine-tuning: frozen encoder, MSE + LPIPS + GAN from step 0, no teacher
        ft = build_config(FinetuneConfig, FINETUNE_PRESETS, "tiny", {"batch_size": 8})
        M, O = cfg.model, ft.optim
        L = ft.loss.as_tokenizer_loss()
        L.perceptual, L.gan_weight = "lpips", 0.1
        teacher, frozen = None, ("encoder.",)
    perceptual = PerceptualLoss("lpips", lpips_module=LPIPS(None)).to(DEV) if stage != "stage1" else None
    tr = build_trainer(M, L, O, DEV, precision, 1e-3, teacher, perceptual, with_disc=True, frozen=frozen)
    images = torch.rand(8, 3, M.image_size, M.image_size, generator=torch.Generator().manual_seed(1)).to(DEV) * 2 - 1
    steps = masked_steps(L.mask_min, L.mask_max, 4) if L.mask_max > 0 else [0, 1, 2, 3]
    return tr, images, steps


def dit_trainer(precision: str):
    from rectok_core.training.dit import build_dit_trainer

    torch.manual_seed(0)
    cfg = build_config(DiTTrainConfig, DIT_TRAIN_PRESETS, "tiny", dict(tokenizer="x", device=DEV.type))
    C, h = 16, 8
    stats = LatentStats(mean=torch.linspace(-0.5, 0.5, C, dtype=torch.float64),
                        std=torch.linspace(0.5, 2.0, C, dtype=torch.float64), tokens=1, images=1,
                        tokenizer_sha256="x", tokenizer_weights="ema", data_fingerprint="x")
    tr = build_dit_trainer("tiny", (C, h, h), 10, cfg.model.class_dropout, cfg.optim, stats, DEV, precision)
    with torch.no_grad():  # off the zero-initialised adaLN/final layers: every parameter gets a gradient
        for p in tr.model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    tr.ema.module.load_state_dict(tr.model.state_dict())
    g = torch.Generator().manual_seed(2)
    batch = {"label": torch.randint(0, 10, (8,), generator=g).to(DEV),
             "mean": torch.randn(8, C, h, h, generator=g).to(DEV),
             "logvar": (torch.randn(8, C, h, h, generator=g) * 0.1 - 3).to(DEV)}
    return tr, batch


def run_tokenizer(tr, images, step: int):
    return tr.step(lambda: images, StepRandom(7, 0, DEV).at(step), gan_on=True)[0]


def run_dit(tr, batch, step: int):
    return tr.step(lambda: batch, StepRandom(5, 0, DEV).at(step))[0]


# ---------------------------------------------------------------------------------------------------------
# torch.compile vs eager (bf16, the CUDA defaults)
# ---------------------------------------------------------------------------------------------------------
def test_cuda_defaults_resolve_to_the_fast_paths():
    """precision auto → bf16, compile auto → on, fused AdamW, TF32 + cuDNN autotuning (engine branches)."""
    assert runtime.resolve_precision(DEV, "auto") == ("bf16" if ON_CUDA else "fp32")
    assert runtime.resolve_compile(None, DEV) is ON_CUDA
    tr, _ = dit_trainer("bf16")
    assert engine.optimizer_impl(tr.opt) == engine.adamw_impl(DEV) == "fused"
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark
    try:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        torch.backends.cudnn.benchmark = False
        runtime.cuda_fast_paths(DEV)
        now = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark
        assert now == ((True,) * 3 if ON_CUDA else (False,) * 3)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark = before
    meter = engine.Throughput(DEV)
    meter.add(8)
    runtime.synchronize(DEV)
    assert meter.rate() > 0


@pytest.mark.parametrize("stage", ["stage1", "decoder-ft"])
def test_compiled_tokenizer_step_matches_eager(stage):
    tr, images, steps = tokenizer_trainer(stage, "bf16")
    if stage == "stage1":  # build_trainer's CUDA default: channels-last teacher and PatchGAN input
        assert tr.disc.channels_last is ON_CUDA
    ref = copy.deepcopy(tr)
    tr.wrap(ddp=False, compile=True)
    ref.wrap(ddp=False, compile=False)
    seen, seen_ref = grads_before_step(tr.opt), grads_before_step(ref.opt)
    for i, step in enumerate(steps[:2]):
        got, want = run_tokenizer(tr, images, step), run_tokenizer(ref, images, step)
        keys = [k for k in ("rec", "sem", "perceptual", "gan", "loss", "disc") if k in want]
        for k in keys:
            assert rel_err(got[k], want[k]) < 3e-2, (stage, i, k, float(got[k]), float(want[k]))
        if i == 0:  # the same weights: the gradients point the same way
            ids = [id(p) for p in ref.model.parameters() if id(p) in seen_ref]
            mine = [id(p) for p in tr.model.parameters() if id(p) in seen]
            assert len(ids) == len(mine) > 0
            assert cosine([seen[j] for j in mine], [seen_ref[j] for j in ids]) > 0.99


def test_compiled_dit_step_matches_eager():
    tr, batch = dit_trainer("bf16")
    ref = copy.deepcopy(tr)
    tr.wrap(ddp=False, compile=True)
    ref.wrap(ddp=False, compile=False)
    seen, seen_ref = grads_before_step(tr.opt), grads_before_step(ref.opt)
    for step in (3, 4):
        got, want = run_dit(tr, batch, step), run_dit(ref, batch, step)
        assert rel_err(got["loss"], want["loss"]) < 3e-2, (step, float(got["loss"]), float(want["loss"]))
        if step == 3:
            pairs = [(seen[id(p)], seen_ref[id(q)]) for p, q in zip(tr.model.parameters(), ref.model.parameters())
                     if id(q) in seen_ref]
            assert len(pairs) > 0 and all(id(p) in seen for p, q in zip(tr.model.parameters(), ref.model.parameters())
                                          if id(q) in seen_ref)
            assert cosine([a for a, _ in pairs], [b for _, b in pairs]) > 0.99


def test_compiled_sampling_images_match_eager():
    """``rectok sample``'s path: compiled DiT (CFG, doubled batch), bf16 autocast, decode to images."""
    from rectok_core.models.dit import build_dit
    from rectok_core.models.tokenizer import RecTok
    from rectok_core.sampling.generate import RowPadded, build_velocity, decode_latents, generate_latents

    torch.manual_seed(0)
    tcfg = build_config(TokenizerTrainConfig, TOKENIZER_PRESETS, "tiny", {}).model
    tok = RecTok(tcfg, semantic=False).eval().requires_grad_(False).to(DEV)
    C, (h, _) = tcfg.dim, tcfg.grid
    model = build_dit("tiny", in_channels=C, input_size=h, num_classes=10).eval().requires_grad_(False).to(DEV)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    stats = LatentStats(mean=torch.zeros(C, dtype=torch.float64), std=torch.ones(C, dtype=torch.float64),
                        tokens=1, images=1, tokenizer_sha256="x", tokenizer_weights="ema", data_fingerprint="x")
    idx = torch.arange(16)
    prec = runtime.resolve_precision(DEV, "auto")

    def images(compiled: bool) -> tuple[torch.Tensor, torch.Tensor]:
        v = build_velocity(RowPadded(runtime.maybe_compile(model, compiled)), "cfg", 1.5, model.null_class)
        z = generate_latents(v, idx, idx % 10, 0, (C, h, h), 6, "euler", DEV, prec)
        return z, decode_latents(tok, stats, z, prec)

    (z_eager, eager), (z_compiled, compiled) = images(False), images(True)
    assert eager.abs().mean() > 1e-3 and eager.std() > 1e-3  # a random decoder: small but non-trivial images
    assert rel_err(z_compiled, z_eager) < 5e-2
    assert rel_err(compiled, eager) < 5e-2


# ---------------------------------------------------------------------------------------------------------
# bf16 vs fp32 of the frozen networks
# ---------------------------------------------------------------------------------------------------------
def test_bf16_lpips_and_teacher_agree_with_fp32(no_tf32):
    from rectok_core.losses.perceptual import LPIPS
    from rectok_core.teachers.registry import build_teacher

    torch.manual_seed(0)
    lpips = LPIPS(None).to(DEV)
    teacher = build_teacher("inception-s", None, (8, 8), 32, resize="native", pretrained="auto").to(DEV)
    g = torch.Generator().manual_seed(3)
    x, y = (torch.rand(8, 3, 32, 32, generator=g).to(DEV) * 2 - 1 for _ in range(2))
    with torch.no_grad():
        d32, f32 = lpips(x, y), teacher(x)
        with runtime.autocast(DEV, "bf16"):
            d16, f16 = lpips(x, y), teacher(x)
    assert rel_err(d16.float(), d32) < 5e-2
    f16, f32 = f16.float().flatten(0, -2), f32.flatten(0, -2)
    assert torch.nn.functional.cosine_similarity(f16, f32, dim=-1).min() > 0.99
    assert rel_err(f16, f32) < 5e-2


# ---------------------------------------------------------------------------------------------------------
# Layouts
# ---------------------------------------------------------------------------------------------------------
def test_channels_last_outputs_equal_contiguous(no_tf32):
    from rectok_core.losses.perceptual import LPIPS
    from rectok_core.models.discriminator import NLayerDiscriminator
    from rectok_core.teachers.registry import build_teacher

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(4)
    x, y = (torch.rand(4, 3, 64, 64, generator=g).to(DEV) * 2 - 1 for _ in range(2))
    lpips = LPIPS(None).to(DEV)
    teacher = build_teacher("inception-s", None, (8, 8), 64, resize="native", pretrained="auto").to(DEV)
    disc = NLayerDiscriminator().to(DEV).eval()
    with torch.no_grad():
        want = [lpips(x, y), teacher(x), disc(x * 0.5 + 0.5)]
        nhwc_lpips = copy.deepcopy(lpips).to(memory_format=torch.channels_last)
        nhwc_teacher = copy.deepcopy(teacher).to(memory_format=torch.channels_last)
        nhwc_disc = copy.deepcopy(disc)
        nhwc_disc.channels_last = True
        got = [nhwc_lpips(x, y), nhwc_teacher(x), nhwc_disc(x * 0.5 + 0.5)]
    for name, a, b in zip(("LPIPS", "Inception teacher", "PatchGAN"), got, want):
        assert rel_err(a, b) < 1e-3, name


# ---------------------------------------------------------------------------------------------------------
# DDP (NCCL), one process
# ---------------------------------------------------------------------------------------------------------
@pytest.fixture
def process_group():
    import torch.distributed as dist

    kw = {"device_id": DEV} if ON_CUDA else {}
    if ON_CUDA:
        torch.cuda.set_device(DEV)
    dist.init_process_group("nccl" if ON_CUDA else "gloo", init_method=f"tcp://127.0.0.1:{free_port()}",
                            rank=0, world_size=1, **kw)
    yield dist
    dist.destroy_process_group()


def test_one_process_ddp_step_equals_plain_step(process_group, no_tf32):
    """DDP wrappers of both trainers (``device_ids=[index]`` on CUDA): the same losses and updates as plain."""
    assert process_group.get_backend() == ("nccl" if ON_CUDA else "gloo")
    tr, images, steps = tokenizer_trainer("stage1", "fp32")
    ref = copy.deepcopy(tr)
    tr.wrap(ddp=True, compile=False)
    ref.wrap(ddp=False, compile=False)
    assert tr.model_ddp is not tr.model
    got, want = run_tokenizer(tr, images, steps[0]), run_tokenizer(ref, images, steps[0])
    for k in ("rec", "sem", "gan", "loss", "disc", "grad_norm"):
        assert rel_err(got[k], want[k]) < 1e-5, k
    for a, b in zip(tr.model.parameters(), ref.model.parameters()):
        assert rel_err(a, b) < 1e-5
    dtr, batch = dit_trainer("fp32")
    dref = copy.deepcopy(dtr)
    dtr.wrap(ddp=True, compile=False)
    dref.wrap(ddp=False, compile=False)
    got, want = run_dit(dtr, batch, 3), run_dit(dref, batch, 3)
    assert rel_err(got["loss"], want["loss"]) < 1e-5 and rel_err(got["grad_norm"], want["grad_norm"]) < 1e-5
    for a, b in zip(dtr.model.parameters(), dref.model.parameters()):
        assert rel_err(a, b) < 1e-5


# ---------------------------------------------------------------------------------------------------------
# No host synchronisation inside the compiled steps
# ---------------------------------------------------------------------------------------------------------
def test_compiled_steps_make_no_host_syncs():
    """``torch.cuda.set_sync_debug_mode("error")`` around a compiled step (after the compiling warm-up steps)."""
    tr, images, steps = tokenizer_trainer("stage1", "bf16")
    tr.wrap(ddp=False, compile=True)
    dtr, batch = dit_trainer("bf16")
    dtr.wrap(ddp=False, compile=True)
    for s in steps[:3]:
        run_tokenizer(tr, images, s)
    for s in range(2):
        run_dit(dtr, batch, s)
    runtime.synchronize(DEV)
    if ON_CUDA:
        torch.cuda.set_sync_debug_mode("error")
    try:
        terms = run_tokenizer(tr, images, steps[3])
        dterms = run_dit(dtr, batch, 2)
    finally:
        if ON_CUDA:
            torch.cuda.set_sync_debug_mode(0)
    assert torch.isfinite(terms["loss"]) and torch.isfinite(dterms["loss"])


def test_finite_guard_defers_the_check_on_cuda():
    """On CUDA the guard never reads the flag per step (no exact step known); the check still stops the run."""
    guard = engine.FiniteGuard(DEV)
    guard.observe(3, {"loss": torch.tensor(float("nan"), device=DEV)})
    assert (guard.first_bad is None) is ON_CUDA
    with pytest.raises(engine.NonFiniteLoss, match="≤5" if ON_CUDA else "at step 3"):
        guard.check(5, "ckpt")


# ---------------------------------------------------------------------------------------------------------
# Training loops, the latent cache and checkpoints on CUDA
# ---------------------------------------------------------------------------------------------------------
def test_latent_cache_read_path_and_training_loops_on_cuda(tmp_path, no_tf32):
    """train-tokenizer → cache-latents (encoded on the GPU) → pinned cache batches → train-dit, all on DEV."""
    from rectok_core.checkpoints import load_tokenizer
    from rectok_core.data.config import CacheLatentsConfig
    from rectok_core.data.latent_cache import LatentCache
    from rectok_core.data.latent_stats import encode_moments
    from rectok_core.data.readers import build_dataset
    from rectok_core.data.sampler import build_loader
    from rectok_core.training.dit import train_dit
    from rectok_core.training.latents import cache_latents
    from rectok_core.training.rundir import read_metrics
    from rectok_core.training.tokenizer import train_tokenizer

    data = make_image_folder(tmp_path / "data", classes=2, per_class=8, size=32)
    tok = train_tokenizer(build_config(TokenizerTrainConfig, TOKENIZER_PRESETS, "tiny", dict(
        teacher="none", steps=3, batch_size=8, data=str(data), out=str(tmp_path / "tok"), log_every=1,
        ckpt_every=3, image_every=100, workers=0, device=DEV.type, compile=False)))
    start = next(m for m in read_metrics(tmp_path / "tok") if m.get("event") == "start")
    assert start["adamw"] == "fused" and start["precision"] == ("bf16" if ON_CUDA else "fp32")
    cache = cache_latents(str(tok), CacheLatentsConfig(out=str(tmp_path / "cache"), data=str(data), batch_size=8,
                                                       dtype="float32", device=DEV.type))
    assert torch.backends.cuda.matmul.allow_tf32 is ON_CUDA  # cache-latents turns TF32 on for CUDA
    tokenizer, _ = load_tokenizer(tok, device=DEV)
    assert isinstance(cache, LatentCache) and len(cache) == 16
    loader = build_loader(cache, list(range(8)), 8, 0, ON_CUDA, drop_last=False)
    batch = next(iter(loader))
    assert batch["mean"].is_pinned() is ON_CUDA
    mean = batch["mean"].to(DEV, non_blocking=True)
    images = torch.stack([build_dataset(str(data), 32, split="train")[i]["image"] for i in range(8)]).to(DEV)
    want, _ = encode_moments(tokenizer, images, "fp32")
    assert rel_err(mean, want) < 5e-3  # the first 8 images, unflipped, as encoded here (TF32 on CUDA)
    train_dit(build_config(DiTTrainConfig, DIT_TRAIN_PRESETS, "tiny", dict(
        tokenizer=str(tok), cache_latents=str(tmp_path / "cache"), data=str(data), steps=3, batch_size=8,
        log_every=1, ckpt_every=3, image_every=3, out=str(tmp_path / "dit"), device=DEV.type, compile=False)))
    losses = [m["loss"] for m in read_metrics(tmp_path / "dit") if "loss" in m]
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))


def test_checkpoint_rng_state_restores_the_cuda_generators():
    from rectok_core.utils import checkpoint

    torch.manual_seed(11)
    st = checkpoint.rng_state()
    assert ("cuda" in st) is torch.cuda.is_available()
    a = torch.randn(4, device=DEV)
    checkpoint.set_rng_state(st)
    assert torch.equal(torch.randn(4, device=DEV), a)


def test_bench_on_the_device_reports_memory_and_ceiling(tmp_path):
    from rectok_core.tools.bench import BenchConfig, run_bench

    res = run_bench(BenchConfig(tokenizer_preset="tiny", dit_preset="tiny", workloads="sample-cfg", batch_sizes="16",
                                timed_steps=2, warmup=1, device=DEV.type, compile=False, out=str(tmp_path / "b.json")))
    rec = res["records"][0]
    assert res["device"]["type"] == DEV.type and res["ceiling"]["tflops"] > 0
    assert res["ceiling"]["dtype"] == ("bfloat16" if ON_CUDA else "float32")
    assert rec["img_per_s"] > 0 and rec["peak_memory_bytes"] > 0
    assert (torch.cuda.get_device_name(DEV) in res["device"]["name"]) if ON_CUDA else "CPUs" in res["device"]["name"]


def test_bench_runs_every_generator_family_on_the_device(tmp_path):
    """Each family's tiny training step and CFG sampling step on the device (bf16 autocast on CUDA; DiT's ancestral
    step draws its per-sample noise on the CPU and moves it to the device)."""
    from rectok_core.models.generators import GENERATORS
    from rectok_core.tools.bench import BenchConfig, run_bench

    models = [f"{name}-tiny" for name in GENERATORS.names()]
    res = run_bench(BenchConfig(tokenizer_preset="tiny", workloads="generators", models=",".join(models),
                                batch_sizes="16", timed_steps=2, warmup=1, device=DEV.type, compile=False,
                                out=str(tmp_path / "b.json")))
    assert [(r["workload"], r["model"]) for r in res["records"]] == [
        (w, m) for m in models for w in ("generator-train", "generator-sample")]
    for r in res["records"]:
        assert "error" not in r, r
        assert r["img_per_s"] > 0 and r["flops_per_image"] > 0 and r["peak_memory_bytes"] > 0
