"""Adding a generator family is one module plus one ``GENERATORS.declare`` line: a toy family written the way the
README says (a module ending with ``register_generator``) is named, built, trained and sampled by the shared code."""
import textwrap

import torch

from rectok_core.data.latent_stats import LatentStats
from rectok_core.models.generators import (
    GENERATORS,
    build_generator,
    family_of_model,
    generator_table,
    model_names,
    parse_model_name,
)
from rectok_core.sampling.generate import build_velocity, generate_latents
from rectok_core.training.dit import build_dit_trainer
from rectok_core.training.dit_config import DiTOptimConfig
from rectok_core.training.engine import StepRandom

TOY_MODULE = '''
from dataclasses import dataclass

from rectok_core.models.generators.base import GeneratorFamily, register_generator
from rectok_core.models.generators.sit import SiT, SiTConfig


@dataclass(frozen=True)
class ToyConfig(SiTConfig):
    pass


class Toy(SiT):
    label = "Toy"


register_generator(GeneratorFamily(name="toy", model_class=Toy, config_class=ToyConfig,
                                   sizes={"tiny": dict(width=32, depth=1, heads=2)}, objective="flow-uniform",
                                   prediction="velocity", official={"Toy_tiny": "tiny"}, description="a toy"))
'''


def test_a_new_family_is_one_module_and_one_line(tmp_path, monkeypatch):
    (tmp_path / "toy_generator.py").write_text(textwrap.dedent(TOY_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    GENERATORS.values()  # every declared family registered now, so the registry restored below still holds them
    for attr in ("_entries", "_modules", "_about"):  # the registry as it was, after this test
        monkeypatch.setattr(GENERATORS, attr, dict(getattr(GENERATORS, attr)))

    GENERATORS.declare("toy", "toy_generator", "a toy")  # the one line

    assert parse_model_name("toy-tiny") == parse_model_name("Toy_tiny") == ("toy", "tiny")
    assert "toy-tiny" in model_names() and any(r["family"] == "toy" for r in generator_table())
    model = build_generator("toy-tiny", None, in_channels=4, input_size=8, num_classes=3)
    assert family_of_model(model) == "toy" and type(model).__name__ == "Toy"

    # the shared trainer steps it with its family's objective; the shared sampler samples it
    stats = LatentStats(mean=torch.zeros(4, dtype=torch.float64), std=torch.ones(4, dtype=torch.float64), tokens=0,
                        images=0, tokenizer_sha256="", tokenizer_weights="ema", data_fingerprint="")
    torch.manual_seed(0)
    tr = build_dit_trainer("tiny", (4, 8, 8), 3, 0.1, DiTOptimConfig(lr=1e-3), stats, torch.device("cpu"), "fp32",
                           family="toy")
    before = [p.detach().clone() for p in tr.model.parameters()]
    gen = torch.Generator().manual_seed(1)
    batch = {"mean": torch.randn(6, 4, 8, 8, generator=gen), "logvar": torch.full((6, 4, 8, 8), -8.0),
             "label": torch.tensor([0, 1, 2, 0, 1, 2])}
    metrics, n = tr.step(lambda: batch, StepRandom(0, 0, torch.device("cpu")).at(0))
    assert n == 6 and torch.isfinite(metrics["loss"])
    assert any(not torch.equal(a, b) for a, b in zip(before, tr.model.parameters()))
    tr.model.eval()
    velocity = build_velocity(tr.model, "cfg", 1.5, null_class=3)
    z = generate_latents(velocity, torch.arange(2), torch.tensor([0, 1]), 0, (4, 8, 8), 3, "euler",
                         torch.device("cpu"), "fp32", shift=1.0)
    assert z.shape == (2, 4, 8, 8) and torch.isfinite(z).all()
