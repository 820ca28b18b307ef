"""rectok: RecTok tokenizers and latent flow generators.

``from rectok_core import Tokenizer, Generator`` (see :mod:`rectok_core.api`); importing the package alone loads
neither torch nor the models.
"""
__version__ = "0.1.0"

__all__ = ["Generator", "Tokenizer", "__version__"]


def __getattr__(name: str):
    if name in ("Tokenizer", "Generator"):
        from rectok_core import api  # lazy facade: `import rectok_core` loads no torch

        return getattr(api, name)
    raise AttributeError(f"module 'rectok_core' has no attribute {name!r}")
