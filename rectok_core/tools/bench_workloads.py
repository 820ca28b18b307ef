"""The benchmark's workloads: one training or inference step each, built from the real code."""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from rectok_core.config import build_config
from rectok_core.data.latent_stats import LatentStats, encode_moments
from rectok_core.flow.diffusion import ddpm_scheduler, step_generators
from rectok_core.flow.solvers import sample_ode
from rectok_core.losses.perceptual import LPIPS, ConvNeXtLogits, PerceptualLoss
from rectok_core.metrics.probe import encode_pooled
from rectok_core.metrics.probe_run import ProbeConfig
from rectok_core.models.dit import build_dit
from rectok_core.models.generators import GENERATORS, build_generator, parse_model_name
from rectok_core.models.tokenizer import RecTok, count_params
from rectok_core.sampling.folder import SampleConfig
from rectok_core.sampling.generate import RowPadded, build_velocity, decode_latents
from rectok_core.training.config import FINETUNE_PRESETS, TOKENIZER_PRESETS, FinetuneConfig, TokenizerTrainConfig
from rectok_core.training.dit import build_dit_trainer
from rectok_core.training.dit_config import DIT_TRAIN_PRESETS, DiTTrainConfig
from rectok_core.training.engine import StepRandom, optimizer_impl
from rectok_core.training.tokenizer import build_teacher_for, build_trainer
from rectok_core.utils.runtime import autocast, maybe_compile

TRAINING = {"tokenizer-gan", "tokenizer-nogan", "decoder-ft", "dit-cached", "dit-online", "generator-train"}


COMPILED = TRAINING | {"sample-cfg", "sample-autoguidance", "generator-sample"}  # what the real commands compile


CFG_SCALE = 1.5


AUTOGUIDANCE_SCALE = 1.29


SAMPLE_T = (0.5, 0.51)  # the grid interval of the timed Euler step (inside the guidance interval)


DDPM_STEPS = 250  # the diffusion family's sampler: the official respacing; the timed step is its middle one


GUIDE_FOR = {"XL": "S", "L": "S", "B": "S", "S": "tiny", "mini": "tiny", "tiny": "tiny"}


# ---------------------------------------------------------------------------------------------------------
# Workloads
# ---------------------------------------------------------------------------------------------------------
@dataclass
class Workload:
    """One timed step: ``run`` (what the command runs, compiled when it compiles) and ``run_eager`` (the same step
    without torch.compile, for counting FLOPs)."""
    name: str
    batch: int
    run: Callable[[], Any]
    run_eager: Callable[[], Any]
    compiled: bool
    params: int
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass
class Context:
    cfg: Any  # the run's rectok_core.tools.bench.BenchConfig (typed loosely: bench imports this module)
    device: torch.device
    precision: str
    compile: bool
    tokenizer_preset: str
    dit_preset: str
    guide_preset: str

    def tokenizer_cfg(self, batch: int) -> TokenizerTrainConfig:
        cfg = build_config(TokenizerTrainConfig, TOKENIZER_PRESETS, self.tokenizer_preset, {"batch_size": batch})
        if cfg.loss.teacher.startswith(("dinov2", "dinov3")):
            cfg.loss.teacher_init = "random"  # no downloads; speed is what is measured
        return cfg

    def latent_shape(self) -> tuple[int, int, int]:
        m = self.tokenizer_cfg(1).model
        return (m.dim, *m.grid)

    def num_classes(self) -> int:
        return 10 if self.dit_preset == "tiny" else 1000

    def images(self, batch: int, size: int) -> torch.Tensor:
        return torch.rand(batch, 3, size, size, device=self.device) * 2 - 1

    def tokenizer(self) -> Any:
        m = self.tokenizer_cfg(1).model
        return RecTok(m, semantic=False).eval().requires_grad_(False).to(self.device)


def default_batch(ctx: Context, name: str, model: str | None = None) -> int:
    if name == "generator-train":
        return build_config(DiTTrainConfig, DIT_TRAIN_PRESETS, _train_preset(model or ""),
                            {"tokenizer": "(bench)"}).run.batch_size
    if name in ("tokenizer-gan", "tokenizer-nogan"):
        return build_config(TokenizerTrainConfig, TOKENIZER_PRESETS, ctx.tokenizer_preset, {}).run.batch_size
    if name == "decoder-ft":
        return build_config(FinetuneConfig, FINETUNE_PRESETS, _finetune_preset(ctx), {}).run.batch_size
    if name.startswith("dit-"):
        return build_config(DiTTrainConfig, DIT_TRAIN_PRESETS, ctx.dit_preset, {"tokenizer": "(bench)"}).run.batch_size
    if name.startswith("sample-"):
        return SampleConfig().batch_size
    if name == "probe-features":
        return ProbeConfig().batch_size
    return 64  # encode / decode: cache-latents' default batch


def _train_preset(model: str) -> str:
    """The train-dit preset whose batch and optimizer settings the bench uses for MODEL: the preset of the same
    size (``tiny``, ``mini``, ``S`` … ``XL``, as ``train-dit --preset tiny --model sit-tiny``), else XL (train-dit's
    default preset)."""
    size = parse_model_name(model)[1] if model else "xl"
    return next((p for p in DIT_TRAIN_PRESETS if p.lower() == size), "XL")


def _finetune_preset(ctx: Context) -> str:
    return ctx.tokenizer_preset if ctx.tokenizer_preset in FINETUNE_PRESETS else "base"


def _random_perceptual(loss, device: torch.device):
    """The configured perceptual loss with random backbones (speed only; no weight files, no downloads)."""
    if loss.perceptual == "none" or loss.perceptual_weight == 0:
        return None

    convnext = ConvNeXtLogits(None) if "convnext" in loss.perceptual else None
    return PerceptualLoss(loss.perceptual, lpips_module=LPIPS(None), convnext_module=convnext).to(device)


def _unit_stats(channels: int):
    return LatentStats(mean=torch.zeros(channels, dtype=torch.float64), std=torch.ones(channels, dtype=torch.float64),
                       tokens=1, images=1, tokenizer_sha256="random", tokenizer_weights="random",
                       data_fingerprint="random")


def _trainer_steps(trainer, step_fn: Callable[[Any, StepRandom], Any], device: torch.device
                   ) -> tuple[Callable[[], Any], Callable[[], Any]]:
    """(compiled step, eager step) closures over a trainer; every call is the next step of one random stream."""
    rnd = StepRandom(0, 0, device)
    eager = dataclasses.replace(trainer, net=trainer.model, model_ddp=trainer.model)
    state = {"step": 0}

    def call(tr):
        def run():
            rnd.at(state["step"])
            state["step"] += 1
            return step_fn(tr, rnd)
        return run

    return call(trainer), call(eager)


def _tokenizer_workload(ctx: Context, batch: int, stage: str, gan: bool | None) -> Workload:
    dev = ctx.device
    cfg = ctx.tokenizer_cfg(batch)
    if stage == "stage1":
        L, M, O = cfg.loss, cfg.model, cfg.optim
        if gan and L.gan_weight == 0:
            L.gan_weight = 0.1  # the recipe's weight (the tiny preset trains without a GAN)
        teacher = build_teacher_for(cfg, dev)
        frozen: tuple[str, ...] = ()
        lr = O.lr or O.blr * batch / 256
    else:
        ft = build_config(FinetuneConfig, FINETUNE_PRESETS, _finetune_preset(ctx), {"batch_size": batch})
        M = dataclasses.replace(cfg.model, teacher_dim=0)
        L, O = ft.loss.as_tokenizer_loss(), ft.optim
        gan = L.gan_weight > 0  # from step 0 in stage 2
        teacher, frozen = None, ("encoder.",)
        lr = O.lr or O.blr * batch / 256
    perceptual = _random_perceptual(L, dev)
    tr = build_trainer(M, L, O, dev, ctx.precision, lr, teacher, perceptual, with_disc=bool(gan), frozen=frozen)
    tr.wrap(ddp=False, compile=ctx.compile)
    images = ctx.images(batch, M.image_size)
    run, run_eager = _trainer_steps(tr, lambda t, rnd: t.step(lambda: images, rnd, bool(gan)), dev)
    settings = {"image_size": M.image_size, "tokens": M.num_tokens, "latent_channels": M.dim,
                "teacher": None if teacher is None else f"{teacher.name} ({'real' if teacher.real else 'random'})",
                "perceptual": "none" if perceptual is None else f"{L.perceptual} (random backbone)",
                "gan": bool(gan), "mask_max": L.mask_max, "gamma": L.gamma, "frozen": list(frozen),
                "adamw": optimizer_impl(tr.opt)}
    return Workload("", batch, run, run_eager, ctx.compile, count_params(tr.model), settings)


def _dit_workload(ctx: Context, batch: int, online: bool) -> Workload:
    dev = ctx.device
    cfg = build_config(DiTTrainConfig, DIT_TRAIN_PRESETS, ctx.dit_preset,
                       {"tokenizer": "(bench)", "batch_size": batch})
    C, h, w = ctx.latent_shape()
    tokenizer = ctx.tokenizer() if online else None
    tr = build_dit_trainer(cfg.model.size, (C, h, w), ctx.num_classes(), cfg.model.class_dropout, cfg.optim,
                           _unit_stats(C), dev, ctx.precision, tokenizer=tokenizer)
    tr.wrap(ddp=False, compile=ctx.compile)
    labels = torch.randint(0, ctx.num_classes(), (batch,), device=dev)
    if online:
        data = {"label": labels, "image": ctx.images(batch, tokenizer.cfg.image_size)}
    else:
        data = {"label": labels, "mean": torch.randn(batch, C, h, w, device=dev),
                "logvar": torch.randn(batch, C, h, w, device=dev) * 0.1 - 4}
    run, run_eager = _trainer_steps(tr, lambda t, rnd: t.step(lambda: data, rnd), dev)
    params = sum(p.numel() for p in tr.model.parameters() if p.requires_grad)
    return Workload("", batch, run, run_eager, ctx.compile, params,
                    {"latent_shape": [C, h, w], "latents": "online" if online else "cache", "size": cfg.model.size,
                     "adamw": optimizer_impl(tr.opt)})


def _sample_workload(ctx: Context, batch: int, method: str) -> Workload:
    dev = ctx.device
    C, h, _ = ctx.latent_shape()
    K = ctx.num_classes()

    def model(size: str):
        return build_dit(size, in_channels=C, input_size=h, num_classes=K).eval().requires_grad_(False).to(dev)

    main = model(ctx.dit_preset)
    guide = model(ctx.guide_preset) if method == "autoguidance" else None
    scale = CFG_SCALE if method == "cfg" else AUTOGUIDANCE_SCALE

    def velocity(compiled: bool):
        return build_velocity(RowPadded(maybe_compile(main, compiled)), method, scale, main.null_class,
                              RowPadded(maybe_compile(guide, compiled)) if guide is not None else None)

    x = torch.randn(batch, C, h, h, device=dev)
    y = torch.arange(batch, device=dev) % K
    grid = torch.tensor(SAMPLE_T, device=dev)

    def step(v):
        def run():
            with torch.no_grad(), autocast(dev, ctx.precision):
                return sample_ode(v, x, y, grid)
        return run

    params = sum(p.numel() for p in main.parameters()) + (0 if guide is None else
                                                          sum(p.numel() for p in guide.parameters()))
    settings = {"latent_shape": [C, h, h], "guidance": method, "scale": scale, "size": ctx.dit_preset,
                "guide": ctx.guide_preset if guide is not None else None, "sampler": "euler, one update",
                "t": list(SAMPLE_T)}
    return Workload("", batch, step(velocity(ctx.compile)), step(velocity(False)), ctx.compile, params, settings)


def _inference_workload(ctx: Context, batch: int, name: str) -> Workload:
    dev = ctx.device
    tok = ctx.tokenizer()
    size = tok.cfg.image_size
    if name == "encode":
        images = ctx.images(batch, size)

        def run():
            return encode_moments(tok, images, ctx.precision)
    elif name == "decode":
        C, h, w = ctx.latent_shape()
        z = torch.randn(batch, C, h, w, device=dev)
        stats = _unit_stats(C)

        def run():
            return decode_latents(tok, stats, z, ctx.precision)
    else:
        images = ctx.images(batch, size)

        def run():
            return encode_pooled(lambda img: tok.encode(img).mean, images, dev, ctx.precision)
    part = tok.decoder if name == "decode" else tok.encoder
    return Workload("", batch, run, run, False, sum(p.numel() for p in part.parameters()),
                    {"image_size": size, "latent_shape": list(ctx.latent_shape())})


def _classes(size: str) -> int:
    return 10 if size == "tiny" else 1000


def _generator_train_workload(ctx: Context, batch: int, model: str) -> Workload:
    """One ``train-dit --model MODEL`` step from cached moments: ``DiTTrainer.step`` with the family's objective."""
    dev = ctx.device
    family, size = parse_model_name(model)
    cfg = build_config(DiTTrainConfig, DIT_TRAIN_PRESETS, _train_preset(model),
                       {"tokenizer": "(bench)", "batch_size": batch, "name": model})
    C, h, w = ctx.latent_shape()
    K = _classes(size)
    tr = build_dit_trainer(size, (C, h, w), K, cfg.model.class_dropout, cfg.optim, _unit_stats(C), dev,
                           ctx.precision, family=family)
    tr.wrap(ddp=False, compile=ctx.compile)
    data = {"label": torch.randint(0, K, (batch,), device=dev), "mean": torch.randn(batch, C, h, w, device=dev),
            "logvar": torch.randn(batch, C, h, w, device=dev) * 0.1 - 4}
    run, run_eager = _trainer_steps(tr, lambda t, rnd: t.step(lambda: data, rnd), dev)
    params = sum(p.numel() for p in tr.model.parameters() if p.requires_grad)
    return Workload("", batch, run, run_eager, ctx.compile, params,
                    {"model": model, "family": family, "size": size, "latent_shape": [C, h, w], "latents": "cache",
                     "objective": tr.objective, "adamw": optimizer_impl(tr.opt)})


def _generator_sample_workload(ctx: Context, batch: int, model: str) -> Workload:
    """One guided sampling step of MODEL (CFG, w = 1.5, as ``rectok sample --cfg cfg``): an Euler update for the
    velocity families; for the epsilon (diffusion) family one ancestral step of its sampler on the official
    respacing, at the middle timestep, with the guided noise prediction and per-sample step noise."""
    dev = ctx.device
    family, size = parse_model_name(model)
    prediction = GENERATORS[family].prediction
    C, h, _ = ctx.latent_shape()
    K = _classes(size)
    net = build_generator(family, size, C, h, K).eval().requires_grad_(False).to(dev)
    x = torch.randn(batch, C, h, h, device=dev)
    y = torch.arange(batch, device=dev) % K

    def velocity(compiled: bool):
        return build_velocity(RowPadded(maybe_compile(net, compiled)), "cfg", CFG_SCALE, net.null_class,
                              prediction=prediction, channels=C)

    if prediction == "epsilon":
        scheduler = ddpm_scheduler(DDPM_STEPS)
        t = int(scheduler.timesteps[len(scheduler.timesteps) // 2])
        gens = step_generators(torch.arange(batch), 0)
        tt = torch.full((batch,), float(t), device=dev)
        sampler, where = f"ddpm ({DDPM_STEPS} respaced steps), one step", {"timestep": t}

        def update(v):
            return scheduler.step(v(x, tt, y).float(), t, x, generator=gens).prev_sample
    else:
        grid = torch.tensor(SAMPLE_T, device=dev)
        sampler, where = "euler, one update", {"t": list(SAMPLE_T)}

        def update(v):
            return sample_ode(v, x, y, grid)

    def step(v):
        def run():
            with torch.no_grad(), autocast(dev, ctx.precision):
                return update(v)
        return run

    settings = {"model": model, "family": family, "size": size, "latent_shape": [C, h, h], "guidance": "cfg",
                "scale": CFG_SCALE, "sampler": sampler, **where}
    return Workload("", batch, step(velocity(ctx.compile)), step(velocity(False)), ctx.compile,
                    sum(p.numel() for p in net.parameters()), settings)


def build_workload(ctx: Context, name: str, batch: int, model: str | None = None) -> Workload:
    if name == "generator-train":
        w = _generator_train_workload(ctx, batch, model or "")
    elif name == "generator-sample":
        w = _generator_sample_workload(ctx, batch, model or "")
    elif name in ("tokenizer-gan", "tokenizer-nogan"):
        w = _tokenizer_workload(ctx, batch, "stage1", gan=name == "tokenizer-gan")
    elif name == "decoder-ft":
        w = _tokenizer_workload(ctx, batch, "decoder-ft", gan=None)
    elif name in ("dit-cached", "dit-online"):
        w = _dit_workload(ctx, batch, online=name == "dit-online")
    elif name in ("sample-cfg", "sample-autoguidance"):
        w = _sample_workload(ctx, batch, "cfg" if name == "sample-cfg" else "autoguidance")
    else:
        w = _inference_workload(ctx, batch, name)
    w.name = name
    return w

