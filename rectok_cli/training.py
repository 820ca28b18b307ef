"""The tokenizer's training commands: ``train-tokenizer`` (stage 1) and ``finetune-decoder`` (stage 2)."""
from __future__ import annotations

from rectok_core.training.config import FINETUNE_PRESETS, TOKENIZER_PRESETS, FinetuneConfig, TokenizerTrainConfig

from .app import app, user_errors
from .options import argument, split_overrides, with_config_options
from .present import note, run_done


def train_tokenizer_config(**kwargs) -> TokenizerTrainConfig:
    from rectok_core.training.inherit import tokenizer_run_config

    return tokenizer_run_config(split_overrides(TokenizerTrainConfig, kwargs)[0])


@app.command("train-tokenizer")
@user_errors
@with_config_options(TokenizerTrainConfig, TOKENIZER_PRESETS, resolve=train_tokenizer_config)
def train_tokenizer(**kwargs):
    """Stage-1 RecTok training: Flow Semantic Distillation + Reconstruction-Alignment Distillation.

    Launch with torchrun for several GPUs or nodes. Every option defaults to the --preset's value.
    """
    from rectok_core.training.tokenizer import train_tokenizer as run

    run_done(run(train_tokenizer_config(**kwargs)))


def finetune_config(tokenizer: str, **kwargs) -> FinetuneConfig:
    from rectok_core.training.inherit import finetune_run_config

    return finetune_run_config(tokenizer, split_overrides(FinetuneConfig, kwargs)[0], show=note)


@app.command("finetune-decoder")
@user_errors
@with_config_options(FinetuneConfig, FINETUNE_PRESETS, resolve=finetune_config,
                     extra=[argument("tokenizer", "stage-1 tokenizer checkpoint (train-tokenizer)")])
def finetune_decoder(tokenizer: str, **kwargs):
    """Stage 2: freeze the encoder, fine-tune the pixel decoder for reconstruction (MSE + perceptual + GAN).

    Preset, data and image size default to the stage-1 checkpoint's. The result is a tokenizer checkpoint that
    every downstream command accepts.
    """
    from rectok_core.training.tokenizer import finetune_decoder as run

    run_done(run(finetune_config(tokenizer, **kwargs)))
