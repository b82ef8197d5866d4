"""The web demo of ``scripts/app.py``: upload a photo, watch it restore, compare before and after, and
read what the model perceived.

One restoration here is one run of :func:`pure.infer.restore_plan` on the uploaded file, with the
models ``scripts/infer.py`` loads and a per-job copy of its sampling and restore settings: the same
reader, pipeline, sidecar and writers, nothing duplicated. The models are loaded once and shared;
jobs queue and run one at a time (the model lives on one device), and no job changes another's
settings. Gradio is imported only by :func:`build_demo`, so the rest of this module (and
``scripts/app.py --help``) works without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import gc
import json
import logging
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from PIL import Image

from pure.config import BackboneConfig, InferConfig, RestoreConfig, SamplingConfig, check_fields
from pure.errors import PureError
from pure.images import read_header, read_image
from pure.infer import restore_plan, run_info
from pure.pipeline import check_answer_budget
from pure.plan import plan_outputs
from pure.restoration import Restoration
from pure.sampling import ENTROPY_CEILING
from pure.sequence import answer_length, largest_tile
from pure.vocab import GRID_PX

MAX_UPLOAD = "50mb"
"""Largest file the page accepts; Gradio refuses bigger uploads before they reach a job."""
TINY_NOTICE = (
    "**The tiny random model is loaded** (`backbone.source: tiny`): its weights are deterministic "
    "noise, so the restored image and the texts below are noise too. This page then shows how the "
    "pipeline works on the CPU, not what PURE can do; load the released weights for real restorations."
)

log = logging.getLogger(__name__)


class DemoError(PureError):
    """A job the page refuses or that failed; the message is one line for the page."""


class JobCancelled(BaseException):
    """Raised in a job's thread at its next progress report once its page cancelled it (Stop, the page
    closed). Not an ``Exception``: nothing on the way counts it as the image's failure, and the job's
    folder goes with it."""


@dataclass
class JobSettings:
    """What the page sets for one restoration; everything else comes from the loaded config."""

    outscale: float
    """Output scale relative to the input (``restore.outscale``)."""
    tile: int
    """Model tile size in pixels, a multiple of 32 (``restore.tile``)."""
    seed: int
    """Seed of the first tile (``sampling.seed``)."""
    cfg_scale: float
    """Classifier-free guidance (``sampling.cfg_scale``)."""
    temperature: float
    """Sampling temperature (``sampling.temperature``)."""
    color_fix: str
    """wavelet, adain or none (``restore.color_fix``)."""
    caption: str = ""
    """Optional description the model continues from (``restore.caption``)."""
    entropy_map: bool = False
    """Also write and show the entropy map."""
    quantize: str | None = None
    """``backbone.quantize`` for this job (None: the schema has no such key, or keep the loaded one)."""
    kv_cache: str = "model"
    """How the KV cache stores keys and values (``restore.kv_cache``): model or int8."""


@dataclass
class DemoResult:
    """What one job gives the page."""

    before: Image.Image
    """The input upscaled bicubically to the output size (RGB): the slider's left side."""
    image: Path
    """The restored PNG (what ``scripts/infer.py`` writes)."""
    sidecar: Path
    """Its JSON sidecar."""
    entropy: Path | None
    """The entropy map PNG, when asked for."""
    degradation: str
    """The perceived degradation sentence."""
    description: str
    """The content description."""
    summary: str
    """One line: sizes, tiles, tokens, seconds, device, quantisation, seed."""


def quantize_choices() -> tuple[str, ...] | None:
    """The closed choices of ``backbone.quantize``, or None when the schema has no such key."""
    for item in dataclasses.fields(BackboneConfig):
        if item.name == "quantize":
            return tuple(item.metadata.get("choices", ()))
    return None


def field_choices(schema: type, name: str) -> tuple[str, ...]:
    """The closed choices of the field ``name`` of ``schema`` (:func:`pure.config.choice`)."""
    return next(item.metadata["choices"] for item in dataclasses.fields(schema) if item.name == name)


def smallest_tile(overlap: int) -> int:
    """The smallest tile (a multiple of 32 px) larger than ``overlap`` px, as tiling requires."""
    return (overlap // GRID_PX + 1) * GRID_PX


def job_settings(cfg: InferConfig, job: JobSettings) -> tuple[SamplingConfig, RestoreConfig]:
    """Copies of ``cfg.sampling`` and ``cfg.restore`` with the page's values, checked like a config file's.

    Raises:
        ConfigError: a value outside its choices or below its minimum (``restore.tile=16: ...``), or a
            tile whose answer cannot fit in ``sampling.max_new_tokens``.
        DemoError: a tile that is not a multiple of 32 px or not larger than ``restore.tile_overlap``, a
            number box left empty, or a seed that is not a whole number.
    """
    boxes = {
        "outscale": "Scale",
        "tile": "Tile size",
        "seed": "Seed",
        "cfg_scale": "Guidance",
        "temperature": "Temperature",
    }
    for name, label in boxes.items():  # a number box the user cleared arrives as None
        value = getattr(job, name)
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise DemoError(f"the {label} box is empty: enter a number")
    if job.seed != int(job.seed):  # the box passes what was typed; rounding would hide another seed
        raise DemoError(f"seed {job.seed}: enter a whole number")  # as typed (:g would cut it to 6 digits)
    sampling = dataclasses.replace(
        cfg.sampling, seed=int(job.seed), cfg_scale=float(job.cfg_scale), temperature=float(job.temperature)
    )
    restore = dataclasses.replace(
        cfg.restore,
        outscale=float(job.outscale),
        tile=int(job.tile),
        color_fix=job.color_fix,
        caption=(job.caption or "").strip(),
        kv_cache=job.kv_cache,
    )
    if restore.tile % GRID_PX or restore.tile < smallest_tile(restore.tile_overlap):  # the page's words
        raise DemoError(
            f"tile {restore.tile} px: choose a multiple of {GRID_PX} px of at least "
            f"{smallest_tile(restore.tile_overlap)} (restore.tile_overlap={restore.tile_overlap})"
        )
    check_fields(sampling, "sampling.")
    check_fields(restore, "restore.")
    check_answer_budget(sampling, restore)
    return sampling, restore


def check_upload(path: Path, max_side: int) -> tuple[int, int]:
    """The uploaded image's ``(width, height)``, read without decoding its pixels.

    Raises:
        DemoError: an image larger than ``max_side`` px on its longer side, or a file the reader
            refuses (named by its file name, not the server's temporary path).
    """
    try:
        header = read_header(path)
    except PureError as err:
        raise DemoError(str(err).replace(str(path), path.name)) from err
    width, height = header.size
    if max(width, height) > max_side:
        raise DemoError(
            f"{path.name} is {width}x{height} px; this page restores images up to {max_side} px on the "
            f"longer side (scripts/app.py --max-side): crop or shrink it first, or use scripts/infer.py"
        )
    return width, height


def upload_image(gr, max_side: int, **kwargs):
    """Gradio's image upload (``gr.Image(type="filepath")``), except that a file Pillow cannot open (a
    text file, a HEIC photo without pillow-heif) is refused with pure's one line (:func:`check_upload`'s)
    instead of Gradio's bare "Error". ``kwargs`` go to ``gr.Image``.

    The component's own ``preprocess`` is wrapped on the instance: a subclass would make Gradio write a
    ``.pyi`` stub beside this module and look for a front-end component of the subclass's name."""
    upload = gr.Image(type="filepath", **kwargs)
    gradio_preprocess = upload.preprocess

    def preprocess(payload):
        try:
            return gradio_preprocess(payload)
        except gr.Error:
            raise
        except Exception as err:
            path = Path(payload.path) if payload is not None and payload.path else None
            if path is None:
                raise
            try:
                check_upload(path, max_side)
            except DemoError as refused:
                raise gr.Error(str(refused), print_exception=False) from err
            raise gr.Error(
                f"{path.name}: not a readable image ({type(err).__name__})", print_exception=False
            ) from err

    upload.preprocess = preprocess
    return upload


class JobProgress:
    """Counts one job's tiles and tokens and reports ``(fraction done, one line)`` as it goes.

    The fraction within a batch is an estimate: each answer is at most ``restore.max_text_tokens`` of
    text plus the tile's image block, and a batch ends when its longest answer does.
    """

    def __init__(self, report: Callable[[float, str], object], restore: RestoreConfig) -> None:
        self.report = report
        self.answer_bound = answer_length(restore.tile, restore.max_text_tokens)
        self.tiles = self.done = self.batch = self.batch_tokens = self.tokens = 0

    def on_batch(self, first: int, size: int, tiles: int) -> None:
        """The pipeline starts answering ``size`` tiles from tile ``first`` of ``tiles``
        (:meth:`pure.pipeline.Restorer.restore`'s ``on_batch``); the tiles before ``first`` are done."""
        if self.tiles == 0:
            self.tiles = tiles
            self.report(0.0, f"0 of {tiles} tile(s) restored")
        elif first > self.done:
            self.done = first
            self.report(first / tiles, f"{first} of {tiles} tile(s) restored")
        self.batch, self.batch_tokens = size, 0

    def step(self, tokens: int) -> None:
        """``tokens`` more decoding steps of the current batch (``generate``'s ``on_step``); each step
        writes one token in every row of the batch (rows that finished early count until it ends)."""
        self.batch_tokens += tokens
        self.tokens += tokens * self.batch
        within = min(self.batch_tokens / self.answer_bound, 0.99)
        first = self.done + 1
        self.report(
            (self.done + within * self.batch) / max(self.tiles, 1),
            f"tiles {first}-{self.done + self.batch} of {self.tiles}: {self.tokens:,} tokens",
        )

    def finish(self) -> None:
        """Every tile is answered; what remains is decoding, blending and writing."""
        self.done = self.tiles
        self.report(1.0, f"{self.tiles} of {self.tiles} tile(s) restored; colour fix and writing the files")


class LoadedRestorer(Protocol):
    """What the page needs of the loaded restorer (a :class:`pure.pipeline.Restorer` is one)."""

    model: torch.nn.Module

    def with_settings(self, sampling: SamplingConfig, restore: RestoreConfig) -> LoadedRestorer: ...

    def restore(self, image: Image.Image, **hooks) -> Restoration: ...


class ReportingRestorer:
    """One job's restorer (``base`` with the job's settings, sharing its models) that tells a
    :class:`JobProgress` how many tiles there are and how each batch advances."""

    def __init__(
        self, base: LoadedRestorer, sampling: SamplingConfig, restore: RestoreConfig, progress: JobProgress
    ) -> None:
        self.restorer, self.progress = base.with_settings(sampling, restore), progress

    def restore(self, image: Image.Image, alpha: Image.Image | None = None, on_step=None) -> Restoration:
        progress = self.progress
        result = self.restorer.restore(image, alpha=alpha, on_step=progress.step, on_batch=progress.on_batch)
        progress.finish()
        return result


class Models:
    """The loaded restorer, reloaded only when a job asks for another ``backbone.quantize``.

    Jobs run one at a time (:func:`launch` queues them), so a reload never pulls the model from under
    a running job; the lock keeps it so if that ever changes.
    """

    def __init__(
        self, cfg: InferConfig, restorer: LoadedRestorer, load: Callable[[InferConfig], LoadedRestorer]
    ) -> None:
        self.cfg, self.current, self.load = cfg, restorer, load
        self.lock = threading.Lock()

    @property
    def quantize(self) -> str | None:
        """The loaded backbone's ``backbone.quantize`` (None without the key)."""
        return getattr(self.cfg.backbone, "quantize", None)

    def restorer(self, quantize: str | None = None) -> LoadedRestorer:
        """The restorer for ``quantize`` (None: the loaded one); frees the old backbone before loading."""
        with self.lock:
            if self.current is None or (quantize is not None and quantize != self.quantize):
                backbone = self.cfg.backbone
                if quantize is not None:
                    backbone = dataclasses.replace(backbone, quantize=quantize)
                cfg = dataclasses.replace(self.cfg, backbone=backbone)
                check_fields(cfg)
                self.current = None
                gc.collect()
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                self.current, self.cfg = self.load(cfg), cfg
            return self.current


def restore_upload(
    path: Path,
    job: JobSettings,
    models: Models,
    output: Path,
    max_side: int,
    report: Callable[[float, str], object] = lambda fraction, line: None,
) -> DemoResult:
    """Restore the uploaded file ``path`` as ``scripts/infer.py`` would, into a new folder under ``output``.

    ``report(fraction, line)`` receives the progress (tiles and tokens); what it raises stops the job and
    removes its folder (:func:`cancellable` raises :class:`JobCancelled`). Raises :class:`DemoError` or
    another :class:`PureError` with one line for the page.
    """
    width, height = check_upload(path, max_side)
    sampling, restore = job_settings(models.cfg, job)
    folder = Path(tempfile.mkdtemp(prefix=f"{path.stem[:40]}-", dir=output))
    try:
        plan = plan_outputs(path, folder, ext="png", entropy=job.entropy_map)
        if plan.failed:
            raise DemoError(plan.failed[0].replace(str(path), path.name))
        base = models.restorer(job.quantize)
        progress = JobProgress(report, restore)
        restorer = ReportingRestorer(base, sampling, restore, progress)
        summary = restore_plan(plan, restorer, run_info(models.cfg), progress=False)
        if summary.failed:
            raise DemoError(summary.failed[0].replace(str(path), path.name))
    except BaseException:  # a failure, JobCancelled, Ctrl-C
        shutil.rmtree(folder, ignore_errors=True)  # this job's own folder: no empty or partial results left
        raise
    written = plan.jobs[0]
    sidecar = json.loads(written.sidecar.read_text(encoding="utf-8"))
    with Image.open(written.image) as restored:
        size = restored.size
    before = read_image(path).rgb.resize(size, Image.BICUBIC)
    quantized = f", quantisation {models.quantize}" if models.quantize is not None else ""
    line = (
        f"{width}x{height} -> {size[0]}x{size[1]} px (x{restore.outscale:g}), {progress.tiles} tile(s) of "
        f"{restore.tile} px, {progress.tokens:,} tokens, {sidecar['timings_s']['total']:.1f} s on "
        f"{base.model.device}{quantized}, seed {sampling.seed}"
    )
    return DemoResult(
        before,
        written.image,
        written.sidecar,
        written.entropy,
        sidecar["degradation"],
        sidecar["description"],
        line,
    )


def model_line(models: Models) -> str:
    """Which backbone, VQ and device the page runs, for its header."""
    restorer, cfg = models.current, models.cfg
    quantized = f", quantisation {models.quantize} at start" if models.quantize is not None else ""
    return (
        f"Backbone `{restorer.model_revision}`{quantized}, VQ `{cfg.vq.source}`, on "
        f"`{restorer.model.device}`. Jobs queue and run one at a time."
    )


def _restore_handler(gr, models: Models, output: Path, max_side: int):
    """The Restore button's handler: ``run(upload, outscale, ..., kv_cache, quantize)`` -> the values of
    the result column (slider pair, degradation, description, summary, entropy image, downloads). A
    mistake is one line on the page (``gr.Error``); a bug is one line there and its traceback in the
    server's log. Runs the job in a worker thread that Gradio's Stop cancels (:func:`cancellable`)."""

    async def run(
        upload: str | None,
        outscale: float,
        tile: int,
        seed: int,
        cfg_scale: float,
        temperature: float,
        color_fix: str,
        caption: str,
        entropy_map: bool,
        kv_cache: str = "model",
        quantize: str | None = None,
        progress=gr.Progress(),  # noqa: B008 (Gradio finds its progress bar by this default)
    ):
        if not upload:
            raise gr.Error("Upload a photo first.", print_exception=False)
        job = JobSettings(
            outscale,
            tile,
            seed,
            cfg_scale,
            temperature,
            color_fix,
            caption,
            bool(entropy_map),
            quantize,
            kv_cache,
        )

        def work(check: Callable[[], None]) -> DemoResult:
            def report(fraction: float, line: str) -> None:
                check()
                progress(fraction, desc=line)

            return restore_upload(Path(upload), job, models, output, max_side, report)

        try:
            result = await cancellable(work)
        except PureError as err:  # a mistake: one line on the page, no traceback in the log
            raise gr.Error(str(err), print_exception=False) from err
        except Exception as err:  # a bug: one line on the page, the traceback in the server's log
            log.exception("restoring %s failed", upload)
            first = (str(err).splitlines() or [""])[0]
            raise gr.Error(
                f"unexpected {type(err).__name__}: {first} (the server log has the details)",
                print_exception=False,  # logged once, above
            ) from err
        entropy = (
            gr.Image(value=str(result.entropy), visible=True) if result.entropy else gr.Image(visible=False)
        )
        return (
            (result.before, str(result.image)),
            result.degradation,
            result.description,
            result.summary,
            entropy,
            [str(result.image), str(result.sidecar)],
        )

    return run


def build_demo(models: Models, output: Path, max_side: int, examples: list[Path] | None = None):
    """The page as a ``gradio.Blocks`` (not launched): upload, settings, before/after slider, the
    model's texts, entropy map, downloads, progress. ``output``: where each job's folder goes."""
    import gradio as gr

    cfg = models.cfg
    choices = quantize_choices()
    run = _restore_handler(gr, models, output, max_side)

    with gr.Blocks(title="PURE: perceive, understand and restore", delete_cache=(3600, 3600)) as demo:
        gr.Markdown(
            "# PURE: perceive, understand and restore\nUpload a low-quality photo. The model first says "
            "what degradation it perceives and describes the content, then writes the restored image."
        )
        if cfg.backbone.source == "tiny":
            gr.Markdown(TINY_NOTICE, elem_id="tiny-notice")
        gr.Markdown(model_line(models), elem_id="model-line")
        with gr.Row():
            with gr.Column(scale=2):
                upload = upload_image(
                    gr,
                    max_side,
                    image_mode=None,
                    sources=["upload", "clipboard"],
                    label=f"Low-quality photo (up to {max_side} px on the longer side)",
                    elem_id="upload",
                )
                inputs = [upload, *_settings(gr, cfg)]
                entropy_map = gr.Checkbox(label="Show the entropy map (where the model was unsure)")
                inputs.append(entropy_map)
                inputs.append(
                    gr.Radio(
                        list(field_choices(RestoreConfig, "kv_cache")),
                        value=cfg.restore.kv_cache,
                        label="KV cache (restore.kv_cache)",
                        info="int8: about half the cache memory; not exact, a seed gives other images",
                    )
                )
                if choices is not None:
                    inputs.append(
                        gr.Dropdown(
                            list(choices),
                            value=models.quantize,
                            label="Quantisation (backbone.quantize)",
                            info="another choice reloads the backbone before the job",
                        )
                    )
                button = gr.Button("Restore", variant="primary", elem_id="restore")
                if examples:
                    gr.Examples([[str(p)] for p in examples], inputs=[upload], label="Samples")
            with gr.Column(scale=3):
                slider = gr.ImageSlider(
                    label="Before (bicubic) | after (PURE)", type="pil", format="png", elem_id="compare"
                )
                degradation = gr.Textbox(
                    label="Perceived degradation", interactive=False, elem_id="degradation"
                )
                description = gr.Textbox(
                    label="Description", lines=3, interactive=False, elem_id="description"
                )
                status = gr.Markdown(label="Summary", elem_id="status")
                entropy = gr.Image(
                    label=f"Entropy map: each code's sampling entropy (white = {ENTROPY_CEILING:g} nats)",
                    visible=False,
                    format="png",
                    elem_id="entropy",
                )
                files = gr.File(
                    label="Download: the restored PNG and its JSON sidecar",
                    file_count="multiple",
                    interactive=False,
                    elem_id="downloads",
                )
        button.click(
            run,
            inputs,
            [slider, degradation, description, status, entropy, files],
            api_name="restore",
            concurrency_limit=1,
            concurrency_id="model",
        )
    return demo


async def cancellable(work: Callable[[Callable[[], None]], DemoResult]) -> DemoResult:
    """``work(check)`` in a worker thread. When the awaiting task is cancelled (Gradio's Stop, a closed
    page), ``check()`` raises :class:`JobCancelled` in the thread at its next call (a job done before that
    call has its folder removed), and the cancellation waits for the thread to end: Gradio frees the job's
    place in the queue when the task ends, and would otherwise start the next job beside the cancelled
    one, still running on the same model (and writing its files for nobody)."""
    import anyio

    stop = threading.Event()

    def check() -> None:
        if stop.is_set():
            raise JobCancelled

    worker = asyncio.ensure_future(anyio.to_thread.run_sync(work, check))
    try:
        return await asyncio.shield(worker)
    except asyncio.CancelledError:
        stop.set()
        while not worker.done():  # cancelled again (Stop pressed twice): the thread is still waited for
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait([worker])
        if worker.exception() is None:  # done past its last check (writing): nobody takes its files
            shutil.rmtree(worker.result().image.parent, ignore_errors=True)
        raise


def _settings(gr, cfg: InferConfig) -> list:
    """The per-job settings controls, initialised from ``cfg``, in :class:`JobSettings` order."""
    restore, sampling = cfg.restore, cfg.sampling
    low = smallest_tile(restore.tile_overlap)
    with gr.Accordion("Settings", open=True):
        with gr.Row():
            outscale = gr.Slider(
                min(1, restore.outscale),
                max(8, restore.outscale),
                value=restore.outscale,
                step=0.5,
                label="Scale",
            )
            tile = gr.Slider(
                low,
                max(low, largest_tile(sampling.max_new_tokens, restore.max_text_tokens)),  # whose answer fits
                value=restore.tile,
                step=GRID_PX,
                label="Tile size (px)",
                info="the released model works at 512",
            )
        with gr.Row():
            seed = gr.Number(value=sampling.seed, label="Seed", info="a whole number; tile i uses seed + i")
            cfg_scale = gr.Slider(
                0, 4, value=sampling.cfg_scale, step=0.05, label="Guidance", info="1 disables it"
            )
            temperature = gr.Slider(0.05, 2, value=sampling.temperature, step=0.05, label="Temperature")
        color_fix = gr.Radio(
            list(field_choices(RestoreConfig, "color_fix")), value=restore.color_fix, label="Colour fix"
        )
        caption = gr.Textbox(
            value=restore.caption,
            label="Caption (optional)",
            placeholder="the answer's opening, continued by the model: degradation, then description, "
            "e.g. Slight blur, mild noise. A cat on a mat.",
        )
    return [outscale, tile, seed, cfg_scale, temperature, color_fix, caption]


def check_port(host: str, port: int | None) -> None:
    """Raise :class:`DemoError` when the server could not listen on ``host:port`` (in use, or a host that is
    not this machine's): checked before the models load, which takes minutes. ``port`` None: Gradio picks
    a free one (the host is still checked, on a port the system picks)."""
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            # as the server binds (uvicorn sets it): the connections of a server just stopped, which linger
            # for a minute (TIME_WAIT), do not hold the port; a server listening on it still does
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port or 0))
    except OSError as err:  # socket.gaierror (a name that does not resolve) is an OSError too
        reason = err.strerror or str(err)
        if port is not None and err.errno == errno.EACCES:
            raise DemoError(
                f"cannot serve on {host}:{port} ({reason}): "
                "ports below 1024 need root; pass --port 1024 or more"
            ) from err
        if port is None or err.errno != errno.EADDRINUSE:
            raise DemoError(
                f"cannot serve on --host {host} ({reason}): pass an address of this machine, e.g. 127.0.0.1 "
                "(this machine only) or 0.0.0.0 (every network interface)"
            ) from err
        raise DemoError(
            f"cannot serve on {host}:{port} ({reason}): pass another --port or stop the server using it"
        ) from err


def launch(
    demo,
    host: str = "127.0.0.1",
    port: int | None = None,
    share: bool = False,
    folders: list[Path] | None = None,
    block: bool = True,
):
    """Queue one job at a time and serve ``demo``: until Ctrl-C or SIGTERM, or with ``block=False``
    return once it listens (tests).

    ``folders``: where the page's files live outside the working directory and the temporary folder
    (the job outputs, the samples); Gradio serves no other file."""
    demo.queue(default_concurrency_limit=1)
    try:
        demo.launch(
            server_name=host,
            server_port=port,
            share=share,
            max_file_size=MAX_UPLOAD,
            allowed_paths=[str(folder) for folder in folders or ()],
            prevent_thread_lock=True,
            quiet=True,
        )
    except OSError as err:  # Gradio: no free port in its range, or the port was taken since the check
        raise DemoError(
            f"cannot start the server ({' '.join(str(err).split())}); pass another --port"
        ) from err
    if block:
        public = f" and {demo.share_url}" if demo.share_url else ""
        print(f"the demo is at {demo.local_url}{public} (Ctrl-C stops it)", flush=True)
        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:  # the CLI's own handler gives exit 143
            signal.signal(signal.SIGTERM, _interrupt)
        try:  # not Gradio's block_thread: it swallows Ctrl-C, and the exit code would say all went well
            while demo.is_running:
                time.sleep(0.1)
        finally:
            demo.close()
    return demo


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM (a service manager, ``kill``) stops the server like Ctrl-C, so temporary files go too."""
    raise KeyboardInterrupt


@contextlib.contextmanager
def _gradio_cache(folder: Path) -> Iterator[None]:
    """Gradio's own copies of uploads, examples and results (by default in ``/tmp/gradio``, which Gradio
    keeps after it stops) go into ``folder`` while the server runs, so they go with it; a
    ``GRADIO_TEMP_DIR`` the user set is kept."""
    if os.environ.get("GRADIO_TEMP_DIR"):
        yield
        return
    os.environ["GRADIO_TEMP_DIR"] = str(folder)
    try:
        yield
    finally:
        os.environ.pop("GRADIO_TEMP_DIR", None)


@contextlib.contextmanager
def scratch_folder() -> Iterator[Path]:
    """A server's temporary folder (``TMPDIR/pure-demo-*``), removed when it stops, with Gradio's own copies
    inside it (:func:`_gradio_cache`). Gradio reads ``GRADIO_TEMP_DIR`` when it is imported: enter this
    before the first ``import gradio``."""
    with tempfile.TemporaryDirectory(prefix="pure-demo-") as scratch, _gradio_cache(Path(scratch) / "gradio"):
        yield Path(scratch)


def serve(
    models: Models,
    scratch: Path,
    host: str = "127.0.0.1",
    port: int | None = None,
    share: bool = False,
    *,
    max_side: int,
    output: Path | None = None,
) -> None:
    """Build and serve the page until Ctrl-C or SIGTERM. Each job's files go to a new folder under
    ``output`` (default: ``scratch``, from :func:`scratch_folder`); the page offers the images of
    ``data/samples`` when this is a source checkout."""
    samples = Path(__file__).resolve().parents[1] / "data" / "samples"
    examples = sorted(samples.glob("*.png")) if samples.is_dir() else None
    folder = Path(output or scratch)
    folder.mkdir(parents=True, exist_ok=True)
    demo = build_demo(models, folder, max_side, examples)
    launch(demo, host, port, share, [folder, *([samples] if examples else [])])
