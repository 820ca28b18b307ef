"""Settings a command takes from the checkpoint it is given, and the preset choice of a new tokenizer run.

A command that starts from a tokenizer checkpoint (``finetune-decoder``, ``cache-latents``, ``train-dit``, ``eval``,
``probe-flow``) uses that tokenizer's preset, image size and training data unless told otherwise, and says so in
one line (``using preset tiny, data digits, image size 32 from TOK.pt``). The image size is always the
tokenizer's (its token grid is fixed); preset and data fill only what the flags (or ``--config``) leave unset.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rectok_core.config import build_config, resume_config
from rectok_core.errors import RectokError

# tokenizer preset → the DiT^DH preset made for its latents (others: the DiT default, the paper's XL)
DIT_PRESET_FOR_TOKENIZER = {"tiny": "tiny", "small64": "mini"}


@dataclass
class TokenizerSettings:
    """What a tokenizer checkpoint was trained with: its preset, training data and image size."""
    path: str
    preset: str | None
    data: str | None
    image_size: int

    @classmethod
    def of(cls, path: str | Path) -> TokenizerSettings:
        from rectok_core.utils import checkpoint

        c = checkpoint.load(path, "tokenizer")["config"]
        return cls(str(path), c.get("preset"), (c.get("run") or {}).get("data") or None,
                   int(c["model"]["image_size"]))


def inherit(overrides: dict[str, Any], src: TokenizerSettings, presets: dict | None = None,
            preset_for: dict[str, str] | None = None, data_key: str | None = "data") -> str:
    """Fill ``overrides`` (flat option names; None or "" = not given) with the preset (mapped through
    ``preset_for`` when given; only one that ``presets`` has) and the data (option ``data_key``) of the tokenizer
    ``src``. Returns the line that says what was taken, e.g. ``using preset tiny, data digits, image size 32 from
    TOK.pt``."""
    taken = []
    if presets is not None and not overrides.get("preset") and src.preset:
        preset = (preset_for or {}).get(src.preset) if preset_for is not None else src.preset
        if preset in presets:
            overrides["preset"] = preset
            taken.append(f"preset {preset}")
    if data_key and not overrides.get(data_key) and src.data:
        overrides[data_key] = src.data
        taken.append(f"data {src.data}")
    taken.append(f"image size {src.image_size}")
    return f"using {', '.join(taken)} from {src.path}"


def check_tokenizer_preset(overrides: dict[str, Any]) -> None:
    """A new ``train-tokenizer`` run without ``--preset`` gets the base preset (the paper's 256-px model); with no
    ``--data`` either it would train that on the 8×8 built-in digits with the DINOv3 teacher, so ask for a choice."""
    if overrides.get("preset") or overrides.get("resume"):
        return
    if not overrides.get("data"):
        raise RectokError("no --preset and no --data: the base preset trains the paper's 256-px model (DINOv3 "
                          "teacher) on --data DIR, an ImageNet-style folder; for the built-in digits pick "
                          "--preset tiny")


def resolve_run(cls: type, presets: dict, overrides: dict[str, Any], kind: str, default_preset: str = "base") -> Any:
    """A training command's config: defaults → preset → flags for a new run; for ``--resume`` the config saved in
    ``--out``'s latest checkpoint plus the flags that may change (others must match)."""
    from rectok_core.training.rundir import RunDir
    from rectok_core.utils import checkpoint

    overrides = dict(overrides)
    given = overrides.pop("preset", None)
    cfg = build_config(cls, presets, given or default_preset, dict(overrides))
    if not overrides.get("resume"):
        return cfg
    ck = checkpoint.load(RunDir(cfg.run.out, True, False).latest, kind)
    return resume_config(cls, ck["config"], {**overrides, "preset": given})  # another --preset is refused
