"""The one image reader: every file a user has -> an 8-bit sRGB RGB image (+ alpha), read one way
by inference, evaluation, data preparation and training alike.

:func:`read_image` handles every Pillow mode (1, L, LA, P with or without transparency, RGB, RGBA,
CMYK, YCbCr, I;16*, I, F), applies the EXIF orientation, converts embedded ICC profiles to sRGB
(littlecms through ``PIL.ImageCms``) and records every step it took in :attr:`ReadImage.info`, for
sidecars. Deep images are rescaled, never clipped: 16-bit levels / 65535, float images in 0-1 x 255.
With transparency, the RGB is composited on white (the reference's rule, :func:`to_rgb`) and
the alpha channel is returned. What it cannot do (animated images, a profile that does not fit the
pixels, float values outside 0-255) raises :class:`ImageReadError` with one line naming the file.

:func:`scan_folder` is the one lister: images by suffix, everything else reported as skipped.
"""

from __future__ import annotations

import errno
import functools
import io
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageCms, ImageOps, PngImagePlugin

from pure.errors import PureError, from_here, one_line

Image.MAX_IMAGE_PIXELS = None
"""Pillow's decompression-bomb limit (a warning above 89 Mpx, an error above 179 Mpx) is for untrusted
uploads; pure reads the files its user names and restores any size by tiling. What guards memory instead:
the plan refuses outputs larger than this machine's memory before anything loads (``pure.plan``), and the
web demo refuses uploads beyond ``--max-side`` from the header, before decoding."""
PngImagePlugin.MAX_TEXT_CHUNK = PngImagePlugin.MAX_TEXT_MEMORY
"""Pillow refuses a PNG whose one compressed text or ICC chunk inflates beyond 1 MB ("Decompressed data too
large"), a file other programs open: large XMP from photo editors, a workflow saved in the image, a print
profile. Its limit on all text chunks together (64 MB) still bounds what a small file can inflate to."""

try:  # HEIC/HEIF (phone photos) when pillow-heif is installed: a Pillow plugin, registered by name
    from pillow_heif import register_heif_opener
except ImportError:
    pass
else:
    register_heif_opener()
Image.init()
UNREADABLE_FORMATS = frozenset({"BUFR", "GRIB", "HDF5", "MPEG", "WMF", "EPS"})
"""Formats Pillow names but cannot decode here: stubs without a decoder, or Ghostscript's."""
IMAGE_SUFFIXES = frozenset(
    suffix
    for suffix, fmt in Image.registered_extensions().items()
    if fmt in Image.OPEN and fmt not in UNREADABLE_FORMATS
)
"""File suffixes (lower case) of every format Pillow reads here: a folder's files with these are images."""
OTHER_IMAGE_FORMATS = {
    **dict.fromkeys((".heic", ".heif", ".hif"), "HEIC/HEIF"),
    **dict.fromkeys(
        (".dng", ".cr2", ".cr3", ".nef", ".arw", ".orf", ".rw2", ".raf", ".pef", ".srw"),
        "a camera raw format",
    ),
    ".jxl": "JPEG XL",
    ".svg": "SVG (vector graphics)",
    ".exr": "OpenEXR",
    ".hdr": "Radiance HDR",
}
"""Suffixes of image formats Pillow does not read here (unless a plugin adds them): such a file is an
image the user meant to restore, so it fails with its format named instead of being ignored."""
ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
DEEP_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I", "F"})
ORIENTATION_TAG = 0x0112
METADATA_DAMAGED = "metadata damaged"
OUTPUT_MARK = "pure (PURE restoration)"
"""Written into every image pure writes (PNG ``Software`` text, JPEG comment), so that an output whose
sidecar is missing (an interrupted run) is still known as an output, never taken for a user's photo."""


class ImageReadError(PureError, ValueError):
    """A file that is not an image this reader can use; the message is one line naming the file
    (:func:`one_line`: a file name may hold line breaks)."""

    def __init__(self, message: str) -> None:
        super().__init__(one_line(message))


class Steps(list):
    """The steps taken to read a file, in order (strings; they go into ``ReadImage.info`` and sidecars).
    :meth:`note` adds a step the user should also hear about, kept apart in :attr:`notes`."""

    def __init__(self) -> None:
        super().__init__()
        self.notes: list[str] = []

    def note(self, step: str) -> None:
        """Add ``step`` and keep it as a note (e.g. an embedded ICC profile ignored)."""
        self.append(step)
        self.notes.append(step)


@dataclass
class ReadImage:
    """What :func:`read_image` made of a file."""

    rgb: Image.Image
    """RGB, 8 bits per channel, sRGB; with transparency, composited on white."""
    alpha: Image.Image | None
    """The alpha channel (mode L) when any pixel is not opaque, else None."""
    info: dict = field(default_factory=dict)
    """The file's format, mode and stored size, and the ``steps`` taken to read it (for sidecars)."""
    icc_profile: str | None = None
    """Description of the ICC profile the file carried (its pixels are now sRGB), or None."""
    notes: list[str] = field(default_factory=list)
    """What the user should hear about this file (one line each, naming it): e.g. an embedded ICC profile
    that could not be applied and was ignored."""


@dataclass
class Header:
    """What opening a file tells without decoding its pixels."""

    format: str
    mode: str
    size: tuple[int, int]
    """``(width, height)`` as :func:`read_image` returns it: upright, after the EXIF orientation (a photo
    stored 4000x3000 with a 90-degree orientation is 3000x4000)."""
    has_alpha: bool
    marked: bool = False
    """Whether the file carries :data:`OUTPUT_MARK` (pure wrote it)."""


@dataclass
class Scan:
    """A folder's files sorted into images and everything else."""

    images: list[Path]
    skipped: list[Path]
    """Files that are not images (by suffix) or are hidden."""
    subfolders: list[Path]
    """Subfolders that were not searched (without ``recursive``)."""


def unreadable_format(path: str | Path) -> str | None:
    """The name of the image format of ``path``'s suffix when it is one Pillow does not read here
    (:data:`OTHER_IMAGE_FORMATS`), else None."""
    suffix = Path(path).suffix.lower()
    return None if suffix in IMAGE_SUFFIXES else OTHER_IMAGE_FORMATS.get(suffix)


def is_image_name(path: Path) -> bool:
    """Whether a folder lister takes ``path`` as an image: a known suffix and no leading dot."""
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def scan_folder(folder: Path, recursive: bool = False, exclude: tuple[Path, ...] = ()) -> Scan:
    """The files of ``folder`` (and, with ``recursive``, of its subfolders) in name order.

    Hidden folders and the folders in ``exclude`` (e.g. an output folder inside the input) are
    never entered. Symbolic links to folders are followed, but a folder is searched once however often
    it is reached (a link to a folder above it would otherwise repeat the tree without end), and a
    folder that is also reached without a link is searched under its own name, never the link's.
    """
    excluded = {p.resolve() for p in exclude}
    linkless = set()
    if recursive:  # the folders below ``folder`` reached without a link
        for parent, names, _ in os.walk(folder):
            names[:] = [
                n for n in names if not n.startswith(".") and Path(parent, n).resolve() not in excluded
            ]
            linkless.update(Path(parent, n).resolve() for n in names if not Path(parent, n).is_symlink())
    return _scan(folder, recursive, excluded, linkless, set())


def _scan(
    folder: Path, recursive: bool, excluded: set[Path], linkless: set[Path], visited: set[Path]
) -> Scan:
    visited.add(folder.resolve())
    images: list[Path] = []
    skipped: list[Path] = []
    subfolders: list[Path] = []
    for path in sorted(folder.iterdir()):
        if path.is_dir():
            real = path.resolve()
            if path.name.startswith(".") or real in excluded or real in visited:
                continue
            if path.is_symlink() and real in linkless:  # searched under its own name
                continue
            if recursive:
                inner = _scan(path, True, excluded, linkless, visited)
                images += inner.images
                skipped += inner.skipped
            else:
                subfolders.append(path)
        elif is_image_name(path):
            images.append(path)
        else:
            skipped.append(path)
    return Scan(images, skipped, subfolders)


def save_marked(image: Image.Image, path: str | Path, jpeg: bool, **options) -> None:
    """Save ``image`` as JPEG or PNG at ``path`` with :data:`OUTPUT_MARK` in its metadata."""
    if jpeg:
        image.save(path, format="JPEG", comment=OUTPUT_MARK, **options)
    else:
        text = PngImagePlugin.PngInfo()
        text.add_text("Software", OUTPUT_MARK)
        image.save(path, format="PNG", pnginfo=text, **options)


def is_marked(path: str | Path) -> bool:
    """Whether ``path`` is an image that pure wrote (:data:`OUTPUT_MARK`); False for anything unreadable."""
    try:
        _check_regular(path)
        with _metadata_warnings(), Image.open(path) as opened:
            return _mark(opened) == OUTPUT_MARK
    except (OSError, ValueError, ImageReadError, Image.DecompressionBombError):
        return False


def _mark(opened: Image.Image) -> str:
    """The writer's note of an opened image: a PNG's ``Software`` text or a JPEG comment ("" if none)."""
    mark = opened.info.get("Software") or opened.info.get("comment") or ""
    return mark.decode("latin-1") if isinstance(mark, bytes) else str(mark)


def _check_regular(path: str | Path) -> None:
    """Refuse what is not a regular file (a named pipe would make opening it wait forever), a link to
    nothing or a link loop, a file gone since it was listed (e.g. deleted during a run), an empty file and
    an image format Pillow does not read here, each with its own reason."""
    if (name := unreadable_format(path)) is not None and not os.path.isdir(path):
        plugin = " (or pip install pillow-heif, which pure then uses)" if name == "HEIC/HEIF" else ""
        raise ImageReadError(
            f"{path}: {name}, an image format Pillow cannot read here; convert it to PNG or JPEG{plugin}"
        )
    if os.path.islink(path) and not os.path.exists(path):
        try:
            os.stat(path)
        except OSError as err:
            if err.errno == errno.ELOOP:
                target = os.readlink(path)
                raise ImageReadError(
                    f"{path}: a link loop (a link to {target}, which never reaches a file)"
                ) from None
        raise ImageReadError(f"{path}: a link to {os.readlink(path)}, which does not exist")
    if not os.path.lexists(path):
        raise ImageReadError(
            f"{from_here(path)}: does not exist (a typo, or moved or deleted since it was listed?)"
        )
    if os.path.exists(path) and not os.path.isfile(path):
        raise ImageReadError(f"{path}: not a regular file (a folder, pipe, socket or device)")
    if os.path.isfile(path) and os.path.getsize(path) == 0:
        raise ImageReadError(f"{path}: an empty file (0 bytes), not an image")


def _unreadable(path: str | Path, err: Exception) -> ImageReadError:
    """``path: not a readable image (Error: detail)``, the path named once (Pillow repeats it in its own
    messages, e.g. ``cannot identify image file '<path>'``)."""
    detail = str(err).replace(repr(str(path)), "").replace(str(path), "").strip(" :")
    return ImageReadError(
        f"{path}: not a readable image ({type(err).__name__}{': ' + detail if detail else ''})"
    )


def read_header(path: str | Path) -> Header:
    """Open ``path`` and check what can be checked without decoding: a known format, one frame."""
    _check_regular(path)
    try:
        with _metadata_warnings(), Image.open(path) as opened:
            _check_frames(opened, path)
            return Header(
                opened.format or "",
                opened.mode,
                _upright_size(opened),
                _has_alpha(opened),
                _mark(opened) == OUTPUT_MARK,
            )
    except ImageReadError:
        raise
    except Exception as err:  # Pillow raises several types for corrupt or foreign files
        raise _unreadable(path, err) from err


@contextmanager
def _metadata_warnings(steps: Steps | None = None) -> Iterator[None]:
    """Around opening a file: Pillow reads damaged metadata (a JPEG's EXIF as it opens, TIFF tags) as far as
    it goes and warns on stderr without naming the file (``UserWarning: Corrupt EXIF data.``, two lines).
    That becomes a step (and a note, :data:`METADATA_DAMAGED`) when ``steps`` is given, and is silent
    otherwise (a header read for the plan: the image's own read notes it)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        yield
    reasons = sorted({" ".join(str(w.message).split()) for w in caught})
    if reasons and steps is not None:
        steps.note(f"{METADATA_DAMAGED} ({'; '.join(reasons)[:200]}): what Pillow could read was used")


def _upright_size(opened: Image.Image) -> tuple[int, int]:
    """``opened``'s ``(width, height)`` after its EXIF orientation, without decoding its pixels. Pillow
    reports a TIFF's size upright already (it turns it as it loads); a PNG's EXIF is read only where it
    precedes the pixels (Pillow would decode the image to look further), as every writer we know puts it."""
    width, height = opened.size
    if opened.format == "TIFF" or (opened.format == "PNG" and "exif" not in opened.info):
        return width, height
    turned = opened.getexif().get(ORIENTATION_TAG, 1) in (5, 6, 7, 8)  # the 90-degree orientations
    return (height, width) if turned else (width, height)


def read_image(path: str | Path) -> ReadImage:
    """Read any image file -> 8-bit sRGB RGB (+ alpha); raises :class:`ImageReadError` naming the file."""
    _check_regular(path)
    steps = Steps()
    try:
        with _metadata_warnings(steps), Image.open(path) as opened:
            deep_colour = opened.mode in ("RGB", "RGBA") and ";16" in _rawmode(opened)  # before any load
            _check_frames(opened, path)
            info = {"format": opened.format, "mode": opened.mode, "size": list(opened.size), "steps": steps}
            orientation = opened.getexif().get(ORIENTATION_TAG, 1)
            icc = opened.info.get("icc_profile")
            transparent = "transparency" in opened.info
            image = ImageOps.exif_transpose(opened)
    except ImageReadError:
        raise
    except Exception as err:  # Pillow raises several types for corrupt or foreign files
        raise _unreadable(path, err) from err
    if orientation in range(2, 9):
        steps.append(f"EXIF orientation {orientation} applied")
    elif orientation not in (1, None):
        steps.append(f"EXIF orientation {orientation!r} ignored (valid values are 1-8)")
    if info["format"] == "MPO":
        steps.append("multi-picture JPEG: the primary picture read")
    if deep_colour:  # Pillow has no 16-bit colour modes: it decodes such files to 8 bits itself
        steps.append("16 bits per channel reduced to 8 by Pillow (the high byte kept)")
        key = image.info.get("transparency")
        if isinstance(key, tuple) and image.mode == "RGB":  # a 16-bit key: Pillow matches it to 8-bit levels
            image = image.copy()
            image.putalpha(_deep_key_alpha(path, key, orientation))
            del image.info["transparency"]
            steps.append(f"transparent colour {key} kept as alpha (matched at 16 bits)")
    try:
        rgb, alpha, description = _to_rgb8(image, icc, transparent, path, steps)
    except ImageReadError:
        raise
    except (ValueError, OSError) as err:  # a mode Pillow cannot convert, e.g. LAB or HSV
        raise ImageReadError(f"{path}: cannot convert mode {info['mode']} to RGB ({err})") from err
    notes = [one_line(f"{path}: {step}") for step in steps.notes]
    return ReadImage(rgb, alpha, info, description, notes)


def rgb_and_alpha(image: Image.Image) -> tuple[Image.Image, Image.Image | None]:
    """A PIL image already in memory -> (8-bit RGB, alpha ``L`` or None), its pixels converted as
    :func:`read_image` converts a file's: 16-bit, 32-bit and float greyscale rescaled to 8 bits (float read
    as 0-1 or 0-255), palettes expanded, transparency kept as alpha when any pixel is not opaque (the RGB
    then composited on white), greyscale copied to R, G and B. Neither an ICC profile nor an EXIF
    orientation is applied: the pixels are taken as sRGB, as they stand. Raises :class:`ImageReadError`
    (naming it ``image``) for pixels it cannot convert (NaN, a float outside 0-255, a mode such as LAB)."""
    try:
        rgb, alpha, _ = _to_rgb8(image, None, "transparency" in image.info, "image", Steps())
    except ImageReadError:
        raise
    except (ValueError, OSError) as err:
        raise ImageReadError(f"image: cannot convert mode {image.mode} to RGB ({err})") from err
    return rgb, alpha


def _to_rgb8(
    image: Image.Image, icc: bytes | None, transparent: bool, path: str | Path, steps: Steps
) -> tuple[Image.Image, Image.Image | None, str | None]:
    """Any mode -> (8-bit sRGB RGB, alpha or None, ICC profile description or None)."""
    if image.mode in DEEP_MODES:
        image = _deep_to_8bit(image, path, steps)
    if image.mode == "1":
        steps.append("1-bit pixels read as grey levels 0 and 255")
        image = image.convert("L")
    if image.mode in ("P", "PA"):
        steps.append("palette colours expanded")
    if transparent or image.mode in ("P", "PA"):
        image = image.convert("RGBA" if transparent or image.mode == "PA" else "RGB")
    alpha = image.getchannel("A") if image.mode in ALPHA_MODES else None
    colour = image.convert({"LA": "L", "La": "L"}.get(image.mode, "RGB")) if alpha is not None else image
    description = None
    if icc:
        colour, description = _to_srgb(colour, icc, path, steps)
    if colour.mode == "L":
        steps.append("grey level copied to R, G and B")
    elif colour.mode == "CMYK":
        steps.append("CMYK converted to RGB without a colour profile (Pillow's conversion)")
    elif colour.mode != "RGB":
        steps.append(f"{colour.mode} converted to RGB")
    rgb = colour.convert("RGB")
    if alpha is None:
        return rgb, None, description
    if alpha.getextrema()[0] == 255:
        steps.append("alpha fully opaque: not kept")
        return rgb, None, description
    steps.append("RGB composited on white; alpha kept")
    rgba = rgb.copy()
    rgba.putalpha(alpha)
    return to_rgb(rgba), alpha, description


def to_rgb(image: Image.Image) -> Image.Image:
    """The reference's RGB conversion: non-RGB images with any alpha < 255 are blended onto white,
    ``(1 - a) * 255 + a * rgb`` in float64 and truncated to uint8; other modes use ``convert("RGB")``."""
    if image.mode == "RGB":
        return image
    rgba = np.array(image.convert("RGBA"))
    if (rgba[:, :, 3] < 255).any():
        alpha = rgba[:, :, 3:4] / 255.0
        return Image.fromarray(((1 - alpha) * 255 + alpha * rgba[:, :, :3]).astype(np.uint8))
    return image.convert("RGB")


def srgb_profile() -> bytes:
    """An sRGB ICC profile, for outputs of colour-managed inputs."""
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def _rawmode(opened: Image.Image) -> str:
    """How the file stores its pixels (``RGB;16B`` for 16-bit colour PNG), from the first tile to decode;
    empty when Pillow does not say."""
    tiles = getattr(opened, "tile", None) or []
    args = tiles[0].args if tiles and hasattr(tiles[0], "args") else None
    rawmode = args[0] if isinstance(args, tuple) and args else args
    return rawmode if isinstance(rawmode, str) else ""


def _check_frames(opened: Image.Image, path: str | Path) -> None:
    frames = getattr(opened, "n_frames", 1)
    if frames > 1 and opened.format != "MPO":
        name = Path(path).name
        split = f"tiffsplit {name}" if opened.format == "TIFF" else f"ffmpeg -i {name} frame_%03d.png"
        raise ImageReadError(
            f"{path}: {opened.format} with {frames} frames; pure reads still images only: save the frames "
            f"as separate files (e.g. {split}) and use those"
        )


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in ALPHA_MODES or "transparency" in image.info


TRANSPOSES = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
"""EXIF orientation -> the transpose that makes the image upright (as ``ImageOps.exif_transpose``)."""


def _deep_key_alpha(path: str | Path, key: tuple[int, ...], orientation: object) -> Image.Image:
    """The alpha (mode L, upright) of a 16-bit RGB PNG whose tRNS chunk names a transparent colour ``key``
    (three 16-bit levels): 0 where a pixel's 16-bit levels are exactly ``key``, else 255. Pillow keeps only
    the high byte of each level and compares those to the 16-bit key, which loses the transparent pixels
    and can make others transparent; OpenCV decodes the file's 16-bit levels."""
    import cv2  # only for this rare file: a dependency, but slow to import

    levels = cv2.imdecode(np.fromfile(str(path), dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if levels is None or levels.ndim != 3 or levels.dtype != np.uint16:
        raise ImageReadError(f"{path}: cannot read the 16-bit levels its transparent colour refers to")
    rgb = levels[..., 2::-1]  # OpenCV's BGR(A) -> RGB
    alpha = Image.fromarray(np.where((rgb == np.array(key[:3])).all(-1), 0, 255).astype(np.uint8), "L")
    return alpha.transpose(TRANSPOSES[orientation]) if orientation in TRANSPOSES else alpha


def _deep_to_8bit(image: Image.Image, path: str | Path, steps: Steps) -> Image.Image:
    """16-bit, 32-bit integer and float greyscale -> L, rescaled (never clipped at 255); LA when the file
    names a transparent grey level (PNG's tRNS key, kept as alpha 0 where the level is exact)."""
    values = np.asarray(image, dtype=np.float64)
    if not np.isfinite(values).all():
        raise ImageReadError(f"{path}: mode {image.mode} holds NaN or infinite values; save it without them")
    low, high = float(values.min()), float(values.max())
    if image.mode == "F":
        if low < 0 or high > 255:
            raise ImageReadError(
                f"{path}: float image with values in [{low:g}, {high:g}]; save it with values in 0-1"
            )
        peak = 1.0 if high <= 1 else 255.0
        steps.append(f"float values read as 0-{peak:g}, scaled to 8 bits")
    elif image.mode.startswith("I;16"):
        peak = 65535.0
        steps.append("16-bit levels scaled to 8 bits (/ 65535 x 255)")
    else:
        if low < 0:
            raise ImageReadError(f"{path}: 32-bit integer image with negative values; save it as 16 bits")
        peak = 255.0 if high <= 255 else 65535.0 if high <= 65535 else 2.0**31 - 1
        steps.append(f"32-bit integer levels read as 0-{peak:g}, scaled to 8 bits")
    grey = Image.fromarray((values / peak * 255).round().clip(0, 255).astype(np.uint8), "L")
    key = image.info.get("transparency")
    if not isinstance(key, int | float):
        return grey
    steps.append(f"transparent level {key:g} kept as alpha")
    grey.putalpha(Image.fromarray(np.where(values == key, 0, 255).astype(np.uint8), "L"))
    return grey


SRGB_PROBE = np.stack(np.meshgrid(*[np.arange(0, 256, 15, dtype=np.uint8)] * 3, indexing="ij"), -1)
"""``[18, 18, 18, 3]`` uint8: every colour whose levels are multiples of 15 (0-255), the probe of
:func:`_is_srgb`."""


def _converted_to_srgb(image: Image.Image, profile: ImageCms.ImageCmsProfile) -> Image.Image:
    """``image`` (L, RGB, CMYK) from ``profile`` to littlecms' sRGB, relative colorimetric, as RGB."""
    return ImageCms.profileToProfile(
        image,
        profile,
        ImageCms.createProfile("sRGB"),
        renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC,
        outputMode="RGB",
    )


@functools.lru_cache(maxsize=16)
def _is_srgb(icc: bytes) -> bool:
    """Whether the RGB profile ``icc`` maps colours to sRGB unchanged: every colour of :data:`SRGB_PROBE`
    within one level after :func:`_converted_to_srgb`. Told by its numbers, not its name: a linear-light
    profile named ``sRGB-elle-V2-g10`` is not sRGB, an ``sRGB IEC61966-2.1`` is. Remembered per profile (a
    folder of one camera's photos carries one)."""
    profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
    if profile.profile.xcolor_space.strip() != "RGB":
        return False
    probe = Image.fromarray(SRGB_PROBE.reshape(-1, 18, 3))
    converted = _converted_to_srgb(probe, profile)
    difference = np.abs(np.asarray(converted, dtype=np.int16) - np.asarray(probe, dtype=np.int16))
    return int(difference.max()) <= 1


ICC_IGNORED = "embedded ICC profile ignored"
"""How the step (and note) of a profile that could not be applied begins."""


def _to_srgb(
    image: Image.Image, icc: bytes, path: str | Path, steps: Steps
) -> tuple[Image.Image, str | None]:
    """Convert ``image`` (L, RGB, CMYK, YCbCr) from its embedded profile to sRGB; -> (RGB, description).

    A profile that cannot be read or applied (damaged, or made for another colour space) is ignored and the
    values are read as sRGB, as browsers and most viewers do; -> (``image`` unchanged, None) and a step
    beginning with :data:`ICC_IGNORED`, kept as a note."""
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        description = ImageCms.getProfileDescription(source).strip()
        if _is_srgb(icc):
            steps.append(f"ICC profile {description!r} is sRGB: values kept")
            return image, description
        if image.mode not in ("L", "RGB", "CMYK"):
            image = image.convert("RGB")
        converted = _converted_to_srgb(image, source)
    except (ImageCms.PyCMSError, OSError, ValueError) as err:
        steps.note(f"{ICC_IGNORED} (it cannot be applied: {err}); values read as sRGB, as viewers do")
        return image, None
    steps.append(f"ICC profile {description!r} converted to sRGB (relative colorimetric)")
    return converted, description
