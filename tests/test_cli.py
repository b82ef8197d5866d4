"""What the scripts say before and around the work: --help without heavy imports, --print-config,
--help-config, weights that are missing offline (one message, commands that exist), scripts/download.py
and --models, output folders that are files, Ctrl-C, and peft's start-up notices."""

from __future__ import annotations

import ast
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import huggingface_hub
import huggingface_hub.constants
import pytest
import yaml
from PIL import Image

import pure.download
from pure.cli import (
    benchmark_main,
    download_main,
    evaluate_main,
    infer_main,
    infer_parser,
    literal,
    merge_main,
    prepare_main,
    train_main,
)
from pure.config import InferConfig, PrepareConfig, load_config
from pure.download import CHECKPOINT_FILES, hub_weights, locate

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "configs" / "tiny.yaml")
TINY_LORA = str(ROOT / "configs" / "train_tiny_lora.yaml")
PREPARE_TINY = str(ROOT / "configs" / "prepare_tiny.yaml")
HEAVY = ("torch", "transformers", "pyiqa", "accelerate", "peft", "basicsr", "bitsandbytes")


def test_help_imports_no_heavy_library():
    """--help of every script answers without importing torch, transformers, pyiqa, ..."""
    code = (
        "import contextlib, io, sys\n"
        "from pure import cli\n"
        "mains = (cli.infer_main, cli.prepare_main, cli.train_main, cli.merge_main, cli.download_main,\n"
        "         cli.evaluate_main, cli.benchmark_main, cli.app_main)\n"
        "for main in mains:\n"
        "    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "        main(['--help'])\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_the_readmes_flag_tables_list_every_flag_of_their_script(capsys):
    """A script's section in the README with a flag table (`| flag | meaning |`) lists every flag its --help
    shows: infer.py's table had no --no-progress."""
    sections = (ROOT / "README.md").read_text(encoding="utf-8").split("\n## ")
    checked = []
    for script, main in (("infer", infer_main), ("prepare_data", prepare_main)):
        with pytest.raises(SystemExit):
            main(["--help"])
        flags = set(re.findall(r"(?<![\w-])--?[a-z][\w-]*", capsys.readouterr().out)) - {"-h", "--help"}
        section = next(s for s in sections if f"(`scripts/{script}.py`)" in s.splitlines()[0])
        table = "\n".join(line for line in section.splitlines() if line.startswith("| `"))
        listed = set(re.findall(r"(?<![\w-])--?[a-z][\w-]*", table))
        assert flags <= listed, f"{script}.py's flags missing in the README's table: {sorted(flags - listed)}"
        checked.append(script)
    assert checked == ["infer", "prepare_data"]


def test_print_config_prints_the_resolved_yaml(capsys):
    assert train_main(["--config", TINY_LORA, "--print-config", "max_steps=3", "--models", "w"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["max_steps"] == 3 and printed["models"] == "w" and printed["backbone"]["source"] == "tiny"
    assert prepare_main(["--config", PREPARE_TINY, "--out", "elsewhere", "--print-config"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["out_dir"] == "elsewhere"
    assert infer_main(["--print-config", "--outscale", "2", "--models", "w"]) == 0  # no -i/-o needed
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["restore"]["outscale"] == 2.0 and printed["models"] == "w"


def test_config_repeats_and_layers_in_order(tmp_path, capsys):
    (tmp_path / "more.yaml").write_text("max_steps: 7\noptim:\n  lr: 0.5\n")
    assert train_main(["--config", TINY_LORA, "--config", str(tmp_path / "more.yaml"), "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["max_steps"] == 7 and printed["optim"]["lr"] == 0.5  # the second file
    assert printed["backbone"]["source"] == "tiny"  # the first one still counts


def test_a_key_set_twice_on_the_command_line_is_refused(capsys):
    """Overrides come last, so one of the two would silently win: refused in one line naming both."""
    assert prepare_main(["--hq-dir", "a", "--print-config", "hq_dirs=[b]"]) == 2
    assert capsys.readouterr().err == (
        "error: --hq-dir and the override 'hq_dirs=[b]' both set hq_dirs; keep one of them\n"
    )
    assert infer_main(["--print-config", "--tile", "64", "restore.tile=128"]) == 2
    assert "--tile and the override 'restore.tile=128' both set restore.tile" in capsys.readouterr().err
    assert train_main(["--config", TINY_LORA, "--models", "w", "--print-config", "models=v"]) == 2
    assert "--models and the override 'models=v'" in capsys.readouterr().err
    assert infer_main(["--print-config", "--tile", "64", "restore.tile_overlap=8"]) == 0  # other keys mix
    assert infer_main(["--print-config", "--tile", "128", "restore={batch_size: 2}"]) == 0  # a section merges
    assert train_main(["--config", TINY_LORA, "--print-config", "lora.rank=4", "lora={alpha: 8}"]) == 0
    capsys.readouterr()
    assert (
        infer_main(["--print-config", "restore={tile: 128}", "restore={color_fix: none}"]) == 0
    )  # both merge
    printed = yaml.safe_load(capsys.readouterr().out)["restore"]
    assert (printed["tile"], printed["color_fix"]) == (128, "none")
    assert infer_main(["--print-config", "backbone={tiny: {seed: 3}}", "backbone.tiny={num_layers: 3}"]) == 0
    assert infer_main(["--print-config", "restore={tile: 64}", "restore={tile: 96, seed: 1}"]) == 2
    assert (
        "'restore={tile: 64}' and 'restore={tile: 96, seed: 1}' both set restore.tile"
        in capsys.readouterr().err
    )
    capsys.readouterr()
    assert infer_main(["--print-config", "--tile", "64", "restore={tile: 128}"]) == 2
    assert "--tile and the override 'restore={tile: 128}' both set restore.tile" in capsys.readouterr().err
    capsys.readouterr()
    assert train_main(["--config", TINY_LORA, "--print-config", "seed=1", "max_steps=2", "seed=2"]) == 2
    assert (
        capsys.readouterr().err
        == "error: the overrides 'seed=1' and 'seed=2' both set seed; keep one of them\n"
    )


def test_a_text_with_a_colon_is_one_key_and_a_value_for_a_section_is_not_set_twice(capsys):
    """A text setting takes ``a: b`` as typed, not as a mapping of keys; a value where a section belongs
    (or a section override YAML cannot read) is load_config's one line, not 'both set restore'."""
    assert infer_main(["--print-config", "restore.caption=a: b", "restore.caption=c: d"]) == 2
    assert (
        "'restore.caption=a: b' and 'restore.caption=c: d' both set restore.caption"
        in capsys.readouterr().err
    )
    assert infer_main(["--print-config", "--tile", "64", "restore=5"]) == 2
    assert "restore is a group of settings" in capsys.readouterr().err
    assert infer_main(["--print-config", "restore={tile: 64", "restore.tile=3"]) == 2
    assert "override 'restore={tile: 64': not a valid YAML value" in capsys.readouterr().err


def test_help_config_lists_every_key_with_its_docstring(capsys):
    with pytest.raises(SystemExit) as exit_:
        train_main(["--help-config"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert "  optim.lr (float) = 0.0004\n      Peak learning rate, reached at the end of warm-up." in text
    assert "  lora.target_modules (list[str]) = " in text and "  resume (str) = " in text
    with pytest.raises(SystemExit):
        infer_main(["--help-config"])
    assert "  restore.tile (int) = 512\n      Model tile size" in capsys.readouterr().out


def test_output_folder_that_is_a_file_is_one_line_before_loading(tmp_path, capsys):
    afile = tmp_path / "restored.png"
    afile.write_text("x")
    assert train_main(["--config", TINY_LORA, f"output_dir={afile / 'run'}"]) == 2
    assert capsys.readouterr().err == (
        f"error: output_dir={afile / 'run'}: {afile} is a file, not a folder; choose a folder\n"
    )
    assert prepare_main(["--config", PREPARE_TINY, "--out", str(afile)]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_interrupted_train_says_how_to_continue(tmp_path, monkeypatch, capsys):
    import pure.train

    def interrupted(cfg, progress=True):
        (Path(cfg.output_dir) / "checkpoints" / "step-000002").mkdir(parents=True)
        raise KeyboardInterrupt

    monkeypatch.setattr(pure.train, "train", interrupted)
    assert train_main(["--config", TINY_LORA, f"output_dir={tmp_path}"]) == 130
    last = tmp_path / "checkpoints" / "step-000002"
    assert capsys.readouterr().err.strip() == (
        f"interrupted: the last checkpoint is {last}; continue with the same command and resume=latest"
    )


def test_interrupted_prepare_says_what_is_kept(tmp_path, monkeypatch, capsys):
    import pure.data.prepare

    def interrupted(cfg, progress):
        raise KeyboardInterrupt

    monkeypatch.setattr(pure.data.prepare, "prepare", interrupted)
    assert prepare_main(["--config", PREPARE_TINY, "--out", str(tmp_path)]) == 130
    assert capsys.readouterr().err.strip() == (
        f"interrupted: 0 images are in complete shards in {tmp_path}; run the same command again to "
        "continue (finished images are skipped)"
    )


def test_threads_flag_sets_torch_threads(tmp_path, monkeypatch):
    import torch

    import pure.data.prepare

    seen = []

    def record(cfg, progress):
        seen.append(torch.get_num_threads())
        raise KeyboardInterrupt

    monkeypatch.setattr(pure.data.prepare, "prepare", record)
    before = torch.get_num_threads()
    try:
        assert prepare_main(["--config", PREPARE_TINY, "--out", str(tmp_path), "--threads", "1"]) == 130
    finally:
        torch.set_num_threads(before)
    assert seen == [1]


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """The real huggingface_hub, offline, with an empty cache."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))


@pytest.fixture
def fake_hub(monkeypatch):
    """huggingface_hub's two download functions, writing small files where the real ones would."""
    calls = []

    def snapshot_download(repo_id, revision="main", allow_patterns=None, local_dir=None, **kwargs):
        calls.append(("snapshot", repo_id, list(allow_patterns or []), local_dir))
        folder = Path(local_dir)
        folder.mkdir(parents=True, exist_ok=True)
        for name in ("config.json", "model.safetensors", "tokenizer.json"):
            (folder / name).write_text("{}")
        return str(folder)

    def hf_hub_download(repo_id, filename, revision="main", local_dir=None, **kwargs):
        calls.append(("file", repo_id, filename, local_dir))
        path = Path(local_dir) / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"weights")
        return str(path)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hf_hub_download)
    monkeypatch.setattr(pure.download, "hub_reachable", lambda: True)  # as on a machine with internet
    return calls


def test_offline_without_weights_lists_every_file_once(tmp_path, offline_hub, capsys, monkeypatch):
    image = tmp_path / "in.png"
    Image.new("RGB", (8, 8)).save(image)
    assert infer_main(["-i", str(image), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the weights this run needs are not on this machine")
    assert "HF_HUB_OFFLINE is set" in err
    assert "  backbone.source: nonwhy/PURE\n  vq.source: FoundationVision/LlamaGen:vq_ds8_c2i.pt\n" in err
    assert "  python scripts/download.py models nonwhy/PURE FoundationVision/LlamaGen:vq_ds8_c2i.pt\n" in err
    assert "huggingface-cli" not in err and "--models models" in err
    assert "Traceback" not in err
    assert (
        infer_main(["-i", str(image), "-o", str(tmp_path / "out"), "--models", str(tmp_path / "typo")]) == 2
    )
    err = capsys.readouterr().err
    assert err.startswith(
        f"error: --models {tmp_path / 'typo'} does not exist (not a folder here); the weights"
    )
    assert infer_main(["-i", str(image), "-o", str(tmp_path / "out"), "--models", str(image)]) == 2
    assert (
        capsys.readouterr().err
        == f"error: --models {image} is a file; pass the folder scripts/download.py wrote\n"
    )
    (tmp_path / "models").mkdir()  # --model models/PURE meant as a local folder, but not there
    monkeypatch.chdir(tmp_path)
    assert infer_main(["-i", str(image), "-o", str(tmp_path / "out"), "--model", "models/PURE"]) == 2
    assert (
        "  backbone.source: models/PURE (read as a repo id: there is no folder models/PURE here, "
        "though models/ is)\n"
    ) in capsys.readouterr().err
    partial = tmp_path / "partial" / "nonwhy" / "PURE"  # an interrupted download: config.json only
    partial.mkdir(parents=True)
    (partial / "config.json").write_text("{}")
    assert (
        infer_main(["-i", str(image), "-o", str(tmp_path / "out"), "--models", str(partial.parents[1])]) == 2
    )
    assert (
        f"  backbone.source: nonwhy/PURE ({partial} is there but has no model.safetensors or "
        "model.safetensors.index.json: an interrupted download?)\n"
    ) in capsys.readouterr().err


def test_a_hugging_face_cache_given_as_models_says_to_pass_it_as_hf_hub_cache(tmp_path, offline_hub, capsys):
    """--models ~/.cache/huggingface/hub (huggingface_hub's layout, not download.py's) listed every weight as
    missing with the commands to fetch them into that very folder; huggingface_hub reads it as its cache."""
    image = tmp_path / "in.png"
    Image.new("RGB", (8, 8)).save(image)
    hub = tmp_path / "hub"
    (hub / "models--nonwhy--PURE" / "snapshots" / "abc").mkdir(parents=True)
    assert infer_main(["-i", str(image), "-o", str(tmp_path / "out"), "--models", str(hub)]) == 2
    assert capsys.readouterr().err == (
        f"error: --models {hub} is a Hugging Face cache (models--owner--name folders), not the folder "
        f"scripts/download.py writes: run with HF_HUB_CACHE={hub} in the environment instead of --models\n"
    )


def test_the_hf_commands_of_the_message_run_with_the_installed_cli(fake_hub, monkeypatch, tmp_path):
    """Each printed ``hf download`` line parses with the installed huggingface_hub's own CLI and asks
    for what scripts/download.py fetches."""
    import huggingface_hub.cli.download as hf_download
    from huggingface_hub.cli.hf import main as hf_main

    monkeypatch.setattr(hf_download, "snapshot_download", huggingface_hub.snapshot_download)
    monkeypatch.setattr(hf_download, "hf_hub_download", huggingface_hub.hf_hub_download)
    monkeypatch.chdir(tmp_path)
    for weights in hub_weights(load_config(InferConfig)):
        monkeypatch.setattr(sys, "argv", shlex.split(weights.command(Path("models"))))
        with pytest.raises(SystemExit) as exit_:
            hf_main()
        assert exit_.value.code in (0, None)
    assert fake_hub == [
        ("snapshot", "nonwhy/PURE", CHECKPOINT_FILES, "models/nonwhy/PURE"),
        ("file", "FoundationVision/LlamaGen", "vq_ds8_c2i.pt", "models/FoundationVision/LlamaGen"),
    ]


@pytest.mark.parametrize("name", ["models", "models #1 [${x}]"])  # YAML and interpolation syntax in a path
def test_download_then_models_folder_is_used_offline(tmp_path, fake_hub, monkeypatch, capsys, name):
    models = tmp_path / name
    assert download_main([str(models)]) == 0
    assert f"pass --models {models}" in capsys.readouterr().out
    assert (models / "nonwhy" / "PURE" / "model.safetensors").is_file()
    assert (models / "FoundationVision" / "LlamaGen" / "vq_ds8_c2i.pt").is_file()
    monkeypatch.setattr(huggingface_hub, "snapshot_download", None)  # nothing may come from the hub now
    cfg = locate(load_config(InferConfig, overrides=[f"models={literal(str(models))}"]), models)
    assert cfg.models == str(models)
    assert cfg.backbone.source == str(models / "nonwhy" / "PURE")
    assert cfg.vq.source == str(models / "FoundationVision" / "LlamaGen" / "vq_ds8_c2i.pt")


def test_a_relative_models_folder_locates_absolute_paths(tmp_path, fake_hub, monkeypatch, capsys):
    """train.py --models models saved models/nonwhy/PURE in the checkpoint's config.yaml, so merge_lora.py
    run from another folder failed with "model folder 'models/nonwhy/PURE' does not exist"."""
    monkeypatch.chdir(tmp_path)
    assert download_main(["models"]) == 0
    monkeypatch.setattr(huggingface_hub, "snapshot_download", None)  # nothing may come from the hub now
    cfg = locate(load_config(InferConfig, overrides=["models=models"]), "models")
    assert cfg.backbone.source == str(tmp_path / "models" / "nonwhy" / "PURE")
    assert cfg.vq.source == str(tmp_path / "models" / "FoundationVision" / "LlamaGen" / "vq_ds8_c2i.pt")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert Path(cfg.backbone.source).is_dir() and Path(cfg.vq.source).is_file()


def test_download_into_an_unwritable_folder_is_refused_before_fetching(fake_hub, capsys):
    """Each download failed at its end with its own error (exit 1); now one line before any (exit 2)."""
    assert download_main(["/proc/models", "FoundationVision/LlamaGen:vq_ds8_c2i.pt"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot write in /proc/models (") and err.count("\n") == 1
    assert "pass a folder you can write to" in err and fake_hub == []


def test_a_failed_download_is_one_line_naming_it(fake_hub, monkeypatch, tmp_path, capsys):
    """huggingface_hub's errors span several lines (a misspelt repo id: RepositoryNotFoundError's advice)."""

    def not_found(repo_id, filename, **kwargs):
        raise FileNotFoundError(f"404 Client Error.\n\nRepository Not Found: {repo_id}.\nCheck the id.")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", not_found)
    sources = ("nonwhy/PUER:vq.pt", "FoundationVision/LlamaGen:a.pt")
    assert download_main([str(tmp_path / "models"), *sources]) == 1
    lines = capsys.readouterr().err.splitlines()
    assert lines == [
        f"error: could not download {source} (FileNotFoundError: 404 Client Error. Repository Not Found: "
        f"{source.partition(':')[0]}. Check the id.)"
        for source in sources
    ]


def test_download_of_a_training_config_fetches_base_tokenizer_and_vq(tmp_path, fake_hub, capsys):
    config = str(ROOT / "configs" / "train_full_x4.yaml")
    assert download_main([str(tmp_path), "--config", config, "--list"]) == 0
    lines = {line.split()[2]: line for line in capsys.readouterr().out.splitlines()}
    assert sorted(lines) == ["Alpha-VLLM/Lumina-mGPT-7B-512", "FoundationVision/LlamaGen", "nonwhy/PURE"]
    assert "*.safetensors" in lines["Alpha-VLLM/Lumina-mGPT-7B-512"]
    assert "*.safetensors" not in lines["nonwhy/PURE"]  # the tokenizer only
    assert fake_hub == []
    assert download_main([str(tmp_path), "not-a-repo"]) == 2


def test_download_of_a_prepare_config_lists_its_captioning_model(tmp_path, fake_hub, capsys, monkeypatch):
    """caption.model is listed with its processor files; a prepare run takes it from --models when it is
    there, and otherwise leaves it to the captioner's loader (a full manifest needs no model)."""
    config = tmp_path / "prepare.yaml"
    config.write_text(
        "hq_dirs: [hq]\nbackbone: {source: tiny}\nvq: {source: tiny}\ncaption:\n"
        "  manifest: captions.jsonl\n  model: Salesforce/blip-image-captioning-base\n"
    )
    assert download_main([str(tmp_path / "models"), "--config", str(config), "--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and lines[0].startswith("hf download Salesforce/blip-image-captioning-base ")
    assert '--include "*.safetensors"' in lines[0] and '--include "*.json"' in lines[0]
    assert download_main([str(tmp_path / "models"), "--config", str(config)]) == 0
    folder = tmp_path / "models" / "Salesforce" / "blip-image-captioning-base"
    assert (folder / "model.safetensors").is_file()
    monkeypatch.setattr(huggingface_hub, "snapshot_download", None)  # nothing may come from the hub now
    cfg = load_config(PrepareConfig, config)
    assert locate(cfg, tmp_path / "models", backbone_weights=False).caption.model == str(folder)
    assert locate(cfg, tmp_path / "elsewhere", backbone_weights=False).caption.model == cfg.caption.model


def test_download_of_a_config_with_a_wrong_value_says_which(tmp_path, capsys):
    """A file whose keys fit one script's settings but a value does not: that error, not "fits none"."""
    (tmp_path / "t.yaml").write_text("restore:\n  tile: 64\n")
    assert download_main([str(tmp_path / "models"), "--list", "--config", str(tmp_path / "t.yaml")]) == 2
    assert capsys.readouterr().err == "error: restore.tile_overlap=64: must be less than restore.tile=64\n"
    (tmp_path / "t.yaml").write_text("nothing_of_ours: 1\n")
    assert download_main([str(tmp_path / "models"), "--list", "--config", str(tmp_path / "t.yaml")]) == 2
    assert "fits none of the scripts' settings" in capsys.readouterr().err


def test_download_list_checks_its_folder_and_sources(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert download_main([str(tmp_path / "file"), "--list"]) == 2
    assert (
        capsys.readouterr().err
        == f"error: {tmp_path / 'file'} is a file; pass the folder to download into, e.g. models\n"
    )
    assert download_main([str(tmp_path / "models"), "./local_folder", "--list"]) == 2
    assert "is a path on this machine, not a Hugging Face repo id" in capsys.readouterr().err


@pytest.mark.parametrize(
    "main, args, named",
    [
        (infer_main, ["-i", "data/samples", "-o", "out", "--config", TINY], "input data/samples"),
        (infer_main, ["-i", "a.png", "-o", "out", "--config", TINY, "--adapter", "a/b/ad"], "a/b/ad"),
        (infer_main, ["-i", "a.png", "-o", "out", "--config", TINY, "--vq", "models/vq.pt"], "models/vq.pt"),
        (infer_main, ["-i", "a.png", "-o", "out", "--model", "./models/PURE", "--vq", "tiny"], "models/PURE"),
        (evaluate_main, ["--sr", "sr", "--gt", "gt", "--metrics", "psnr"], "SR folder not found: sr"),
        (benchmark_main, ["realsr", "--config", TINY], "needs data/benchmarks/realsr/lr/"),
        (merge_main, ["outputs/run/checkpoints/step-000001", "merged"], "checkpoints/step-000001"),
        (download_main, ["models", "--config", "mine.yaml", "--list"], "config file not found: mine.yaml"),
    ],
)
def test_a_relative_path_not_found_says_where(main, args, named, tmp_path, monkeypatch, capsys):
    """The README's commands run from the checkout; run from another folder, 'input data/samples does not
    exist' did not say that paths are read from the current folder."""
    monkeypatch.chdir(tmp_path)
    Image.new("RGB", (16, 16)).save(tmp_path / "a.png")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{named} (relative to the current folder {tmp_path})" in err, err


def test_one_opencv_and_a_hub_with_the_hf_cli():
    dependencies = re.findall(r'^    "([^"]+)",$', (ROOT / "pyproject.toml").read_text(), re.MULTILINE)
    assert [d for d in dependencies if d.startswith("opencv")] == ["opencv-python-headless>=4.8"]
    assert "huggingface_hub>=1.0" in dependencies


def _third_party_imports(folder: Path) -> dict[str, set[bool]]:
    """Top-level module names imported under ``folder`` that are neither the standard library, pure, nor a
    module of the checkout's scripts, tests or benchmarks (tests import benchmarks' modules), each with
    whether it is imported at a module's top (True) or lazily."""
    local = {p.stem for f in ("scripts", "tests", "benchmarks") for p in (ROOT / f).glob("*.py")}
    local |= {"pure", "tests", "__future__"}
    found: dict[str, set[bool]] = {}
    for path in folder.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        top = {id(node) for node in tree.body}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in {n.split(".")[0] for n in names} - local - set(sys.stdlib_module_names):
                found.setdefault(name, set()).add(id(node) in top)
    return found


def test_every_imported_package_is_declared():
    """Each third-party module pure, its scripts, tests and benchmarks import comes from a distribution that
    pyproject.toml names (not only from another's dependencies); what only an extra provides is imported
    lazily by pure (the commands that need it say which extra to install). pillow-heif is the one package
    used when present and never required (HEIC files, a Pillow plugin). A module not installed here (the
    suite runs with [test] alone) is taken to come from the distribution of its own name."""
    import importlib.metadata

    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]

    def names(requirements: list[str]) -> set[str]:
        return {re.sub(r"[-_.]+", "-", re.match(r"[\w.-]+", r)[0]).lower() for r in requirements}

    required = names(project["dependencies"])
    extras = set().union(*(names(r) for r in project["optional-dependencies"].values()))
    installed = importlib.metadata.packages_distributions()
    problems = []
    for folder in ("pure", "scripts", "tests", "benchmarks"):
        for module, at_top in sorted(_third_party_imports(ROOT / folder).items()):
            if module == "pillow_heif":
                continue
            # not installed here (an extra left out: gradio without [demo]): judged by its own name
            dists = names(installed[module]) if module in installed else names([module])
            if dists & required:
                continue
            if not dists & extras:
                problems.append(f"{folder}: {module} ({', '.join(sorted(dists))}) is not declared")
            elif folder in ("pure", "scripts") and True in at_top:
                problems.append(f"{folder}: {module} comes from an extra but is imported at a module's top")
    assert problems == []


@pytest.mark.slow
def test_the_source_distribution_holds_the_checkout(tmp_path):
    """A packager builds from the sdist and runs the tests there: setuptools alone put pure/ and
    tests/test_*.py in it, without conftest.py, the test helpers, scripts/ or configs/."""
    try:
        listed = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    tracked = set(listed.stdout.splitlines())
    source = tmp_path / "source"
    for name in tracked:
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, source / name)
    build = f"from setuptools import build_meta; print(build_meta.build_sdist({str(tmp_path)!r}))"
    built = subprocess.run([sys.executable, "-c", build], cwd=source, capture_output=True, text=True)
    assert built.returncode == 0, built.stderr[-2000:]
    with tarfile.open(tmp_path / built.stdout.split()[-1]) as sdist:
        held = {m.name.split("/", 1)[1] for m in sdist.getmembers() if m.isfile()}
    assert {"tests/conftest.py", "scripts/infer.py", "configs/tiny.yaml"} <= held
    assert tracked - held == {".gitignore"}


@pytest.mark.slow
def test_inference_imports_no_metric_library_and_peft_says_nothing():
    """Restoring imports no pyiqa, bitsandbytes, peft (without --adapter) or basicsr; peft, when used,
    prints no "pip install kernels" (bitsandbytes) and no FutureWarning about gradient checkpointing."""
    code = (
        "import sys, warnings\n"
        "warnings.simplefilter('error', FutureWarning)\n"
        "import pure.cli, pure.download, pure.model, pure.pipeline, pure.vq\n"
        "print(sorted(m for m in ('pyiqa', 'bitsandbytes', 'peft', 'basicsr') if m in sys.modules))\n"
        "from pure.config import BackboneConfig, LoRAConfig\n"
        "from pure.model import load_backbone\n"
        "from pure.model import backbone_folder\n"
        "from pure.train import apply_lora\n"
        "apply_lora(load_backbone(str(backbone_folder(BackboneConfig(source='tiny')))), LoRAConfig(), [])\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == "[]" and result.stderr == ""


@pytest.mark.parametrize(
    "caption",
    ["一只猫 🐱 on a mat", "costs ${price} today", 'he said "hi"\tand left', "a \\${z} and \\\\${y}\\"],
)
def test_free_text_and_paths_reach_the_config_as_typed(caption, capsys):
    """Flags are passed to OmegaConf as key=value strings: emoji (outside the BMP), ${...} and quotes
    must come back exactly, never as a YAML error or an interpolation."""
    assert infer_main(["--print-config", "--caption", caption, "--models", f"w/{caption}"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["restore"]["caption"] == caption and printed["models"] == f"w/{caption}"


def test_non_finite_numbers_are_one_line_before_loading(capsys):
    for flags in (["--outscale", "nan"], ["--temperature", "inf"], ["--cfg-scale=-inf"]):
        assert infer_main(["--print-config", *flags]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "must be a finite number" in err


def test_a_bad_value_names_the_flag_as_typed_or_the_key_of_a_file_or_override(tmp_path, capsys):
    """`--outscale 0` was reported as `restore.outscale=0.0`, a key the user never typed: a value from a
    flag is named as typed, one from a YAML file or a key=value override by its key."""
    (tmp_path / "mine.yaml").write_text("restore:\n  outscale: 0\n")
    (tmp_path / "file").write_text("")
    typo = tmp_path / "typo.jsonl"
    infer, prepare = (
        (lambda *a: infer_main(["--print-config", *a])),
        (lambda *a: prepare_main(["--config", PREPARE_TINY, *a])),
    )
    cases = [
        (infer, ["--outscale", "0"], "--outscale 0: must be at least 1e-06"),
        (infer, ["--cfg-scale=-1e9"], "--cfg-scale -1e9: must be at least 0"),
        (infer, ["--device", "gpu 1"], "--device 'gpu 1': expected one of auto, cpu, cuda, cuda:N"),
        (infer, ["--tile", "64", "--tile-overlap", "64"], "--tile-overlap 64: must be less than --tile 64"),
        (infer, ["--tile-overlap", "512"], "--tile-overlap 512: must be less than restore.tile=512"),
        (infer, ["restore.outscale=0"], "restore.outscale=0.0: must be at least 1e-06"),
        (infer, ["--config", str(tmp_path / "mine.yaml")], "restore.outscale=0.0: must be at least"),
        (prepare, ["--out", ""], "--out '' is empty: name the folder to write into, e.g. --out "),
        (prepare, ["--out", str(tmp_path / "file" / "x")], f"--out {tmp_path / 'file' / 'x'}: "),
        (prepare, ["--manifest", str(typo)], f"--manifest {typo} does not exist; pass the descriptions"),
        (prepare, ["--hq-dir", "a", "--hq-dir", ""], "--hq-dir '' names an empty folder, which would"),
        (prepare, ["--manifest", str(tmp_path)], f"--manifest {tmp_path} is a folder; pass the descriptions"),
    ]
    for main, flags, error in cases:
        assert main(*flags) == 2
        assert capsys.readouterr().err.startswith(f"error: {error}"), flags
    folders = ["-i", str(tmp_path), "-o", str(tmp_path / "out")]
    assert infer_main([*folders, "--config", TINY, "sampling.max_new_tokens=200", "--tile", "128"]) == 2
    assert "or pass --tile 96 or less" in capsys.readouterr().err  # the answer's budget, checked later
    for folder in ("lr", "hr"):
        (tmp_path / "s" / folder).mkdir(parents=True)
    assert (
        benchmark_main(["s", "--root", str(tmp_path), "--run", str(tmp_path / "r"), "--outscale", "0"]) == 2
    )
    assert capsys.readouterr().err.startswith("error: --outscale 0: must be at least")


def test_several_inputs_from_a_shell_pattern_name_the_folder(tmp_path, capsys):
    """`-i in/*.png` reaches us as several paths: the error says to pass their folder, not that a file
    is a malformed key=value override."""
    for name in ("a.png", "b.png", "c.png"):
        Image.new("RGB", (8, 8)).save(tmp_path / name)
    with pytest.raises(SystemExit) as exit_:
        infer_main(
            ["-i", str(tmp_path / "a.png"), str(tmp_path / "b.png"), str(tmp_path / "c.png"), "-o", "o"]
        )
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert exit_.value.code == 2 and "takes one image or one folder, but 3 paths were given" in err
    assert err.endswith(f"pass the folder, -i {tmp_path} (--help explains every flag)")


def test_a_stray_path_beside_an_input_folder_is_not_called_a_shell_pattern(tmp_path, capsys):
    """`-i album -o out other/photo.png`: no shell pattern gave those paths, and their common parent (the
    folder the old message named) would restore everything under it."""
    (tmp_path / "album").mkdir()
    (tmp_path / "other").mkdir()
    for name in ("album/a.png", "other/b.png"):
        Image.new("RGB", (8, 8)).save(tmp_path / name)
    for given in ("album", "album/a.png"):
        with pytest.raises(SystemExit) as exit_:
            infer_main(["-i", str(tmp_path / given), "-o", "o", str(tmp_path / "other" / "b.png")])
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert exit_.value.code == 2 and f"pass the folder, -i {tmp_path} " not in err
        assert err.startswith(
            f"scripts/infer.py: error: {tmp_path / 'other' / 'b.png'} is neither a flag nor a key=value "
            f"override: -i/--input takes one image or one folder ({tmp_path / given}); restore "
        )


def test_overrides_and_flags_mix_in_any_order():
    args = infer_parser().parse_args(
        ["-i", "x", "restore.tile=256", "--quantize", "int8", "restore.outscale=2", "--skip-existing"]
    )
    assert args.overrides == ["restore.tile=256", "restore.outscale=2"]
    assert (args.input, args.quantize, args.skip_existing) == ("x", "int8", True)


@pytest.mark.parametrize(
    ("argv", "missing"),
    [(["-i", "x"], "-o/--output"), ([], "-i/--input, -o/--output"), (["-o", "y"], "-i/--input")],
)
def test_infer_names_only_the_flags_missing(argv, missing, capsys):
    with pytest.raises(SystemExit) as exit_:
        infer_main(argv)
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert exit_.value.code == 2 and f"error: the following arguments are required: {missing} (" in err


def test_download_of_a_config_without_hub_weights_fetches_nothing(tmp_path, fake_hub, capsys):
    """configs/tiny.yaml names tiny sources only: not the released 14.5 GB model."""
    assert download_main([str(tmp_path), "--config", str(ROOT / "configs" / "tiny.yaml"), "--list"]) == 0
    assert "nothing to download" in capsys.readouterr().out and fake_hub == []
    with pytest.raises(SystemExit) as exit_:  # no folder: only the folder is called required
        download_main(["--config", str(ROOT / "configs" / "tiny.yaml")])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "required: folder" in err and "SOURCE" not in err


def test_an_adapter_flag_given_a_training_checkpoint_names_its_adapter_folder(tmp_path):
    from pure.errors import PureError
    from pure.pipeline import check_adapter_folder

    (tmp_path / "step-000004" / "adapter").mkdir(parents=True)
    (tmp_path / "step-000004" / "adapter" / "adapter_config.json").write_text('{"peft_type": "LORA"}')
    from safetensors.torch import save_file  # a readable weights file: its header is checked

    save_file({}, str(tmp_path / "step-000004" / "adapter" / "adapter_model.safetensors"))
    with pytest.raises(
        PureError, match=r"is a training checkpoint; pass its adapter subfolder: --adapter .*adapter"
    ):
        check_adapter_folder(str(tmp_path / "step-000004"))
    check_adapter_folder(str(tmp_path / "step-000004" / "adapter"))  # the adapter folder itself is fine


def test_a_device_name_torch_does_not_know_is_one_line():
    from pure.errors import PureError
    from pure.model import pick_device

    with pytest.raises(PureError, match="device='gpu' is not a device"):
        pick_device("gpu")


def test_an_unreachable_hub_uses_the_cache_only(monkeypatch):
    """No retries against a hub that cannot be reached: one quick look in the cache (local_files_only)."""
    import socket

    import pure.download as download

    seen = {}

    def hf_hub_download(repo_id, filename, **kwargs):
        seen.update(kwargs)
        raise FileNotFoundError("not cached")

    def refuse(*args, **kwargs):
        raise OSError("Name or service not known")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hf_hub_download)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    download.hub_reachable.cache_clear()
    try:
        assert not download.hub_reachable()
        with pytest.raises(FileNotFoundError):
            download.parse_source("FoundationVision/LlamaGen:vq_ds8_c2i.pt").fetch()
        assert seen == {"revision": "main", "local_files_only": True}
    finally:
        download.hub_reachable.cache_clear()


@pytest.mark.parametrize("flags", [["--port", "70000"], ["--port", "-1"], ["--max-side", "0"]])
def test_app_flags_out_of_range_are_usage_errors(flags, capsys):
    """Refused by the parser (exit 2), before any model loads, not by Gradio after."""
    from pure.cli import app_parser

    with pytest.raises(SystemExit) as exit_:
        app_parser().parse_args(flags)
    assert exit_.value.code == 2 and flags[0] in capsys.readouterr().err


def test_download_without_network_says_so_and_names_the_weights(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(pure.download, "hub_reachable", lambda: False)
    assert download_main([str(tmp_path / "models")]) == 1
    err = capsys.readouterr().err
    assert "cannot be reached" in err and "--list" in err and "nonwhy/PURE" in err
    assert not (tmp_path / "models").exists()  # nothing half made
    (tmp_path / "file").write_text("")
    assert download_main([str(tmp_path / "file"), "nonwhy/PURE"]) == 2
    assert download_main([str(tmp_path), "nonwhy/PURE:"]) == 2
    assert "names no file" in capsys.readouterr().err


def test_an_unknown_flag_suggests_ours(capsys):
    """Real-ESRGAN's -s/--scale and misspelt flags name this script's flag; unknown ones stay plain."""
    for given, meant in (
        ("--scale", "--outscale"),
        ("--tile_overlap", "--tile-overlap"),
        ("--half", "--dtype float16"),
    ):
        with pytest.raises(SystemExit) as stop:
            infer_main(["-i", "x", "-o", "y", given])
        assert stop.value.code == 2
        assert (
            f"unrecognized arguments: {given}; did you mean {meant} for {given}? (--help"
            in capsys.readouterr().err
        )
    with pytest.raises(SystemExit):
        infer_main(["-i", "x", "-o", "y", "--foo"])
    assert capsys.readouterr().err == (
        "scripts/infer.py: error: unrecognized arguments: --foo (--help explains every flag)\n"
    )


def test_every_script_that_runs_torch_takes_threads(capsys):
    from pure.cli import app_main, benchmark_main, evaluate_main, merge_main

    for main in (infer_main, prepare_main, train_main, merge_main, evaluate_main, benchmark_main, app_main):
        with pytest.raises(SystemExit):
            main(["--help"])
        assert "--threads THREADS" in capsys.readouterr().out, main.__name__


def test_an_empty_input_or_output_is_not_called_missing(capsys):
    for given in ("", " "):
        with pytest.raises(SystemExit):
            infer_main(["-i", "x", "-o", given])
        assert "error: -o/--output given but empty (an unset shell variable?)" in capsys.readouterr().err


def test_a_hub_web_address_names_the_source_it_means(capsys):
    from pure.download import parse_source
    from pure.errors import PureError

    for url, meant in (
        ("https://huggingface.co/nonwhy/PURE", "nonwhy/PURE"),
        (
            "https://huggingface.co/FoundationVision/LlamaGen/resolve/main/vq_ds8_c2i.pt",
            "FoundationVision/LlamaGen:vq_ds8_c2i.pt",
        ),
    ):
        with pytest.raises(PureError, match=f"is a web address; give the repo id it names: {meant}$"):
            parse_source(url)


def test_evaluate_names_gt_for_other_tools_hr_and_nothing_for_lr(capsys):
    from pure.cli import evaluate_main

    for given, hint in (("--hr", "; did you mean --gt for --hr?"), ("--lr", "")):
        with pytest.raises(SystemExit):
            evaluate_main(["--sr", "x", given, "y"])
        assert (
            f"unrecognized arguments: {given} y{hint} (--help explains every flag)" in capsys.readouterr().err
        )


def test_metrics_separated_by_spaces_are_told_to_use_commas(capsys):
    """``--metrics psnr ssim`` said only "unrecognized arguments: ssim" (evaluate.py), or "override 'ssim' is
    not of the form key=value" (benchmark.py, which passes unknown words to inference)."""
    from pure.cli import benchmark_main, evaluate_main

    for main, argv in ((evaluate_main, ["--sr", "x"]), (benchmark_main, ["div2k"])):
        with pytest.raises(SystemExit):
            main([*argv, "--metrics", "psnr", "SSIM"])
        assert (
            "unrecognized arguments: SSIM; did you mean --metrics A,B (comma-separated) for the metric SSIM?"
            in (capsys.readouterr().err)
        )
    with pytest.raises(SystemExit):  # a stray word is benchmark.py's, never an override of inference
        benchmark_main(["div2k", "extra", "seed=3"])
    assert "benchmark.py: error: unrecognized arguments: extra (--help" in capsys.readouterr().err


def test_help_of_quantize_gives_the_computed_weight_sizes():
    """int4 weights of the 7B take 4.35 of bf16's 13.19 GiB (pure.memory.weight_bytes; README): a third."""
    text = " ".join(infer_parser().format_help().split())
    assert "int8 about halves the weights' memory" in text and "cuts it to about a third" in text


def test_a_setting_without_effect_is_noted(tmp_path, capsys):
    """--draft-len without --speculative used to be ignored without a word."""
    (tmp_path / "in").mkdir()
    args = [
        "-i",
        str(tmp_path / "in"),
        "-o",
        str(tmp_path / "out"),
        "--config",
        str(ROOT / "configs" / "tiny.yaml"),
    ]
    infer_main([*args, "--draft-len", "4", "--device", "cpu"])
    assert (
        "note: restore.draft_len (--draft-len) has no effect without --speculative" in capsys.readouterr().err
    )


def test_a_second_infer_run_into_the_same_output_folder_is_refused_while_the_first_runs(tmp_path, capsys):
    """Two runs into one -o at once (the command started twice) both planned before either wrote: the later
    replaced the earlier's outputs without --overwrite, and both exited 0 saying they had restored them."""
    from pure.files import lock_folder

    (tmp_path / "in").mkdir()
    Image.new("RGB", (16, 16), "grey").save(tmp_path / "in" / "a.png")
    out = tmp_path / "out"
    out.mkdir()
    first = lock_folder(out)
    argv = ["-i", str(tmp_path / "in"), "-o", str(out), "--config", TINY, "--no-progress"]
    assert infer_main(argv) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"error: -o {out} is in use by another run of scripts/infer.py (started twice?): wait for it to end "
        "(then --skip-existing restores what it left), or pass another -o"
    )
    assert list(out.iterdir()) == []
    first()


@pytest.mark.parametrize(
    ("typed", "meant"), [("JPEG", "jpg"), (".png", "png"), ("Jpg", "jpg"), ("auto", "auto")]
)
def test_the_output_format_is_taken_in_any_case_with_or_without_its_dot(typed, meant):
    """--ext JPEG / .png (other upscalers' spellings) are the formats they name; they were invalid choices."""
    assert infer_parser().parse_args(["-i", "a", "-o", "b", "--ext", typed]).ext == meant
