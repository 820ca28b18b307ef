"""train-dit's evaluation settings may change on --resume (they do not touch the trained weights); the training
settings still may not."""
from __future__ import annotations

import pytest

from rectok_core.config import build_config, resume_config, to_dict
from rectok_core.errors import RectokError
from rectok_core.training.dit_config import DIT_TRAIN_PRESETS, DiTTrainConfig


def test_dit_evaluation_settings_change_on_resume_and_training_ones_do_not():
    saved = to_dict(build_config(DiTTrainConfig, DIT_TRAIN_PRESETS, "tiny", {"tokenizer": "tok.pt", "eval_images": 64}))
    changed = {"eval_images": 128, "eval_cfg": "autoguidance", "eval_cfg_scale": 1.5, "eval_steps": 20,
               "eval_guide": "/tmp/guide.pt", "ref_stats": "/tmp/ref.npz", "eval_ref_images": 500}
    cfg = resume_config(DiTTrainConfig, saved, {"resume": True, **changed})
    E = cfg.evaluation
    assert (cfg.run.eval_images, E.eval_cfg, E.eval_cfg_scale, E.eval_steps, E.eval_guide, E.ref_stats,
            E.eval_ref_images) == tuple(changed.values())
    assert cfg.run.resume is True
    with pytest.raises(RectokError, match="cannot change on --resume"):
        resume_config(DiTTrainConfig, saved, {"resume": True, "lr": 1.0})
