"""Interoperability: importing the official RecTok checkpoints (:mod:`.official`), inference-only export folders
(:mod:`.export`) and the one resolver that turns a file, an export folder or a Hub id into a checkpoint
(:mod:`.resolve`)."""
