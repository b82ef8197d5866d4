"""One typed schema for every script, merged with a YAML file and ``key=value`` overrides.

The dataclasses below hold every setting and its default. A YAML file and command-line
overrides may only *override* fields that exist here, with values of the right type:

    cfg = load_config(InferConfig, "configs/tiny.yaml", ["sampling.cfg_scale=1.0"])

Each component receives only its own slice (``cfg.sampling``, ``cfg.vq``, ...).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

T = TypeVar("T")


class ConfigError(ValueError):
    """A YAML file or an override does not fit the schema."""


@dataclass
class VQConfig:
    """The LlamaGen VQ-8 image tokenizer."""

    source: str = "FoundationVision/LlamaGen:vq_ds8_c2i.pt"
    """Checkpoint: a local ``.pt`` file, a Hugging Face ``repo_id:filename``, or ``tiny`` (random weights)."""
    seed: int = 0
    """Seed of the deterministic weights when ``source`` is ``tiny``."""
    channels: int = 128
    """Base channel count of encoder and decoder (128 in the released VQ-8)."""
    channel_mult: list[int] = field(default_factory=lambda: [1, 2, 2, 4])
    """Channel multiplier per resolution level; len - 1 downsamplings (3 -> 8x)."""
    z_channels: int = 256
    """Channels of the encoder output before ``quant_conv``."""
    codebook_size: int = 16384
    """Number of codebook entries (16,384 image tokens in PURE's vocabulary)."""
    codebook_dim: int = 8
    """Dimension of each (L2-normalised) codebook entry."""
    num_res_blocks: int = 2
    """Residual blocks per encoder level (the decoder has one more)."""


@dataclass
class BackboneConfig:
    """The Chameleon/Lumina-mGPT transformer and its text tokenizer."""

    source: str = "nonwhy/PURE"
    """Hugging Face repo id, local folder (config.json + safetensors), or ``tiny`` (random weights)."""
    revision: str = "main"
    """Hub revision (branch, tag or commit) when ``source`` is a repo id."""
    adapter: str = ""
    """Optional LoRA adapter folder (peft format) applied on top of the backbone."""
    seed: int = 0
    """Seed of the deterministic weights when ``source`` is ``tiny``."""
    hidden_size: int = 64
    """Hidden size of the ``tiny`` model (ignored for real checkpoints)."""
    intermediate_size: int = 128
    """MLP size of the ``tiny`` model (ignored for real checkpoints)."""
    num_layers: int = 2
    """Decoder layers of the ``tiny`` model (ignored for real checkpoints)."""
    num_heads: int = 4
    """Attention heads of the ``tiny`` model (ignored for real checkpoints)."""


@dataclass
class SamplingConfig:
    """PURE's sampler (SPEC section 5); defaults are the reference's."""

    cfg_scale: float = 0.8
    """Classifier-free guidance g in ``g * (cond - uncond) + uncond``; 1.0 disables guidance."""
    temperature: float = 0.9
    """Softmax temperature applied after top-k."""
    text_top_k: int = 1
    """Top-k for text tokens (1 = greedy text, as PURE)."""
    image_top_k_min: int = 1
    """Smallest k of the entropy-adaptive top-k inside an image."""
    image_top_k_max: int = 2000
    """Largest k of the entropy-adaptive top-k inside an image."""
    max_new_tokens: int = 8192
    """Token budget of one answer."""
    seed: int = 0
    """Seed of the sampling generator; tile i of every image uses seed + i."""


@dataclass
class RestoreConfig:
    """How an image is prepared for the model and put back together."""

    outscale: float = 4.0
    """Output scale relative to the input (any float > 0)."""
    tile: int = 512
    """Model tile size in pixels (a multiple of 32; the released model works at 512)."""
    tile_overlap: int = 64
    """Overlap between neighbouring tiles, in output pixels."""
    batch_size: int = 1
    """Tiles restored together in one batched generation."""
    color_fix: str = "wavelet"
    """Colour correction against the bicubic upsampled input: wavelet, adain or none."""
    caption: str = ""
    """Optional description (or whole text answer) that steers restoration; empty = the model's own."""
    max_text_tokens: int = 512
    """Text tokens an answer may write before its image is opened (the image size is always the tile's)."""


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
    device: str = "auto"
    """Device: auto (CUDA when available), cpu, cuda, cuda:N."""
    dtype: str = "bfloat16"
    """Backbone dtype on the GPU: bfloat16, float16 or float32 (CPU always uses float32)."""


def load_config(
    schema: type[T], yaml_path: str | Path | None = None, overrides: list[str] | None = None
) -> T:
    """Return ``schema``'s defaults overridden by a YAML file, then by ``key=value`` strings.

    Unknown keys and values of the wrong type raise :class:`ConfigError` naming the key and the
    file (or the override) it came from.
    """
    cfg: DictConfig = OmegaConf.structured(schema)
    OmegaConf.set_struct(cfg, True)
    sources: list[tuple[str, DictConfig]] = []
    if yaml_path is not None:
        path = Path(yaml_path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            sources.append((str(path), OmegaConf.load(path)))
        except Exception as err:  # YAML syntax errors come in several types
            raise ConfigError(f"{path}: not valid YAML ({err})") from err
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        sources.append((f"override {item!r}", OmegaConf.from_dotlist([item])))
    for origin, part in sources:
        try:
            cfg = OmegaConf.merge(cfg, part)
        except OmegaConfBaseException as err:
            key = getattr(err, "full_key", None) or "?"
            reason = str(err).splitlines()[0]
            raise ConfigError(f"{origin}: bad key {key!r} for {schema.__name__}: {reason}") from err
    return cfg  # type: ignore[return-value]


def to_yaml(cfg: object) -> str:
    """The resolved config as YAML text (saved next to checkpoints and outputs)."""
    return OmegaConf.to_yaml(cfg)
