"""Helpers for the reliability tests: hostile image builders, the error-shape check, the gallery
as the API shows it (test client or HTTP) and as the SQLite file holds it, and a real waitress
server on 127.0.0.1 in a thread."""

from __future__ import annotations

import io
import sqlite3
import struct
import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import requests
from flask import Flask
from flask.testing import FlaskClient
from PIL import Image, ImageDraw

from service.http.serving import DrainingServer

ERROR_KEYS = {"ok", "status", "code", "error"}


# -- responses ---------------------------------------------------------------------------
def error_body(status: int, body: Any) -> dict[str, Any]:
    """Check the one error shape of a non-2xx answer and return it."""
    assert isinstance(body, dict) and set(body) == ERROR_KEYS, body
    assert body["ok"] is False and body["status"] == status, body
    assert isinstance(body["code"], str) and body["code"] and body["code"] == body["code"].strip().lower(), body
    assert isinstance(body["error"], str) and body["error"], body
    return body


def assert_error(r: Any, status: int, code: str) -> None:
    """``r``: a Flask test response or a requests response."""
    body = r.get_json(silent=True) if hasattr(r, "get_json") else r.json()
    assert r.status_code == status, (r.status_code, body)
    assert error_body(status, body)["code"] == code, body


def snapshot(client: FlaskClient) -> dict[str, Any]:
    """Everything the API shows about the gallery: the listing and every person's details."""
    listing = client.get("/v1/people?limit=10000").get_json()
    return {"people": listing, "details": {p["id"]: client.get(f"/v1/people/{p['id']}").get_json() for p in listing["people"]}}


def api_state(base: str) -> dict[str, dict[int, str]]:
    listing = requests.get(f"{base}/v1/people?limit=10000", timeout=30).json()
    assert listing["total"] == len(listing["people"])
    state = {}
    for person in listing["people"]:
        details = requests.get(f"{base}/v1/people/{person['id']}", timeout=30).json()
        state[person["id"]] = {f["id"]: f["image_sha256"] for f in details["faces"]}
        assert person["face_count"] == len(state[person["id"]])
    return state


def sqlite_state(path: Path) -> dict[str, dict[int, str]]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert db.execute("PRAGMA foreign_key_check").fetchall() == []
        state: dict[str, dict[int, str]] = {pid: {} for (pid,) in db.execute("SELECT id FROM people")}
        for face_id, person_id, sha in db.execute("SELECT id, person_id, image_sha256 FROM faces"):
            state[person_id][face_id] = sha
        return state
    finally:
        db.close()


# -- image builders ----------------------------------------------------------------------
def encode(image: Image.Image, fmt: str, **options: Any) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **options)
    return buf.getvalue()


def landscape(width: int = 64, height: int = 48) -> Image.Image:
    """A small synthetic picture without a face (fast through the detector)."""
    img = Image.new("RGB", (width, height), (120, 170, 230))
    draw = ImageDraw.Draw(img)
    draw.rectangle((0, height * 5 // 8, width, height), fill=(70, 130, 60))
    draw.ellipse((width * 3 // 4, 2, width * 3 // 4 + width // 8, 2 + width // 8), fill=(250, 220, 90))
    return img


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width`` x ``height`` RGB pixels but holds almost no data."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", zlib.compress(b"\0" * 64)) + png_chunk(b"IEND", b"")


def png_with_chunk(png: bytes, kind: bytes, data: bytes) -> bytes:
    """``png`` with one more chunk right after IHDR."""
    return png[:33] + png_chunk(kind, data) + png[33:]


def png16_rgb(image: Image.Image) -> bytes:
    """A true 16-bit-per-channel RGB PNG (Pillow cannot write one; written by hand)."""
    arr = np.asarray(image.convert("RGB")).astype(">u2") * 257
    height, width, _ = arr.shape
    raw = b"".join(b"\x00" + arr[y].tobytes() for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", zlib.compress(raw, 1)) + png_chunk(b"IEND", b"")


def png16_gray(image: Image.Image) -> bytes:
    arr = np.asarray(image.convert("L")).astype(np.uint16) * 257
    return encode(Image.fromarray(arr), "PNG")


def jpeg_declaring(jpeg: bytes, width: int, height: int) -> bytes:
    """``jpeg`` with its frame header (SOF0/SOF2) patched to declare another size."""
    data = bytearray(jpeg)
    for marker in (b"\xff\xc0", b"\xff\xc2"):
        at = data.find(marker)
        if at >= 0:
            data[at + 5 : at + 9] = struct.pack(">HH", height, width)
            return bytes(data)
    raise ValueError("no SOF marker")


def gif_declaring(gif: bytes, width: int, height: int) -> bytes:
    data = bytearray(gif)
    data[6:10] = struct.pack("<HH", width, height)
    return bytes(data)


def bmp_declaring(width: int, height: int) -> bytes:
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 0, 0, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + len(info), 0, 0, 14 + len(info)) + info


# EXIF orientation -> the transpose that undoes it (so that the displayed image is the original)
UNDO_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


def exif_oriented(image: Image.Image, orientation: int) -> bytes:
    """A JPEG whose stored pixels are ``image`` turned so that applying the EXIF ``orientation``
    shows ``image`` again."""
    stored = image if orientation == 1 else image.transpose(UNDO_ORIENTATION[orientation])
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(stored, "JPEG", quality=92, exif=exif.tobytes())


# -- a real server -----------------------------------------------------------------------
@contextmanager
def served(app: Flask, threads: int = 8, **options: Any) -> Iterator[str]:
    """The app behind waitress (with the service's graceful stop) on 127.0.0.1, in a thread;
    yields its base URL and stops it afterwards."""
    server = DrainingServer(app, shutdown_timeout=10.0, host="127.0.0.1", port=0, threads=threads, ident="fewface", **options)
    host, port = server.addresses[0]
    thread = threading.Thread(target=server.serve, name="waitress", daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()
        thread.join(timeout=30)
        assert not thread.is_alive(), "server thread did not stop"
