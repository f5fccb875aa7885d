"""``fewface`` (service/cli.py) driven against a real server on 127.0.0.1 and, with --data-dir,
in-process over a data directory: teach-folder twice (the second run skips everything taught),
the CSV form, identify, export/import, calibrate, serve, help and exit codes."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from click.testing import CliRunner, Result

from service.cli import cli
from tests.conftest import FACES, ROOT, no_face_image
from tests.serverproc import ServerProcess, free_port

KEY = "cli-test-key"
REFUSED = {"group.jpg": "multiple_faces", "landscape.png": "no_face_detected", "broken.jpg": "invalid_image"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("cli")
    with ServerProcess(tmp / "data", tmp / "server.log", FEWFACE_API_KEY=KEY) as s:
        yield s


def fewface(server: ServerProcess | None, *args: str, **env: str) -> Result:
    base = {"FEWFACE_URL": server.base, "FEWFACE_API_KEY": KEY} if server else {}
    return CliRunner().invoke(cli, list(args), env={**base, **env}, catch_exceptions=False)


def identities() -> dict[str, list[str]]:
    people: dict[str, list[str]] = {}
    with open(FACES / "identities.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            people.setdefault(row["identity"], []).append(row["file"])
    return people


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """photos/<person>/<photo>: the deepface set (61 photos, 13 people) linked into folders, plus
    three photos the service refuses (a group photo, a landscape, a broken file)."""
    root = tmp_path_factory.mktemp("photos")
    for person, files in identities().items():
        (root / person).mkdir()
        for f in files:
            (root / person / f).symlink_to(FACES / f)
    (root / "person00" / "group.jpg").symlink_to(FACES / "couple.jpg")
    (root / "person01" / "landscape.png").write_bytes(no_face_image())
    (root / "person02" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (root / "person02" / "notes.txt").write_text("not an image: ignored")
    return root


@pytest.fixture(scope="module")
def taught(server: ServerProcess, photos: Path, tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """teach-folder twice in a row over the same folder; the two reports."""
    tmp = tmp_path_factory.mktemp("reports")
    reports = []
    for n in (1, 2):
        result = fewface(server, "teach-folder", str(photos), "--workers", "3", "--report", str(tmp / f"run{n}.json"))
        assert result.exit_code == 1, result.output  # the three refusals
        for code in REFUSED.values():
            assert code in result.stdout
        reports.append({**json.loads((tmp / f"run{n}.json").read_text()), "stdout": result.stdout})
    return reports


def test_help_and_usage_errors(server: ServerProcess, tmp_path: Path) -> None:
    top = fewface(None, "--help")
    assert top.exit_code == 0
    for command in ("teach-folder", "identify", "export", "import", "calibrate", "serve", "info"):
        assert command in top.stdout
        assert fewface(None, command, "--help").exit_code == 0
    assert fewface(None, "--version").stdout.strip().startswith("fewface, version")
    assert fewface(None, "no-such-command").exit_code == 2
    assert fewface(server, "teach-folder").exit_code == 2  # neither DIR nor --csv
    assert fewface(server, "teach-folder", str(tmp_path)).exit_code == 2  # no photos in it
    assert fewface(server, "identify", str(FACES / "img1.jpg"), "--threshold", "7").exit_code == 2
    assert fewface(server, "--url", server.base, "--data-dir", str(tmp_path), "info").exit_code == 2
    unreachable = fewface(server, "info", FEWFACE_URL=f"http://127.0.0.1:{free_port()}")
    assert unreachable.exit_code == 2 and "cannot reach" in unreachable.stderr
    wrong_key = fewface(server, "info", FEWFACE_API_KEY="wrong")
    assert wrong_key.exit_code == 2 and "unauthorized" in wrong_key.stderr
    # the command itself, as installed: `python -m service.cli`, without torch or numpy imported
    probe = "import sys, service.cli, service.client; assert not {'torch', 'numpy', 'flask'} & set(sys.modules), sys.modules.keys()"
    subprocess.run([sys.executable, "-c", probe], cwd=ROOT, check=True, timeout=60)
    run = subprocess.run([sys.executable, "-m", "service.cli", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and "teach-folder" in run.stdout


def test_teach_folder_twice_second_run_skips_everything(taught: list[dict[str, Any]], server: ServerProcess) -> None:
    first, second = taught
    n = first["counts"]["taught"]
    refused = {Path(i["path"]).name: i["code"] for i in first["items"] if i["outcome"] == "refused"}
    # the three planted refusals, and deepface photos with a second face in the background (img31, img40, img54)
    assert {k: refused[k] for k in REFUSED} == REFUSED and set(refused.values()) == set(REFUSED.values())
    assert n + len(refused) == 64 and n >= 55
    assert first["counts"] == {"taught": n, "skipped": 0, "refused": 64 - n, "failed": 0, "images": 64}
    assert sum(first["refusals"].values()) == 64 - n
    assert second["counts"] == {"taught": 0, "skipped": n, "refused": 64 - n, "failed": 0, "images": 64}
    assert {i["reason"] for i in second["items"] if i["outcome"] == "skipped"} == {"already_taught"}
    assert "taught" in first["stdout"] and "multiple_faces" in first["stdout"]
    people = requests.get(server.url("/v1/people"), headers={"X-API-Key": KEY}, timeout=30).json()
    assert people["total"] == 13 and people["faces"] == n


def test_teach_folder_csv_form(taught: list[dict[str, Any]], server: ServerProcess, tmp_path: Path) -> None:
    # deepface's own identities.csv (header "file,identity"): everything already taught, so all skipped
    same = fewface(server, "teach-folder", "--csv", str(FACES / "identities.csv"), "--report", str(tmp_path / "r.json"), "--quiet")
    assert same.exit_code == 1, same.output  # the deepface photos with two faces are refused again
    n = taught[0]["counts"]["taught"]
    counts = json.loads((tmp_path / "r.json").read_text())["counts"]
    assert counts == {"taught": 0, "skipped": n, "refused": 61 - n, "failed": 0, "images": 61}
    # person,path,name rows without a header, paths relative to DIR; a repeated row is a duplicate
    rows = tmp_path / "rows.csv"
    rows.write_text("zoe,img18.jpg,Zoë Q\nzoe,img19.jpg,Zoë Q\nzoe,img19.jpg,Zoë Q\n")
    new = fewface(server, "teach-folder", str(FACES), "--csv", str(rows), "--report", str(tmp_path / "z.json"), "--workers", "1")
    assert new.exit_code == 0, new.output
    report = json.loads((tmp_path / "z.json").read_text())
    assert report["counts"]["taught"] == 2 and [i["reason"] for i in report["items"]] == [None, None, "duplicate"]
    zoe = requests.get(server.url("/v1/people/zoe"), headers={"X-API-Key": KEY}, timeout=30).json()
    assert zoe["person"]["name"] == "Zoë Q" and zoe["person"]["face_count"] == 2
    bad = tmp_path / "bad.csv"
    bad.write_text("onlyone\n")
    assert fewface(server, "teach-folder", "--csv", str(bad)).exit_code == 2


def test_identify_table_csv_json(taught: list[dict[str, Any]], server: ServerProcess, tmp_path: Path) -> None:
    table = fewface(server, "identify", str(FACES / "img53.jpg"), str(FACES / "couple.jpg"))
    assert table.exit_code == 0 and "person03" in table.stdout
    out = fewface(server, "identify", str(FACES / "img53.jpg"), str(FACES / "couple.jpg"), "--csv", "-", "--top-k", "2")
    assert out.exit_code == 0, out.output
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    assert [r["face"] for r in rows] == ["1", "1", "2"]
    assert rows[0]["person_id"] == "person03" and rows[0]["matched"] == "True" and float(rows[0]["similarity"]) > 0.9
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "a.jpg").symlink_to(FACES / "img30.jpg")
    (folder / "broken.jpg").write_bytes(b"nope")
    result = fewface(server, "identify", str(folder), "--json", str(tmp_path / "out.json"), "--threshold", "0.5")
    assert result.exit_code == 1  # one image could not be read by the service
    doc = {Path(d["file"]).name: d for d in json.loads((tmp_path / "out.json").read_text())}
    assert doc["a.jpg"]["faces"][0]["match"]["person_id"] == "person04" and doc["a.jpg"]["threshold"] == 0.5
    assert doc["broken.jpg"]["error"] == "invalid_image"


def test_export_import_and_calibrate(taught: list[dict[str, Any]], server: ServerProcess, tmp_path: Path) -> None:
    faces = taught[0]["counts"]["taught"] + 2  # and zoe's two
    state = tmp_path / "state.json.gz"
    exported = fewface(server, "export", str(state), "--gzip")
    assert exported.exit_code == 0 and f"exported 14 people, {faces} faces" in exported.stderr
    merged = fewface(server, "import", str(state))
    assert merged.exit_code == 0 and "merge: imported 14 people, 0 faces" in merged.stdout, merged.output
    replaced = fewface(server, "import", str(state), "--mode", "replace")
    assert replaced.exit_code == 0 and f"holds 14 people, {faces} faces" in replaced.stdout
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    refused = fewface(server, "import", str(broken))
    assert refused.exit_code == 1 and "invalid_state" in refused.stderr
    report = fewface(server, "calibrate", "--json", str(tmp_path / "cal.json"), "--plot", str(tmp_path / "cal.png"), "--target", "0.05")
    assert report.exit_code == 0, report.output
    assert "equal error rate" in report.stdout
    assert [t["target"] for t in json.loads((tmp_path / "cal.json").read_text())["targets"]] == [0.05]
    assert (tmp_path / "cal.png").read_bytes().startswith(b"\x89PNG")


def test_local_data_dir_in_process(tmp_path: Path) -> None:
    """--data-dir: the pipeline in this process over a data directory; then the same directory
    read by calibrate (read-only) and refused while a server owns it."""
    data = tmp_path / "data"
    rows = tmp_path / "rows.csv"
    rows.write_text("".join(f"{p},{f}\n" for p in ("person07", "person08") for f in identities()[p][:2]))
    taught = fewface(None, "--data-dir", str(data), "teach-folder", str(FACES), "--csv", str(rows), "--quiet")
    assert taught.exit_code == 0, taught.output
    again = fewface(None, "--data-dir", str(data), "teach-folder", str(FACES), "--csv", str(rows), "--report", str(tmp_path / "r.json"))
    assert again.exit_code == 0 and json.loads((tmp_path / "r.json").read_text())["counts"]["skipped"] == 4
    found = fewface(None, "--data-dir", str(data), "identify", str(FACES / identities()["person07"][2]), "--csv", "-")
    assert found.exit_code == 0 and "person07" in found.stdout
    cal = fewface(None, "--data-dir", str(data), "calibrate")
    assert cal.exit_code == 0 and "2 people" in cal.stdout


def test_serve_runs_the_service(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "FEWFACE_API_KEY": "", "FEWFACE_BASIC_AUTH": ""}
    cmd = [sys.executable, "-m", "service.cli", "--data-dir", str(tmp_path / "data"), "serve", "--host", "127.0.0.1", "--port", str(port)]
    with open(tmp_path / "serve.log", "wb") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if requests.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                time.sleep(0.2)
        info = fewface(None, "--url", f"http://127.0.0.1:{port}", "info")
        assert info.exit_code == 0 and json.loads(info.stdout)["name"] == "fewface", (tmp_path / "serve.log").read_text()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)


def test_collection_option(taught: list[dict[str, Any]], server: ServerProcess, tmp_path: Path) -> None:
    from service.client import Client

    admin = Client(server.base, api_key=KEY)
    admin.create_collection("cli-team")
    try:
        rows = tmp_path / "rows.csv"
        rows.write_text("person,path\nkim,img20.jpg\nkim,img21.jpg\n")
        done = fewface(server, "--collection", "cli-team", "teach-folder", str(FACES), "--csv", str(rows), "--quiet")
        assert done.exit_code == 0, done.output
        assert admin.with_collection("cli-team").get_person("kim")["person"]["face_count"] == 2
        assert "kim" not in {p["id"] for p in admin.iter_people()}  # default untouched
        found = fewface(server, "--collection", "cli-team", "identify", str(FACES / "img21.jpg"), "--csv", "-")
        assert found.exit_code == 0 and "kim" in found.stdout
        missing = fewface(server, "--collection", "nope", "identify", str(FACES / "img21.jpg"))
        assert missing.exit_code == 1 and "404 collection_not_found: no collection 'nope'" in missing.stderr  # it says why
    finally:
        admin.delete_collection("cli-team")
