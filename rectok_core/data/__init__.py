"""Datasets, readers, transforms, the resumable sampler, latent statistics and the latent cache."""
