"""rectok: RecTok tokenizers and latent flow generators."""
__version__ = "0.1.0"
