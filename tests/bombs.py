"""Crafted uploads that cost far more to decode or parse than their size suggests, built on the
fly (Pillow, numpy, zlib; no binary fixtures). Used by tests/test_limits.py and bench/limits.py.

Each builder streams its compressed data, so building a 40 Mpx image costs a few MB here."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import struct
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import requests
from PIL import Image

WIDE_SIZE = (8000, 5000)  # 40 Mpx: exactly FEWFACE_MAX_IMAGE_PIXELS


# -- PNG -------------------------------------------------------------------------------------
def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_wide(width: int, height: int, bit_depth: int, color_type: int) -> bytes:
    """A PNG of ``width`` x ``height`` pixels at ``bit_depth`` (8/16) and ``color_type`` (0 gray,
    2 RGB, 4 gray+alpha, 6 RGBA) whose pixels are all zero except a ramp every 64 rows."""
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[color_type]
    row_bytes = width * channels * bit_depth // 8
    zero_row = b"\0" * (row_bytes + 1)
    packer = zlib.compressobj(9)
    parts = []
    base = np.arange(row_bytes, dtype=np.uint32)
    for y in range(height):
        row = b"\0" + ((base + y) & 0xFF).astype(np.uint8).tobytes() if y % 64 == 0 else zero_row
        parts.append(packer.compress(row))
    parts.append(packer.flush())
    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", b"".join(parts)) + _chunk(b"IEND", b"")


# -- TIFF ------------------------------------------------------------------------------------
def _tiff(width: int, height: int, tags: dict[int, tuple[int, list[int]]], blocks: list[bytes]) -> bytes:
    """Little-endian TIFF: one IFD with ``tags`` (tag -> (type, values)), then the data blocks;
    tags 273/324 (offsets) get the blocks' offsets, 279/325 (byte counts) their sizes."""
    offsets_tag, counts_tag = (324, 325) if 322 in tags else (273, 279)
    entries = dict(tags)
    entries[256] = (4, [width])
    entries[257] = (4, [height])
    entries[counts_tag] = (4, [len(b) for b in blocks])
    entries[offsets_tag] = (4, [0] * len(blocks))
    count = len(entries)
    ifd_size = 2 + 12 * count + 4
    extra_at = 8 + ifd_size
    extra = bytearray()
    data_at = extra_at + sum(4 * len(v) for t, v in entries.values() if len(v) * (2 if t == 3 else 4) > 4)
    offsets, at = [], data_at
    for b in blocks:
        offsets.append(at)
        at += len(b)
    entries[offsets_tag] = (4, offsets)
    ifd = bytearray(struct.pack("<H", count))
    for tag in sorted(entries):
        kind, values = entries[tag]
        fmt = "<H" if kind == 3 else "<I"
        raw = b"".join(struct.pack(fmt, v) for v in values)
        if len(raw) <= 4:
            ifd += struct.pack("<HHI", tag, kind, len(values)) + raw.ljust(4, b"\0")
        else:
            raw = b"".join(struct.pack("<I", v) for v in values) if kind == 3 else raw
            ifd += struct.pack("<HHII", tag, 4 if kind == 3 else kind, len(values), extra_at + len(extra))
            extra += raw
    ifd += b"\0\0\0\0"
    return b"II*\0" + struct.pack("<I", 8) + bytes(ifd) + bytes(extra) + b"".join(blocks)


def tiff_huge_tile(width: int = 100, height: int = 100, tile: int = 24576) -> bytes:
    """A deflate-compressed RGB TIFF declaring ``width`` x ``height`` pixels in one
    ``tile`` x ``tile`` tile: libtiff allocates the whole tile (1.7 GiB at 24576) before failing."""
    block = zlib.compress(b"\0" * 64)
    tags = {
        258: (3, [8, 8, 8]),
        259: (3, [8]),  # deflate: decoded by libtiff
        262: (3, [2]),
        277: (3, [3]),
        284: (3, [1]),
        322: (4, [tile]),
        323: (4, [tile]),
    }
    return _tiff(width, height, tags, [block])


def tiff_float(width: int, height: int, rows_per_strip: int = 16) -> bytes:
    """A 32-bit float gray TIFF (mode F), deflate-compressed strips of a ramp."""
    tags = {258: (3, [32]), 259: (3, [8]), 262: (3, [1]), 277: (3, [1]), 278: (4, [rows_per_strip]), 339: (3, [3])}
    strips = []
    ramp = np.linspace(0.0, 1.0, width, dtype="<f4")
    for y in range(0, height, rows_per_strip):
        rows = min(rows_per_strip, height - y)
        strip = np.zeros((rows, width), dtype="<f4")
        strip[0] = ramp
        strips.append(zlib.compress(strip.tobytes(), 9))
    return _tiff(width, height, tags, strips)


# -- JPEG ------------------------------------------------------------------------------------
def _segments(data: bytes) -> list[tuple[int, bytes]]:
    """(marker, bytes) of each JPEG segment after SOI; a scan includes its entropy-coded data."""
    out, i = [], 2
    while i < len(data):
        marker = data[i + 1]
        if marker == 0xD9:
            out.append((marker, data[i : i + 2]))
            break
        end = i + 2 + int.from_bytes(data[i + 2 : i + 4], "big")
        if marker == 0xDA:
            while True:
                end = data.index(b"\xff", end)
                if data[end + 1] == 0 or 0xD0 <= data[end + 1] <= 0xD7:
                    end += 2
                    continue
                break
        out.append((marker, data[i:end]))
        i = end
    return out


def progressive_jpeg(width: int = 640, height: int = 480, extra_scans: int = 0) -> bytes:
    """A progressive JPEG plus ``extra_scans`` copies of its last scan's header without data:
    each one still makes libjpeg pass over every block of the image."""
    rng = np.random.default_rng(0)
    small = rng.integers(0, 255, (max(1, height // 16), max(1, width // 16), 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(small).resize((width, height), Image.Resampling.BILINEAR).save(buf, "JPEG", progressive=True, quality=90)
    data = buf.getvalue()
    if not extra_scans:
        return data
    segments = _segments(data)
    last = len(segments) - 2  # the final scan (before EOI)
    first = last
    while segments[first - 1][0] == 0xC4:  # its Huffman tables
        first -= 1
    scan = segments[last][1]
    header = b"".join(s for _, s in segments[first:last]) + scan[: 2 + int.from_bytes(scan[2:4], "big")]
    return data[:-2] + header * extra_scans + b"\xff\xd9"


# -- other formats ---------------------------------------------------------------------------
def eps(size: int) -> bytes:
    """An EPS of about ``size`` bytes: Pillow's EPS plugin reads it line by line to find its header."""
    head = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 100 100\n"
    line = b"%%comment " + b"x" * 60 + b"\n"
    return head + line * max(1, (size - len(head)) // len(line))


# -- state files -----------------------------------------------------------------------------
def _pipeline() -> str:
    from service.config import Settings
    from service.store import gallery_pipeline

    return gallery_pipeline(Settings.from_env({}))


def state_bomb(inflated: int, model: str = "dlib-resnet-v1", dim: int = 128) -> bytes:
    """A gzipped state file that unpacks to about ``inflated`` bytes: a valid header, then a huge
    'people' list of tiny objects (the most Python objects per byte)."""
    head = json.dumps(
        {
            "format": "fewface-state",
            "version": 1,
            "model": {"id": model, "dim": dim, "pipeline": _pipeline()},
            "embedding_encoding": "base64-float32-le",
        }
    )[:-1]
    item = b'{"id":"p","name":"p","created_at":0},'
    count = max(1, (inflated - len(head)) // len(item))
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=9, mtime=0) as gz:
        gz.write(head.encode() + b',"people":[')
        block = item * 4096
        for _ in range(count // 4096):
            gz.write(block)
        gz.write(b'{"id":"q","name":"q","created_at":0}],"faces":[],"checksum":{"algorithm":"sha256","value":"' + b"0" * 64 + b'"}}')
    return out.getvalue()


def nested_json(depth_items: int) -> bytes:
    """A raw JSON body of many empty objects: ``[{},{},...]`` (about 24x its size as Python objects)."""
    return b'{"format":"fewface-state","faces":[' + b"{}," * depth_items + b"{}]}"


def state_people(inflated: int, dim: int = 128, model: str = "dlib-resnet-v1") -> bytes:
    """A gzipped state in this service's canonical layout with a correct checksum and about
    ``inflated`` bytes of distinct, valid people, the last of which repeats the first: everything
    is read (the most memory a state upload can take) and then refused, so nothing is written."""
    count = max(2, inflated // 48)
    people = b",".join(b'{"created_at":0,"id":"p%07d","name":"p"}' % i for i in range(count - 1))
    people += b',{"created_at":0,"id":"p0000000","name":"p"}'
    body = (
        b'{"embedding_encoding":"base64-float32-le","exported_at":0,"faces":[],"format":"fewface-state","generator":"bomb",'
        + b'"model":{"dim":%d,"id":"%s","pipeline":"%s"},"people":[' % (dim, model.encode(), _pipeline().encode())
        + people
        + b'],"version":1}'
    )
    digest = hashlib.sha256(body).hexdigest().encode()
    return gzip.compress(b'{"checksum":{"algorithm":"sha256","value":"' + digest + b'"},' + body[1:], 6, mtime=0)


# -- the crafted uploads, and what one costs a real server -----------------------------------
@dataclass(frozen=True)
class Crafted:
    name: str
    path: str  # route it is sent to
    content_type: str
    status: int  # expected answer
    code: str | None  # expected error code; None for 2xx
    build: Callable[[], bytes]


def _many_scans() -> bytes:
    return progressive_jpeg(2000, 1500, 20000)


def crafted_uploads() -> list[Crafted]:
    """Issue 11's crafted files, each within FEWFACE_MAX_UPLOAD_BYTES (20 MiB)."""
    w, h = WIDE_SIZE
    gz, js, bad = "application/gzip", "application/json", "invalid_state"
    return [
        Crafted("tiled TIFF, one 24576^2 tile", "/v1/identify", "image/tiff", 422, "image_too_complex", tiff_huge_tile),
        Crafted("float TIFF 40 Mpx", "/v1/identify", "image/tiff", 200, None, lambda: tiff_float(w, h)),
        Crafted("16-bit gray PNG 40 Mpx", "/v1/identify", "image/png", 200, None, lambda: png_wide(w, h, 16, 0)),
        Crafted("16-bit RGB PNG 40 Mpx", "/v1/identify", "image/png", 200, None, lambda: png_wide(w, h, 16, 2)),
        Crafted("RGBA PNG 40 Mpx", "/v1/identify", "image/png", 200, None, lambda: png_wide(w, h, 8, 6)),
        Crafted("16-bit RGBA PNG 40 Mpx", "/v1/identify", "image/png", 200, None, lambda: png_wide(w, h, 16, 6)),
        Crafted(
            "progressive JPEG, 20,000 scans",
            "/v1/identify",
            "image/jpeg",
            422,
            "image_too_complex",
            lambda: progressive_jpeg(2000, 1500, 20000),
        ),
        Crafted("progressive JPEG 40 Mpx, 100 scans", "/v1/identify", "image/jpeg", 200, None, lambda: progressive_jpeg(w, h, 90)),
        Crafted("EPS 18 MB", "/v1/identify", "application/octet-stream", 422, "invalid_image", lambda: eps(18_000_000)),
        Crafted("gzip state bomb (166 MB inflated)", "/v1/state", gz, 400, bad, lambda: state_bomb(166_000_000)),
        Crafted("state, 229k valid people (11 MB)", "/v1/state", gz, 400, bad, lambda: state_people(11_000_000)),
        Crafted("state, 6M empty objects (18 MB JSON)", "/v1/state", js, 400, bad, lambda: nested_json(6_000_000)),
        Crafted("identify JSON, 6M empty objects (18 MB)", "/v1/identify", js, 400, "invalid_json", lambda: nested_json(6_000_000)),
    ]


def proc_kib(pid: int, key: str) -> int:
    """A /proc/<pid>/status figure in KiB (VmRSS, VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def proc_cpu(pid: int) -> float:
    """User + system CPU seconds of a process, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def reset_peak(pid: int) -> None:
    """Start VmHWM again from the current VmRSS."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def send_and_measure(base: str, pid: int, item: Crafted, body: bytes) -> dict[str, Any]:
    """POST one crafted body; the answer, wall and server CPU seconds, and how far the server's
    resident size rose above where it was before (peak, MiB)."""
    reset_peak(pid)
    rss = proc_kib(pid, "VmRSS")
    cpu = proc_cpu(pid)
    started = time.monotonic()
    r = requests.post(base + item.path, data=body, headers={"Content-Type": item.content_type}, timeout=120)
    wall = time.monotonic() - started
    try:
        code = r.json().get("code")
    except ValueError:
        code = None
    return {
        "name": item.name,
        "upload_kib": len(body) / 1024,
        "status": r.status_code,
        "code": code,
        "wall_s": wall,
        "cpu_s": proc_cpu(pid) - cpu,
        "rss_growth_mib": (proc_kib(pid, "VmHWM") - rss) / 1024,
    }
