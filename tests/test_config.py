"""Settings: environment parsing, validation; docs/ kept in step with the code (settings, error codes, links)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from service.config import ConfigError, Settings, env_table

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def test_defaults_and_parsing() -> None:
    s = Settings.from_env({"FEWFACE_PORT": "9000", "FEWFACE_HALF": "true", "FEWFACE_MATCH_THRESHOLD": "0.5", "FEWFACE_DEVICE": ""})
    assert s.port == 9000 and s.half is True and s.match_threshold == 0.5 and s.device == "auto"
    assert Settings.from_env({}).model == "dlib-resnet-v1"


@pytest.mark.parametrize(
    "env",
    [{"FEWFACE_PORT": "eighty"}, {"FEWFACE_PORT": "0"}, {"FEWFACE_MATCH_THRESHOLD": "2"}, {"FEWFACE_HALF": "maybe"}],
)
def test_bad_values_name_the_variable(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match=next(iter(env))):
        Settings.from_env(env)


def test_settings_table_matches_code() -> None:
    text = (DOCS / "settings.md").read_text()
    documented = set(re.findall(r"^\| `(FEWFACE_[A-Z_]+)` \|", text, flags=re.MULTILINE))
    assert documented == {name for name, _, _ in env_table()}
    for name, default, _ in env_table():
        row = re.search(rf"^\| `{name}` \| `?([^|`]*)`? \|", text, flags=re.MULTILINE)
        assert row is not None and row.group(1).strip() == default, name


SNAKE = re.compile(r"[a-z][a-z0-9]*(?:_[a-z0-9]+)*")


def _strings(node: ast.AST) -> list[ast.Constant | ast.JoinedStr]:
    """String literals (and f-strings) an expression may evaluate to: `"a" if x else "b"`, `CODES.get(s, "x")`."""
    found: list[ast.Constant | ast.JoinedStr] = []
    for sub in ast.walk(node):
        if isinstance(sub, ast.JoinedStr):
            found.append(sub)
        elif isinstance(sub, ast.Constant) and isinstance(sub.value, str) and not any(sub in ast.walk(j) for j in found):
            found.append(sub)
    return found


def _code_patterns() -> dict[str, str]:
    """Every error `code` the service can answer, as a regex, with where it comes from: the code argument of each
    `ApiError(...)` / `error_response(...)` call, each `"code": ...` of a hand-built error body, and the string
    values of the code tables (`HTTP_CODES`, `DOMAIN_ERRORS`, `SERVER_ERROR_CODES`, ...)."""
    patterns: dict[str, str] = {}

    def add(expr: ast.AST, where: str) -> None:
        for lit in _strings(expr):
            if isinstance(lit, ast.JoinedStr):  # f"invalid_{what}": any documented code of that form
                parts = [re.escape(v.value) if isinstance(v, ast.Constant) else "[a-z0-9_]+" for v in lit.values]
                patterns.setdefault("".join(parts), where)
            elif SNAKE.fullmatch(lit.value):
                patterns.setdefault(re.escape(lit.value), where)

    for path in sorted((ROOT / "service").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            where = f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.Call):
                name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")
                if name in ("ApiError", "error_response"):
                    code = node.args[1] if len(node.args) > 1 else next((k.value for k in node.keywords if k.arg == "code"), None)
                    if code is not None:
                        add(code, where)
            elif isinstance(node, ast.Dict):
                for key, value in zip(node.keys, node.values, strict=True):
                    if isinstance(key, ast.Constant) and key.value == "code" and not isinstance(value, ast.Dict):
                        add(value, where)
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                target = node.targets[0] if isinstance(node, ast.Assign) else node.target
                if isinstance(target, ast.Name) and re.search(r"(CODES|ERRORS)$", target.id) and isinstance(node.value, ast.Dict):
                    for value in node.value.values:
                        add(value, where)
    return patterns


def test_every_error_code_is_documented() -> None:
    text = (DOCS / "errors.md").read_text()
    rows = re.findall(r"^\| ([^|]+) \|", text, flags=re.MULTILINE)
    documented = {code for row in rows for code in re.findall(r"`([a-z0-9_]+)`", row)}
    patterns = _code_patterns()
    for known in ("missing_image", "invalid_name", "not_found", "database_busy", "request_timeout", "headers_too_large", "http_error"):
        assert any(re.fullmatch(p, known) for p in patterns), f"the scan of service/ no longer finds {known}"
    missing = {p: where for p, where in patterns.items() if not any(re.fullmatch(p, code) for code in documented)}
    assert not missing, f"error codes missing from docs/errors.md: {missing}"


def _anchors(path: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.MULTILINE | re.DOTALL)
    headings = re.findall(r"^#+ (.+)$", text, flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_relative_links_resolve() -> None:
    pages = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
    assert len(pages) > 5
    checked = 0
    for page in pages:
        text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.MULTILINE | re.DOTALL)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue
            file, _, anchor = target.partition("#")
            dest = (page.parent / file).resolve() if file else page
            assert dest.exists(), f"{page.relative_to(ROOT)}: broken link {target}"
            if anchor:
                assert anchor in _anchors(dest), f"{page.relative_to(ROOT)}: no heading for {target}"
            checked += 1
    assert checked > 20
    readme = (ROOT / "README.md").read_text()
    for page in DOCS.glob("*.md"):
        assert f"(docs/{page.name})" in readme, f"README does not link {page.name}"
