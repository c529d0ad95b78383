"""A PNG of a few bytes whose header claims 30000 x 30000 pixels, for the tests of the pixel limit."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

from PIL import Image


def huge_png(path: Path, width: int = 30000, height: int = 30000) -> Path:
    """A 1x1 RGB PNG whose IHDR chunk is rewritten to claim ``width`` x ``height`` (its CRC recomputed)."""
    Image.new("RGB", (1, 1), (10, 20, 30)).save(path)
    data = bytearray(path.read_bytes())
    assert data[12:16] == b"IHDR"  # after the 8-byte signature and the chunk's 4-byte length
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))
    return path
