"""Restore the files of a :class:`pure.plan.Plan`: read each with :func:`pure.images.read_image`,
restore it, write the image, its JSON sidecar and optionally its entropy map, and count what was
restored, skipped and failed. Used by ``scripts/infer.py`` and ``scripts/benchmark.py``."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image
from tqdm import tqdm

from pure.config import InferConfig, RestoreConfig
from pure.errors import one_line
from pure.files import out_of_space, write_atomic, write_text_atomic
from pure.images import ImageReadError, is_marked, read_image, save_marked, srgb_profile
from pure.plan import Job, Plan
from pure.restoration import Restoration
from pure.sampling import ENTROPY_CEILING
from pure.tiling import tile_count


class ImageRestorer(Protocol):
    """What :func:`restore_plan` needs of a restorer (:class:`pure.pipeline.Restorer` is one)."""

    def restore(
        self,
        image: Image.Image,
        alpha: Image.Image | None = None,
        on_step: Callable[[int], object] | None = None,
    ) -> Restoration: ...


ALPHA_NOTE = "RGB restored from the image composited on white; alpha resized bicubically and re-attached"


@dataclass
class Summary:
    """What a run did; restored, skipped and failed are counted separately."""

    output: Path
    restored: int = 0
    skipped: int = 0
    """Inputs whose output already existed (``--skip-existing``)."""
    failed: list[str] = field(default_factory=list)
    not_images: int = 0
    """Files of the input folder that are not images."""
    interrupted: bool = False

    @classmethod
    def of(cls, plan: Plan) -> Summary:
        """The counts a plan starts with: its skipped inputs and the files that failed at planning."""
        return cls(
            plan.output, skipped=len(plan.existing), failed=list(plan.failed), not_images=len(plan.not_images)
        )

    def line(self) -> str:
        parts = [
            f"{self.restored} restored",
            f"{self.skipped} skipped (output exists)",
            f"{len(self.failed)} failed",
        ]
        if self.not_images:
            parts.append(f"{self.not_images} non-image file(s) ignored")
        where = f"outputs in {self.output}" if self.restored or self.skipped else "nothing written"
        return one_line(", ".join(parts) + f"; {where}")

    def exit_code(self) -> int:
        """130 when interrupted, 1 when any input failed, else 0."""
        return 130 if self.interrupted else 1 if self.failed else 0


def save_outputs(
    result: Restoration,
    job: Job,
    sidecar: dict,
    icc_profile: bytes | None,
    replace_other_format: bool = False,
) -> None:
    """The image (sRGB; the profile embedded when given), its sidecar and the entropy map, each atomically.

    With ``replace_other_format`` (``--overwrite``), replacing an earlier result (its sidecar exists) written
    in the other format (``--ext`` changed) removes that image once the new one is whole, if it has pure's
    mark: the sidecar describes one image, and two outputs of one name would not pair in evaluation."""
    replacing = replace_other_format and job.sidecar.exists()
    jpeg = job.image.suffix == ".jpg"
    image = result.image.convert("RGB") if jpeg else result.image
    options = {"quality": 95} if jpeg else {}
    if icc_profile:
        options["icc_profile"] = icc_profile
    write_atomic(job.image, lambda p: save_marked(image, p, jpeg, **options))
    write_text_atomic(job.sidecar, json.dumps(sidecar, indent=2))
    if job.entropy is not None and result.entropy_map is not None:
        values = np.clip(result.entropy_map / ENTROPY_CEILING, 0, 1) * 255
        heat = Image.fromarray(values.astype(np.uint8), "L")
        write_atomic(job.entropy, lambda p: save_marked(heat, p, jpeg=False))
    for stale in [job.image.with_suffix(".png"), job.image.with_suffix(".jpg")] if replacing else []:
        if stale not in (job.image, job.source) and stale.is_file() and is_marked(stale):
            stale.unlink()


def run_info(cfg: InferConfig) -> dict:
    """What every sidecar of a run records about its models besides the backbone's revision."""
    return {"vq": cfg.vq.source, "adapter": cfg.backbone.adapter or None, "quantize": cfg.backbone.quantize}


SAME_IMAGE_SETTINGS = frozenset({"restore.batch_size", "restore.compile", "sampling.max_new_tokens"})
"""Settings that never change an output: a row's draws depend only on its seed and position, never on
its batch; a CUDA graph writes the eager step's tokens; and the token budget is checked to hold a whole
answer (:func:`pure.pipeline.check_answer_budget`), so a larger one writes the same answer."""


def changed_settings(job: Job, cfg: InferConfig) -> list[str]:
    """How ``cfg`` differs from the settings that made ``job``'s existing output, as its sidecar records
    them (``restore.outscale 2 -> 4``; also the VQ source, adapter and quantisation), leaving out
    :data:`SAME_IMAGE_SETTINGS`. Empty when they agree or the sidecar cannot be read (nothing to compare)."""
    try:
        sidecar = json.loads(job.sidecar.read_text(encoding="utf-8"))
        recorded = {**_flat(sidecar["settings"]), **{key: sidecar[key] for key in run_info(cfg)}}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return []
    now = {**_flat({"sampling": asdict(cfg.sampling), "restore": asdict(cfg.restore)}), **run_info(cfg)}
    return [
        f"{key} {recorded[key]} -> {value}"
        for key, value in now.items()
        if key in recorded and recorded[key] != value and key not in SAME_IMAGE_SETTINGS
    ]


def _flat(tree: dict, prefix: str = "") -> dict:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def work_line(plan: Plan, settings: RestoreConfig) -> str:
    """What the run is about to do, once the models have loaded: images and tiles in all (a tile is one
    model answer, minutes each on a GPU for the 7B), so that a setting that multiplies the work (a large
    ``--outscale``, ``--tile-overlap`` near ``--tile``) shows before the hours it costs."""
    tiles = sum(
        tile_count(*job.size, settings.outscale, settings.tile, settings.tile_overlap)
        for job in plan.jobs
        if job.size is not None
    )
    return (
        f"to restore: {len(plan.jobs)} image(s) at {settings.outscale:g}x, {tiles:,} tile(s) of "
        f"{settings.tile} px (overlap {settings.tile_overlap} px), one model answer each"
    )


def restore_plan(plan: Plan, restorer: ImageRestorer, run_info: dict, progress: bool = True) -> Summary:
    """Restore every job of ``plan``; one bad file never stops the run, Ctrl-C stops it cleanly, and so does a
    full disk (every later image would fail at its write, after minutes of work each).

    ``run_info`` (model, VQ source, ...) is added to every sidecar. A file being written when the
    run is interrupted is removed, never left half written.
    """
    summary = Summary.of(plan)
    bar = tqdm(plan.jobs, desc="images", unit="img", disable=not progress)
    try:
        for job in bar:
            bar.set_postfix_str(one_line(job.source.name))
            try:
                _restore_one(job, restorer, run_info, progress, plan.overwrite)
                summary.restored += 1
            except Exception as err:  # one bad file must not stop the run
                message = str(err) if str(job.source) in str(err) else f"{job.source}: {err}"
                summary.failed.append(message)
                tqdm.write(one_line(f"failed: {message}"), file=sys.stderr)
                if out_of_space(err, job.image.parent):  # a full disk fails every later image as well
                    left = len(plan.jobs) - summary.restored - len(summary.failed) + len(plan.failed)
                    tqdm.write(
                        one_line(
                            f"stopped: no space left on the device of {plan.output} ({left} image(s) not "
                            "started); free space, then run the same command with --skip-existing"
                        ),
                        file=sys.stderr,
                    )
                    break
    except KeyboardInterrupt:
        summary.interrupted = True
    finally:
        bar.close()
    return summary


def _restore_one(
    job: Job, restorer: ImageRestorer, run_info: dict, progress: bool, overwrite: bool = False
) -> None:
    read = read_image(job.source)
    for note in read.notes:
        tqdm.write(f"note: {note}", file=sys.stderr)
    if read.alpha is not None and job.image.suffix == ".jpg":  # planned without alpha: JPEG would drop it
        raise ImageReadError(
            f"{job.source}: has transparency now but had none when the run was planned (changed during the "
            "run?); not restored: run again to restore it as PNG"
        )
    with tqdm(desc="tokens", unit="tok", leave=False, disable=not progress) as tokens:
        result = restorer.restore(read.rgb, alpha=read.alpha, on_step=tokens.update)
    sidecar = {
        "input": str(job.source),
        "output": str(job.image),
        "input_size": list(read.rgb.size),
        "read": read.info,
        "color_profile": f"{read.icc_profile!r} -> sRGB; sRGB profile embedded" if read.icc_profile else None,
        **result.sidecar(),
        **run_info,
        "alpha": ALPHA_NOTE if read.alpha is not None else None,
        "entropy_map": str(job.entropy) if job.entropy else None,
    }
    save_outputs(result, job, sidecar, srgb_profile() if read.icc_profile else None, overwrite)
