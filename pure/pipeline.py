"""Perceive -> understand -> restore, for one image of any size.

The model answers in one turn: a sentence perceiving the degradation, a description of the
content, then the restored image as VQ tokens. For an image larger than the model's tile, the
bicubic-upsampled input is cut into overlapping tiles (:mod:`pure.tiling`), several tiles go
through one batched generation, and the restored tiles are blended back and colour-fixed
against the upsampled input (:mod:`pure.colorfix`).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf
from PIL import Image

from pure.colorfix import color_fix
from pure.config import BackboneConfig, InferConfig, RestoreConfig, SamplingConfig
from pure.generate import generate
from pure.model import load_backbone, load_tokenizer, load_vocab, quiet_peft, resolve_source
from pure.sequence import TextTokenizer, conversation, split_answer
from pure.tiling import TileBlender, output_size, pad_to, padded_size, tile_boxes
from pure.tiny import write_tiny_checkpoint
from pure.vocab import GRID_PX, Vocab
from pure.vq import VQModel, image_to_tensor, load_vq, tensor_to_image


@dataclass
class Restoration:
    """What one image's restoration produced."""

    image: Image.Image
    """The restored image, ``round(w * scale) x round(h * scale)``; RGBA when the input had alpha."""
    degradation: str
    """The perceived degradation sentence (e.g. "Medium blur, small noise.")."""
    description: str
    """The content description."""
    tile_answers: list[str]
    """The whole text answer of every tile, in tile order."""
    seed: int
    """Seed of the first tile's sampler (tile i uses seed + i)."""
    timings: dict[str, float] = field(default_factory=dict)
    """Seconds spent per stage: encode, generate, decode, colorfix, total."""
    entropy_map: np.ndarray | None = None
    """``[H, W]`` float32: each pixel's latent token entropy (nats), blended like the tiles."""


def split_text(answer: str) -> tuple[str, str]:
    """The answer text -> (degradation sentence, description): the first sentence, then the rest."""
    answer = answer.strip()
    end = answer.find(".")
    if end < 0:
        return answer, ""
    return answer[: end + 1].strip(), answer[end + 1 :].strip()


class Restorer:
    """Loaded models plus settings; :meth:`restore` handles one image."""

    def __init__(
        self,
        model,
        tokenizer: TextTokenizer,
        vocab: Vocab,
        vq: VQModel,
        sampling: SamplingConfig,
        restore: RestoreConfig,
        model_revision: str = "",
    ) -> None:
        if restore.tile % GRID_PX:
            raise ValueError(f"restore.tile={restore.tile} must be a multiple of {GRID_PX}")
        if restore.compile not in ("auto", "on", "off"):
            raise ValueError(f"restore.compile={restore.compile!r} must be auto, on or off")
        self.model, self.tokenizer, self.vocab, self.vq = model, tokenizer, vocab, vq
        self.sampling, self.settings = sampling, restore
        self.model_revision = model_revision

    @classmethod
    def from_config(cls, cfg: InferConfig) -> Restorer:
        """Load backbone, tokenizer and VQ as ``cfg`` says (``tiny`` sources build random models)."""
        device = pick_device(cfg.device)
        dtype = torch.float32 if device.type == "cpu" else getattr(torch, cfg.dtype)
        folder = backbone_folder(cfg.backbone)
        model = load_backbone(str(folder), device=device, dtype=dtype)
        if cfg.backbone.adapter:
            with quiet_peft():
                from peft import PeftModel

                model = PeftModel.from_pretrained(model, cfg.backbone.adapter).merge_and_unload()
        tokenizer = load_tokenizer(str(folder))
        vocab = load_vocab(tokenizer, str(folder))
        vq = load_vq(cfg.vq.source, device=device, cfg=cfg.vq)
        return cls(
            model, tokenizer, vocab, vq, cfg.sampling, cfg.restore, model_revision=describe_source(folder)
        )

    def restore(
        self,
        image: Image.Image,
        seed: int | None = None,
        caption: str | None = None,
        alpha: Image.Image | None = None,
        on_step=None,
    ) -> Restoration:
        """Restore one RGB image (:func:`pure.images.read_image`); ``seed`` defaults to ``sampling.seed``."""
        settings, tile = self.settings, self.settings.tile
        seed = self.sampling.seed if seed is None else seed
        caption = self.settings.caption if caption is None else caption
        timings = dict.fromkeys(("encode", "generate", "decode", "colorfix"), 0.0)
        start = time.perf_counter()
        out_w, out_h = output_size(image.width, image.height, settings.outscale)
        upsampled = image.resize((out_w, out_h), Image.BICUBIC)
        canvas = pad_to(image_to_tensor(upsampled), *padded_size(out_h, out_w, tile))
        boxes = tile_boxes(out_h, out_w, tile, settings.tile_overlap)
        blender = TileBlender(out_h, out_w, tile, settings.tile_overlap)
        entropy_blender = TileBlender(out_h, out_w, tile, settings.tile_overlap, channels=1)
        answers: list[str] = []
        device = self.model.device
        for first in range(0, len(boxes), settings.batch_size):
            batch = boxes[first : first + settings.batch_size]
            tick = time.perf_counter()
            lq = torch.stack([box.crop(canvas) for box in batch]).to(device)
            codes = self.vq.encode(lq.to(next(self.vq.parameters()).dtype))
            prompts = [
                conversation(self.tokenizer, self.vocab, c.cpu(), answer_text=caption)[0] for c in codes
            ]
            timings["encode"] += time.perf_counter() - tick
            tick = time.perf_counter()
            out = generate(
                self.model,
                [p.to(device) for p in prompts],
                self.vocab,
                self.sampling,
                seeds=[seed + first + i for i in range(len(batch))],
                on_step=on_step,
                image_grids=(tile // GRID_PX, tile // GRID_PX),
                max_text_tokens=settings.max_text_tokens,
                stop_after_image=True,
                cuda_graph=settings.compile == "on" or (settings.compile == "auto" and device.type == "cuda"),
            )
            timings["generate"] += time.perf_counter() - tick
            tick = time.perf_counter()
            for i, box in enumerate(batch):
                answer = split_answer(out.ids[i], self.tokenizer, self.vocab)
                if answer.codes is None:
                    raise RuntimeError(
                        f"tile {first + i}: the answer ended before a complete image "
                        f"(sampling.max_new_tokens={self.sampling.max_new_tokens} is too small?)"
                    )
                answers.append((caption + " " + answer.text).strip() if caption else answer.text)
                restored = self.vq.decode(answer.codes[None].to(device))[0]
                blender.add(restored.float().cpu(), box)
                entropy_blender.add(_entropy_grid(out.ids[i], out.entropy[i], self.vocab, tile), box)
            timings["decode"] += time.perf_counter() - tick
        tick = time.perf_counter()
        result = color_fix(tensor_to_image(blender.result()), upsampled, settings.color_fix)
        if alpha is not None:
            result.putalpha(alpha.resize((out_w, out_h), Image.BICUBIC))
        timings["colorfix"] = time.perf_counter() - tick
        timings["total"] = time.perf_counter() - start
        degradation, description = split_text(answers[0])
        return Restoration(
            result, degradation, description, answers, seed, timings, entropy_blender.result()[0].numpy()
        )

    def settings_dict(self) -> dict:
        """The sampling and restore settings, for sidecars."""
        parts = {"sampling": self.sampling, "restore": self.settings}
        return {name: OmegaConf.to_container(OmegaConf.structured(part)) for name, part in parts.items()}


def _entropy_grid(ids: torch.Tensor, entropy: torch.Tensor, vocab: Vocab, tile: int) -> torch.Tensor:
    """Per-code entropies of an answer's image, as ``[1, tile, tile]`` (each code covers 8x8 pixels)."""
    body = vocab.is_image[ids] & (torch.cumsum(ids == vocab.image_start, 0) > 0)
    values = entropy[body].float()
    side = tile // 8
    if len(values) < side * side:
        values = torch.cat([values, torch.zeros(side * side - len(values))])
    grid = values[: side * side].view(1, 1, side, side)
    return torch.nn.functional.interpolate(grid, scale_factor=8, mode="nearest")[0]


def pick_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; anything else as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def backbone_folder(cfg: BackboneConfig) -> Path:
    """The checkpoint folder for ``cfg``: resolved from the hub or disk, or a cached tiny model."""
    if cfg.source != "tiny":
        return resolve_source(cfg.source, cfg.revision)
    sizes = dict(
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_layers=cfg.num_layers,
        num_heads=cfg.num_heads,
    )
    key = hashlib.sha1(repr((cfg.seed, sorted(sizes.items()))).encode()).hexdigest()[:12]
    cache = Path(os.environ.get("PURE_CACHE", Path.home() / ".cache" / "pure")) / f"tiny-{key}"
    if not (cache / "model.safetensors.index.json").is_file():
        cache.parent.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(dir=cache.parent, prefix=".tiny-"))
        write_tiny_checkpoint(scratch, seed=cfg.seed, **sizes)
        try:
            scratch.rename(cache)
        except OSError:  # another process finished first
            shutil.rmtree(scratch, ignore_errors=True)
    return cache


def describe_source(folder: Path) -> str:
    """A model folder's revision for sidecars: the hub snapshot hash, or the folder path."""
    return f"{folder.parent.parent.name}@{folder.name}" if folder.parent.name == "snapshots" else str(folder)
