"""Rectified-flow math: the tokenizer's noise path, the generator's transport, ODE solvers, guidance."""
