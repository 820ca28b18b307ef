"""The settings of the released-model commands (``import-official``, ``latent-stats``, ``export``, ``push``): one
dataclass each, whose fields are the commands' options, without torch (the CLI generates its options from them).

Each entry point takes its config and, for notebooks, the same settings by name
(:func:`rectok_core.config.settings`): a default is written once, here.
"""
from __future__ import annotations

from dataclasses import dataclass

from rectok_core.config import (
    WEIGHTS,
    check_choices,
    check_runtime,
    device_option,
    nonneg,
    opt,
    workers_option,
)
from rectok_core.data.config import TOKENIZER_IMAGE_SIZE_HELP

#: ``import-official --kind``: what the official file holds (``auto``: told from its keys and shapes).
KINDS = ("auto", "stage1", "decoder-ft", "dit")


@dataclass
class ImportOfficialConfig:
    """``rectok import-official``: convert an official RecTok checkpoint into a rectok one."""
    out: str = opt("", "the rectok checkpoint to write (.pt)", required=True)
    kind: str = opt("auto", "what the file holds: auto (from keys and shapes), stage1, decoder-ft or dit: a "
                            "tokenizer's stage is told by its semantic decoder", KINDS)
    weights: str = opt("ema", "official weights to import: ema (model_ema, what the official evaluation uses) or "
                              "raw (model)", WEIGHTS)
    tokenizer: str = opt("", "DiT only: the imported tokenizer (RecTok_decft) whose latents it models")
    latent_stats: str = opt("", "DiT only: statistics JSON from `rectok latent-stats --out`")
    data: str = opt("", "DiT only: ImageNet train (folder or list) to compute the latent statistics from instead")
    classes: str = opt("", "DiT only: class names, one a line (default: the --data folder's, else class_0000 …)")
    stats_dir: str = opt("", "folder of keyed statistics files")
    device: str = device_option("for computing statistics")
    batch_size: int = opt(64, "images per batch for the statistics")
    workers: int = workers_option(4, "data-loading workers for the statistics")
    heads: str = opt("", "attention heads of a size outside the official tables (never guessed): N or N,S for a "
                         "tokenizer (S: semantic decoder), A,B for a DiT^DH (trunk, head)")

    def validate(self) -> None:
        check_runtime(self)


@dataclass
class LatentStatsConfig:
    """``rectok latent-stats``: per-channel mean and std of a tokenizer's posterior mean over a data set."""
    data: str = opt("", "images (the train split of a folder, or a list file)", required=True)
    out: str = opt("", "also copy the statistics JSON here")
    stats_dir: str = opt("", "folder of statistics files keyed by tokenizer sha256 and data (default: cache)")
    weights: str = opt("ema", "tokenizer weights", WEIGHTS)
    image_size: int = opt(0, TOKENIZER_IMAGE_SIZE_HELP)
    device: str = device_option()
    batch_size: int = opt(64, "images per batch per process")
    workers: int = workers_option(4, "data-loading workers per process")
    overwrite: bool = opt(False, "replace an --out file that is not a rectok latent-statistics file")
    latent_norm: str = opt("family", "family: the tokenizer family's own normalisation (a global scale/shift for "
                                     "sd-vae, eq-vae, sd3-vae, flux-vae, mar-kl16; data statistics otherwise); data: "
                                     "per-channel statistics measured on the data for every family",
                           ("family", "data"))

    def validate(self) -> None:
        check_runtime(self)
        nonneg("image_size", self.image_size)


@dataclass
class ExportConfig:
    """``rectok export``: an inference-only folder for a checkpoint, uploadable to the Hub as it is."""
    out: str = opt("", "folder to write (model.safetensors, config.json, README.md)", required=True)
    weights: str = opt("ema", "weights to export", WEIGHTS)
    eval_file: str = opt("", "eval.json (rectok eval / eval-samples) whose metrics go into the model card",
                         flag="--eval")
    license: str = opt("apache-2.0", "license field of the model card")
    tokenizer_ref: str = opt("", "DiT only: where its tokenizer is found (a Hub id, or a folder relative to this one)")
    latent_stats: str = opt("", "tokenizer only: statistics JSON to include")
    overwrite: bool = opt(False, "write into an --out folder that holds other files than an earlier export")

    def validate(self) -> None:
        check_choices(self)


@dataclass
class PushConfig:
    """``rectok push``: upload an export folder to the Hugging Face Hub."""
    repo: str = opt("", "Hub repository owner/name (created when missing)", required=True)
    private: bool = opt(False, "create the repository private")
    dry_run: bool = opt(False, "check the folder and list what would be uploaded")
    message: str = opt("Upload rectok model", "commit message of the upload", cli=False)

    def validate(self) -> None:
        pass
