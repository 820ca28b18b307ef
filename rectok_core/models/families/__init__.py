"""Tokenizer families: every image tokenizer rectok can encode and decode with, behind one interface
(:class:`LatentTokenizer`) and one registry (:func:`register_family`, :data:`FAMILIES`).

A new family is one module of this package calling :func:`register_family` plus one import line below. The
``rectok`` family itself (RecTok checkpoints, export folders, Hub ids) registers in
``rectok_core/checkpoints/families.py``, beside the checkpoint loaders it wraps.
"""
from __future__ import annotations

# isort: off
from rectok_core.models.families import diffusers_vae  # noqa: F401 - sd-vae, eq-vae, sd3-vae, flux-vae
from rectok_core.models.families import ldm_kl  # noqa: F401 - mar-kl16, va-vae
from rectok_core.models.families import detok  # noqa: F401 - detok (l-DeTok)
# isort: on
from rectok_core.models.families.base import (
    FAMILIES,
    Family,
    LatentConfig,
    LatentTokenizer,
    Normalization,
    get_family,
    register_family,
)

__all__ = ["FAMILIES", "Family", "LatentConfig", "LatentTokenizer", "Normalization", "get_family", "register_family"]
