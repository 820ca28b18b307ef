"""What a resume reports as changed settings (``training.scaffold.config_changes``)."""
from rectok_core.training.scaffold import config_changes


def test_a_setting_added_after_the_run_started_is_not_a_change_at_its_default():
    saved = {"run": {"steps": 12, "resume": False}, "latents": {"tokenizer": "t.pt"}}
    now = {"run": {"steps": 16, "resume": True}, "latents": {"tokenizer": "t.pt", "image_size": 0}}
    defaults = {"run": {"steps": 0, "resume": False}, "latents": {"tokenizer": "", "image_size": 0}}
    assert config_changes(saved, now, defaults=defaults) == {"run.steps": (12, 16)}
    # set to something else than its default, the new setting is reported
    now["latents"]["image_size"] = 64
    assert config_changes(saved, now, defaults=defaults) == {"run.steps": (12, 16), "latents.image_size": (None, 64)}
    # without defaults every difference counts, as before
    assert "latents.image_size" in config_changes(saved, {**now, "latents": {"tokenizer": "t.pt", "image_size": 0}})
