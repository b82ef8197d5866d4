"""The one image reader (pure/images.py) as a matrix: modes x formats x with/without an ICC profile,
EXIF orientations x formats x profile; and what it refuses, in one line naming the file."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pure.images import IMAGE_SUFFIXES, ImageReadError, read_header, read_image, rgb_and_alpha, scan_folder
from tests.icc import adobe_rgb_profile, adobe_to_srgb, png_rgba16

W, H = 8, 6
_y, _x = np.mgrid[0:H, 0:W]
TRUTH = np.stack([_x * 30 + 20, _y * 40 + 10, 200 - _x * 10 - _y * 12], -1).astype(np.uint8)
"""[H, W, 3]: smooth (lossy formats keep it) and asymmetric (every orientation differs)."""
GREY = (TRUTH.astype(np.float64) @ [0.299, 0.587, 0.114]).round().astype(np.uint8)
ALPHA = np.where(_x < 2, 0, np.where(_y < 2, 128, 255)).astype(np.uint8)

# format -> (suffix, save options, tolerance in levels)
FORMATS = {
    "PNG": (".png", {}, 0),
    "JPEG": (".jpg", {"quality": 100, "subsampling": 0}, 6),
    "BMP": (".bmp", {}, 0),
    "TIFF": (".tif", {}, 0),
    "WEBP": (".webp", {"lossless": True}, 0),
    "GIF": (".gif", {}, 0),
    "PPM": (".ppm", {}, 0),
    "TGA": (".tga", {}, 0),
    "SGI": (".sgi", {}, 0),
    "PCX": (".pcx", {}, 0),
    "QOI": (".qoi", {}, 0),
    "JPEG2000": (".jp2", {"irreversible": False}, 0),
    "AVIF": (".avif", {"quality": 100, "subsampling": "4:4:4"}, 4),
    "DDS": (".dds", {}, 0),
    "SPIDER": (".spi", {}, 0),
    "ICO": (".ico", {"sizes": [(W, H)]}, 0),
    "BLP": (".blp", {}, 0),
}
PROFILE_FORMATS = ("PNG", "JPEG", "TIFF", "WEBP")
"""Formats whose files carry an ICC profile and EXIF orientation here."""


def _composite(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """The reference's rule, written out: (1 - a) * 255 + a * rgb, truncated."""
    a = alpha[..., None] / 255.0
    return ((1 - a) * 255 + a * rgb).astype(np.uint8)


def _palette(transparent: bool) -> tuple[Image.Image, np.ndarray, np.ndarray | None]:
    index = (_x + W * _y).astype(np.uint8)  # 48 entries, one per pixel
    colours = TRUTH.reshape(-1, 3)
    image = Image.fromarray(index, "P")
    image.putpalette(colours.tobytes())
    if not transparent:
        return image, TRUTH, None
    image.info["transparency"] = 0
    alpha = np.where(index == 0, 0, 255).astype(np.uint8)
    return image, _composite(TRUTH, alpha), alpha


def mode_image(mode: str) -> tuple[Image.Image, np.ndarray, np.ndarray | None]:
    """An image of ``mode`` -> (image, the RGB the reader must return, the alpha or None)."""
    grey3 = np.repeat(GREY[..., None], 3, -1)
    if mode == "1":
        bits = GREY > 100
        return Image.fromarray(bits), np.repeat(bits[..., None] * 255, 3, -1).astype(np.uint8), None
    if mode == "L":
        return Image.fromarray(GREY), grey3, None
    if mode == "LA":
        return Image.fromarray(np.stack([GREY, ALPHA], -1), "LA"), _composite(grey3, ALPHA), ALPHA
    if mode in ("P", "P+transparency"):
        return _palette(mode != "P")
    if mode == "RGB":
        return Image.fromarray(TRUTH), TRUTH, None
    if mode == "RGBA":
        return Image.fromarray(np.dstack([TRUTH, ALPHA]), "RGBA"), _composite(TRUTH, ALPHA), ALPHA
    if mode == "CMYK":
        cmyk = np.dstack([255 - TRUTH, np.zeros((H, W), np.uint8)])
        return Image.fromarray(cmyk, "CMYK"), TRUTH, None
    if mode == "YCbCr":
        return Image.fromarray(TRUTH).convert("YCbCr"), TRUTH, None
    if mode == "I;16":
        return Image.fromarray(GREY.astype(np.uint16) * 257), grey3, None
    if mode == "I":
        return Image.fromarray(GREY.astype(np.int32) * 257, "I"), grey3, None
    if mode == "F":
        return Image.fromarray(GREY.astype(np.float32) / 255, "F"), grey3, None
    raise AssertionError(mode)


MODES = ("1", "L", "LA", "P", "P+transparency", "RGB", "RGBA", "CMYK", "YCbCr", "I;16", "I", "F")


def _save(image: Image.Image, path, fmt: str, options: dict) -> bool:
    """Save as ``fmt``; False when the format cannot hold the mode or the transparency (no such file)."""
    try:
        image.save(path, format=fmt, **options)
        with Image.open(path) as back:
            return back.mode == image.mode and ("transparency" in back.info) == ("transparency" in image.info)
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _check(path, expected: np.ndarray, alpha: np.ndarray | None, tolerance: int, label: str) -> None:
    read = read_image(path)
    got = np.asarray(read.rgb, dtype=np.int32)
    assert read.rgb.mode == "RGB" and got.shape == expected.shape, label
    error = np.abs(got - expected).max()
    assert error <= tolerance, f"{label}: off by {error} levels"
    if alpha is None or alpha.min() == 255:
        assert read.alpha is None, label
    else:
        assert np.abs(np.asarray(read.alpha, dtype=np.int32) - alpha).max() <= tolerance, label


def test_every_mode_in_every_format_with_and_without_a_profile(tmp_path):
    written = 0
    for mode in MODES:
        for fmt, (suffix, options, tolerance) in FORMATS.items():
            for profile in (None, "adobe") if fmt in PROFILE_FORMATS else (None,):
                image, expected, alpha = mode_image(mode)  # fresh: some writers change the image they save
                path = tmp_path / f"{mode.replace(';', '')}-{fmt}-{profile}{suffix}"
                extra = {"icc_profile": adobe_rgb_profile()} if profile else {}
                if not _save(image, path, fmt, {**options, **extra}):
                    continue
                written += 1
                label = f"{mode} as {fmt}, profile {profile}"
                if profile and image.mode in ("RGB", "RGBA", "P", "YCbCr"):
                    with Image.open(path) as back:
                        if "icc_profile" not in back.info:
                            continue  # this writer dropped the profile: the plain case covers it
                    srgb = adobe_to_srgb(np.asarray(image.convert("RGB")))
                    srgb = srgb if alpha is None else _composite(srgb, alpha)
                    _check(path, srgb, alpha, tolerance + 2, label)
                elif profile:
                    with Image.open(path) as back:
                        carried = "icc_profile" in back.info
                    # an RGB profile on grey, CMYK or YCbCr pixels cannot be applied: ignored, as viewers do
                    _check(path, expected, alpha, tolerance + (3 if mode == "YCbCr" else 0), label)
                    notes = read_image(path).notes
                    assert len(notes) == carried and all(n.startswith(f"{path}: ") for n in notes), label
                else:
                    _check(path, expected, alpha, tolerance + (3 if mode == "YCbCr" else 0), label)
    assert written >= 90  # the matrix really ran (94 mode x format x profile files here)


# EXIF orientation -> how the stored pixels must be turned to be seen upright (numpy, not Pillow)
UPRIGHT = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: np.rot90(a, 2).transpose(1, 0, 2),
    8: lambda a: np.rot90(a, 1),
}


@pytest.mark.parametrize("fmt", PROFILE_FORMATS)
def test_every_orientation_with_and_without_a_profile(tmp_path, fmt):
    suffix, options, tolerance = FORMATS[fmt]
    for orientation, upright in UPRIGHT.items():
        for profile in (None, adobe_rgb_profile()):
            exif = Image.Exif()
            exif[0x0112] = orientation
            path = tmp_path / f"o{orientation}-{profile is not None}{suffix}"
            extra = {"icc_profile": profile} if profile else {}
            Image.fromarray(TRUTH).save(path, format=fmt, exif=exif, **options, **extra)
            expected = upright(adobe_to_srgb(TRUTH) if profile else TRUTH)
            _check(path, np.ascontiguousarray(expected), None, tolerance + (2 if profile else 0), path.name)
            steps = " ".join(read_image(path).info["steps"])
            assert (f"EXIF orientation {orientation} applied" in steps) == (orientation != 1)
            assert read_header(path).size == read_image(path).rgb.size  # upright without decoding
            assert ("'Adobe RGB (1998)' converted to sRGB" in steps) == (profile is not None)


def test_16_bit_rgba_png_with_adobe_rgb_profile_becomes_srgb(tmp_path):
    """Issue 11, case 1 (the reader's half): Adobe RGB numbers are converted, not passed through."""
    pixels = np.zeros((H, W, 4), np.uint16)
    pixels[..., :3] = TRUTH.astype(np.uint16) * 257
    pixels[..., 3] = ALPHA.astype(np.uint16) * 257
    path = tmp_path / "tree_alpha_16bit.png"
    path.write_bytes(png_rgba16(pixels, adobe_rgb_profile()))
    read = read_image(path)
    expected = _composite(adobe_to_srgb(TRUTH), ALPHA)
    assert np.abs(np.asarray(read.rgb, dtype=np.int32) - expected).max() <= 2
    assert np.array_equal(np.asarray(read.alpha), ALPHA)
    assert read.icc_profile == "Adobe RGB (1998)"
    assert "ICC profile 'Adobe RGB (1998)' converted to sRGB (relative colorimetric)" in read.info["steps"]
    assert np.abs(adobe_to_srgb(TRUTH) - TRUTH).max() > 20  # the conversion matters for this picture


def test_a_profile_is_srgb_by_its_numbers_not_its_name(tmp_path):
    """A profile named like sRGB whose numbers are another space's (Krita ships a linear
    ``sRGB-elle-V2-g10.icc``) is converted; littlecms' own sRGB keeps the values as they are."""
    from PIL import ImageCms

    misnamed = tmp_path / "misnamed.png"
    Image.fromarray(TRUTH).save(misnamed, icc_profile=adobe_rgb_profile("sRGB-elle-V2-g10.icc"))
    read = read_image(misnamed)
    assert np.abs(np.asarray(read.rgb, dtype=np.int32) - adobe_to_srgb(TRUTH)).max() <= 1
    assert read.info["steps"] == [
        "ICC profile 'sRGB-elle-V2-g10.icc' converted to sRGB (relative colorimetric)"
    ]
    srgb = tmp_path / "srgb.png"
    Image.fromarray(TRUTH).save(
        srgb, icc_profile=ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    )
    read = read_image(srgb)
    assert np.array_equal(np.asarray(read.rgb), TRUTH)
    assert read.info["steps"] == ["ICC profile 'sRGB built-in' is sRGB: values kept"]


def _png_rgb16(pixels: np.ndarray, *chunks: tuple[bytes, bytes]) -> bytes:
    """A 16-bit RGB PNG of ``pixels`` ``[H, W, 3]`` uint16 with extra ``(kind, body)`` chunks before IDAT."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    height, width = pixels.shape[:2]
    rows = b"".join(b"\0" + row.astype(">u2").tobytes() for row in pixels)
    header = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0))
    extra = b"".join(chunk(kind, body) for kind, body in chunks)
    return b"\x89PNG\r\n\x1a\n" + header + extra + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("orientation", [1, 6])
def test_16_bit_rgb_png_transparent_colour_is_matched_at_16_bits(tmp_path, orientation):
    """A tRNS colour of a 16-bit RGB PNG makes exactly the pixels of those 16-bit levels transparent: not
    none of them (Pillow compares the key with 8-bit levels), nor a pixel sharing only their high bytes."""
    pixels = np.full((H, W, 3), 40000, np.uint16)
    pixels[1, 2] = (3, 7, 11)  # the transparent colour
    pixels[4, 5] = (3 * 256 + 5, 7 * 256, 11 * 256 + 200)  # high bytes 3, 7, 11: opaque
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "key16.png"
    path.write_bytes(_png_rgb16(pixels, (b"tRNS", bytes.fromhex("00030007000b")), (b"eXIf", exif.tobytes())))
    read = read_image(path)
    expected = Image.fromarray(np.where(np.arange(H * W).reshape(H, W) == 1 * W + 2, 0, 255).astype(np.uint8))
    if orientation == 6:
        expected = expected.transpose(Image.Transpose.ROTATE_270)
    assert read.alpha is not None and np.array_equal(np.asarray(read.alpha), np.asarray(expected))
    assert read.rgb.size == expected.size
    assert "transparent colour (3, 7, 11) kept as alpha (matched at 16 bits)" in read.info["steps"]


def test_float_greyscale_tiff_is_not_black(tmp_path):
    """Issue 11, case 2 (the reader's half): mode F with values 0-1 is scaled, not clipped to 0/1."""
    path = tmp_path / "float.tif"
    Image.fromarray(GREY.astype(np.float32) / 255, "F").save(path)
    read = read_image(path)
    assert np.array_equal(np.asarray(read.rgb)[..., 1], GREY)
    assert read.info["mode"] == "F" and "float values read as 0-1, scaled to 8 bits" in read.info["steps"]


def test_dark_16_bit_image_is_not_brightened(tmp_path):
    path = tmp_path / "dark.png"
    Image.fromarray(np.full((4, 4), 200, np.uint16)).save(path)  # 200 of 65535: nearly black
    assert np.asarray(read_image(path).rgb).max() == 1


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p.write_text("not an image"), "not a readable image"),
        (lambda p: p.write_bytes(b""), "an empty file (0 bytes)"),
        (
            lambda p: Image.new("RGB", (4, 4)).save(
                p,
                format="GIF",
                save_all=True,
                append_images=[Image.new("RGB", (4, 4), c) for c in ("red", "blue")],
            ),
            "GIF with 3 frames; pure reads still images only",
        ),
        (lambda p: Image.fromarray(np.full((2, 2), np.nan, np.float32), "F").save(p, format="TIFF"), "NaN"),
        (lambda p: Image.fromarray(np.full((2, 2), 900.0, np.float32), "F").save(p, format="TIFF"), "0-1"),
    ],
)
def test_what_the_reader_cannot_do_is_one_line_naming_the_file(tmp_path, make, message):
    path = tmp_path / "input.gif"
    make(path)
    with pytest.raises(ImageReadError) as refused:
        read_image(path)
    text = str(refused.value)
    assert text.startswith(f"{path}: ") and message in text and "\n" not in text
    if "frames" in message:
        with pytest.raises(ImageReadError, match="3 frames"):
            read_header(path)


@pytest.mark.parametrize(
    "fmt, suffix", [("GIF", ".gif"), ("PNG", ".png"), ("WEBP", ".webp"), ("TIFF", ".tif")]
)
def test_several_frames_or_pages_are_refused_in_every_format(tmp_path, fmt, suffix):
    frames = [Image.new("RGB", (4, 4), c) for c in ("red", "green", "blue")]
    path = tmp_path / f"anim{suffix}"
    frames[0].save(path, format=fmt, save_all=True, append_images=frames[1:])
    with pytest.raises(ImageReadError, match=f"^{path}: {fmt} with 3 frames; pure reads still images only"):
        read_image(path)


def test_every_format_pillow_reads_is_an_image_suffix_and_nothing_else():
    assert {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".gif", ".bmp", ".avif", ".jp2", ".qoi"} <= (
        IMAGE_SUFFIXES
    )
    assert not {".json", ".ini", ".db", ".md", ".txt", ".mp4", ".pdf", ""} & IMAGE_SUFFIXES


def test_scan_folder_sorts_images_from_the_rest(tmp_path):
    for name in ("b.png", "a.JPG", "desktop.ini", "Thumbs.db", ".DS_Store", "a.json", "._a.png"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.tif").write_bytes(b"")
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "d.png").write_bytes(b"")
    flat = scan_folder(tmp_path)
    assert [p.name for p in flat.images] == ["a.JPG", "b.png"]
    assert sorted(p.name for p in flat.skipped) == sorted(
        [".DS_Store", "._a.png", "Thumbs.db", "a.json", "desktop.ini"]
    )
    assert flat.subfolders == [tmp_path / "sub"]
    deep = scan_folder(tmp_path, recursive=True, exclude=(tmp_path / "sub",))
    assert [p.name for p in deep.images] == ["a.JPG", "b.png"]
    assert [p.relative_to(tmp_path).as_posix() for p in scan_folder(tmp_path, recursive=True).images] == [
        "a.JPG",
        "b.png",
        "sub/c.tif",
    ]


def test_a_16_bit_grey_png_keeps_its_transparent_level(tmp_path):
    """PNG's tRNS key on 16-bit greyscale: the exact level becomes alpha 0, as 8-bit files keep theirs."""
    levels = np.full((4, 6), 1000, np.uint16)
    levels[0, 0] = 57904
    path = tmp_path / "g16.png"
    Image.fromarray(levels, "I;16").save(path, transparency=57904)
    assert Image.open(path).info["transparency"] == 57904
    read = read_image(path)
    assert read.alpha is not None and np.asarray(read.alpha)[0, :2].tolist() == [0, 255]
    assert np.asarray(read.rgb)[0, 0].tolist() == [255, 255, 255]  # composited on white


def test_an_invalid_exif_orientation_is_recorded_as_ignored(tmp_path):
    path = tmp_path / "odd.jpg"
    exif = Image.Exif()
    exif[0x0112] = 9
    Image.new("RGB", (6, 4), (10, 20, 30)).save(path, exif=exif)
    read = read_image(path)
    assert read.rgb.size == (6, 4)
    assert "EXIF orientation 9 ignored (valid values are 1-8)" in read.info["steps"]


@pytest.mark.parametrize(
    ("mode", "step"),
    [
        ("1", "1-bit pixels read as grey levels 0 and 255"),
        ("L", "grey level copied to R, G and B"),
        ("P", "palette colours expanded"),
        ("CMYK", "CMYK converted to RGB without a colour profile (Pillow's conversion)"),
        ("RGBA", "alpha fully opaque: not kept"),
    ],
)
def test_every_conversion_is_a_step_of_the_sidecar(tmp_path, mode, step):
    """The sidecar's read.steps lists every change the reader made, mode conversions included."""
    path = tmp_path / ("a.tif" if mode == "CMYK" else "a.png")
    Image.fromarray(TRUTH).convert(mode).save(path)
    read = read_image(path)
    assert read.info["mode"] == mode and step in read.info["steps"]
    assert read.rgb.mode == "RGB"


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16_bit_colour_is_a_step_of_the_sidecar(tmp_path, suffix):
    """Pillow decodes 16-bit colour to 8 bits itself (mode RGB): the sidecar says so; 8-bit files say
    nothing."""
    import cv2

    pixels = np.zeros((4, 6, 3), np.uint16)
    pixels[0, 0] = [1000, 40000, 65535]
    cv2.imwrite(str(tmp_path / f"deep{suffix}"), pixels)
    cv2.imwrite(str(tmp_path / f"plain{suffix}"), (pixels >> 8).astype(np.uint8))
    deep, plain = read_image(tmp_path / f"deep{suffix}"), read_image(tmp_path / f"plain{suffix}")
    assert "16 bits per channel reduced to 8 by Pillow (the high byte kept)" in deep.info["steps"]
    assert plain.info["steps"] == []
    assert np.array_equal(np.asarray(deep.rgb), np.asarray(plain.rgb))  # BGR on disk: the same pixels


def test_a_very_large_image_is_no_decompression_bomb(tmp_path):
    """Pillow refuses more than 179 Mpx (a limit for untrusted uploads); pure restores any size by tiling
    and guards memory itself (the plan), so a 20000 x 20000 header reads."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 20000, 20000, 8, 0, 0, 0, 0)  # 8-bit grey, declared only
    path = tmp_path / "huge.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))
    assert read_header(path).size == (20000, 20000)


def test_an_unreadable_file_is_named_once(tmp_path):
    """Pillow repeats the path in its own message (``cannot identify image file '<path>'``)."""
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    for read in (read_image, read_header):
        with pytest.raises(ImageReadError) as caught:
            read(broken)
        message = str(caught.value)
        assert message.startswith(f"{broken}: not a readable image (UnidentifiedImageError")
        assert message.count("broken.png") == 1, message


def test_a_profile_that_cannot_be_applied_is_ignored_with_a_note(tmp_path):
    """A damaged profile, or one for another colour space (Lab on RGB pixels), no longer fails the image:
    the values are read as sRGB, as browsers do, the step is recorded and a note names the file."""
    from PIL import ImageCms

    lab = ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB")).tobytes()
    for name, icc in [("damaged.png", b"not an ICC profile at all"), ("lab.png", lab)]:
        path = tmp_path / name
        Image.fromarray(TRUTH).save(path, icc_profile=icc)
        read = read_image(path)
        assert np.array_equal(np.asarray(read.rgb), TRUTH)
        assert read.icc_profile is None
        assert read.info["steps"][0].startswith("embedded ICC profile ignored (it cannot be applied: ")
        assert read.notes == [f"{path}: {read.info['steps'][0]}"]


def test_a_png_with_a_large_compressed_text_chunk_reads(tmp_path):
    """Pillow refuses a compressed text (or ICC) chunk that inflates beyond 1 MB, e.g. a photo editor's
    XMP or a workflow stored in the image (Pillow#8363), though other programs open such a file."""
    from PIL import PngImagePlugin

    pixels = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
    text = PngImagePlugin.PngInfo()
    text.add_text("XML:com.adobe.xmp", "x" * (2 * 1024 * 1024), zip=True)
    path = tmp_path / "xmp.png"
    Image.fromarray(pixels).save(path, pnginfo=text)
    assert read_header(path).size == (6, 4)
    assert np.array_equal(np.asarray(read_image(path).rgb), pixels)


def test_damaged_exif_is_a_note_naming_the_file_not_pillows_warning(tmp_path, recwarn):
    """Pillow reads a cut EXIF block as far as it goes and warns on stderr without naming the file
    (``UserWarning: Corrupt EXIF data.``, Pillow#8348-like photos); the read notes it instead."""
    import struct

    image = Image.new("RGB", (6, 4), (200, 30, 60))
    exif = image.getexif()
    exif[0x0112] = 6
    path = tmp_path / "phone.jpg"
    image.save(path)
    data = path.read_bytes()
    cut = exif.tobytes()[:20]  # the IFD promises entries the block does not hold
    path.write_bytes(data[:2] + b"\xff\xe1" + struct.pack(">H", len(cut) + 2) + cut + data[2:])
    assert read_header(path).size == (6, 4)
    read = read_image(path)
    assert read.rgb.size == (6, 4)
    assert [str(w.message) for w in recwarn] == []
    assert len(read.notes) == 1 and read.notes[0].startswith(f"{path}: metadata damaged (Corrupt EXIF data.")
    assert read.info["steps"][0].startswith("metadata damaged (")


def test_an_image_in_memory_is_converted_as_a_file_is(tmp_path):
    """rgb_and_alpha (what Restorer.restore applies to a PIL image that is not RGB) gives read_image's pixels
    for the same image saved as a file, and names the image ``image`` in its errors."""
    levels = np.arange(0, 65536, 257, dtype=np.uint16).reshape(16, 16)
    rgba = np.dstack([np.full((16, 16, 3), 90, np.uint8), np.where(np.eye(16) > 0, 0, 255).astype(np.uint8)])
    for image in (Image.fromarray(levels), Image.fromarray(rgba, "RGBA")):
        image.save(tmp_path / "a.png")
        read = read_image(tmp_path / "a.png")
        rgb, alpha = rgb_and_alpha(image)
        assert np.array_equal(np.asarray(rgb), np.asarray(read.rgb))
        assert (alpha is None) == (read.alpha is None)
        assert alpha is None or np.array_equal(np.asarray(alpha), np.asarray(read.alpha))
    with pytest.raises(ImageReadError, match=r"^image: mode F holds NaN"):
        rgb_and_alpha(Image.fromarray(np.full((4, 4), np.nan, np.float32)))


def test_a_file_that_is_not_there_is_named_with_where_it_was_looked_for(tmp_path, monkeypatch):
    """read_image('typo.png') from Python: the line says it does not exist and, for a relative path, which
    folder it was read from (it said 'no longer exists (moved or deleted after it was listed?)')."""
    monkeypatch.chdir(tmp_path)
    where = r"^typo.png \(relative to the current folder .*\): does not exist"
    with pytest.raises(ImageReadError, match=where):
        read_image("typo.png")
