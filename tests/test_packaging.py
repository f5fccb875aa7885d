"""Both Docker images (CPU and CUDA, one Dockerfile with a build argument) and CI install the same
way, through scripts/install.sh (no Docker engine exists here to build them). The script is run
with PIP=echo to see exactly what each variant would install."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def requirements(*files: str) -> dict[str, str]:
    reqs = {}
    for file in files:
        for line in (ROOT / file).read_text().splitlines():
            line = line.split("#")[0].strip()
            if line:
                name, _, version = line.partition("==")
                assert version, f"{file}: {line} is not pinned"
                reqs[name.lower().replace("_", "-")] = version
    return reqs


def install_commands(*args: str, **env: str) -> list[str]:
    """The pip commands scripts/install.sh runs (with PIP=echo: printed, nothing installed)."""
    out = subprocess.run(
        ["bash", str(ROOT / "scripts" / "install.sh"), *args],
        env={"PATH": os.environ["PATH"], "PIP": "echo pip", **env},
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return out.stdout.strip().splitlines()


def dockerfile_args() -> dict[str, str]:
    docker = (ROOT / "Dockerfile").read_text()
    return {m[0]: m[1].strip('"') for m in re.findall(r"^ARG (\w+)=(.*)$", docker, flags=re.MULTILINE)}


def test_dockerfile_uses_the_tested_install_script_for_both_images() -> None:
    docker = (ROOT / "Dockerfile").read_text()
    runs = re.findall(r"^RUN (.+)$", docker, flags=re.MULTILINE)
    assert 'TORCH_VARIANT="$TORCH_VARIANT" bash scripts/install.sh' in runs, runs
    assert dockerfile_args()["TORCH_VARIANT"] == "cpu"  # the default image is the CPU one
    assert "--build-arg TORCH_VARIANT=cuda" in docker  # and the header says how to build the CUDA one
    assert re.search(r'^CMD \["python", "-m", "service"\]', docker, flags=re.MULTILINE)
    for name in re.findall(r"^COPY (requirements[^ ]*) ", docker, flags=re.MULTILINE):
        assert (ROOT / name).is_file()
    copied = set(re.findall(r"(requirements[\w-]*\.txt)", docker))
    assert {"requirements.txt", "requirements-nodeps.txt"} <= copied


def test_both_images_default_to_the_measured_model_and_facenet_weights_are_opt_in() -> None:
    docker = (ROOT / "Dockerfile").read_text()
    assert "FEWFACE_MODEL=dlib-resnet-v1" in docker and "FEWFACE_MODEL=facenet" not in docker.replace("-e FEWFACE_MODEL=facenet", "")
    assert dockerfile_args()["FACENET_WEIGHTS"] == ""  # nothing baked in unless asked for
    runs = " ".join(re.findall(r"^RUN (.+)$", docker, flags=re.MULTILINE))
    assert "python -m models.weights check dlib-resnet-v1" in runs
    assert 'for m in $FACENET_WEIGHTS; do python -m models.weights fetch "$m"; done' in runs


@pytest.mark.parametrize("variant", ["cpu", "cuda"])
def test_install_script_installs_the_pinned_requirements_for_each_variant(variant: str) -> None:
    pins = requirements("requirements.txt")
    for commands in (install_commands(f"--torch={variant}"), install_commands(TORCH_VARIANT=variant)):
        assert "pip install -r requirements.txt" in commands
        assert "pip install --no-deps -r requirements-nodeps.txt" in commands
        assert "pip install -r requirements-dev.txt" not in commands
        torch_lines = [c for c in commands if CPU_INDEX in c]
        if variant == "cpu":  # the CPU wheels first, at requirements.txt's versions, then the rest keeps them
            assert torch_lines == [f"pip install --index-url {CPU_INDEX} torch=={pins['torch']} torchvision=={pins['torchvision']}"]
            assert commands.index(torch_lines[0]) < commands.index("pip install -r requirements.txt")
        else:
            assert torch_lines == []


def test_install_script_dev_and_default_and_refusals() -> None:
    assert install_commands() == install_commands("--torch=cuda")  # CI's default: PyPI's own torch wheels
    dev = install_commands("--dev", "--torch=cpu")
    assert "pip install -r requirements-dev.txt" in dev and "pip install --no-deps -r requirements-dev-nodeps.txt" in dev
    for bad in (["--torch=rocm"], ["--nope"]):
        run = subprocess.run(["bash", str(ROOT / "scripts" / "install.sh"), *bad], env={"PATH": os.environ["PATH"], "PIP": "echo pip"},
                             capture_output=True, text=True, timeout=30)  # fmt: skip
        assert run.returncode == 2 and "install.sh:" in run.stderr and run.stdout == ""
    ci = (ROOT / ".ci" / "run").read_text()
    assert "bash scripts/test.sh" in ci


def test_every_requirement_is_pinned_and_named_deps_present() -> None:
    reqs = requirements("requirements.txt", "requirements-nodeps.txt", "requirements-dev.txt", "requirements-dev-nodeps.txt")
    for needed in ("torch", "torchvision", "facenet-pytorch", "faiss-cpu", "flask", "pillow", "numpy", "waitress"):
        assert needed in reqs, needed


def test_readme_commands_exist() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "bash scripts/serve.sh" in readme and "bash scripts/test.sh" in readme
    docker = (ROOT / "docs" / "docker.md").read_text()
    assert "docker build -t fewface ." in docker and "docker build --build-arg TORCH_VARIANT=cuda" in docker


# -- pip install . (issue 14): the client and the `fewface` command --------------------------
PYPI = "https://pypi.org/simple/"


def pyproject() -> dict:
    import tomllib

    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def source_copy(dest: Path) -> Path:
    """What a build needs (pyproject, README, the packages), copied so the build leaves no
    build/ or *.egg-info in the checkout."""
    import shutil

    dest.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, dest / name)
    for package in ("service", "models"):
        shutil.copytree(ROOT / package, dest / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dest


def test_pyproject_agrees_with_requirements() -> None:
    from packaging.requirements import Requirement

    from service import __version__

    project = pyproject()["project"]
    assert project["version"] == __version__
    assert project["scripts"] == {"fewface": "service.cli:main"}
    pins = requirements("requirements.txt")
    for line in project["dependencies"]:  # the client's and the command's: ranges the pins satisfy
        req = Requirement(line)
        assert pins[req.name.lower()] in req.specifier, (line, pins[req.name.lower()])
    server = {}
    for line in project["optional-dependencies"]["server"]:
        req = Requirement(line)
        server[req.name.lower().replace("_", "-") + (f"[{','.join(sorted(req.extras))}]" if req.extras else "")] = str(req.specifier)
    assert {k: v.removeprefix("==") for k, v in server.items()} == {k: v for k, v in pins.items() if k not in ("requests", "click", "rich")}
    assert "facenet-pytorch" not in server and "facenet-pytorch" in requirements("requirements-nodeps.txt")  # --no-deps, documented


def test_wheel_holds_the_packages_their_data_and_the_entry_point(tmp_path: Path) -> None:
    """Built offline with this environment's setuptools (no build isolation)."""
    import sys
    import zipfile

    src = source_copy(tmp_path / "src")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(tmp_path / "dist"), str(src)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    (wheel,) = (tmp_path / "dist").glob("fewface-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in ("service/cli.py", "service/client.py", "service/http/static/index.html", "service/http/static/console.js",
                   "service/store/gallery.py", "models/dlib_resnet.py", "models/score_models/dlib-resnet-v1__dlib5.json"):  # fmt: skip
        assert needed in names, needed
    assert not any(n.startswith(("tests/", "bench/", "tools/")) for n in names)
    info = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "fewface = service.cli:main" in zipfile.ZipFile(wheel).read(info).decode()


def pypi_reachable() -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(PYPI + "click/", timeout=10):
            return True
    except OSError:
        return False


@pytest.mark.slow
def test_pip_install_in_a_fresh_venv_gives_a_working_fewface(tmp_path: Path) -> None:
    """The acceptance: `pip install .` into a new virtual environment (pip's own cache and PyPI),
    then `fewface --help`; the client imports without torch (which is not installed)."""
    import sys

    if not pypi_reachable():
        pytest.skip("PyPI is not reachable: pip install . needs setuptools, requests, click and rich from it")
    src = source_copy(tmp_path / "src")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    pip = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check", str(src)],
                         capture_output=True, text=True, timeout=900)  # fmt: skip
    assert pip.returncode == 0, pip.stdout[-3000:] + pip.stderr[-3000:]
    helped = subprocess.run([str(venv / "bin" / "fewface"), "--help"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert helped.returncode == 0 and "teach-folder" in helped.stdout, helped.stderr
    probe = "import importlib.util as u, service.client, service.cli; assert u.find_spec('torch') is None; print(service.client.__file__)"
    where = subprocess.run([str(venv / "bin" / "python"), "-c", probe], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert where.returncode == 0 and str(venv) in where.stdout, where.stderr
    unreachable = subprocess.run([str(venv / "bin" / "fewface"), "--url", "http://127.0.0.1:9", "info"],
                                 capture_output=True, text=True, timeout=120, cwd=tmp_path)  # fmt: skip
    assert unreachable.returncode == 2 and "cannot reach" in unreachable.stderr
    served = subprocess.run([str(venv / "bin" / "fewface"), "serve"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert served.returncode == 2 and "server's packages" in served.stderr  # the server extra is not installed
