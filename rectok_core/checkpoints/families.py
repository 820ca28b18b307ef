"""One way to name a tokenizer of any family: ``FAMILY:SOURCE`` (``sd-vae:stabilityai/sd-vae-ft-ema``,
``mar-kl16:kl16.ckpt``, ``va-vae:vavae.pt``, ``rectok:runs/tok/checkpoints/latest.pt``) or, as before, a plain RecTok
checkpoint, export folder or Hub id (the ``rectok`` family).

SOURCE is a local file or folder, or a Hub id (``owner/name[@revision]``) for a family whose library downloads
(diffusers' ``from_pretrained``, cached by huggingface_hub); offline, a Hub id is a one-line error naming the
local form at once (:func:`~rectok_core.utils.env.network_available`, at most ~2 s).
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

import torch

from rectok_core.checkpoints.resolve import HUB_ID
from rectok_core.checkpoints.tokenizer import load_tokenizer
from rectok_core.errors import CheckpointError
from rectok_core.models.families import FAMILIES, Normalization, get_family, register_family
from rectok_core.models.families.kl_files import layout, read_state_dict
from rectok_core.models.families.ldm_kl import DIFFUSERS_CHANNELS, LDM_SHAPES
from rectok_core.utils.env import network_available

RECTOK = "rectok"

#: The default square image size of a family that does not record one (the paper's 256×256 ImageNet).
DEFAULT_IMAGE_SIZE = 256

_FAMILY_PREFIX = re.compile(r"^(?P<family>[a-z][a-z0-9]*(?:-[a-z0-9]+)*):(?P<source>.+)$")


@register_family(RECTOK, "RecTok (train-tokenizer / finetune-decoder, imported official files, export folders)",
                 "a rectok checkpoint, export folder or Hub id", "C x H/p x W/p (p: patch size)",
                 Normalization("per-channel"), hub=True, local_form="FILE or FOLDER")
def _load_rectok(source: str, local: Path | None = None, image_size: int | None = None,
                 device: torch.device | str = "cpu", use_ema: bool = True, revision: str | None = None):
    return load_tokenizer(source, use_ema=use_ema, device=device)


def split_spec(spec: str | Path) -> tuple[str, str]:
    """(family, source) of a tokenizer name: ``FAMILY:SOURCE``, or ``("rectok", spec)`` for a plain name (an
    existing path is always a path, even with a colon in it). An unknown ``FAMILY:`` prefix is a one-line error."""
    s = str(spec)
    m = _FAMILY_PREFIX.match(s)
    if m is None or len(m.group("family")) < 2 or Path(s).exists():
        return RECTOK, s
    get_family(m.group("family"))  # unknown → one line listing the known families
    return m.group("family"), m.group("source")


def is_family_spec(spec: str | Path) -> bool:
    """Whether ``spec`` names a tokenizer of another family than RecTok (``FAMILY:SOURCE``, FAMILY ≠ rectok)."""
    return split_spec(spec)[0] != RECTOK


def rectok_source(spec: str | Path) -> str | None:
    """The RecTok checkpoint ``spec`` names (``rectok:X`` → ``X``; a plain name as is), None for other families."""
    family, source = split_spec(spec)
    return source if family == RECTOK else None


def absolute_spec(spec: str | Path) -> str:
    """``spec`` as a run records it: a local path made absolute (``FAMILY:`` kept for another family), a Hub id as is."""
    family, source = split_spec(spec)
    local = Path(source).expanduser()
    where = str(local.resolve()) if local.exists() else source
    return where if family == RECTOK else f"{family}:{where}"


def source_exists(spec: str | Path) -> bool:
    """Whether the local file or folder ``spec`` names exists (a Hub id: False)."""
    return Path(split_spec(spec)[1]).expanduser().exists()


def _sha256(path: Path) -> str:
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file() and p.suffix != ".md")
    h = hashlib.sha256()
    for f in files:
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def load_any_tokenizer(spec: str | Path, use_ema: bool = True, device: torch.device | str = "cpu",
                       image_size: int | None = None) -> tuple[torch.nn.Module, dict]:
    """The frozen tokenizer ``spec`` names and its metadata, for any family.

    A RecTok name loads exactly as :func:`~rectok_core.checkpoints.load_tokenizer` (same model, same metadata plus
    ``family``). Another family gives its :class:`~rectok_core.models.families.LatentTokenizer` at ``image_size``
    (None or 0: 256 for a resolution-agnostic KL autoencoder, the weights' size for a ViT) and metadata with
    ``family``, ``source``, ``path``, ``sha256`` (of the local file or folder's files; of the name
    ``FAMILY:REPO@REVISION`` for a Hub id), ``step`` None, ``weights`` and ``config`` None. A size the tokenizer
    cannot take (:func:`check_image_size`; a KL autoencoder's non-multiple of its down-sampling) is one line.
    """
    family_name, source = split_spec(spec)
    if family_name == RECTOK:
        try:
            model, meta = load_tokenizer(source, use_ema=use_ema, device=device)
        except CheckpointError as e:
            raise CheckpointError(f"{e}{other_family_hint(source)}") from None
        check_image_size(model, spec, image_size)
        return model, {**meta, "family": RECTOK, "source": source}
    family = get_family(family_name)
    local = Path(source).expanduser() if Path(source).expanduser().exists() else None
    revision = None
    if local is None:
        m = HUB_ID.match(source)
        if not family.hub or m is None or source.lower().endswith((".pt", ".pth", ".ckpt", ".safetensors", ".bin")):
            raise CheckpointError(f"{spec}: no such file or folder ({family_name} takes {family_name}:PATH to a local "
                                  f"{family.local_form.lower()}{', or a Hub id' if family.hub else ''})")
        if not network_available():
            raise CheckpointError(f"{spec}: a Hugging Face Hub id needs the network, which is unavailable (offline): "
                                  f"download it elsewhere (hf download {m.group('repo')} --local-dir DIR) and pass "
                                  f"{family_name}:DIR")
        source, revision = m.group("repo"), m.group("rev")
    model = family.load(source, local=local, image_size=image_size or DEFAULT_IMAGE_SIZE, device=device,
                        revision=revision)
    check_image_size(model, spec, image_size)
    meta = {"family": family_name, "source": source, "path": str(local.resolve()) if local else source,
            "sha256": _sha256(local) if local else hashlib.sha256(f"{family_name}:{source}@{revision}".encode()).hexdigest(),
            "step": None, "weights": "published", "config": None,
            "stage": None, "latent_stats": None, "normalization": family.normalization.describe()}
    return model, meta


def check_image_size(model: torch.nn.Module, spec: str | Path, image_size: int | None) -> None:
    """One line when the tokenizer ``model`` (loaded from ``spec``) does not encode square images of ``image_size``
    (None or 0: its own size): a ViT whose weights fix another size (RecTok, l-DeTok). A KL autoencoder takes any
    multiple of its down-sampling (:func:`load_any_tokenizer` builds it at the size asked)."""
    native = int(model.cfg.image_size)
    if image_size and int(image_size) != native:
        raise CheckpointError(f"{spec} encodes {native}x{native} images only (its weights fix the size): an image "
                              f"size of {image_size} does not fit (use {native}, the default)")


def other_family_hint(source: str) -> str:
    """`` (…: FAMILY:FILE)`` naming the families that read the local file ``source`` when it is no RecTok
    checkpoint but another family's weights (a KL autoencoder, an l-DeTok file); empty otherwise."""
    path = Path(source).expanduser()
    if not path.is_file():
        return ""
    try:
        sd = read_state_dict(path)
    except CheckpointError:
        return ""
    kind = layout(sd)
    if kind == "vit" and any(".transformer." in k for k in sd):
        return " (an l-DeTok file: detok:FILE)"
    if kind in ("diffusers", "ldm") and "decoder.conv_in.weight" in sd:
        channels = int(sd["decoder.conv_in.weight"].shape[1])
        fits = [f for f, (c, _) in LDM_SHAPES.items() if c == channels] + \
               [f for f, c in DIFFUSERS_CHANNELS.items() if c == channels]
        return f" (a KL autoencoder of {channels} latent channels: {' or '.join(f + ':FILE' for f in fits) or 'no family'})"
    return ""


def family_table() -> list[dict[str, str]]:
    """One row per registered family: name, description, source, latent shape, normalisation, Hub support."""
    return [{"family": f.name, "description": f.description, "source": f.source, "latent": f.latent,
             "normalization": f.normalization.describe(), "hub": "yes" if f.hub else "no",
             "form": f"{f.name}:{f.local_form.replace(' or ', '|')}" + ("|HUB_ID" if f.hub else "")}
            for f in FAMILIES.values()]


def check_latent_fits(spec: str | Path, latent_shape: tuple[int, int, int], generator: str, patch_size: int = 1,
                      image_size: int | None = None) -> None:
    """One line, before any training, when ``generator`` (patchifying its square latent input by ``patch_size``)
    cannot take the ``(C, h, w)`` latents of the tokenizer ``spec``: what the tokenizer gives and what would fit
    (the patch sizes that divide its grid, or the tokenizer image size whose grid ``patch_size`` divides)."""
    C, h, w = latent_shape
    shape = f"tokenizer {spec} gives {C}x{h}x{w} latents"
    if h != w:
        raise CheckpointError(f"{shape}: {generator} takes a square latent grid (use a tokenizer at a square image "
                              f"size)")
    if h % patch_size:
        fits = [p for p in range(1, h + 1) if h % p == 0 and p <= 8]
        hint = ""
        if image_size and image_size % h == 0:
            step = image_size // h * patch_size
            hint = f", or a tokenizer image size that is a multiple of {step} (e.g. {-(-image_size // step) * step})"
        raise CheckpointError(f"{shape}: {generator} patchifies by {patch_size}, which does not divide the {h}x{w} "
                              f"grid; what fits: a generator patch size of {', '.join(map(str, fits))}{hint}")
