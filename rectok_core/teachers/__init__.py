"""Frozen vision foundation models whose features the semantic decoder learns to predict."""
