"""Hostile and odd input: every case gets a clear 4xx with a stable code and leaves the gallery as it
was, or is legitimately handled (2xx) with the right result. Complements tests/test_api.py."""

from __future__ import annotations

import base64
import io
import json
import socket
import zlib
from collections.abc import Callable
from typing import Any

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient
from PIL import Image

from tests.conftest import photo, upload
from tests.hostile import (
    assert_error,
    bmp_declaring,
    encode,
    error_body,
    exif_oriented,
    gif_declaring,
    jpeg_declaring,
    landscape,
    png16_gray,
    png16_rgb,
    png_declaring,
    png_with_chunk,
    served,
    snapshot,
)

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:PIL.TiffImagePlugin")  # corrupt EXIF notes

FACE = "img27.jpg"  # one face, 745 x 465
OTHER = "img12.jpg"  # someone else, one face


@pytest.fixture
def taught(client: FlaskClient) -> FlaskClient:
    """A gallery with p0 (FACE) and p1 (OTHER)."""
    assert client.post("/v1/people/p0/faces", data={"file": upload(photo(FACE)), "name": "Person Zero"}).status_code == 201
    assert client.post("/v1/people/p1/faces", data={"file": upload(photo(OTHER))}).status_code == 201
    return client


def face_image() -> Image.Image:
    return Image.open(io.BytesIO(photo(FACE))).convert("RGB")


def post_image(client: FlaskClient, route: str, data: bytes, how: str = "multipart", **params: str) -> Any:
    field = "image_a" if route == "/v1/verify" else "file"
    if how == "multipart":
        form: dict[str, Any] = {field: upload(data, "x.bin"), **params}
        if route == "/v1/verify":
            form["image_b"] = upload(photo(FACE))
        return client.post(route, data=form)
    if how == "json":
        body: dict[str, Any] = {"image_a" if route == "/v1/verify" else "base64": base64.b64encode(data).decode(), **params}
        if route == "/v1/verify":
            body["image_b"] = base64.b64encode(photo(FACE)).decode()
        return client.post(route, json=body)
    return client.post(route, data=data, content_type="image/jpeg", query_string=params)


def refused_everywhere(
    client: FlaskClient, data: bytes, status: int, code: str, hows: tuple[str, ...] = ("multipart", "json", "raw")
) -> None:
    """Teach (existing and new person), identify and verify all refuse ``data`` alike and nothing changes."""
    before = snapshot(client)
    for how in hows:
        for route in ("/v1/people/p0/faces", "/v1/people/newbie/faces", "/v1/identify", "/v1/verify"):
            if how == "raw" and route == "/v1/verify":
                continue  # verify takes two images: no raw body
            assert_error(post_image(client, route, data, how), status, code)
    assert snapshot(client) == before


# -- not images, broken images -----------------------------------------------------------
NOT_IMAGES = {
    "html": b"<!doctype html><html><body>hi</body></html>",
    "svg": b"<svg xmlns='http://www.w3.org/2000/svg' width='10' height='10'/>",
    "pdf": b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF",
    "eps": b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n",
    "zeros": b"\0" * 4096,
    "json": b'{"base64": "AAAA"}',
    "one byte": b"\xff",
    "jpeg magic only": b"\xff\xd8\xff",
    "png magic only": b"\x89PNG\r\n\x1a\n",
}


@pytest.mark.parametrize("name", NOT_IMAGES)
def test_non_image_bytes(taught: FlaskClient, name: str) -> None:
    refused_everywhere(taught, NOT_IMAGES[name], 422, "invalid_image")


def test_formats_outside_the_allow_list(taught: FlaskClient) -> None:
    small = landscape()
    for fmt in ("ICO", "PCX", "TGA", "PPM", "DDS"):
        refused_everywhere(taught, encode(small, fmt), 422, "invalid_image", hows=("multipart",))


def truncations() -> dict[str, bytes]:
    jpeg = photo(FACE)
    png = encode(face_image(), "PNG")
    gif = encode(face_image().convert("P"), "GIF")
    webp = encode(face_image(), "WEBP")
    return {
        "jpeg 10 bytes": jpeg[:10],
        "jpeg headers only": jpeg[:600],
        "jpeg half": jpeg[: len(jpeg) // 2],
        "png 40 bytes": png[:40],
        "png half": png[: len(png) // 2],
        "gif half": gif[: len(gif) // 2],
        "webp half": webp[: len(webp) // 2],
    }


def test_truncated_images(taught: FlaskClient) -> None:
    for name, data in truncations().items():
        before = snapshot(taught)
        for route in ("/v1/people/p0/faces", "/v1/people/newbie/faces", "/v1/identify"):
            r = post_image(taught, route, data)
            assert_error(r, 422, "invalid_image")
        assert snapshot(taught) == before, name


def test_zero_byte_body_in_every_form(taught: FlaskClient) -> None:
    before = snapshot(taught)
    for route in ("/v1/people/p0/faces", "/v1/people/newbie/faces", "/v1/identify"):
        assert_error(taught.post(route, data=b"", content_type="image/jpeg"), 400, "missing_image")
        assert_error(taught.post(route, data=b"", content_type="application/octet-stream"), 400, "missing_image")
        assert_error(taught.post(route, json={"base64": ""}), 400, "missing_image")
        assert_error(taught.post(route, json={"base64": "data:image/png;base64,"}), 400, "missing_image")
        assert_error(taught.post(route), 400, "missing_image")
    assert snapshot(taught) == before


# -- decompression bombs and big images --------------------------------------------------
def bombs() -> dict[str, bytes]:
    jpeg = photo(FACE)
    return {
        "png 2^31 x 2^31": png_declaring(2**31 - 1, 2**31 - 1),
        "png 7000 x 7000": png_declaring(7000, 7000),  # 49 Mpx > the 40 Mpx default
        "png 1 x 50M": png_declaring(1, 50_000_000),
        "jpeg 65000 x 65000": jpeg_declaring(jpeg, 65000, 65000),
        "gif 65535 x 65535": gif_declaring(encode(landscape().convert("P"), "GIF"), 65535, 65535),
        "bmp 100000 x 100000": bmp_declaring(100_000, 100_000),
        "bilevel png 30000 x 30000 (real data)": encode(Image.new("1", (30_000, 30_000)), "PNG"),
    }


def test_decompression_bombs_refused_before_decoding(taught: FlaskClient) -> None:
    for data in bombs().values():
        before = snapshot(taught)
        for route in ("/v1/people/newbie/faces", "/v1/identify"):
            r = post_image(taught, route, data)
            assert_error(r, 422, "image_too_large")
            assert "FEWFACE_MAX_IMAGE_PIXELS" in r.get_json()["error"]
        assert snapshot(taught) == before


def test_compressed_text_and_icc_bombs(taught: FlaskClient) -> None:
    """A PNG text or ICC chunk that inflates to 16 MB is refused (Pillow caps chunks at 1 MB)."""
    png = encode(landscape(), "PNG")
    payload = b"k\0\0" + zlib.compress(b"\0" * 16_000_000)
    for kind in (b"zTXt", b"iCCP"):
        data = png_with_chunk(png, kind, payload)
        assert len(data) < 100_000
        assert_error(post_image(taught, "/v1/identify", data), 422, "invalid_image")


def test_pixel_limit_is_a_setting(make_app: Callable[..., Flask]) -> None:
    client = make_app(max_image_pixels=300_000).test_client()  # FACE has 346,425 pixels
    assert_error(client.post("/v1/identify", data={"file": upload(photo(FACE))}), 422, "image_too_large")
    assert client.post("/v1/identify", data={"file": upload(photo(OTHER))}).status_code == 200  # 232,400 pixels


def box_of(response: Any) -> list[float]:
    face = response.get_json()["faces"][0]
    b = face["box"]
    return [b["left"], b["top"], b["left"] + b["width"], b["top"] + b["height"]]


def close_boxes(a: list[float], b: list[float], tolerance: float) -> bool:
    return all(abs(x - y) <= tolerance for x, y in zip(a, b, strict=True))


def test_large_upscaled_photo_is_downscaled_and_boxes_are_in_original_pixels(taught: FlaskClient) -> None:
    original = taught.post("/v1/identify", data={"file": upload(photo(FACE))})
    reference = box_of(original)
    img = face_image()
    for factor in (3, 8):  # 2235 x 1395 (plain resize) and 5960 x 3720 (JPEG decoded at reduced scale)
        big = encode(img.resize((img.width * factor, img.height * factor), Image.Resampling.BICUBIC), "JPEG", quality=90)
        r = taught.post("/v1/identify", data={"file": upload(big)})
        body = r.get_json()
        assert r.status_code == 200 and body["face_count"] == 1, body
        assert (body["image"]["width"], body["image"]["height"]) == (img.width * factor, img.height * factor)
        expected = [v * factor for v in reference]
        side = expected[2] - expected[0]
        assert close_boxes(box_of(r), expected, 0.08 * side), (box_of(r), expected)
        face = body["faces"][0]
        assert face["match"]["person_id"] == "p0" and face["similarity"] > 0.95


def test_max_image_side_setting(make_app: Callable[..., Flask]) -> None:
    full = make_app().test_client().post("/v1/identify", data={"file": upload(photo(FACE))})
    small = make_app(max_image_side=400).test_client().post("/v1/identify", data={"file": upload(photo(FACE))})
    assert small.get_json()["face_count"] == 1
    side = box_of(full)[2] - box_of(full)[0]
    assert close_boxes(box_of(small), box_of(full), 0.1 * side), (box_of(small), box_of(full))


# -- legitimately odd images -------------------------------------------------------------
def odd_encodings() -> dict[str, bytes]:
    img = face_image()
    frames = [img.convert("P")] + [Image.new("P", img.size, 0)] * 3
    rgba = img.convert("RGBA")
    rgba.putalpha(255)
    paletted = img.convert("P", palette=Image.Palette.ADAPTIVE)
    paletted.info["transparency"] = 0
    return {
        "16-bit RGB PNG": png16_rgb(img),
        "16-bit gray PNG": png16_gray(img),
        "CMYK JPEG": encode(img.convert("CMYK"), "JPEG", quality=92),
        "gray JPEG": encode(img.convert("L"), "JPEG", quality=92),
        "progressive JPEG": encode(img, "JPEG", quality=92, progressive=True),
        "animated GIF (face first)": encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=80, loop=0),
        "multi-page TIFF": encode(img, "TIFF", save_all=True, append_images=[Image.new("RGB", img.size)]),
        "RGBA PNG": encode(rgba, "PNG"),
        "paletted PNG with transparency": encode(paletted, "PNG"),
        "LA PNG": encode(img.convert("LA"), "PNG"),
        "lossless WebP": encode(img, "WEBP", lossless=True),
        "BMP": encode(img, "BMP"),
        "JPEG without its end marker": photo(FACE)[:-2],
        "JPEG with a broken EXIF block": photo(FACE)[:2] + b"\xff\xe1\x00\x10Exif\x00\x00MM\x00*\xff\xff\xff\xff" + photo(FACE)[2:],
    }


def test_odd_but_valid_encodings_are_identified(taught: FlaskClient) -> None:
    for name, data in odd_encodings().items():
        r = taught.post("/v1/identify", data={"file": upload(data)})
        body = r.get_json()
        assert r.status_code == 200 and body["face_count"] == 1, (name, body)
        assert body["faces"][0]["match"] is not None and body["faces"][0]["match"]["person_id"] == "p0", name
        assert body["faces"][0]["similarity"] > 0.95, (name, body["faces"][0]["similarity"])


def test_teach_from_animated_gif_and_16_bit_png(client: FlaskClient) -> None:
    img = face_image()
    gif = encode(img.convert("P"), "GIF", save_all=True, append_images=[Image.new("P", img.size)] * 2, duration=80)
    r = client.post("/v1/people/gif/faces", data={"file": upload(gif, "a.gif")})
    assert r.status_code == 201 and r.get_json()["person"]["face_count"] == 1
    r = client.post("/v1/people/gif/faces", data={"file": upload(png16_rgb(img), "a.png")})
    assert r.status_code == 200 and r.get_json()["person"]["face_count"] == 2
    r = client.post("/v1/identify", data={"file": upload(photo(FACE))})
    assert r.get_json()["faces"][0]["match"]["person_id"] == "gif"


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied(taught: FlaskClient, orientation: int) -> None:
    """Every EXIF orientation: the face is found where it is seen, in the displayed image's pixels."""
    reference = box_of(taught.post("/v1/identify", data={"file": upload(photo(FACE))}))
    img = face_image()
    r = taught.post("/v1/identify", data={"file": upload(exif_oriented(img, orientation))})
    body = r.get_json()
    assert r.status_code == 200 and body["face_count"] == 1, body
    assert (body["image"]["width"], body["image"]["height"]) == img.size
    assert close_boxes(box_of(r), reference, 0.08 * (reference[2] - reference[0])), (box_of(r), reference)
    assert body["faces"][0]["match"]["person_id"] == "p0"


def test_exif_rotated_big_jpeg_maps_boxes_back(taught: FlaskClient) -> None:
    """EXIF rotation together with the reduced-scale JPEG decode of a big photo."""
    reference = box_of(taught.post("/v1/identify", data={"file": upload(photo(FACE))}))
    img = face_image()
    big = img.resize((img.width * 6, img.height * 6), Image.Resampling.BICUBIC)
    r = taught.post("/v1/identify", data={"file": upload(exif_oriented(big, 6))})
    body = r.get_json()
    assert (body["image"]["width"], body["image"]["height"]) == big.size
    expected = [v * 6 for v in reference]
    assert close_boxes(box_of(r), expected, 0.08 * (expected[2] - expected[0])), (box_of(r), expected)


def test_tiny_and_extreme_aspect_images_have_no_face_not_a_crash(taught: FlaskClient) -> None:
    """Images smaller than the smallest face once crashed the detector (500)."""
    before = snapshot(taught)
    for size in ((1, 1), (2, 2), (12, 12), (19, 19), (20, 20), (1, 3000), (40_000, 1), (21, 5000), (100, 13)):
        data = encode(Image.new("RGB", size, (128, 128, 128)), "PNG")
        r = taught.post("/v1/identify", data={"file": upload(data)})
        assert r.status_code == 200 and r.get_json()["face_count"] == 0, (size, r.get_json())
        assert_error(taught.post("/v1/people/p0/faces", data={"file": upload(data)}), 422, "no_face_detected")
        assert_error(taught.post("/v1/verify", data={"image_a": upload(data), "image_b": upload(data)}), 422, "no_face_detected")
    assert snapshot(taught) == before


# -- request bodies ----------------------------------------------------------------------
def test_content_types(taught: FlaskClient) -> None:
    jpeg = photo(FACE)
    before = snapshot(taught)
    # a real JPEG under a wrong image type is sniffed and handled
    r = taught.post("/v1/identify", data=jpeg, content_type="image/png")
    assert r.status_code == 200 and r.get_json()["face_count"] == 1
    r = taught.post("/v1/identify", data={"file": (io.BytesIO(jpeg), "face.txt", "text/plain")})
    assert r.status_code == 200 and r.get_json()["face_count"] == 1
    for ctype in ("text/plain", "application/xml", "application/x-www-form-urlencoded; charset=bogus", "video/mp4", "x"):
        r = taught.post("/v1/people/p0/faces", data=jpeg, content_type=ctype)
        assert r.status_code in (400, 415), (ctype, r.get_json())
        error_body(r.status_code, r.get_json())
    assert_error(taught.post("/v1/identify", data=json.dumps({"base64": "AAAA"}), content_type="text/plain"), 415, "unsupported_media_type")
    assert_error(taught.post("/v1/identify", data="base64=AAAA", content_type="application/x-www-form-urlencoded"), 400, "missing_image")
    assert snapshot(taught) == before


def test_oversized_bodies_are_413_in_every_form(make_app: Callable[..., Flask]) -> None:
    client = make_app(max_upload_bytes=50_000).test_client()
    big = photo(FACE)  # 156 KB
    forms: list[Callable[[], dict[str, Any]]] = [
        lambda: {"data": {"file": upload(big)}},
        lambda: {"data": big, "content_type": "image/jpeg"},
        lambda: {"json": {"base64": base64.b64encode(big).decode()}},
    ]
    for form in forms:
        assert_error(client.post("/v1/people/p/faces", **form()), 413, "payload_too_large")
        assert_error(client.post("/v1/identify", **form()), 413, "payload_too_large")
    assert client.get("/v1/people").get_json()["total"] == 0


def test_malformed_json_and_base64(taught: FlaskClient) -> None:
    good = base64.b64encode(photo(FACE)).decode()
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"data": "[" * 100_000 + "]" * 100_000, "content_type": "application/json"}, 400, "invalid_json"),  # was a 500
        ({"data": '{"a":' * 50_000 + "1" + "}" * 50_000, "content_type": "application/json"}, 400, "invalid_json"),
        ({"data": "[1, 2]", "content_type": "application/json"}, 400, "invalid_json"),
        ({"data": "null", "content_type": "application/json"}, 400, "invalid_json"),
        ({"data": "42", "content_type": "application/json"}, 400, "invalid_json"),
        ({"data": b'{"base64": "\xff\xfe"}', "content_type": "application/json"}, 400, "invalid_json"),
        ({"data": '{"base64": "AAAA",}', "content_type": "application/json"}, 400, "invalid_json"),
        ({"json": {"base64": "AAA"}}, 400, "invalid_base64"),
        ({"json": {"base64": "ÄÖÜ"}}, 400, "invalid_base64"),
        ({"json": {"base64": 12}}, 400, "invalid_base64"),
        ({"json": {"base64": None}}, 400, "invalid_base64"),
        ({"json": {"base64": {"data": good}}}, 400, "invalid_base64"),
        ({"json": {"base64": [["nested"]]}}, 400, "invalid_base64"),
        ({"json": {"base64": [good, "not base64!"]}}, 400, "invalid_base64"),  # one bad image spoils the request
        ({"json": {"base64": []}}, 400, "missing_image"),
        ({"json": {"base64": [""] * 11}}, 400, "too_many_images"),
        ({"json": {"base64": base64.b64encode(b"plain text").decode()}}, 422, "invalid_image"),
    ]
    before = snapshot(taught)
    for kwargs, status, code in cases:
        for route in ("/v1/people/p0/faces", "/v1/people/newbie/faces"):
            assert_error(taught.post(route, **kwargs), status, code)
    assert snapshot(taught) == before
    # whitespace and a data: URL prefix inside valid base64 are fine
    wrapped = "data:image/jpeg;base64," + "\n".join(good[i : i + 76] for i in range(0, len(good), 76))
    assert taught.post("/v1/identify", json={"base64": wrapped}).get_json()["face_count"] == 1


def test_a_bad_image_among_good_ones_stores_nothing(taught: FlaskClient) -> None:
    before = snapshot(taught)
    for person in ("p0", "newbie"):
        files = [upload(photo("img28.jpg")), upload(encode(landscape(320, 240), "PNG"))]
        assert_error(taught.post(f"/v1/people/{person}/faces", data={"file": files}), 422, "no_face_detected")
        files = [upload(photo("img28.jpg")), upload(photo(FACE)[:3000])]
        assert_error(taught.post(f"/v1/people/{person}/faces", data={"file": files}), 422, "invalid_image")
    assert snapshot(taught) == before


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"threshold": "nan"}, "invalid_parameter"),
        ({"threshold": "inf"}, "invalid_parameter"),
        ({"threshold": "-1.5"}, "invalid_parameter"),
        ({"threshold": "1e999"}, "invalid_parameter"),
        ({"top_k": "1.5"}, "invalid_parameter"),
        ({"top_k": "101"}, "invalid_parameter"),
        ({"top_k": "-1"}, "invalid_parameter"),
        ({"top_k": "9" * 400}, "invalid_parameter"),
    ],
)
def test_bad_parameters_as_form_fields(taught: FlaskClient, params: dict[str, str], code: str) -> None:
    assert_error(taught.post("/v1/identify", data={"file": upload(photo(FACE)), **params}), 400, code)


def test_bad_parameters_as_json_values(taught: FlaskClient) -> None:
    """JSON numbers that overflow once made a 500 (OverflowError)."""
    b64 = base64.b64encode(encode(landscape(), "PNG")).decode()
    for raw in ('"top_k": 1e400', '"threshold": ' + "9" * 400, '"top_k": [1]', '"threshold": {}', '"top_k": "x"', '"threshold": NaN'):
        r = taught.post("/v1/identify", data=f'{{"base64": "{b64}", {raw}}}', content_type="application/json")
        assert_error(r, 400, "invalid_parameter")
    for raw in ('"pick": ["largest"]', '"pick": {}', '"pick": "all"'):
        r = taught.post("/v1/people/p0/faces", data=f'{{"base64": "{b64}", {raw}}}', content_type="application/json")
        assert_error(r, 400, "invalid_parameter")
    for query in ("limit=0", "limit=10001", "limit=abc", "offset=-1", "offset=" + "9" * 30, "limit=1e3"):
        assert_error(taught.get(f"/v1/people?{query}"), 400, "invalid_parameter")


# -- ids and names -----------------------------------------------------------------------
def test_unknown_and_odd_ids(taught: FlaskClient) -> None:
    before = snapshot(taught)
    p1_face = before["details"]["p1"]["faces"][0]["id"]
    for path in ("/v1/people/nobody", "/v1/people/%00", "/v1/people/" + "x" * 10_000, "/v1/people/%E2%80%AE", "/v1/people/p0%20"):
        assert_error(taught.get(path), 404, "person_not_found")
        assert_error(taught.delete(path), 404, "person_not_found")
        assert_error(taught.patch(path, json={"name": "x"}), 404, "person_not_found")
    assert_error(taught.get("/v1/people/p0%2Fx"), 404, "person_not_found")  # ids may hold '/' (Facebox ids): person "p0/x"
    assert_error(taught.post("/v1/people//faces", data={"file": upload(photo(FACE))}), 404, "not_found")  # was a 308 redirect
    # face ids: another person's, missing, beyond SQLite's integer range (was a 500)
    assert_error(taught.delete(f"/v1/people/p0/faces/{p1_face}"), 404, "face_not_found")
    for face_id in ("999999", "9223372036854775807", "9223372036854775808", "9" * 40):
        assert_error(taught.delete(f"/v1/people/p0/faces/{face_id}"), 404, "face_not_found")
    for face_id in ("-1", "1.5", "abc", "0x10"):  # not a face id: the whole path is a person id (ids may hold '/')
        assert_error(taught.delete(f"/v1/people/p0/faces/{face_id}"), 404, "person_not_found")
    # ids a person cannot be taught under
    for bad_id in ("%00", "a%0Ab", "%20lead", "trail%20", "%E2%80%AEevil", "x" * 129, "%09"):
        assert_error(taught.post(f"/v1/people/{bad_id}/faces", data={"file": upload(photo(FACE))}), 400, "invalid_id")
    assert snapshot(taught) == before


UNICODE_NAMES = [
    "Zoë Ünïcødé",
    "王小明",
    "محمد عبد الله",  # Arabic, right to left
    "שרה לוי",
    "महेंद्र सिंह",  # combining marks
    "مهدی\u200cزاده",  # Persian zero-width non-joiner: part of the name
    "👩\u200d👩\u200d👧 family",  # emoji joined by zero-width joiners
    "Ω≈ç√∫ ÅÍÎÏ˝Ó 𝕿𝖊𝖘𝖙",
    "x" * 256,
]


@pytest.mark.parametrize("name", UNICODE_NAMES)
def test_unicode_names_round_trip(taught: FlaskClient, name: str) -> None:
    r = taught.post("/v1/people/uni/faces", json={"base64": base64.b64encode(photo("img25.jpg")).decode(), "name": name})
    assert r.status_code == 201 and r.get_json()["person"]["name"] == name
    assert taught.get("/v1/people/uni").get_json()["person"]["name"] == name
    r = taught.patch("/v1/people/p0", json={"name": name})
    assert r.status_code == 200 and taught.get("/v1/people/p0").get_json()["person"]["name"] == name
    r = taught.post("/v1/identify", data={"file": upload(photo("img25.jpg"))})
    assert r.get_json()["faces"][0]["match"]["name"] == name


BAD_NAMES = [
    "bad\x00name",
    "esc\x1b[31mred",
    "line\nbreak",
    "tab\there",
    "\u202eevil",  # right-to-left override
    "zero\u200bwidth space",
    "\ufeffbom",
    "lone \ud800 surrogate",
    "private \ue000 use",
    "unassigned \U000e0fff",
    "   ",
    "",
    "x" * 257,
    "x" * 10_000,
]


def test_bad_names_are_refused_and_change_nothing(taught: FlaskClient) -> None:
    before = snapshot(taught)
    for name in BAD_NAMES:
        r = taught.post("/v1/people/newbie/faces", json={"base64": base64.b64encode(photo("img25.jpg")).decode(), "name": name})
        if name == "":
            assert r.status_code == 201  # an empty name means "use the id", as an absent one does
            assert taught.delete("/v1/people/newbie").status_code == 200
            continue
        assert_error(r, 400, "invalid_name")
        assert_error(taught.patch("/v1/people/p0", json={"name": name}), 400, "invalid_name")
    for value in (None, 5, ["x"], {"x": 1}, True):
        assert_error(taught.patch("/v1/people/p0", json={"name": value}), 400, "invalid_name")
    assert_error(taught.patch("/v1/people/p0", json={}), 400, "invalid_name")
    assert snapshot(taught) == before


def test_names_are_trimmed(taught: FlaskClient) -> None:
    r = taught.patch("/v1/people/p0", json={"name": "  Spaced Out  "})
    assert r.get_json()["person"]["name"] == "Spaced Out"


# -- malformed HTTP against the real server ----------------------------------------------
def raw_http(base: str, payload: bytes) -> tuple[int, dict[str, Any]]:
    host, port = base.removeprefix("http://").split(":")
    data = b""
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        try:
            sock.sendall(payload)
        except OSError:  # the server may answer and close before it has read everything
            pass
        try:
            while chunk := sock.recv(65536):
                data += chunk
        except ConnectionResetError:
            pass
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def test_malformed_http_gets_the_error_shape_from_the_server(make_app: Callable[..., Flask]) -> None:
    app = make_app(max_upload_bytes=100_000)
    with served(app, max_request_body_size=100_000 + 64 * 1024) as base:
        # a body over waitress' own limit is refused before it is read, in the same shape
        r = requests.post(base + "/v1/identify", data=b"\0" * 300_000, headers={"Content-Type": "image/jpeg"}, timeout=30)
        assert_error(r, 413, "payload_too_large")
        # over the app's limit but under waitress': Flask's 413
        r = requests.post(base + "/v1/identify", data=b"\0" * 120_000, headers={"Content-Type": "image/jpeg"}, timeout=30)
        assert_error(r, 413, "payload_too_large")
        status, body = raw_http(base, b"POST /v1/identify HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n")
        assert status == 400 and error_body(400, body)["code"] == "bad_request"
        status, body = raw_http(base, b"GET /v1/people HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 300_000 + b"\r\n\r\n")
        assert status == 431 and error_body(431, body)["code"] == "headers_too_large"
        status, body = raw_http(base, b"POST /v1/identify HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n")
        assert status in (400, 501) and error_body(status, body)
        # chunked upload over the limit (no Content-Length to refuse up front)
        chunks = (b"\0" * 10_000 for _ in range(30))
        r = requests.post(base + "/v1/identify", data=chunks, headers={"Content-Type": "image/jpeg"}, timeout=30)
        assert_error(r, 413, "payload_too_large")
        # and the server still works
        r = requests.post(base + "/v1/identify", files={"file": ("x.jpg", photo(OTHER))}, timeout=60)
        assert r.status_code == 200 and r.json()["face_count"] == 1
