"""Perceive -> understand -> restore, for one image of any size.

The model answers in one turn: a sentence perceiving the degradation, a description of the
content, then the restored image as VQ tokens. :meth:`Restorer.restore` runs four named stages:

1. **prepare tiles**: bicubic-upsample the input to the output size, pad it, cut overlapping
   tiles (:mod:`pure.tiling`) and turn each into a prompt of VQ codes (:mod:`pure.vq`,
   :mod:`pure.sequence`);
2. **answer**: one batched generation per group of tiles writes each tile's perceived
   degradation, description and restored image tokens (:mod:`pure.generate`);
3. **decode**: the VQ decoder turns each answer's image tokens into pixels;
4. **blend and colour fix**: the tiles are blended back and colour-fixed against the upsampled
   input (:mod:`pure.colorfix`).
"""

from __future__ import annotations

import copy
import dataclasses
import numbers
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from pure.colorfix import color_fix
from pure.config import (
    SEED_LIMIT,
    ConfigError,
    InferConfig,
    RestoreConfig,
    SamplingConfig,
    check_fields,
    named,
)
from pure.errors import PureError, from_here
from pure.generate import Generation, generate
from pure.images import rgb_and_alpha
from pure.memory import BatchLog, auto_batch_size, fit_batches, free_bytes, prefill_bytes, tile_cache_bytes
from pure.model import (
    backbone_folder,
    check_lora_config,
    describe_source,
    load_backbone,
    load_text_side,
    merge_lora_adapter,
    pick_device,
)
from pure.plan import output_memory_error
from pure.quantize import check_adapter
from pure.restoration import STAGES, Restoration
from pure.sequence import TextTokenizer, answer_length, block_length, conversation, largest_tile, split_answer
from pure.speculative import generate_speculative
from pure.tiling import Box, TileBlender, output_size, pad_to, padded_size, tile_boxes
from pure.vocab import CODE_PX, GRID_PX, Vocab
from pure.vq import VQModel, image_to_tensor, load_vq, tensor_to_image


@dataclass
class Tiles:
    """One image prepared for the model (stage 1)."""

    upsampled: Image.Image
    """The bicubic-upsampled input at the output size: the colour fix's reference."""
    canvas: torch.Tensor
    """``[3, H, W]`` in [-1, 1]: ``upsampled`` padded to whole tiles."""
    boxes: list[Box]
    """The tiles, in row-major order."""


class StageClock:
    """Seconds per named stage: ``with clock("decode"): ...`` adds the block's time to that stage."""

    def __init__(self, stages: tuple[str, ...] = STAGES) -> None:
        self.timings = dict.fromkeys(stages, 0.0)
        self.start = time.perf_counter()

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        tick = time.perf_counter()
        try:
            yield
        finally:
            self.timings[stage] += time.perf_counter() - tick

    def result(self) -> dict[str, float]:
        """The stage timings plus ``total`` (since the clock was made)."""
        return {**self.timings, "total": time.perf_counter() - self.start}


def check_answer_budget(
    sampling: SamplingConfig, restore: RestoreConfig, flags: Mapping[str, str] | None = None
) -> None:
    """Refuse a ``sampling.max_new_tokens`` too small for one tile's whole answer: up to
    ``restore.max_text_tokens`` of text, then the image block (SPEC section 2: start, two size tokens,
    ``n`` rows of ``n`` codes and an end-of-row, end; ``n = tile / 8``), so that no answer can end before
    its image is complete. Also refuses a ``restore.draft_len`` longer than that image block: no window of
    drafts can be longer than what is left to write, and its buffers would grow with it. ``flags``: the
    keys a script's flags set, named as typed (:func:`pure.config.named`). Raises :class:`ConfigError`."""
    side = restore.tile // CODE_PX
    if restore.speculative != "none" and restore.draft_len > block_length(side, side):
        raise ConfigError(
            f"{named('restore.draft_len', restore.draft_len, flags)}: a {restore.tile} px tile's image has "
            f"{block_length(side, side)} tokens, so no more can be drafted; pass a smaller one (default 8)"
        )
    needed = answer_length(restore.tile, restore.max_text_tokens)
    if sampling.max_new_tokens < needed:
        largest = largest_tile(sampling.max_new_tokens, restore.max_text_tokens)
        tile = (
            f"{flags['restore.tile'].split()[0]} {largest}"
            if "restore.tile" in (flags or {})
            else (f"restore.tile={largest}")
        )
        lower = f"{tile} or less" if largest else "restore.max_text_tokens"
        raise ConfigError(
            f"sampling.max_new_tokens={sampling.max_new_tokens}: a {restore.tile} px tile's answer can take "
            f"{needed} tokens (up to restore.max_text_tokens={restore.max_text_tokens} of text, then its "
            f"{block_length(side, side)}-token image); raise it (default 8192) or pass {lower}"
        )


def check_adapter_folder(adapter: str) -> None:
    """Refuse, before anything loads, a ``backbone.adapter`` that is not a LoRA adapter folder (one with
    peft's ``adapter_config.json``) and does not look like a hub repository id (``owner/name``)."""
    if not adapter:
        return
    folder = Path(adapter)
    if folder.is_dir() and (folder / "adapter" / "adapter_config.json").is_file():
        raise PureError(
            f"backbone.adapter={adapter} is a training checkpoint; pass its adapter subfolder: "
            f"--adapter {folder / 'adapter'}"
        )
    if folder.is_dir() and not (folder / "adapter_config.json").is_file():
        raise PureError(
            f"backbone.adapter={adapter}: no adapter_config.json in that folder; pass the adapter/ folder of "
            "a checkpoint that scripts/train.py wrote with LoRA (outputs/RUN/checkpoints/step-NNNNNN/adapter)"
        )
    if folder.is_dir():
        check_lora_config(folder)
    if folder.exists() and not folder.is_dir():
        raise PureError(f"backbone.adapter={adapter} is a file; pass the adapter's folder")
    if not folder.exists() and adapter.count("/") != 1:
        raise PureError(f"backbone.adapter={from_here(adapter)} does not exist; pass a LoRA adapter folder")


class RestoreArgumentError(PureError, TypeError):
    """An argument of :meth:`Restorer.restore` of the wrong kind, size or range (also a ``TypeError``)."""


def _kind(value: object) -> str:
    """How an error names what it was given: the type, with a shape and dtype for arrays and tensors."""
    kind = f"{type(value).__module__.replace('builtins', '').replace('PIL.', '')}.{type(value).__qualname__}"
    shape = getattr(value, "shape", None)
    details = f" of shape {tuple(shape)} {getattr(value, 'dtype', '')}" if shape is not None else ""
    return kind.lstrip(".") + details.rstrip()


def check_restore_arguments(image: object, seed: object, caption: object, alpha: object) -> int | None:
    """Refuse, before any work, what :meth:`Restorer.restore` cannot take: an image that is not a PIL image
    (an array, a tensor, a path or :func:`pure.images.read_image`'s result: the message says how to make
    one), a seed that is not an integer within +-2^62, a caption that is not text, an alpha that is not a
    mode ``L`` image of the image's size. -> the seed as a plain int (or None). Raises
    :class:`RestoreArgumentError`."""
    if not isinstance(image, Image.Image):
        if hasattr(image, "rgb") and hasattr(image, "alpha"):
            fix = "pass its .rgb, and alpha=its .alpha"
        else:
            fix = (
                "Image.fromarray(array) takes an H x W x 3 (or H x W) uint8 array; "
                "pure.images.read_image(path) reads a file: pass its .rgb, and alpha=its .alpha"
            )
        raise RestoreArgumentError(f"image: expected a PIL image, got {_kind(image)}; {fix}")
    if seed is not None:
        if not isinstance(seed, numbers.Integral) or isinstance(seed, bool):
            raise RestoreArgumentError(
                f"seed={seed!r}: expected an integer (tile i is sampled with seed + i)"
            )
        if abs(int(seed)) > SEED_LIMIT:
            raise RestoreArgumentError(
                f"seed={seed}: must be within +-2^62 (tile i is sampled with seed + i)"
            )
        seed = int(seed)
    if caption is not None and not isinstance(caption, str):
        raise RestoreArgumentError(f"caption: expected a str (or None), got {_kind(caption)}")
    if alpha is not None and (
        not isinstance(alpha, Image.Image) or alpha.mode != "L" or alpha.size != image.size
    ):
        got = f"{alpha.mode} {alpha.width}x{alpha.height}" if isinstance(alpha, Image.Image) else _kind(alpha)
        raise RestoreArgumentError(
            f"alpha: expected a mode L image of the image's size {image.width}x{image.height}, got {got}"
        )
    return seed


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
        self.model, self.tokenizer, self.vocab, self.vq = model, tokenizer, vocab, vq
        self.sampling, self.settings = sampling, restore
        self.model_revision = model_revision
        self.check_settings()

    def check_settings(self) -> None:
        """Refuse settings the config schema refuses (:func:`pure.config.check_fields`) or too small a token
        budget (:func:`check_answer_budget`): made here, by :meth:`with_settings` or changed on the object
        (``restorer.settings.tile = 96``) between calls, they would fail only after generating, or not at
        all (a temperature of 0). Raises :class:`ConfigError` naming the setting, or
        :class:`RestoreArgumentError` for settings that are not the schema's sections."""
        for name, value, schema in (
            ("sampling", self.sampling, SamplingConfig),
            ("restore", self.settings, RestoreConfig),
        ):
            if not isinstance(value, schema):
                raise RestoreArgumentError(
                    f"{name}: expected a pure.config.{schema.__name__} "
                    f"(load_config(InferConfig, ...).{name}), got {_kind(value)}"
                )
        check_fields(self.sampling, "sampling.")
        check_fields(self.settings, "restore.")
        check_answer_budget(self.sampling, self.settings)

    @classmethod
    def from_config(cls, cfg: InferConfig) -> Restorer:
        """Load backbone, tokenizer and VQ as ``cfg`` says (``tiny`` sources build random models); its
        settings are checked first, as :meth:`check_settings` checks them, before anything loads."""
        if not isinstance(cfg, InferConfig):
            raise RestoreArgumentError(
                f"cfg: expected a pure.config.InferConfig, got {_kind(cfg)}; make one with "
                "pure.config.load_config(InferConfig, 'configs/tiny.yaml', ['restore.outscale=2'])"
            )
        check_fields(cfg)
        check_answer_budget(cfg.sampling, cfg.restore)
        device = pick_device(cfg.device)
        dtype = torch.float32 if device.type == "cpu" else getattr(torch, cfg.dtype)
        check_adapter(cfg.backbone.quantize, cfg.backbone.adapter)
        check_adapter_folder(cfg.backbone.adapter)
        folder = backbone_folder(cfg.backbone)
        model = load_backbone(str(folder), device=device, dtype=dtype, quantize=cfg.backbone.quantize)
        if cfg.backbone.adapter:
            model = merge_lora_adapter(model, cfg.backbone.adapter)
        tokenizer, vocab = load_text_side(folder)
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
        on_step: Callable[[int], object] | None = None,
        on_batch: Callable[[int, int, int], object] | None = None,
    ) -> Restoration:
        """Restore one PIL image (:func:`pure.images.read_image` reads a file) through the four stages. An
        image of another mode than RGB is converted as a file's pixels are
        (:func:`pure.images.rgb_and_alpha`: 16-bit and float greyscale rescaled, transparency kept as the
        alpha when ``alpha`` is not given). Arguments of the wrong kind raise :class:`RestoreArgumentError`
        before any work (:func:`check_restore_arguments`), settings the schema refuses :class:`ConfigError`.

        ``seed`` defaults to ``sampling.seed`` (tile i uses ``seed + i``); ``caption`` (default
        ``restore.caption``) steers the answer; ``alpha`` (``L``, input size) is upscaled bicubically
        and re-attached; ``on_step(n)`` is called with the number of new tokens as generation goes;
        ``on_batch(first, size, tiles)`` before each batch of ``size`` tiles from tile ``first`` of
        ``tiles`` is answered (again when a batch is halved after an out-of-memory).
        """
        seed = check_restore_arguments(image, seed, caption, alpha)
        if image.mode != "RGB" or "transparency" in image.info:  # converted as read_image converts a file's
            image, own_alpha = rgb_and_alpha(image)
            alpha = own_alpha if alpha is None else alpha
        self.check_settings()
        if too_big := output_memory_error(image.size, self.settings.outscale, "a restore.outscale"):
            raise ConfigError(f"restore.outscale={self.settings.outscale!r}: {too_big}")
        seed = self.sampling.seed if seed is None else seed
        caption = self.settings.caption if caption is None else caption
        clock = StageClock()
        with clock("prepare"):
            tiles = self.prepare_tiles(image)
        tile, overlap = self.settings.tile, self.settings.tile_overlap
        height, width = tiles.upsampled.height, tiles.upsampled.width
        pixels = TileBlender(height, width, tile, overlap)
        entropy = TileBlender(height, width, tile, overlap, channels=1)
        answers: list[str] = []
        batches = BatchLog(requested=self.settings.batch_size, chosen=self.batch_size(tiles, caption))

        def answer(first: int, boxes: list[Box]) -> Generation:  # no side effects: retried on out-of-memory
            if on_batch is not None:
                on_batch(first, len(boxes), len(tiles.boxes))
            with clock("prepare"):
                prompts = self.prompts(tiles, boxes, caption)
            with clock("answer"):
                return self.answer(prompts, [seed + first + i for i in range(len(boxes))], on_step)

        for first, boxes, out in fit_batches(tiles.boxes, batches, answer):
            with clock("decode"):
                for i, box in enumerate(boxes):
                    text, restored = self.decode(out, i, first + i, caption)
                    answers.append(text)
                    pixels.add(restored, box)
                    entropy.add(_entropy_grid(out.ids[i], out.entropy[i], self.vocab, tile), box)
        with clock("blend"):
            result = self.blend(pixels, tiles.upsampled, alpha)
        degradation, description = split_text(answers[0])
        return Restoration(
            result,
            degradation,
            description,
            answers,
            seed,
            clock.result(),
            entropy.result()[0].numpy(),
            batches=batches.as_dict(),
            settings=self.settings_dict(),
            model=self.model_revision,
            device=f"{self.model.device} {str(self.model.dtype).removeprefix('torch.')}",
        )

    # ------------------------------------------------------------------------------ the stages

    def prepare_tiles(self, image: Image.Image) -> Tiles:
        """Stage 1: upsample ``image`` to the output size (bicubic), pad it and cut the tiles."""
        settings = self.settings
        out_w, out_h = output_size(image.width, image.height, settings.outscale)
        upsampled = image.resize((out_w, out_h), Image.BICUBIC)
        canvas = pad_to(image_to_tensor(upsampled), *padded_size(out_h, out_w, settings.tile))
        return Tiles(upsampled, canvas, tile_boxes(out_h, out_w, settings.tile, settings.tile_overlap))

    def batch_size(self, tiles: Tiles, caption: str) -> int:
        """``restore.batch_size`` with ``auto`` resolved (:mod:`pure.memory`): the most tiles whose KV cache
        and prefill fit in the device's free memory after a margin, at most the image's tile count."""
        if self.settings.batch_size != "auto":
            return int(self.settings.batch_size)
        side = self.settings.tile // CODE_PX
        blank = torch.zeros(side, side, dtype=torch.long)
        prompt = len(conversation(self.tokenizer, self.vocab, blank, answer_text=caption)[0])
        config, dtype, settings = self.model.config, self.model.dtype, self.settings
        drafts = settings.draft_len if settings.speculative != "none" else 0
        per_tile = tile_cache_bytes(
            config,
            dtype,
            prompt,
            self.sampling,
            settings.tile,
            settings.max_text_tokens,
            settings.kv_cache,
            drafts,
        ) + prefill_bytes(config, prompt, dtype)
        return auto_batch_size(free_bytes(self.model.device), per_tile, limit=len(tiles.boxes))

    def prompts(self, tiles: Tiles, boxes: list[Box], caption: str) -> list[torch.Tensor]:
        """Stage 1, per batch: each tile's LQ codes in the instruction prompt -> ``[T]`` int64 ids each."""
        lq = torch.stack([box.crop(tiles.canvas) for box in boxes]).to(self.model.device)
        codes = self.vq.encode(lq.to(next(self.vq.parameters()).dtype))
        return [
            conversation(self.tokenizer, self.vocab, c.cpu(), answer_text=caption)[0].to(self.model.device)
            for c in codes
        ]

    def answer(
        self, prompts: list[torch.Tensor], seeds: list[int], on_step: Callable[[int], object] | None = None
    ) -> Generation:
        """Stage 2: perceive, understand and restore: one batched generation of every tile's answer."""
        settings, side = self.settings, self.settings.tile // GRID_PX
        layout = dict(
            seeds=seeds,
            on_step=on_step,
            image_grids=(side, side),
            max_text_tokens=settings.max_text_tokens,
            stop_after_image=True,
            cuda_graph=settings.compile == "on"
            or (settings.compile == "auto" and self.model.device.type == "cuda"),
            kv_cache=settings.kv_cache,
        )
        if settings.speculative == "none":
            return generate(self.model, prompts, self.vocab, self.sampling, **layout)
        return generate_speculative(
            self.model,
            prompts,
            self.vocab,
            self.sampling,
            settings.speculative,
            settings.draft_len,
            **layout,
        )

    def decode(self, out: Generation, row: int, tile: int, caption: str) -> tuple[str, torch.Tensor]:
        """Stage 3: row ``row`` of ``out`` -> (its answer text, its tile ``[3, T, T]`` in [-1, 1])."""
        bad = int((~torch.isfinite(out.entropy[row])).sum())
        if bad:  # NaN scores rank first in top-k: the answer is noise, never an image worth writing
            raise PureError(f"tile {tile}: {self._not_finite(bad, len(out.entropy[row]))}")
        answer = split_answer(out.ids[row], self.tokenizer, self.vocab)
        if answer.codes is None:
            raise PureError(
                f"tile {tile}: the answer ended before a complete image "
                f"(sampling.max_new_tokens={self.sampling.max_new_tokens} is too small?)"
            )
        text = (caption + " " + answer.text).strip() if caption else answer.text
        restored = self.vq.decode(answer.codes[None].to(self.model.device))[0]
        return text, restored.float().cpu()

    def _not_finite(self, bad: int, steps: int) -> str:
        """Why the model's scores were NaN or infinite and what to do (Chameleon overflows in float16)."""
        what = f"the model's scores were NaN or infinite at {bad} of {steps} steps, so its answer is noise"
        if self.model.dtype == torch.float16:
            return (
                f"{what}: the backbone overflows in float16 (Chameleon models are trained in bfloat16); run "
                "with --dtype bfloat16 (dtype=bfloat16), or float32 on a GPU without bfloat16"
            )
        return f"{what}: the backbone's weights may be damaged; download or copy the model folder again"

    def blend(self, pixels: TileBlender, upsampled: Image.Image, alpha: Image.Image | None) -> Image.Image:
        """Stage 4: the blended tiles, colour-fixed against ``upsampled``; ``alpha`` re-attached if given."""
        result = color_fix(tensor_to_image(pixels.result()), upsampled, self.settings.color_fix)
        if alpha is not None:
            result.putalpha(alpha.resize(upsampled.size, Image.BICUBIC))
        return result

    # ------------------------------------------------------------------ tiles shared across processes

    def answer_tiles(self, tiles: Tiles, indices: list[int]) -> dict[int, tuple[torch.Tensor, ...]]:
        """Answer the tiles ``indices`` of ``tiles`` (:meth:`prepare_tiles`) as :meth:`restore` answers
        them: the same seeds (``sampling.seed`` + tile index) and caption, in consecutive batches of
        :meth:`batch_size` (halved on out-of-memory). -> ``{seed: (ids, entropy, kept, p_token)}``, CPU
        tensors ``[n]`` of each tile's answer (:mod:`pure.distributed` gathers them across processes)."""
        self.check_settings()
        caption, seed = self.settings.caption, self.sampling.seed
        batches = BatchLog(requested=self.settings.batch_size, chosen=self.batch_size(tiles, caption))

        def answer(first: int, group: list[int]) -> Generation:
            prompts = self.prompts(tiles, [tiles.boxes[t] for t in group], caption)
            return self.answer(prompts, [seed + t for t in group])

        return {
            seed + t: tuple(column[i].cpu() for column in (out.ids, out.entropy, out.kept, out.p_token))
            for _, group, out in fit_batches(indices, batches, answer)
            for i, t in enumerate(group)
        }

    def replaying(self, answers: dict[int, tuple[torch.Tensor, ...]]) -> Restorer:
        """A copy whose answer stage returns the given tile answers (:meth:`answer_tiles`' format) instead
        of generating, so :meth:`restore` decodes, blends and colour-fixes them exactly as its own. A tile
        without an answer raises ``KeyError``."""

        def answer(prompts: list[torch.Tensor], seeds: list[int], on_step=None) -> Generation:
            ids, entropy, kept, p_token = (list(c) for c in zip(*[answers[s] for s in seeds], strict=True))
            return Generation(ids=ids, entropy=entropy, kept=kept, p_token=p_token)

        replay = copy.copy(self)
        replay.answer = answer
        return replay

    def with_settings(self, sampling: SamplingConfig, restore: RestoreConfig) -> Restorer:
        """A restorer sharing these models, with other sampling and restore settings (one demo job's)."""
        return Restorer(
            self.model, self.tokenizer, self.vocab, self.vq, sampling, restore, self.model_revision
        )

    def settings_dict(self) -> dict:
        """The sampling and restore settings, for sidecars."""
        parts = {"sampling": self.sampling, "restore": self.settings}
        return {name: dataclasses.asdict(part) for name, part in parts.items()}  # values as they are


def _entropy_grid(ids: torch.Tensor, entropy: torch.Tensor, vocab: Vocab, tile: int) -> torch.Tensor:
    """Per-code entropies of an answer's image, as ``[1, tile, tile]`` (each code covers 8x8 pixels)."""
    body = vocab.is_image[ids] & (torch.cumsum(ids == vocab.image_start, 0) > 0)
    values = entropy[body].float()
    side = tile // CODE_PX
    if len(values) < side * side:
        values = torch.cat([values, torch.zeros(side * side - len(values))])
    grid = values[: side * side].view(1, 1, side, side)
    return torch.nn.functional.interpolate(grid, scale_factor=CODE_PX, mode="nearest")[0]
