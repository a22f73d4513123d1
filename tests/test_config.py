"""Recipes: typed, unknown keys rejected with a hint, dotted overrides, saved and re-read."""

import pytest

from llava15.config import ConfigError, TrainConfig, field_docs, load_recipe, save_recipe


def test_defaults_and_overrides(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("train:\n  lr: 1e-3\n  global_batch_size: 256\n  micro_batch_size: 32\n")
    cfg = load_recipe(recipe, ["train.lr=2e-5", "data.template=plain", "model.init_projector=x.bin"])
    assert cfg.train.lr == 2e-5 and isinstance(cfg.train.lr, float)
    assert cfg.train.global_batch_size == 256
    assert cfg.data.template == "plain"
    assert cfg.model.init_projector == "x.bin"


def test_unknown_key_names_the_path_and_nearest_name(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("train:\n  learning_rate: 1e-3\n")
    with pytest.raises(ConfigError, match=r"'train\.learning_rate'"):
        load_recipe(recipe)
    with pytest.raises(ConfigError, match="did you mean 'micro_batch_size'"):
        load_recipe(None, ["train.micro_batch=4"])


def test_wrong_type_and_bad_choice_are_errors():
    with pytest.raises(ConfigError, match="train.max_steps"):
        load_recipe(None, ["train.max_steps=lots"])
    with pytest.raises(ConfigError, match="data.image_aspect_ratio"):
        load_recipe(None, ["data.image_aspect_ratio=stretch"])
    with pytest.raises(ConfigError, match="multiple of"):
        load_recipe(None, ["train.global_batch_size=10", "train.micro_batch_size=4"])


def test_saved_recipe_reloads_identically(tmp_path):
    cfg = load_recipe(None, ["train.lr=3e-4", "lora.r=8"])
    save_recipe(cfg, tmp_path / "recipe.yaml")
    assert load_recipe(tmp_path / "recipe.yaml") == cfg


def test_every_field_is_documented():
    from llava15 import config

    for cls in (config.ModelConfig, config.DataConfig, config.TrainConfig, config.LoraConfig,
                config.RecipeConfig):
        import dataclasses

        names = {f.name for f in dataclasses.fields(cls)}
        assert names == set(field_docs(cls)), f"{cls.__name__}: undocumented fields"
    assert "optimizer step" in field_docs(TrainConfig)["global_batch_size"]


def test_malformed_yaml_and_duplicate_keys_name_the_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  llm: x\n   oops: [\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml, line 3, column \d+: mapping values are not allowed"):
        load_recipe(bad)
    dup = tmp_path / "dup.yaml"
    dup.write_text("train:\n  lr: 1.0e-3\n  seed: 1\n  lr: 2.0e-3\n")
    with pytest.raises(ConfigError, match=r"dup\.yaml, line 4, column 3: duplicate key 'lr' \(first given on line 2\)"):
        load_recipe(dup)
    with pytest.raises(ConfigError, match="override 'train.lr=\\[': the value is not valid YAML"):
        load_recipe(None, ["train.lr=["])


def test_lora_settings_must_agree():
    with pytest.raises(ConfigError, match="train.stage=projector\\+lora and lora.enabled=false disagree"):
        load_recipe(None, ["train.stage=projector+lora"])
    with pytest.raises(ConfigError, match="lora.enabled=true disagree"):
        load_recipe("stage2_finetune", ["lora.enabled=true"])
    with pytest.raises(ConfigError, match="lora.dropout"):
        load_recipe("stage2_lora", ["lora.dropout=1.5"])
    assert load_recipe("stage2_lora").lora.enabled


def test_new_keys_and_describe_keys():
    from llava15.config import describe_keys, packaged_recipes

    cfg = load_recipe(None, ["data.max_bad_fraction=0.01", "train.resume=force"])
    assert (cfg.data.max_bad_fraction, cfg.train.resume) == (0.01, "force")
    assert load_recipe(None).data.max_bad_fraction == 0.001
    with pytest.raises(ConfigError, match="data.max_bad_fraction"):
        load_recipe(None, ["data.max_bad_fraction=2"])
    text = describe_keys()
    assert "  data.max_bad_fraction (float, default 0.001)" in text and "`force`" in text
    assert all(name in text for name in packaged_recipes())
