"""The reproduction study's results: collection, the markdown report and figures."""
from __future__ import annotations

import datetime
import json
import math
import os
import platform
from pathlib import Path
from typing import Any

from rectok_core.config import to_dict
from rectok_core.tools.study import FORMAT, VERSION, Layout, StudyConfig, arms, dim_arms
from rectok_core.utils.files import atomic_open, write_text_atomic
from rectok_core.utils.plots import pyplot


# ---------------------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------------------
def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _last_metrics(run: Path) -> dict[str, Any]:
    """The last ``train`` record of a run's metrics.jsonl (empty when absent)."""
    last: dict[str, Any] = {}
    try:
        with open(run / "metrics.jsonl") as f:
            for line in f:
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                if "step" in rec and "loss" in rec:
                    last = rec
    except OSError:
        pass
    return last


def _finite(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and math.isfinite(x) else None


def environment() -> dict[str, Any]:
    import torch

    dev = "cpu"
    if torch.cuda.is_available():
        dev = torch.cuda.get_device_name(0)
    return {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "device": dev, "cuda": torch.cuda.is_available(), "cpu_threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version(),
            "platform": platform.platform()}


def collect(cfg: StudyConfig, timings: dict[str, float] | None = None) -> dict[str, Any]:
    """Gather every number of a finished (or partial) study from its outputs."""
    L = Layout(cfg.run.out)
    probe = _read_json(L.probe / "probe.json") or {}
    curves = {c["name"]: c for c in probe.get("checkpoints", [])}
    rows = []
    for a in arms(cfg):
        ev = (_read_json(L.eval(a.name) / "eval.json") or {}).get("metrics", {})
        curve = curves.get(a.name)
        row = {"arm": a.name, "label": a.label, "group": a.group, "dim": a.dim, "seed": a.seed,
               "flags": " ".join(a.flags) or "(recipe defaults)",
               "stage1": {k: _finite(v) for k, v in _last_metrics(L.tokenizer(a.name)).items()
                          if k in ("step", "loss", "psnr", "rec", "sem", "kl")},
               "psnr": _finite(ev.get("psnr")), "ssim": _finite(ev.get("ssim")), "rfid": _finite(ev.get("rfid")),
               "probe": None, "gfid": None}
        if curve is not None:
            row["probe"] = {"t": [p["t"] for p in curve["results"]], "top1": [p["top1"] for p in curve["results"]],
                            "chance_check_passed": curve["chance_check"]["passed"]}
        gen = _read_json(L.samples(a.name) / "eval.json")
        if gen is not None:
            row["gfid"] = _finite(gen.get("metrics", {}).get("fid"))
            row["gfid_samples"] = gen.get("manifest", {}).get("num_images") or cfg.eval.samples
        rows.append(row)
    teacher = probe.get("teacher")
    repeat = [r for r in rows if r["group"] == "repeat"]
    result = {
        "format": FORMAT, "version": VERSION, "config": to_dict(cfg), "environment": environment(),
        "teacher": None if teacher is None else {"name": teacher["name"], "top1": teacher["top1"],
                                                  "weights": teacher.get("weights")},
        "chance": None if not curves else next(iter(curves.values()))["chance"]["top1"],
        "probe_n": None if not curves else {"train": next(iter(curves.values()))["n_train"],
                                             "val": next(iter(curves.values()))["n_val"]},
        "arms": rows,
        "noise": _noise(rows, repeat[0]) if repeat else None,
        "timings_s": timings or {},
    }
    return result


def _noise(rows: list[dict], repeat: dict) -> dict[str, Any]:
    """|difference| between the full-recipe arm and its rerun with another seed, per metric."""
    base = next(r for r in rows if r["arm"] == "fsd-rad")
    out: dict[str, Any] = {"arms": [base["arm"], repeat["arm"]]}
    for k in ("psnr", "ssim", "rfid"):
        if base[k] is not None and repeat[k] is not None:
            out[k] = abs(base[k] - repeat[k])
    if base["probe"] and repeat["probe"]:
        out["probe_top1_max"] = max(abs(x - y) for x, y in zip(base["probe"]["top1"], repeat["probe"]["top1"]))
    return out


def _fmt(x: float | None, digits: int = 2, pct: bool = False) -> str:
    if x is None:
        return "—"
    return f"{100 * x:.1f}" if pct else f"{x:.{digits}f}"


def _probe_at(row: dict, t: float) -> float | None:
    p = row["probe"]
    if not p:
        return None
    for tt, acc in zip(p["t"], p["top1"]):
        if abs(tt - t) < 1e-9:
            return acc
    return None


def markdown(result: dict[str, Any]) -> str:
    """The study's tables as Markdown (``results.md``)."""
    cfg, env, rows = result["config"], result["environment"], result["arms"]
    T = cfg["tokenizer"]
    lines = [f"# Reproduction study — preset `{cfg['preset']}`", "",
             f"- device: {env['device']} ({env['cpu_threads']} CPU threads), torch {env['torch']}, {env['date']}",
             f"- data: `{cfg['run']['data']}`; tokenizer preset `{T['tokenizer_preset']}` at {T['image_size']} px, "
             f"patch {T['patch_size']}; {T['steps']} stage-1 steps at batch {T['batch_size']}, "
             f"{T['ft_steps']} decoder fine-tune steps; seed {cfg['run']['seed']}",
             f"- teacher: `{T['teacher']}`" + (" (offline ImageNet InceptionV3 stand-in for DINOv3)"
                                               if T["teacher"].startswith("inception") else ""), ""]
    ts = sorted({t for r in rows if r["probe"] for t in r["probe"]["t"]})
    lines += ["## Linear probe along the flow (val top-1 %, x_t = (1−t)·z + t·ε)", ""]
    if ts:
        n = result.get("probe_n") or {}
        lines.append(f"train {n.get('train')} / val {n.get('val')} images; chance {_fmt(result['chance'], pct=True)} %"
                     + (f"; teacher `{result['teacher']['name']}` {_fmt(result['teacher']['top1'], pct=True)} %"
                        if result["teacher"] else ""))
        lines += ["", "| arm | C | " + " | ".join(f"t={t:g}" for t in ts) + " | t=1 at chance |",
                  "|---|---|" + "---|" * len(ts) + "---|"]
        for r in rows:
            if r["probe"]:
                accs = dict(zip(r["probe"]["t"], r["probe"]["top1"]))
                lines.append(f"| {r['arm']} | {r['dim']} | " + " | ".join(_fmt(accs.get(t), pct=True) for t in ts)
                             + f" | {'yes' if r['probe']['chance_check_passed'] else 'NO'} |")
    else:
        lines.append("(not run)")
    lines += ["", "## Reconstruction after the decoder fine-tune (val) and generation", "",
              "| arm | what | C | seed | stage-1 PSNR | PSNR | SSIM | rFID | gFID |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['arm']} | {r['label']} | {r['dim']} | {r['seed']} | {_fmt(r['stage1'].get('psnr'))} | "
                     f"{_fmt(r['psnr'])} | {_fmt(r['ssim'], 3)} | {_fmt(r['rfid'], 1)} | {_fmt(r['gfid'], 1)} |")
    if result["noise"]:
        nz = result["noise"]
        lines += ["", f"Run-to-run noise ({nz['arms'][0]} vs {nz['arms'][1]}, different seed): "
                      + ", ".join(f"{k} {v:.3g}" if k != "probe_top1_max" else f"probe top-1 up to {100 * v:.1f} points"
                                  for k, v in nz.items() if k != "arms")]
    if result["timings_s"]:
        total = sum(result["timings_s"].values())
        lines += ["", f"Wall time of the commands: {total / 60:.1f} min."]
    return "\n".join(lines) + "\n"


def plot_dims(result: dict[str, Any], cfg: StudyConfig, path: str | os.PathLike[str]) -> Path | None:
    """Arm 5: rFID, PSNR and probe top-1 (t = 0 and t = 0.5) against the latent dim."""
    plt = pyplot()

    names = [a.name for a in dim_arms(cfg)]
    rows = [r for n in names for r in result["arms"] if r["arm"] == n]
    if len(rows) < 2:
        return None
    dims = [r["dim"] for r in rows]
    repeat = [r for r in result["arms"] if r["group"] == "repeat"]
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.4), dpi=120)
    try:
        for ax, (title, key, ylabel) in zip(axes, (("rFID (lower is better)", "rfid", "rFID"),
                                                   ("PSNR (higher is better)", "psnr", "PSNR (dB)"),
                                                   ("linear probe on x_t", None, "val top-1 accuracy (%)"))):
            if key is None:
                for t, color in ((0.0, "C0"), (0.5, "C1")):
                    acc = [_probe_at(r, t) for r in rows]
                    ax.plot(dims, [None if v is None else 100 * v for v in acc], marker="o", color=color,
                            label=f"t = {t:g}")
                    for r in repeat:
                        v = _probe_at(r, t)
                        if v is not None:
                            ax.plot([r["dim"]], [100 * v], ls="none", marker="x", color=color)
                ax.legend(fontsize=8)
            else:
                ax.plot(dims, [r[key] for r in rows], marker="o", color="C0")
                for r in repeat:
                    if r[key] is not None:
                        ax.plot([r["dim"]], [r[key]], ls="none", marker="x", color="C0")
            ax.set_xscale("log", base=2)
            ax.set_xticks(dims, [str(d) for d in dims])
            ax.set_xlabel("latent dim C")
            ax.set_ylabel(ylabel)
            ax.set_title(title, fontsize=10)
            ax.grid(alpha=0.3)
        note = "  (×: the same arm, another seed)" if repeat else ""
        fig.suptitle(f"full recipe (FSD + RAD) against latent dim{note}", fontsize=10)
        fig.tight_layout()
        path = Path(path)
        with atomic_open(path, "wb") as f:
            fig.savefig(f, format="png")
    finally:
        plt.close(fig)
    return path


def write_results(cfg: StudyConfig, timings: dict[str, float] | None = None) -> dict[str, Path]:
    """``study.json``, ``results.md``, ``probe_flow.png`` (copied from probe-flow) and ``dims.png``."""
    L = Layout(cfg.run.out)
    result = collect(cfg, timings)
    out: dict[str, Path] = {}
    for name, text in (("study.json", json.dumps(result, indent=2) + "\n"), ("results.md", markdown(result))):
        out[name] = write_text_atomic(L.out / name, text)
    src = L.probe / "probe.png"
    if src.is_file():
        dst = L.out / "probe_flow.png"
        with atomic_open(dst, "wb") as f:
            f.write(src.read_bytes())
        out["probe_flow.png"] = dst
    dims = plot_dims(result, cfg, L.out / "dims.png")
    if dims is not None:
        out["dims.png"] = dims
    return out

