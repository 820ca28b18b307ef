"""Importing the official RecTok checkpoints (recipe §12) as ordinary rectok checkpoints.

An official file is a torch pickle ``{"model", "model_ema", "optimizer", "loss_scaler", "epoch", "args", ...}``.
It is read with ``torch.load(weights_only=True)``, allow-listing only the container classes such files hold
(:data:`SAFE_GLOBALS`): a pickle naming anything else (``os.system`` ...) is refused before any of it runs.

What the file is comes from its keys and shapes: a tokenizer (stage 1 when it has a semantic decoder, decoder
fine-tuned otherwise, recipe §3.2) or a DiT^DH (trunk and head widths/depths). Attention heads cannot be read from
weights: they come from ``--heads``, else from the model the file's ``args`` name, else from the official size
tables (recipe §1.1, §4.1); any other width without ``--heads`` is a one-line error naming the option. A model
family the importer learns later follows the same rule (:func:`parse_heads`, :func:`_heads`). Tokenizer keys are
renamed (:func:`rename_tokenizer_key`); DiT keys already match, less the persisted RoPE tables. Loading is strict:
any key missing, left over or of the wrong shape is a one-line error.

The result has the structure ``train-tokenizer`` / ``finetune-decoder`` / ``train-dit`` write, so every command
takes it. The chosen weights (``model_ema`` by default, what the official evaluation uses) fill the EMA slot, which
every command reads by default. A tokenizer imported with ``model_ema`` keeps the file's ``model`` in its raw slot,
so that ``finetune-decoder`` starts as the official run (recipe §3.3); otherwise (``--weights raw``, a DiT^DH) the
chosen weights fill both slots (stored once: the tensors are shared).
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import os
import pathlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rectok_core.checkpoints import load_tokenizer
from rectok_core.config import build_config, choice, settings, to_dict
from rectok_core.errors import CheckpointError, RectokError
from rectok_core.interop.config import KINDS, ImportOfficialConfig
from rectok_core.interop.official_generators import detect_family, import_generator
from rectok_core.interop.stats import compute_or_read_stats, read_classes
from rectok_core.models.dit import DIT_PRESETS, DiTConfig, DiTDH
from rectok_core.models.tokenizer import RecTok, TokenizerModelConfig
from rectok_core.training.config import FINETUNE_PRESETS, TOKENIZER_PRESETS, FinetuneConfig, TokenizerTrainConfig
from rectok_core.training.dit_config import DIT_TRAIN_PRESETS, DiTTrainConfig
from rectok_core.utils import checkpoint, files

logger = logging.getLogger(__name__)


#: ImageNet-1k train images / the official global batch of 1024: optimizer steps per epoch (recipe §3.1, §4.5).
STEPS_PER_EPOCH = 1_281_167 // 1024

#: The official transformer size table (recipe §1.1, the official ``SIZE_DICT``): name → (width, heads).
OFFICIAL_SIZES = {"tiny": (192, 4), "small": (512, 8), "base": (768, 12), "large": (1024, 16), "xl": (1152, 16),
                  "huge": (1280, 16)}

#: Attention heads of the official size table, by width (each width is one size).
OFFICIAL_HEADS = {w: h for w, h in OFFICIAL_SIZES.values()}

#: The official tokenizer models by ``args.model``: the size of encoder and pixel decoder (recipe §1).
OFFICIAL_TOKENIZERS = {"rectok_BB": "base"}

#: The official DiT^DH models by ``args.model``: (rectok preset, trunk (width, depth, heads), head (width, depth,
#: heads)) (recipe §4.1).
OFFICIAL_DITS = {"DiTDDT_s": ("S", (384, 12, 6), (2048, 2, 16)), "DiTDDT_b": ("B", (768, 12, 12), (2048, 2, 16)),
                 "DiTDDT_l": ("L", (1024, 24, 16), (2048, 2, 16)), "DiTDDT_xl": ("XL", (1152, 28, 16), (2048, 2, 16))}

#: The classes an official container may hold besides tensors and plain containers (``args`` and its values).
SAFE_GLOBALS: list[Any] = [argparse.Namespace, pathlib.PosixPath, pathlib.PurePosixPath, np.dtype]
for _name in ("numpy._core.multiarray.scalar", "numpy.core.multiarray.scalar"):
    _mod, _, _attr = _name.rpartition(".")
    try:
        SAFE_GLOBALS.append(getattr(__import__(_mod, fromlist=[_attr]), _attr))
    except (ImportError, AttributeError):
        pass
SAFE_GLOBALS += [type(np.dtype(t)) for t in ("float64", "float32", "int64", "int32", "bool")]

# persisted RoPE tables of the official DiT (rectok recomputes them: non-persistent buffers)
_DIT_DROPPED = re.compile(r"^(enc|dec)_feat_rope\.freqs_(cos|sin)$")


def read_official(path: str | os.PathLike[str]) -> dict:
    """The container of an official checkpoint, unpickled safely; one-line errors for anything else."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"official checkpoint not found: {path}")
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            try:
                obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as e:
                if "mmap" not in str(e):
                    raise
                obj = torch.load(path, map_location="cpu", weights_only=True)  # legacy (non-zip) format
    except Exception as e:  # noqa: BLE001 - every failure is reported in one line
        unsafe = _unsafe_globals(path)
        if unsafe:
            raise CheckpointError(f"{path} is refused: its pickle calls {', '.join(unsafe[:3])}, outside what an "
                                  f"official checkpoint holds (nothing in it was run)") from None
        raise CheckpointError(f"cannot read {path}: {checkpoint.read_error(e)}") from None
    if isinstance(obj, dict) and obj.get("format") == checkpoint.FORMAT:
        raise CheckpointError(f"{path} is already a rectok checkpoint: use it directly")
    if not isinstance(obj, dict) or not any(isinstance(obj.get(k), dict) for k in ("model", "model_ema")):
        raise CheckpointError(f"{path} is not an official RecTok checkpoint (no 'model' / 'model_ema' weights)")
    return obj


def _unsafe_globals(path: Path) -> list[str]:
    try:
        allowed = {f"{g.__module__}.{g.__qualname__}" for g in SAFE_GLOBALS}
        return [g for g in torch.serialization.get_unsafe_globals_in_checkpoint(path) if g not in allowed]
    except Exception:  # noqa: BLE001 - not a zip checkpoint: nothing more to say
        return []


def rename_tokenizer_key(key: str) -> str | None:
    """Official tokenizer key → rectok's (None: dropped, the frozen teacher). ``aux`` → ``sem`` first (older
    files); then ``positional_embedding`` → ``pos_embed``, ``encoder.patch_embed.0`` → ``encoder.patch_embed``,
    ``transformer.N`` → ``blocks.N``, ``decoder.ffn.1`` → ``decoder.head``, ``sem_decoders.<teacher>`` →
    ``sem_decoder`` (recipe §12)."""
    key = key.removeprefix("module.").replace("aux", "sem")
    if key.startswith("sem_foundation_models."):
        return None
    key = key.replace("positional_embedding", "pos_embed")
    key = re.sub(r"^encoder\.patch_embed\.0\.", "encoder.patch_embed.", key)
    key = re.sub(r"(^|\.)transformer\.(\d+)\.", r"\1blocks.\2.", key)
    key = re.sub(r"^decoder\.ffn\.1\.", "decoder.head.", key)
    return re.sub(r"^sem_decoders\.[^.]+\.", "sem_decoder.", key)


def tokenizer_state(raw: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An official tokenizer state dict under rectok's names (one semantic decoder at most)."""
    sem = [k.replace("aux", "sem") for k in raw]
    teachers = {k.split(".")[1] for k in sem if k.startswith("sem_decoders.")}
    if len(teachers) > 1:
        raise CheckpointError(f"the tokenizer has semantic decoders for {len(teachers)} teachers "
                              f"({', '.join(sorted(teachers))}); rectok's has one")
    out = {}
    for k, v in raw.items():
        new = rename_tokenizer_key(k)
        if new is not None:
            out[new] = v
    return out


def parse_heads(heads: str | None, most: int, option: str) -> tuple[int, ...]:
    """``--heads`` as integers: ``"2"`` → (2,), ``"6,16"`` → (6, 16); empty or None → (). At most ``most`` values,
    each positive; ``option`` is how the error spells the option."""
    if not heads:
        return ()
    try:
        out = tuple(int(v) for v in str(heads).split(","))
    except ValueError:
        raise RectokError(f"--heads {heads!r}: expected {option}") from None
    if not 0 < len(out) <= most or min(out) <= 0:
        raise RectokError(f"--heads {heads!r}: expected {option}")
    return out


def _args(container: dict) -> dict[str, Any]:
    args = container.get("args")
    return vars(args) if isinstance(args, argparse.Namespace) else args if isinstance(args, dict) else {}


def _heads(width: int, what: str, named: str | None, given: int | None, option: str) -> int:
    """Attention heads of a tokenizer transformer ``width`` wide: ``given`` (``--heads``), else those of the size
    ``named`` by the checkpoint's ``args`` when its width is this one, else the official size table's. A width
    outside the table is never guessed: without ``--heads`` it is a one-line error naming the option."""
    if given:
        if width % given or (width // given) % 4:
            raise RectokError(f"--heads {given}: {what} is {width} wide, which {given} heads do not split into head "
                              f"dimensions divisible by 4")
        return given
    if named in OFFICIAL_SIZES and OFFICIAL_SIZES[named][0] == width:
        return OFFICIAL_SIZES[named][1]
    if width in OFFICIAL_HEADS:
        return OFFICIAL_HEADS[width]
    said = f" (its args name size {named}, {OFFICIAL_SIZES[named][0]} wide)" if named in OFFICIAL_SIZES else ""
    known = ", ".join(map(str, sorted(OFFICIAL_HEADS)))
    raise CheckpointError(f"{what} is {width} wide{said}, outside the official size table ({known}): give its "
                          f"attention heads with {option}")


def _count(state: dict, prefix: str) -> int:
    return len({k[len(prefix):].split(".")[0] for k in state if k.startswith(prefix)})


def _shape(state: dict, key: str, what: str) -> tuple[int, ...]:
    if key not in state:
        raise CheckpointError(f"the {what} has no {key} (missing key)")
    return tuple(state[key].shape)


def tokenizer_config(state: dict[str, torch.Tensor], args: dict[str, Any] | None = None,
                     heads: str | None = None) -> TokenizerModelConfig:
    """The model config of a (renamed) official tokenizer state, from its shapes; the official RoPE variant.

    Attention heads come from ``heads`` (``--heads N`` or ``N,S``: encoder and pixel decoder, semantic decoder),
    else from the sizes the checkpoint's ``args`` name (``model``, ``vit_sem_model_size``), else from the official
    size table by width; a width outside that table without ``--heads`` is a one-line error (never a guess)."""
    args = args or {}
    given = parse_heads(heads, 2, "N or N,S (encoder and pixel decoder heads, semantic decoder heads)")
    n, width = _shape(state, "encoder.pos_embed", "tokenizer")[1:]
    patch = _shape(state, "encoder.patch_embed.weight", "tokenizer")[-1]
    grid = math.isqrt(n)
    named = OFFICIAL_TOKENIZERS.get(str(args.get("model")))
    cfg = TokenizerModelConfig(image_size=grid * patch, patch_size=patch, width=width,
                               depth=_count(state, "encoder.blocks."),
                               heads=_heads(width, "the encoder", named, given[0] if given else None, "--heads N"),
                               dim=_shape(state, "encoder.latent_head.weight", "tokenizer")[0] // 2,
                               rope="official", teacher_dim=0)
    if "sem_decoder.net.0.weight" in state:  # the per-token MLP variant
        cfg.sem_decoder, cfg.teacher_dim = "mlp", _shape(state, "sem_decoder.net.2.weight", "tokenizer")[0]
    elif any(k.startswith("sem_decoder.") for k in state):
        cfg.sem_width = _shape(state, "sem_decoder.pos_embed", "semantic decoder")[-1]
        cfg.sem_depth = _count(state, "sem_decoder.blocks.")
        cfg.sem_heads = _heads(cfg.sem_width, "the semantic decoder", args.get("vit_sem_model_size"),
                               given[1] if len(given) > 1 else None, f"--heads {given[0] if given else 'N'},S")
        cfg.teacher_dim = _shape(state, "sem_decoder.out.weight", "semantic decoder")[0]
    cfg.validate()
    return cfg


def dit_config(state: dict[str, torch.Tensor], args: dict[str, Any] | None = None,
               heads: str | None = None) -> tuple[str | None, DiTConfig]:
    """(preset name or None, DiTConfig) of an official DiT^DH state: widths and depths from its shapes, attention
    heads from ``heads`` (``--heads A,B``: trunk, head), else from the model the checkpoint's ``args`` name, else
    from the official size whose widths and depths these are (recipe §4.1). Any other size without ``--heads`` is a
    one-line error (never a guess). The preset is the rectok one with exactly this architecture, if any."""
    args = args or {}
    given = parse_heads(heads, 2, "A,B (trunk heads, head heads)")
    if len(given) == 1:
        raise RectokError(f"--heads {heads}: a DiT^DH needs two numbers, --heads A,B (trunk heads, head heads)")
    width = _shape(state, "s_embedder.proj.weight", "DiT")[0]
    in_ch, patch = _shape(state, "s_embedder.proj.weight", "DiT")[1:3]
    head_width = _shape(state, "x_embedder.proj.weight", "DiT")[0]
    block = re.compile(r"blocks\.\d+\.adaLN_modulation\.1\.weight")
    widths = [state[k].shape[1] for k in state if block.fullmatch(k)]
    if width == head_width:  # every block is as wide: nothing in the weights marks where the head starts
        raise CheckpointError(f"a DiT^DH whose trunk and head are both {width} wide: which of its {len(widths)} "
                              f"blocks form the head cannot be read from the weights (the official sizes have a "
                              f"2048-wide head), so rectok does not import it")
    depth = widths.count(width)
    head_depth = len(widths) - depth
    shape = ((width, depth), (head_width, head_depth))
    sizes = [OFFICIAL_DITS[n] for n in (str(args.get("model")),) if n in OFFICIAL_DITS] + list(OFFICIAL_DITS.values())
    official = next(((t[2], h[2]) for _, t, h in sizes if ((t[0], t[1]), (h[0], h[1])) == shape), None)
    if given:
        trunk_heads, head_heads = given
    elif official is not None:
        trunk_heads, head_heads = official
    else:
        raise CheckpointError(f"a DiT^DH with widths [{width}, {head_width}] and depths [{depth}, {head_depth}] is no "
                              f"official size ({', '.join(n.removeprefix('DiTDDT_').upper() for n in OFFICIAL_DITS)}): "
                              f"give its attention heads with --heads A,B (trunk, head)")
    grid = math.isqrt(_shape(state, "pos_embed", "DiT")[1])
    try:
        cfg = DiTConfig(width=width, depth=depth, heads=trunk_heads, head_width=head_width, head_depth=head_depth,
                        head_heads=head_heads, in_channels=in_ch, patch_size=patch, input_size=grid * patch,
                        num_classes=_shape(state, "y_embedder.embedding_table.weight", "DiT")[0] - 1,
                        fourier_features=_shape(state, "t_embedder.W", "DiT")[0])
    except ValueError as e:
        raise RectokError(f"--heads {heads}: {e}") from None
    arch = (width, depth, trunk_heads, head_width, head_depth, head_heads)
    preset = next((n for n, p in DIT_PRESETS.items()
                   if (p["width"], p["depth"], p["heads"], p.get("head_width", 2048), p.get("head_depth", 2),
                       p.get("head_heads", 16)) == arch), None)
    return preset, cfg


def detect(state: dict[str, torch.Tensor], kind: str = "auto") -> str:
    """``stage1``, ``decoder-ft`` or ``dit`` for a weights dict (``kind`` overrides the tokenizer stage)."""
    names = {k.removeprefix("module.") for k in state}
    if {"s_embedder.proj.weight", "x_embedder.proj.weight", "final_layer.linear.weight"} <= names:
        found = "dit"
    elif any(k.startswith("encoder.") for k in names) and any(k.startswith("decoder.") for k in names):
        found = "stage1" if any(k.replace("aux", "sem").startswith("sem_decoders.") for k in names) else "decoder-ft"
    else:
        raise CheckpointError("the weights are neither an official RecTok tokenizer nor a DiT^DH (no encoder/decoder "
                              "or s_embedder/x_embedder keys)")
    choice("kind", kind, KINDS)
    if kind != "auto" and (kind == "dit") != (found == "dit"):
        raise CheckpointError(f"--kind {kind}, but the file holds {'a DiT^DH' if found == 'dit' else 'a tokenizer'}")
    return found if kind == "auto" else kind


def select_weights(container: dict, weights: str, src: Path) -> dict[str, torch.Tensor]:
    """``model_ema`` (``ema``) or ``model`` (``raw``), as a flat name → tensor dict."""
    choice("weights", weights, checkpoint.WEIGHTS)
    key = "model_ema" if weights == "ema" else "model"
    state = container.get(key)
    if not isinstance(state, dict):
        raise CheckpointError(f"{src} has no '{key}' weights: use --weights {'raw' if weights == 'ema' else 'ema'}")
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{src}: '{key}' holds non-tensor entries (e.g. {bad[0]}): not a state dict")
    return state


def _fill_frozen(module: torch.nn.Module, state: dict, fallback: dict | None) -> dict:
    """EMA dicts may lack frozen parameters (fixed PE, Fourier frequencies): take those from the raw weights."""
    if not fallback:
        return state
    frozen = [n for n, p in module.named_parameters() if not p.requires_grad and n not in state and n in fallback]
    return {**state, **{n: fallback[n] for n in frozen}}


def _steps(container: dict) -> tuple[int, float | None]:
    epoch = container.get("epoch")
    if isinstance(epoch, (int, np.integer)) and not isinstance(epoch, bool):
        return (int(epoch) + 1) * STEPS_PER_EPOCH, float(int(epoch) + 1)
    return 0, None


def _provenance(src: Path, container: dict, kind: str, weights: str) -> dict[str, Any]:
    args = container.get("args")
    return {"source": src.name, "source_sha256": files.file_sha256(src), "source_bytes": src.stat().st_size,
            "kind": kind, "weights": "model_ema" if weights == "ema" else "model",
            "epoch_index": container.get("epoch"),
            "args": {k: v for k, v in vars(args).items() if isinstance(v, (int, float, str, bool, type(None)))}
            if isinstance(args, argparse.Namespace) else None,
            "pixels": "rectok rounds samples to uint8 (the official code truncates), recipe §11.6"}


@dataclass
class ImportResult:
    out: Path
    kind: str  # stage1 / decoder-ft / dit
    description: str


def import_official(src: str | os.PathLike[str], out: str | os.PathLike[str] | None = None,
                    cfg: ImportOfficialConfig | None = None, **options: Any) -> ImportResult:
    """``rectok import-official``: convert an official file into a rectok checkpoint at ``cfg.out``. ``cfg``: the
    settings (:class:`~rectok_core.interop.config.ImportOfficialConfig`); ``out`` and ``options`` set its fields by
    name. ``heads`` (``--heads``) gives the attention heads of a size outside the official table: ``N`` or ``N,S``
    for a tokenizer, ``A,B`` for a DiT^DH (see :func:`tokenizer_config`, :func:`dit_config`)."""
    cfg = settings(ImportOfficialConfig, cfg, out=out, **options)
    src, out = Path(src), Path(cfg.out)
    container = read_official(src)
    any_state = next(v for k in ("model_ema", "model") if isinstance(v := container.get(k), dict))
    family = detect_family(any_state, _args(container))  # SiT, LightningDiT, DiT (official_generators.py)
    if family is not None:
        if cfg.kind not in ("auto", "dit"):
            raise CheckpointError(f"--kind {cfg.kind}, but the file holds a {family} generator")
        state = select_weights(container, cfg.weights, src)
        step, epoch = _steps(container)
        what = import_generator(src, out, container, state, cfg.weights, family, cfg.tokenizer or None,
                                cfg.latent_stats or None, cfg.data or None, cfg.classes or None,
                                cfg.stats_dir or None, cfg.device, cfg.batch_size, cfg.workers, cfg.heads or None,
                                _args(container), step, epoch, _provenance(src, container, "dit", cfg.weights))
        return ImportResult(out, "dit", f"{what} ({_slot(cfg.weights)})")
    found = detect(any_state, cfg.kind)  # what the file is comes first: then which of its weights
    state = select_weights(container, cfg.weights, src)
    heads = cfg.heads or None
    if found == "dit":
        return _import_dit(src, out, container, state, cfg.weights, cfg.tokenizer or None, cfg.latent_stats or None,
                           cfg.data or None, cfg.classes or None, cfg.stats_dir or None, cfg.device, cfg.batch_size,
                           cfg.workers, heads)
    if cfg.tokenizer or cfg.latent_stats or cfg.data or cfg.classes:
        raise RectokError("--tokenizer, --latent-stats, --data and --classes are for a DiT^DH; this is a tokenizer")
    return _import_tokenizer(src, out, container, state, cfg.weights, found, heads)


def _import_tokenizer(src: Path, out: Path, container: dict, raw: dict, weights: str, stage: str,
                      heads: str | None = None) -> ImportResult:
    state = tokenizer_state(raw)
    if stage == "decoder-ft":
        state = {k: v for k, v in state.items() if not k.startswith("sem_decoder.")}
    mcfg = tokenizer_config(state, _args(container), heads)
    model = RecTok(mcfg, semantic=mcfg.teacher_dim > 0)
    raw_model = container.get("model")
    fallback = tokenizer_state(raw_model) if weights == "ema" and isinstance(raw_model, dict) else None
    checkpoint.load_state_strict(model, _fill_frozen(model, state, fallback), f"{src} ({_slot(weights)})")
    if stage == "stage1":
        cfg = build_config(TokenizerTrainConfig, TOKENIZER_PRESETS, "base", {})
    else:
        cfg = build_config(FinetuneConfig, FINETUNE_PRESETS, "base", {})
        cfg.tokenizer = f"official {src.name}"
    cfg.model, cfg.run.data = mcfg, ""
    sd = raw_sd = model.state_dict()
    if fallback is not None:  # keep `model` too: finetune-decoder's official start reads both (recipe §3.3)
        live = RecTok(mcfg, semantic=mcfg.teacher_dim > 0)
        checkpoint.load_state_strict(live, {k: v for k, v in fallback.items() if k in sd}, f"{src} (model weights)")
        raw_sd = live.state_dict()
    step, epoch = _steps(container)
    ck = {"format": checkpoint.FORMAT, "version": checkpoint.VERSION, "kind": "tokenizer", "stage": stage,
          "config": to_dict(cfg), "step": step, "epoch": epoch, "model": raw_sd, "ema": sd,
          "imported": _provenance(src, container, stage, weights)}
    checkpoint.save_atomic(ck, out)
    what = "stage-1" if stage == "stage1" else "decoder-fine-tuned"
    return ImportResult(out, stage, f"{what} tokenizer, {mcfg.image_size} px, patch {mcfg.patch_size}, width "
                                    f"{mcfg.width}×{mcfg.depth}, {mcfg.dim} latent channels ({_slot(weights)})")


def _slot(weights: str) -> str:
    return "model_ema weights" if weights == "ema" else "model weights"


def _import_dit(src: Path, out: Path, container: dict, raw: dict, weights: str, tokenizer: str | None,
                latent_stats: str | None, data: str | None, classes: str | None, stats_dir: str | None,
                device: str, batch_size: int, workers: int, heads: str | None = None) -> ImportResult:
    if not tokenizer:
        raise RectokError("a DiT^DH needs --tokenizer TOK.pt: the imported tokenizer whose latents it models")
    state = {k.removeprefix("module."): v for k, v in raw.items() if not _DIT_DROPPED.match(k.removeprefix("module."))}
    preset, dcfg = dit_config(state, _args(container), heads)
    model = DiTDH(dcfg)
    fallback = container.get("model") if weights == "ema" else None
    fallback = {k.removeprefix("module."): v for k, v in fallback.items()} if isinstance(fallback, dict) else None
    checkpoint.load_state_strict(model, _fill_frozen(model, state, fallback), f"{src} ({_slot(weights)})")
    tok, tmeta = load_tokenizer(tokenizer, use_ema=True)
    (h, w), C = tok.cfg.grid, tok.cfg.dim
    if (C, h) != (dcfg.in_channels, dcfg.input_size) or h != w:
        raise CheckpointError(f"the DiT models {dcfg.in_channels}×{dcfg.input_size}×{dcfg.input_size} latents, the "
                              f"tokenizer {tokenizer} makes {C}×{h}×{w}")
    stats, names = compute_or_read_stats(tok, tmeta, latent_stats, data, stats_dir, device, batch_size, workers)
    names = read_classes(classes, dcfg.num_classes) if classes else (
        names if names is not None and len(names) == dcfg.num_classes else
        [f"class_{i:04d}" for i in range(dcfg.num_classes)])
    # a size of no rectok preset keeps the DiT default's training settings; its architecture is dit_config
    cfg = build_config(DiTTrainConfig, DIT_TRAIN_PRESETS, preset or DiTTrainConfig().preset,
                       {"tokenizer": os.path.abspath(tokenizer)})
    cfg.run.data = data or ""
    sd = model.state_dict()
    step, epoch = _steps(container)
    ck = {"format": checkpoint.FORMAT, "version": checkpoint.VERSION, "kind": "dit", "config": to_dict(cfg),
          "step": step, "epoch": epoch, "dit_config": dataclasses.asdict(dcfg), "model": sd, "ema": sd,
          "tokenizer": {"path": os.path.abspath(tmeta["path"]), "sha256": tmeta["sha256"], "weights": "ema",
                        "image_size": tok.cfg.image_size, "grid": [h, w], "channels": C},
          "latent_stats": stats.state(), "num_classes": dcfg.num_classes, "classes": names, "latents": "online",
          "imported": _provenance(src, container, "dit", weights)}
    if int(os.environ.get("RANK", "0")) == 0:
        checkpoint.save_atomic(ck, out)
    return ImportResult(out, "dit", f"DiT^DH-{preset or 'custom'} (widths [{dcfg.width}, {dcfg.head_width}], depths "
                                    f"[{dcfg.depth}, {dcfg.head_depth}], heads [{dcfg.heads}, {dcfg.head_heads}]), "
                                    f"{dcfg.num_classes} classes, latent "
                                    f"statistics of {stats.images} images ({_slot(weights)})")
