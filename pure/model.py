"""The backbone: transformers' Chameleon, adapted to the Lumina-mGPT/PURE checkpoint.

Two documented differences between the checkpoint and transformers' ``ChameleonForConditionalGeneration``
(SPEC section 4), and how we bridge them without copying the modeling code:

- the stock forward pushes every image-token logit to the float minimum; PURE generates image
  tokens, so :class:`PureChameleon` overrides only ``forward`` to return unmasked logits (and the
  reference's loss);
- Lumina/PURE store each qk-norm weight and bias as ``[model_parallel_size, head_dim]`` (one
  gamma/beta per training shard, ``[1, 128]`` in PURE) where transformers expects
  ``[num_heads, head_dim]``: :func:`load_backbone` repeats them across heads while loading.

Weights are read shard by shard from safetensors straight into a model built on the meta
device, so a 7B checkpoint never needs a second copy in memory.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Sequence
from contextlib import contextmanager
from fnmatch import fnmatch
from pathlib import Path

import torch
import torch.nn.functional as F
from huggingface_hub.errors import StrictDataclassError
from safetensors import SafetensorError, safe_open
from transformers import ChameleonConfig, ChameleonForConditionalGeneration
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.models.chameleon.modeling_chameleon import ChameleonRotaryEmbedding

from pure.config import BackboneConfig
from pure.download import CHECKPOINT_FILES, offline_note
from pure.errors import LINKS_FIX, PureError, broken_links, error_reason, from_here, torch_load_reason
from pure.kv_cache import CACHE_ARG
from pure.quantize import QUANTIZED_WEIGHT, check_quantize, load_quantized_
from pure.sequence import IGNORE_INDEX
from pure.tiny import write_tiny_checkpoint
from pure.vocab import CODEBOOK_SIZE, IMAGE_PREFIX, Vocab, VocabError, image_names_from_files

DEFAULT_SOURCE = "nonwhy/PURE"
IGNORED_PREFIXES = ("model.vqmodel.",)
"""Checkpoint entries we drop: Chameleon's ds-16 VQGAN, which PURE does not use (it uses LlamaGen VQ-8)."""


class CheckpointError(PureError, RuntimeError):
    """A checkpoint is missing, incomplete or does not fit the model."""


class PureChameleon(ChameleonForConditionalGeneration):
    """``ChameleonForConditionalGeneration`` with unmasked image-token logits (``mask_image_logits=False``).

    ``forward`` returns fp32 logits ``[B, T, V]`` over the whole vocabulary and, given ``labels``,
    the reference's loss: mean next-token cross-entropy ignoring -100, plus
    ``config.z_loss_weight`` times the z-loss (see :func:`causal_lm_loss`).
    """

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache=None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int = 0,
        past_key_values=None,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            **{CACHE_ARG: cache if cache is not None else past_key_values},
            **kwargs,
        )
        hidden = outputs.last_hidden_state
        if logits_to_keep:
            hidden = hidden[:, -logits_to_keep:]
        logits = self.lm_head(hidden).float()
        loss = None
        if labels is not None:
            loss = causal_lm_loss(logits, labels, getattr(self.config, "z_loss_weight", 0.0) or 0.0)
        return CausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            hidden_states=outputs.hidden_states,
            **{CACHE_ARG: getattr(outputs, CACHE_ARG, None)},
        )


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor, z_loss_weight: float = 0.0) -> torch.Tensor:
    """The reference's training loss.

    ``logits``: ``[B, T, V]``; ``labels``: ``[B, T]`` with -100 where no loss is taken. Cross-entropy
    is the mean over shifted targets (logits[t] predicts labels[t+1]). The z-loss is the mean of
    ``logsumexp(logits[t])**2`` over positions whose *unshifted* label is >= 0, as the reference
    computes it (one position off from the cross-entropy's).
    """
    ce = F.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=IGNORE_INDEX
    )
    if not z_loss_weight:
        return ce
    return ce + z_loss_weight * z_loss(logits, labels)


def z_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Unweighted z-loss: mean of ``logsumexp(logits)**2`` where ``labels >= 0`` (unshifted)."""
    keep = labels >= 0
    return (torch.logsumexp(logits.float(), dim=-1)[keep] ** 2).mean()


def resolve_source(source: str, revision: str = "main") -> Path:
    """A local folder, or a Hugging Face repo id downloaded (or found in the cache) by huggingface_hub."""
    path = Path(source).expanduser()
    if path.is_dir():
        return _check_links(path)
    if path.exists():
        raise CheckpointError(
            f"model folder {source!r} is a file, not a folder: pass the folder that holds its config.json "
            "and safetensors"
        )
    if path.suffix or source.startswith((".", "/", "~")) or source.count("/") != 1:
        raise CheckpointError(
            f"model folder {from_here(source)} does not exist (expected a folder or a Hugging Face repo id)"
        )
    from huggingface_hub import snapshot_download

    try:
        folder = Path(snapshot_download(source, revision=revision, allow_patterns=CHECKPOINT_FILES))
    except Exception as err:  # offline, no cache, network or auth errors all end here
        raise CheckpointError(
            f"could not obtain the model {source!r}{offline_note()}: "
            f"{(str(err).splitlines() or [type(err).__name__])[0].rstrip('.')}. On a machine with internet "
            f"access run `python scripts/download.py models {source}` (`--list` shows the hf download "
            "commands), copy models/ here and pass --models models"
        ) from err
    return _check_links(folder)


def _check_links(folder: Path) -> Path:
    """``folder``, unless a checkpoint file in it is a link to nothing (:func:`broken_links`): each would
    otherwise be called missing (config.json, a shard, the tokenizer) while ``ls`` lists it."""
    files = [p for p in sorted(folder.iterdir()) if any(fnmatch(p.name, pat) for pat in CHECKPOINT_FILES)]
    if broken := broken_links(files):
        raise CheckpointError(
            f"model folder {folder} holds links to files that do not exist ({broken}): a Hugging Face cache "
            f"copied without its blobs/ folder? {LINKS_FIX} or fetch it again (python scripts/download.py "
            "models)"
        )
    return folder


@contextmanager
def quiet_peft():
    """Import and use peft without two notices that ask nothing of the user:

    - peft imports bitsandbytes whenever it is installed (pyiqa requires it), and bitsandbytes logs on
      CPUs with AVX512-BF16 that its 4-bit CPU kernels need ``pip install kernels``; nothing here uses
      4-bit layers;
    - peft reads ``model.is_gradient_checkpointing``, which transformers 5 deprecates with a
      ``FutureWarning`` (ours is ``activation_checkpointing_enable``).
    """
    logger = logging.getLogger("bitsandbytes")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "`is_gradient_checkpointing` is deprecated", FutureWarning)
            import peft  # noqa: F401  (bitsandbytes logs while peft imports it)

            yield
    finally:
        logger.setLevel(level)


def _json_object(file: Path) -> dict:
    """The JSON object in ``file``, a model folder's own file (``config.json``, the shard index, the
    tokenizer's files). A damaged or cut file, or a git-lfs pointer left by a clone without git-lfs, is one
    :class:`CheckpointError` naming it and the fix (transformers and ``json`` raise a bare traceback)."""

    def damaged(reason: str) -> CheckpointError:
        return CheckpointError(
            f"{file} is not readable ({reason}): it is damaged or incomplete (or a git-lfs pointer: a clone "
            "without git-lfs); download or copy the model folder again"
        )

    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise damaged(error_reason(err)) from err
    if not isinstance(data, dict):
        raise damaged(f"a JSON {type(data).__name__}, not an object")
    return data


def read_config(folder: Path) -> ChameleonConfig:
    """``config.json`` of a Lumina-mGPT/PURE checkpoint as a ``ChameleonConfig``.

    Lumina/PURE fields (``z_loss_weight``, ``mask_image_logits``, ``dropout``, ``apply_lora``, ...)
    are kept as extra attributes; ``rope_theta`` is converted by transformers.
    """
    path = folder / "config.json"
    if not path.is_file() and (folder / "model" / "config.json").is_file():  # a full fine-tune's checkpoint
        raise CheckpointError(f"{folder} is a training checkpoint; pass its model folder: {folder / 'model'}")
    if not path.is_file() and (folder / "adapter_config.json").is_file():
        raise CheckpointError(f"{folder} is a LoRA adapter, not a model: pass it as --adapter {folder}")
    snapshot = None if path.is_file() else _hub_cache_snapshot(folder)
    if snapshot is not None:
        raise CheckpointError(
            f"{folder} is a Hugging Face cache folder, not a model folder: pass the snapshot in it, "
            f"{snapshot}"
        )
    if not path.is_file():
        raise CheckpointError(f"{path} is missing: a model folder needs config.json next to its safetensors")
    fields = {k: v for k, v in _json_object(path).items() if not k.startswith("_")}
    if fields.get("mask_image_logits", False):
        raise CheckpointError(f"{path}: mask_image_logits is true, but PURE must generate image tokens")
    try:
        config = ChameleonConfig(**fields)
    except CONFIG_ERRORS as err:
        raise unusable_config(path, fields, err) from err
    config._attn_implementation = "sdpa"
    return config


def _hub_cache_snapshot(folder: Path) -> Path | None:
    """The model folder inside a Hugging Face cache folder given in its place: a repo's cache folder
    (``models--owner--name``, whose ``refs/main`` names the snapshot downloaded last), its ``snapshots/``,
    or the cache holding such folders. None when it is none of them or has no snapshot with a config."""
    repos = [folder.parent if folder.name == "snapshots" else folder]
    if not (repos[0] / "snapshots").is_dir():
        repos = sorted(child for child in folder.glob("models--*") if (child / "snapshots").is_dir())
    for repo in repos:
        ref = repo / "refs" / "main"
        named = ref.read_text(encoding="utf-8", errors="replace").strip() if ref.is_file() else ""
        snapshots = sorted(repo.joinpath("snapshots").iterdir(), key=lambda p: p.name != named)
        for snapshot in snapshots:
            if (snapshot / "config.json").is_file():
                return snapshot
    return None


CONFIG_ERRORS = (StrictDataclassError, TypeError, ValueError, AttributeError, KeyError)
"""What transformers raises for a config.json it cannot build a Chameleon from: a value of the wrong type
(``"num_hidden_layers": "32"``, ``"torch_dtype": "auto"``), heads that do not divide the width, another
model's layout (a composite config with ``text_config``), no ``vocabulary_map``."""


def unusable_config(path: Path, fields: dict, err: Exception) -> CheckpointError:
    """One line for a ``config.json`` that transformers refuses (:data:`CONFIG_ERRORS`), naming it, its
    ``model_type`` when that is not Chameleon's, and the fix (transformers raises a bare traceback)."""
    kind = fields.get("model_type", "chameleon")
    other = f", and its model_type is {kind!r}, not 'chameleon'" if kind != "chameleon" else ""
    return CheckpointError(
        f"{path} does not describe a model pure can build ({error_reason(err)}){other}: it is not the "
        "config.json of a PURE (Lumina-mGPT) checkpoint, or was edited; copy the model folder's config.json "
        "again"
    )


def weight_files(folder: Path) -> list[Path]:
    """The safetensors files of a checkpoint: those its index names, or the single ``model.safetensors``."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        weight_map = _json_object(index).get("weight_map")
        if not isinstance(weight_map, dict):
            raise CheckpointError(f"{index} has no weight_map: download or copy the model folder again")
        names = sorted(set(weight_map.values()))
        missing = [n for n in names if not (folder / n).is_file()]
        if missing:
            raise CheckpointError(
                f"{index} lists shards that are not in {folder}: {missing[:3]} "
                f"({len(missing)} missing); download the whole model folder again"
            )
        return [folder / n for n in names]
    single = folder / "model.safetensors"
    if single.is_file():
        return [single]
    shards = sorted(p.name for p in folder.glob("*.safetensors"))
    if shards:  # the index is a small file fetched apart from the shards: an interrupted download lacks it
        listed = ", ".join(shards[:2]) + (", ..." if len(shards) > 2 else "")
        raise CheckpointError(
            f"{folder} holds safetensors shards ({listed}) but no model.safetensors.index.json that lists "
            "them (an interrupted download or copy?); download or copy the whole model folder again"
        )
    if pickled := sorted(p.name for p in folder.glob("pytorch_model*.bin")):
        raise CheckpointError(
            f"{folder} holds PyTorch .bin weights ({pickled[0]}), which pure does not read: it reads "
            "safetensors, as nonwhy/PURE ships them; convert the state dict to model.safetensors "
            "(safetensors.torch.save_file) or pass a folder that has safetensors weights"
        )
    raise CheckpointError(
        f"no model.safetensors or model.safetensors.index.json in {folder}: its weights are not there (an "
        "interrupted download or copy?); download or copy the whole model folder again"
    )


def _safetensors_device(device: str | torch.device) -> str:
    """safetensors takes "cpu" or "cuda:N", not "cpu:0" (which accelerate hands out)."""
    device = torch.device(device)
    return "cpu" if device.type == "cpu" else str(device)


def _adapt(name: str, tensor: torch.Tensor, expected: torch.Size) -> torch.Tensor:
    """Map one checkpoint tensor onto the parameter transformers expects (qk-norm: repeat over heads)."""
    if (".q_norm." in name or ".k_norm." in name) and tensor.ndim == 2 and tensor.shape != expected:
        shards, heads = tensor.shape[0], expected[0]
        if tensor.shape[1] == expected[1] and heads % shards == 0:
            tensor = tensor.repeat_interleave(heads // shards, dim=0)
    return tensor


def load_backbone(
    source: str = DEFAULT_SOURCE,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.bfloat16,
    revision: str = "main",
    quantize: str = "none",
) -> PureChameleon:
    """Load a Lumina-mGPT/PURE checkpoint (repo id or local folder) as :class:`PureChameleon` (eval mode).

    ``quantize``: none, int8 or int4 (:mod:`pure.quantize`): each decoder projection is quantised on
    ``device`` as soon as it is read. Raises :class:`pure.quantize.QuantizeError` before reading
    anything when the mode cannot run on ``device`` with ``dtype``. A checkpoint without
    ``lm_head.weight`` whose config ties the word embeddings (``tie_word_embeddings``) uses the
    embedding as its output head, as transformers does.
    """
    check_quantize(quantize, device, dtype)
    folder = resolve_source(source, revision)
    config = read_config(folder)
    files = weight_files(folder)
    with torch.device("meta"):
        try:
            model = PureChameleon(config)
        except CONFIG_ERRORS as err:  # values ChameleonConfig keeps but the model cannot use
            path = folder / "config.json"
            raise unusable_config(path, _json_object(path), err) from err
    model.model.vqmodel = None  # Chameleon's ds-16 VQGAN: PURE tokenises images with VQ-8 instead
    expected = {k: v.shape for k, v in model.state_dict().items()}
    loaded: set[str] = set()
    unexpected: list[str] = []
    for file in files:
        state = {}
        with _readable(file), safe_open(str(file), framework="pt", device=_safetensors_device(device)) as f:
            for name in f.keys():  # noqa: SIM118  (safe_open is not a dict)
                if name.startswith(IGNORED_PREFIXES):
                    continue
                if name not in expected:
                    unexpected.append(name)
                    continue
                tensor = _adapt(name, f.get_tensor(name), expected[name])
                if tensor.shape != expected[name]:
                    raise CheckpointError(
                        f"{file}: {name} has shape {tuple(tensor.shape)}, the model built from "
                        f"config.json expects {tuple(expected[name])}: config.json and the weights are of "
                        "two different models; download or copy the whole model folder again"
                    )
                if quantize != "none" and QUANTIZED_WEIGHT.fullmatch(name):
                    load_quantized_(model, name, tensor.to(dtype), quantize)
                    del tensor  # one full-precision projection at a time
                    loaded.add(name)
                    continue
                state[name] = tensor.to(dtype)
        model.load_state_dict(state, strict=False, assign=True)
        loaded.update(state)
    missing = sorted(set(expected) - loaded)
    if config.tie_word_embeddings and missing == ["lm_head.weight"]:  # tied: the head is the embedding
        model.lm_head.weight = model.model.embed_tokens.weight
        missing = []
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint {folder} does not fit the model: missing {missing[:5]} ({len(missing)} in all), "
            f"unexpected {unexpected[:5]} ({len(unexpected)} in all); it is not a whole PURE (Lumina-mGPT) "
            "checkpoint: download or copy the model folder again, or pass the model folder of one"
        )
    model.model.rotary_emb = ChameleonRotaryEmbedding(config).to(device)
    return model.eval()


@contextmanager
def _readable(file: Path):
    """Turn safetensors' errors while ``file`` is read (a truncated or damaged download) into one
    :class:`CheckpointError` that names the file and the fix."""
    try:
        yield
    except (SafetensorError, OSError) as err:
        reason = " ".join(str(err).split())
        raise CheckpointError(
            f"{file} is not a readable safetensors file ({reason}): it is damaged or incomplete; "
            "download or copy it again"
        ) from err


ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")  # peft's file names (.bin: older peft)


def check_lora_config(folder: str | Path) -> None:
    """Refuse, before the backbone loads, an adapter folder whose ``adapter_config.json`` is not a peft LoRA
    config (damaged, a model's ``config.json`` copied in its place, or another peft method's) or that has no
    weights file. peft fails on those only after the backbone has loaded, with a traceback (``KeyError:
    'peft_type'``) or a message about hub repository ids.

    Raises :class:`CheckpointError` naming the file and the fix.
    """
    file = Path(folder) / "adapter_config.json"
    if broken := broken_links([file, *(file.parent / name for name in ADAPTER_WEIGHTS)]):
        raise CheckpointError(
            f"adapter folder {file.parent} holds links to files that do not exist ({broken}): {LINKS_FIX}"
        )
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise CheckpointError(
            f"{file} cannot be read ({error_reason(err, 300)}); copy the adapter folder again or pass "
            "another checkpoint's adapter/"
        ) from err
    kind = config.get("peft_type") if isinstance(config, dict) else None
    if kind != "LORA":
        found = f"peft_type {kind!r}" if kind is not None else "it has no peft_type"
        raise CheckpointError(
            f"{file} is not a LoRA adapter's config ({found}); pass the adapter/ folder of a checkpoint that "
            "scripts/train.py wrote with LoRA (outputs/RUN/checkpoints/step-NNNNNN/adapter)"
        )
    weights = next((file.parent / name for name in ADAPTER_WEIGHTS if (file.parent / name).is_file()), None)
    if weights is None:
        raise CheckpointError(
            f"{file.parent} has no {ADAPTER_WEIGHTS[0]}: the adapter is incomplete (an interrupted copy?); "
            "copy the adapter folder again or pass another checkpoint's adapter/"
        )
    _check_adapter_weights(weights)


def _check_adapter_weights(weights: Path) -> None:
    """Read what peft will read of ``weights`` (the first of :data:`ADAPTER_WEIGHTS` there): a safetensors
    header (a cut file fails there), or an older peft's pickled ``.bin`` whole, as peft loads it
    (``weights_only``). peft's errors for a damaged ``.bin`` (torch's zip RuntimeError, UnpicklingError) came
    after the backbone had loaded, as tracebacks."""
    try:
        if weights.suffix == ".safetensors":
            with safe_open(str(weights), framework="pt"):
                return
        torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as err:  # safetensors, zip and unpickling errors come in many types
        reason = error_reason(err, 300) if weights.suffix == ".safetensors" else torch_load_reason(err)
        raise CheckpointError(
            f"{weights} cannot be read ({reason}); copy the adapter folder again (a damaged or cut copy?) or "
            "pass another checkpoint's adapter/"
        ) from err


def merge_lora_adapter(model: PureChameleon, adapter: str | Path) -> PureChameleon:
    """``model`` with the peft LoRA adapter in the folder (or hub repo) ``adapter`` merged into its weights.

    Raises :class:`CheckpointError`, naming the folder, when the adapter's weights are unreadable or were
    trained on another backbone (shapes differ, layers of this model have no weights in the adapter, or
    weights of the adapter fit no layer of this model: peft drops those without a word).
    """
    with quiet_peft():
        from peft import PeftConfig, PeftModel

        try:  # PeftModel.from_pretrained's two steps, keeping the load's result (from_pretrained drops it)
            config = PeftConfig.from_pretrained(str(adapter))
            config.inference_mode = True
            lora = PeftModel(model, config)
            loaded = lora.load_adapter(str(adapter), "default")
        except (SafetensorError, OSError, ValueError, RuntimeError) as err:
            reason = _adapter_misfit(str(err))
            if reason is not None:
                raise AdapterMisfitError(adapter, reason) from err
            if not isinstance(err, (SafetensorError, OSError, ValueError)):
                raise  # a RuntimeError about something else
            if not Path(adapter).exists():  # a hub repository id that could not be fetched (offline?)
                raise CheckpointError(
                    f"adapter {adapter} is not a folder here and could not be fetched from the Hugging Face "
                    f"Hub ({error_reason(err, 200)}); on a machine with internet access: hf download "
                    f"{adapter} --local-dir models/{adapter}, then pass --adapter models/{adapter}"
                ) from err
            raise CheckpointError(  # ValueError: a missing or damaged config
                f"adapter {adapter}: its files cannot be read ({error_reason(err, 300)}); copy the "
                "adapter folder again or pass another checkpoint's adapter/"
            ) from err
        if loaded.missing_keys or loaded.unexpected_keys:
            raise AdapterMisfitError(adapter, unfitting_weights(loaded.missing_keys, loaded.unexpected_keys))
        return lora.merge_and_unload()


class AdapterMisfitError(CheckpointError):
    """A LoRA adapter trained on another backbone than the one it is given to."""

    def __init__(self, adapter: str | Path, reason: str) -> None:
        super().__init__(
            f"adapter {adapter} does not fit this backbone ({reason}); it was trained on another model: "
            "pass the backbone it was trained on (backbone.source, as in its checkpoint's config.yaml)"
        )


def unfitting_weights(missing: Sequence[str], unexpected: Sequence[str]) -> str:
    """A load's ``missing`` keys (layers of this model without weights in the adapter) and ``unexpected``
    ones (the adapter's weights that fit no layer here) -> a short reason: how many of each, one example."""
    reasons = []
    for names, what in (
        (missing, "adapter weights of this backbone's layers are not in it"),
        (unexpected, "of its weights fit no layer of this backbone"),
    ):
        if names:
            reasons.append(f"{len(names)} {what}, e.g. {names[0].removeprefix('base_model.model.')}")
    return "; ".join(reasons)


def _adapter_misfit(message: str) -> str | None:
    """peft's and torch's long error for an adapter of another backbone -> a short reason; None if the
    message is about something else. Two errors: torch's size mismatch (same layers, other sizes), and peft's
    target modules not found (an adapter of another architecture, e.g. ``query_key_value``), which peft
    raises as a ValueError like a damaged config's."""
    targets = re.search(r"Target modules (.+?) not found in the base model", message)
    if targets:
        return f"its target modules {targets[1]} name no layer of this backbone"
    shape = r"torch\.Size\(\[([^\]]*)\]\)"
    found = re.search(
        rf"size mismatch for ([\w.]+): copying a param with shape {shape} from checkpoint, "
        rf"the shape in current model is {shape}",
        message,
    )
    if found:
        name, theirs, ours = found.groups()
        return f"{name.removeprefix('base_model.model.')} is [{theirs}] in the adapter, [{ours}] here"
    return None


def load_text_side(source: str | Path = DEFAULT_SOURCE, revision: str = "main") -> tuple[object, Vocab]:
    """(text tokenizer, :class:`Vocab`) of a checkpoint: what every command loads before it tokenises.

    Raises :class:`CheckpointError` when the source cannot be found, :class:`VocabError` when the
    tokenizer lacks a BOS token or image names.
    """
    folder = resolve_source(str(source), revision)
    tokenizer = load_tokenizer(str(folder))
    return tokenizer, load_vocab(tokenizer, str(folder))


TOKENIZER_JSON = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def load_tokenizer(source: str = DEFAULT_SOURCE, revision: str = "main"):
    """The text tokenizer of a checkpoint (``AutoTokenizer`` over the same folder or repo)."""
    from transformers import AutoTokenizer

    folder = resolve_source(source, revision)
    for name in TOKENIZER_JSON:  # transformers would raise json's bare JSONDecodeError
        if (folder / name).is_file():
            _json_object(folder / name)
    try:
        return AutoTokenizer.from_pretrained(str(folder))
    except (OSError, ValueError) as err:  # no tokenizer files, or files it cannot use: a multi-line error
        raise CheckpointError(
            f"the tokenizer in {folder} cannot be loaded ({error_reason(err)}); a model folder "
            "needs its tokenizer files (tokenizer.json, tokenizer_config.json) beside config.json: copy the "
            "whole model folder again"
        ) from err


def load_vocab(tokenizer, source: str = DEFAULT_SOURCE, revision: str = "main") -> Vocab:
    """The :class:`Vocab` of a checkpoint: special ids from its tokenizer, image names from whichever
    of the tokenizer, ``text_tokenizer.json`` or ``config.json``'s ``vocabulary_map`` lists all 16,384."""
    names = dict(tokenizer.get_vocab())
    if sum(n.startswith(IMAGE_PREFIX) for n in names) < CODEBOOK_SIZE:
        names.update(image_names_from_files(resolve_source(source, revision)))
    bos = tokenizer.bos_token_id
    if bos is None:  # tokenizer.json holds the tokens; tokenizer_config.json (or, older, the map) names BOS
        folder = resolve_source(source, revision)
        named = [n for n in ("tokenizer_config.json", "special_tokens_map.json") if (folder / n).is_file()]
        where = "tokenizer_config.json, naming it, is missing"
        if named:
            where = f"{' and '.join(named)} {'name' if len(named) > 1 else 'names'} none"
        raise VocabError(
            f"the tokenizer of {source} has no BOS token ({where}): copy the model folder's tokenizer files "
            "(tokenizer.json, tokenizer_config.json) again"
        )
    return Vocab.from_names(names, bos=bos, size=max(len(tokenizer), max(names.values()) + 1))


def pick_device(name: str, default: torch.device | None = None) -> torch.device:
    """The one device rule of every command: ``auto`` -> ``default`` when given (accelerate's device for
    this process), else CUDA when available, else CPU; ``cpu``, ``cuda`` and ``cuda:N`` as given.

    Raises :class:`PureError` for ``cuda`` when no CUDA device is visible.
    """
    if name == "auto":
        if default is not None:
            return default
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise PureError(f"device={name!r} is not a device: use auto, cpu, cuda or cuda:N") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise PureError(
            f"device={name} but no CUDA device is visible: use auto or cpu (--device auto, or device=auto)"
        )
    return device


def backbone_folder(cfg: BackboneConfig) -> Path:
    """The checkpoint folder for ``cfg``: resolved from the hub or disk, or a cached tiny model.

    Tiny models (``source: tiny``) are written once per size and seed under ``$PURE_CACHE``
    (default ``~/.cache/pure``), atomically, so parallel processes share one copy.
    """
    if cfg.source != "tiny":
        return resolve_source(cfg.source, cfg.revision)
    tiny = cfg.tiny
    sizes = dict(
        hidden_size=tiny.hidden_size,
        intermediate_size=tiny.intermediate_size,
        num_layers=tiny.num_layers,
        num_heads=tiny.num_heads,
    )
    key = hashlib.sha1(repr((tiny.seed, sorted(sizes.items()))).encode()).hexdigest()[:12]
    cache = Path(os.environ.get("PURE_CACHE") or Path.home() / ".cache" / "pure") / f"tiny-{key}"  # '': unset
    if not (cache / "model.safetensors.index.json").is_file():
        scratch = None
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            scratch = Path(tempfile.mkdtemp(dir=cache.parent, prefix=".tiny-"))
            write_tiny_checkpoint(scratch, seed=tiny.seed, **sizes)
        except BaseException as err:  # nothing half-written is left
            if scratch is not None:
                shutil.rmtree(scratch, ignore_errors=True)
            if not isinstance(err, OSError):
                raise
            raise CheckpointError(
                f"cannot write the tiny model into {cache.parent} ({err.strerror or err}): "
                "set PURE_CACHE to a folder you can write in"
            ) from err
        try:
            scratch.rename(cache)
        except OSError:  # another process finished first
            shutil.rmtree(scratch, ignore_errors=True)
    return cache


def describe_source(folder: Path) -> str:
    """A model folder's revision for sidecars: the hub snapshot hash, or the folder path."""
    return f"{folder.parent.parent.name}@{folder.name}" if folder.parent.name == "snapshots" else str(folder)


def load_for_training(
    backbone: BackboneConfig, device: str | torch.device, dtype: torch.dtype, vocab_size: int
) -> tuple[PureChameleon, range]:
    """The backbone on ``device`` in ``dtype``, its vocabulary extended to ``vocab_size`` rows.

    Returns the model and the range of rows the extension added (empty when the checkpoint already
    has them); transformers initialises new rows from the mean and covariance of the old ones.
    """
    model = load_backbone(str(backbone_folder(backbone)), device=device, dtype=dtype)
    old = model.get_input_embeddings().num_embeddings
    if vocab_size > old:
        model.resize_token_embeddings(vocab_size)
    return model, range(old, max(old, vocab_size))


def enable_activation_checkpointing(model: PureChameleon) -> None:
    """Recompute each decoder layer's activations in the backward pass instead of storing them (non-reentrant
    ``torch.utils.checkpoint``). transformers 5.2x names this ``activation_checkpointing_enable``; earlier
    5.x releases (5.17 on the lent GPU machines) only ``gradient_checkpointing_enable``."""
    enable = getattr(model, "activation_checkpointing_enable", None)
    if enable is not None:
        enable({"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
