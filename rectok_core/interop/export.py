"""Inference-only export folders (``rectok export``) and uploading them (``rectok push``).

A folder holds ``model.safetensors`` (one set of weights: EMA by default), ``config.json`` (format, kind, model
config, training config, step, latent statistics, classes, the tokenizer a DiT needs by sha256, and the sha256 of
both the checkpoint it came from and the weights file) and a ``README.md`` model card. ``huggingface_hub`` uploads
it unchanged; every command that takes a checkpoint takes such a folder (or its Hub id) too.

A folder keeps the identity of its checkpoint: the sha256 that DiTs, latent statistics and sample manifests record
is the source checkpoint's, so a DiT trained on ``tok.pt`` accepts ``tok.pt``'s export folder as its tokenizer.
The weights file is checked against its recorded hash on every load.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from rectok_core.checkpoints import HUB_ID, KINDS, is_family_spec, open_checkpoint
from rectok_core.checkpoints.folder import EXPORT_FORMAT, VERSION, WEIGHTS_FILE, read_export_config
from rectok_core.config import settings
from rectok_core.data.latent_stats import LatentStats
from rectok_core.errors import CheckpointError, RectokError
from rectok_core.interop.config import ExportConfig, PushConfig
from rectok_core.interop.stats import read_stats
from rectok_core.utils import checkpoint, files
from rectok_core.utils.env import network_available

logger = logging.getLogger(__name__)



def export(ckpt: str | Path, out: str | Path | None = None, cfg: ExportConfig | None = None, **options: Any) -> Path:
    """``rectok export``: write the export folder of a tokenizer or DiT checkpoint ``ckpt`` into ``cfg.out``;
    returns it. It must be new, empty or an earlier export folder: another folder's files (its README.md,
    config.json) are never replaced unless ``overwrite``. Every file is written atomically, with the usual
    permissions. ``cfg``: the settings (:class:`~rectok_core.interop.config.ExportConfig`); ``out`` and ``options``
    set its fields by name."""
    from safetensors.torch import save as safetensors_bytes

    cfg = settings(ExportConfig, cfg, out=out, **options)
    if is_family_spec(ckpt):
        raise RectokError(f"{ckpt}: rectok export writes folders of rectok checkpoints; a tokenizer of another family "
                          f"needs none: every command and Tokenizer.from_pretrained take {ckpt} as it is")
    out, weights, eval_file, license = cfg.out, cfg.weights, cfg.eval_file or None, cfg.license
    tokenizer_ref, latent_stats, overwrite = cfg.tokenizer_ref or None, cfg.latent_stats or None, cfg.overwrite
    # an export folder is known by its config.json (no marker file: the folder is uploaded as it is)
    files.claim_output_dir(out, "export", owns=is_export_folder, overwrite=overwrite, create=False)
    ck = open_checkpoint(ckpt)
    kind = ck.get("kind")
    if kind not in KINDS:
        raise CheckpointError(f"{ckpt} holds {kind!r}, not a tokenizer or DiT checkpoint")
    state = checkpoint.state_of(ck, weights, ckpt)
    if kind == "tokenizer":
        state = {k: v for k, v in state.items() if not k.startswith("sem_decoder.")}
    src_path, sha = checkpoint.identity(ck, ckpt)
    out = files.ensure_writable(out)
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    with files.atomic_open(out / WEIGHTS_FILE, "wb", fsync=True) as f:
        f.write(safetensors_bytes(tensors, metadata={"format": "pt", "rectok_kind": kind}))
    cfg: dict[str, Any] = {
        "format": EXPORT_FORMAT, "version": VERSION, "library": "rectok", "kind": kind, "stage": ck.get("stage"),
        "weights": weights, "step": ck.get("step"), "epoch": ck.get("epoch"), "checkpoint_sha256": sha,
        "checkpoint": os.path.basename(src_path), "weights_file": WEIGHTS_FILE,
        "weights_sha256": files.file_sha256(out / WEIGHTS_FILE), "config": ck.get("config"), "license": license,
        "imported": ck.get("imported"), "pixels": "samples are rounded to uint8 (the official code truncates)",
    }
    if kind == "dit":
        tok = dict(ck["tokenizer"])
        tok["ref"] = tokenizer_ref
        if "dit_config" in ck:
            cfg["dit_config"] = ck["dit_config"]
        if "generator" in ck:
            cfg["generator"] = ck["generator"]
        cfg.update(tokenizer=tok, classes=list(ck["classes"]),
                   num_classes=int(ck["num_classes"]), latents=ck.get("latents"),
                   latent_stats=_stats_json(ck["latent_stats"]))
    else:
        cfg["model"] = ck["config"]["model"]
        if latent_stats:
            cfg["latent_stats"] = read_stats(latent_stats, sha, weights).to_json()
        elif ck.get("latent_stats") is not None:
            cfg["latent_stats"] = _stats_json(ck["latent_stats"])
    metrics = _read_eval(eval_file) if eval_file else None
    files.write_json_atomic(out / "config.json", cfg, default=str)
    files.write_text_atomic(out / "README.md", model_card(cfg, metrics))
    return out


def is_export_folder(folder: Path) -> bool:
    """Whether ``folder`` holds an export folder's config.json (``format: rectok-export``): what ``export``
    replaces without ``--overwrite``."""
    try:
        cfg = json.loads((Path(folder) / "config.json").read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return isinstance(cfg, dict) and cfg.get("format") == EXPORT_FORMAT


def _stats_json(state: dict) -> dict:
    return LatentStats.from_state(state).to_json()


def _read_eval(path: str) -> dict:
    try:
        d = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise RectokError(f"cannot read --eval {path}: {e}") from None
    metrics = d.get("metrics", d) if isinstance(d, dict) else None
    if not isinstance(metrics, dict):
        raise RectokError(f"--eval {path} holds no metrics (expected the JSON of rectok eval / eval-samples)")
    return {"file": os.path.basename(path), "metrics": metrics, "manifest": d.get("manifest")}


def _fmt_metric(v: Any) -> str | None:
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, (int, float)):
        return f"{v:.4g}"
    if isinstance(v, dict) and isinstance(v.get("mean"), (int, float)):
        return f"{v['mean']:.4g}" + (f" ± {v['std']:.2g}" if isinstance(v.get("std"), (int, float)) else "")
    return None


def model_card(cfg: dict, metrics: dict | None) -> str:
    """The README.md of an export folder: YAML front matter (license, library, tags) and a short card."""
    kind, run = cfg["kind"], (cfg.get("config") or {}).get("run") or {}
    imported = cfg.get("imported")
    if kind == "dit" and "dit_config" not in cfg:
        g = cfg["generator"]
        d = g["config"]
        what = (f"{g['family']} class-conditional latent generator (width {d.get('width')}, depth "
                f"{d.get('depth')}), {d['num_classes']} classes, on {d['in_channels']}×{d['input_size']}×"
                f"{d['input_size']} latents")
    elif kind == "dit":
        d = cfg["dit_config"]
        what = (f"DiT^DH class-conditional latent flow generator (trunk {d['width']}×{d['depth']}, head "
                f"{d['head_width']}×{d['head_depth']}), {d['num_classes']} classes, on {d['in_channels']}×"
                f"{d['input_size']}×{d['input_size']} RecTok latents")
    else:
        m = cfg["model"]
        what = (f"RecTok visual tokenizer ({cfg.get('stage')}), {m['image_size']} px, patch {m['patch_size']}, "
                f"encoder/decoder {m['width']}×{m['depth']}, {m['dim']} latent channels")
    data = ("ImageNet-1k train (official release)" if imported else run.get("data") or "unknown")
    lines = ["---", f"license: {cfg.get('license') or 'other'}", "library_name: rectok",
             "tags:", "- rectok", f"- {'image-generation' if kind == 'dit' else 'image-tokenizer'}", "---", "",
             f"# {'RecTok DiT^DH' if kind == 'dit' else 'RecTok tokenizer'}", "", what + ".", "",
             f"- weights: {cfg['weights']} ({cfg['weights_file']}, sha256 {cfg['weights_sha256'][:16]}…)",
             f"- from checkpoint `{cfg['checkpoint']}` (sha256 {cfg['checkpoint_sha256'][:16]}…)",
             f"- training data: {data}",
             f"- training: step {cfg.get('step')}" + (f", epoch {cfg['epoch']:g}" if cfg.get("epoch") else "")]
    if imported:
        lines.append(f"- converted from the official `{imported['source']}` ({imported['weights']}) by "
                     f"`rectok import-official`")
    if kind == "dit":
        t = cfg["tokenizer"]
        lines.append(f"- needs the tokenizer with sha256 {t['sha256'][:16]}… ({t['weights']} weights)"
                     + (f": `{t['ref']}`" if t.get("ref") else ""))
        lines.append("- latent statistics of the posterior mean over "
                     f"{cfg['latent_stats']['images']} images are in config.json")
    if metrics:
        rows = [(k, _fmt_metric(v)) for k, v in metrics["metrics"].items()]
        lines += ["", f"## Metrics (`{metrics['file']}`)", "", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in rows if v is not None]
    use = ("from rectok_core import Generator\n"
           "g = Generator.from_pretrained('THIS_FOLDER_OR_HUB_ID', tokenizer='TOKENIZER')" if kind == "dit" else
           "from rectok_core import Tokenizer\ntok = Tokenizer.from_pretrained('THIS_FOLDER_OR_HUB_ID')")
    lines += ["", "## Use", "", "```python", use, "```", "",
              "Made with rectok (RecTok: reconstruction distillation along rectified flow).", ""]
    return "\n".join(lines)


def push(folder: str | Path, repo: str | None = None, cfg: PushConfig | None = None,
         **options: Any) -> list[tuple[str, int]]:
    """``rectok push``: upload an export folder to the Hub repo ``cfg.repo`` (created when missing); returns (file,
    bytes) of what is (or, with ``dry_run``, would be) uploaded. The folder is checked first; a dry run needs no
    network. ``cfg``: the settings (:class:`~rectok_core.interop.config.PushConfig`); ``repo`` and ``options`` set
    its fields by name."""
    cfg = settings(PushConfig, cfg, repo=repo, **options)
    repo, dry_run, private, message = cfg.repo, cfg.dry_run, cfg.private, cfg.message
    folder = Path(folder)
    read_export_config(folder)
    if not HUB_ID.match(repo) or "@" in repo:
        raise RectokError(f"--repo {repo!r}: expected a Hub id owner/name")
    listing = [(p.name, p.stat().st_size) for p in sorted(folder.iterdir())
               if p.is_file() and not p.name.startswith(".")]
    if dry_run:
        return listing

    if not network_available():
        raise RectokError("the Hugging Face Hub is unreachable (offline): push from a machine with network access")
    try:
        from huggingface_hub import HfApi

        api = HfApi()
        api.create_repo(repo, private=private, exist_ok=True)
        api.upload_folder(repo_id=repo, folder_path=str(folder), commit_message=message,
                          allow_patterns=[name for name, _ in listing])
    except Exception as e:  # noqa: BLE001 - any hub failure is one line
        why = " ".join(str(e).split())[:200]
        raise RectokError(f"cannot upload {folder} to {repo}: {type(e).__name__}: {why}") from None
    return listing
