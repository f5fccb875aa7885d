"""Settings: environment parsing, validation, and README's table kept in step with the code."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from service.config import ConfigError, Settings, env_table

README = Path(__file__).resolve().parents[1] / "README.md"


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


def test_readme_settings_table_matches_code() -> None:
    text = README.read_text()
    documented = set(re.findall(r"^\| `(FEWFACE_[A-Z_]+)` \|", text, flags=re.MULTILINE))
    assert documented == {name for name, _, _ in env_table()}
    for name, default, _ in env_table():
        row = re.search(rf"^\| `{name}` \| `?([^|`]*)`? \|", text, flags=re.MULTILINE)
        assert row is not None and row.group(1).strip() == default, name
