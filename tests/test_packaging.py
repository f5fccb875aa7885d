"""The Docker recipe and CI install the same way (no Docker engine exists here to build it)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_dockerfile_uses_the_tested_install_script() -> None:
    docker = (ROOT / "Dockerfile").read_text()
    runs = re.findall(r"^RUN (.+)$", docker, flags=re.MULTILINE)
    assert "bash scripts/install.sh" in runs, runs
    assert any("python -m models.weights fetch facenet-vggface2" in r for r in runs)
    assert re.search(r'^CMD \["python", "-m", "service"\]', docker, flags=re.MULTILINE)
    assert "FEWFACE_MODEL=facenet-vggface2" in docker
    for name in re.findall(r"^COPY (requirements[^ ]*) ", docker, flags=re.MULTILINE):
        assert (ROOT / name).is_file()
    copied = set(re.findall(r"(requirements[\w-]*\.txt)", docker))
    assert {"requirements.txt", "requirements-nodeps.txt"} <= copied


def test_install_script_reads_the_requirements_files() -> None:
    script = (ROOT / "scripts" / "install.sh").read_text()
    assert "pip install -r requirements.txt" in script
    assert "pip install --no-deps -r requirements-nodeps.txt" in script
    assert "pip install -r requirements-dev.txt" in script
    ci = (ROOT / ".ci" / "run").read_text()
    assert "bash scripts/test.sh" in ci


def test_every_requirement_is_pinned_and_named_deps_present() -> None:
    reqs = {}
    for file in ("requirements.txt", "requirements-nodeps.txt", "requirements-dev.txt"):
        for line in (ROOT / file).read_text().splitlines():
            line = line.split("#")[0].strip()
            if line:
                name, _, version = line.partition("==")
                assert version, f"{file}: {line} is not pinned"
                reqs[name.lower().replace("_", "-")] = version
    for needed in ("torch", "torchvision", "facenet-pytorch", "faiss-cpu", "flask", "pillow", "numpy", "waitress"):
        assert needed in reqs, needed


def test_readme_commands_exist() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "bash scripts/serve.sh" in readme and "bash scripts/test.sh" in readme
