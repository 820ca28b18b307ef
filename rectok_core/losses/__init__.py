"""Training objectives: the tokenizer's reconstruction/semantic/KL terms and the perceptual losses."""
