"""The README's table of generator families and sizes: parameters and GFLOPs per image of every registered
generator (``rectok_core.models.generators.GENERATORS``, every size), built on the meta device (nothing allocated)
and counted with the bench's FLOP counter (``rectok_core.tools.bench.count_flops``).

    python tools/generator_table.py                    # print the table (markdown)
    python tools/generator_table.py --write README.md  # replace the table between the markers in README.md

Figures: trainable parameters; FLOPs of one forward pass for one image (batch 1, no guidance) on the latents of
256-px ImageNet images under the default tokenizer, RecTok (C = 128, 16×16 tokens; :data:`LATENT`), 1000
classes, counted by ``torch.utils.flop_counter`` (matmuls, convolutions, attention; a multiply-add is 2 FLOPs —
the DiT papers count multiply-adds, half these numbers). A guided sampling step costs two forward passes; a
training step about three (forward + backward).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from rectok_core.models.generators import GENERATORS, build_generator
from rectok_core.tools.bench import count_flops

#: (C, h, w): RecTok's latents of a 256-px image (the default tokenizer: 16×16 tokens of 128 channels)
LATENT = (128, 16, 16)
NUM_CLASSES = 1000
#: Sizes in table order (a family's other sizes follow in registry order).
SIZE_ORDER = ("s", "b", "l", "xl", "h", "mini", "tiny")
BEGIN = "<!-- generator-table: made by python tools/generator_table.py --write README.md -->"
END = "<!-- /generator-table -->"
HEADER = ("| model | official name | width × depth, heads | parameters | GFLOPs / image |\n"
          "|---|---|---|---|---|")


def models() -> list[tuple[str, str]]:
    """(family, size) of every registered generator, families in registry order, sizes in :data:`SIZE_ORDER`."""
    out = []
    for family in GENERATORS.values():
        rank = {s: i for i, s in enumerate(SIZE_ORDER)}
        out += [(family.name, s) for s in sorted(family.sizes, key=lambda s: rank.get(s, len(rank)))]
    return out


def shape(config) -> str:
    """``width × depth, heads`` of the trunk (and of the DDT head where the family has one)."""
    text = f"{config.width} × {config.depth}, {config.heads}"
    if hasattr(config, "head_width"):
        text += f"; head {config.head_width} × {config.head_depth}, {config.head_heads}"
    return text


def row(family: str, size: str, latent: tuple[int, int, int] = LATENT, num_classes: int = NUM_CLASSES,
        **overrides) -> dict:
    """One table row: the model on the meta device, its trainable parameters and forward FLOPs for one image."""
    C, h, w = latent
    with torch.device("meta"):
        model = build_generator(family, size, C, h, num_classes, **overrides).eval()
        x, t, y = torch.zeros(1, C, h, w), torch.zeros(1), torch.zeros(1, dtype=torch.long)
    with torch.no_grad():
        flops = count_flops(lambda: model(x, t, y))
    fam = GENERATORS[family]
    return {"model": fam.model_name(size), "official": [k for k, v in fam.official.items() if v == size],
            "shape": shape(model.config), "params": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "flops": flops}


def format_row(r: dict) -> str:
    official = ", ".join(f"`{name}`" for name in r["official"]) or "—"
    return (f"| `{r['model']}` | {official} | {r['shape']} | {r['params'] / 1e6:.2f}M | "
            f"{r['flops'] / 1e9:.2f} |")


def table(rows: list[dict]) -> str:
    """The markdown table, between the :data:`BEGIN` / :data:`END` markers."""
    return "\n".join([BEGIN, HEADER, *(format_row(r) for r in rows), END])


def write(path: Path, text: str) -> None:
    """Replace the marked table in ``path`` with ``text`` (the markers must be there once)."""
    doc = path.read_text(encoding="utf-8")
    if doc.count(BEGIN) != 1 or doc.count(END) != 1:
        raise SystemExit(f"{path}: expected the markers {BEGIN!r} and {END!r} once each")
    head, rest = doc.split(BEGIN)
    path.write_text(head + text + rest.split(END, 1)[1], encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", metavar="FILE", help="replace the table between the markers in FILE")
    args = parser.parse_args(argv)
    text = table([row(family, size) for family, size in models()])
    if args.write:
        write(Path(args.write), text)
    else:
        sys.stdout.write(text + "\n")


if __name__ == "__main__":
    main()
