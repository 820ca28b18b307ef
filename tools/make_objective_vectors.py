"""Generate the reference loss vectors of the generator objectives (tests/data/generators/objectives.pt) from the
official RecTok code's ``transport`` (``create_transport()`` for SiT, ``create_transport(use_cosine_loss=True,
use_lognorm=True)`` for LightningDiT) and ``diffusion`` (``create_diffusion("")`` for DiT), run offline on the CPU.

The official objectives draw t and the noise from the global RNG; here they are replaced by fixed tensors (the
transport's ``sample`` returns them; the diffusion gets ``t`` and ``noise`` as arguments), so the saved loss terms
can be compared with rectok's ``flow_terms`` / ``diffusion_terms`` at the same draws. The model is the fixed
closed-form function :func:`toy_model` (also in the test), so no network weights are involved. Never imported by
the package or the tests; needs scipy and a checkout of the official code::

    python tools/make_objective_vectors.py --official /tmp/official --commit $(git -C /tmp/official rev-parse HEAD)
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

OUT = Path(__file__).resolve().parents[1] / "tests" / "data" / "generators" / "objectives.pt"


def toy_model(x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, out_channels: int) -> torch.Tensor:
    """A fixed nonlinear function of (x, t, y) with ``out_channels`` channels (the test has the same one)."""
    tt = t.float().view(-1, 1, 1, 1)
    base = torch.tanh(0.7 * x + 0.1 * tt) - 0.2 * x.roll(1, dims=2) + 0.05 * (y.float().view(-1, 1, 1, 1) + 1)
    if out_channels == x.shape[1]:
        return base
    return torch.cat([base, torch.tanh(0.5 * x - 0.3 * tt / 1000.0)], dim=1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--official", type=Path, required=True)
    ap.add_argument("--commit", required=True)
    args = ap.parse_args()
    sys.path.insert(0, str(args.official))
    from diffusion import create_diffusion
    from transport import create_transport

    gen = torch.Generator().manual_seed(19)
    out: dict[str, object] = {"commit": args.commit}
    for shape in ((4, 4, 8, 8), (3, 32, 4, 4)):  # channel-smallest and spatial-smallest latents
        B, C = shape[:2]
        x1 = torch.randn(shape, generator=gen)
        x0 = torch.randn(shape, generator=gen)
        y = torch.randint(0, 10, (B,), generator=gen)
        t = torch.rand(B, generator=gen)
        key = "x".join(map(str, shape))
        for name, kwargs in (("sit", {}), ("lightningdit", dict(use_cosine_loss=True, use_lognorm=True))):
            tr = create_transport(**kwargs)
            tr.sample = lambda x, *a, _t=t, _x0=x0: (_t, _x0, x)
            terms = tr.training_losses(lambda x, t, y, _c=C: toy_model(x, t, y, _c), x1, dict(y=y))
            out[f"{name}_{key}"] = dict(x1=x1, x0=x0, y=y, t=t, mse=terms["loss"].float(),
                                        cos=terms.get("cos_loss", torch.zeros(B)).float())
        k = torch.tensor([0, 1, 500, 999][:B] + [37] * max(0, B - 4))
        noise = torch.randn(shape, generator=gen)
        diff = create_diffusion("")
        terms = diff.training_losses(lambda x, t, y, _c=2 * C: toy_model(x, t, y, _c), x1, k, dict(y=y), noise=noise)
        out[f"dit_{key}"] = dict(x1=x1, noise=noise, y=y, t=k, mse=terms["mse"].float(), vb=terms["vb"].float())
    OUT.parent.mkdir(parents=True, exist_ok=True)
    torch.save(out, OUT)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
