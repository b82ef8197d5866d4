"""One typed schema for every script, merged with a YAML file and ``key=value`` overrides.

The dataclasses below hold every setting and its default. A YAML file and command-line
overrides may only *override* fields that exist here, with values of the right type:

    cfg = load_config(InferConfig, "configs/tiny.yaml", ["sampling.cfg_scale=1.0"])

Each component receives only its own slice (``cfg.sampling``, ``cfg.vq``, ...).
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import inspect
import json
import math
import re
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from pure.errors import PureError, from_here

T = TypeVar("T")


class ConfigError(PureError, ValueError):
    """A YAML file or an override does not fit the schema."""


class UnknownKeyError(ConfigError):
    """A key the schema does not have (the file may be another script's)."""


def choice(default: str, *allowed: str):
    """A closed-choice field: ``default``, one of ``allowed`` (checked once, by :func:`load_config`)."""
    return field(default=default, metadata={"choices": (default, *allowed)})


def at_least(default: int | float, low: int | float, multiple_of: int | None = None, hint: str = ""):
    """A numeric field that must be ``>= low`` (and a multiple of ``multiple_of`` when given; checked once,
    by :func:`load_config`); ``hint`` follows the error (what the user may have meant)."""
    return field(default=default, metadata={"min": low, "multiple_of": multiple_of, "hint": hint})


def between(default: int | float, low: int | float, high: int | float):
    """A numeric field in ``[low, high]`` (checked once, by :func:`load_config`)."""
    return field(default=default, metadata={"min": low, "max": high})


SEED_LIMIT = 2**62
"""Sampling seeds lie in [-2^62, 2^62]: tile i draws with seed + i as a 64-bit integer."""


def auto_or_at_least(default: int | str, low: int):
    """An integer field that must be ``>= low``, or the word ``auto`` (checked by :func:`load_config`)."""
    return field(default=default, metadata={"min": low, "auto": True})


DEVICE_CHOICES = ("auto", "cpu", "cuda", "cuda:N")
"""What a ``device`` field accepts (``cuda:N``: any GPU index)."""
RENAMED = {
    "backbone.hidden_size": "backbone.tiny.hidden_size",
    "backbone.intermediate_size": "backbone.tiny.intermediate_size",
    "backbone.num_layers": "backbone.tiny.num_layers",
    "backbone.num_heads": "backbone.tiny.num_heads",
    "backbone.seed": "backbone.tiny.seed",
}
"""Keys that moved: an old key in a YAML file or override raises a "renamed" error naming the new one."""


@dataclass
class VQConfig:
    """The LlamaGen VQ-8 image tokenizer."""

    source: str = "FoundationVision/LlamaGen:vq_ds8_c2i.pt"
    """Checkpoint: a local ``.pt`` file (or its state dict as ``.safetensors``), a Hugging Face
    ``repo_id:filename``, or ``tiny`` (random weights)."""
    seed: int = between(0, 0, 2**32 - 1)
    """Seed of the deterministic weights when ``source`` is ``tiny`` (0 to 2^32 - 1)."""
    channels: int = at_least(128, 32, multiple_of=32)
    """Base channel count of encoder and decoder (128 in the released VQ-8; a multiple of 32, the group
    norms' groups)."""
    channel_mult: list[int] = field(default_factory=lambda: [1, 2, 2, 4])
    """Channel multiplier per resolution level; len - 1 downsamplings: four levels (8x), the one code per
    8x8 pixels of PURE's image layout."""
    z_channels: int = at_least(256, 1)
    """Channels of the encoder output before ``quant_conv``."""
    codebook_size: int = 16384
    """Number of codebook entries: 16,384, the image tokens of PURE's vocabulary (no other size fits)."""
    codebook_dim: int = at_least(8, 1)
    """Dimension of each (L2-normalised) codebook entry."""
    num_res_blocks: int = at_least(2, 1)
    """Residual blocks per encoder level (the decoder has one more)."""


@dataclass
class TinyBackboneConfig:
    """The random Chameleon built for tests and CPU trials (``backbone.source: tiny``); full vocabulary."""

    seed: int = between(0, 0, 2**32 - 1)
    """Seed of the deterministic weights (0 to 2^32 - 1)."""
    hidden_size: int = at_least(64, 8)
    """Hidden size."""
    intermediate_size: int = at_least(128, 8)
    """MLP size."""
    num_layers: int = at_least(2, 1)
    """Decoder layers."""
    num_heads: int = at_least(4, 1)
    """Attention heads (must divide ``hidden_size``)."""


@dataclass
class BackboneConfig:
    """The Chameleon/Lumina-mGPT transformer and its text tokenizer."""

    source: str = "nonwhy/PURE"
    """Hugging Face repo id, local folder (config.json + safetensors), or ``tiny`` (random weights)."""
    revision: str = "main"
    """Hub revision (branch, tag or commit) when ``source`` is a repo id."""
    adapter: str = ""
    """Optional LoRA adapter folder (peft format) applied on top of the backbone."""
    quantize: str = choice("none", "int8", "int4")
    """Weight-only quantisation of the decoder's linear layers at load time (pure/quantize.py): none, int8
    (about half the weight memory; any device) or int4 (about a third; CUDA needs bfloat16 and compute
    capability 8.0+). Embeddings, output head and norms keep the model dtype. Inference only."""
    tiny: TinyBackboneConfig = field(default_factory=lambda: TinyBackboneConfig())
    """Sizes and seed of the random model built when ``source`` is ``tiny`` (ignored otherwise)."""


@dataclass
class SamplingConfig:
    """PURE's sampler (SPEC section 5); defaults are the reference's."""

    cfg_scale: float = at_least(0.8, 0.0)
    """Classifier-free guidance g in ``g * (cond - uncond) + uncond``, at least 0 (0: the unconditional
    row alone); 1.0 disables guidance."""
    temperature: float = at_least(
        0.9, 1e-6, hint="for greedy decoding set sampling.image_top_k_max=1; text is greedy already"
    )
    """Softmax temperature applied after top-k."""
    text_top_k: int = at_least(1, 1)
    """Top-k for text tokens (1 = greedy text, as PURE)."""
    image_top_k_min: int = at_least(1, 1)
    """Smallest k of the entropy-adaptive top-k inside an image."""
    image_top_k_max: int = at_least(2000, 1)
    """Largest k of the entropy-adaptive top-k inside an image."""
    max_new_tokens: int = at_least(8192, 1)
    """Token budget of one answer."""
    seed: int = between(0, -SEED_LIMIT, SEED_LIMIT)
    """Seed of the sampling generator; tile i of every image uses seed + i (|seed| <= 2^62)."""


@dataclass
class RestoreConfig:
    """How an image is prepared for the model and put back together."""

    outscale: float = at_least(4.0, 1e-6)
    """Output scale relative to the input (any float > 0)."""
    tile: int = at_least(512, 32, multiple_of=32)
    """Model tile size in pixels (a multiple of 32; the released model works at 512)."""
    tile_overlap: int = at_least(64, 0)
    """Overlap between neighbouring tiles, in output pixels (less than ``tile``)."""
    batch_size: int | str = auto_or_at_least(1, 1)
    """Tiles restored together in one batched generation, or auto: the most whose KV cache fits in the
    device's free memory (pure/memory.py); an out-of-memory batch is halved and retried."""
    color_fix: str = choice("wavelet", "adain", "none")
    """Colour correction against the bicubic upsampled input: wavelet, adain or none."""
    caption: str = ""
    """Optional opening of the text answer, which the model continues and which steers restoration: the
    degradation sentence, then the description (``Slight blur, mild noise. A cat on a mat.``); its first
    sentence is recorded as the degradation. Empty: the model writes the whole answer."""
    max_text_tokens: int = at_least(512, 0)
    """Text tokens an answer may write before its image is opened (the image size is always the tile's)."""
    compile: str = choice("auto", "on", "off")
    """Capture each decoding step as a CUDA graph: auto (on CUDA), on, off. CPU runs are always eager;
    the tokens are the same either way."""
    speculative: str = choice("none", "jacobi", "lq", "lq+jacobi")
    """Speculative decoding of the image (pure/speculative.py): drafts from the previous forward (jacobi),
    from the LQ image's code at the same position (lq), or both, verified so that the output follows plain
    decoding's distribution (a seed gives other tokens than with none). Text is always decoded plainly."""
    draft_len: int = at_least(8, 1)
    """Drafted tokens verified per forward when ``speculative`` is not none."""
    kv_cache: str = choice("model", "int8")
    """How the KV cache stores keys and values (pure/kv_cache.py): model (the model's dtype, exact) or int8
    (8-bit codes with a scale per token and head: about half the cache memory, so a 512 px tile on the 7B
    needs 3.25 instead of 6.40 GiB; not exact: a seed gives other images, see the README's quality guard)."""


@dataclass
class InferConfig:
    """Settings of ``scripts/infer.py``."""

    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    """The transformer."""
    vq: VQConfig = field(default_factory=VQConfig)
    """The image tokenizer."""
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    """The sampler."""
    restore: RestoreConfig = field(default_factory=RestoreConfig)
    """Tiling, scale and colour fix."""
    device: str = choice("auto", "cpu", "cuda", "cuda:N")
    """Device: auto (CUDA when available), cpu, cuda, cuda:N."""
    dtype: str = choice("bfloat16", "float16", "float32")
    """Backbone dtype on the GPU: bfloat16, float16 or float32 (CPU always uses float32)."""
    models: str = ""
    """Folder written by ``scripts/download.py`` (``DIR/<repo id>/...``): hub sources are read from it when it
    holds them, else from the Hugging Face cache or the hub."""


def setting_notes(cfg: InferConfig, on_cpu: bool) -> list[str]:
    """Notes on settings in ``cfg`` (``on_cpu``: whether it runs on the CPU), one line each. Settings that
    change nothing in this run: ``restore.draft_len`` changed from its default while ``restore.speculative``
    is none, ``restore.compile=on`` or ``dtype`` other than its default on the CPU (CPU runs are eager, in
    float32). And a ``restore.tile`` other than 512 with a real backbone: the released model was trained
    on 512 px tiles (128 px LQ upsampled to 512 px; SPEC section 6), so other sizes are untested with it."""
    notes = []
    if cfg.restore.speculative == "none" and cfg.restore.draft_len != RestoreConfig().draft_len:
        notes.append(
            "restore.draft_len (--draft-len) has no effect without --speculative (restore.speculative)"
        )
    if cfg.restore.compile == "on" and on_cpu:
        notes.append("restore.compile=on has no effect on the CPU: CPU runs are always eager (same tokens)")
    if cfg.dtype != InferConfig().dtype and on_cpu:
        notes.append(f"dtype={cfg.dtype} (--dtype) has no effect on the CPU: CPU runs are always float32")
    if cfg.restore.tile != RestoreConfig().tile and cfg.backbone.source != "tiny":
        notes.append(
            f"restore.tile={cfg.restore.tile} (--tile): the released model was trained on 512 px tiles; "
            "other tile sizes are untested with it (the output may be worse)"
        )
    return notes


def load_config(
    schema: type[T],
    yaml_path: str | Path | Sequence[str | Path] | None = None,
    overrides: list[str] | None = None,
    flags: Mapping[str, str] | None = None,
) -> T:
    """Return ``schema``'s defaults overridden by YAML files (one path or several, later ones win), then by
    ``flags``, then by ``key=value`` strings, as a ``schema`` instance (real dataclasses all the way down).

    ``flags``: the ``key=value`` items a script's flags make, each with the flag as the user typed it
    (``{"restore.outscale=0.0": "--outscale 0"}``), so that an error about its value names the flag.

    Unknown keys, values of the wrong type, closed choices outside their list and numbers below their
    minimum raise :class:`ConfigError` naming the key and the file (or the override, or the flag) it came
    from; a key that moved (:data:`RENAMED`) names its new place.
    """
    cfg: DictConfig = OmegaConf.structured(schema)
    OmegaConf.set_struct(cfg, True)
    flags = flags or {}
    for origin, part in _sources(schema, yaml_path, flags, overrides or []):
        for key in _dotted_keys(OmegaConf.to_container(part)):
            if key in RENAMED:
                raise ConfigError(f"{origin}: {key} was renamed to {RENAMED[key]}; use the new key")
            _unbool(part, key, schema, origin)
            _unfloat(part, key, schema, origin)
        try:
            cfg = OmegaConf.merge(cfg, part)
        except OmegaConfBaseException as err:
            raise _misfit_error(err, part, schema, origin) from err
    try:
        result = OmegaConf.to_object(cfg)
    except OmegaConfBaseException as err:  # e.g. a ${...} interpolation that names no key
        key = getattr(err, "full_key", None) or "?"
        reason = str(err).splitlines()[0]
        raise ConfigError(f"{key}: {reason} (write \\${{ for a literal ${{)") from err
    check_fields(result, flags={item.partition("=")[0].strip(): flag for item, flag in flags.items()})
    return result  # type: ignore[return-value]


def _sources(
    schema: type, yaml_path, flags: Mapping[str, str], overrides: list[str]
) -> list[tuple[str, DictConfig]]:
    """The parts :func:`load_config` merges, in order, each with its origin for messages: the YAML files,
    then the flags' items (origin: the flag as typed), then the overrides (origin: ``override 'k=v'``)."""
    sources: list[tuple[str, DictConfig]] = []
    paths = [] if yaml_path is None else [yaml_path] if isinstance(yaml_path, (str, Path)) else yaml_path
    for path in map(Path, paths):
        sources.append((str(path), _read_yaml(path)))
    for item, flag in [*flags.items(), *((item, "") for item in overrides)]:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, _, text = item.partition("=")
        key, item = key.strip(), f"{key.strip()}={text}"  # ' restore.tile = 64': the key without its spaces
        origin = flag or f"override {item!r}"
        if _field_type(schema, key) == "str" and not _quoted(text):
            # a text setting takes the text as typed: YAML would read no/on/yes/off as booleans and an
            # empty value as null (caption.manifest= is an empty text, as in a shell key='')
            part = OmegaConf.create()
            OmegaConf.update(part, key, text)
            sources.append((origin, part))
            continue
        try:
            sources.append((origin, OmegaConf.from_dotlist([item])))
        except Exception as err:  # the value is parsed as YAML: its errors come in several types
            reason = str(err).splitlines()[0]
            raise ConfigError(f"{origin}: not a valid YAML value ({reason}); quote it") from err
    return sources


def _misfit_error(err: OmegaConfBaseException, part: DictConfig, schema: type, origin: str) -> ConfigError:
    """The one-line :class:`ConfigError` for a ``part`` (from ``origin``) that OmegaConf would not merge
    into ``schema``: an unknown key (with the nearest known one), a value where a group of settings
    belongs, a single value for a list, an empty value (null), or a value of the wrong type."""
    if isinstance(err, ConfigKeyError):
        key = _misfit(OmegaConf.to_container(part), schema, getattr(err, "full_key", None) or "")[0]
        return UnknownKeyError(f"{origin}: no key {key!r} in {schema.__name__}{_suggest(key, schema)}")
    key, section = _misfit(OmegaConf.to_container(part), schema, getattr(err, "full_key", None) or "")
    reason = str(err).splitlines()[0]
    if section:  # a value where a group of settings belongs (backbone=tiny)
        example = _leaves(schema, key)
        reason = f"{key} is a group of settings ({', '.join(example[:4])}, ...); set one of them"
        if origin.startswith("override"):
            reason += f", e.g. {example[0]}=..."
        else:  # a file: YAML's nesting, and `restore:` with nothing indented below it is null
            empty = " (here nothing is indented below it)" if OmegaConf.select(part, key) is None else ""
            reason += f" indented below '{key}:'{empty}, e.g. '  {example[0].rsplit('.', 1)[-1]}: ...'"
    elif _field_type(schema, key) == "list" and "is not a ListConfig" in reason:
        value = OmegaConf.select(part, key)
        written = f"{key}=[{value}]" if origin.startswith("override") else f"{key}: [{value}]"
        reason = f"{key} is a list: write {written} (several: [a, b])"
    elif "Incompatible value 'None'" in reason:
        reason += (
            f" (write {key.rsplit('.', 1)[-1]}: '' for an empty text)"
            if _field_type(schema, key) == "str"
            else (
                " (an override with nothing after its = is null: give it a value or leave it out)"
                if origin.startswith("override")
                else " (a key with nothing after its colon is null: give it a value or delete it)"
            )
        )
    return ConfigError(f"{origin}: bad value for {key!r} in {schema.__name__}: {reason}")


def check_config_file(path: str | Path) -> None:
    """Refuse a ``--config`` that is a folder or is not there, with :class:`ConfigError`: a relative one
    names the current folder it was looked for in, and a shipped config (``configs/tiny.yaml``) typed
    outside the checkout names the checkout to run from."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"--config {path} is a folder; pass a YAML file, e.g. configs/tiny.yaml")
    if not path.is_file():
        checkout = Path(__file__).resolve().parents[1]  # configs/... typed outside the checkout
        shipped = not path.is_absolute() and (checkout / path).is_file()
        hint = f"; it is in the checkout: run from {checkout} (the shipped configs' paths are read from it)"
        raise ConfigError(f"config file not found: {from_here(path)}{hint if shipped else ''}")


def _read_yaml(path: Path) -> DictConfig:
    """The settings in the YAML file ``path``; :class:`ConfigError` if missing, a folder or malformed."""
    check_config_file(path)
    try:
        loaded = OmegaConf.load(path)
    except Exception as err:  # YAML syntax errors come in several types
        reason = " ".join(str(err).split())
        tab = "\t" in path.read_text(encoding="utf-8", errors="replace")
        hint = "; YAML indents with spaces, never tabs: replace the tabs" if tab else ""
        if isinstance(err, UnicodeDecodeError):  # e.g. UTF-16, what Windows PowerShell 5's > writes
            hint = "; save it as UTF-8 text"
        raise ConfigError(f"{path}: not valid YAML ({reason}){hint}") from err
    if not isinstance(loaded, DictConfig):
        raise ConfigError(f"{path}: the file must hold settings as key: value lines, not a list")
    return loaded


ALIASES = {
    "learning_rate": "optim.lr",
    "lr": "optim.lr",
    "weight_decay": "optim.weight_decay",
    "lora.r": "lora.rank",
    "lora_r": "lora.rank",
    "lora_rank": "lora.rank",
    "lora_alpha": "lora.alpha",
    "lora_dropout": "lora.dropout",
    "num_train_epochs": "epochs",
    "per_device_train_batch_size": "batch_size",
    "gradient_accumulation_steps": "grad_accum",
    "scale": "restore.outscale",
    "outscale": "restore.outscale",
    "tile": "restore.tile",
    "cfg_scale": "sampling.cfg_scale",
    "temperature": "sampling.temperature",
    "seed": "sampling.seed",
}
"""Names other tools (transformers' Trainer, peft, Real-ESRGAN) give settings, and ours; suggested when
typed as keys (only where the schema has the target)."""


SCRIPTS = {
    "InferConfig": "scripts/infer.py",
    "PrepareConfig": "scripts/prepare_data.py",
    "TrainConfig": "scripts/train.py",
}
"""The script each top-level schema configures (named when a key of one is given to another)."""


def _schema_tree(schema: type) -> dict:
    return OmegaConf.to_container(OmegaConf.structured(schema))


def is_section(schema: type, key: str) -> bool:
    """Whether the dotted ``key`` names a group of settings in ``schema`` (``restore``, ``backbone.tiny``),
    into which a mapping given to it is merged."""
    node: object = _schema_tree(schema)
    for name in key.split("."):
        node = node.get(name) if isinstance(node, dict) else None
    return isinstance(node, dict)


def _misfit(part: object, schema: type, hint: str) -> tuple[str, bool]:
    """The dotted key of ``part`` (a YAML file's or an override's settings) that does not fit ``schema``,
    and whether it is a value given where a group of settings belongs. ``hint``: OmegaConf's key for the
    error, used when nothing else is found (it names only the section of an unknown nested key)."""

    def walk(given: object, known: dict, prefix: str) -> tuple[str, bool] | None:
        for name, value in given.items() if isinstance(given, dict) else ():
            key = prefix + str(name)
            if name not in known:
                leaves = [k for k in _dotted_keys(value, key + ".") if not k.endswith(".")]
                return (leaves[-1] if leaves else key), False
            if isinstance(known[name], dict) and known[name]:
                if not isinstance(value, dict):
                    return key, True
                found = walk(value, known[name], key + ".")
                if found:
                    return found
        return None

    found = walk(part, _schema_tree(schema), "")
    if found and (not hint or found[0] == hint or found[0].startswith(hint + ".")):
        return found
    return hint or "?", False


def _leaves(schema: type, section: str) -> list[str]:
    """The dotted setting keys inside ``section`` of ``schema``."""
    every = _dotted_keys(_schema_tree(schema))
    inside = [k for k in every if k.startswith(section + ".")]
    return [k for k in inside if not any(other.startswith(k + ".") for other in every)]


def _quoted(text: str) -> bool:
    """Whether an override's value is one YAML quoted scalar (``'...'`` or ``"..."``)."""
    return len(text) >= 2 and text[0] == text[-1] and text[0] in "'\""


YAML_TRUE, YAML_FALSE = ("on", "yes", "true", "y"), ("off", "no", "false", "n")
"""Words YAML 1.1 (PyYAML, hence OmegaConf) reads as booleans in a file: ``compile: on`` is True."""


def _unbool(part: DictConfig, key: str, schema: type, origin: str) -> None:
    """Give a text setting that YAML read as a boolean its word back: the one word of the field's closed
    choice that reads so (``restore.compile: on``, ``mixed_precision: no``). Elsewhere (a free text, or no
    such word among the choices) raise :class:`ConfigError` asking for quotes: the word typed is lost."""
    value = OmegaConf.select(part, key, throw_on_missing=False, throw_on_resolution_failure=False)
    if not isinstance(value, bool) or _field_type(schema, key) != "str":
        return
    allowed = _field(schema, key).metadata.get("choices", ())
    words = [w for w in allowed if w.lower() in (YAML_TRUE if value else YAML_FALSE)]
    if len(words) == 1:
        OmegaConf.update(part, key, words[0])
        return
    expected = f" (one of {', '.join(allowed)})" if allowed else ""
    raise ConfigError(
        f"{origin}: {key} is a text{expected}, but YAML reads an unquoted yes/no/on/off/true/false as "
        f"{value}; quote the word, e.g. {key.rsplit('.', 1)[-1]}: 'yes'"
    )


def _unfloat(part: DictConfig, key: str, schema: type, origin: str) -> None:
    """Give an integer setting written as a whole float its integer (``max_steps: 1e3``, ``1000.0``: YAML
    reads both as floats); raise :class:`ConfigError` naming the key for a fraction, which has none. nan and
    inf are left to the merge, which refuses them as no integer. A setting that takes an integer or ``auto``
    (``restore.batch_size``) follows the same rules, and takes a quoted number as an integer setting does."""
    value = OmegaConf.select(part, key, throw_on_missing=False, throw_on_resolution_failure=False)
    auto = getattr(_field(schema, key), "metadata", {}).get("auto", False)
    if auto and isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
        OmegaConf.update(part, key, int(value))  # batch_size: "4", as tile: "64" is 64
        return
    if (
        not isinstance(value, float)
        or not math.isfinite(value)
        or not (auto or _field_type(schema, key) == "int")
    ):
        return
    if not value.is_integer():
        low, high = math.floor(value), math.ceil(value)
        raise ConfigError(f"{origin}: {key} is a whole number, not {value!r}; write {low} or {high}")
    OmegaConf.update(part, key, int(value))


def _field(schema: type, key: str) -> dataclasses.Field | None:
    """The dataclass field of the dotted ``key`` in ``schema``; None if there is none."""
    head, _, rest = key.partition(".")
    fields = {f.name: f for f in dataclasses.fields(schema)}
    if head not in fields:
        return None
    if not rest:
        return fields[head]
    kind = typing.get_type_hints(schema).get(head)
    return _field(kind, rest) if dataclasses.is_dataclass(kind) else None


def _field_type(schema: type, key: str) -> str:
    """The annotation of the dotted ``key`` in ``schema``, as written (``"int"``, ``"str"``); "" if none."""
    fields = {f.name: f for f in dataclasses.fields(schema)}
    head, _, rest = key.partition(".")
    if head not in fields:
        return ""
    kind = typing.get_type_hints(schema).get(head)
    if rest:
        return _field_type(kind, rest) if dataclasses.is_dataclass(kind) else ""
    return getattr(kind, "__name__", str(kind))


def _suggest(key: str, schema: type) -> str:
    """``; did you mean ...?`` for an unknown dotted ``key``: a known alias, keys of the schema ending in
    the same name (``lr`` -> ``optim.lr``), then close spellings among all keys; empty when none."""
    every = _dotted_keys(OmegaConf.to_container(OmegaConf.structured(schema)))
    # suggest settings, not sections
    keys = [k for k in every if not any(other.startswith(k + ".") for other in every)]
    last = key.rsplit(".", 1)[-1]
    found = [ALIASES[k] for k in (key, last) if ALIASES.get(k) in keys]
    found += [k for k in keys if k.rsplit(".", 1)[-1] == last]
    found += difflib.get_close_matches(key, keys, n=3, cutoff=0.6)
    close = difflib.get_close_matches(last, {k.rsplit(".", 1)[-1] for k in keys}, n=2, cutoff=0.75)
    found += [k for k in keys if k.rsplit(".", 1)[-1] in close]
    elsewhere = [
        script
        for name, script in SCRIPTS.items()
        if name != schema.__name__ and key in _dotted_keys(_schema_tree(globals()[name]))
    ]
    if elsewhere:  # a setting of another script (restore.tile given to train.py)
        this = SCRIPTS.get(schema.__name__, schema.__name__)
        return f"; {key} is a setting of {' and '.join(elsewhere)}, not of {this}"
    unique = list(dict.fromkeys(k for k in found if k != key))[:3]
    if unique:
        return f"; did you mean {' or '.join(unique)}?"
    similar = [  # the same name in another script's settings (max_images given to prepare_data.py)
        f"{script} has {other}"
        for name, script in SCRIPTS.items()
        if name != schema.__name__
        for other in _dotted_keys(_schema_tree(globals()[name]))
        if other.rsplit(".", 1)[-1] == last
    ]
    if similar:
        return f" ({'; '.join(similar[:2])}: a setting of another script)"
    return ""


def named(key: str, value: object, flags: Mapping[str, str] | None = None) -> str:
    """How an error names the setting ``key`` that holds ``value``: the flag as the user typed it when a
    flag set it (``flags``: dotted key -> ``--outscale 0``), else ``key=value`` (a YAML file's or an
    override's setting)."""
    return (flags or {}).get(key) or f"{key}={value!r}"


def check_fields(cfg: object, prefix: str = "", flags: Mapping[str, str] | None = None) -> None:
    """Check every :func:`choice` and :func:`at_least` field of the dataclass ``cfg``, recursively: the one
    place closed choices, minimums and finiteness (no float may be nan or inf) are validated. Raises
    :class:`ConfigError` (``key=value: ...``, or ``--flag value: ...`` for a key in ``flags``: see
    :func:`named`)."""

    def name(key: str, value: object = None) -> str:
        return named(prefix + key, getattr(cfg, key) if value is None else value, flags)

    for item in dataclasses.fields(cfg):
        key, value = prefix + item.name, getattr(cfg, item.name)
        if dataclasses.is_dataclass(value):
            check_fields(value, key + ".", flags)
        allowed = item.metadata.get("choices")
        if allowed is not None and not _is_choice(value, allowed):
            raise ConfigError(f"{name(item.name)}: expected one of {', '.join(allowed)}")
        if item.metadata.get("auto") and value != "auto" and not isinstance(value, int):
            raise ConfigError(f"{name(item.name)}: expected auto or an integer")
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{name(item.name)}: must be a finite number")
        low, high = item.metadata.get("min"), item.metadata.get("max")
        if low is not None and isinstance(value, int | float) and value < low:
            hint = item.metadata.get("hint")
            raise ConfigError(f"{name(item.name)}: must be at least {low}" + (f" ({hint})" if hint else ""))
        if high is not None and isinstance(value, int | float) and value > high:
            raise ConfigError(f"{name(item.name)}: must be at most {high}")
        multiple = item.metadata.get("multiple_of")
        if multiple and isinstance(value, int) and value % multiple:
            raise ConfigError(f"{name(item.name)}: must be a multiple of {multiple}")
    if isinstance(cfg, OptimConfig) and (len(cfg.betas) != 2 or not all(0 <= b < 1 for b in cfg.betas)):
        betas = name("betas", list(cfg.betas))
        raise ConfigError(f"{betas}: expected two values in [0, 1), e.g. [0.9, 0.95]")
    if isinstance(cfg, SamplingConfig) and cfg.image_top_k_min > cfg.image_top_k_max:
        raise ConfigError(
            f"{name('image_top_k_min')}: must be at most {name('image_top_k_max')} (the adaptive k lies "
            "between them)"
        )
    for schema, key, example in (
        (TrainConfig, "output_dir", "outputs/run1"),
        (PrepareConfig, "out_dir", "data/prepared/mine"),
    ):
        if isinstance(cfg, schema) and not str(getattr(cfg, key)).strip():  # e.g. output_dir=$OUT, OUT unset
            flag = (flags or {}).get(key, "").split(" ")[0]  # --out ''
            fix = f"{flag} {example}" if flag else f"{key}={example}"
            shown = f"{flag} ''" if flag else key
            raise ConfigError(f"{shown} is empty: name the folder to write into, e.g. {fix}")
    if isinstance(cfg, PrepareConfig) and any(not str(folder).strip() for folder in cfg.hq_dirs):
        # --hq-dir "$HQ" with HQ unset: the empty path is the current folder, searched recursively
        flag = "hq_dirs" in (flags or {})
        shown = "--hq-dir ''" if flag else f"hq_dirs={list(cfg.hq_dirs)}"
        fix = "--hq-dir data/hq" if flag else "hq_dirs=[data/hq]"
        raise ConfigError(
            f"{shown} names an empty folder, which would prepare every image below the current folder: "
            f"name the HQ folder, e.g. {fix}"
        )
    if isinstance(cfg, OptimConfig) and cfg.min_lr > cfg.lr:
        raise ConfigError(f"{name('min_lr')}: must be at most {name('lr')} (the cosine decays to it)")
    if isinstance(cfg, LoRAConfig) and not cfg.alpha > 0:
        raise ConfigError(f"{name('alpha')}: must be above 0 (at 0 the adapters add nothing)")
    if isinstance(cfg, VQConfig):
        _check_vq_layout(cfg, name)
    if isinstance(cfg, TinyBackboneConfig) and (
        cfg.hidden_size % cfg.num_heads or cfg.hidden_size // cfg.num_heads % 2
    ):
        example = name("hidden_size", 16 * cfg.num_heads)
        raise ConfigError(
            f"{name('hidden_size')} with {name('num_heads')}: the hidden size must split into num_heads "
            f"heads of an even size (rotary embeddings turn pairs), e.g. {example}"
        )
    if isinstance(cfg, RestoreConfig) and cfg.tile_overlap >= cfg.tile:
        raise ConfigError(f"{name('tile_overlap')}: must be less than {name('tile')}")


def _check_vq_layout(cfg: VQConfig, name: typing.Callable[..., str]) -> None:
    """PURE's image blocks hold one code per 8x8 pixels, each one of the vocabulary's 16,384 image tokens:
    a VQ of another downsampling (LlamaGen's vq_ds16_*) or codebook loads, then fails on every tile."""
    mult = list(cfg.channel_mult)
    if len(mult) != 4 or not all(isinstance(m, int) and m >= 1 for m in mult):
        raise ConfigError(
            f"{name('channel_mult', mult)}: expected 4 multipliers of at least 1 (3 halvings: PURE's image "
            "layout has one code per 8x8 pixels), e.g. [1, 2, 2, 4] as LlamaGen's vq_ds8_c2i.pt; a VQ of "
            "another downsampling (vq_ds16_*) does not fit the model"
        )
    if cfg.codebook_size != 16384:
        raise ConfigError(
            f"{name('codebook_size')}: must be 16384, the image tokens of PURE's vocabulary (LlamaGen's "
            "vq_ds8_c2i.pt); a VQ with another codebook does not fit the model"
        )


def _is_choice(value: object, allowed: tuple[str, ...]) -> bool:
    if value in allowed:
        return True
    return "cuda:N" in allowed and isinstance(value, str) and re.fullmatch(r"cuda:\d+", value) is not None


def _dotted_keys(tree: object, prefix: str = "") -> list[str]:
    """``{"a": {"b": 1}}`` -> ``["a", "a.b"]``."""
    if not isinstance(tree, dict):
        return []
    keys = []
    for name, value in tree.items():
        keys += [prefix + str(name), *_dotted_keys(value, f"{prefix}{name}.")]
    return keys


def with_value(cfg: T, key: str, value: object) -> T:
    """``cfg`` (a schema instance) with the dotted ``key`` set to ``value``, a new instance (no YAML or
    interpolation on the way: a path or caption stays exactly as it is)."""
    head, _, rest = key.partition(".")
    inner = with_value(getattr(cfg, head), rest, value) if rest else value
    return dataclasses.replace(cfg, **{head: inner})  # type: ignore[type-var]


def to_yaml(cfg: object) -> str:
    """The resolved config as YAML text (saved next to checkpoints and outputs)."""
    return OmegaConf.to_yaml(cfg)


def field_docs(schema: type) -> dict[str, str]:
    """The docstring under each field of a dataclass (the string literal that follows it in the source)."""
    body = ast.parse(inspect.getsource(schema)).body[0].body
    docs = {}
    for statement, following in zip(body, body[1:], strict=False):
        if (
            isinstance(statement, ast.AnnAssign)
            and isinstance(statement.target, ast.Name)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            docs[statement.target.id] = " ".join(following.value.value.split())
    return docs


def schema_help(schema: type, prefix: str = "", defaults: object = None) -> str:
    """Every key of ``schema`` (dotted, as ``key=value`` overrides name them) with its type, default and
    docstring: plain keys first, then each section: the text of ``--help-config``. ``defaults``: the
    instance whose values are shown (default ``schema()``; a section's own, so that a section built by
    a factory with other values, such as ``degradation.second``, shows those)."""
    docs, hints = field_docs(schema), typing.get_type_hints(schema)
    defaults = schema() if defaults is None else defaults
    keys, sections = [], []
    for item in dataclasses.fields(schema):
        key, kind = prefix + item.name, hints[item.name]
        default = getattr(defaults, item.name)
        if dataclasses.is_dataclass(kind):
            sections += ["", f"{key}: {docs.get(item.name, '')}", schema_help(kind, key + ".", default)]
            continue
        type_name = kind.__name__ if typing.get_origin(kind) is None else str(kind)
        keys += [f"  {key} ({type_name}) = {json.dumps(default)}", f"      {docs.get(item.name, '')}"]
    return "\n".join(keys + sections).strip("\n")


def _kernel_types() -> list[str]:
    return ["iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso"]


@dataclass
class DegradationStageConfig:
    """One order of Real-ESRGAN's degradation: blur, resize, noise, JPEG (defaults: x4plus's first)."""

    blur_prob: float = 1.0
    """Probability of blurring at all (1.0 in the first order, 0.8 in the second)."""
    kernel_list: list[str] = field(default_factory=_kernel_types)
    """Blur kernel types: iso, aniso, generalized_iso, generalized_aniso, plateau_iso, plateau_aniso."""
    kernel_prob: list[float] = field(default_factory=lambda: [0.45, 0.25, 0.12, 0.03, 0.12, 0.03])
    """Probability of each entry of ``kernel_list``."""
    sinc_prob: float = 0.1
    """Probability that the blur is a 2-D sinc (ringing) kernel instead of one of ``kernel_list``."""
    blur_sigma: list[float] = field(default_factory=lambda: [0.2, 3.0])
    """Range of the kernels' standard deviations along each axis (pixels at this order's input resolution)."""
    betag_range: list[float] = field(default_factory=lambda: [0.5, 4.0])
    """Shape range of generalised Gaussian kernels (1 = Gaussian)."""
    betap_range: list[float] = field(default_factory=lambda: [1.0, 2.0])
    """Shape range of plateau kernels."""
    resize_prob: list[float] = field(default_factory=lambda: [0.2, 0.7, 0.1])
    """Probabilities of resizing up, down, or keeping the size."""
    resize_range: list[float] = field(default_factory=lambda: [0.15, 1.5])
    """Range of the resize factor (down draws from [low, 1], up from [1, high])."""
    gaussian_noise_prob: float = 0.5
    """Probability of Gaussian noise (else Poisson noise)."""
    noise_range: list[float] = field(default_factory=lambda: [1.0, 30.0])
    """Range of the Gaussian noise sigma, in 8-bit levels."""
    poisson_scale_range: list[float] = field(default_factory=lambda: [0.05, 3.0])
    """Range of the Poisson noise scale."""
    gray_noise_prob: float = 0.4
    """Probability that the noise is the same in all three channels."""
    jpeg_range: list[float] = field(default_factory=lambda: [30.0, 95.0])
    """Range of the JPEG quality (drawn, then rounded to an integer)."""


def _second_stage() -> DegradationStageConfig:
    return DegradationStageConfig(
        blur_prob=0.8,
        blur_sigma=[0.2, 1.5],
        resize_prob=[0.3, 0.4, 0.3],
        resize_range=[0.3, 1.2],
        noise_range=[1.0, 25.0],
        poisson_scale_range=[0.05, 2.5],
    )


@dataclass
class DegradationConfig:
    """Real-ESRGAN's second-order degradation pipeline; the defaults are RealESRGAN_x4plus's."""

    scale: int = at_least(4, 1)
    """Integer down-scaling factor from HQ to LQ (4: 512 -> 128)."""
    kernel_sizes: list[int] = field(default_factory=lambda: [7, 9, 11, 13, 15, 17, 19, 21])
    """Odd blur kernel sizes, drawn uniformly for every kernel."""
    usm_sharpen: bool = True
    """Degrade an unsharp-masked copy of the HQ image, as Real-ESRGAN does (the HQ target stays as is)."""
    first: DegradationStageConfig = field(default_factory=DegradationStageConfig)
    """The first order."""
    second: DegradationStageConfig = field(default_factory=_second_stage)
    """The second order (its JPEG is the final one)."""
    final_sinc_prob: float = 0.8
    """Probability of a sinc filter after the final resize to the LQ size."""
    sinc_before_jpeg_prob: float = 0.5
    """Probability that [final resize + sinc] comes before the last JPEG (else after it)."""
    resize_modes: list[str] = field(default_factory=lambda: ["area", "bilinear", "bicubic"])
    """Interpolation modes drawn uniformly for every resize."""


@dataclass
class LabelConfig:
    """How drawn degradation parameters become severities in [0, 1] (see pure/data/labels.py)."""

    blur_range: list[float] = field(default_factory=lambda: [0.35, 1.1])
    """Effective extra blur (Gaussian sigma, LQ pixels) that scores severity 0 and 1; linear in between."""
    noise_range: list[float] = field(default_factory=lambda: [0.5, 14.5])
    """Effective noise left in the LQ image (std, 8-bit levels) that scores severity 0 and 1."""


@dataclass
class CaptionConfig:
    """Where content descriptions come from."""

    manifest: str = ""
    """JSONL or CSV file mapping images (paths relative to their HQ folder) to descriptions."""
    model: str = ""
    """Image-to-text model (hub id or folder) that describes images the manifest lacks; empty: none."""
    prompt: str = "Describe this image in detail."
    """Instruction given to the captioning model."""
    batch_size: int = at_least(8, 1)
    """Images captioned together."""
    max_new_tokens: int = at_least(160, 1)
    """Longest description the captioning model may write, in its tokens."""
    allow_missing: bool = False
    """Train label-free where a description is missing (the answer is the degradation sentence only)."""


@dataclass
class PrepareConfig:
    """Settings of ``scripts/prepare_data.py``: HQ folders -> degraded pairs -> token shards."""

    hq_dirs: list[str] = field(default_factory=list)
    """Folders of high-quality images (searched recursively)."""
    out_dir: str = "data/prepared"
    """Output folder: shards, index files and the resolved config."""
    hq_size: int = at_least(512, 32, multiple_of=32)
    """Side of the square HQ crop, a multiple of 32 and of ``degradation.scale`` (512 in PURE)."""
    shrink: bool = True
    """Shrink images to a short side of ``hq_size`` before cropping, as the reference does (false: no)."""
    crop: str = choice("random", "center")
    """Where the square HQ crop is taken: random (seeded per image) or center."""
    seed: int = 0
    """Seed of the per-image draws (crop, degradation); each image's generator also depends on its path."""
    shard_size: int = at_least(256, 1)
    """Examples per shard file."""
    batch_size: int = at_least(8, 1)
    """Images encoded by the VQ at once."""
    workers: int = at_least(0, 0)
    """Worker processes that read, crop and degrade images while the VQ encodes (0: the main process)."""
    device: str = choice("auto", "cpu", "cuda", "cuda:N")
    """Device of the VQ and the degradations: auto, cpu, cuda (under accelerate: each process's own GPU)."""
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    """The checkpoint whose tokenizer writes the text (its weights are not loaded)."""
    vq: VQConfig = field(default_factory=VQConfig)
    """The image tokenizer."""
    degradation: DegradationConfig = field(default_factory=DegradationConfig)
    """The synthetic degradation."""
    labels: LabelConfig = field(default_factory=LabelConfig)
    """Degradation parameters -> severities."""
    caption: CaptionConfig = field(default_factory=CaptionConfig)
    """Content descriptions."""
    models: str = ""
    """Folder written by ``scripts/download.py`` (``DIR/<repo id>/...``): hub sources are read from it when it
    holds them, else from the Hugging Face cache or the hub."""


@dataclass
class LoRAConfig:
    """Low-rank adapters (peft) on the frozen backbone, used when ``method`` is ``lora``."""

    rank: int = at_least(32, 1)
    """Rank r of every adapter."""
    alpha: float = 32.0
    """Adapter scale numerator: a layer adds ``alpha / rank * B @ A`` to its frozen weight."""
    dropout: float = between(0.05, 0.0, 1.0)
    """Dropout on each adapter's input."""
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    """Linear layers that get adapters (default: every attention and MLP projection)."""
    token_rows: str = choice("auto", "image", "none")
    """Embedding and output-layer rows trained with the adapters: auto (the rows added when the vocabulary
    is extended to ``tokenizer``'s, none otherwise), image (all 16,384 image-token rows) or none."""


@dataclass
class OptimConfig:
    """AdamW, linear warm-up then cosine decay, gradient clipping (defaults: the released recipe)."""

    lr: float = at_least(4e-4, 0.0)
    """Peak learning rate, reached at the end of warm-up."""
    min_lr: float = at_least(0.0, 0.0)
    """Learning rate at the end of the cosine decay."""
    warmup_epochs: float = at_least(0.5, 0.0)
    """Length of the linear warm-up, in epochs (fractions allowed)."""
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    """AdamW (beta1, beta2)."""
    eps: float = at_least(1e-8, 0.0)
    """AdamW epsilon."""
    weight_decay: float = at_least(0.1, 0.0)
    """Decoupled weight decay, on matrices only (not on norms or biases)."""
    grad_clip: float = at_least(4.0, 0.0)
    """Clip the global gradient norm to this value; 0 disables clipping."""


@dataclass
class TrainDataConfig:
    """Training examples from a folder of high-quality images (:mod:`pure.examples`)."""

    hq_folder: str = ""
    """Folder of HQ images; each gives one example: its HQ crop and that crop's bicubic LQ."""
    captions: str = ""
    """Optional manifest (JSONL or CSV) ``{"image": file name, "description": whole answer text}``."""
    default_text: str = "Medium blur, small noise."
    """Answer text of images the manifest does not list (a placeholder, not a real label)."""
    size: int = at_least(512, 32, multiple_of=32)
    """HQ side in pixels (a multiple of 32): images are resized (shorter side) and centre-cropped to it."""
    scale: int = at_least(4, 1)
    """LQ = HQ downscaled by this factor, then upscaled back to ``size`` (both bicubic)."""
    max_images: int = at_least(0, 0, hint="0 uses all")
    """Use the first this many images in name order; 0 uses all."""
    shards: str = ""
    """Folder of pre-tokenised shards from ``scripts/prepare_data.py``; when set, ``hq_folder`` is unused."""
    num_workers: int = at_least(0, 0)
    """DataLoader worker processes per training process."""


@dataclass
class LogConfig:
    """Where training progress goes: always ``output_dir/log.jsonl``, optionally Weights & Biases."""

    every: int = at_least(10, 1)
    """Write a record every this many optimizer steps."""
    wandb: bool = False
    """Also log to Weights & Biases."""
    wandb_project: str = "pure"
    """Weights & Biases project."""
    wandb_mode: str = choice("online", "offline")
    """online, or offline (runs stay in ``output_dir/wandb``; upload later with ``wandb sync``)."""
    run_name: str = ""
    """Run name for Weights & Biases; empty: the name of ``output_dir``."""


@dataclass
class TrainConfig:
    """Settings of ``scripts/train.py``."""

    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    """The transformer to fine-tune."""
    vq: VQConfig = field(default_factory=VQConfig)
    """The image tokenizer that turns the training images into codes."""
    data: TrainDataConfig = field(default_factory=TrainDataConfig)
    """Training examples."""
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    """Adapters, when ``method`` is ``lora``."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    """Optimizer and learning-rate schedule."""
    log: LogConfig = field(default_factory=LogConfig)
    """Logging."""
    method: str = choice("lora", "full")
    """lora (frozen backbone plus trainable adapters) or full (every weight is trained)."""
    tokenizer: str = ""
    """Tokenizer folder or repo id when it differs from the backbone's; the backbone's vocabulary is
    extended to it (e.g. PURE's 73,728 entries over a smaller base)."""
    output_dir: str = "outputs/train"
    """Folder for checkpoints, the resolved config and logs."""
    models: str = ""
    """Folder written by ``scripts/download.py`` (``DIR/<repo id>/...``): hub sources are read from it when it
    holds them, else from the Hugging Face cache or the hub."""
    epochs: float = field(default=2.0, metadata={"min": 0})
    """Passes over the data (fractions allowed; more than 0 unless ``max_steps`` is set)."""
    max_steps: int = at_least(0, 0)
    """Optimizer steps in all; 0 derives them from ``epochs``. The schedule spans exactly these steps."""
    batch_size: int = at_least(1, 1)
    """Sequences per process in one micro-batch."""
    grad_accum: int = at_least(1, 1)
    """Micro-batches per optimizer step; global batch = batch_size * grad_accum * processes."""
    max_seq_len: int = at_least(11776, 1)
    """Sequences are truncated to this many tokens (the released recipe's 11,776)."""
    mixed_precision: str = choice("bf16", "no", "fp16")
    """no, bf16 or fp16: accelerate's autocast; with LoRA also the dtype of the frozen base weights."""
    gradient_checkpointing: bool = True
    """Recompute each decoder layer's activations in the backward pass instead of storing them."""
    residual_dropout: float = between(0.0, 0.0, 1.0)
    """Dropout on every attention and MLP output before it is added to the residual stream (PURE: 0.05)."""
    z_loss_weight: float = at_least(0.0, 0.0)
    """Weight of the z-loss, mean logsumexp(logits)**2 over answer positions, at least 0 (PURE: 0; a
    negative weight would reward ever larger logits)."""
    seed: int = between(0, 0, 2**32 - 1)
    """Seed of data order, adapter initialisation and dropout (0 to 2^32 - 1, as numpy's generator takes)."""
    eval_examples: int = at_least(0, 0)
    """Examples held out of training (a fixed, seeded choice) whose mean loss is logged as ``val_loss``;
    0: no validation."""
    eval_every: int = at_least(100, 1)
    """Compute the held-out loss every this many optimizer steps, and after the last one."""
    save_every: int = at_least(500, 1)
    """Write a checkpoint every this many optimizer steps, and after the last one."""
    keep_last: int = at_least(3, 0)
    """Checkpoints kept in ``output_dir/checkpoints`` (older ones are deleted, before a save writes the next
    one, so the disk needs room for this many; never the newest, so 1 needs room for two); 0 keeps all."""
    resume: str = ""
    """Continue a run: latest (the newest checkpoint in ``output_dir``, or a fresh start when there is
    none), or a checkpoint folder; empty starts fresh and refuses an ``output_dir`` with checkpoints."""
