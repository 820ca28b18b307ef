"""Where a training run starts besides its own ``latest.pt``.

- ``--init CKPT`` (``train-tokenizer``, ``train-dit``): a new run starts from the weights of a checkpoint opened by the
  front door (a rectok checkpoint, an imported official file, an export folder or a Hub id of one). The live model
  takes the checkpoint's raw weights and the EMA its EMA weights (the one set an export folder holds: both), as the
  official ``--load_from`` does; the optimizer, step and data position start afresh. Loading is strict: every tensor
  must exist with the same shape, except the grid-sized tables of a tokenizer given a new image size (same patch
  size), whose positional embeddings are bicubic-interpolated from the old token grid to the new one (RoPE is
  recomputed from the grid). What happened is the run's first log line (``init from X: exact`` or ``init from X:
  pos_embed interpolated 8×8 → 16×16``).
- ``--resume-from FILE`` (every training command): a checkpoint of another run of the same command continues exactly
  (model, EMA, optimizer, RNG, step, data position: what ``--resume`` restores from ``OUT/latest.pt``) in a new
  ``--out``; nothing is written into the source run's folder.

A ``train-dit --init`` needs the same generator family and architecture; its class-label table follows one rule
(:func:`label_rows`): the row of each class of the new data whose name the checkpoint records is kept, the other rows
start as a fresh model's (its own initialisation under the run's seed), and the null (unconditional) row is kept. A
checkpoint that records no class names keeps its rows by index when the class count is the same, and none otherwise.
"""
from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from rectok_core.checkpoints import open_checkpoint
from rectok_core.config import from_dict
from rectok_core.errors import CheckpointError
from rectok_core.models.tokenizer import RecTok, TokenizerModelConfig
from rectok_core.utils import checkpoint

logger = logging.getLogger(__name__)

#: The checkpoint ``stage`` each tokenizer command continues with ``--resume-from``.
STAGE_OF = {"train-tokenizer": "stage1", "finetune-decoder": "decoder-ft"}
SEM = "sem_decoder."


# ---------------------------------------------------------------------------------------------------------
# --resume-from FILE
# ---------------------------------------------------------------------------------------------------------
def open_resume_from(spec: str | Path, kind: str, out: str | Path, stage: str | None = None) -> dict:
    """The checkpoint ``spec`` that a new run in ``out`` continues: a rectok training checkpoint of ``kind`` (and
    tokenizer ``stage``) holding its training state, outside ``out``; one-line errors otherwise."""
    path = Path(spec)
    if path.is_dir():
        raise CheckpointError(f"--resume-from {spec} is a folder, not a run's checkpoint file (an export folder holds no "
                              f"training state: start from its weights with --init instead)")
    if not path.is_file():
        raise CheckpointError(f"--resume-from {spec}: no such file (give a checkpoint of a rectok run, e.g. "
                              f"RUN/checkpoints/latest.pt)")
    target = Path(out).resolve()
    if target == path.resolve().parent or target in path.resolve().parents:
        raise CheckpointError(f"--resume-from {spec} lies in --out {out}: give a new --out (the source run is never "
                              f"written), or continue that run in place with --resume")
    ck = _open(path, kind, "--resume-from")
    if stage is not None and ck.get("stage", "stage1") != stage:
        command = {v: k for k, v in STAGE_OF.items()}
        raise CheckpointError(f"--resume-from {spec} holds a {command.get(ck.get('stage'), ck.get('stage'))} "
                              f"checkpoint ({ck.get('stage')}), but this command continues {command[stage]} runs")
    missing = [k for k in ("model", "ema", "opt", "rng", "step") if k not in ck]
    if missing or "imported" in ck:
        raise CheckpointError(f"--resume-from {spec} holds no training state (no {missing[0] if missing else 'opt'}: "
                              f"an imported or exported file): start from its weights with --init instead")
    return ck


def _open(spec: str | Path, kind: str, option: str) -> dict:
    """``open_checkpoint(spec, kind)`` with its one-line errors led by the option that named ``spec``."""
    try:
        return open_checkpoint(spec, kind)
    except CheckpointError as e:
        raise CheckpointError(f"{option} {e}") from None


def resume_source(run: Any, R: Any, kind: str, stage: str | None = None) -> dict | None:
    """The checkpoint a run continues (``run``: its RunDir, ``R``: its run config): ``OUT/latest.pt`` for
    ``--resume``, the ``--resume-from`` file for a new run continuing another, None for a fresh run."""
    if R.resume:
        return open_checkpoint(run.latest, kind)
    if R.resume_from:
        return open_resume_from(R.resume_from, kind, R.out, stage)
    return None


# ---------------------------------------------------------------------------------------------------------
# Grid-sized tables
# ---------------------------------------------------------------------------------------------------------
def interpolate_grid(table: torch.Tensor, old: tuple[int, int], new: tuple[int, int]) -> torch.Tensor:
    """A ``(1, h·w, C)`` table of per-token vectors on an ``old`` = (h, w) token grid, bicubic-interpolated (in
    float32, corners not aligned) to the ``new`` grid: ``(1, H·W, C)`` in the table's dtype."""
    n, tokens, c = table.shape
    if tokens != old[0] * old[1]:
        raise CheckpointError(f"a table of {tokens} tokens is not on a {old[0]}×{old[1]} grid")
    x = table.float().reshape(n, old[0], old[1], c).permute(0, 3, 1, 2)
    x = F.interpolate(x, size=new, mode="bicubic", align_corners=False)
    return x.permute(0, 2, 3, 1).reshape(n, new[0] * new[1], c).to(table.dtype)


def fit_state(state: dict[str, torch.Tensor], own: dict[str, torch.Tensor], old: tuple[int, int],
              new: tuple[int, int], where: str) -> tuple[dict[str, torch.Tensor], list[str]]:
    """``state`` fitted to a model whose state dict is ``own`` (shapes only are read; it may live on the meta
    device): every tensor as it is, a grid-sized table (``(1, tokens, C)`` with tokens the ``old`` grid's here and the
    ``new`` grid's there) interpolated. Returns the fitted state and the names interpolated; a missing, unexpected or
    otherwise mis-shaped tensor is a one-line error naming it."""
    out, moved = {}, []
    for k, ref in own.items():
        if k not in state:
            raise CheckpointError(f"{where}: the checkpoint has no {k} (another model shape): --init needs the same "
                                  f"architecture")
        v = state[k]
        if tuple(v.shape) == tuple(ref.shape):
            out[k] = v
        elif (v.dim() == 3 and ref.dim() == 3 and v.shape[0] == ref.shape[0] == 1 and v.shape[2] == ref.shape[2]
              and v.shape[1] == old[0] * old[1] and ref.shape[1] == new[0] * new[1]):
            out[k] = interpolate_grid(v, old, new)
            moved.append(k)
        else:
            raise CheckpointError(f"{where}: {k} is {tuple(v.shape)} in the checkpoint, {tuple(ref.shape)} in this "
                                  f"model (shape mismatch): --init needs the same architecture")
    extra = sorted(set(state) - set(own))
    if extra:
        raise CheckpointError(f"{where}: the checkpoint's {extra[0]} has no place in this model (another model "
                              f"shape): --init needs the same architecture")
    return out, moved


# ---------------------------------------------------------------------------------------------------------
# train-tokenizer --init
# ---------------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class TokenizerInit:
    """The starting weights of a stage-1 run (``--init``), fitted to the run's model; :attr:`line` says how."""

    spec: str
    raw: dict[str, torch.Tensor]      # encoder + pixel decoder, fitted
    ema: dict[str, torch.Tensor]
    sem: dict[str, dict[str, torch.Tensor]]  # the semantic decoders ("raw", "ema"), as stored (may be empty)
    old: tuple[int, int]
    new: tuple[int, int]
    line: str

    def apply(self, module: torch.nn.Module, which: str = "raw") -> None:
        """Load the ``which`` ("raw" or "ema") weights into ``module`` (a RecTok). Its semantic decoder, when it has
        one, is the checkpoint's when that fits (grid tables interpolated), else it keeps its fresh weights."""
        state = dict(self.raw if which == "raw" else self.ema)
        own_sem = {k: v for k, v in module.state_dict().items() if k.startswith(SEM)}
        if own_sem:
            try:
                fitted, _ = fit_state(self.sem[which], own_sem, self.old, self.new, "semantic decoder")
            except CheckpointError:
                fitted = own_sem
                if which == "raw":
                    logger.info("init from %s: the semantic decoder starts fresh (%s)", self.spec,
                                "the checkpoint's does not fit this run's teacher" if self.sem[which] else
                                "the checkpoint has none")
            state.update(fitted)
        checkpoint.load_state_strict(module, state, f"--init {self.spec} ({which} weights)")


def tokenizer_init(spec: str, M: TokenizerModelConfig) -> TokenizerInit:
    """Open the tokenizer ``spec`` and fit its weights to a stage-1 model of config ``M``; one-line errors for
    another kind, another patch size or another model shape, before anything is built."""
    ck = _open(spec, "tokenizer", "--init")
    src = from_dict(TokenizerModelConfig, ck["config"]["model"])
    raw_all = ck.get("model", ck.get("ema"))
    ema_all = ck.get("ema", raw_all)
    if src.patch_size != M.patch_size:
        name = "encoder.patch_embed.weight"
        shape = tuple(raw_all[name].shape) if name in raw_all else src.patch_size
        raise CheckpointError(f"--init {spec}: patch size {src.patch_size} (its {name} {shape}), this run "
                              f"{M.patch_size}: a patch-size change cannot be interpolated (a new image size with "
                              f"the same patch size can)")
    with torch.device("meta"):
        own = RecTok(dataclasses.replace(M, teacher_dim=0), semantic=False).state_dict()
    where = f"--init {spec}"
    fitted = {}
    for which, full in (("raw", raw_all), ("ema", ema_all)):
        tok = {k: v for k, v in full.items() if not k.startswith(SEM)}
        fitted[which], moved = fit_state(tok, own, src.grid, M.grid, where)
    sem = {w: {k: v for k, v in s.items() if k.startswith(SEM)} for w, s in (("raw", raw_all), ("ema", ema_all))}
    how = "exact" if not moved else (f"{', '.join(sorted({k.rsplit('.', 1)[-1] for k in moved}))} interpolated "
                                     f"{src.grid[0]}×{src.grid[1]} → {M.grid[0]}×{M.grid[1]} (bicubic; "
                                     f"image size {src.image_size} → {M.image_size})")
    return TokenizerInit(str(spec), fitted["raw"], fitted["ema"], sem, src.grid, M.grid, f"init from {spec}: {how}")


# ---------------------------------------------------------------------------------------------------------
# train-dit --init
# ---------------------------------------------------------------------------------------------------------
#: Generator config fields a ``train-dit --init`` may change (the label table follows :func:`label_rows`).
DIT_FREE = ("num_classes", "class_dropout")
LABELS = "y_embedder.embedding_table.weight"
LABEL_RULE = ("label rows kept by class name (by index when the checkpoint records no names and the count matches), "
              "new classes fresh, the null row kept")


def label_rows(old: list[str] | None, old_count: int, new: list[str]) -> dict[int, int]:
    """``{new row: checkpoint row}`` for the class rows kept under the rule of this module (null rows apart)."""
    if old is not None and len(old) == old_count:
        index = {name: i for i, name in enumerate(old)}
        return {i: index[name] for i, name in enumerate(new) if name in index}
    return {i: i for i in range(len(new))} if old_count == len(new) else {}


@dataclasses.dataclass
class DiTInit:
    """The starting weights of a generator run (``--init``) and the label-row mapping; :attr:`line` says how."""

    spec: str
    ck: dict
    rows: dict[int, int]
    line: str

    def apply(self, module: torch.nn.Module, which: str = "raw") -> None:
        """Load the ``which`` ("raw" or "ema") weights into ``module`` (the run's generator, of its classes)."""
        state = dict(self.ck.get("model" if which == "raw" else "ema", self.ck.get("model", self.ck.get("ema"))))
        table = module.state_dict()[LABELS].clone()  # the fresh model's rows
        old = state[LABELS]
        for i, j in self.rows.items():
            table[i] = old[j]
        table[-1] = old[-1]  # the null (unconditional) row
        state[LABELS] = table
        checkpoint.load_state_strict(module, state, f"--init {self.spec} ({which} weights)")


def open_dit_init(spec: str) -> dict:
    """The generator (``train-dit``) checkpoint ``spec`` (a one-line error for another kind)."""
    return _open(spec, "dit", "--init")


def generator_of(ck: dict) -> tuple[str, dict[str, Any]]:
    """The generator family and config (a dict) a ``train-dit`` checkpoint records (older ones: DiT^DH's only)."""
    g = ck.get("generator")
    return (g["family"], dict(g["config"])) if g else ("dit-dh", dict(ck["dit_config"]))


def dit_init(spec: str, ck: dict, family: str, config: dict[str, Any], classes: Iterable[str]) -> DiTInit:
    """Fit the generator checkpoint ``ck`` (opened from ``spec``) to a run's model of ``family`` and ``config`` (its
    config as a dict) for ``classes``; a one-line error for another family or architecture."""
    old_family, old = generator_of(ck)
    if old_family != family:
        raise CheckpointError(f"--init {spec}: it holds a {old_family} generator, this run trains {family}: --init "
                              f"needs the same architecture")
    for k in sorted(set(old) | set(config)):
        a, b = old.get(k), config.get(k)
        if k not in DIT_FREE and a != b:
            raise CheckpointError(f"--init {spec}: its generator has {k} {a}, this run {b}: --init needs the same "
                                  f"architecture (set the preset and shape options to the checkpoint's)")
    classes = list(classes)
    names = ck.get("classes")
    rows = label_rows(list(names) if names is not None else None, int(old["num_classes"]), classes)
    same = rows == {i: i for i in range(len(classes))} and old["num_classes"] == len(classes)
    fresh = [c for i, c in enumerate(classes) if i not in rows]
    shown = ", ".join(fresh[:5]) + (", …" if len(fresh) > 5 else "")
    how = "exact (the same classes)" if same else (
        f"label table: {len(rows)} of {len(classes)} class rows kept, {len(fresh)} fresh"
        + (f" ({shown})" if fresh else "") + ", the null row kept")
    return DiTInit(str(spec), ck, rows, f"init from {spec}: {how}")
