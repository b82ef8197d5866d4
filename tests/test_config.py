"""Config schema: shipped YAMLs load, bad keys fail with their names, every field is documented."""

from __future__ import annotations

import ast
import dataclasses
import re
from pathlib import Path

import pytest
from omegaconf import OmegaConf

import pure.config as config_module
from pure.config import ConfigError, InferConfig, PrepareConfig, load_config, with_value

ROOT = Path(__file__).resolve().parents[1]


def _schema_for(path: Path):
    """The schema a YAML under configs/ is written against (named after its top-level dataclass)."""
    name = path.stem
    if name.startswith("train"):
        return config_module.TrainConfig
    if name.startswith("prepare"):
        return config_module.PrepareConfig
    return InferConfig


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_yaml_loads(path):
    cfg = load_config(_schema_for(path), path)
    assert cfg is not None


def test_overrides_and_errors(tmp_path):
    cfg = load_config(
        InferConfig, ROOT / "configs" / "tiny.yaml", ["sampling.cfg_scale=1.0", "restore.tile=64"]
    )
    assert cfg.sampling.cfg_scale == 1.0 and cfg.restore.tile == 64 and cfg.backbone.source == "tiny"
    bad = tmp_path / "bad.yaml"
    bad.write_text("sampling:\n  cfg_scal: 1.0\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*sampling\.cfg_scal"):
        load_config(InferConfig, bad)
    with pytest.raises(ConfigError, match="restore.tile"):
        load_config(InferConfig, None, ["restore.tile=big"])
    with pytest.raises(ConfigError, match="key=value"):
        load_config(InferConfig, None, ["restore.tile"])
    with pytest.raises(ConfigError, match="not found"):
        load_config(InferConfig, tmp_path / "missing.yaml")


def test_every_field_has_a_docstring():
    tree = ast.parse(Path(config_module.__file__).read_text())
    classes = [
        n
        for n in tree.body
        if isinstance(n, ast.ClassDef) and dataclasses.is_dataclass(getattr(config_module, n.name))
    ]
    assert classes
    for cls in classes:
        body = cls.body
        for i, node in enumerate(body):
            if isinstance(node, ast.AnnAssign):
                following = body[i + 1] if i + 1 < len(body) else None
                documented = isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant)
                assert documented, f"{cls.name}.{node.target.id} has no docstring"


def test_load_config_returns_dataclasses_and_checks_choices_in_one_place(tmp_path):
    cfg = load_config(InferConfig, ROOT / "configs" / "tiny.yaml")
    assert type(cfg) is InferConfig and type(cfg.backbone.tiny) is config_module.TinyBackboneConfig
    choices = r"^restore.color_fix='sepia': expected one of wavelet, adain, none$"
    with pytest.raises(ConfigError, match=choices):
        load_config(InferConfig, None, ["restore.color_fix=sepia"])
    with pytest.raises(ConfigError, match=r"^mixed_precision='fp8': expected one of bf16, no, fp16$"):
        load_config(config_module.TrainConfig, None, ["mixed_precision=fp8"])
    with pytest.raises(ConfigError, match=r"^restore.tile_overlap=-1: must be at least 0$"):
        load_config(InferConfig, None, ["restore.tile_overlap=-1"])
    assert load_config(InferConfig, None, ["device=cuda:3"]).device == "cuda:3"
    with pytest.raises(ConfigError, match="device='gpu'"):
        load_config(InferConfig, None, ["device=gpu"])


def test_moved_keys_say_where_they_went(tmp_path):
    old = tmp_path / "old.yaml"
    old.write_text("backbone:\n  source: tiny\n  num_layers: 4\n")
    moved = r"old\.yaml: backbone.num_layers was renamed to backbone.tiny.num_layers"
    with pytest.raises(ConfigError, match=moved):
        load_config(InferConfig, old)
    with pytest.raises(ConfigError, match="backbone.hidden_size was renamed to backbone.tiny.hidden_size"):
        load_config(InferConfig, None, ["backbone.hidden_size=32"])
    assert load_config(InferConfig, None, ["backbone.tiny.num_layers=4"]).backbone.tiny.num_layers == 4


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("restore.tile=33", "restore.tile=33: must be a multiple of 32"),
        ("restore.tile_overlap=512", "restore.tile_overlap=512: must be less than restore.tile=512"),
        ("sampling.seed=18446744073709551615", "sampling.seed=18446744073709551615: must be at most"),
        ("sampling.seed=-4611686018427387905", "must be at least"),
    ],
)
def test_tile_and_seed_mistakes_are_settings_errors(override, message):
    """Checked with the settings, before anything loads (not after the models, per image)."""
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(InferConfig, None, [override])


def test_prepare_sizes_must_be_positive_multiples():
    for override in ("hq_size=0", "hq_size=-32", "hq_size=100", "batch_size=0", "degradation.scale=0"):
        with pytest.raises(ConfigError, match=re.escape(override.split("=")[0])):
            load_config(PrepareConfig, None, [override])


def test_a_config_file_that_is_a_list_or_a_folder(tmp_path):
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="key: value"):
        load_config(InferConfig, tmp_path / "list.yaml")
    with pytest.raises(ConfigError, match="is a folder"):
        load_config(InferConfig, tmp_path)


def test_with_value_sets_a_key_exactly():
    cfg = with_value(load_config(InferConfig), "vq.source", "/models #1/[${x}]/vq.pt")
    assert cfg.vq.source == "/models #1/[${x}]/vq.pt" and cfg.backbone == InferConfig().backbone


@pytest.mark.parametrize(
    ("schema", "override", "hint"),
    [
        ("TrainConfig", "lr=1e-4", "did you mean optim.lr"),  # a nested key typed bare
        ("TrainConfig", "learning_rate=1e-4", "did you mean optim.lr"),  # transformers' name
        ("TrainConfig", "lora.r=16", "did you mean lora.rank"),  # peft's name
        ("InferConfig", "restore.tiel=256", "did you mean restore.tile"),  # a typo
        (
            "TrainConfig",
            "restore.tile=64",
            "restore.tile is a setting of scripts/infer.py, not of scripts/train.py",
        ),
        ("InferConfig", "max_steps=3", "max_steps is a setting of scripts/train.py"),
        ("PrepareConfig", "optim.lr=1", "optim.lr is a setting of scripts/train.py"),
    ],
)
def test_unknown_keys_suggest_the_setting_meant(schema, override, hint):
    with pytest.raises(ConfigError, match=re.escape(hint)):
        load_config(getattr(config_module, schema), None, [override])


def test_a_bad_value_is_not_called_a_bad_key():
    with pytest.raises(ConfigError, match=r"bad value for 'optim.lr'.*'fast'"):
        load_config(config_module.TrainConfig, None, ["optim.lr=fast"])
    with pytest.raises(
        ConfigError, match=r"bad value for 'data' in TrainConfig: data is a group of settings"
    ):
        load_config(config_module.TrainConfig, None, ["data=3"])  # OmegaConf names no key here


def test_a_group_in_a_file_is_explained_with_yaml_nesting(tmp_path):
    """In a YAML file the override form (restore.tile=...) is no fix, and a section line with its settings
    not indented below it (`restore:` then `tile: 128`) is null: say so."""
    unindented = tmp_path / "mine.yaml"
    unindented.write_text("restore:\ntile: 128\n")
    with pytest.raises(ConfigError) as info:
        load_config(config_module.InferConfig, unindented)
    message = str(info.value)
    assert "restore.outscale=" not in message
    assert message.endswith(
        "set one of them indented below 'restore:' (here nothing is indented below it), "
        "e.g. '  outscale: ...'"
    )
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("backbone: tiny\n")
    with pytest.raises(
        ConfigError, match=r"set one of them indented below 'backbone:', e\.g\. '  source: \.\.\.'$"
    ):
        load_config(config_module.InferConfig, scalar)


def test_text_settings_keep_yaml_boolean_words(tmp_path):
    """YAML 1.1 reads no/on/yes/off as booleans; a text setting gets the word typed (an override) or the
    word of its closed choice (a file), and a boolean setting still takes them."""
    cfg = load_config(InferConfig, None, ["restore.compile=on", "restore.caption=yes"])
    assert (cfg.restore.compile, cfg.restore.caption) == ("on", "yes")
    assert load_config(InferConfig, None, ["restore.caption="]).restore.caption == ""  # key='' in a shell
    assert load_config(InferConfig, None, ["restore.caption='a: b'"]).restore.caption == "a: b"
    train = load_config(config_module.TrainConfig, None, ["mixed_precision=no", "gradient_checkpointing=no"])
    assert (train.mixed_precision, train.gradient_checkpointing) == ("no", False)
    (tmp_path / "c.yaml").write_text("restore:\n  compile: off\n")
    assert load_config(InferConfig, tmp_path / "c.yaml").restore.compile == "off"
    (tmp_path / "t.yaml").write_text("mixed_precision: yes\n")  # no choice reads as True
    with pytest.raises(ConfigError, match=r"mixed_precision is a text \(one of bf16, no, fp16\)"):
        load_config(config_module.TrainConfig, tmp_path / "t.yaml")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("restore:\n  tile:\n", r"bad value for 'restore.tile'.*nothing after its colon is null"),  # not ''
        ("restore:\n  caption:\n", r"bad value for 'restore.caption'.*write caption: '' for an empty text"),
        ("restore:\n  caption: yes\n", r"restore.caption is a text.*reads an unquoted yes.*as True; quote"),
        ("restore: [1]\n", r"bad value for 'restore'.*a group of settings \(restore.outscale, restore.tile"),
        ("backbone: tiny\n", r"bad value for 'backbone'.*below 'backbone:', e.g. '  source: ...'"),
    ],
)
def test_a_bad_value_names_its_key_and_the_fix(tmp_path, text, message):
    (tmp_path / "c.yaml").write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(InferConfig, tmp_path / "c.yaml")


def test_tabs_and_empty_overrides_say_what_to_change(tmp_path):
    (tmp_path / "c.yaml").write_text("restore:\n\ttile: 64\n")
    with pytest.raises(ConfigError, match=r"not valid YAML \(.*\); YAML indents with spaces, never tabs"):
        load_config(InferConfig, tmp_path / "c.yaml")
    with pytest.raises(ConfigError, match=r"nothing after its = is null: give it a value or leave it out"):
        load_config(InferConfig, None, ["restore.outscale="])


def test_a_config_that_is_not_utf8_says_to_save_it_as_utf8(tmp_path):
    """Windows PowerShell 5's `echo ... > c.yaml` writes UTF-16: the message named only the codec error."""
    (tmp_path / "c.yaml").write_bytes("restore:\n  tile: 128\n".encode("utf-16"))
    expected = r"c.yaml: not valid YAML \('utf-8' codec .*\); save it as UTF-8 text$"
    with pytest.raises(ConfigError, match=expected):
        load_config(InferConfig, tmp_path / "c.yaml")
    (tmp_path / "c.yaml").write_bytes("restore:\r\n  tile: 128\r\n".encode("utf-8-sig"))  # Notepad's UTF-8
    assert load_config(InferConfig, tmp_path / "c.yaml").restore.tile == 128


@pytest.mark.parametrize("schema", ["InferConfig", "TrainConfig", "PrepareConfig"])
def test_help_config_shows_the_defaults_print_config_resolves(schema):
    """--help-config's default of every key is the value the settings have without overrides, also in
    sections built by a factory with other values than their class's (degradation.second)."""
    import json as json_module

    schema = getattr(config_module, schema)
    shown = {}
    for line in config_module.schema_help(schema).splitlines():
        found = re.fullmatch(r"  (\S+) \(.*?\) = (.*)", line)
        if found:
            shown[found.group(1)] = json_module.loads(found.group(2))
    resolved = OmegaConf.to_container(OmegaConf.structured(load_config(schema)))
    for key, value in shown.items():
        node = resolved
        for part in key.split("."):
            node = node[part]
        assert node == value, key
    assert len(shown) > 20


def test_a_zero_temperature_says_how_to_decode_greedily():
    with pytest.raises(
        ConfigError, match=r"temperature=0.0: must be at least 1e-06 \(for greedy decoding set "
    ):
        load_config(InferConfig, overrides=["sampling.temperature=0"])
    assert load_config(InferConfig, overrides=["sampling.image_top_k_max=1"]).sampling.image_top_k_max == 1


@pytest.mark.parametrize(
    "override",
    [
        "residual_dropout=1.5",
        "residual_dropout=-0.1",
        "data.num_workers=-1",
        "data.max_images=-1",
        "lora.rank=0",
        "lora.dropout=1.5",
    ],
)
def test_training_values_out_of_range_are_one_line_before_anything_loads(override):
    from pure.config import TrainConfig

    key = override.split("=")[0]
    with pytest.raises(ConfigError, match=rf"^{key}=.*: must be at (least|most)"):
        load_config(TrainConfig, None, [override])


@pytest.mark.parametrize(
    ("schema", "override", "message"),
    [
        ("InferConfig", ["sampling.image_top_k_min=50", "sampling.image_top_k_max=10"], "must be at most"),
        ("TrainConfig", ["lora.alpha=0"], "must be above 0"),
        ("TrainConfig", ["lora.alpha=-8"], "must be above 0"),
        ("PrepareConfig", ["caption.batch_size=0"], "must be at least 1"),
        ("TrainConfig", ["optim.min_lr=1", "optim.lr=0.1"], "must be at most optim.lr=0.1"),
        ("TrainConfig", ["seed=-1"], "must be at least 0"),
        ("TrainConfig", ["seed=4294967296"], "must be at most 4294967295"),
        ("TrainConfig", ["vq.seed=-1"], "must be at least 0"),
        ("PrepareConfig", ["backbone.tiny.seed=-1"], "must be at least 0"),
        ("PrepareConfig", ["caption.max_new_tokens=0"], "must be at least 1"),
        ("TrainConfig", ["z_loss_weight=-1"], "must be at least 0"),
        ("InferConfig", ["sampling.cfg_scale=-0.5"], "must be at least 0"),
    ],
)
def test_settings_that_contradict_each_other_or_do_nothing_are_refused(schema, override, message):
    key = override[0].split("=")[0]
    with pytest.raises(ConfigError, match=rf"^{re.escape(key)}=.*{message}"):
        load_config(getattr(config_module, schema), None, override)


@pytest.mark.parametrize(
    ("schema", "override", "message"),
    [
        ("InferConfig", "vq.channel_mult=[1,1,2,2,4]", r"expected 4 multipliers .*vq_ds16_\*\) does not fit"),
        ("InferConfig", "vq.channel_mult=[1,2,0,4]", "expected 4 multipliers of at least 1"),
        ("TrainConfig", "vq.channel_mult=[]", "expected 4 multipliers"),
        ("PrepareConfig", "vq.codebook_size=8192", "must be 16384, the image tokens of PURE's vocabulary"),
        ("InferConfig", "vq.channels=48", "must be a multiple of 32"),
        ("InferConfig", "vq.num_res_blocks=0", "must be at least 1"),
        ("InferConfig", "vq.codebook_dim=0", "must be at least 1"),
    ],
)
def test_a_vq_architecture_that_cannot_fit_the_model_is_refused_before_loading(schema, override, message):
    """LlamaGen's issues ask for other VQ variants (vq_ds16_c2i.pt, other codebooks): set in the vq group,
    such a VQ loaded and then failed every tile ('expected a tile of shape (3, 64, 64), got (3, 128, 128)',
    'codes must lie in [0, 8192)'), and widths the group norms cannot split ended in a traceback."""
    key = override.split("=")[0]
    with pytest.raises(ConfigError, match=rf"^{re.escape(key)}=.*{message}"):
        load_config(getattr(config_module, schema), None, [override])
    tiny_widths = load_config(InferConfig, None, ["vq.channels=32", "vq.z_channels=64"])
    assert tiny_widths.vq.channels == 32


@pytest.mark.parametrize(
    ("override", "example"), [("backbone.tiny.num_heads=3", 48), ("backbone.tiny.hidden_size=60", 64)]
)
def test_a_tiny_backbone_whose_heads_do_not_split_its_width_is_refused(override, example):
    """num_heads=3 with hidden 64 wrote a tiny model folder and then blamed its config.json ('copy the model
    folder's config.json again'); hidden 60 over 4 heads (odd head size) failed every image in rotary's
    'size of tensor a (15) must match ... (16)'."""
    with pytest.raises(ConfigError) as caught:
        load_config(InferConfig, ROOT / "configs" / "tiny.yaml", [override])
    assert str(caught.value).startswith("backbone.tiny.hidden_size=")
    assert f"of an even size (rotary embeddings turn pairs), e.g. backbone.tiny.hidden_size={example}" in str(
        caught.value
    )


def test_several_config_files_layer_in_order(tmp_path):
    (tmp_path / "base.yaml").write_text("sampling:\n  cfg_scale: 2.0\n  temperature: 0.7\n")
    (tmp_path / "local.yaml").write_text("sampling:\n  temperature: 0.5\n")
    files = [tmp_path / "base.yaml", tmp_path / "local.yaml"]
    cfg = load_config(InferConfig, files, ["sampling.cfg_scale=3.0"])
    assert (cfg.sampling.cfg_scale, cfg.sampling.temperature) == (3.0, 0.5)  # the override; the later file
    assert load_config(InferConfig, files[::-1]).sampling.temperature == 0.7
    with pytest.raises(ConfigError, match=r"config file not found: nope.yaml \(relative to the current "):
        load_config(InferConfig, [files[0], "nope.yaml"])


def test_a_shipped_config_named_from_another_folder_says_where_it_is(tmp_path, monkeypatch, capsys):
    """The same line from every script, download.py's --config included (it said only where it looked)."""
    from pure.cli import download_main

    monkeypatch.chdir(tmp_path)  # a user in their photo folder typing the README's --config configs/tiny.yaml
    checkout = Path(config_module.__file__).resolve().parents[1]
    expected = (
        f"config file not found: configs/tiny.yaml (relative to the current folder {tmp_path}); it is in the "
        f"checkout: run from {checkout} (the shipped configs' paths are read from it)"
    )
    with pytest.raises(ConfigError) as info:
        load_config(InferConfig, "configs/tiny.yaml")
    assert str(info.value) == expected
    assert download_main(["models", "--config", "configs/tiny.yaml", "--list"]) == 2
    assert capsys.readouterr().err == f"error: {expected}\n"
    with pytest.raises(ConfigError, match=r"\(relative to the current folder [^;]*\)$"):
        load_config(InferConfig, "configs/mine.yaml")  # not shipped: no such hint
    assert download_main(["models", "--config", str(tmp_path), "--list"]) == 2  # a folder: as the scripts say
    assert capsys.readouterr().err == (
        f"error: --config {tmp_path} is a folder; pass a YAML file, e.g. configs/tiny.yaml\n"
    )


def test_a_list_setting_given_one_value_shows_the_list_form(tmp_path):
    from pure.config import TrainConfig

    with pytest.raises(ConfigError, match=re.escape("hq_dirs is a list: write hq_dirs=[../hq]")):
        load_config(PrepareConfig, None, ["hq_dirs=../hq"])
    (tmp_path / "p.yaml").write_text("hq_dirs: ../hq\n")
    with pytest.raises(ConfigError, match=re.escape("hq_dirs is a list: write hq_dirs: [../hq]")):
        load_config(PrepareConfig, tmp_path / "p.yaml")
    with pytest.raises(ConfigError, match=re.escape("write lora.target_modules=[q_proj]")):
        load_config(TrainConfig, None, ["lora.target_modules=q_proj"])


def test_a_key_only_another_script_has_under_that_name_is_named():
    with pytest.raises(ConfigError, match=re.escape("(scripts/train.py has data.max_images: a setting of")):
        load_config(PrepareConfig, None, ["max_images=3"])


@pytest.mark.parametrize(("schema", "key"), [("TrainConfig", "output_dir"), ("PrepareConfig", "out_dir")])
def test_an_empty_output_folder_is_refused(schema, key):
    """``output_dir=$OUT`` with OUT unset would write a run into the current folder."""
    for value in ("", "' '"):
        with pytest.raises(ConfigError, match=rf"^{key} is empty: name the folder to write into"):
            load_config(getattr(config_module, schema), None, [f"{key}={value}"])


def test_an_empty_hq_folder_is_refused():
    """``--hq-dir "$HQ"`` with HQ unset: the empty path is the current folder, and prepare_data.py would
    search it recursively (a checkout found docs/demo.png)."""
    for value in ("['']", "[a, ' ']"):
        with pytest.raises(
            ConfigError, match=r"^hq_dirs=\[.*\] names an empty folder, .* hq_dirs=\[data/hq\]$"
        ):
            load_config(config_module.PrepareConfig, None, [f"hq_dirs={value}"])


def test_spaces_around_an_overrides_key_are_not_part_of_it():
    assert load_config(InferConfig, None, [" restore.tile = 128"]).restore.tile == 128


def test_a_whole_number_written_as_a_float_is_that_integer(tmp_path):
    """YAML reads ``1e3`` and ``1000.0`` as floats; an integer setting takes them as 1000, and a fraction is
    one line naming the key (never rounded to another value)."""
    (tmp_path / "c.yaml").write_text("max_steps: 1e3\nsave_every: 250.0\n")
    cfg = load_config(config_module.TrainConfig, tmp_path / "c.yaml", ["batch_size=2.0"])
    assert (cfg.max_steps, cfg.save_every, cfg.batch_size) == (1000, 250, 2)
    assert type(cfg.max_steps) is int
    with pytest.raises(
        ConfigError, match=r"override 'seed=2.5': seed is a whole number, not 2.5; write 2 or 3"
    ):
        load_config(config_module.TrainConfig, None, ["seed=2.5"])


@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan", "1e400"])
def test_an_infinite_or_nan_integer_setting_is_a_config_error(value):
    """YAML floats with no whole number near them: refused like any other wrong value, not a traceback."""
    with pytest.raises(ConfigError, match=rf"override 'max_steps={re.escape(value)}'"):
        load_config(config_module.TrainConfig, None, [f"max_steps={value}"])


def test_interpolations_resolve_against_every_setting_or_are_one_line(tmp_path):
    """``${...}`` in an override or a file resolves against the merged settings; one that names nothing is a
    ConfigError saying how to write a literal ``${`` (it was an OmegaConf traceback at a text setting)."""
    cfg = load_config(
        InferConfig, None, ["restore.caption=${restore.color_fix}", "sampling.seed=${restore.tile}"]
    )
    assert (cfg.restore.caption, cfg.sampling.seed) == ("wavelet", 512)
    (tmp_path / "c.yaml").write_text('restore:\n  caption: "a ${x} cat"\n')
    for path, overrides in ((None, ["restore.caption=a ${x} cat"]), (tmp_path / "c.yaml", [])):
        with pytest.raises(ConfigError, match=r"restore.caption: Interpolation key 'x' not found.*literal"):
            load_config(InferConfig, path, overrides)


def test_batch_size_follows_the_integer_rules_besides_auto(tmp_path):
    """``restore.batch_size`` (an integer or auto) takes a whole float and a quoted number as every integer
    setting does (``restore.tile: '64'`` is 64), and a fraction is the same one line."""
    (tmp_path / "c.yaml").write_text("restore:\n  batch_size: '4'\n")
    assert load_config(InferConfig, tmp_path / "c.yaml").restore.batch_size == 4
    for value, expected in (("4.0", 4), ("1e1", 10), ("'auto'", "auto")):
        assert load_config(InferConfig, None, [f"restore.batch_size={value}"]).restore.batch_size == expected
    with pytest.raises(ConfigError, match=r"restore.batch_size is a whole number, not 2.5; write 2 or 3"):
        load_config(InferConfig, None, ["restore.batch_size=2.5"])


def test_settings_that_change_nothing_are_named():
    """--draft-len without --speculative, and compile=on or --dtype on the CPU, are said to have no
    effect."""
    plain = load_config(InferConfig, None, [])
    assert config_module.setting_notes(plain, on_cpu=True) == []
    drafted = load_config(InferConfig, None, ["restore.draft_len=4"])
    assert config_module.setting_notes(drafted, on_cpu=False) == [
        "restore.draft_len (--draft-len) has no effect without --speculative (restore.speculative)"
    ]
    speculative = load_config(InferConfig, None, ["restore.draft_len=4", "restore.speculative=jacobi"])
    assert config_module.setting_notes(speculative, on_cpu=True) == []
    compiled = load_config(InferConfig, None, ["restore.compile=on"])
    assert config_module.setting_notes(compiled, on_cpu=False) == []
    assert (
        "restore.compile=on has no effect on the CPU" in config_module.setting_notes(compiled, on_cpu=True)[0]
    )
    half = load_config(InferConfig, None, ["dtype=float16"])
    assert config_module.setting_notes(half, on_cpu=False) == []
    assert config_module.setting_notes(half, on_cpu=True) == [
        "dtype=float16 (--dtype) has no effect on the CPU: CPU runs are always float32"
    ]


def test_a_tile_other_than_the_trained_one_is_noted_for_the_released_model():
    """--tile 256 with the released backbone: a note that it was trained on 512 px tiles (Lumina-mGPT #20's
    question); the tiny test models, which were trained on nothing, get none."""
    released = load_config(InferConfig, None, ["restore.tile=256"])
    notes = config_module.setting_notes(released, on_cpu=False)
    assert notes == [
        "restore.tile=256 (--tile): the released model was trained on 512 px tiles; other tile sizes are "
        "untested with it (the output may be worse)"
    ]
    tiny = load_config(InferConfig, ROOT / "configs" / "tiny.yaml", ["restore.tile=256"])
    assert config_module.setting_notes(tiny, on_cpu=True) == []
