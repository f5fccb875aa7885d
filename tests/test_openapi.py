"""/openapi.json documents exactly the native routes the app serves."""

from __future__ import annotations

import re

from flask import Flask
from flask.testing import FlaskClient

METHODS = {"get", "put", "post", "delete", "patch", "options", "head", "trace"}


def served(app: Flask) -> set[tuple[str, str]]:
    out = set()
    for rule in app.url_map.iter_rules():
        if "facebox" in rule.endpoint.split(".")[:-1]:  # Facebox routes (also a collection's) are described in README
            continue
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        out.update((path, m.lower()) for m in rule.methods - {"HEAD", "OPTIONS"})
    return out


def test_openapi_matches_the_url_map(app: Flask, client: FlaskClient) -> None:
    r = client.get("/openapi.json")
    assert r.status_code == 200 and r.mimetype == "application/json"
    doc = r.json
    assert doc["openapi"].startswith("3.") and doc["info"]["version"]
    documented = {(path, m) for path, item in doc["paths"].items() for m in item if m in METHODS}
    routes = served(app)
    native = {(p, m) for p, m in routes if p.startswith("/v1/")}
    assert native - documented == set(), "served but not documented"
    assert documented - routes == set(), "documented but not served"
    for path, item in doc["paths"].items():
        params = set(re.findall(r"{([^}]+)}", path))
        declared = {p["name"] for p in item.get("parameters", []) if p["in"] == "path"}
        for method in METHODS & set(item):
            op = item[method]
            assert op["responses"] and op.get("summary"), (path, method)
            names = declared | {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert names == params, (path, method)


def test_every_reference_resolves(client: FlaskClient) -> None:
    doc = client.get("/openapi.json").json
    text = str(doc)
    for ref in set(re.findall(r"#/components/(\w+)/(\w+)", text)):
        assert ref[1] in doc["components"][ref[0]], ref
