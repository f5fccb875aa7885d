"""OpenAPI 3 description of the native API, served at /openapi.json (tests/test_openapi.py checks
it against the app's routes)."""

from __future__ import annotations

import copy
from typing import Any

from flask import Blueprint, current_app, jsonify
from flask.typing import ResponseReturnValue

bp = Blueprint("openapi", __name__)


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _array(name: str) -> dict[str, Any]:
    return {"type": "array", "items": _ref(name)}


def _errors(*statuses: int) -> dict[str, Any]:
    return {str(s): {"$ref": "#/components/responses/Error"} for s in statuses}


_IMAGE_BODY = {
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "properties": {
                    "file": {"type": "array", "items": {"type": "string", "format": "binary"}},
                    "url": {"type": "string", "format": "uri"},
                },
                "additionalProperties": {"type": "string"},
            }
        },
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {
                    "base64": {
                        "oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}],
                        "description": "base64 image(s); a data: URL prefix is accepted",
                    },
                    "url": {
                        "oneOf": [{"type": "string", "format": "uri"}, {"type": "array", "items": {"type": "string"}}],
                        "description": "http(s) URL(s) the server downloads (public addresses only unless FEWFACE_ALLOW_PRIVATE_URLS)",
                    },
                },
                "additionalProperties": True,
            }
        },
        "image/*": {"schema": {"type": "string", "format": "binary"}},
    }
}

_BINARY = {"type": "string", "format": "binary"}
_URL_OBJECT = {"type": "object", "properties": {"url": {"type": "string"}}}
_OBJECT = {"type": "object"}
_PERSON_ID = {"name": "person_id", "in": "path", "required": True, "schema": {"type": "string", "maxLength": 128}}

_CALIBRATION_PARAMS = [
    {
        "name": "target",
        "in": "query",
        "description": "chance of naming a stranger to find the threshold for (repeatable; default 0.01, 0.05, 0.1)",
        "schema": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
    },
    {
        "name": "gallery_size",
        "in": "query",
        "description": "people a stranger is compared with (default: the gallery's people)",
        "schema": {"type": "integer", "minimum": 1, "maximum": 1000000000},
    },
]

_SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["ok", "status", "code", "error"],
        "properties": {
            "ok": {"type": "boolean", "enum": [False]},
            "status": {"type": "integer"},
            "code": {"type": "string", "description": "stable snake_case code"},
            "error": {"type": "string"},
        },
    },
    "Box": {
        "type": "object",
        "properties": {k: {"type": "number"} for k in ("left", "top", "width", "height")},
    },
    "Person": {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "name": {"type": "string"},
            "created_at": {"type": "number"},
            "face_count": {"type": "integer"},
        },
    },
    "FaceRecord": {
        "type": "object",
        "properties": {
            "id": {"type": "integer"},
            "model": {"type": "string"},
            "image_sha256": {"type": "string"},
            "box": _ref("Box"),
            "detection_prob": {"type": "number"},
            "created_at": {"type": "number"},
        },
    },
    "Match": {
        "type": "object",
        "properties": {
            "person_id": {"type": "string"},
            "name": {"type": "string"},
            "similarity": {"type": "number"},
            "confidence": {"type": "number", "description": "calibrated probability that this is the right person"},
            "face_id": {"type": "integer"},
        },
    },
    "Quality": {
        "type": "object",
        "description": "eye distance (px), sharpness, visible share of the box, yaw (0 frontal, ~1 profile)",
        "properties": {k: {"type": "number"} for k in ("eye_distance", "sharpness", "visible", "yaw")},
    },
    "Face": {
        "type": "object",
        "properties": {
            "box": _ref("Box"),
            "detection_prob": {"type": "number"},
            "landmarks": {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "number"}}},
        },
    },
    "IdentifiedFace": {
        "allOf": [
            _ref("Face"),
            {
                "type": "object",
                "properties": {
                    "face_token": {
                        "type": ["string", "null"],
                        "description": "teach this face later without the photo: POST /v1/people/{person_id}/faces with "
                        '{"face_token": ...} (in memory, FEWFACE_FACE_TOKEN_TTL seconds; null when tokens are off)',
                    },
                    "quality": _ref("Quality"),
                    "matched": {"type": "boolean"},
                    "match": {"oneOf": [_ref("Match"), {"type": "null"}]},
                    "similarity": {"type": ["number", "null"]},
                    "confidence": {"type": ["number", "null"]},
                    "candidates": {"type": "array", "items": _ref("Match")},
                },
            },
        ]
    },
    "Collection": {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "model": {"type": "string"},
            "pipeline": {"type": "string"},
            "people": {"type": "integer"},
            "faces": {"type": "integer"},
            "api_key": {"type": "boolean", "description": "whether the collection has its own API key"},
            "created_at": {"type": "number"},
            "protected": {"type": "boolean", "description": "true for 'default', which cannot be deleted"},
        },
    },
    "StateFile": {
        "type": "object",
        "description": "Portable gallery state (format fewface-state, version 1); see docs/api.md, State export and import.",
        "required": ["format", "version", "model", "people", "faces", "checksum"],
        "properties": {
            "format": {"type": "string", "enum": ["fewface-state"]},
            "version": {"type": "integer", "enum": [1]},
            "model": {"type": "object", "properties": {"id": {"type": "string"}, "dim": {"type": "integer"}}},
            "people": {"type": "array", "items": {"type": "object"}},
            "faces": {"type": "array", "items": {"type": "object"}},
            "checksum": {"type": "object", "properties": {"algorithm": {"type": "string"}, "value": {"type": "string"}}},
        },
    },
}


_COLLECTION_ID = {
    "name": "collection",
    "in": "path",
    "required": True,
    "description": "collection id",
    "schema": {"type": "string", "pattern": "^[a-z0-9][a-z0-9_-]{0,63}$"},
}
_API_KEY = {
    "type": "string",
    "minLength": 16,
    "maxLength": 256,
    "description": "a key that opens this collection only (printable ASCII, no spaces; needs FEWFACE_API_KEY or FEWFACE_BASIC_AUTH)",
}
_COLLECTION_NOT_GALLERY = ("/healthz", "/readyz", "/v1/info", "/openapi.json")  # service routes, not one gallery's


def _collection_paths(native: dict[str, Any]) -> dict[str, Any]:
    """The collection admin routes, and a twin under /v1/collections/{collection} of every
    per-gallery route (the same handler on that collection's gallery; service/http/collections.py)."""
    ok = {"ok": {"type": "boolean"}}
    one = _json({"type": "object", "properties": {**ok, "collection": _ref("Collection")}})
    out: dict[str, Any] = {
        "/v1/collections": {
            "get": {
                "summary": "List the collections with their people and face counts and model (service credentials only)",
                "responses": {"200": _json({"type": "object", "properties": {**ok, "collections": _array("Collection")}})},
            },
            "post": {
                "summary": "Create an empty collection, optionally with its own API key (service credentials only)",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["id"],
                                "properties": {
                                    "id": _COLLECTION_ID["schema"],
                                    "api_key": _API_KEY,
                                },
                            }
                        }
                    },
                },
                "responses": {"201": {**one, "description": "created"}, **_errors(400, 409)},
            },
        },
        "/v1/collections/{collection}": {
            "parameters": [_COLLECTION_ID],
            "get": {
                "summary": "One collection: counts, model, default threshold and match rule (its own key opens it too)",
                "responses": {"200": one, **_errors(400, 404, 409)},
            },
            "patch": {
                "summary": "Set, replace or (null) remove the collection's own API key ('default' too; service credentials only)",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["api_key"],
                                "properties": {"api_key": {**_API_KEY, "type": ["string", "null"]}},
                            }
                        }
                    },
                },
                "responses": {"200": one, **_errors(400, 404)},
            },
            "delete": {
                "summary": "Delete a collection with all its people (not 'default': 409 collection_protected; service credentials only)",
                "responses": {"200": _json({"type": "object"}), **_errors(400, 404, 409)},
            },
        },
    }
    for route, item in native.items():
        if route in _COLLECTION_NOT_GALLERY or not route.startswith("/v1/"):
            continue
        twin = copy.deepcopy(item)
        twin["parameters"] = [_COLLECTION_ID, *twin.get("parameters", [])]
        for method, operation in twin.items():
            if method != "parameters":
                operation["summary"] = f"{operation['summary']} (in one collection)"
                operation["responses"].update(_errors(400, 404, 409))
        out["/v1/collections/{collection}" + route[len("/v1") :]] = twin
    return out


def spec(version: str) -> dict[str, Any]:
    ok = {"ok": {"type": "boolean"}}
    paths: dict[str, Any] = {
        "/healthz": {"get": {"summary": "Liveness", "security": [], "responses": {"200": _json({"type": "object"})}}},
        "/readyz": {"get": {"summary": "Readiness", "security": [], "responses": {"200": _json({"type": "object"})}}},
        "/v1/info": {"get": {"summary": "Version, model, device, threshold, counts", "responses": {"200": _json({"type": "object"})}}},
        "/v1/people/{person_id}/faces": {
            "post": {
                "summary": "Teach: add one face example per image, or the face of an identify answer's face_token, "
                "to a person (created when new)",
                "parameters": [_PERSON_ID],
                "requestBody": {"required": True, **_IMAGE_BODY},
                "responses": {
                    "200": _json({"type": "object", "properties": {**ok, "person": _ref("Person")}}, "person existed"),
                    "201": _json({"type": "object", "properties": {**ok, "person": _ref("Person")}}, "person created"),
                    **_errors(400, 404, 409, 410, 413, 415, 422),
                },
            }
        },
        "/v1/identify": {
            "post": {
                "summary": "Identify every face in one image",
                "requestBody": {"required": True, **_IMAGE_BODY},
                "responses": {
                    "200": _json({"type": "object", "properties": {**ok, "faces": {"type": "array", "items": _ref("IdentifiedFace")}}}),
                    **_errors(400, 413, 415, 422),
                },
            }
        },
        "/v1/verify": {
            "post": {
                "summary": "Are the largest faces of image_a and image_b the same person?",
                "requestBody": {
                    "required": True,
                    "content": {
                        "multipart/form-data": {
                            "schema": {
                                "type": "object",
                                "properties": {
                                    "image_a": {"type": "string", "format": "binary"},
                                    "image_b": {"type": "string", "format": "binary"},
                                },
                            }
                        },
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "description": "image_a / image_b as base64, or image_a_url / image_b_url",
                                "additionalProperties": True,
                            }
                        },
                    },
                },
                "responses": {
                    "200": _json({"type": "object", "properties": {"same_person": {"type": "boolean"}, "similarity": {"type": "number"}}}),
                    **_errors(400, 413, 415, 422),
                },
            }
        },
        "/v1/people": {
            "get": {
                "summary": "List people with face counts",
                "parameters": [
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 10000}},
                    {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0}},
                ],
                "responses": {
                    "200": _json({"type": "object", "properties": {"people": {"type": "array", "items": _ref("Person")}}}),
                    **_errors(400),
                },
            }
        },
        "/v1/people/{person_id}": {
            "parameters": [_PERSON_ID],
            "get": {
                "summary": "One person and their face examples",
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {"person": _ref("Person"), "faces": _array("FaceRecord")},
                        }
                    ),
                    **_errors(404),
                },
            },
            "patch": {
                "summary": "Rename",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": {"type": "object", "properties": {"name": {"type": "string"}}}}},
                },
                "responses": {"200": _json({"type": "object", "properties": {"person": _ref("Person")}}), **_errors(400, 404)},
            },
            "delete": {
                "summary": "Delete a person and all their examples",
                "responses": {"200": _json({"type": "object"}), **_errors(404)},
            },
        },
        "/v1/people/{person_id}/faces/{face_id}": {
            "parameters": [_PERSON_ID, {"name": "face_id", "in": "path", "required": True, "schema": {"type": "integer"}}],
            "delete": {"summary": "Delete one face example", "responses": {"200": _json(_OBJECT), **_errors(404)}},
        },
        "/v1/people/{person_id}/faces/{face_id}/thumbnail": {
            "parameters": [_PERSON_ID, {"name": "face_id", "in": "path", "required": True, "schema": {"type": "integer"}}],
            "get": {
                "summary": "The small JPEG stored with a face example (FEWFACE_THUMBNAILS)",
                "responses": {"200": {"description": "JPEG image", "content": {"image/jpeg": {}}}, **_errors(404)},
            },
        },
        "/v1/state": {
            "get": {
                "summary": "Download the gallery state (portable JSON, checksummed)",
                "parameters": [{"name": "compress", "in": "query", "schema": {"type": "string", "enum": ["none", "gzip"]}}],
                "responses": {
                    "200": {
                        "description": "state file",
                        "content": {"application/json": {"schema": _ref("StateFile")}, "application/gzip": {}},
                    },
                    **_errors(400),
                },
            },
            "post": {
                "summary": "Upload a state file: all or nothing; replaces the gallery (mode=replace, default) or merges into it",
                "parameters": [{"name": "mode", "in": "query", "schema": {"type": "string", "enum": ["replace", "merge"]}}],
                "requestBody": {
                    "required": True,
                    "content": {
                        "multipart/form-data": {
                            "schema": {"type": "object", "properties": {"file": {"type": "string", "format": "binary"}}}
                        },
                        "application/json": {
                            "schema": {"oneOf": [_ref("StateFile"), {"type": "object", "properties": {"url": {"type": "string"}}}]}
                        },
                        "application/gzip": {},
                    },
                },
                "responses": {"200": _json({"type": "object"}), **_errors(400, 409, 413, 422)},
            },
        },
        "/v1/calibration": {
            "get": {
                "summary": "Calibration report over the gallery's people with 2+ examples: score distributions, FAR/FRR by threshold, "
                "EER, the threshold for a target chance of naming a stranger at the gallery size",
                "parameters": _CALIBRATION_PARAMS,
                "responses": {"200": _json({"type": "object", "properties": {**ok, "model": {"type": "string"}}}), **_errors(400, 422)},
            }
        },
        "/v1/calibration/plot.png": {
            "get": {
                "summary": "The calibration report as a PNG plot (score histograms, FAR/FRR curves)",
                "parameters": _CALIBRATION_PARAMS,
                "responses": {"200": {"description": "PNG image", "content": {"image/png": {}}}, **_errors(400, 422)},
            }
        },
        "/openapi.json": {"get": {"summary": "This document", "responses": {"200": _json({"type": "object"})}}},
    }
    paths.update(_collection_paths(paths))
    # The store can fail under any route that reads it (503 database_busy / storage_unavailable)
    # and any write can find the disk full (507 storage_full).
    for route, item in paths.items():
        for method, operation in item.items():
            if route in ("/healthz", "/openapi.json") or method == "parameters":
                continue
            writes = method in ("post", "patch", "delete") and route not in ("/v1/identify", "/v1/verify")
            operation["responses"].update(_errors(503, *([507] if writes else [])))
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Fewface native API",
            "version": version,
            "description": "Few-shot face recognition. Facebox-compatible routes (/facebox/..., /info; also under "
            "/v1/collections/{collection}/) are described in docs/facebox.md.",
        },
        "servers": [{"url": "/"}],
        "security": [{}, {"apiKey": []}, {"bearer": []}, {"basic": []}],
        "paths": paths,
        "components": {
            "schemas": _SCHEMAS,
            "responses": {"Error": _json(_ref("Error"), "error (one shape for every non-2xx answer)")},
            "securitySchemes": {
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                "bearer": {"type": "http", "scheme": "bearer"},
                "basic": {"type": "http", "scheme": "basic"},
            },
        },
    }


@bp.get("/openapi.json")
def openapi_json() -> ResponseReturnValue:
    return jsonify(spec(current_app.config.get("FEWFACE_VERSION", "0")))
