"""The settings of ``rectok bench`` (:class:`BenchConfig`, its workloads) and of its GPU acceptance run
(:class:`AcceptanceConfig`), without torch: the CLI help reads them; the measurements are in
:mod:`rectok_core.tools.bench` and :mod:`rectok_core.tools.acceptance`."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rectok_core.config import device_option, device_spec, opt, positive, precision_option
from rectok_core.errors import RectokError
from rectok_core.models.generators import GENERATORS, model_names, parse_model_name
from rectok_core.training.config import TOKENIZER_PRESETS
from rectok_core.training.dit_config import DIT_TRAIN_PRESETS
from rectok_core.utils.runtime import PRECISIONS

WORKLOADS: dict[str, str] = {
    "tokenizer-gan": "stage-1 tokenizer training step, GAN on (teacher, encoder, both decoders, all losses, "
                     "AdamW, EMA, discriminator step)",
    "tokenizer-nogan": "stage-1 tokenizer training step, GAN off",
    "decoder-ft": "decoder fine-tuning step (frozen encoder; the finetune-decoder preset's losses)",
    "dit-cached": "DiT^DH training step from cached posterior moments",
    "dit-online": "DiT^DH training step with the tokenizer encoding the images in the step",
    "sample-cfg": "one Euler sampling step with classifier-free guidance (w = 1.5, doubled batch)",
    "sample-autoguidance": "one Euler sampling step with AutoGuidance (w = 1.29, smaller guide DiT)",
    "encode": "tokenizer encode (posterior moments) of a batch of images",
    "decode": "tokenizer decode of a batch of latents to images",
    "probe-features": "probe-flow features: encode + mean pooling of a batch of images",
}

#: The generator-family workloads, one record per ``--models`` model; not part of ``all`` (``generators`` = both).
GENERATOR_WORKLOADS: dict[str, str] = {
    "generator-train": "training step of each --models generator from cached posterior moments (its family's "
                       "objective, AdamW, EMA)",
    "generator-sample": "one sampling step of each --models generator with classifier-free guidance (w = 1.5, "
                        "doubled batch): an Euler update, or for the DiT family one step of its ancestral "
                        "diffusion sampler",
}


@dataclass
class BenchConfig:
    """``rectok bench``: time the training, sampling and inference steps on random weights."""
    tokenizer_preset: str = opt("auto", "tokenizer preset (auto: base on CUDA, tiny on CPU); also sets the "
                                        "DiT's latent shape")
    dit_preset: str = opt("auto", "DiT^DH preset: S, B, L, XL or tiny (auto: XL on CUDA, tiny on CPU)")
    guide_preset: str = opt("auto", "AutoGuidance guide preset (auto: S for B/L/XL, tiny for S/tiny)")
    batch_sizes: str = opt("", "comma-separated batch sizes, each workload timed at each (empty: each "
                               "workload's default: the presets' training batch, 256 for sampling, 64 for "
                               "encode/decode, 128 for probe features)", aliases=("--batch-size",))
    workloads: str = opt("all", "comma-separated workloads, or all: " + ", ".join(WORKLOADS) + "; generators: "
                                + ", ".join(GENERATOR_WORKLOADS) + " (not in all)")
    models: str = opt("auto", "comma-separated generators of the generator workloads, FAMILY-SIZE or official "
                              "names (e.g. dit-dh-xl,lightningdit-xl,sit-xl,dit-xl); auto: every family's xl on "
                              "CUDA, tiny on CPU")
    timed_steps: int = opt(20, "timed steps per workload (img/s from their median)")
    warmup: int = opt(5, "untimed warm-up steps per workload (torch.compile compiles here)")
    device: str = device_option()
    precision: str = precision_option()
    compile: bool | None = opt(None, "torch.compile what the commands compile: training steps and sampling "
                                     "(auto: on CUDA, off on CPU)", flag_type=bool)
    out: str = opt("bench.json", "JSON result file")

    def validate(self) -> None:
        positive("timed_steps", self.timed_steps)
        if self.warmup < 0:
            raise RectokError(f"--warmup must be >= 0, got {self.warmup}")
        if self.precision not in PRECISIONS:
            raise RectokError(f"--precision {self.precision!r}: choose one of auto, bf16, fp32")
        device_spec("device", self.device)
        if self.tokenizer_preset != "auto" and self.tokenizer_preset not in TOKENIZER_PRESETS:
            raise RectokError(f"unknown --tokenizer-preset {self.tokenizer_preset!r}; choose one of auto, "
                              f"{', '.join(TOKENIZER_PRESETS)}")
        for flag, value in (("--dit-preset", self.dit_preset), ("--guide-preset", self.guide_preset)):
            if value != "auto" and value not in DIT_TRAIN_PRESETS:
                raise RectokError(f"unknown {flag} {value!r}; choose one of auto, {', '.join(DIT_TRAIN_PRESETS)}")
        workloads = self.workload_list()
        self.batch_list()
        if self.models.strip() != "auto":
            if not any(w in GENERATOR_WORKLOADS for w in workloads):
                raise RectokError("--models sets the models of the generator workloads: add --workloads generators "
                                  "(or generator-train, generator-sample)")
            self.model_list(cuda=False)

    def workload_list(self) -> list[str]:
        """The workloads in run order: ``all`` = :data:`WORKLOADS`, ``generators`` = :data:`GENERATOR_WORKLOADS`."""
        names = [w.strip() for w in self.workloads.split(",") if w.strip()]
        if not names:
            raise RectokError("--workloads is empty: give a comma-separated list or all")
        out: list[str] = []
        for w in names:
            if w == "all":
                out += WORKLOADS
            elif w == "generators":
                out += GENERATOR_WORKLOADS
            elif w in WORKLOADS or w in GENERATOR_WORKLOADS:
                out.append(w)
            else:
                raise RectokError(f"unknown workload {w!r}; choose from all, {', '.join(WORKLOADS)}, generators, "
                                  f"{', '.join(GENERATOR_WORKLOADS)}")
        return list(dict.fromkeys(out))

    def model_list(self, cuda: bool) -> list[str]:
        """The generator workloads' models as rectok names (``sit-xl``); ``auto``: every registered family at
        ``xl`` on CUDA, ``tiny`` on CPU. An unknown name is a one-line error listing the known ones."""
        names = [m.strip() for m in self.models.split(",") if m.strip()]
        if not names:
            raise RectokError("--models is empty: give comma-separated generator names or auto")
        if names == ["auto"]:
            size = "xl" if cuda else "tiny"
            return [family.model_name(size) for family in GENERATORS.values() if size in family.sizes]
        out = []
        for m in names:
            try:
                out.append("-".join(parse_model_name(m)))
            except RectokError:
                raise RectokError(f"unknown --models entry {m!r}; choose from {', '.join(model_names())}") from None
        return list(dict.fromkeys(out))

    def batch_list(self) -> list[int]:
        """The batch sizes of ``--batch-sizes`` ([] = each workload's default)."""
        out = []
        for part in (p.strip() for p in self.batch_sizes.split(",")):
            if not part:
                continue
            try:
                b = int(part)
            except ValueError:
                raise RectokError(f"--batch-sizes {self.batch_sizes!r}: expected comma-separated integers") from None
            if b < 1:
                raise RectokError(f"--batch-sizes: every batch size must be positive, got {b}")
            out.append(b)
        return list(dict.fromkeys(out))


#: The parts of an acceptance run, in order.
PARTS = ("cuda_tests", "bench", "real_run")


@dataclass
class AcceptanceConfig:
    """``rectok bench --acceptance``. Zero / empty values mean "the device's default" (CUDA: the full sizes and
    :data:`~rectok_core.tools.acceptance.CUDA_BUDGET_S`; CPU: tiny sizes and
    :data:`~rectok_core.tools.acceptance.CPU_BUDGET_S`)."""
    out: str = "acceptance"          # output folder: acceptance.json and logs/
    device: str = "auto"
    budget_s: float = 0.0            # wall-clock budget of the whole call
    timed_steps: int = 0             # bench: timed steps per workload (CUDA 10, CPU 2)
    warmup: int = 0                  # bench: warm-up steps per workload (CUDA 3, CPU 1)
    train_steps: int = 0             # real run: tokenizer steps (CUDA 300, CPU 20)
    dit_steps: int = 0               # real run: DiT steps (CUDA 100, CPU 10)
    sample_images: int = 0           # real run: images sampled (CUDA 256, CPU 32)
    tests: str = ""                  # CUDA test folder (default: the repository's tests/cuda)
    parts: str = "cuda_tests,bench,real_run"

    def part_list(self) -> list[str]:
        names = [p.strip() for p in self.parts.split(",") if p.strip()]
        for p in names:
            if p not in PARTS:
                raise RectokError(f"unknown acceptance part {p!r}; choose from {', '.join(PARTS)}")
        return names



@dataclass
class AcceptanceFlags:
    """The options ``rectok bench`` adds for the acceptance run; its ``--out``, ``--device``, ``--timed-steps`` and
    ``--warmup`` are the bench's (:func:`acceptance_config`)."""
    acceptance: bool = opt(False, "run the GPU acceptance instead (CUDA tests, the three target workloads and "
                                  "LightningDiT-XL's training and sampling steps, a short real run); --out is then "
                                  "a folder (default: acceptance)")
    acceptance_budget: float = opt(0.0, "with --acceptance: wall-clock budget in seconds (0: 520 on CUDA, 110 on CPU)")
    acceptance_parts: str = opt(",".join(PARTS), "with --acceptance: the parts to run")

    def validate(self) -> None:
        pass


def acceptance_config(bench: dict[str, Any], flags: AcceptanceFlags) -> AcceptanceConfig:
    """The acceptance run that ``rectok bench --acceptance`` asks for: ``bench`` holds the bench options given (flat
    names; None: not given), of which ``out`` (default: ``acceptance``), ``device``, ``timed_steps`` and ``warmup``
    apply (not given: the device's defaults)."""
    cfg = AcceptanceConfig(out=bench.get("out") or "acceptance", device=bench.get("device") or "auto",
                           budget_s=flags.acceptance_budget, timed_steps=bench.get("timed_steps") or 0,
                           warmup=bench.get("warmup") or 0, parts=flags.acceptance_parts)
    cfg.part_list()
    return cfg
