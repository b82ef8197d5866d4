"""Test inputs built by hand: an Adobe RGB (1998)-like ICC profile, its colour maths, and a 16-bit
RGBA PNG writer (Pillow cannot write 16 bits per channel with alpha)."""

from __future__ import annotations

import struct
import zlib

import numpy as np

ADOBE_GAMMA = 563 / 256  # 2.19921875, as the u8Fixed8 number the profile stores
ADOBE_COLORANTS = np.array(  # D50-adapted XYZ of the red, green and blue primaries (columns)
    [[0.60974, 0.20528, 0.14919], [0.31111, 0.62567, 0.06322], [0.01947, 0.06087, 0.74457]]
)
SRGB_COLORANTS = np.array(  # littlecms' built-in sRGB, Bradford-adapted to D50
    [[0.4360747, 0.3850649, 0.1430804], [0.2225045, 0.7168786, 0.0606169], [0.0139322, 0.0971045, 0.7141733]]
)
D50 = (0.9642, 1.0, 0.8249)


def _s15(value: float) -> bytes:
    return struct.pack(">i", round(value * 65536))


def _xyz(x: float, y: float, z: float) -> bytes:
    return b"XYZ \0\0\0\0" + _s15(x) + _s15(y) + _s15(z)


def _desc(text: str) -> bytes:
    ascii_text = text.encode() + b"\0"
    return b"desc\0\0\0\0" + struct.pack(">I", len(ascii_text)) + ascii_text + bytes(4 + 4 + 2 + 1 + 67)


def adobe_rgb_profile(name: str = "Adobe RGB (1998)") -> bytes:
    """A version-2 matrix/TRC display profile with Adobe RGB (1998)'s primaries and gamma."""
    curve = b"curv\0\0\0\0" + struct.pack(">IH", 1, round(ADOBE_GAMMA * 256)) + b"\0\0"
    tags = [
        (b"desc", _desc(name)),
        (b"wtpt", _xyz(*D50)),
        (b"rXYZ", _xyz(*ADOBE_COLORANTS[:, 0])),
        (b"gXYZ", _xyz(*ADOBE_COLORANTS[:, 1])),
        (b"bXYZ", _xyz(*ADOBE_COLORANTS[:, 2])),
        (b"rTRC", curve),
        (b"gTRC", curve),
        (b"bTRC", curve),
        (b"cprt", b"text\0\0\0\0no copyright, test profile\0"),
    ]
    offset = 128 + 4 + 12 * len(tags)
    table, data = [struct.pack(">I", len(tags))], b""
    for signature, body in tags:
        body += bytes(-len(body) % 4)
        table.append(signature + struct.pack(">II", offset + len(data), len(body)))
        data += body
    body = b"".join(table) + data
    header = bytearray(128)
    header[0:4] = struct.pack(">I", 128 + len(body))
    header[8:12] = bytes([2, 0x10, 0, 0])
    header[12:24] = b"mntrRGB XYZ "
    header[24:36] = struct.pack(">6H", 2024, 1, 1, 0, 0, 0)
    header[36:40] = b"acsp"
    header[68:80] = b"".join(_s15(v) for v in D50)
    return bytes(header) + body


def adobe_to_srgb(rgb: np.ndarray) -> np.ndarray:
    """Adobe RGB 8-bit levels -> sRGB 8-bit levels, computed with the textbook formulas."""
    linear = (np.asarray(rgb, dtype=np.float64) / 255) ** ADOBE_GAMMA
    xyz = linear @ ADOBE_COLORANTS.T
    srgb = np.clip(xyz @ np.linalg.inv(SRGB_COLORANTS).T, 0, 1)
    encoded = np.where(srgb <= 0.0031308, 12.92 * srgb, 1.055 * srgb ** (1 / 2.4) - 0.055)
    return np.round(encoded * 255)


def png_rgba16(pixels: np.ndarray, icc: bytes | None = None) -> bytes:
    """A 16-bit RGBA PNG of ``pixels`` ``[H, W, 4]`` uint16, with an iCCP chunk when ``icc`` is given."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    height, width = pixels.shape[:2]
    rows = b"".join(b"\0" + row.astype(">u2").tobytes() for row in pixels)
    out = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, 6, 0, 0, 0))
    if icc:
        out += chunk(b"iCCP", b"Adobe RGB\0\0" + zlib.compress(icc))
    return out + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
