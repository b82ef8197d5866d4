"""LlamaGen's VQ-8 image tokenizer: pixels -> codes -> pixels, and its checkpoint loading.

PURE turns images into tokens with LlamaGen's ``vq_ds8_c2i`` VQGAN (FoundationVision/LlamaGen on
the Hugging Face Hub):

    images [B, 3, H, W] in [-1, 1]
      -> encoder (conv, 4 levels of ResnetBlocks, 3 stride-2 downsamplings, attention at the bottom)
      -> quant_conv (1x1, z_channels -> 8)                 = h_pre_quant [B, 8, H/8, W/8]
      -> nearest L2-normalised codebook row (16,384 x 8)   = codes [B, H/8, W/8]
    codes -> normalised codebook rows -> post_quant_conv (1x1, 8 -> z_channels) -> decoder
      -> clamp to [-1, 1]                                  = images [B, 3, H, W]

Module and parameter names are the reference's (``encoder.conv_blocks.0.res.0.norm1.weight``, ...), so
the released checkpoint loads as-is. Pre- and post-processing follow the reference exactly:
:func:`image_to_tensor` (alpha onto white, ``uint8 / 255 * 2 - 1``) and :func:`tensor_to_image`
(clamp, ``(x + 1) / 2 * 255`` truncated to uint8).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

from pure.config import VQConfig
from pure.errors import LINKS_FIX, PureError, broken_links, error_reason, from_here, torch_load_reason
from pure.images import to_rgb
from pure.tiny import det_state_dict
from pure.vocab import CODEBOOK_SIZE

DEFAULT_SOURCE = "FoundationVision/LlamaGen:vq_ds8_c2i.pt"
GROUPS = 32
NORM_EPS = 1e-6
IGNORED_KEYS = frozenset({"quantize.codebook_used"})
"""Training-only entries of LlamaGen checkpoints that the model does not hold."""


class VQCheckpointError(PureError, RuntimeError):
    """A VQ checkpoint's content does not fit the model (keys, shapes or layout)."""


class VQCheckpointNotFoundError(PureError, FileNotFoundError):
    """A VQ checkpoint is neither a local file nor downloadable from the Hugging Face Hub."""


def _swish(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(x)


def _group_norm(channels: int) -> nn.GroupNorm:
    if channels % GROUPS:
        raise ValueError(f"GroupNorm needs channels divisible by {GROUPS}, got {channels}")
    return nn.GroupNorm(GROUPS, channels, eps=NORM_EPS, affine=True)


class ResnetBlock(nn.Module):
    """norm1 -> swish -> conv1 -> norm2 -> swish -> conv2, plus a (1x1 ``nin_shortcut`` when needed) skip.

    [B, in_channels, H, W] -> [B, out_channels, H, W].
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.norm1 = _group_norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = _group_norm(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(_swish(self.norm1(x)))
        h = self.conv2(_swish(self.norm2(h)))
        skip = x if self.nin_shortcut is None else self.nin_shortcut(x)
        return skip + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all positions, with 1x1-conv projections and a residual.

    [B, C, H, W] -> [B, C, H, W]; weights softmax(q^T k / sqrt(C)) over the H*W key positions.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = _group_norm(channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        y = self.norm(x)
        q = self.q(y).reshape(b, c, h * w).permute(0, 2, 1)  # [B, N, C]
        k = self.k(y).reshape(b, c, h * w)  # [B, C, N]
        v = self.v(y).reshape(b, c, h * w)  # [B, C, N]
        weights = torch.softmax(torch.bmm(q, k) * c**-0.5, dim=2)  # [B, N_query, N_key]
        out = torch.bmm(v, weights.permute(0, 2, 1)).reshape(b, c, h, w)
        return x + self.proj_out(out)


class Downsample(nn.Module):
    """Zero-pad right and bottom by one, then a 3x3 stride-2 conv: [B, C, H, W] -> [B, C, H/2, W/2]."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Nearest x2, then a 3x3 conv: [B, C, H, W] -> [B, C, 2H, 2W]."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Level(nn.Module):
    """One resolution level: ``res[i]``, each followed by ``attn[i]`` when the level has attention.

    The encoder (decoder) adds a ``downsample`` (``upsample``) submodule to every level but its last.
    """

    def __init__(self, in_channels: int, out_channels: int, num_blocks: int, attention: bool) -> None:
        super().__init__()
        self.res = nn.ModuleList(
            ResnetBlock(in_channels if i == 0 else out_channels, out_channels) for i in range(num_blocks)
        )
        self.attn = nn.ModuleList(AttnBlock(out_channels) for _ in range(num_blocks if attention else 0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, block in enumerate(self.res):
            x = block(x)
            if len(self.attn):
                x = self.attn[i](x)
        return x


def _mid(channels: int) -> nn.ModuleList:
    return nn.ModuleList(
        [ResnetBlock(channels, channels), AttnBlock(channels), ResnetBlock(channels, channels)]
    )


class Encoder(nn.Module):
    """[B, 3, H, W] -> [B, z_channels, H/f, W/f], f = 2 ** (len(channel_mult) - 1).

    Levels of ``num_res_blocks`` ResnetBlocks at ``channels * channel_mult[i]`` channels; only the last
    level has attention. Then mid (Resnet, Attn, Resnet), norm_out, swish and conv_out.
    """

    def __init__(
        self, channels: int, channel_mult: Sequence[int], z_channels: int, num_res_blocks: int
    ) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(3, channels, 3, padding=1)
        self.conv_blocks = nn.ModuleList()
        block_in = channels
        last = len(channel_mult) - 1
        for i, mult in enumerate(channel_mult):
            level = Level(block_in, channels * mult, num_res_blocks, attention=i == last)
            block_in = channels * mult
            if i != last:
                level.downsample = Downsample(block_in)
            self.conv_blocks.append(level)
        self.mid = _mid(block_in)
        self.norm_out = _group_norm(block_in)
        self.conv_out = nn.Conv2d(block_in, z_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for i, level in enumerate(self.conv_blocks):
            h = level(h)
            if i != len(self.conv_blocks) - 1:
                h = level.downsample(h)
        for block in self.mid:
            h = block(h)
        return self.conv_out(_swish(self.norm_out(h)))


class Decoder(nn.Module):
    """[B, z_channels, h, w] -> [B, 3, h*f, w*f] (unclamped), mirroring :class:`Encoder`.

    conv_in, mid (Resnet, Attn, Resnet), then the levels in reverse channel order with
    ``num_res_blocks + 1`` ResnetBlocks each (attention only in the first, widest one), norm_out, swish,
    conv_out.
    """

    def __init__(
        self, channels: int, channel_mult: Sequence[int], z_channels: int, num_res_blocks: int
    ) -> None:
        super().__init__()
        block_in = channels * channel_mult[-1]
        self.conv_in = nn.Conv2d(z_channels, block_in, 3, padding=1)
        self.mid = _mid(block_in)
        self.conv_blocks = nn.ModuleList()
        for i, mult in enumerate(reversed(channel_mult)):
            level = Level(block_in, channels * mult, num_res_blocks + 1, attention=i == 0)
            block_in = channels * mult
            if i != len(channel_mult) - 1:
                level.upsample = Upsample(block_in)
            self.conv_blocks.append(level)
        self.norm_out = _group_norm(block_in)
        self.conv_out = nn.Conv2d(block_in, 3, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(z)
        for block in self.mid:
            h = block(h)
        for i, level in enumerate(self.conv_blocks):
            h = level(h)
            if i != len(self.conv_blocks) - 1:
                h = level.upsample(h)
        return self.conv_out(_swish(self.norm_out(h)))


class VectorQuantizer(nn.Module):
    """Nearest-neighbour lookup in an L2-normalised codebook ``embedding.weight`` [K, D].

    Distances and lookups run in float32 whatever the model dtype (in bf16, near-ties would flip codes).
    """

    def __init__(self, codebook_size: int, codebook_dim: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(codebook_size, codebook_dim)

    def codebook(self) -> torch.Tensor:
        """The L2-normalised codebook: [K, D] float32."""
        return F.normalize(self.embedding.weight.float(), p=2, dim=-1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """z: [B, D, h, w] -> codes [B, h, w] int64, row-major over (h, w).

        d = sum(z^2) + sum(e^2) - 2 z.e on the normalised z and codebook; argmin (first index on ties).
        """
        b, d, h, w = z.shape
        flat = F.normalize(z.permute(0, 2, 3, 1).reshape(-1, d).float(), p=2, dim=-1)  # [N, D]
        codebook = self.codebook()
        dist = flat.pow(2).sum(1, keepdim=True) + codebook.pow(2).sum(1) - 2 * (flat @ codebook.t())
        return dist.argmin(dim=1).reshape(b, h, w)

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """codes: [B, h, w] int64 -> normalised codebook rows [B, D, h, w] float32."""
        return self.codebook()[codes].permute(0, 3, 1, 2).contiguous()


class VQModel(nn.Module):
    """LlamaGen's VQ-8: :meth:`encode` images to codes, :meth:`decode` codes to images.

    The defaults are the released ``vq_ds8_c2i`` (70.1 M parameters); smaller ``channels`` /
    ``z_channels`` (multiples of 32) give tiny variants for tests. Neither method tracks gradients.
    """

    def __init__(
        self,
        channels: int = 128,
        channel_mult: Sequence[int] = (1, 2, 2, 4),
        z_channels: int = 256,
        codebook_size: int = CODEBOOK_SIZE,
        codebook_dim: int = 8,
        num_res_blocks: int = 2,
    ) -> None:
        super().__init__()
        channel_mult = tuple(channel_mult)
        self.encoder = Encoder(channels, channel_mult, z_channels, num_res_blocks)
        self.decoder = Decoder(channels, channel_mult, z_channels, num_res_blocks)
        self.quantize = VectorQuantizer(codebook_size, codebook_dim)
        self.quant_conv = nn.Conv2d(z_channels, codebook_dim, 1)
        self.post_quant_conv = nn.Conv2d(codebook_dim, z_channels, 1)
        self._downsample = 2 ** (len(channel_mult) - 1)

    @classmethod
    def from_config(cls, cfg: VQConfig) -> VQModel:
        """An untrained model with ``cfg``'s architecture (``cfg.source`` and ``cfg.seed`` are not used)."""
        return cls(
            channels=cfg.channels,
            channel_mult=tuple(cfg.channel_mult),
            z_channels=cfg.z_channels,
            codebook_size=cfg.codebook_size,
            codebook_dim=cfg.codebook_dim,
            num_res_blocks=cfg.num_res_blocks,
        )

    @property
    def downsample(self) -> int:
        """Pixels per code along each side (8 for VQ-8)."""
        return self._downsample

    @property
    def codebook_size(self) -> int:
        """Number of codes K; codes lie in [0, K)."""
        return self.quantize.embedding.num_embeddings

    def _param(self) -> torch.Tensor:
        return self.quant_conv.weight

    @torch.no_grad()
    def latent(self, images: torch.Tensor) -> torch.Tensor:
        """images: [B, 3, H, W] in [-1, 1] -> h_pre_quant = quant_conv(encoder(images)): [B, D, H/8, W/8].

        H and W must be multiples of :attr:`downsample`. The images are moved to the model's device and dtype.
        """
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images [B, 3, H, W], got shape {tuple(images.shape)}")
        height, width = images.shape[-2:]
        f = self.downsample
        if height % f or width % f:
            raise ValueError(
                f"image size {width}x{height} (WxH) is not a multiple of {f}: the VQ encodes {f}x{f} pixel "
                f"patches, so crop or resize the image to a multiple of {f} on both sides"
            )
        weight = self._param()
        return self.quant_conv(self.encoder(images.to(device=weight.device, dtype=weight.dtype)))

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """images: [B, 3, H, W] in [-1, 1] -> codes [B, H/8, W/8] int64 in [0, codebook_size)."""
        return self.quantize(self.latent(images))

    @torch.no_grad()
    def codebook_rows(self, codes: torch.Tensor) -> torch.Tensor:
        """codes: [B, h, w] int64 -> normalised codebook rows (the decoder's input) [B, D, h, w] float32."""
        if codes.ndim != 3 or codes.dtype not in (torch.int64, torch.int32):
            raise ValueError(
                f"expected integer codes [B, h, w], got {codes.dtype} of shape {tuple(codes.shape)}"
            )
        weight = self._param()
        codes = codes.to(device=weight.device, dtype=torch.int64)
        if codes.numel() and (codes.min() < 0 or codes.max() >= self.codebook_size):
            raise ValueError(
                f"codes must lie in [0, {self.codebook_size}), got [{int(codes.min())}, {int(codes.max())}]: "
                "map token ids back to VQ codes before decoding"
            )
        return self.quantize.lookup(codes)

    @torch.no_grad()
    def decode(self, codes: torch.Tensor, clamp: bool = True) -> torch.Tensor:
        """codes: [B, h, w] int64 -> images [B, 3, 8h, 8w] in the model's dtype.

        ``decoder(post_quant_conv(codebook rows))``, clamped to [-1, 1] unless ``clamp=False``.
        """
        zq = self.codebook_rows(codes).to(self._param().dtype)
        images = self.decoder(self.post_quant_conv(zq))
        return images.clamp(-1.0, 1.0) if clamp else images


def _preview(keys: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(keys[:limit])
    return f"{shown}, ... ({len(keys) - limit} more)" if len(keys) > limit else shown


def _check_state_dict(state: dict[str, torch.Tensor], model: VQModel, origin: str) -> None:
    """Raise :class:`VQCheckpointError` listing missing, unexpected and mis-shaped keys of ``state``."""
    expected = model.state_dict()
    missing = sorted(expected.keys() - state.keys())
    unexpected = sorted(state.keys() - expected.keys() - IGNORED_KEYS)
    mismatched = [
        f"{key} {tuple(state[key].shape)} vs {tuple(value.shape)}"
        for key, value in expected.items()
        if key in state and tuple(state[key].shape) != tuple(value.shape)
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys: {_preview(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys: {_preview(unexpected)}")
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatches (file vs model): {_preview(mismatched)}")
    if not problems:
        return
    misfit = _layout_misfit(state, model)
    if misfit:  # no vq setting can make such a file fit PURE's vocabulary and image layout
        raise VQCheckpointError(
            f"{origin} is not a VQ that PURE's model reads: {misfit}; pass LlamaGen's vq_ds8_c2i.pt "
            "(scripts/download.py fetches it)"
        )
    details = "; ".join(problems)
    raise VQCheckpointError(
        f"{origin} does not fit the VQ model: {details}. Pass LlamaGen's vq_ds8_c2i.pt or set the vq "
        "config (channels, z_channels, codebook_dim, num_res_blocks) to match the file."
    )


def _layout_misfit(state: dict[str, torch.Tensor], model: VQModel) -> str:
    """Why the checkpoint ``state`` cannot serve ``model``'s place whatever the widths: another downsampling
    (LlamaGen's vq_ds16_*) or another codebook size (PURE's vocabulary has 16,384 image tokens, one per
    code, in blocks of one code per 8x8 pixels; the config allows no other); "" when neither."""
    levels = {key.split(".")[2] for key in state if key.startswith("encoder.conv_blocks.")}
    if levels and 2 ** (len(levels) - 1) != model.downsample:
        return (
            f"its encoder has {len(levels)} levels, so it downsamples {2 ** (len(levels) - 1)}x (a vq_ds16 "
            f"file?), where PURE's image layout has one code per {model.downsample}x{model.downsample} pixels"
        )
    codebook = state.get("quantize.embedding.weight")
    if codebook is not None and codebook.ndim == 2 and codebook.shape[0] != model.codebook_size:
        return (
            f"its codebook has {codebook.shape[0]} codes, where PURE's vocabulary has {model.codebook_size} "
            "image tokens"
        )
    return ""


def _read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """The state dict of a LlamaGen checkpoint file: ``{"model": state_dict, ...}`` or a bare state dict,
    pickled by torch (``.pt``) or converted to ``.safetensors`` (the state dict's keys, as they are)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(path, device="cpu")
        except Exception as err:  # a damaged or cut file, or a git-lfs pointer
            raise VQCheckpointError(
                f"{path} is not a readable safetensors file ({error_reason(err)}); download or convert it "
                "again"
            ) from err
    # LlamaGen's training checkpoints also pickle their argparse arguments; allow just that class.
    with torch.serialization.safe_globals([argparse.Namespace]):
        try:
            content = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # unpickling and zip errors come in many types
            raise VQCheckpointError(
                f"{path} is not a readable torch checkpoint ({torch_load_reason(err)}); pass LlamaGen's "
                "vq_ds8_c2i.pt (scripts/download.py fetches it), downloaded or copied again if damaged"
            ) from err
    state = content.get("model", content) if isinstance(content, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise VQCheckpointError(
            f"{path} holds no VQ state dict: expected {{'model': state_dict}} or a bare state dict of tensors"
        )
    return state


def _download(repo_id: str, filename: str) -> Path:
    """Fetch ``filename`` from the Hub repo ``repo_id`` (or its cache); one clear error on any failure."""
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo_id=repo_id, filename=filename))
    except Exception as err:  # offline, no cache, network, auth and not-found errors have different types
        url = f"https://huggingface.co/{repo_id}/resolve/main/{filename}"
        raise VQCheckpointNotFoundError(
            f"could not get the VQ checkpoint {filename} from the Hugging Face repo {repo_id} "
            f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}). Download {url} "
            f"(e.g. `hf download {repo_id} {filename}`) and pass the local file as the source "
            f"(vq.source=/path/to/{filename})."
        ) from err


CHECKPOINT_SUFFIXES = (".pt", ".safetensors")
"""The VQ checkpoint files :func:`load_vq` reads: LlamaGen's pickled ``.pt``, or its state dict converted."""


def resolve_checkpoint(source: str) -> Path:
    """A local checkpoint path for ``source``: an existing file, or ``repo_id:filename`` from the Hub."""
    path = Path(source).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        inside = sorted(p for p in path.iterdir() if p.suffix in CHECKPOINT_SUFFIXES and p.is_file())
        if not inside:  # a Hugging Face cache folder (models--FoundationVision--LlamaGen, or the cache above)
            patterns = ("snapshots/*/vq_ds8_c2i.*", "models--*/snapshots/*/vq_ds8_c2i.*")
            cached = [p for pattern in patterns for p in path.glob(pattern)]
            inside = sorted(p for p in cached if p.suffix in CHECKPOINT_SUFFIXES and p.is_file())[:1]
        which = f"in it ({inside[0]})" if len(inside) == 1 else "itself, e.g. vq_ds8_c2i.pt"
        raise VQCheckpointNotFoundError(
            f"VQ checkpoint {source!r} is a folder; pass the checkpoint file (.pt or .safetensors) {which}"
        )
    if broken := broken_links([path]):
        raise VQCheckpointNotFoundError(
            f"VQ checkpoint {source!r} is a link to a file that does not exist ({broken}): {LINKS_FIX} "
            "or fetch it again (python scripts/download.py models)"
        )
    repo_id, sep, filename = source.partition(":")
    if sep and repo_id and filename:
        return _download(repo_id, filename)
    raise VQCheckpointNotFoundError(
        f"VQ checkpoint {from_here(source)} not found: pass an existing .pt or .safetensors file, a Hugging "
        f"Face repo_id:filename such as {DEFAULT_SOURCE!r}, or 'tiny'"
    )


def load_vq(
    source: str | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    cfg: VQConfig | None = None,
) -> VQModel:
    """A :class:`VQModel` in eval mode on ``device`` in ``dtype``.

    Args:
        source: a local ``.pt`` file, a Hugging Face ``repo_id:filename`` (default
            ``FoundationVision/LlamaGen:vq_ds8_c2i.pt``, honours ``HF_HUB_OFFLINE``), or ``tiny`` for
            deterministic random weights seeded by ``cfg.seed``. ``None`` uses ``cfg.source``.
        cfg: the architecture (and tiny seed); the released VQ-8 by default.

    Raises:
        VQCheckpointNotFoundError: the file is missing and cannot be downloaded.
        VQCheckpointError: the file's keys or shapes do not fit the architecture.
    """
    cfg = cfg or VQConfig()
    source = cfg.source if source is None else source
    path = None if source == "tiny" else resolve_checkpoint(source)  # fail before building the model
    model = VQModel.from_config(cfg)
    if path is None:
        shapes = {key: tuple(value.shape) for key, value in model.state_dict().items()}
        model.load_state_dict(det_state_dict(shapes, cfg.seed))
    else:
        state = _read_checkpoint(path)
        _check_state_dict(state, model, str(path))
        model.load_state_dict({key: value for key, value in state.items() if key not in IGNORED_KEYS})
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)


def image_to_tensor(image: Image.Image) -> torch.Tensor:
    """PIL image -> [3, H, W] float32 in [-1, 1], as the reference's ``img_tokens_from_pil``:
    :func:`pure.images.to_rgb`, then ``uint8 / 255 * 2 - 1`` in float64."""
    pixels = np.array(to_rgb(image)) / 255.0 * 2 - 1  # [H, W, 3] float64
    return torch.from_numpy(pixels).permute(2, 0, 1).float()


def tensor_to_image(x: torch.Tensor) -> Image.Image:
    """[3, H, W] in [-1, 1] -> PIL RGB: clamp, ``(x + 1) / 2``, ``* 255`` truncated (not rounded) to uint8."""
    if x.ndim != 3 or x.shape[0] != 3:
        raise ValueError(f"expected one image [3, H, W], got shape {tuple(x.shape)}")
    unit = (x.detach().float().cpu().clamp(-1.0, 1.0) + 1.0) / 2.0
    return Image.fromarray((unit.permute(1, 2, 0).numpy() * 255).astype(np.uint8))
