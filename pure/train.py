"""Fine-tuning on accelerate: LoRA adapters (peft) or every weight, from one GPU to many nodes.

    python scripts/train.py --config configs/train_lora_x4.yaml                     # one GPU, LoRA
    accelerate launch --config_file configs/accelerate/fsdp_8gpu.yaml \\
        scripts/train.py --config configs/train_full_x4.yaml grad_accum=16          # 8 GPUs, full

accelerate owns devices, mixed precision, gradient accumulation and distribution: nothing here
picks a device. The loss is the reference's (:func:`pure.model.causal_lm_loss`): next-token
cross-entropy over the assistant turn (the user turn is labelled -100), plus the optional z-loss.
LoRA follows the diffusers recipe: frozen base in the mixed-precision dtype, trainable adapters
(and embedding rows) in fp32.

Checkpoints (layout, atomic saves, export, merge) live in :mod:`pure.checkpoint`. ``resume=latest``
restores weights, optimizer, data position and RNG state, so the resumed run continues the
uninterrupted one's losses. With ``eval_examples`` > 0 those examples are held out and their mean loss
is logged as ``val_loss`` every ``eval_every`` steps.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.utils import DistributedType, set_seed
from omegaconf import OmegaConf
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm
from transformers.models.chameleon.modeling_chameleon import ChameleonDecoderLayer

from pure.checkpoint import (
    checkpoints,
    export_weights,
    find_resume,
    load_weights,
    save_checkpoint,
    source_config,
    tidy_interrupted,
)
from pure.config import (
    BackboneConfig,
    ConfigError,
    LogConfig,
    LoRAConfig,
    OptimConfig,
    TrainConfig,
    TrainDataConfig,
    VQConfig,
    check_fields,
    to_yaml,
)
from pure.data.datasets import ShardDataset, collate
from pure.data.image_folder import ImageFolderExamples, check_captions_file
from pure.data.prepare import check_shards_match, token_models
from pure.errors import DiskFullError, PureError, error_reason, require, worker_died
from pure.files import (
    can_write_in,
    folders_to_make,
    lock_folder,
    out_of_space,
    remove_empty,
    write_text_atomic,
)
from pure.launch import check_launch
from pure.model import (
    CheckpointError,
    backbone_folder,
    enable_activation_checkpointing,
    load_for_training,
    load_text_side,
    quiet_peft,
)
from pure.vocab import Vocab
from pure.vq import load_vq

PAD_ID = 0
"""Id that right-pads input_ids, as the reference (labels are -100 there, and causal attention never
lets a real token see the padding after it)."""
DTYPES = {"no": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
"""``mixed_precision`` -> the dtype of a LoRA run's frozen base."""


class DivergedError(PureError, RuntimeError):
    """The training loss became nan or inf: the weights are no longer usable. The run stops without
    writing them (exit 1: it had started); the message names the last checkpoint and what to lower."""

    exit_code = 1


def diverged_message(step: int, last: Path | None, cfg: TrainConfig) -> str:
    """The one line of :class:`DivergedError`: a loss of the optimizer steps up to ``step`` was nan or inf;
    ``last`` is the run's last checkpoint (None: none yet)."""
    lower = f"lower optim.lr (now {cfg.optim.lr:g})"
    if cfg.optim.grad_clip <= 0:
        lower += " or set optim.grad_clip (now 0: off), e.g. optim.grad_clip=1"
    if cfg.mixed_precision == "fp16":
        lower += ", or train with mixed_precision=bf16 (fp16 overflows easily)"
    again = (
        f"then resume=latest continues from {last} (optim.* may change on resume)"
        if last is not None
        else f"then start again (no checkpoint was written yet; save_every={cfg.save_every})"
    )
    return (
        f"the training loss became nan or inf by step {step}, so the weights are no longer usable and no "
        f"checkpoint was written of them: {lower}; {again}"
    )


# ----------------------------------------------------------------------------------------------
# Data


def check_lengths(dataset: Dataset, max_seq_len: int, say: Callable[[str], None] = print) -> None:
    """Refuse ``max_seq_len`` when it cuts any example inside its prompt (none of its answer would be
    trained: every label masked, a NaN loss), and say how many examples it cuts inside the answer.
    ``dataset.spans``: ``(tokens, prompt tokens)`` per example; datasets without it are not checked."""
    spans = getattr(dataset, "spans", None)
    if not spans:
        return
    longest = max(tokens for tokens, _ in spans)
    starved = sum(prompt >= max_seq_len for _, prompt in spans)
    if starved:
        raise ConfigError(
            f"max_seq_len={max_seq_len} ends inside the prompt of {starved} of {len(spans)} example(s), so "
            f"nothing of their answer would be trained; set max_seq_len={longest} (the longest example)"
        )
    cut = sum(tokens > max_seq_len for tokens, _ in spans)
    if cut:
        say(
            f"note: max_seq_len={max_seq_len} cuts the answer's end of {cut} example(s) "
            f"(longest {longest} tokens)"
        )


RESUME_FIXED = (
    "batch_size",
    "grad_accum",
    "seed",
    "method",
    "lora.rank",
    "lora.alpha",
    "lora.target_modules",
    "lora.token_rows",
    "max_seq_len",
    "eval_examples",
    "data.hq_folder",
    "data.captions",
    "data.default_text",
    "data.size",
    "data.scale",
    "data.max_images",
    "data.shards",
)
"""Settings a resumed run must share with its checkpoint: they fix which examples there are and which each
step reads (the saved data position counts batches), and what the weights are (``lora.alpha`` scales the
adapters already trained)."""


RESUME_NOTED = ("optim", "z_loss_weight", "residual_dropout", "lora.dropout", "mixed_precision")
"""Settings a resume may change (a new learning rate for the rest of a run is common; bf16 after fp16
overflowed) but not silently: :func:`check_resumable` names them."""


def check_resumable(checkpoint: Path, cfg: TrainConfig) -> str:
    """Refuse to resume ``checkpoint`` with other :data:`RESUME_FIXED` settings than it was saved with
    (its ``config.yaml``): the data position would point elsewhere and the resume would not be exact.
    Returns a notice naming the :data:`RESUME_NOTED` settings that changed (empty when none did).
    Raises :class:`ConfigError` for changed settings, :class:`CheckpointError` for an unreadable file."""
    saved = checkpoint / "config.yaml"
    try:
        if not saved.is_file():
            raise FileNotFoundError("missing")
        old = OmegaConf.to_container(OmegaConf.load(saved))
        if not isinstance(old, dict):
            raise ValueError("not a mapping of settings")
        if "method" not in old:
            raise ValueError("empty, or not a run's settings")
    except Exception as err:  # noqa: BLE001 - OmegaConf and YAML raise many types
        raise CheckpointError(
            f"cannot read {saved} ({error_reason(err)}), so resuming {checkpoint} cannot be "
            "checked against this run's settings; if it is damaged, delete that checkpoint folder to resume "
            "from the one before, or start anew in another output_dir"
        ) from err

    def value(tree, key: str):  # a dotted key of a settings mapping or dataclass; None if absent
        for part in key.split("."):
            tree = tree.get(part) if isinstance(tree, dict) else getattr(tree, part, None)
        return tree

    changed = [
        f"{key}={value(old, key)} (now {value(cfg, key)})"
        for key in RESUME_FIXED
        if value(old, key) is not None
        and value(old, key) != value(cfg, key)
        and (cfg.method == "lora" or not key.startswith("lora."))  # lora.* do nothing in a full fine-tune
    ]
    now = OmegaConf.to_container(OmegaConf.structured(cfg))
    then_models, now_models = run_models(old), run_models(now)
    for section in ("backbone", "vq"):  # tiny against released weights: the source says it all
        keys = (
            [f"{section}.source"] if then_models[section]["source"] != now_models[section]["source"] else []
        )
        changed += [
            f"{key}={value(old, key)} (now {value(now, key)})"
            for key in keys or _dotted(then_models, (section,))
            if value(then_models, key) is not None and value(then_models, key) != value(now_models, key)
        ]
    if changed:
        raise ConfigError(
            f"{checkpoint} was saved with {', '.join(changed)}: resume with the checkpoint's settings, or "
            "start a new run in another output_dir"
        )
    noted = [
        f"{key}={value(old, key)} -> {value(now, key)}"
        for key in _dotted(now, RESUME_NOTED)
        if value(old, key) is not None
        and value(old, key) != value(now, key)
        and (cfg.method == "lora" or not key.startswith("lora."))
    ]
    if not noted:
        return ""
    return f"note: resuming {checkpoint.name} with other settings than it was saved with: {', '.join(noted)}"


def run_models(settings: dict) -> dict:
    """What of a run's settings (a mapping) decides what its weights and tokens mean, compared on resume, as
    settings keys: the VQ's architecture and the tiny VQ's seed, and the tiny backbone's sizes and seed (its
    weights), with ``source`` telling tiny from released weights. Not where files lie (a ``--models`` folder
    and the hub cache give one checkpoint other paths), as :func:`pure.data.prepare.token_models` compares
    the tokenizers; so another released checkpoint is not told apart."""
    models = token_models(settings)
    tiny = ((settings.get("backbone") or {}).get("tiny") or {}) if models["backbone"]["tiny"] else {}
    return {
        "backbone": {"source": "tiny" if models["backbone"]["tiny"] else "a checkpoint", "tiny": tiny},
        "vq": {k: v for k, v in models["vq"].items() if k != "tiny"}
        | {"source": "tiny" if models["vq"]["tiny"] else "a checkpoint"},
    }


def _dotted(tree: dict, keys: tuple[str, ...]) -> list[str]:
    """``keys`` of the mapping ``tree``, each section (``optim``) expanded into its dotted leaves."""
    leaves = []
    for key in keys:
        part = tree.get(key)
        leaves += (
            [f"{key}.{inner}" for inner in _dotted(part, tuple(part))] if isinstance(part, dict) else [key]
        )
    return leaves


def build_dataset(
    cfg: TrainDataConfig,
    vq_cfg: VQConfig,
    backbone_cfg: BackboneConfig,
    tokenizer,
    vocab: Vocab,
    device: torch.device,
    note: Callable[[str], object] = print,
) -> Dataset:
    """The examples ``cfg`` names: prepared shards (made with ``vq_cfg``'s VQ and ``backbone_cfg``'s text
    tokenizer, checked against their ``prepare.yaml``), or HQ images encoded with the VQ ``vq_cfg`` on
    ``device`` (images left out are said through ``note``)."""
    if cfg.shards:
        check_shards_match(Path(cfg.shards), vq_cfg, backbone_cfg)
        return ShardDataset(cfg.shards)
    if not cfg.hq_folder:
        raise ConfigError("data.hq_folder is empty: name a folder of high-quality training images")
    vq = load_vq(vq_cfg.source, device=device, cfg=vq_cfg)
    return ImageFolderExamples(cfg, tokenizer, vocab, vq, note)


# ----------------------------------------------------------------------------------------------
# Model


def add_residual_dropout(model: nn.Module, p: float) -> None:
    """Dropout on every decoder layer's attention and MLP output before it joins the residual stream.

    Lumina-mGPT, which PURE trains with p = 0.05, computes ``h = x + dropout(attn(norm(x)))`` and
    ``out = h + dropout(mlp(norm(h)))``. transformers' Chameleon has no such dropout, so a forward hook
    on each ``self_attn`` and ``mlp`` applies it to exactly those outputs (in train mode only). Under
    gradient checkpointing the recomputation replays the same masks (the RNG state is preserved).
    """
    if p <= 0:
        return

    def drop(module: nn.Module, args, output):
        if isinstance(output, tuple):  # attention returns (output, weights)
            return (F.dropout(output[0], p, module.training), *output[1:])
        return F.dropout(output, p, module.training)

    for layer in model.modules():
        if isinstance(layer, ChameleonDecoderLayer):
            layer.self_attn.register_forward_hook(drop)
            layer.mlp.register_forward_hook(drop)


def token_rows(choice: str, vocab: Vocab, added: range) -> list[int]:
    """Embedding/output rows to train with LoRA: ``auto`` (rows added by extension), ``image``, ``none``."""
    if choice == "none" and len(added):
        raise ConfigError(
            f"lora.token_rows=none, but extending the vocabulary added {len(added)} untrained rows "
            f"({added.start}..{added.stop - 1}): use auto or image"
        )
    if choice == "image":
        return sorted(set(vocab.image_ids.tolist()) | set(added))
    return list(added) if choice == "auto" else []


def apply_lora(model: nn.Module, cfg: LoRAConfig, rows: list[int]) -> nn.Module:
    """Freeze ``model`` and wrap it with peft adapters (plus trainable ``rows`` of both vocabulary tables).

    Trainable parameters are cast to fp32, whatever the frozen base's dtype.
    """
    names = [name for name, _ in model.named_modules()]
    linear = sorted(
        {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    )
    layers = f"the model's linear layers are {', '.join(linear)}"
    # peft refuses only a list whose names all match nothing: one misspelt name would train fewer layers
    unmatched = [t for t in cfg.target_modules if not any(n == t or n.endswith("." + t) for n in names)]
    if unmatched:
        raise ConfigError(
            f"lora.target_modules={list(cfg.target_modules)}: {', '.join(map(repr, unmatched))} "
            f"{'matches' if len(unmatched) == 1 else 'match'} no layer of the model; {layers}"
        )
    with quiet_peft():
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(
            r=cfg.rank,
            lora_alpha=cfg.alpha,
            lora_dropout=cfg.dropout,
            target_modules=list(cfg.target_modules),
            trainable_token_indices={"embed_tokens": rows, "lm_head": rows} if rows else None,
        )
        try:
            model = get_peft_model(model, config)
        except ValueError as err:  # peft: a target LoRA cannot wrap (a norm, a whole attention block)
            raise ConfigError(
                f"lora.target_modules={list(cfg.target_modules)}: {str(err).splitlines()[0]}; {layers}"
            ) from err
    for param in model.parameters():
        if param.requires_grad:
            param.data = param.data.float()
    return model


def make_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.AdamW:
    """AdamW over the trainable parameters; weight decay on matrices, none on norms and biases."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(
        [g for g in groups if g["params"]], lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps
    )


def learning_rate(step: int, total: int, warmup: int, cfg: OptimConfig) -> float:
    """Learning rate of optimizer step ``step`` (0-based) of ``total``.

    Linear warm-up over the first ``warmup`` steps, ``cfg.lr`` at step ``warmup``, then cosine decay to
    ``cfg.min_lr`` at step ``total``.
    """
    if step < warmup:
        return cfg.lr * (step + 1) / (warmup + 1)
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1.0 + math.cos(math.pi * progress))


def check_same_data(checkpoint: Path, position: dict, data: dict, cfg: TrainDataConfig) -> None:
    """Refuse to resume ``checkpoint`` (its ``trainer.json`` read as ``position``) when the training data
    changed since it was saved: ``data`` is this run's ``{"examples": count, "data_fingerprint": hash or
    None}``. Images added, removed or replaced would move the saved data position (it counts batches) onto
    other examples. Raises :class:`ConfigError`; what a checkpoint did not save is not compared."""
    source = f"data.shards={cfg.shards}" if cfg.shards else f"data.hq_folder={cfg.hq_folder}"
    fix = (
        "so the saved data position would point at other examples; put the data back as it was to resume, "
        "or start a new run on the new data in another output_dir"
    )
    saved = position.get("examples")
    if saved is not None and saved != data["examples"]:
        raise ConfigError(
            f"{checkpoint} was saved when the training data held {saved} examples, now {data['examples']}: "
            f"{source} changed since, {fix}"
        )
    saved = position.get("data_fingerprint")
    if saved is not None and data["data_fingerprint"] is not None and saved != data["data_fingerprint"]:
        raise ConfigError(
            f"{checkpoint} was saved with other training data (as many examples, other content): {source} "
            f"changed since, {fix}"
        )


def warmup_notice(total: int, warmup: int, cfg: OptimConfig) -> str:
    """A notice when the warm-up (``warmup`` steps) lasts the whole run of ``total`` steps: the learning rate
    of :func:`learning_rate` then never reaches ``cfg.lr``. Empty otherwise."""
    if warmup < total or total < 1:
        return ""
    return (
        f"note: optim.warmup_epochs={cfg.warmup_epochs} is {warmup} steps, not fewer than this run's "
        f"{total}: the learning rate never reaches optim.lr={cfg.lr:g} (it peaks at "
        f"{learning_rate(total - 1, total, warmup, cfg):.3g}); lower optim.warmup_epochs or train longer"
    )


def accumulation_notice(
    batches: int, grad_accum: int, batch_size: int, processes: int, examples: int | None = None
) -> str:
    """A notice when ``grad_accum`` is more than the ``batches`` of an epoch on each process: accelerate ends
    an accumulation at the epoch's end, so every optimizer step is then ``batches`` micro-batches, not
    ``grad_accum`` (a shipped recipe's global batch on a small data set), and at most the data set's
    ``examples``. Empty otherwise."""
    if grad_accum <= batches:
        return ""
    held = batches * batch_size * processes
    held_text = f"{held} sequences" if examples is None or held <= examples else f"all {examples} examples"
    return (
        f"note: grad_accum={grad_accum} is more than the {batches} batch(es) of an epoch on each process, "
        f"so each optimizer step accumulates {batches}: {held_text} a step, "
        f"not {grad_accum * batch_size * processes} sequences; lower grad_accum (or batch_size) or add data"
    )


def start_line(
    method: str, trainable: int, examples: int, total: int, batch_size: int, grad_accum: int, processes: int
) -> str:
    """The line a run starts with: what it trains and what one optimizer step holds, ``batch_size x
    grad_accum x processes`` sequences, or all ``examples`` where the data set holds fewer (a step never
    spans two epochs: accelerate ends an accumulation at the epoch's end)."""
    shape = f"{batch_size} x {grad_accum} x {processes}"
    step = (
        f"{shape} sequences"
        if batch_size * grad_accum * processes <= examples
        else f"all {examples} examples each (the data set's size caps {shape} sequences)"
    )
    return f"{method}: {trainable:,} trainable parameters; {examples} examples, {total} steps of {step}"


def schedule_change(position: dict, total: int, warmup: int, cfg: OptimConfig) -> str:
    """A notice when a resumed run plans another number of optimizer steps (``total``, from ``max_steps`` or
    ``epochs``) than the checkpoint's run did: the cosine schedule of :func:`learning_rate` is then
    re-planned, so the learning rate at the resumed step changes. Empty when nothing changes."""
    step, planned = position["step"], position.get("total_steps")
    if planned is None or planned == total or step >= total:
        return ""
    was, now = learning_rate(step, planned, warmup, cfg), learning_rate(step, total, warmup, cfg)
    return (
        f"note: the checkpoint's run planned {planned} steps and this one {total}: the cosine learning-rate "
        f"schedule is re-planned over {total} steps, so at step {step} the rate is {now:.3g} (it was "
        f"{was:.3g}); keep the saved max_steps or epochs to resume the schedule exactly"
    )


# ----------------------------------------------------------------------------------------------
# Logging


def _step_of(line: str) -> float:
    """The step of a ``log.jsonl`` line; infinity (dropped on resume) for a line that is not a record, such as
    the half-written last line of a killed run."""
    try:
        record = json.loads(line)
        return float(record["step"]) if isinstance(record, dict) else math.inf
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        return math.inf


class RunLog:
    """Records to ``output_dir/log.jsonl`` (always, main process) and to the accelerate trackers (wandb)."""

    def __init__(self, accelerator: Accelerator, path: Path, resumed_step: int) -> None:
        self.accelerator, self.path = accelerator, path
        if accelerator.is_main_process and path.is_file():  # forget records a resumed run will redo
            records = path.read_text(encoding="utf-8").splitlines()
            lines = [line for line in records if _step_of(line) <= resumed_step]
            write_text_atomic(path, "".join(line + "\n" for line in lines))  # a full disk keeps the old

    def write(self, record: dict) -> None:
        if self.accelerator.is_main_process:
            try:
                with self.path.open("a", encoding="utf-8") as f:
                    f.write(json.dumps(record) + "\n")
            except OSError as err:  # named as write_text_atomic names its file (a write's error has no name)
                raise OSError(err.errno, f"cannot write {self.path}: {err.strerror or err}") from err
        self.accelerator.log(record, step=record["step"])


RUN_CONFIG_HEADER = "# the settings of the last run started in this folder (written by scripts/train.py)\n"
"""First line of ``output_dir/config.yaml``: marks the file as one a run wrote, which a new run replaces."""


def check_run_config(output_dir: Path) -> None:
    """Refuse a fresh run in ``output_dir`` when its ``config.yaml`` was not written by a run (a file of the
    user's, which the run would overwrite). Raises :class:`ConfigError`."""
    saved = output_dir / "config.yaml"
    if saved.is_file() and not saved.read_bytes().startswith(RUN_CONFIG_HEADER.encode()):
        raise ConfigError(
            f"{saved} is not a config a training run wrote, and a run writes its settings there: move that "
            "file elsewhere (pass it with --config), or choose another output_dir"
        )


def check_wandb_mode(cfg: LogConfig) -> None:
    """Refuse a ``WANDB_MODE`` environment variable that says otherwise than ``log.wandb_mode``: the setting
    is passed to wandb, which lets it win, so ``WANDB_MODE=offline`` (the usual switch on a machine without
    internet) would be ignored and the run would try to log in. Raises :class:`ConfigError`."""
    env = os.environ.get("WANDB_MODE", "").strip().lower()
    if not cfg.wandb or not env or {"dryrun": "offline", "run": "online"}.get(env, env) == cfg.wandb_mode:
        return
    fix = "log.wandb=false" if env == "disabled" else f"log.wandb_mode={env}"
    raise ConfigError(
        f"WANDB_MODE={env} is set, but log.wandb_mode={cfg.wandb_mode} decides for this run: set {fix}, or "
        "unset WANDB_MODE"
    )


def start_trackers(accelerator: Accelerator, cfg: LogConfig, output_dir: Path, config: dict) -> None:
    """Weights & Biases (online or offline) when ``cfg.wandb``. Raises :class:`ConfigError` when wandb cannot
    start a run (not logged in, no network)."""
    if cfg.wandb:
        init = {"mode": cfg.wandb_mode, "name": cfg.run_name or output_dir.name, "dir": str(output_dir)}
        try:
            accelerator.init_trackers(cfg.wandb_project, config=config, init_kwargs={"wandb": init})
        except Exception as err:  # wandb's login, network and settings errors have many types
            raise ConfigError(
                f"log.wandb=true: wandb could not start a run ({error_reason(err)}); log in "
                "(wandb login, or WANDB_API_KEY), or set log.wandb_mode=offline (upload later with wandb "
                "sync), or log.wandb=false"
            ) from err


# ----------------------------------------------------------------------------------------------
# The loop


def split_held_out(dataset: Dataset, count: int, seed: int) -> tuple[Dataset, Dataset | None]:
    """(training examples, ``count`` held-out examples or None): a seeded, fixed choice of examples.

    Raises :class:`ConfigError` when ``count`` leaves no example to train on.
    """
    if count <= 0:
        return dataset, None
    if count >= len(dataset):
        raise ConfigError(f"eval_examples={count} leaves none of the {len(dataset)} examples to train on")
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed)).tolist()
    return Subset(dataset, sorted(order[count:])), Subset(dataset, sorted(order[:count]))


@torch.no_grad()
def held_out_loss(model: nn.Module, loader: DataLoader, accelerator: Accelerator) -> float:
    """Mean loss over the held-out batches of every process, in eval mode (no dropout)."""
    model.eval()
    losses = [model(input_ids=b["ids"], labels=b["labels"], use_cache=False).loss for b in loader]
    model.train()
    return accelerator.reduce(torch.stack(losses).mean(), "mean").item()


def train(cfg: TrainConfig, dataset: Dataset | None = None, progress: bool = True) -> Path:
    """Train (or continue) the run ``cfg`` describes; returns its last checkpoint folder.

    ``dataset``: any map-style dataset of ``{"ids": [T], "labels": [T]}`` int64 items (labels
    -100 where no loss is taken); by default the examples ``cfg.data`` names.
    ``progress=False`` hides the progress bar (``log.jsonl`` is written either way).
    """
    check_fields(cfg)  # (load_config has already done this for configs read from files)
    if cfg.backbone.quantize != "none":
        raise ConfigError(
            f"backbone.quantize={cfg.backbone.quantize}: training needs the full-precision weights; "
            "set backbone.quantize=none (quantise the trained model at inference with --quantize)"
        )
    if cfg.max_steps == 0 and cfg.epochs <= 0:
        raise ConfigError("epochs=0 with max_steps=0 trains nothing: set epochs above 0 or max_steps")
    if not cfg.data.shards:
        check_captions_file(cfg.data)
    if cfg.backbone.adapter:
        raise ConfigError(
            f"backbone.adapter={cfg.backbone.adapter}: scripts/train.py trains the backbone itself, not an "
            "adapter given to it; to continue a LoRA run pass resume=CHECKPOINT, to start from a fine-tuned "
            "model merge it first (scripts/merge_lora.py) and pass backbone.source=MERGED_FOLDER"
        )
    if cfg.log.wandb:
        require("wandb", "log.wandb=true needs wandb", 'pip install -e ".[wandb]" (or set log.wandb=false)')
    check_wandb_mode(cfg.log)
    # the last check: it makes output_dir (every process of a launch at once; the run writes there anyway)
    output = Path(cfg.output_dir)
    made = folders_to_make(output)
    if (reason := can_write_in(cfg.output_dir, keep=True)) is not None:
        raise ConfigError(f"output_dir={cfg.output_dir} cannot be written ({reason}); choose another")
    held = contextlib.ExitStack()  # the output_dir lock, which _train_in takes
    try:
        return _train_in(output, cfg, dataset, progress, held)
    except BaseException as err:  # refused later (data, resume, LoRA targets) or interrupted: no empty folder
        remove_empty(made)
        again = "rerun the same command with resume=latest" if checkpoints(output) else "run it again"
        if died := worker_died(err, "data.num_workers", cfg.data.num_workers, again):
            raise died from err
        # a full disk while the settings or the log are written (a checkpoint's save says so itself)
        if isinstance(err, OSError) and not isinstance(err, PureError) and out_of_space(err, output):
            raise DiskFullError(
                f"no space left on the device of output_dir={output} ({error_reason(err)}); free space, then "
                f"{again}"
            ) from err
        raise
    finally:
        held.close()


def _train_in(
    output: Path, cfg: TrainConfig, dataset: Dataset | None, progress: bool, held: contextlib.ExitStack
) -> Path:
    """:func:`train` after its checks, in the existing folder ``output``; the main process's lock on it is
    released when ``held`` closes."""
    accelerator = Accelerator(
        mixed_precision=cfg.mixed_precision,
        gradient_accumulation_steps=cfg.grad_accum,
        log_with="wandb" if cfg.log.wandb else None,
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=cfg.seed),
    )
    check_launch(accelerator.num_processes, accelerator.distributed_type.name)
    # one run per folder: a second would delete the first's save in progress as interrupted, and mix its
    # checkpoints and log lines with the first's (the launch's main process holds it for all); then, before
    # a resume is looked for, what a killed save left is cleared (a checkpoint may be put back)
    if accelerator.is_main_process:
        if (release := lock_folder(output)) is None:
            raise ConfigError(
                f"output_dir={cfg.output_dir} is in use by another training run (started twice?): wait for "
                "it to end (then resume=latest continues from its last checkpoint), or choose another "
                "output_dir"
            )
        held.callback(release)
        for said in tidy_interrupted(output):
            accelerator.print(said)
    accelerator.wait_for_everyone()
    resume = find_resume(output, cfg.resume)
    if resume is None:
        check_run_config(output)
    if cfg.resume == "latest" and resume is None:
        accelerator.print(f"resume=latest: no checkpoint in {output / 'checkpoints'}; starting a new run")
    if resume is not None:
        if noted := check_resumable(resume, cfg):
            accelerator.print(noted)
    set_seed(cfg.seed)
    tokenizer, vocab = load_text_side(cfg.tokenizer or backbone_folder(cfg.backbone))
    if dataset is None:
        dataset = build_dataset(
            cfg.data, cfg.vq, cfg.backbone, tokenizer, vocab, accelerator.device, accelerator.print
        )
    # A fixed held-out split (the same on every process and on resume) measures generalisation.
    check_lengths(dataset, cfg.max_seq_len, accelerator.print)
    # Saved with each checkpoint: a resume checks the data is the same (a caller's dataset may have no hash).
    data = {"examples": len(dataset), "data_fingerprint": getattr(dataset, "fingerprint", None)}
    dataset, held_out = split_held_out(dataset, cfg.eval_examples, cfg.seed)

    # Frozen LoRA base in the autocast dtype; full fine-tunes keep fp32 master weights. Sharded runs
    # load on the CPU and let accelerate place the shards.
    dtype = DTYPES[cfg.mixed_precision] if cfg.method == "lora" else torch.float32
    sharded = accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)
    on_cpu = sharded or accelerator.device.type == "cpu"  # (safetensors rejects "cpu:0", multi-CPU's device)
    model, added = load_for_training(cfg.backbone, "cpu" if on_cpu else accelerator.device, dtype, vocab.size)
    model.config.z_loss_weight = cfg.z_loss_weight
    add_residual_dropout(model, cfg.residual_dropout)
    if cfg.gradient_checkpointing:
        enable_activation_checkpointing(model)
    if cfg.method == "lora":
        model = apply_lora(model, cfg.lora, token_rows(cfg.lora.token_rows, vocab, added))
    model.train()
    optimizer = make_optimizer(model, cfg.optim)
    # The loader draws from its own generator: starting an iterator (as a resumed run does mid-epoch)
    # must not advance the global RNG that dropout uses, or a resumed run would drift.
    loader = DataLoader(
        dataset,
        batch_size=cfg.batch_size,
        shuffle=True,
        num_workers=cfg.data.num_workers,
        collate_fn=partial(collate, pad_id=PAD_ID, max_len=cfg.max_seq_len),
        generator=torch.Generator().manual_seed(cfg.seed),
    )
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    val_loader = None
    if held_out is not None:
        pad = partial(collate, pad_id=PAD_ID, max_len=cfg.max_seq_len)
        val_loader = accelerator.prepare(DataLoader(held_out, batch_size=cfg.batch_size, collate_fn=pad))

    # Weights live in our own safetensors export next to state/; accelerate keeps the rest.
    accelerator.register_save_state_pre_hook(lambda models, weights, directory: weights.clear())

    def load_hook(models: list, directory: str) -> None:
        for m in models:
            load_weights(accelerator.unwrap_model(m), Path(directory).parent, cfg.method)
        models.clear()

    accelerator.register_load_state_pre_hook(load_hook)

    steps_per_epoch = math.ceil(len(loader) / cfg.grad_accum)
    total = cfg.max_steps or math.ceil(cfg.epochs * steps_per_epoch)
    warmup = round(cfg.optim.warmup_epochs * steps_per_epoch)
    if long_warmup := warmup_notice(total, warmup, cfg.optim):
        accelerator.print(long_warmup)
    processes = accelerator.num_processes
    if short := accumulation_notice(len(loader), cfg.grad_accum, cfg.batch_size, processes, len(dataset)):
        accelerator.print(short)
    step = epoch = done = 0  # optimizer steps, epochs, micro-batches done in this epoch
    if resume is not None:
        try:
            # accelerate only logs a missing or damaged RNG state and goes on: the resume would not be exact
            rng = resume / "state" / f"random_states_{accelerator.process_index}.pkl"
            if not rng.is_file():
                raise FileNotFoundError(f"{rng} is missing")
            torch.load(rng, weights_only=False)  # raises for a damaged file
            # torch restores the saved groups' betas, eps and weight decay with the moments: this run's
            # optim.* (which may change on resume, as the notice says) are put back over them
            settings = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
            accelerator.load_state(str(resume / "state"))
            for group, own in zip(optimizer.param_groups, settings, strict=True):
                group.update(own)
            position = json.loads((resume / "trainer.json").read_text(encoding="utf-8"))
            step, epoch, done = position["step"], position["epoch"], position["batches_in_epoch"]
        except Exception as err:  # damaged files or other settings (peft, torch and json raise many types)
            raise CheckpointError(
                f"cannot resume from {resume} ({error_reason(err, 300)}); if its settings differ from "
                f"this run's, resume with those of {resume / 'config.yaml'}; if it is damaged, delete "
                "that checkpoint folder to resume from the one before, or start anew in another output_dir"
            ) from err
        check_same_data(resume, position, data, cfg.data)
        accelerator.print(f"resumed from {resume} at step {step}")
        if replanned := schedule_change(position, total, warmup, cfg.optim):
            accelerator.print(replanned)
        if step == total:
            accelerator.print(
                f"the run had already reached its last step ({total}): raise max_steps or epochs to train "
                "further"
            )
        elif step > total:
            accelerator.print(
                f"the checkpoint is at step {step}, beyond this run's last step ({total}): nothing to train; "
                "raise max_steps or epochs above it to train further"
            )
    config = dataclasses.asdict(cfg)  # the settings as they are (a ${...} in a text stays text)
    start_trackers(accelerator, cfg.log, output, config)  # first: a wandb that cannot start leaves no config
    if accelerator.is_main_process:
        output.mkdir(parents=True, exist_ok=True)
        write_text_atomic(output / "config.yaml", RUN_CONFIG_HEADER + to_yaml(cfg))
    log = RunLog(accelerator, output / "log.jsonl", step)
    base_config = source_config(cfg.backbone)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    accelerator.print(
        start_line(cfg.method, trainable, len(dataset), total, cfg.batch_size, cfg.grad_accum, processes)
    )

    def save() -> Path:
        position = {
            "step": step,
            "epoch": epoch,
            "batches_in_epoch": done,
            "total_steps": total,
            **data,
        }
        return save_checkpoint(
            accelerator,
            output,
            position,
            cfg,
            lambda folder: export_weights(accelerator, model, folder, cfg.method, base_config, tokenizer),
        )

    with tqdm(
        total=total,
        initial=step,
        desc="train",
        unit="step",
        disable=not (progress and accelerator.is_local_main_process),
    ) as bar:  # closed before an error is printed
        losses, tokens, tick = [], torch.zeros((), device=accelerator.device), time.perf_counter()
        nonfinite = torch.zeros((), device=accelerator.device)  # micro-batches whose loss was nan or inf
        last = resume
        while step < total:
            loader.set_epoch(epoch)
            for batch in accelerator.skip_first_batches(loader, done) if done else loader:
                with accelerator.accumulate(model):
                    lr = learning_rate(step, total, warmup, cfg.optim)
                    for group in optimizer.param_groups:
                        group["lr"] = lr
                    loss = model(input_ids=batch["ids"], labels=batch["labels"], use_cache=False).loss
                    accelerator.backward(loss)
                    if accelerator.sync_gradients and cfg.optim.grad_clip > 0:
                        accelerator.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                done += 1
                losses.append(loss.detach())
                nonfinite += ~torch.isfinite(loss.detach())
                tokens += batch["tokens"]
                if not accelerator.sync_gradients:
                    continue
                step += 1
                bar.update(1)
                evaluate = val_loader is not None and (step % cfg.eval_every == 0 or step == total)
                if step % cfg.log.every == 0 or step % cfg.save_every == 0 or step == total or evaluate:
                    # checked before anything is logged or saved (every process agrees: one reduction)
                    if accelerator.reduce(nonfinite, "sum").item():
                        raise DivergedError(diverged_message(step, last, cfg))
                if step % cfg.log.every == 0 or step == total:
                    seconds, tick = time.perf_counter() - tick, time.perf_counter()
                    mean_loss = accelerator.reduce(torch.stack(losses).mean(), "mean").item()
                    throughput = accelerator.reduce(tokens, "sum").item() / seconds
                    record = {
                        "step": step,
                        "epoch": epoch,
                        "loss": mean_loss,
                        "lr": lr,
                        "tokens_per_s": throughput,
                    }
                    log.write(record)
                    bar.set_postfix(loss=f"{mean_loss:.4f}", tok_s=f"{throughput:.0f}", lr=f"{lr:.2e}")
                    losses, tokens = [], torch.zeros((), device=accelerator.device)
                if evaluate:
                    val_loss = held_out_loss(model, val_loader, accelerator)
                    log.write({"step": step, "epoch": epoch, "val_loss": val_loss})
                    bar.set_postfix(loss=f"{mean_loss:.4f}", val_loss=f"{val_loss:.4f}")
                if step % cfg.save_every == 0 or step == total:
                    last = save()
                if step >= total:
                    break
            else:
                epoch, done = epoch + 1, 0
    accelerator.print(f"last checkpoint: {last}")
    accelerator.end_training()
    return last
