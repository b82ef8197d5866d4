"""Backbone loading and golden activations against ../shared/reference/backbone."""

from __future__ import annotations

import errno
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from pure import tiny as layout
from pure.checkpoint import save_model_folder
from pure.kv_cache import CACHE_ARG
from pure.model import (
    CheckpointError,
    causal_lm_loss,
    check_lora_config,
    enable_activation_checkpointing,
    load_backbone,
    load_text_side,
    load_tokenizer,
    load_vocab,
    merge_lora_adapter,
    quiet_peft,
    z_loss,
)
from pure.tiny import (
    det_state_dict,
    tiny_tokenizer,
    write_backbone_checkpoint,
    write_tiny_checkpoint,
)
from pure.vocab import SIZE_TOKEN_BASE, VocabError
from tests.reference import require


@pytest.fixture(scope="module")
def reference_model(reference_dir, tmp_path_factory):
    """The fixture's tiny model, written in the real on-disk layout and loaded through load_backbone."""
    files = ("config.json", "state_dict_shapes.json", "backbone.json", "backbone.npz")
    ref = require(reference_dir, *(f"backbone/{name}" for name in files)) / "backbone"
    config = json.loads((ref / "config.json").read_text())
    shapes = json.loads((ref / "state_dict_shapes.json").read_text())
    seed = json.loads((ref / "backbone.json").read_text())["weights_seed"]
    folder = write_backbone_checkpoint(
        tmp_path_factory.mktemp("ref_ckpt"), config, det_state_dict(shapes, seed)
    )
    return load_backbone(str(folder), dtype=torch.float32), np.load(ref / "backbone.npz"), config


def test_activations_match_reference(reference_model):
    model, ref, _ = reference_model
    ids = torch.from_numpy(ref["input_ids"]).long()[None]
    layer_out = []
    hooks = [
        layer.register_forward_hook(
            lambda mod, args, out: layer_out.append(out[0] if isinstance(out, tuple) else out)
        )
        for layer in model.model.layers
    ]
    with torch.no_grad():
        out = model.model(input_ids=ids)
        logits = model.lm_head(out.last_hidden_state).float()[0]
    for hook in hooks:
        hook.remove()
    emb = model.model.embed_tokens(ids)[0]
    torch.testing.assert_close(emb, torch.from_numpy(ref["embeddings"]), atol=1e-6, rtol=0)
    for layer, expected in enumerate(ref["layer_out"]):  # decoder layer outputs, before the final norm
        torch.testing.assert_close(layer_out[layer][0], torch.from_numpy(expected), atol=1e-4, rtol=0)
    torch.testing.assert_close(
        out.last_hidden_state[0], torch.from_numpy(ref["final_hidden"]), atol=1e-4, rtol=0
    )
    cols = torch.from_numpy(ref["logit_cols"]).long()
    torch.testing.assert_close(logits[:, cols], torch.from_numpy(ref["logits_at_cols"]), atol=1e-4, rtol=0)
    rows = torch.from_numpy(ref["full_positions"]).long()
    torch.testing.assert_close(logits[rows], torch.from_numpy(ref["logits_full"]), atol=1e-4, rtol=0)
    torch.testing.assert_close(logits.logsumexp(-1), torch.from_numpy(ref["logsumexp"]), atol=1e-4, rtol=0)
    ours = logits.argmax(-1)
    theirs = torch.from_numpy(ref["argmax"]).long()
    differ = ours != theirs  # only at near-ties: the reference's choice within the logits' tolerance
    assert differ.float().mean() < 0.01
    gap = logits[differ].max(-1).values - logits[differ].gather(-1, theirs[differ][:, None])[:, 0]
    assert bool((gap <= 2e-4).all())


def test_image_logits_are_not_masked(reference_model):
    model, ref, _ = reference_model
    ids = torch.from_numpy(ref["input_ids"]).long()[None]
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    image_ids = torch.tensor(
        [
            layout.FIRST_IMAGE_ID,
            100,
            layout.FIRST_IMAGE_ID + layout.HALF_CODEBOOK - 1,
            layout.SECOND_IMAGE_ID,
            layout.TINY_VOCAB_SIZE - 1,
        ]
    )
    assert torch.isfinite(logits[..., image_ids]).all()
    assert logits[..., image_ids].abs().max() < 100


def test_loss_matches_reference(reference_model):
    model, ref, _ = reference_model
    ids = torch.from_numpy(ref["input_ids"]).long()[None]
    labels = torch.from_numpy(ref["labels"]).long()[None]
    with torch.no_grad():
        out = model(input_ids=ids, labels=labels)
    assert abs(out.loss.item() - float(ref["loss"])) < 1e-4
    assert abs(z_loss(out.logits, labels).item() - float(ref["z_loss_raw"])) < 1e-3
    weighted = causal_lm_loss(out.logits, labels, z_loss_weight=1e-4)
    assert abs(weighted.item() - (float(ref["loss"]) + 1e-4 * float(ref["z_loss_raw"]))) < 1e-4


def test_kv_cache_matches_full_forward(reference_model):
    model, ref, _ = reference_model
    ids = torch.from_numpy(ref["input_ids"]).long()[None]
    answer = (torch.from_numpy(ref["labels"]) >= 0).nonzero()
    prompt = max(int(answer[0]) if len(answer) else ids.shape[1] // 2, 1)  # the user turn, as in generation
    with torch.no_grad():
        full = model(input_ids=ids).logits[0]
        first = model(input_ids=ids[:, :prompt], use_cache=True)
        cache = getattr(first, CACHE_ARG)
        steps = [first.logits[0, -1]]
        for t in range(prompt, ids.shape[1]):
            out = model(input_ids=ids[:, t : t + 1], cache=cache, use_cache=True)
            steps.append(out.logits[0, -1])
    torch.testing.assert_close(torch.stack(steps), full[prompt - 1 :], atol=1e-4, rtol=0)


def test_qk_norm_is_repeated_over_heads(reference_model):
    model, _, config = reference_model
    heads = config["num_attention_heads"]
    for layer in model.model.layers:
        weight = layer.self_attn.q_norm.weight
        assert weight.shape == (heads, config["hidden_size"] // heads)  # stored as [1, head_dim]
        assert (weight == weight[:1]).all()


def test_tiny_checkpoint_with_tokenizer(tmp_path):
    folder = write_tiny_checkpoint(tmp_path / "tiny", seed=3)
    model = load_backbone(str(folder), dtype=torch.float32)
    tokenizer = load_tokenizer(str(folder))
    vocab = load_vocab(tokenizer, str(folder))
    assert vocab.size == model.config.vocab_size == layout.TINY_VOCAB_SIZE
    assert vocab.image_start == layout.SPECIAL_IDS["<racm3:break>"]
    assert vocab.end_of_turn == layout.END_OF_TURN_ID
    assert vocab.size_token(16) == SIZE_TOKEN_BASE + 16 + layout.RESERVED_OFFSET
    assert model.dtype == torch.float32


def test_activation_checkpointing_keeps_the_gradients(tmp_path):
    """Every decoder layer recomputes its activations, and the gradients stay the same."""
    folder = write_tiny_checkpoint(tmp_path / "tiny", seed=3)
    ids = torch.randint(0, 1000, (1, 12), generator=torch.Generator().manual_seed(0))

    def gradients(model):
        model.train()
        model(input_ids=ids, labels=ids).loss.backward()
        return [p.grad for p in model.parameters()]

    plain = gradients(load_backbone(str(folder), dtype=torch.float32))
    model = load_backbone(str(folder), dtype=torch.float32)
    enable_activation_checkpointing(model)
    assert all(layer.gradient_checkpointing for layer in model.model.layers)
    for a, b in zip(plain, gradients(model), strict=True):
        torch.testing.assert_close(a, b)


def test_activation_checkpointing_on_older_transformers():
    """transformers before 5.2x (5.17 on the lent GPU machines) has only ``gradient_checkpointing_enable``."""
    calls = []

    class Older:
        def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs=None):
            calls.append(gradient_checkpointing_kwargs)

    enable_activation_checkpointing(Older())
    assert calls == [{"use_reentrant": False}]


def test_missing_shard_is_a_clear_error(tmp_path):
    folder = write_tiny_checkpoint(tmp_path / "tiny")
    (folder / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(CheckpointError, match="model-00002-of-00002.safetensors"):
        load_backbone(str(folder))


def test_wrong_shape_is_a_clear_error(tmp_path):
    folder = write_tiny_checkpoint(tmp_path / "tiny")
    config = json.loads((folder / "config.json").read_text())
    config["intermediate_size"] = 96
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"mlp.*expects .*: config\.json and the weights are of two"):
        load_backbone(str(folder))


def test_a_model_folder_without_its_weights_or_with_other_weights_names_the_fix(tmp_path):
    """Shards without their index (the small index is fetched apart: an interrupted download), PyTorch .bin
    weights, weights of another layout: each message named what it found but not what to do."""
    folder = write_tiny_checkpoint(tmp_path / "tiny")
    index = folder / "model.safetensors.index.json"
    saved = index.read_text()
    index.unlink()
    with pytest.raises(
        CheckpointError,
        match=rf"^{folder} holds safetensors shards \(model-00001-of-00002\.safetensors, model-00002-of-00002"
        r"\.safetensors\) but no model\.safetensors\.index\.json .*; download or copy the whole model folder",
    ):
        load_backbone(str(folder), dtype=torch.float32)
    shards = sorted(folder.glob("*.safetensors"))
    for shard in shards:
        shard.rename(tmp_path / shard.name)
    (folder / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"holds PyTorch \.bin weights \(pytorch_model\.bin\).*convert"):
        load_backbone(str(folder), dtype=torch.float32)
    (folder / "pytorch_model.bin").unlink()
    with pytest.raises(CheckpointError, match=r"^no model\.safetensors or .*; download or copy the whole"):
        load_backbone(str(folder), dtype=torch.float32)
    for shard in shards:
        (tmp_path / shard.name).rename(shard)
    index.write_text(saved.replace('"model.norm.weight"', '"language_model.norm.weight"'))
    from safetensors.torch import load_file, save_file

    for shard in shards:  # a wrapper's prefix on one key: the weights of another layout
        state = load_file(str(shard))
        if "model.norm.weight" in state:
            state["language_model.norm.weight"] = state.pop("model.norm.weight")
        save_file(state, str(shard))
    with pytest.raises(
        CheckpointError,
        match=r"unexpected \['language_model\.norm\.weight'\] \(1 in all\); it is not a whole PURE "
        r"\(Lumina-mGPT\) checkpoint: download or copy the model folder again",
    ):
        load_backbone(str(folder), dtype=torch.float32)


def test_missing_folder_and_offline_repo(tmp_path, monkeypatch):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_backbone(str(tmp_path / "nowhere" / "model"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    with pytest.raises(CheckpointError, match=r"run `python scripts/download.py models nonwhy/PURE`"):
        load_backbone("nonwhy/PURE")


def test_file_given_as_model_folder_is_called_a_file(tmp_path):
    photo = tmp_path / "photo.png"
    photo.write_bytes(b"not a model")
    with pytest.raises(CheckpointError, match=r"photo\.png' is a file, not a folder") as info:
        load_backbone(str(photo))
    assert "does not exist" not in str(info.value)


def test_missing_config_is_a_clear_error(tmp_path):
    folder = write_tiny_checkpoint(tmp_path / "tiny")
    shutil.move(folder / "config.json", tmp_path / "elsewhere.json")
    with pytest.raises(CheckpointError, match="config.json"):
        load_backbone(str(folder))


def test_a_snapshot_copied_without_its_blobs_names_the_links(tmp_path):
    """A Hugging Face cache's snapshot holds links into blobs/; copied without them every file is listed
    but none opens, and each was called missing (huggingface_hub#4022, mlverse/hfhub#10)."""
    blobs = write_tiny_checkpoint(tmp_path / "blobs")
    snapshot = tmp_path / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    for file in blobs.iterdir():
        (snapshot / file.name).symlink_to(Path("../../blobs") / file.name)
    (blobs / "config.json").unlink()
    with pytest.raises(CheckpointError) as caught:
        load_backbone(str(snapshot))
    message = str(caught.value)
    assert "config.json -> ../../blobs/config.json" in message and "cp -rL" in message
    assert "is missing" not in message


def test_a_hugging_face_cache_folder_given_as_the_model_names_its_snapshot(tmp_path):
    """Lumina-mGPT#32: --model ckpts/models--Alpha-VLLM--Lumina-mGPT-7B-768-Omni (the cache's repo folder, as
    hf_hub_download leaves it) was refused as 'config.json is missing', with no word of the snapshot in it."""
    repo = tmp_path / "hub" / "models--nonwhy--PURE"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("bbb", encoding="utf-8")
    (repo / "snapshots" / "aaa").mkdir(parents=True)  # an older snapshot, without its config
    snapshot = write_tiny_checkpoint(repo / "snapshots" / "bbb")
    for given in (repo, repo / "snapshots", tmp_path / "hub"):
        with pytest.raises(CheckpointError) as caught:
            load_backbone(str(given))
        assert str(caught.value) == (
            f"{given} is a Hugging Face cache folder, not a model folder: pass the snapshot in it, {snapshot}"
        )
    with pytest.raises(CheckpointError, match=r"config\.json is missing: a model folder needs"):
        load_backbone(str(tmp_path))  # a plain folder without a config: as before


def test_an_adapter_whose_weights_are_a_link_to_nothing_names_the_link(tmp_path):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text('{"peft_type": "LORA"}', encoding="utf-8")
    (adapter / "adapter_model.safetensors").symlink_to(tmp_path / "blobs" / "feed")
    with pytest.raises(CheckpointError, match=r"adapter_model\.safetensors -> .*blobs/feed\): copy it with"):
        check_lora_config(adapter)


def _adapter(folder, **sizes):
    """A peft LoRA adapter of a tiny backbone built with ``sizes``, saved to ``folder``."""
    base = load_backbone(str(write_tiny_checkpoint(folder.parent / "base", **sizes)), dtype=torch.float32)
    with quiet_peft():
        from peft import LoraConfig, get_peft_model

        lora = get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    lora.save_pretrained(str(folder))
    return folder


def test_an_adapter_of_another_backbone_or_damaged_is_one_clear_error(tmp_path):
    """Where peft raises a long size-mismatch error, only warns about layers it has no weights for, or
    safetensors cannot parse a cut file: one CheckpointError naming the adapter and the fix."""
    adapter = _adapter(tmp_path / "a" / "adapter")
    model = lambda **sizes: load_backbone(  # noqa: E731
        str(write_tiny_checkpoint(tmp_path / f"m{len(list(tmp_path.iterdir()))}", **sizes)),
        dtype=torch.float32,
    )
    assert merge_lora_adapter(model(), adapter) is not None  # the backbone it was made for
    with pytest.raises(
        CheckpointError,
        match=r"does not fit this backbone \(model.layers.0.self_attn.q_proj"
        r".*is \[2, 64\] in the adapter, \[2, 128\] here\); it was trained on another model",
    ):
        merge_lora_adapter(model(hidden_size=128, intermediate_size=256), adapter)
    with pytest.raises(CheckpointError, match=r"4 adapter weights of this backbone's layers are not in it"):
        merge_lora_adapter(model(num_layers=3), adapter)
    weights = adapter / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"adapter .*adapter: its files cannot be read \(.*\); copy"):
        merge_lora_adapter(model(), adapter)


def test_a_hub_adapter_that_cannot_be_fetched_says_how_to_fetch_it(tmp_path, monkeypatch):
    """--adapter owner/name offline: the line says it is not a folder here and gives the download
    command (it said the adapter's files cannot be read: copy the adapter folder again)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    model = load_backbone(str(write_tiny_checkpoint(tmp_path / "m")), dtype=torch.float32)
    with pytest.raises(CheckpointError) as caught:
        merge_lora_adapter(model, "someone/pure-lora")
    message = str(caught.value)
    assert "adapter someone/pure-lora is not a folder here and could not be fetched" in message
    assert "hf download someone/pure-lora --local-dir models/someone/pure-lora" in message
    assert "\n" not in message


def test_an_adapter_with_weights_that_fit_no_layer_is_refused_not_applied_in_part(tmp_path):
    """peft drops an adapter's weights that fit no module without a word: an adapter of a deeper backbone
    of the same width lost its last layers' weights, and one with a stray key applied partly."""
    from safetensors.torch import load_file, save_file

    deeper = _adapter(tmp_path / "deep" / "adapter", num_layers=3)
    base = lambda: load_backbone(str(write_tiny_checkpoint(tmp_path / "base2")), dtype=torch.float32)  # noqa: E731
    with pytest.raises(
        CheckpointError,
        match=rf"^adapter {re.escape(str(deeper))} does not fit this backbone \(4 of its weights fit no "
        r"layer of this backbone, e\.g\. model\.layers\.2\..*\); it was trained on another model: pass",
    ):
        merge_lora_adapter(base(), deeper)
    exact = _adapter(tmp_path / "exact" / "adapter")
    merged = merge_lora_adapter(base(), exact)  # the adapter of this backbone: merged as before
    assert not any("lora" in name for name, _ in merged.named_parameters())
    weights = exact / "adapter_model.safetensors"
    state = load_file(str(weights))
    state["base_model.model.model.layers.0.mlp.gate_proj.lora_A.weight"] = torch.zeros(2, 64)
    save_file(state, str(weights))
    with pytest.raises(CheckpointError, match=r"\(1 of its weights fit no layer of this backbone, e\.g\. "):
        merge_lora_adapter(base(), exact)


def test_an_adapter_of_another_architecture_is_called_so_not_unreadable(tmp_path):
    """An adapter whose target_modules name no layer here (a Falcon/BLOOM adapter's query_key_value): peft
    raises a ValueError, which read as a damaged config ('its files cannot be read ...; copy the adapter
    folder again'), advice that cannot help; it is a misfit naming the modules now."""
    adapter = _adapter(tmp_path / "a" / "adapter")
    config = json.loads((adapter / "adapter_config.json").read_text())
    base = load_backbone(str(tmp_path / "a" / "base"), dtype=torch.float32)
    other_models = ((["query_key_value"], r"\{'query_key_value'\}"), (".*\\.c_attn", r"\.\*\\\.c_attn"))
    for targets, shown in other_models:
        (adapter / "adapter_config.json").write_text(json.dumps({**config, "target_modules": targets}))
        with pytest.raises(
            CheckpointError,
            match=rf"^adapter {re.escape(str(adapter))} does not fit this backbone \(its target modules "
            rf"{shown} name no layer of this backbone\); it was trained on another model",
        ):
            merge_lora_adapter(base, adapter)


def test_an_adapter_config_that_is_not_a_lora_config_or_no_weights_is_refused_before_the_backbone_loads(
    tmp_path,
):
    """peft#1661/FastChat#2304-style folders: a model's config.json copied in as adapter_config.json made
    peft raise KeyError: 'peft_type' (a traceback, exit 1) after the backbone had loaded."""
    from pure.model import check_lora_config
    from pure.pipeline import check_adapter_folder

    adapter = _adapter(tmp_path / "a" / "adapter")
    check_lora_config(adapter)  # the adapter peft wrote
    config = adapter / "adapter_config.json"
    for text, reason in [
        ('{"model_type": "chameleon", "hidden_size": 64}', r"it has no peft_type"),
        ('{"peft_type": "PREFIX_TUNING"}', r"peft_type 'PREFIX_TUNING'"),
        ("[1, 2]", r"it has no peft_type"),
    ]:
        config.write_text(text)
        for check in (check_lora_config, check_adapter_folder):
            expected = rf"adapter_config.json is not a LoRA adapter's config \({reason}\); pass"
            with pytest.raises(CheckpointError, match=expected):
                check(str(adapter))
    config.write_text('{"peft_type": "LORA"}')
    (adapter / "adapter_model.safetensors").unlink()  # peft said: "Repo id must be in the form ..."
    expected = r"adapter has no adapter_model.safetensors: the adapter is incomplete"
    with pytest.raises(CheckpointError, match=expected):
        check_adapter_folder(str(adapter))
    config.write_text('{"peft_type": "LORA", ')
    expected = r"adapter_config.json cannot be read \(JSONDecodeError: .*\); copy"
    with pytest.raises(CheckpointError, match=expected):
        check_adapter_folder(str(adapter))


def test_an_adapter_whose_weights_are_damaged_is_refused_before_the_backbone_loads(tmp_path):
    """An older peft's adapter_model.bin cut short or not a file of tensors ended, after the backbone had
    loaded, in torch's RuntimeError (zip central directory) or an UnpicklingError traceback; a cut
    adapter_model.safetensors was caught only then. Each is one line naming the file, before any loading."""
    from safetensors.torch import load_file

    from pure.pipeline import check_adapter_folder

    adapter = _adapter(tmp_path / "a" / "adapter")
    safetensors = adapter / "adapter_model.safetensors"
    whole = safetensors.read_bytes()
    safetensors.write_bytes(whole[: len(whole) // 2])
    cut = rf"^{safetensors} cannot be read \(SafetensorError: .*\); copy"
    with pytest.raises(CheckpointError, match=cut):
        check_adapter_folder(str(adapter))
    bin_file = adapter / "adapter_model.bin"
    safetensors.write_bytes(whole)
    torch.save(load_file(str(safetensors)), bin_file)
    safetensors.unlink()
    check_lora_config(adapter)  # an older peft's .bin: read as peft reads it
    pickled = bin_file.read_bytes()
    bin_file.write_bytes(pickled[: len(pickled) // 2])
    with pytest.raises(CheckpointError, match=rf"^{bin_file} cannot be read \(.*\); copy the adapter folder"):
        check_adapter_folder(str(adapter))
    bin_file.write_bytes(bytes(range(256)) * 8)
    with pytest.raises(CheckpointError, match=r"\(UnpicklingError: not a PyTorch file of tensors\); copy"):
        check_lora_config(adapter)


LFS_POINTER = "version https://git-lfs.github.com/spec/v1\noid sha256:4d7a2146\nsize 8471264\n"


@pytest.mark.parametrize(
    ("name", "text", "reason"),
    [
        ("config.json", LFS_POINTER, r"JSONDecodeError: Expecting value"),
        ("config.json", "[1, 2]", r"a JSON list, not an object"),
        ("model.safetensors.index.json", LFS_POINTER, r"JSONDecodeError"),
        ("tokenizer.json", LFS_POINTER, r"JSONDecodeError"),
        ("tokenizer_config.json", '{"bos_token": "<s>", ', r"JSONDecodeError"),
    ],
)
def test_a_damaged_json_file_of_the_model_folder_is_one_clear_error(tmp_path, name, text, reason):
    """A clone without git-lfs leaves pointer files (SUPIR#106, exllama#242); a cut copy leaves half a
    file: json's or transformers' bare JSONDecodeError traceback (exit 1) before, one line naming it now."""
    folder = write_tiny_checkpoint(tmp_path / "tiny")
    (folder / name).write_text(text)
    expected = rf"{folder / name} is not readable \({reason}.*download or copy the model folder again"
    with pytest.raises(CheckpointError, match=expected):  # the backbone reads config and index, then tokens
        load_backbone(str(folder), dtype=torch.float32)
        load_text_side(folder)


def test_a_config_json_transformers_cannot_build_is_one_clear_error_and_newer_keys_load(tmp_path):
    """A config.json that parses but that transformers refuses (a hand-edited value, another model's layout)
    ended in a bare traceback (AttributeError: module 'torch' has no attribute 'auto', a strict-dataclass
    validation error, 'dict' object has no attribute 'to_dict') after json had read it; one line naming it
    now. Keys a newer transformers writes (dtype, rope_parameters, layer_types) still load."""
    folder = write_tiny_checkpoint(tmp_path / "tiny")
    original = json.loads((folder / "config.json").read_text())
    edits = [
        ({"torch_dtype": "auto"}, r"AttributeError: module 'torch' has no attribute 'auto'"),
        ({"num_hidden_layers": "2"}, r"\w+Error: "),  # which error depends on the transformers release
        ({"num_attention_heads": 3, "num_key_value_heads": 3}, r"ValueError: .*divisible"),
        ({"vocabulary_map": None}, r"AttributeError"),
        (
            {"model_type": "llava", "text_config": original},
            r"AttributeError: .*\), and its model_type is 'llava', not 'chameleon'",
        ),
    ]
    for edit, reason in edits:
        (folder / "config.json").write_text(json.dumps({**original, **edit}))
        expected = rf"^{folder / 'config.json'} does not describe a model pure can build \({reason}.*copy"
        with pytest.raises(CheckpointError, match=expected):
            load_backbone(str(folder), dtype=torch.float32)
    newer = {k: v for k, v in original.items() if k != "torch_dtype"}
    newer |= {"dtype": "bfloat16", "transformers_version": "5.99.0", "layer_types": ["full_attention"] * 2}
    newer["rope_parameters"] = {"rope_type": "default", "rope_theta": 10000.0}
    (folder / "config.json").write_text(json.dumps(newer))
    assert load_backbone(str(folder), dtype=torch.float32).config.num_hidden_layers == 2


def test_a_model_folder_without_tokenizer_files_is_one_clear_error(tmp_path):
    """Weights and config.json copied without the tokenizer: transformers' six-line ValueError traceback
    ("Couldn't instantiate the backend tokenizer ...") before; one line naming the folder now."""
    folder = write_tiny_checkpoint(tmp_path / "tiny")
    (folder / "tokenizer.json").unlink()
    (folder / "tokenizer_config.json").unlink()
    expected = rf"the tokenizer in {folder} cannot be loaded \(ValueError: .*\); a model folder needs"
    with pytest.raises(CheckpointError, match=expected):
        load_text_side(folder)


def test_a_tokenizer_without_its_bos_token_names_the_file_that_names_it(tmp_path):
    """tokenizer.json copied without tokenizer_config.json loads, but has no BOS token: 'the tokenizer of X
    has no BOS token' said neither why nor what to copy."""
    folder = write_tiny_checkpoint(tmp_path / "tiny")
    config = json.loads((folder / "tokenizer_config.json").read_text())
    del config["bos_token"]
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(
        VocabError, match=r"has no BOS token \(tokenizer_config\.json names none\): copy the model folder's"
    ):
        load_text_side(folder)
    (folder / "tokenizer_config.json").unlink()
    with pytest.raises(VocabError, match=r"\(tokenizer_config\.json, naming it, is missing\): copy the"):
        load_text_side(folder)


def test_a_damaged_shard_is_one_clear_error(tmp_path):
    folder = write_tiny_checkpoint(tmp_path / "tiny")
    shard = next(folder.glob("*.safetensors"))
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    with pytest.raises(
        CheckpointError, match=rf"{shard} is not a readable safetensors file .*download or copy"
    ):
        load_backbone(str(folder), dtype=torch.float32)


def test_a_checkpoint_or_adapter_given_as_the_model_names_what_to_pass(tmp_path):
    from pure.model import CheckpointError, read_config

    (tmp_path / "step-000008" / "model").mkdir(parents=True)
    (tmp_path / "step-000008" / "model" / "config.json").write_text("{}")
    with pytest.raises(
        CheckpointError, match=r"is a training checkpoint; pass its model folder: .*step-000008/model$"
    ):
        read_config(tmp_path / "step-000008")
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "adapter_config.json").write_text("{}")
    with pytest.raises(
        CheckpointError, match=r"is a LoRA adapter, not a model: pass it as --adapter .*adapter$"
    ):
        read_config(tmp_path / "adapter")


def test_a_cuda_device_without_cuda_names_the_flag_and_the_key(monkeypatch):
    from pure.errors import PureError
    from pure.model import pick_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(
        PureError, match=r"^device=cuda but no CUDA device is visible: use auto or cpu \(--device auto"
    ):
        pick_device("cuda")
    assert pick_device("auto") == torch.device("cpu")


def test_a_tiny_model_cache_that_cannot_be_written_names_pure_cache(tmp_path, monkeypatch):
    """A read-only home (~/.cache/pure) or PURE_CACHE: one line naming PURE_CACHE, not a traceback."""
    from pure.config import BackboneConfig
    from pure.model import CheckpointError, backbone_folder

    (tmp_path / "file").write_text("x")
    monkeypatch.setenv("PURE_CACHE", str(tmp_path / "file" / "cache"))
    with pytest.raises(
        CheckpointError,
        match=r"^cannot write the tiny model into .*file/cache \(.*\): set PURE_CACHE to a folder you can",
    ):
        backbone_folder(BackboneConfig(source="tiny"))
    monkeypatch.setenv("PURE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("pure.model.write_tiny_checkpoint", lambda folder, **k: _disk_full(folder))
    with pytest.raises(CheckpointError, match=r"cache \(No space left on device\): set PURE_CACHE"):
        backbone_folder(BackboneConfig(source="tiny"))
    assert list((tmp_path / "cache").iterdir()) == []  # no half-written model


def _disk_full(folder: Path) -> None:
    (folder / "config.json").write_text("{")
    raise OSError(errno.ENOSPC, "No space left on device")


def test_environment_variables_read_as_their_owners_read_them(tmp_path, monkeypatch):
    """An empty PURE_CACHE is unset (the tiny models went into the current folder); HF_HUB_OFFLINE is read
    as huggingface_hub reads it, so ``no`` or ``0`` is not called set in a message."""
    from pure.config import BackboneConfig
    from pure.download import offline_note
    from pure.model import backbone_folder

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PURE_CACHE", "")
    folder = backbone_folder(BackboneConfig(source="tiny"))
    assert folder.parent == tmp_path / "home" / ".cache" / "pure" and not list(tmp_path.glob("tiny-*"))
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    for value, expected in (("no", False), ("0", False), ("False", False), ("1", True), ("YES", True)):
        monkeypatch.setenv("HF_HUB_OFFLINE", value)
        assert offline_note() == (" (HF_HUB_OFFLINE is set)" if expected else "")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")  # read only when HF_HUB_OFFLINE is unset or empty
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert offline_note() == ""
    monkeypatch.setenv("HF_HUB_OFFLINE", "")
    assert offline_note() == " (TRANSFORMERS_OFFLINE is set)"


def test_a_tied_checkpoint_without_an_output_head_uses_the_embedding(tmp_path):
    """tie_word_embeddings with no lm_head.weight (how transformers saves a tied model): the output head
    is the embedding, as transformers loads it (it was refused as not a whole checkpoint); untied, the
    same checkpoint is still refused."""
    config = layout.tiny_backbone_config()
    state = det_state_dict(layout.reference_backbone_shapes(config), 0)
    del state["lm_head.weight"]
    write_backbone_checkpoint(tmp_path / "tied", {**config, "tie_word_embeddings": True}, state)
    model = load_backbone(str(tmp_path / "tied"), dtype=torch.float32)
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert torch.equal(model.lm_head.weight, state["model.embed_tokens.weight"])
    # saved again (merge_lora.py, full fine-tuning): the tied head is left out, as transformers saves it
    tied = {**config, "tie_word_embeddings": True}
    save_model_folder(model.state_dict(), tied, tiny_tokenizer(), tmp_path / "s")
    again = load_backbone(str(tmp_path / "s"), dtype=torch.float32)
    assert torch.equal(again.lm_head.weight, model.lm_head.weight)
    write_backbone_checkpoint(tmp_path / "untied", config, state)
    with pytest.raises(CheckpointError, match=r"missing \['lm_head.weight'\]"):
        load_backbone(str(tmp_path / "untied"), dtype=torch.float32)
