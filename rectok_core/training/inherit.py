"""Settings a command takes from the checkpoint it is given, and the preset choice of a new tokenizer run.

A command that starts from a tokenizer checkpoint (``finetune-decoder``, ``cache-latents``, ``train-dit``, ``eval``,
``probe-flow``) uses that tokenizer's preset, image size and training data unless told otherwise, and says so in
one line (``using preset tiny, data digits, image size 32 from TOK.pt``). The image size is always the
tokenizer's (its token grid is fixed); preset and data fill only what the flags (or ``--config``) leave unset.

Paths are stored absolute (:func:`absolute_paths`): a run's ``config.json`` and checkpoints name the data, the
tokenizer and the weight files so that ``eval`` or ``probe-flow`` started from another folder find them.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rectok_core.checkpoints import open_checkpoint
from rectok_core.checkpoints.families import DEFAULT_IMAGE_SIZE, rectok_source
from rectok_core.config import (
    build_config,
    check_choices,
    check_numbers,
    flat_fields,
    from_dict,
    from_flags,
    resume_config,
    set_path,
)
from rectok_core.data.datasets import evaluation_split
from rectok_core.data.files import KEYWORD_SPECS, absolute_spec
from rectok_core.errors import RectokError
from rectok_core.metrics.config import ProbeConfig
from rectok_core.models.tokenizer import TokenizerModelConfig
from rectok_core.training.config import FINETUNE_INITS, FINETUNE_PRESETS, TOKENIZER_PRESETS, FinetuneConfig, TokenizerTrainConfig
from rectok_core.training.dit_config import DIT_TRAIN_PRESETS, DiTTrainConfig
from rectok_core.training.init import open_resume_from
from rectok_core.training.rundir import RunDir

#: Options naming an input that exists (data specs, checkpoints, weight files): made absolute when found here.
PATH_OPTIONS = frozenset({"data", "train_data", "val_data", "tokenizer", "ref_stats", "ref_data", "teacher_weights",
                          "lpips_vgg", "convnext_weights", "inception_weights", "resume_from"})
#: Options naming a folder a run creates when missing: always made absolute.
NEW_PATH_OPTIONS = frozenset({"cache_latents", "stats_dir"})


def absolute_paths(overrides: dict[str, Any]) -> dict[str, Any]:
    """``overrides`` (flat option names) with the path options made absolute (:func:`absolute_spec`: keywords such
    as ``digits`` and Hub ids ``owner/name`` stay as written), so the saved configuration works from any folder."""
    out = dict(overrides)
    for k, v in overrides.items():
        if isinstance(v, str) and v:
            if k in PATH_OPTIONS:
                out[k] = absolute_spec(v)
            elif k in NEW_PATH_OPTIONS:
                out[k] = os.path.abspath(v)
    return out


# tokenizer preset → the DiT^DH preset made for its latents (others: the DiT default, the paper's XL)
DIT_PRESET_FOR_TOKENIZER = {"tiny": "tiny", "small64": "mini"}


@dataclass
class TokenizerSettings:
    """What a tokenizer checkpoint was trained with: its preset, training data and image size."""
    path: str
    preset: str | None
    data: str | None
    image_size: int
    model: dict | None = None  # the checkpoint's model section (what ``finetune-decoder`` trains)

    @classmethod
    def of(cls, path: str | Path) -> TokenizerSettings:
        source = rectok_source(path)
        if source is None:  # FAMILY:SOURCE of another family: nothing recorded but its default image size
            return cls(str(path), None, None, DEFAULT_IMAGE_SIZE)
        c = open_checkpoint(source, "tokenizer")["config"]
        return cls(str(path), c.get("preset"), (c.get("run") or {}).get("data") or None,
                   int(c["model"]["image_size"]), dict(c["model"]))


def inherit(overrides: dict[str, Any], src: TokenizerSettings, presets: dict | None = None,
            preset_for: dict[str, str] | None = None, data_key: str | None = "data", eval_split: str | None = None,
            eval_split_folder: bool = False) -> str:
    """Fill ``overrides`` (flat option names; None or "" = not given) with the preset (mapped through
    ``preset_for`` when given; only one that ``presets`` has) and the data (option ``data_key``) of the tokenizer
    ``src``. With ``eval_split`` (the option naming the evaluation split: its name, or with ``eval_split_folder`` its
    folder) unset and data with ``train/`` and ``test/`` but no ``val/``, that option is set to the one evaluation
    split there is. Returns the line that says what was taken, e.g. ``using preset tiny, data digits, image size 32
    from TOK.pt`` (``; evaluating its test/ split (DIR has no val/)``)."""
    taken = []
    if presets is not None and not overrides.get("preset") and src.preset:
        preset = (preset_for or {}).get(src.preset) if preset_for is not None else src.preset
        if preset in presets:
            overrides["preset"] = preset
            taken.append(f"preset {preset}")
    if data_key and not overrides.get(data_key) and src.data:
        overrides[data_key] = src.data
        lost = not os.path.isabs(src.data) and absolute_spec(src.data) == src.data and src.data not in KEYWORD_SPECS
        taken.append(f"data {src.data}" + (" (a path relative to the folder the training ran in, not found from "
                                           "here: give --data)" if lost else ""))
    taken.append(f"image size {(overrides.get('image_size') if src.model is None else None) or src.image_size}")
    line = f"using {', '.join(taken)} from {src.path}"
    data = overrides.get(data_key or "data")
    if eval_split and not overrides.get(eval_split) and data:
        split, why = evaluation_split(data)
        if why:
            overrides[eval_split] = os.path.join(data, split) if eval_split_folder else split
            line += f"; evaluating its {split}/ split ({data} has no val/)"
    return line


def finetune_target(cfg: Any, tokenizer: str, src: TokenizerSettings) -> None:
    """Point a new ``finetune-decoder`` config at its stage-1 checkpoint: ``tokenizer`` (absolute when local) and
    the checkpoint's model without its semantic decoder, so ``--print-config`` shows the model that will train."""
    cfg.tokenizer = absolute_spec(tokenizer)
    cfg.model = from_dict(TokenizerModelConfig, {**(src.model or {}), "teacher_dim": 0})


def check_tokenizer_preset(overrides: dict[str, Any]) -> None:
    """A new ``train-tokenizer`` run without ``--preset`` gets the base preset (the paper's 256-px model); with no
    ``--data`` either it would train that on the 8×8 built-in digits with the DINOv3 teacher, so ask for a choice."""
    if overrides.get("preset") or overrides.get("resume") or overrides.get("resume_from"):
        return
    if not overrides.get("data"):
        raise RectokError("no --preset and no --data: the base preset trains the paper's 256-px model (DINOv3 "
                          "teacher) on --data DIR, an ImageNet-style folder; for the built-in digits pick "
                          "--preset tiny")


def resolve_run(cls: type, presets: dict, overrides: dict[str, Any], kind: str, default_preset: str = "base") -> Any:
    """A training command's config: defaults → preset → flags for a new run; for ``--resume`` the config saved in
    ``--out``'s latest checkpoint plus the flags that may change (others must match)."""
    overrides = absolute_paths(overrides)
    if check_start(overrides):
        return resume_from_config(cls, overrides, kind, STAGES.get(cls))
    given = overrides.pop("preset", None)
    cfg = build_config(cls, presets, given or default_preset, dict(overrides))
    if not overrides.get("resume"):
        return cfg
    ck = open_checkpoint(RunDir(cfg.run.out, True, False).latest, kind)
    tuned = {k: overrides.pop(k) for k in RESUME_OPTIM if overrides.get(k) is not None}
    _keep_saved_relative(cls, ck["config"], overrides)
    cfg = resume_config(cls, ck["config"], {**overrides, "preset": given})  # another --preset is refused
    return retune(cls, cfg, tuned)


#: The tokenizer stage each config's command continues (``--resume-from``).
STAGES = {TokenizerTrainConfig: "stage1", FinetuneConfig: "decoder-ft"}


def check_start(overrides: dict[str, Any]) -> bool:
    """One start per run: ``--resume``, ``--resume-from`` and a checkpoint ``--init`` exclude each other. Returns
    whether the run continues ``--resume-from`` (``init``, a path, is made absolute here)."""
    init = overrides.get("init")
    given = [name for name, on in (("--resume", overrides.get("resume")), ("--resume-from", overrides.get("resume_from")),
                                   ("--init", init and init not in FINETUNE_INITS)) if on]
    if len(given) > 1:
        raise RectokError(f"give one of {' and '.join(given)}: each says where the run starts")
    if init and init not in FINETUNE_INITS:
        overrides["init"] = absolute_spec(init)
    return bool(overrides.get("resume_from"))


def resume_from_config(cls: type, overrides: dict[str, Any], kind: str, stage: str | None = None,
                       moved: tuple[str, ...] = ()) -> Any:
    """``--resume-from FILE``: the config saved in FILE (another run of this command) plus the flags that may change
    on a resume (``moved``: paths that may point elsewhere), continued in the new ``--out``."""
    src, out = overrides.pop("resume_from"), overrides.pop("out", None)
    if not out:
        raise RectokError("--resume-from needs --out: a new folder for the continued run (the source run's folder "
                          "is never written)")
    ck = open_resume_from(src, kind, out, stage)
    given = overrides.pop("preset", None)
    kept = {k: overrides.pop(k) for k in moved if overrides.get(k) is not None}
    tuned = {k: overrides.pop(k) for k in RESUME_OPTIM if overrides.get(k) is not None}
    _keep_saved_relative(cls, ck["config"], overrides)
    cfg = resume_config(cls, ck["config"], {**overrides, "preset": given})  # another --preset is refused
    cfg.run.out, cfg.run.resume, cfg.run.resume_from = out, False, src
    fields = flat_fields(cls)
    for k, v in kept.items():
        set_path(cfg, fields[k][0], v)
    cfg.validate()
    return retune(cls, cfg, tuned)


def _keep_saved_relative(cls: type, saved: dict, overrides: dict[str, Any]) -> None:
    """A run saved before paths were stored absolute keeps its relative path where the flag names the same place
    (``--resume --teacher-weights w.pth`` is no change from a saved ``w.pth``)."""
    fields = flat_fields(cls)
    for k in PATH_OPTIONS & set(overrides) & set(fields):
        old: Any = saved
        for part in fields[k][0]:
            old = old.get(part) if isinstance(old, dict) else None
        if isinstance(old, str) and old and old != overrides[k] and absolute_spec(old) == overrides[k]:
            overrides[k] = old


#: Optimiser settings a resume may change (the way on after a non-finite loss: a smaller learning rate, a longer
#: warm-up, a tighter clip). The resumed run says which changed and records them in config_history.jsonl.
RESUME_OPTIM = ("lr", "blr", "min_lr", "warmup", "grad_clip", "decay_start", "decay_end")


def retune(cls: type, cfg: Any, tuned: dict[str, Any]) -> Any:
    """``cfg`` (a resumed run's) with the :data:`RESUME_OPTIM` settings in ``tuned`` (flat option names) applied
    and the whole checked again."""
    fields = flat_fields(cls)
    for k, v in tuned.items():
        if k in fields:
            set_path(cfg, fields[k][0], v)
    if tuned:
        check_numbers(cfg)
        cfg.validate()
    return cfg


# ---------------------------------------------------------------------------------------------------------
# Each command's config from its flags: the rules the CLI applies, as library calls. ``overrides`` are flat option
# names (None = not given); ``show`` receives the line saying what was taken from a checkpoint, when it is taken.
# ---------------------------------------------------------------------------------------------------------
def _quiet(line: str) -> None:
    """The default ``show``: say nothing."""


def tokenizer_run_config(overrides: dict[str, Any]) -> Any:
    """``train-tokenizer``: defaults → preset → flags (a preset or data must be chosen), or the resumed run's."""
    check_tokenizer_preset(overrides)
    return resolve_run(TokenizerTrainConfig, TOKENIZER_PRESETS, overrides, "tokenizer")


def finetune_run_config(tokenizer: str, overrides: dict[str, Any], show: Callable[[str], None] = _quiet) -> Any:
    """``finetune-decoder``: a new run takes preset, data and model from the stage-1 checkpoint ``tokenizer``; a
    resumed run keeps its own settings and must fine-tune the same checkpoint."""
    continued = overrides.get("resume") or overrides.get("resume_from")
    src = None if continued else TokenizerSettings.of(tokenizer)
    if src is not None:
        show(inherit(overrides, src, FINETUNE_PRESETS))
    cfg = resolve_run(FinetuneConfig, FINETUNE_PRESETS, overrides, "tokenizer")
    if not continued:
        finetune_target(cfg, tokenizer, src or TokenizerSettings.of(tokenizer))
    elif os.path.abspath(tokenizer) != os.path.abspath(cfg.tokenizer):
        where = cfg.run.resume_from if cfg.run.resume_from and not cfg.run.resume else f"the run in {cfg.run.out}"
        raise RectokError(f"{where} fine-tunes {cfg.tokenizer}, not {tokenizer}")
    return cfg


#: The DiT^DH preset of a ``train-dit`` run without ``--preset`` (the paper's generator).
DIT_DEFAULT_PRESET = "XL"
#: Fields that may point elsewhere on ``train-dit --resume`` (moved files); the tokenizer is checked by its sha256.
DIT_RESUME_PATHS = ("tokenizer", "cache_latents", "stats_dir")


def dit_run_config(overrides: dict[str, Any], show: Callable[[str], None] = _quiet) -> Any:
    """``train-dit``: a new run takes its preset and data from ``--tokenizer`` (then defaults → preset → flags); for
    ``--resume`` the saved config plus the allowed flag changes (the usual ones, the paths of the tokenizer, latent
    cache and statistics folder, and the optimiser settings of :data:`RESUME_OPTIM`)."""
    continued = check_start(overrides)
    if overrides.get("tokenizer") and not overrides.get("resume") and not continued:  # a resumed run keeps its own
        show(inherit(overrides, TokenizerSettings.of(overrides["tokenizer"]), DIT_TRAIN_PRESETS,
                     preset_for=DIT_PRESET_FOR_TOKENIZER))
    overrides = absolute_paths(overrides)  # the saved config works from any folder
    if continued:
        return resume_from_config(DiTTrainConfig, overrides, "dit", moved=DIT_RESUME_PATHS)
    given = overrides.pop("preset", None)
    preset = given or DIT_DEFAULT_PRESET
    if not overrides.get("resume"):
        return build_config(DiTTrainConfig, DIT_TRAIN_PRESETS, preset, overrides)
    if preset not in DIT_TRAIN_PRESETS:
        raise RectokError(f"unknown preset {preset!r}; choose one of {', '.join(DIT_TRAIN_PRESETS)}")
    named = preset
    if not given and overrides.get("tokenizer"):  # the folder a new run on this tokenizer defaulted to
        named = DIT_PRESET_FOR_TOKENIZER.get(TokenizerSettings.of(overrides["tokenizer"]).preset or "", preset)
    named = named if named in DIT_TRAIN_PRESETS else preset
    out = overrides.get("out") or DIT_TRAIN_PRESETS[named].get("run", {}).get("out") or DiTTrainConfig().run.out
    ck = open_checkpoint(RunDir(out, True, False).latest, "dit")
    moved = {k: overrides.pop(k) for k in DIT_RESUME_PATHS if overrides.get(k) is not None}
    tuned = {k: overrides.pop(k) for k in RESUME_OPTIM if overrides.get(k) is not None}
    cfg = resume_config(DiTTrainConfig, ck["config"], {**overrides, "preset": given})  # another --preset: refused
    fields = flat_fields(DiTTrainConfig)
    for k, v in moved.items():
        set_path(cfg, fields[k][0], v)
    cfg.validate()
    return retune(DiTTrainConfig, cfg, tuned)  # a smaller --lr etc. after a non-finite loss


def from_tokenizer(cls: type, tokenizer: str, overrides: dict[str, Any], show: Callable[[str], None] = _quiet,
                   **how: Any) -> Any:
    """The config ``cls`` (no presets) of a command reading the tokenizer checkpoint ``tokenizer`` (``eval``,
    ``cache-latents``): the flags, with the data :func:`inherit` takes (``how``: its keyword options) filled in."""
    show(inherit(overrides, TokenizerSettings.of(tokenizer), **how))
    return from_flags(cls, overrides)


def probe_config(checkpoints: list[str], overrides: dict[str, Any], show: Callable[[str], None] = _quiet) -> Any:
    """``probe-flow``: the flags, with the data (and its evaluation split) of the first checkpoint filled in."""
    if overrides.get("t_grid") is not None and overrides.get("t_steps") is not None:
        raise RectokError("give --t-grid or --t-steps, not both")
    overrides = absolute_paths(overrides)  # probe.json names its data wherever it is read from
    both_given = overrides.get("train_data") and overrides.get("val_data")  # else --data fills the other side
    recorded = next((s for s in map(rectok_source, checkpoints) if s is not None), None)  # FAMILY:SOURCE records none
    if recorded is not None:
        show(inherit(overrides, TokenizerSettings.of(recorded), data_key=None if both_given else "data",
                     eval_split="val_data", eval_split_folder=True))
    cfg = ProbeConfig(**{k: v for k, v in overrides.items() if v is not None})
    check_choices(cfg)
    cfg.validate()
    return cfg
