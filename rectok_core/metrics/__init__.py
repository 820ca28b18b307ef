"""Measurements: Inception features, FID and friends, image metrics, tokenizer/generator eval, probes."""
