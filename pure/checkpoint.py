"""Training checkpoints: their layout, finding one to resume, writing one atomically, exporting and
merging weights.

A checkpoint ``output_dir/checkpoints/step-000500/`` holds:

    adapter/      LoRA: the peft adapter (safetensors)       -> scripts/infer.py --adapter DIR
    model/        full: a standalone model folder              -> scripts/infer.py --model DIR
    state/        accelerate's optimizer and RNG state (plus FSDP/DeepSpeed model shards); the data's
                  order is the loader's seeded shuffle, its position in trainer.json
    trainer.json  optimizer step, epoch and micro-batches done in that epoch, the planned total of steps,
                  and the training data's example count and hash (a resume checks them)
    config.yaml   the resolved config

It is written as ``.step-000500.partial`` and renamed once complete, so an interrupted save never
leaves a checkpoint that looks whole.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import torch
from accelerate import Accelerator
from safetensors.torch import load_file
from torch import nn

from pure.config import BackboneConfig, ConfigError, TrainConfig, load_config, to_yaml
from pure.errors import DiskFullError, from_here
from pure.files import can_write_in, give_plain_modes, out_of_space
from pure.model import (
    CheckpointError,
    backbone_folder,
    check_lora_config,
    load_for_training,
    load_text_side,
    merge_lora_adapter,
)
from pure.tiny import write_backbone_checkpoint
from pure.vocab import Vocab

SHARD_BYTES = 5 * 2**30
"""Largest safetensors file of a saved full model."""


def checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first: the folders named ``step-NNNNNN`` exactly, so a copy the
    user made beside them (``step-000500-best``, ``step-000500 copy``) is neither resumed nor pruned."""
    root = Path(output_dir) / "checkpoints"
    found = (
        [p for p in root.glob("step-*") if re.fullmatch(r"step-\d{6,}", p.name) and p.is_dir()]
        if root.is_dir()
        else []
    )
    return sorted(found, key=lambda p: int(p.name.removeprefix("step-")))


def find_resume(output_dir: str | Path, resume: str) -> Path | None:
    """The checkpoint ``resume`` names (see :class:`TrainConfig`), or None for a fresh start."""
    existing = checkpoints(output_dir)
    if not resume:
        if existing:
            raise ConfigError(
                f"{output_dir} already holds checkpoints ({existing[-1].name}): pass resume=latest "
                "to continue that run, or choose another output_dir"
            )
        return None
    if resume == "latest":
        return existing[-1] if existing else None
    path = Path(resume)
    if not path.exists() and len(path.parts) == 1 and (Path(output_dir) / "checkpoints" / path).is_dir():
        path = Path(output_dir) / "checkpoints" / path  # resume=step-000500: one of this run's
    if not path.exists():
        found = f"; this run's are {', '.join(c.name for c in existing)}" if existing else ""
        meant = " (did you mean resume=latest?)" if difflib.get_close_matches(resume, ["latest"]) else ""
        raise ConfigError(f"resume={resume!r} does not exist (pruned by keep_last, or a typo){meant}{found}")
    if not (path / "trainer.json").is_file():
        raise ConfigError(f"resume={resume!r} is not a checkpoint folder (no trainer.json in it)")
    later = [c for c in existing if c.name > path.name and path.resolve().parent == c.resolve().parent]
    if later:  # keep_last would prune the new branch's checkpoints before these, and latest would pick these
        raise ConfigError(
            f"resume={resume!r} is older than this run's {', '.join(c.name for c in later)}: to branch from "
            f"it, copy it into a new output_dir's checkpoints/ folder and resume there (or delete the later "
            "ones)"
        )
    return path


def save_model_folder(state: dict[str, torch.Tensor], config: dict, tokenizer, folder: Path) -> Path:
    """A standalone model folder (config.json, safetensors shards, tokenizer) that ``load_backbone`` reads.
    A tied output head (``tie_word_embeddings``: ``lm_head.weight`` is the embedding) is left out, as
    transformers saves it; safetensors refuses tensors that share memory."""
    head, embedding = state.get("lm_head.weight"), state["model.embed_tokens.weight"]
    if config.get("tie_word_embeddings") and head is not None and head.data_ptr() == embedding.data_ptr():
        state = {k: v for k, v in state.items() if k != "lm_head.weight"}
    state = {k: v.detach().contiguous() for k, v in state.items()}
    size = sum(t.numel() * t.element_size() for t in state.values())
    config = {
        **config,
        "vocab_size": state["model.embed_tokens.weight"].shape[0],
        "torch_dtype": str(state["model.embed_tokens.weight"].dtype).removeprefix("torch."),
    }
    write_backbone_checkpoint(folder, config, state, shards=max(1, math.ceil(size / SHARD_BYTES)))
    tokenizer.save_pretrained(str(folder))
    return folder


def source_config(backbone: BackboneConfig) -> dict:
    """The backbone checkpoint's own config.json (Lumina/PURE fields included)."""
    return json.loads((backbone_folder(backbone) / "config.json").read_text(encoding="utf-8"))


def load_weights(model: nn.Module, checkpoint: Path, method: str) -> None:
    """Load a checkpoint's ``adapter/`` (LoRA) or ``model/`` (full) into the (unwrapped) model."""
    if method == "lora":
        from peft import set_peft_model_state_dict

        file = checkpoint / "adapter" / "adapter_model.safetensors"
        if not file.is_file():
            raise CheckpointError(f"{file} is missing: {checkpoint} is not a LoRA checkpoint (method=lora)")
        result = set_peft_model_state_dict(model, load_file(str(file)))
        if result.unexpected_keys:
            raise CheckpointError(f"{file} does not fit the model: unexpected {result.unexpected_keys[:3]}")
        return
    files = sorted((checkpoint / "model").glob("*.safetensors"))
    if not files:
        raise CheckpointError(
            f"no model/*.safetensors in {checkpoint}: not a full fine-tune checkpoint (method=full)"
        )
    state = {}
    for file in files:
        state.update(load_file(str(file)))
    model.load_state_dict(state, strict=True)


def export_weights(
    accelerator: Accelerator, model: nn.Module, folder: Path, method: str, config: dict, tokenizer
) -> None:
    """Write ``folder/adapter`` (LoRA) or ``folder/model`` (full).

    Every process must call it: under FSDP and DeepSpeed the full state dict is gathered collectively.
    """
    state = accelerator.get_state_dict(model)
    if not accelerator.is_main_process:
        return
    if method == "lora":
        accelerator.unwrap_model(model).save_pretrained(
            str(folder / "adapter"), state_dict=state, save_embedding_layers=False
        )
    else:
        save_model_folder(state, config, tokenizer, folder / "model")


def merge_adapter(
    checkpoint: str | Path, output: str | Path, dtype: str = "bfloat16", base: str = ""
) -> Path:
    """A LoRA checkpoint -> a standalone model folder (adapters merged into the base) for ``--model``.

    ``checkpoint`` is a checkpoint folder (``checkpoints/step-NNNNNN``) or its ``adapter/`` folder. ``base``:
    the base model's folder or hub id, where it is not where the checkpoint's ``config.yaml`` says (a
    checkpoint copied from another machine); empty: that ``backbone.source``.
    ``output`` must be new or an empty folder (:class:`ConfigError` otherwise, before anything loads); the
    model is written beside it as ``.NAME.partial`` and renamed when whole.
    """
    checkpoint = Path(checkpoint)
    if checkpoint.name == "adapter" and (checkpoint.parent / "config.yaml").is_file():
        checkpoint = checkpoint.parent
    if not checkpoint.exists():
        run = checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else checkpoint.parent
        there = checkpoints(run)
        found = f"; that run's are {', '.join(c.name for c in there)}" if there else ""
        raise ConfigError(f"{from_here(checkpoint)} does not exist (pruned by keep_last, or a typo){found}")
    saved = checkpoints(checkpoint) if checkpoint.is_dir() else []
    if saved:  # the run's own folder (it has a config.yaml too)
        raise ConfigError(
            f"{checkpoint} is a training run; pass one of its checkpoints, e.g. {saved[-1]} (the last)"
        )
    if not (checkpoint / "config.yaml").is_file() or not (checkpoint / "trainer.json").is_file():
        raise ConfigError(
            f"{checkpoint} is not a training checkpoint (no config.yaml and trainer.json in it): pass a "
            "folder such as outputs/RUN/checkpoints/step-001000 or its adapter/ folder"
        )
    output = Path(output)
    pruned = checkpoint.resolve().parent if checkpoint.parent.name == "checkpoints" else checkpoint.resolve()
    if output.resolve().is_relative_to(pruned):  # keep_last would delete it with the checkpoint
        raise ConfigError(
            f"output {output} is inside {pruned}, which training prunes and resumes write into; pass a "
            "folder outside the run's checkpoints, e.g. models/merged"
        )
    if output.exists() and not output.is_dir():
        raise ConfigError(f"output {output} is a file; pass a new folder for the merged model")
    if output.is_dir() and any(output.iterdir()):
        raise ConfigError(
            f"output {output} already exists and is not empty; pass a new folder for the merged model "
            "(nothing is overwritten)"
        )
    if (reason := can_write_in(output.parent)) is not None:
        raise ConfigError(f"output {output} cannot be written ({reason}); pass a folder elsewhere")
    cfg = load_config(TrainConfig, checkpoint / "config.yaml")
    if cfg.method != "lora":
        raise ConfigError(f"{checkpoint} is a full fine-tune: its model/ folder is already standalone")
    if not (checkpoint / "adapter" / "adapter_config.json").is_file():  # before the base model loads
        raise CheckpointError(
            f"{checkpoint / 'adapter' / 'adapter_config.json'} is missing: the checkpoint is incomplete; "
            "merge another checkpoint of the run"
        )
    check_lora_config(checkpoint / "adapter")
    if base:
        cfg = dataclasses.replace(cfg, backbone=dataclasses.replace(cfg.backbone, source=base))
    tokenizer, vocab = _base_text_side(cfg, checkpoint / "config.yaml", named=not base)
    model, _ = load_for_training(cfg.backbone, "cpu", getattr(torch, dtype), vocab.size)
    model = merge_lora_adapter(model, checkpoint / "adapter")
    partial = output.parent / f".{output.name}.partial"  # renamed once whole: never a half-written model
    shutil.rmtree(partial, ignore_errors=True)
    try:
        save_model_folder(model.state_dict(), source_config(cfg.backbone), tokenizer, partial)
        give_plain_modes(partial)  # a folder to share and pass to --model: readable like any plain write
        if output.is_dir():
            output.rmdir()  # empty, checked above
        partial.rename(output)
    except Exception as err:
        if out_of_space(err, partial.parent):
            raise DiskFullError(
                f"no space left on the device of {output.parent} while writing the merged model "
                f"({type(err).__name__}); free space or pass a folder on another disk"
            ) from err
        raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return output


def _base_text_side(cfg: TrainConfig, saved: Path, named: bool) -> tuple[object, Vocab]:
    """(tokenizer, vocabulary) of the base model ``cfg`` trains on. ``named``: the base is the one the
    checkpoint's ``saved`` config.yaml names, an absolute path of the machine it was trained on, so a
    :class:`CheckpointError` for it also says to pass ``--base DIR``."""
    try:
        return load_text_side(cfg.tokenizer or backbone_folder(cfg.backbone))
    except CheckpointError as err:
        if not named:
            raise
        raise CheckpointError(
            f"{err}; that is the base model {saved} names (backbone.source): pass --base DIR, its folder on "
            "this machine (a checkpoint copied from another machine keeps that machine's path)"
        ) from err


def tidy_interrupted(output: Path) -> list[str]:
    """Clear what a save killed part-way (SIGKILL, a lost node: nothing could clean up) left in
    ``output/checkpoints``: a half-written ``.step-N.partial`` is deleted, and an earlier copy moved aside
    as ``.step-N.replaced`` is put back where its step is missing (deleted where the new one is in place).
    Returns a line naming what was done for each; main process only."""
    root = output / "checkpoints"
    said = []
    for left in sorted(root.glob(".step-*.partial")) if root.is_dir() else []:
        shutil.rmtree(left)
        said.append(f"note: deleted {left}, a checkpoint whose save was interrupted")
    for aside in sorted(root.glob(".step-*.replaced")) if root.is_dir() else []:
        final = root / aside.name.removeprefix(".").removesuffix(".replaced")
        if final.exists():
            shutil.rmtree(aside)
        else:
            aside.rename(final)
            said.append(f"note: put back {final}, moved aside by a save that was interrupted")
    return said


def save_checkpoint(
    accelerator: Accelerator, output: Path, position: dict, cfg: TrainConfig, export: Callable[[Path], None]
) -> Path:
    """Write ``checkpoints/step-NNNNNN`` atomically (see the module docstring); prune to ``cfg.keep_last``
    (those the new one replaces are deleted before it is written, all but the newest: a save needs room for
    ``keep_last`` checkpoints, two for ``keep_last=1``).

    Every process must call it; ``export(folder)`` writes the weights (:func:`export_weights`).
    """
    root = output / "checkpoints"
    final = root / f"step-{position['step']:06d}"
    partial_dir = root / f".{final.name}.partial"
    replaced = root / f".{final.name}.replaced"  # its earlier copy, kept until the new one is in
    try:
        if accelerator.is_main_process:
            # the checkpoints this save will prune go first (never the newest), so that a run needs room for
            # keep_last checkpoints rather than keep_last + 1 (then keep_last lower helps on a full disk)
            for old in checkpoints(output)[: -max(1, cfg.keep_last - 1)] if cfg.keep_last else []:
                shutil.rmtree(old)
            shutil.rmtree(partial_dir, ignore_errors=True)
            partial_dir.mkdir(parents=True)
        accelerator.wait_for_everyone()
        accelerator.save_state(str(partial_dir / "state"))
        export(partial_dir)
        if accelerator.is_main_process:
            (partial_dir / "trainer.json").write_text(json.dumps(position, indent=2), encoding="utf-8")
            (partial_dir / "config.yaml").write_text(to_yaml(cfg), encoding="utf-8")
            give_plain_modes(partial_dir)
            if final.exists():
                shutil.rmtree(replaced, ignore_errors=True)
                final.rename(replaced)
            partial_dir.rename(final)
            shutil.rmtree(replaced, ignore_errors=True)
    except BaseException as err:  # never a half-written checkpoint left filling the disk (Ctrl-C too)
        if accelerator.is_main_process:
            shutil.rmtree(partial_dir, ignore_errors=True)
            if replaced.exists() and not final.exists():  # stopped between the two renames: put it back
                replaced.rename(final)
        if isinstance(err, Exception) and out_of_space(err, root):
            room = (  # keep_last 1 and 2 both need room for two checkpoints: the newest stays until then
                " (or set keep_last: 0 keeps every checkpoint)"
                if cfg.keep_last == 0
                else f" (or set keep_last lower than {cfg.keep_last})"
                if cfg.keep_last > 2
                else ""
            )
            raise DiskFullError(
                f"no space left on the device of {root} while writing {final.name} ({type(err).__name__}); "
                f"free space{room}, then rerun the same command with resume=latest"
            ) from err
        raise
    if accelerator.is_main_process:
        for old in checkpoints(output)[: -cfg.keep_last] if cfg.keep_last else []:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return final
