"""Plan a restoration run before any model loads: which files are inputs, where each output goes,
and everything that would go wrong later (collisions, an output replacing an input, existing
outputs, an output folder that cannot be written, files that are not readable images).

Naming: ``INPUT_DIR/sub/NAME.EXT`` -> ``OUTPUT_DIR/sub/NAME[_SUFFIX].png|jpg`` with the sidecar
``NAME[_SUFFIX].json`` beside it and the entropy map in ``OUTPUT_DIR/entropy/sub/`` (a subfolder,
so that no image lister takes the maps for restorations). When two inputs would share any output
file (``holiday.jpg`` and ``holiday.png`` share ``holiday.json``), both keep their extension in
the name: ``holiday.jpg.jpg`` + ``holiday.jpg.json`` and ``holiday.png.png`` + ``holiday.png.json``.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from pure.errors import PureError, from_here, one_line
from pure.images import (
    IMAGE_SUFFIXES,
    Header,
    ImageReadError,
    is_image_name,
    is_marked,
    read_header,
    read_image,
    scan_folder,
    unreadable_format,
)

ENTROPY_FOLDER = "entropy"
"""Subfolder of the output folder that holds the entropy maps."""
JPEG_SUFFIXES = (".jpg", ".jpeg", ".jpe", ".jfif")
JPEG_MAX_SIDE = 65_500
"""Largest width or height libjpeg writes (pixels); larger outputs are written as PNG or refused."""

CANVAS_BYTES_PER_PIXEL = 24
"""Bytes per output pixel of a restoration's blending canvases alone (:class:`pure.tiling.TileBlender`:
the image's three channels and their weight sum, the entropy map and its weight sum, float32): a lower
bound of the memory an output needs, checked against the machine's memory before any model loads."""

INPUT_BYTES_PER_PIXEL = 15
"""Bytes per input pixel that reading an image needs at the least: Pillow's decoded 8-bit RGB (3) and the
float32 RGB tensor the pipeline makes of it (12); checked, like the canvases, before any model loads (a
file's header may claim any size: a 69-byte PNG can claim 2,000,000 x 2,000,000 px)."""


class PlanError(PureError, ValueError):
    """The run cannot start; the message says why and what to do, in one line (:func:`one_line`: the
    paths it names may hold line breaks)."""

    def __init__(self, message: str) -> None:
        super().__init__(one_line(message))


@dataclass
class Job:
    """One input and the files its restoration writes."""

    source: Path
    image: Path
    sidecar: Path
    entropy: Path | None = None
    size: tuple[int, int] | None = None
    """The input's upright ``(width, height)`` in pixels, from its header when planned."""

    def outputs(self) -> list[Path]:
        return [p for p in (self.image, self.sidecar, self.entropy) if p is not None]


@dataclass
class Plan:
    """Every input sorted into work to do, work already done and files that cannot be used."""

    output: Path
    jobs: list[Job] = field(default_factory=list)
    existing: list[Job] = field(default_factory=list)
    """Inputs skipped because their output exists (``--skip-existing``)."""
    failed: list[str] = field(default_factory=list)
    """One line per input that is not a readable still image."""
    not_images: list[Path] = field(default_factory=list)
    """Files of the input folder that are not images (skipped, not failed)."""
    unsearched: list[Path] = field(default_factory=list)
    """Subfolders of the input folder that were not searched (no ``--recursive``) and hold other images than
    pure's outputs."""
    unsearched_outputs: list[Path] = field(default_factory=list)
    """Subfolders not searched whose images all carry pure's mark (an earlier run's outputs, such as
    ``photos/restored``): ``--recursive`` would skip them too."""
    previous_outputs: list[Path] = field(default_factory=list)
    """Images of the input folder that an earlier run wrote there: those another input would write (the
    same ``--suffix``), and, where the input and output folders overlap or with ``--recursive``, every
    image carrying pure's mark (any suffix). Not restored again, so a rerun does not restore its own
    outputs, nor a recursive run those of an earlier run in a subfolder."""
    output_not_searched: bool = False
    """The output folder lies inside the input folder and holds images: they were not searched."""
    overwrite: bool = False
    """Earlier outputs are replaced (``--overwrite``)."""
    png_for_alpha: list[Path] = field(default_factory=list)
    """Inputs with transparency written as PNG although ``--ext jpg`` asked for JPEG (which has no alpha)."""


def check_output_folder(output: Path) -> None:
    """Raise :class:`PlanError` unless ``output`` is, or can become, a writable folder."""
    if output.exists() and not output.is_dir():
        raise PlanError(f"-o {output} is a file; -o takes a folder (outputs are named after their inputs)")
    if not output.exists() and output.suffix.lower() in IMAGE_SUFFIXES:
        raise PlanError(
            f"-o {output} looks like an image file name, but -o takes a folder (outputs are named after "
            f"their inputs); pass a folder, e.g. -o {output.with_suffix('')}"
        )
    try:
        output.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=output):
            pass
    except OSError as err:
        raise PlanError(
            f"cannot write into the output folder {output} ({err.strerror or err}); pass another -o"
        ) from err


def _output_names(
    relative: Path, suffix: str, ext: str, has_alpha: bool, keep_ext: bool, too_big_for_jpeg: bool = False
) -> tuple[str, str]:
    """-> (output stem relative to the output folder, output extension)."""
    source_ext = relative.suffix.lower()
    png = (
        has_alpha or ext == "png" or (ext == "auto" and (source_ext not in JPEG_SUFFIXES or too_big_for_jpeg))
    )
    if png:
        extension = ".png"
    else:
        extension = ".jpg"
    name = relative.name if keep_ext else relative.stem
    stem = (relative.parent / f"{name}{'_' + suffix if suffix else ''}").as_posix()
    return stem, extension


def _job(source: Path, output: Path, stem: str, extension: str, entropy: bool, size: tuple[int, int]) -> Job:
    return Job(
        source,
        output / f"{stem}{extension}",
        output / f"{stem}.json",
        output / ENTROPY_FOLDER / f"{stem}.png" if entropy else None,
        size,
    )


def _is_output(image: Path, job: Job) -> bool:
    """Whether ``image`` (an existing output of ``job``) is pure's: its sidecar exists or it has the mark."""
    return job.sidecar.exists() or is_marked(image)


def _inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` is ``folder`` or lies inside it (links resolved)."""
    path, folder = Path(os.path.realpath(path)), Path(os.path.realpath(folder))
    return path == folder or folder in path.parents


def _file_key(path: Path, fold_case: bool = True) -> str:
    """Collision key: the same file through symbolic links, and (``fold_case``) on case-insensitive file
    systems, where ``IMG.png`` and ``img.png`` are one file."""
    key = os.path.normcase(os.path.realpath(path))
    return key.casefold() if fold_case else key


def ignores_case(folder: Path) -> bool:
    """Whether the file system of ``folder`` (an existing, writable folder) treats names that differ
    only in case as one file (macOS and Windows by default; not Linux)."""
    try:
        with tempfile.NamedTemporaryFile(prefix=".pure-case-", dir=folder) as probe:
            name = Path(probe.name)
            return (name.parent / name.name.upper()).exists()
    except OSError:
        return True  # cannot tell: the cautious answer


def plan_outputs(
    source: Path,
    output: Path,
    suffix: str = "",
    ext: str = "auto",
    recursive: bool = False,
    existing: str = "fail",
    entropy: bool = False,
    outscale: float | None = None,
) -> Plan:
    """Plan the run that restores ``source`` (a file or a folder) into the folder ``output``.

    ``existing`` says what to do with outputs already on disk: ``fail`` (a :class:`PlanError`
    listing them), ``skip`` (an input whose outputs all exist is done: the sidecar is written after the
    image, so an interrupted one is restored again) or ``overwrite``. ``outscale``: the output size is
    ``round(side * outscale)``; a JPEG output beyond :data:`JPEG_MAX_SIDE` becomes PNG with ``ext`` auto,
    and fails that input otherwise. Raises :class:`PlanError` when the run cannot start: a missing input,
    no images, a suffix with a path separator, an unwritable output folder (or a subfolder of it that
    outputs go into, or a file in the place of one), outputs that collide, a link to
    nothing in an output's place, an
    output that would replace an input, or the input folder as the output folder without a suffix.

    Where the output and input folders overlap (one inside the other), an existing file is replaced only
    when it is pure's: its sidecar is beside it or it carries :data:`pure.images.OUTPUT_MARK` (so an
    output whose sidecar an interrupted run never wrote is still known). Anything else there is the
    user's, and refused whatever ``existing`` says. The output folder and its ``entropy`` subfolder are
    never searched for inputs.
    """
    if existing not in ("fail", "skip", "overwrite"):
        raise ValueError(f"existing must be fail, skip or overwrite, got {existing!r}")
    if any(c in suffix for c in ("/", "\\", "\0")):
        raise PlanError(f"--suffix {suffix!r} must be part of a file name: no '/' or '\\'")
    root, files, not_images, unsearched = _list_inputs(source, output, recursive)
    check_output_folder(output)
    fold = ignores_case(output)

    def key(path: Path) -> str:  # the collision key of this output folder's file system
        return _file_key(path, fold)

    plan = Plan(output, not_images=not_images, overwrite=existing == "overwrite")
    for folder in unsearched:
        (plan.unsearched_outputs if _holds_only_outputs(folder, output) else plan.unsearched).append(folder)
    plan.output_not_searched = (
        source.is_dir()
        and key(output) != key(source)
        and _inside(output, source)
        and any(is_image_name(p) for p in output.iterdir())
    )
    headers = _read_headers(files, plan.failed)
    # Restoring a folder into itself (or into a folder inside it, or around it), or a folder with its
    # subfolders (--recursive: photos/restored beside the photos): an image pure wrote there is an earlier
    # run's output, whatever its suffix, and is not restored again (a single file given by name is
    # restored as asked).
    if source.is_dir() and (recursive or _inside(output, root) or _inside(root, output)):
        plan.previous_outputs = [path for path, header in headers.items() if header.marked]
        for path in plan.previous_outputs:
            del headers[path]
    if outscale is not None:
        _drop_too_big_for_memory(headers, outscale, plan.failed)
    if ext == "jpg":
        headers = _alpha_as_read(headers)
    jobs = _name_jobs(headers, root, output, suffix, ext, entropy, outscale, key, plan.failed)
    _refuse_clashes(list(jobs.values()), output, key)
    if not suffix and any(key(job.image.parent) == key(job.source.parent) for job in jobs.values()):
        raise PlanError(
            f"restoring into the input folder ({output}) needs a --suffix (e.g. --suffix x4), so that "
            "outputs and inputs never mix; or pass another -o"
        )
    written = _written_by_other_inputs(jobs, key)
    for path in written:
        del jobs[path]
    plan.previous_outputs = sorted(plan.previous_outputs + written)
    _refuse_replacing(list(jobs.values()), output, root, suffix, key)
    _sort_by_existing(jobs, plan, existing, ext)
    _check_output_subfolders([out for job in plan.jobs for out in job.outputs()], output)  # not the skipped
    return plan


def _read_headers(files: list[Path], failed: list[str]) -> dict[Path, Header]:
    """Each readable file's header; a file whose header cannot be read fails (its line in ``failed``)."""
    headers = {}
    for path in files:
        try:
            headers[path] = read_header(path)
        except ImageReadError as err:
            failed.append(str(err))
    return headers


def _alpha_as_read(headers: dict[Path, Header]) -> dict[Path, Header]:
    """For ``--ext jpg``: a header's alpha channel or tRNS key may leave every pixel opaque, and the
    reader then drops it; such inputs are planned without alpha (a JPEG, not a PNG)."""
    return {
        path: header if not header.has_alpha or _transparent(path) else replace(header, has_alpha=False)
        for path, header in headers.items()
    }


def _name_jobs(
    headers: dict[Path, Header],
    root: Path,
    output: Path,
    suffix: str,
    ext: str,
    entropy: bool,
    outscale: float | None,
    key: Callable[[Path], str],
    failed: list[str],
) -> dict[Path, Job]:
    """One job per input, named after its path under ``root``. Inputs whose outputs would collide keep
    their extension in every name (``a.png`` and ``a.jpg`` -> ``a.png.png`` and ``a.jpg.jpg``). An output
    too large for JPEG with ``--ext jpg`` fails its input (its line in ``failed``)."""
    big = {path: _too_big_for_jpeg(header.size, outscale) for path, header in headers.items()}

    def job(path: Path, keep_extension: bool) -> Job:
        header = headers[path]
        relative = path.relative_to(root)
        names = _output_names(relative, suffix, ext, header.has_alpha, keep_extension, big[path])
        return _job(path, output, *names, entropy, header.size)

    jobs = {path: job(path, False) for path in headers}
    for path in _collisions(jobs.values(), key):
        jobs[path] = job(path, True)
    for path, planned in list(jobs.items()):
        if big[path] and planned.image.suffix == ".jpg":
            width, height = (round(side * outscale) for side in headers[path].size)
            failed.append(
                f"{path}: the {width} x {height} px output is too large for JPEG (at most "
                f"{JPEG_MAX_SIDE:,} px a side); pass --ext png or a smaller --outscale"
            )
            del jobs[path]
    return jobs


def _written_by_other_inputs(jobs: dict[Path, Job], key: Callable[[Path], str]) -> list[Path]:
    """Inputs that another input's job writes and that are pure's (the sidecar beside them, or pure's
    mark inside): an earlier run's outputs in a rerun into the input folder, not restored again. An
    input that is the user's is never replaced (:func:`_refuse_replacing` refuses the plan)."""
    planned = {key(out): job for job in jobs.values() for out in (job.image, job.entropy) if out is not None}
    return [
        path
        for path in jobs
        if (owner := planned.get(key(path))) is not None and owner.source != path and _is_output(path, owner)
    ]


def _sort_by_existing(jobs: dict[Path, Job], plan: Plan, existing: str, ext: str) -> None:
    """Refuse outputs already on disk (``existing="fail"``), or move the jobs whose outputs all exist to
    ``plan.existing`` (``"skip"``); the rest go to ``plan.jobs``."""
    present = [out for job in jobs.values() for out in job.outputs() if out.exists()]
    if present and existing == "fail":
        shown = ", ".join(map(str, present[:3])) + (" ..." if len(present) > 3 else "")
        raise PlanError(
            f"{len(present)} output file(s) already exist ({shown}); pass --overwrite to replace them "
            "or --skip-existing to keep them"
        )
    if ext == "jpg":
        plan.png_for_alpha = [path for path, job in jobs.items() if job.image.suffix == ".png"]
    for job in jobs.values():
        done = existing == "skip" and (
            all(out.exists() for out in job.outputs()) or _restored_as_other_format(job)
        )
        (plan.existing if done else plan.jobs).append(job)


def _list_inputs(
    source: Path, output: Path, recursive: bool
) -> tuple[Path, list[Path], list[Path], list[Path]]:
    """``source``'s inputs: (the folder names are relative to, image files, other files, subfolders not
    searched). Files of an image format Pillow does not read here count as images: they fail, with their
    format named. Raises :class:`PlanError` for a missing input, a pipe or device, or a folder without
    images."""
    if source.exists() and not source.is_dir() and not source.is_file():
        raise PlanError(f"input {source} is not a regular file or a folder (a pipe or a device?)")
    if source.is_file():
        return source.parent, [source], [], []
    if not source.is_dir():
        raise PlanError(f"input {from_here(source)} does not exist")
    scan = scan_folder(source, recursive, exclude=(output, output / ENTROPY_FOLDER))
    files = scan.images + [path for path in scan.skipped if unreadable_format(path)]
    if not files:
        raise PlanError(_no_images(source, scan.skipped, scan.subfolders, output))
    return source, files, [path for path in scan.skipped if not unreadable_format(path)], scan.subfolders


def _drop_too_big_for_memory(headers: dict[Path, Header], outscale: float, failed: list[str]) -> None:
    """Move the inputs this machine's memory cannot read, or whose output canvases at ``outscale`` it cannot
    hold, from ``headers`` to ``failed`` (one line each, with the largest ``--outscale`` that fits)."""
    memory = physical_memory()
    for path, header in list(headers.items()) if memory is not None else []:
        if header.size[0] * header.size[1] * INPUT_BYTES_PER_PIXEL > memory:
            failed.append(
                f"{path}: the {header.size[0]:,} x {header.size[1]:,} px input needs more memory than this "
                f"machine has ({memory / 2**30:.0f} GiB) just to be read; shrink or crop it first"
            )
            del headers[path]
        elif too_big := output_memory_error(header.size, outscale):
            failed.append(f"{path}: {too_big}")
            del headers[path]


def output_memory_error(size: tuple[int, int], outscale: float, setting: str = "an --outscale") -> str | None:
    """Why the output of an input of ``size`` (W, H) at ``outscale`` cannot be made in this machine's memory
    (its blending canvases alone, :data:`CANVAS_BYTES_PER_PIXEL`), naming the largest ``setting`` that fits;
    None when it fits or the system does not say how much memory it has."""
    memory = physical_memory()
    width, height = (round(side * outscale) for side in size)
    if memory is None or width * height * CANVAS_BYTES_PER_PIXEL <= memory:
        return None
    largest = (memory / CANVAS_BYTES_PER_PIXEL / (size[0] * size[1])) ** 0.5
    return (
        f"the {width:,} x {height:,} px output needs more memory than this machine has "
        f"({memory / 2**30:.0f} GiB) for its canvases alone; pass {setting} below {_round_down(largest)}"
    )


def _refuse_clashes(jobs: list[Job], output: Path, key: Callable[[Path], str]) -> None:
    """Raise :class:`PlanError` for outputs that still collide (``key``: the file system's name key) with
    their inputs' extensions kept, or whose names this file system cannot hold."""
    still = _collisions(jobs, key)
    if still:
        listed = ", ".join(str(p) for p in sorted(still)[:6])
        raise PlanError(
            f"inputs whose outputs would collide even with their extensions kept: {listed}; rename them"
        )
    limit = _name_max(output)
    too_long = [out for job in jobs for out in job.outputs() if len(os.fsencode(out.name)) > limit]
    if too_long:
        raise PlanError(
            f"the output name {too_long[0].name!r} is longer than this file system allows ({limit} bytes); "
            "shorten the input's name or the --suffix"
        )


def _refuse_replacing(
    jobs: list[Job], output: Path, root: Path, suffix: str, key: Callable[[Path], str]
) -> None:
    """Raise :class:`PlanError` for an output that would replace an input, a file pure did not write in
    the input's own folders, or a folder, or that is a link to nothing (writing through it would make the
    link's folders, wherever they are; ``cp`` refuses too)."""
    other = "another --suffix" if suffix else "a --suffix"
    inputs = {key(job.source) for job in jobs}
    replacing = [(job.source, out) for job in jobs for out in job.outputs() if key(out) in inputs]
    if replacing:
        source_path, out = replacing[0]
        raise PlanError(
            f"the output {out} of {source_path} would replace an input; pass another -o or {other}"
        )
    if _inside(output, root) or _inside(root, output):  # the input's own folders: only pure's files go
        originals = [
            (job.source, out)
            for job in jobs
            for out in (job.image, job.entropy)
            if out is not None and out.is_file() and not _is_output(out, job)
        ]
        if originals:
            source_path, out = originals[0]
            raise PlanError(
                f"the output {out} of {source_path} would replace {out.name}, which pure did not write (no "
                f"sidecar, no pure mark); pass another -o or {other}"
            )
    folders = [out for job in jobs for out in job.outputs() if out.is_dir()]
    if folders:
        raise PlanError(f"an output would replace the folder {folders[0]}; move it or pass another -o")
    dangling = [out for job in jobs for out in job.outputs() if out.is_symlink() and not out.exists()]
    if dangling:
        raise PlanError(
            f"the output {dangling[0]} is a link to {os.readlink(dangling[0])}, which does not exist; remove "
            "the link or pass another -o"
        )


def _restored_as_other_format(job: Job) -> bool:
    """Whether an earlier run restored ``job``'s input with another ``--ext``: its sidecar is there with
    pure's image of the other format (``a.png`` where ``a.jpg`` is planned) and the entropy map if one is
    planned. ``--skip-existing`` keeps that restoration instead of writing a second image whose sidecar
    would replace the first one's."""
    if (
        job.image.exists()
        or not job.sidecar.is_file()
        or (job.entropy is not None and not job.entropy.exists())
    ):
        return False
    others = [job.image.with_suffix(s) for s in (".png", ".jpg") if s != job.image.suffix]
    return any(other != job.source and other.is_file() and is_marked(other) for other in others)


def _check_output_subfolders(outputs: list[Path], output: Path) -> None:
    """Raise :class:`PlanError` when a folder below ``output`` that ``outputs`` go into (a subfolder
    mirrored by ``--recursive``, ``entropy/``) cannot hold them: a file (or a link to nothing) stands in
    its place, or it exists and cannot be written. Found here, before the models load, instead of at each
    image's write, after its restoration."""
    checked: set[Path] = set()
    for out in outputs:
        relative = out.parent.relative_to(output)
        for part in reversed([relative, *relative.parents][:-1]):  # top down; ``output`` itself is checked
            folder = output / part
            if folder in checked:
                continue
            checked.add(folder)
            if os.path.lexists(folder) and not folder.is_dir():
                raise PlanError(
                    f"the output {out} goes into the folder {folder}, but a file is in its place; move that "
                    "file or pass another -o"
                )
            try:
                if folder.is_dir():
                    with tempfile.TemporaryFile(dir=folder):
                        pass
            except OSError as err:
                raise PlanError(
                    f"cannot write into the output subfolder {folder} ({err.strerror or err}); make it "
                    "writable or pass another -o"
                ) from err


def physical_memory() -> int | None:
    """Bytes of memory this machine has (None where the system does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def _round_down(limit: float, digits: int = 3) -> str:
    """``limit`` (> 0) cut, never rounded up, to ``digits`` significant digits, as text that ``--outscale``
    takes as typed, without an exponent or a thousands separator (668.9 -> ``668``, 32,768 -> ``32700``): a
    value below it stays below ``limit``."""
    exponent = math.floor(math.log10(limit)) - digits + 1
    return f"{math.floor(limit / 10**exponent) * 10**exponent:.{max(0, -exponent)}f}"


def _transparent(path: Path) -> bool:
    """Whether :func:`pure.images.read_image` keeps an alpha for ``path`` (some pixel not opaque), so that its
    output must be PNG; True for a file it cannot read (it fails at its turn, as planned)."""
    try:
        return read_image(path).alpha is not None
    except ImageReadError:
        return True


def _too_big_for_jpeg(size: tuple[int, int], outscale: float | None) -> bool:
    return outscale is not None and max(round(side * outscale) for side in size) > JPEG_MAX_SIDE


def _name_max(folder: Path) -> int:
    """The longest file name (bytes) the file system of ``folder`` allows."""
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        return 255


def _collisions(jobs, key: Callable[[Path], str]) -> set[Path]:
    """Sources of jobs that share an output file with another job."""
    owners: dict[str, Path] = {}
    clashing: set[Path] = set()
    for job in jobs:
        for out in job.outputs():
            other = owners.setdefault(key(out), job.source)
            if other != job.source:
                clashing |= {other, job.source}
    return clashing


def _holds_only_outputs(folder: Path, output: Path) -> bool:
    """Whether ``folder`` (a subfolder not searched) holds images, and every one of them, in it or below it,
    carries pure's mark: an earlier run's outputs, which ``--recursive`` would skip too."""
    images = scan_folder(folder, True, exclude=(output, output / ENTROPY_FOLDER)).images
    return bool(images) and all(is_marked(path) for path in images)


def _no_images(folder: Path, others: list[Path], subfolders: list[Path], output: Path) -> str:
    found = []
    outputs = [path for path in subfolders if _holds_only_outputs(path, output)]
    subfolders = [path for path in subfolders if path not in outputs]
    if subfolders:
        found.append(
            f"{len(subfolders)} subfolder(s) ({_names(subfolders)}; pass --recursive to restore their images)"
        )
    if outputs:
        found.append(f"{len(outputs)} subfolder(s) of an earlier run's outputs only ({_names(outputs)})")
    if others:
        found.append(f"{len(others)} other file(s) ({_names(others)})")
    return f"no images in {folder}: found {' and '.join(found) if found else 'nothing'}"


def _names(paths: list[Path], limit: int = 4) -> str:
    return ", ".join(p.name for p in paths[:limit]) + (", ..." if len(paths) > limit else "")
