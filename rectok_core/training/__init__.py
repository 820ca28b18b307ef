"""Training: configs, the optimisation engine, run directories and the two training loops."""
