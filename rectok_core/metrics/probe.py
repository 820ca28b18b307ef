"""The linear-probe math of probe-flow: pooled features, noise, linear fits, chance checks."""
from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from rectok_core.data.datasets import ImageDataset
from rectok_core.data.sampler import ResumableSampler, build_loader, drop_bad
from rectok_core.errors import DataError, RectokError
from rectok_core.metrics.config import CLASSIFIERS, SPACES  # noqa: F401 - re-exported
from rectok_core.utils.progress import progress
from rectok_core.utils.runtime import autocast

logger = logging.getLogger(__name__)


#: Top-5 accuracy is reported when there are at least this many classes.
TOP5_MIN_CLASSES = 10






#: Standard deviations (binomial, of the val accuracy) above chance that t = 1 may reach before the check fails.
CHANCE_SIGMAS = 3.0


#: Absolute slack added to the chance limit (covers the classifier's own small-sample wobble).
CHANCE_MARGIN = 0.01


#: Rows per chunk of the torch classifier's loss (bounds memory to chunk × classes logits).
CLASSIFIER_CHUNK = 65536


_SPLIT_STREAM = {"train": 0, "val": 1}


# ---------------------------------------------------------------------------------------------------------
# Features
# ---------------------------------------------------------------------------------------------------------
@dataclass
class PooledFeatures:
    """Mean-pooled token features of the readable images of a dataset, plus per-channel token statistics."""
    pooled: torch.Tensor  # (n, D) float32, CPU: mean over the N tokens of each image
    index: torch.Tensor  # (n,) int64: dataset index of each row (unreadable images are left out)
    channel_mean: torch.Tensor  # (D,) float64: mean over every token of every image
    channel_std: torch.Tensor  # (D,) float64: sqrt(E[x²] − E[x]²) over the same tokens
    num_tokens: int  # N


@torch.no_grad()
def encode_pooled(encode: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, device: torch.device,
                  precision: str) -> tuple[torch.Tensor, torch.Tensor]:
    """One batch of probe features: ``encode`` under autocast → fp32 tokens (B, N, D) and their mean over the
    tokens (B, D), on ``device``."""
    with autocast(device, precision):
        tokens = encode(images.to(device, non_blocking=True))
    tokens = tokens.float()
    return tokens, tokens.mean(1)


@torch.no_grad()
def pooled_features(encode: Callable[[torch.Tensor], torch.Tensor], dataset: ImageDataset, batch_size: int,
                    workers: int, device: torch.device, precision: str, desc: str) -> PooledFeatures:
    """Run ``encode`` (images in [-1, 1] → tokens (B, N, D)) over ``dataset`` in order, without flips."""
    sampler = ResumableSampler(len(dataset), shuffle=False, flip=False, drop_last=False, batch_size=batch_size)
    loader = build_loader(dataset, sampler, batch_size, workers, device.type == "cuda", drop_last=False)
    rows: list[torch.Tensor] = []
    index: list[torch.Tensor] = []
    total = sq = None
    count = 0
    num_tokens = 0
    bad = 0
    with progress(len(dataset), 0, desc, enabled=True, unit="img") as bar:
        for batch in loader:
            n_in = len(batch["index"])
            batch, n_bad = drop_bad(batch)
            bad += n_bad
            if len(batch["index"]):
                tokens, pooled = encode_pooled(encode, batch["image"], device, precision)
                num_tokens = tokens.shape[1]
                rows.append(pooled.cpu())
                index.append(batch["index"].long())
                flat = tokens.reshape(-1, tokens.shape[-1]).double()
                total = flat.sum(0) if total is None else total + flat.sum(0)
                sq = flat.square().sum(0) if sq is None else sq + flat.square().sum(0)
                count += flat.shape[0]
            bar.update(n_in)
    if bad:
        logger.warning("%s: %d unreadable images left out of the probe", dataset.source or desc, bad)
    if not rows:
        raise DataError(f"{dataset.source or desc}: no readable images")
    mean = (total / count).cpu()
    std = (sq / count - (total / count).square()).clamp_min(0).sqrt().cpu()
    return PooledFeatures(torch.cat(rows), torch.cat(index), mean, std, num_tokens)


def noise_seed(seed: int, split: str, index: int) -> int:
    """The 63-bit seed of image ``index`` of ``split`` (``train``/``val``): unrelated streams for each triple."""
    state = np.random.SeedSequence([seed, _SPLIT_STREAM[split], index]).generate_state(2, dtype=np.uint64)
    return int(state[0] >> np.uint64(1))


def image_noise(seed: int, split: str, indices: Sequence[int], shape: tuple[int, int]) -> torch.Tensor:
    """Standard normal ε (len(indices), N, C), float32: image ``i``'s ε depends on ``(seed, split, i)`` only
    (drawn on the CPU, so it is the same on every machine and device)."""
    out = torch.empty(len(indices), *shape)
    gen = torch.Generator()
    for row, i in enumerate(indices):
        gen.manual_seed(noise_seed(seed, split, int(i)))
        torch.randn(shape, generator=gen, out=out[row])
    return out


def pooled_noise(seed: int, split: str, indices: Sequence[int], shape: tuple[int, int],
                 chunk: int = 1024) -> torch.Tensor:
    """``image_noise(...).mean(1)``, (len(indices), C), computed ``chunk`` images at a time."""
    parts = [image_noise(seed, split, indices[s:s + chunk], shape).mean(1) for s in range(0, len(indices), chunk)]
    return torch.cat(parts) if parts else torch.empty(0, shape[1])


def pooled_flow_features(z_bar: torch.Tensor, eps_bar: torch.Tensor, t: float) -> torch.Tensor:
    """Mean-pooled ``x_t`` from the pooled latents and noise: ``pool((1−t)z + tε) = (1−t)·z̄ + t·ε̄`` (exact)."""
    return (1.0 - t) * z_bar + t * eps_bar


# ---------------------------------------------------------------------------------------------------------
# Linear classifier
# ---------------------------------------------------------------------------------------------------------
def standardize(train: torch.Tensor, val: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Centre and scale each feature with the train split's mean and std (constant features stay at 0)."""
    mean = train.mean(0)
    std = train.std(0, unbiased=False)
    std = torch.where(std > 1e-12 * (1 + mean.abs()), std, torch.ones_like(std))
    return (train - mean) / std, (val - mean) / std


def fit_linear(x: torch.Tensor, y: torch.Tensor, num_classes: int, classifier: str, weight_decay: float,
               max_iter: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimise ``mean CE(x·W + b, y) + weight_decay/2·‖W‖²`` from zero; returns ``W`` (D, K) and ``b`` (K,)
    as float32 CPU tensors. ``classifier``: ``"torch"`` (L-BFGS on ``device``) or ``"sklearn"``."""
    if classifier == "torch":
        return _fit_torch(x, y, num_classes, weight_decay, max_iter, device)
    if classifier == "sklearn":
        return _fit_sklearn(x, y, num_classes, weight_decay, max_iter)
    raise RectokError(f"unknown classifier {classifier!r}; choose one of {', '.join(CLASSIFIERS)}")


def _fit_torch(x: torch.Tensor, y: torch.Tensor, num_classes: int, weight_decay: float, max_iter: int,
               device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.to(device, torch.float32)
    y = y.to(device)
    n = x.shape[0]
    w = torch.zeros(x.shape[1], num_classes, device=device, requires_grad=True)
    b = torch.zeros(num_classes, device=device, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, history_size=20, tolerance_grad=1e-7,
                            tolerance_change=1e-10, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad(set_to_none=False)
        loss = torch.zeros((), device=device)
        for s in range(0, n, CLASSIFIER_CHUNK):
            part = F.cross_entropy(x[s:s + CLASSIFIER_CHUNK] @ w + b, y[s:s + CLASSIFIER_CHUNK],
                                   reduction="sum") / n
            part.backward()
            loss += part.detach()
        reg = 0.5 * weight_decay * w.square().sum()
        reg.backward()
        return loss + reg.detach()

    opt.step(closure)
    if opt.state[w].get("n_iter", 0) >= max_iter:
        logger.warning("linear probe: L-BFGS stopped at --max-iter %d before converging", max_iter)
    return w.detach().cpu(), b.detach().cpu()


def _fit_sklearn(x: torch.Tensor, y: torch.Tensor, num_classes: int, weight_decay: float,
                 max_iter: int) -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    xs, ys = x.double().numpy(), y.numpy()
    clf = LogisticRegression(C=1.0 / (weight_decay * len(xs)), max_iter=max_iter, tol=1e-8)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        clf.fit(xs, ys)
    if any(issubclass(w.category, ConvergenceWarning) for w in caught):
        logger.warning("linear probe: LogisticRegression stopped at --max-iter %d before converging", max_iter)
    coef = torch.from_numpy(clf.coef_).float()
    bias = torch.from_numpy(clf.intercept_).float()
    if coef.shape[0] == 1:  # two classes: sklearn fits one logit, class 1 vs class 0
        coef = torch.cat([torch.zeros_like(coef), coef])
        bias = torch.cat([torch.zeros_like(bias), bias])
    w = torch.zeros(x.shape[1], num_classes)
    b = torch.full((num_classes,), -math.inf)
    cls = torch.from_numpy(clf.classes_).long()
    w[:, cls] = coef.T
    b[cls] = bias
    return w, b


def topk_accuracy(logits: torch.Tensor, y: torch.Tensor, k: int) -> float:
    """Fraction of rows whose label is among the ``k`` largest logits."""
    top = logits.topk(min(k, logits.shape[1]), dim=1).indices
    return int((top == y[:, None]).any(1).sum()) / len(y)


def probe_accuracy(train_x: torch.Tensor, train_y: torch.Tensor, val_x: torch.Tensor, val_y: torch.Tensor,
                   num_classes: int, classifier: str = "torch", weight_decay: float = 1e-4, max_iter: int = 500,
                   device: torch.device | str = "cpu") -> dict[str, float | None]:
    """Standardise, fit on train, score on val: ``{"top1": …, "top5": … or None (fewer than 10 classes)}``."""
    tx, vx = standardize(train_x.float(), val_x.float())
    w, b = fit_linear(tx, train_y, num_classes, classifier, weight_decay, max_iter, torch.device(device))
    logits = vx @ w + b
    top5 = topk_accuracy(logits, val_y, 5) if num_classes >= TOP5_MIN_CLASSES else None
    return {"top1": topk_accuracy(logits, val_y, 1), "top5": top5}


# ---------------------------------------------------------------------------------------------------------
# Chance level and the t = 1 check
# ---------------------------------------------------------------------------------------------------------
def chance_levels(num_classes: int) -> dict[str, float | None]:
    """Accuracy of a uniform random guess: top-1 ``1/K``, top-5 ``5/K`` (None below 10 classes)."""
    return {"top1": 1.0 / num_classes,
            "top5": 5.0 / num_classes if num_classes >= TOP5_MIN_CLASSES else None}


def majority_levels(val_y: torch.Tensor, num_classes: int) -> dict[str, float | None]:
    """Best accuracy of any label-independent predictor on this val split: top-1 = frequency of the most common
    class, top-5 = summed frequencies of the five most common (None below 10 classes)."""
    freq = torch.bincount(val_y, minlength=num_classes).double() / len(val_y)
    top = freq.sort(descending=True).values
    return {"top1": top[0].item(), "top5": top[:5].sum().item() if num_classes >= TOP5_MIN_CLASSES else None}


def chance_limit(majority: float, n_val: int, sigmas: float = CHANCE_SIGMAS, margin: float = CHANCE_MARGIN) -> float:
    """``majority + sigmas·sqrt(majority·(1 − majority)/n_val) + margin``: the highest accuracy still 'at
    chance' (binomial standard deviation of a val accuracy over ``n_val`` images)."""
    return majority + sigmas * math.sqrt(majority * (1.0 - majority) / n_val) + margin


@dataclass
class ChanceCheck:
    """The t = 1 sanity check: pure noise must score at chance."""
    t: float
    accuracy: dict[str, float | None]
    chance: dict[str, float | None]  # uniform guess
    majority: dict[str, float | None]  # best label-independent predictor
    limit: dict[str, float | None]
    passed: bool


def check_chance(accuracy: dict[str, float | None], val_y: torch.Tensor, num_classes: int,
                 t: float = 1.0) -> ChanceCheck:
    """Compare the accuracies at t = 1 on the val labels ``val_y`` with their chance limits (every metric that
    has a value)."""
    majority = majority_levels(val_y, num_classes)
    limit = {k: None if m is None else chance_limit(m, len(val_y)) for k, m in majority.items()}
    passed = all(accuracy.get(k) is None or accuracy[k] <= lim for k, lim in limit.items() if lim is not None)
    return ChanceCheck(t, dict(accuracy), chance_levels(num_classes), majority, limit, passed)


# ---------------------------------------------------------------------------------------------------------
# The probe along the flow
# ---------------------------------------------------------------------------------------------------------
@dataclass
class FlowCurve:
    """Accuracies at each t, plus the t = 1 chance check."""
    points: list[dict[str, float | None]]  # [{"t", "top1", "top5"}, ...] in grid order
    chance: dict[str, float | None]
    chance_check: ChanceCheck


def probe_along_flow(z_train: torch.Tensor, eps_train: torch.Tensor, y_train: torch.Tensor,
                     z_val: torch.Tensor, eps_val: torch.Tensor, y_val: torch.Tensor, times: Sequence[float],
                     num_classes: int, classifier: str = "torch", weight_decay: float = 1e-4, max_iter: int = 500,
                     device: torch.device | str = "cpu", label: str = "probe") -> FlowCurve:
    """Probe pooled ``x_t = (1−t)·z̄ + t·ε̄`` at every ``t`` (and at t = 1 for the chance check)."""
    results: dict[float, dict[str, float | None]] = {}
    for t in sorted(set(times) | {1.0}):
        acc = probe_accuracy(pooled_flow_features(z_train, eps_train, t), y_train,
                             pooled_flow_features(z_val, eps_val, t), y_val, num_classes, classifier,
                             weight_decay, max_iter, device)
        results[t] = acc
        logger.info("%s: t=%.3g top-1 %.4f%s", label, t, acc["top1"],
                    "" if acc["top5"] is None else f" top-5 {acc['top5']:.4f}")
    check = check_chance(results[1.0], y_val, num_classes)
    if not check.passed:
        logger.warning("CHANCE CHECK FAILED for %s: at t = 1 (pure noise) top-1 %.4f%s exceeds the chance limit "
                       "%.4f%s (chance %.4f, n_val %d): the features leak labels or the probe is broken", label,
                       check.accuracy["top1"], "" if check.accuracy["top5"] is None else
                       f" / top-5 {check.accuracy['top5']:.4f}", check.limit["top1"],
                       "" if check.limit["top5"] is None else f" / {check.limit['top5']:.4f}",
                       check.chance["top1"], len(y_val))
    return FlowCurve([{"t": t, **results[t]} for t in times], check.chance, check)

