"""Teachers: registry (every registered teacher built, run and checked), random-init shapes, weights loading
(timm / HF transformers / resampled layouts), offline behaviour and preprocessing. Everything runs on CPU, without
network, in a few seconds."""
from __future__ import annotations

import os
import threading

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from rectok_core import teachers as registry
from rectok_core.errors import CheckpointError, RectokError, WeightsNotFound
from rectok_core.teachers import TEACHERS, available_teachers, build_teacher, teacher_dim
from rectok_core.teachers import base as T
from rectok_core.teachers import weights as W
from rectok_core.utils import env

NAMED = [n for n in available_teachers() if n != "none"]


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    """No test may touch the network or a real hub cache."""
    monkeypatch.setenv("RECTOK_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(W, "_hf_cached_file", lambda repo_id: None)


@pytest.fixture
def shallow_timm(monkeypatch):
    """timm models with one block: the registry tests build every teacher, ViT-L ones included, in seconds."""
    import timm

    create = timm.create_model
    monkeypatch.setattr(timm, "create_model", lambda *a, **kw: create(*a, **{**kw, "depth": 1}))


@pytest.fixture(scope="module")
def v3s() -> T.ViTTeacher:
    torch.manual_seed(0)
    return build_teacher("dinov3-s", None, grid=(8, 8), image_size=32, pretrained="random")


@pytest.fixture(scope="module")
def v2s() -> T.ViTTeacher:
    torch.manual_seed(0)
    return build_teacher("dinov2-s", None, grid=(4, 6), image_size=32, pretrained="random")


def _images(b: int = 2, size: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, size, size, generator=g) * 2 - 1


def _build_small(name: str, grid: tuple[int, int], image_size: int) -> T.Teacher:
    """``name`` at random init where the teacher supports it, else with its own (offline) weights."""
    spec = TEACHERS[name]
    try:
        return build_teacher(name, None, grid, image_size, pretrained="random" if spec.random_init else "auto")
    except WeightsNotFound as e:  # a teacher without random init and without local weights
        pytest.skip(f"{name}: {e}")


# ---------------------------------------------------------------------------------------------------- registry


def test_registry_is_consistent():
    names = available_teachers()
    assert names[-1] == "none" and set(names) == set(TEACHERS) and len(set(names)) == len(names)
    assert available_teachers(include_none=False) == names[:-1]
    assert "dinov3" in names  # the official teacher (recipe §1.8)
    assert teacher_dim("none") == 0 and TEACHERS["none"].builder is None
    assert build_teacher("none", None, grid=(16, 16), image_size=256) is None
    for name in NAMED:
        spec = TEACHERS[name]
        assert spec.name == name and spec.dim > 0 and spec.description and callable(spec.builder), name
        assert teacher_dim(name) == spec.dim
    with pytest.raises(RectokError, match=r"unknown --teacher 'clip'; choose one of .*none"):
        teacher_dim("clip")
    with pytest.raises(RectokError, match="--teacher-resize"):
        build_teacher("dinov3-s", None, grid=(8, 8), image_size=32, resize="bicubic", pretrained="random")
    with pytest.raises(ValueError, match="twice"):
        registry.register_teacher(TEACHERS["dinov3"])
    with pytest.raises(ValueError, match="builder"):
        registry.register_teacher(T.TeacherSpec("nobuilder", 8))
    assert "nobuilder" not in TEACHERS


def test_every_declared_teacher_is_registered_by_its_module():
    """Each declaration line names the module that registers it, with the declared description; the names and the
    help come without importing any family module or torch."""
    import subprocess
    import sys

    code = ("import sys; from rectok_core.teachers import TEACHERS, teacher_help; names = TEACHERS.names(); "
            "teacher_help('t'); print(len(names), sorted(m for m in sys.modules "
            "if m == 'torch' or m.startswith('rectok_core.teachers.') and m.split('.')[-1] in ('dino', 'siglip', "
            "'inception', 'base')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split(" ", 1)
    assert int(out[0]) == len(TEACHERS) and out[1].strip() == "[]"
    for name in TEACHERS:
        spec = TEACHERS[name]
        assert spec.name == name and spec.description == TEACHERS.description(name) != "", name


def test_cli_help_and_choices_come_from_the_registry():
    from rectok_core.metrics.probe_run import ProbeConfig
    from rectok_core.training.config import TokenizerLossConfig

    f = TokenizerLossConfig.__dataclass_fields__["teacher"]
    assert f.metadata["choices"] == available_teachers()
    for name in available_teachers():
        assert f"{name} = {TEACHERS[name].description}" in f.metadata["help"]
    probe_help = ProbeConfig.__dataclass_fields__["teacher"].metadata["help"]
    assert all(n in probe_help for n in NAMED) and "none =" not in probe_help


def test_registered_teacher_is_buildable_by_name(monkeypatch):
    """The seam: one ``register_teacher`` call makes a teacher buildable; the builder gets the checked args."""
    seen = {}

    def builder(spec, weights, grid, image_size, resize, pretrained):
        seen.update(spec=spec, weights=weights, grid=grid, image_size=image_size, resize=resize, pretrained=pretrained)
        return "built"

    monkeypatch.setattr(registry.registry, "TEACHERS", TEACHERS.copy())
    spec = registry.register_teacher(T.TeacherSpec("toy", 7, "a toy", builder=builder, random_init=False))
    assert registry.teacher_dim("toy") == 7 and "toy" in registry.available_teachers()
    assert registry.build_teacher("toy", "", [2, 3], 32.0) == "built"
    assert seen == dict(spec=spec, weights=None, grid=(2, 3), image_size=32, resize="native", pretrained="auto")
    with pytest.raises(RectokError, match="--teacher-init random is not available for --teacher toy"):
        registry.build_teacher("toy", None, (2, 3), 32, pretrained="random")


@pytest.mark.parametrize("name", NAMED)
def test_every_registered_teacher_builds_and_runs(name, shallow_timm):
    """Random init (or the teacher's own offline weights), tiny grid: frozen, (B, rows·cols, dim) tokens."""
    torch.manual_seed(0)
    t = _build_small(name, (2, 3), 32)
    assert isinstance(t, T.Teacher) and t.name == name and t.dim == teacher_dim(name) == TEACHERS[name].dim
    assert t.grid == (2, 3) and not t.training
    assert all(not p.requires_grad for p in t.parameters())
    y = t(_images(2, 32).requires_grad_(True))
    assert y.shape == (2, 6, teacher_dim(name)) and not y.requires_grad and torch.isfinite(y).all()


@pytest.mark.parametrize("name", NAMED)
def test_every_registered_teacher_applies_its_normalisation(name, shallow_timm):
    """A per-channel constant image stays constant through any resize, so the network's first convolution must
    see exactly ``(value − mean) / std`` with the spec's mean/std (ImageNet's, SigLIP's 0.5, Inception's 128/255)."""
    spec = TEACHERS[name]
    t = _build_small(name, (2, 2), 32)
    seen: list[torch.Tensor] = []
    conv = next(m for m in t.modules() if isinstance(m, nn.Conv2d))
    conv.register_forward_pre_hook(lambda mod, args: seen.append(args[0].detach().float().clone()))
    values = torch.tensor([0.2, 0.5, 0.9])
    t((values * 2 - 1).view(1, 3, 1, 1).expand(1, 3, 32, 32).contiguous())
    expected = ((values - torch.tensor(spec.mean)) / torch.tensor(spec.std)).view(1, 3, 1, 1)
    torch.testing.assert_close(seen[0], expected.expand_as(seen[0]), atol=1e-5, rtol=1e-5)


def test_vit_dims_match_architectures():
    import timm

    for name, spec in TEACHERS.items():
        if spec.arch:
            m = timm.create_model(spec.arch, pretrained=False, img_size=spec.patch * 2, num_classes=0, depth=1)
            assert m.num_features == spec.dim, name
            assert m.patch_embed.patch_size == (spec.patch, spec.patch), name
    assert TEACHERS["dinov3"].arch == "vit_large_patch16_dinov3"
    assert TEACHERS["dinov2"].arch == "vit_large_patch14_dinov2"


# ------------------------------------------------------------------------------------------- random teachers


@pytest.mark.parametrize("which,grid,dim", [("v3s", (8, 8), 384), ("v2s", (4, 6), 384)])
def test_random_teacher_shapes_frozen(which, grid, dim, request):
    teacher = request.getfixturevalue(which)
    assert teacher.dim == dim and teacher.grid == grid and teacher.real is False
    x = _images().requires_grad_(True)
    y = teacher(x)
    assert y.shape == (2, grid[0] * grid[1], dim)
    assert not y.requires_grad and torch.isfinite(y).all()
    assert all(not p.requires_grad for p in teacher.parameters())
    teacher.train()
    assert not teacher.training and not any(m.training for m in teacher.modules())
    nn.Sequential(teacher).train()  # a parent switching to train mode leaves the teacher in eval
    assert not teacher.training
    with pytest.raises(ValueError, match="32px"):
        teacher(_images(size=48))


def test_random_init_warns(caplog):
    with caplog.at_level("WARNING", logger="rectok_core.teachers"):
        build_teacher("dinov2-s", None, grid=(2, 2), image_size=28, pretrained="random")
    assert "RANDOMLY INITIALISED" in caplog.text


# ---------------------------------------------------------------------------------------------------- weights


def test_weights_roundtrip_pth_and_safetensors(v3s, tmp_path):
    from safetensors.torch import save_file

    x = _images()
    ref = v3s(x)
    pth = tmp_path / "dinov3s.pth"
    torch.save({"model": v3s.model.state_dict()}, pth)  # timm layout inside a wrapper
    st = tmp_path / "dinov3s.safetensors"
    save_file({k: v.contiguous() for k, v in v3s.state_dict().items()}, str(st))  # "model." prefix
    for f in (pth, st):
        t = build_teacher("dinov3-s", str(f), grid=(8, 8), image_size=32)
        assert t.real and t.source == str(f)
        torch.testing.assert_close(t(x), ref, rtol=0, atol=0)


def test_dinov2_weights_resampled_to_other_grid(v2s, tmp_path):
    """A DINOv2 checkpoint made for another resolution loads: timm's filter resamples pos_embed (this is how
    Meta's 518-px release loads into the 224-px teacher)."""
    f = tmp_path / "dinov2s.pth"
    sd = dict(v2s.model.state_dict())
    sd["pos_embed"] = torch.randn(1, 1 + 3 * 3, 384)  # a checkpoint for a 3×3 grid (42 px)
    sd["mask_token"] = torch.zeros(1, 384)  # Meta's release carries the pre-training mask token
    torch.save(sd, f)
    t = build_teacher("dinov2-s", str(f), grid=(4, 6), image_size=32)
    assert t.model.pos_embed.shape[1] == 1 + 24
    assert t(_images()).shape == (2, 24, 384)


def test_wrong_weights_are_clear_errors(v3s, tmp_path):
    f = tmp_path / "small.pth"
    torch.save(v3s.model.state_dict(), f)
    with pytest.raises(CheckpointError,
                       match=r"--teacher-weights .*small\.pth does not fit --teacher dinov3-b.*wrong shape"):
        build_teacher("dinov3-b", str(f), grid=(8, 8), image_size=32)
    bad = tmp_path / "bad.pth"
    torch.save({"foo.weight": torch.zeros(3)}, bad)
    with pytest.raises(CheckpointError, match="missing"):
        build_teacher("dinov3-s", str(bad), grid=(8, 8), image_size=32)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a tensor file")
    with pytest.raises(CheckpointError, match="cannot read"):
        build_teacher("dinov3-s", str(junk), grid=(8, 8), image_size=32)
    with pytest.raises(WeightsNotFound, match="no such file"):
        build_teacher("dinov3-s", str(tmp_path / "nope.pth"), grid=(8, 8), image_size=32)
    with pytest.raises(RectokError, match="contradicts"):
        build_teacher("dinov3-s", str(f), grid=(8, 8), image_size=32, pretrained="random")
    for err in (CheckpointError, WeightsNotFound):
        assert issubclass(err, RectokError)


def _timm_to_hf_dinov3(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse of the loader's conversion: timm Eva keys → HF transformers DINOv3ViTModel keys."""
    names = {"norm1.weight": "norm1.weight", "norm1.bias": "norm1.bias", "norm2.weight": "norm2.weight",
             "norm2.bias": "norm2.bias", "attn.proj.weight": "attention.o_proj.weight",
             "attn.proj.bias": "attention.o_proj.bias", "attn.q_bias": "attention.q_proj.bias",
             "attn.v_bias": "attention.v_proj.bias", "gamma_1": "layer_scale1.lambda1",
             "gamma_2": "layer_scale2.lambda1", "mlp.fc1.weight": "mlp.up_proj.weight",
             "mlp.fc1.bias": "mlp.up_proj.bias", "mlp.fc2.weight": "mlp.down_proj.weight",
             "mlp.fc2.bias": "mlp.down_proj.bias"}
    out = {"embeddings.cls_token": sd["cls_token"], "embeddings.register_tokens": sd["reg_token"],
           "embeddings.mask_token": torch.zeros_like(sd["cls_token"]),
           "embeddings.patch_embeddings.weight": sd["patch_embed.proj.weight"],
           "embeddings.patch_embeddings.bias": sd["patch_embed.proj.bias"],
           "norm.weight": sd["norm.weight"], "norm.bias": sd["norm.bias"]}
    for k, v in sd.items():
        if not k.startswith("blocks."):
            continue
        _, i, rest = k.split(".", 2)
        if rest == "attn.qkv.weight":
            for part, w in zip("qkv", v.chunk(3, dim=0)):
                out[f"layer.{i}.attention.{part}_proj.weight"] = w
        else:
            out[f"layer.{i}.{names[rest]}"] = v
    return {k: v.contiguous() for k, v in out.items()}


def _timm_to_meta_dinov3(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm Eva keys → Meta's original DINOv3 release layout (storage_tokens, ls*.gamma, masked qkv bias)."""
    out: dict[str, torch.Tensor] = {"mask_token": torch.zeros(1, sd["cls_token"].shape[-1]),
                                    "rope_embed.periods": torch.ones(4)}
    for k, v in sd.items():
        if k.endswith(("attn.q_bias", "attn.v_bias")):
            continue
        if k.endswith("attn.qkv.weight"):
            pre = k[: -len("qkv.weight")]
            d = v.shape[1]
            q = sd.get(pre + "q_bias", torch.zeros(d))
            vb = sd.get(pre + "v_bias", torch.zeros(d))
            out[pre + "qkv.bias"] = torch.cat([q, torch.full((d,), 7.0), vb])  # k part is masked to zero
            out[pre + "qkv.bias_mask"] = torch.cat([torch.ones(d), torch.zeros(d), torch.ones(d)])
        k = k.replace("reg_token", "storage_tokens").replace("gamma_1", "ls1.gamma").replace("gamma_2", "ls2.gamma")
        out[k] = v
    return {k: v.contiguous() for k, v in out.items()}


@pytest.mark.parametrize("layout", ["hf", "meta"])
@pytest.mark.parametrize("arch", ["vit_small_patch16_dinov3", "vit_small_patch16_dinov3_qkvb"])
def test_hf_and_meta_dinov3_layouts(arch, layout, tmp_path):
    """The official teacher is loaded with HF AutoModel: that layout (and Meta's original release) converts to
    timm's exactly, and real (non-zero) q/v biases select timm's ``_qkvb`` architecture."""
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(1)
    ref = timm.create_model(arch, pretrained=False, img_size=128, num_classes=0, depth=2).eval()
    with torch.no_grad():
        for n, p in ref.named_parameters():
            if n.endswith(("q_bias", "v_bias", "gamma_1", "gamma_2")):
                p.normal_()
    folder = tmp_path / "dinov3_snapshot"
    folder.mkdir()
    convert = _timm_to_hf_dinov3 if layout == "hf" else _timm_to_meta_dinov3
    save_file(convert(ref.state_dict()), str(folder / "model.safetensors"))

    monkey = pytest.MonkeyPatch()
    monkey.setattr(W, "_create", lambda a, size, pretrained=False: timm.create_model(
        a, pretrained=False, img_size=size, num_classes=0, depth=2))
    try:
        t = build_teacher("dinov3-s", str(folder), grid=(8, 8), image_size=128)
    finally:
        monkey.undo()
    has_bias = t.model.blocks[0].attn.q_bias is not None
    assert has_bias == arch.endswith("_qkvb")
    x = _images(size=128)
    with torch.no_grad():
        expected = ref.forward_features(t.preprocess(x))[:, 5:]
    torch.testing.assert_close(t(x), expected, rtol=0, atol=0)


# ------------------------------------------------------------------------------------------- offline / loading


def test_offline_without_weights_fails_fast(monkeypatch):
    """Offline and no file: the error comes before any model is built or any network is tried."""
    monkeypatch.setattr(W, "_create", lambda *a, **kw: pytest.fail("no model may be built"))
    monkeypatch.setattr(env, "_probe", lambda *a, **kw: pytest.fail("no network probe when offline"))
    with pytest.raises(WeightsNotFound) as info:
        build_teacher("dinov3", None, grid=(16, 16), image_size=256)
    msg = str(info.value)
    assert "\n" not in msg and "--teacher-weights" in msg and "--teacher dinov3" in msg
    assert msg == ("--teacher dinov3 needs pretrained weights: no network and no --teacher-weights FILE given "
                   "(e.g. --teacher-weights /path/dinov3_vitl16.safetensors)")


@pytest.mark.parametrize("name", [n for n in NAMED if TEACHERS[n].tag])
def test_every_hub_teacher_offline_without_weights_is_one_line(name, monkeypatch):
    """Offline (no probe: the env says so) and no file: a one-line error before any model is built."""
    monkeypatch.setattr(W, "_create", lambda *a, **kw: pytest.fail("no model may be built"))
    with pytest.raises(WeightsNotFound) as info:
        build_teacher(name, None, grid=(2, 2), image_size=32)
    msg = str(info.value)
    assert "\n" not in msg and f"--teacher {name} needs pretrained weights" in msg and "--teacher-weights" in msg


def test_probe_failure_sets_hf_offline(monkeypatch):
    """Without offline env vars, a failed probe of huggingface.co marks huggingface_hub offline."""
    monkeypatch.delenv("RECTOK_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(env, "_PROBE_CACHE", {})
    monkeypatch.setattr(env, "_probe", lambda host, port, timeout: False)
    with pytest.raises(WeightsNotFound, match="--teacher-weights"):
        build_teacher("dinov2-s", None, grid=(2, 2), image_size=28)
    assert os.environ.get("HF_HUB_OFFLINE") == "1"


def test_probe_is_bounded(monkeypatch):
    """The probe gives up on a connection attempt that never returns (a DNS lookup or SYN that hangs) instead of
    waiting for it: the attempt here blocks until the test releases it, after the probe has answered."""
    release = threading.Event()

    def hanging_connect(*args, **kwargs):
        release.wait()
        raise OSError("released")

    monkeypatch.setattr(env.socket, "create_connection", hanging_connect)
    try:
        assert env._probe("example.invalid", 443, timeout=0.1) is False
    finally:
        release.set()


def test_hub_cache_used_offline(v2s, tmp_path, monkeypatch):
    f = tmp_path / "model.safetensors"
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in v2s.model.state_dict().items()}, str(f))
    seen = []
    monkeypatch.setattr(W, "_hf_cached_file", lambda repo_id: seen.append(repo_id) or str(f))
    t = build_teacher("dinov2-s", None, grid=(4, 6), image_size=32)
    assert seen == ["timm/vit_small_patch14_dinov2.lvd142m"] and t.real
    torch.testing.assert_close(t(_images()), v2s(_images()), rtol=0, atol=0)


# ----------------------------------------------------------------------------------------------- preprocessing


def _capture_inputs(teacher: T.ViTTeacher) -> list[torch.Tensor]:
    seen: list[torch.Tensor] = []
    teacher.model.patch_embed.register_forward_pre_hook(lambda mod, args: seen.append(args[0].clone()))
    return seen


def test_native_resize_gives_one_patch_per_token(tmp_path):
    t3 = build_teacher("dinov3-s", None, grid=(8, 8), image_size=32, pretrained="random")
    t2 = build_teacher("dinov2-s", None, grid=(4, 6), image_size=32, pretrained="random")
    s3, s2 = _capture_inputs(t3), _capture_inputs(t2)
    x = _images()
    t3(x)
    t2(x)
    assert s3[0].shape == (2, 3, 128, 128)  # 8·16
    assert s2[0].shape == (2, 3, 56, 84)  # (4·14, 6·14)
    mean = torch.tensor(T.IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(T.IMAGENET_STD).view(1, 3, 1, 1)
    expected = (F.interpolate((x + 1) / 2, size=(128, 128), mode="bilinear", align_corners=False) - mean) / std
    torch.testing.assert_close(s3[0], expected)
    # at the official geometry (256 px, 16×16 grid, /16) native mode does not resample at all
    t = build_teacher("dinov3-s", None, grid=(16, 16), image_size=256, pretrained="random")
    x256 = _images(1, 256)
    torch.testing.assert_close(t.preprocess(x256), ((x256 + 1) / 2 - mean) / std)


def test_official_resize_round_trip():
    t = build_teacher("dinov3-s", None, grid=(16, 16), image_size=256, resize="official", pretrained="random")
    seen = _capture_inputs(t)
    x = _images(1, 256)
    t(x)
    assert seen[0].shape == (1, 3, 256, 256)
    # reference: uint8 truncation → 224 bilinear antialiased (uint8 result) → /255 → normalise → 256 bilinear
    u8 = ((x + 1) / 2 * 255).to(torch.uint8)
    small = F.interpolate(u8.float(), size=(224, 224), mode="bilinear", align_corners=False, antialias=True)
    small = small.round().clamp(0, 255) / 255
    mean = torch.tensor(T.IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(T.IMAGENET_STD).view(1, 3, 1, 1)
    expected = F.interpolate((small - mean) / std, size=(256, 256), mode="bilinear", align_corners=False)
    torch.testing.assert_close(seen[0], expected)
    native = build_teacher("dinov3-s", None, grid=(16, 16), image_size=256, pretrained="random")
    assert (native.preprocess(x) - seen[0]).abs().max() > 1e-2  # the round trip loses detail
    with pytest.raises(RectokError, match="/16"):
        build_teacher("dinov2-s", None, grid=(4, 4), image_size=32, resize="official", pretrained="random")


# -------------------------------------------------------------------------------------------------- inception


class _FakeInception(nn.Module):
    def __init__(self, weights=None, grid=(16, 16), layer="mixed_6e", input_size=None):
        super().__init__()
        self.input_size = input_size
        self.dim = 768
        self.grid = grid
        self.conv = nn.Conv2d(3, 768, 1)

    def forward(self, x):
        f = F.adaptive_avg_pool2d(self.conv(x), self.grid)
        return f.flatten(2).transpose(1, 2)


def test_inception_wrapped_on_the_token_grid(monkeypatch):
    from rectok_core.teachers import inception_net

    monkeypatch.setattr(inception_net, "InceptionTeacher", _FakeInception)
    t = build_teacher("inception", None, grid=(4, 4), image_size=32)
    assert isinstance(t, T.WrappedTeacher) and t.dim == teacher_dim("inception")
    y = t(_images())
    assert y.shape == (2, 16, 768) and not y.requires_grad
    assert t.module.input_size == 16 * 4 + 27  # one Mixed_6e cell per token
    assert all(not p.requires_grad for p in t.parameters())
    with pytest.raises(RectokError, match="official"):
        build_teacher("inception", None, grid=(4, 4), image_size=32, resize="official")
    with pytest.raises(RectokError, match="random is not available"):
        build_teacher("inception", None, grid=(4, 4), image_size=32, pretrained="random")


def test_real_inception_module_if_available():
    from rectok_core.teachers.inception_net import InceptionTeacher

    try:
        t = build_teacher("inception", None, grid=(4, 4), image_size=64)
    except WeightsNotFound as e:
        pytest.skip(f"inception weights unavailable: {e}")
    assert isinstance(t.module, InceptionTeacher)
    assert t(_images(1, 64)).shape == (1, 16, teacher_dim("inception"))
