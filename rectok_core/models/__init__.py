"""The networks: shared layers, the RecTok tokenizer, the DiT^DH generator, the PatchGAN discriminator."""
