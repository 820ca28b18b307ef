"""Infrastructure shared by every layer: files, checkpoints, processes, environment, images."""
