"""The settings of ``rectok sweep`` (:class:`SweepConfig`), without torch: the sampling options of ``rectok sample``
plus the scale list, the reference and the optional full-size run; the sweep itself is in
:mod:`rectok_core.sampling.sweep`."""
from __future__ import annotations

import math
from dataclasses import dataclass

from rectok_core.config import nonneg, opt, positive
from rectok_core.errors import RectokError
from rectok_core.sampling.config import GUIDANCE, SampleConfig


@dataclass
class SweepConfig(SampleConfig):
    """``rectok sweep``: sample and evaluate a DiT^DH at several guidance scales; pick the best by FID."""
    n: int = opt(10000, "samples per scale (official sweep: 10,000)", flag="--num", aliases=("-n",))
    cfg: str = opt("cfg", "guidance method of the sweep (cfg or autoguidance; none has no scale)", GUIDANCE)
    scale: float = opt(1.0, "not used by a sweep (see --scales)", cli=False)
    out: str = opt("sweep", "sweep folder: scale_W/ sample folders (each with its eval.json), sweep.json, sweep.csv, "
                            "sweep.md and sweep.png; final_scale_W/ for --final-n")
    scales: str = opt("1.0,1.2,1.29,1.4", "guidance scales to compare, comma-separated (1 = no guidance)")
    final_n: int = opt(0, "then sample and evaluate this many images at the best scale (the official protocol: "
                          "50000 after a 10,000-sample sweep; 0: no full-size run)")
    ref_stats: str = opt("", "reference statistics .npz (mu/sigma: ADM reference batch, torch-fidelity or `rectok "
                             "fid-stats`)")
    ref_data: str = opt("", "folder of reference images (also gives precision/recall)")
    ref_image_size: int = opt(0, "ADM center crop of the --ref-data images (0: as stored)")
    inception_weights: str = opt("", "InceptionV3 weights file (default: resolved offline; torch-fidelity's original "
                                     "file also gives the IS)")
    eval_batch_size: int = opt(50, "images per Inception batch")
    workers: int = opt(0, "image-decoding worker processes of the evaluation")

    def validate(self) -> None:
        self.scale_list()
        super().validate()
        if self.cfg == "none":
            raise RectokError("--cfg none has no guidance scale to sweep: use --cfg cfg or --cfg autoguidance")
        if bool(self.ref_stats) == bool(self.ref_data):
            raise RectokError("give exactly one reference: --ref-stats FILE or --ref-data DIR")
        nonneg("final_n", self.final_n)
        nonneg("ref_image_size", self.ref_image_size)
        positive("eval_batch_size", self.eval_batch_size)
        nonneg("workers", self.workers)

    def scale_list(self) -> list[float]:
        """The ``--scales`` as floats, in the order given; a one-line error for a malformed list."""
        items = [s.strip() for s in str(self.scales).split(",")]
        if not any(items):
            raise RectokError("--scales is empty: give guidance scales such as 1.0,1.2,1.29,1.4")
        scales, names = [], {}
        for item in items:
            try:
                w = float(item)
            except ValueError:
                raise RectokError(f"--scales {self.scales!r}: {item!r} is not a number (e.g. 1.0,1.2,1.29,1.4)") \
                    from None
            if not math.isfinite(w) or w < 0:
                raise RectokError(f"--scales {self.scales!r}: {item!r} must be a finite number >= 0")
            name = scale_folder(w)
            if name in names:
                raise RectokError(f"--scales {self.scales!r}: {names[name]} and {item} are the same scale")
            names[name] = item
            scales.append(w)
        return scales


def scale_folder(scale: float) -> str:
    """The sample folder of one scale inside the sweep folder: ``scale_1.29``, ``scale_1`` for 1.0."""
    return f"scale_{scale:.6g}"
