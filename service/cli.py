"""``fewface``: the command line over a running service (``--url``, ``$FEWFACE_URL``) or a local
data directory (``--data-dir``: the pipeline loaded once, in this process).

    fewface teach-folder photos/                 # photos/<person>/<photo>; resumable, parallel
    fewface teach-folder --csv people.csv        # rows person,path[,name]
    fewface identify party.jpg more/ --csv -     # a table, or CSV / JSON
    fewface export state.json && fewface import state.json --mode merge
    fewface calibrate --plot report.png
    fewface serve

Exit status: 0 done, 1 some images refused or some requests failed, 2 usage or configuration
(bad arguments, service unreachable, credentials refused, data directory unusable).
Only ``click``, ``rich`` and ``requests`` are imported until ``--data-dir`` or ``serve`` need the
pipeline (torch).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from service import __version__
from service.client import Client, FewfaceError, PersonNotFoundError, TransportError, UnauthorizedError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff"}
EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE = 0, 1, 2


def out() -> Console:
    return Console(soft_wrap=True)  # stdout, resolved at call time (tests capture it)


def err() -> Console:
    return Console(stderr=True, soft_wrap=True)


class ConfigProblem(click.ClickException):
    """A configuration problem (exit 2): unreachable service, refused credentials, unusable data dir."""

    exit_code = EXIT_USAGE


# -- where the commands act ------------------------------------------------------------------
@dataclass
class Target:
    url: str | None
    api_key: str | None
    data_dir: Path | None
    collection: str | None
    timeout: float
    _client: Client | None = None
    _app: Any = None

    def describe(self) -> str:
        where = f"data dir {self.data_dir}" if self.data_dir else (self.url or "")
        return where + (f" (collection {self.collection})" if self.collection else "")

    def client(self) -> Client:
        if self._client is None:
            if self.data_dir is not None:
                self._client = Client.in_process(self._local_app(), api_key=self.api_key, collection=self.collection, timeout=self.timeout)
            else:
                self._client = Client(self.url, api_key=self.api_key, collection=self.collection, timeout=self.timeout)
        return self._client

    def _local_app(self) -> Any:
        """The service's Flask app over ``data_dir``, in this process (settings from the environment)."""
        try:
            from service import create_app
            from service.config import ConfigError, Settings
            from service.store.datalock import DataDirInUseError
            from service.store.gallery import GalleryOpenError, ModelMismatchError
        except ImportError as exc:
            raise ConfigProblem(f"--data-dir needs the server's packages ({exc}); see docs/cli.md#install") from None
        try:
            settings = Settings.from_env(data_dir=str(self.data_dir))
            with err().status(f"loading the pipeline over {self.data_dir} ..."):
                self._app = create_app(settings)
        except (ConfigError, DataDirInUseError, GalleryOpenError, ModelMismatchError, ValueError, RuntimeError) as exc:
            raise ConfigProblem(f"cannot open {self.data_dir}: {exc}") from None
        return self._app

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
        if self._app is not None:
            recognizer = self._app.extensions["fewface"]
            recognizer.engine.close()
            recognizer.gallery.close()


class FewfaceGroup(click.Group):
    """Maps the client's errors to exit codes: unreachable or unauthorized -> 2, others -> 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (TransportError, UnauthorizedError) as exc:
            raise ConfigProblem(str(exc)) from None
        except FewfaceError as exc:
            err().print(f"[red]error:[/] {exc}", markup=True, highlight=False)
            ctx.exit(EXIT_SOME_FAILED)
        finally:
            target = ctx.obj
            if isinstance(target, Target):
                target.close()


@click.group(cls=FewfaceGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option("--url", envvar="FEWFACE_URL", help="The service, e.g. http://127.0.0.1:8080 (env FEWFACE_URL; that is the default).")
@click.option("--api-key", envvar="FEWFACE_API_KEY", help="Sent as X-API-Key (env FEWFACE_API_KEY).")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Act on this data directory in-process instead of a service (loads the pipeline; the directory must not be in use).",
)
@click.option("--collection", help="Act on this collection (/v1/collections/<cid>/...); default: the default collection.")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=120.0, show_default=True, help="Seconds per request.")
@click.version_option(__version__, prog_name="fewface")
@click.pass_context
def cli(ctx: click.Context, url: str | None, api_key: str | None, data_dir: Path | None, collection: str | None, timeout: float) -> None:
    """Fewface command line: bulk teach, identify, state files, calibration, serve."""
    if data_dir is not None and url and ctx.get_parameter_source("url") == click.core.ParameterSource.COMMANDLINE:
        raise click.UsageError("give --url or --data-dir, not both")
    ctx.obj = Target(None if data_dir else url, api_key or None, data_dir, collection, timeout)


# -- teach-folder ----------------------------------------------------------------------------
@dataclass
class Item:
    person: str
    path: str
    name: str | None = None
    sha256: str = ""
    outcome: str = "pending"  # taught, skipped, refused, failed
    reason: str | None = None  # skipped: already_taught, duplicate
    code: str | None = None  # refused / failed: the service's error code
    status: int | None = None
    message: str | None = None
    face_id: int | None = None


def folder_plan(folder: Path) -> list[Item]:
    """``folder/<person>/<photo>``: one item per image file (hidden entries ignored), sorted."""
    items = []
    for person in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for f in sorted(person.iterdir()):
            if f.is_file() and not f.name.startswith(".") and f.suffix.lower() in IMAGE_SUFFIXES:
                items.append(Item(person.name, str(f)))
    return items


def csv_plan(csv_path: Path, base: Path | None) -> list[Item]:
    """Rows ``person,path[,name]``; a header row may name the columns (person/identity,
    path/file, name) in any order. Relative paths are relative to ``base`` (DIR) or the CSV's folder."""
    base = base or csv_path.parent
    with open(csv_path, newline="", encoding="utf-8-sig") as fh:
        rows = [r for r in csv.reader(fh) if r and any(c.strip() for c in r)]
    columns = {"person": 0, "path": 1, "name": 2}
    if rows:
        head = [c.strip().lower() for c in rows[0]]
        aliases = {"person": ("person", "identity", "id", "person_id"), "path": ("path", "file", "image", "photo"), "name": ("name",)}
        found = {key: next((head.index(a) for a in names if a in head), None) for key, names in aliases.items()}
        if found["person"] is not None and found["path"] is not None:
            columns = {k: v for k, v in found.items() if v is not None}
            rows = rows[1:]
    items = []
    for number, row in enumerate(rows, start=1):
        cells = [c.strip() for c in row]
        try:
            person, path = cells[columns["person"]], cells[columns["path"]]
        except IndexError:
            raise click.UsageError(f"{csv_path}: row {number} has no person and path: {row}") from None
        name = cells[columns["name"]] if "name" in columns and columns["name"] < len(cells) and cells[columns["name"]] else None
        if not person or not path:
            raise click.UsageError(f"{csv_path}: row {number} has an empty person or path: {row}")
        items.append(Item(person, str(Path(path) if Path(path).is_absolute() else base / path), name))
    return items


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@contextmanager
def progress_bar(quiet: bool) -> Iterator[Progress]:
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn()]
    with Progress(*columns, console=err(), disable=quiet, transient=False) as progress:
        yield progress


def parallel(items: list[Any], work: Callable[[Any], Any], workers: int, progress: Progress, label: str) -> None:
    task = progress.add_task(label, total=len(items))
    if not items:
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(work, item) for item in items]
        for future in as_completed(futures):
            future.result()
            progress.advance(task)


def _record_error(item: Item, exc: FewfaceError) -> None:
    item.outcome = "failed" if isinstance(exc, TransportError) or exc.status >= 500 or exc.status in (401, 403, 404, 405) else "refused"
    item.code, item.status, item.message = exc.code, exc.status or None, exc.message


@cli.command("teach-folder", short_help="Bulk teach DIR/<person>/<photo> or a CSV (resumable, parallel).")
@click.argument("folder", required=False, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--csv", "csv_path", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="Rows person,path[,name] instead of DIR."
)
@click.option("--workers", type=click.IntRange(1, 64), default=4, show_default=True, help="Requests in flight at once.")
@click.option("--report", type=click.Path(dir_okay=False, path_type=Path), help="Write a JSON report of every image here.")
@click.option(
    "--pick", type=click.Choice(["one", "largest"]), default="one", show_default=True, help="largest: teach the largest of several faces."
)
@click.option("--quality", type=click.Choice(["on", "off"]), default="on", show_default=True, help="off: skip the quality gate.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.pass_obj
def teach_folder(
    target: Target, folder: Path | None, csv_path: Path | None, workers: int, report: Path | None, pick: str, quality: str, quiet: bool
) -> None:
    """Teach every photo of DIR/<person>/<photo> (or of --csv FILE) to its person, one face per photo.

    Resumable: an image whose sha256 the person already has in the gallery (GET /v1/people/<id>)
    is skipped, so a second run teaches only what is new or was refused. Refusals (no face,
    several faces, low quality, ...) are summed up by the service's error code."""
    if folder is None and csv_path is None:
        raise click.UsageError("give DIR (DIR/<person>/<photo>) or --csv FILE")
    items = csv_plan(csv_path, folder) if csv_path else folder_plan(folder)  # type: ignore[arg-type]
    if not items:
        raise click.UsageError(f"no photos found in {csv_path or folder}")
    client = target.client()  # with --data-dir: loads the pipeline first
    started = time.time()
    for item in items:
        try:
            item.sha256 = sha256_file(item.path)
        except OSError as exc:
            item.outcome, item.code, item.message = "failed", "unreadable_file", str(exc)
    people = sorted({i.person for i in items if i.outcome == "pending"})
    taught: dict[str, set[str]] = {}

    def known(person: str) -> None:
        try:
            taught[person] = {f["image_sha256"] for f in client.get_person(person)["faces"]}
        except PersonNotFoundError:
            taught[person] = set()
        except FewfaceError as exc:
            if isinstance(exc, TransportError | UnauthorizedError):
                raise
            taught[person] = set()  # e.g. an id the service refuses: each teach will say why

    def teach(item: Item) -> None:
        try:
            answer = client.teach(
                item.person, item.path, name=item.name, pick=None if pick == "one" else pick, quality=None if quality == "on" else quality
            )
        except FewfaceError as exc:
            if isinstance(exc, UnauthorizedError):
                raise
            _record_error(item, exc)
            return
        item.outcome, item.face_id = "taught", answer["faces"][0]["id"]

    with progress_bar(quiet) as progress:
        parallel(people, known, workers, progress, "checking people")
        seen: set[tuple[str, str]] = set()
        todo = []
        for item in items:
            if item.outcome != "pending":
                continue
            if item.sha256 in taught.get(item.person, set()):
                item.outcome, item.reason = "skipped", "already_taught"
            elif (item.person, item.sha256) in seen:
                item.outcome, item.reason = "skipped", "duplicate"
            else:
                seen.add((item.person, item.sha256))
                todo.append(item)
        parallel(todo, teach, workers, progress, "teaching")
    summary = teach_summary(items, target, folder, csv_path, started)
    print_teach_summary(summary, items)
    if report:
        report.write_text(json.dumps({**summary, "items": [asdict(i) for i in items]}, indent=2, ensure_ascii=False) + "\n")
        err().print(f"report: {report}", highlight=False)
    counts = summary["counts"]
    sys.exit(EXIT_SOME_FAILED if counts["refused"] or counts["failed"] else EXIT_OK)


def teach_summary(items: list[Item], target: Target, folder: Path | None, csv_path: Path | None, started: float) -> dict[str, Any]:
    counts = Counter(i.outcome for i in items)
    return {
        "target": target.describe(),
        "source": {"dir": str(folder) if folder else None, "csv": str(csv_path) if csv_path else None},
        "started_at": started,
        "seconds": round(time.time() - started, 2),
        "counts": {k: counts.get(k, 0) for k in ("taught", "skipped", "refused", "failed")} | {"images": len(items)},
        "people": len({i.person for i in items}),
        "refusals": dict(Counter(i.code for i in items if i.outcome in ("refused", "failed")).most_common()),
    }


def print_teach_summary(summary: dict[str, Any], items: list[Item]) -> None:
    c = summary["counts"]
    skipped = Counter(i.reason for i in items if i.outcome == "skipped")
    table = Table(title=f"teach-folder: {c['images']} images of {summary['people']} people in {summary['seconds']} s")
    for col in ("outcome", "images", "detail"):
        table.add_column(col)
    table.add_row("taught", str(c["taught"]), "")
    table.add_row("skipped", str(c["skipped"]), ", ".join(f"{n} {r}" for r, n in skipped.items()))
    by_code: dict[str, list[Item]] = defaultdict(list)
    for i in items:
        if i.outcome in ("refused", "failed"):
            by_code[f"{i.outcome}: {i.code}"].append(i)
    for label, group in sorted(by_code.items(), key=lambda kv: -len(kv[1])):
        examples = ", ".join(f"{Path(i.path).name} ({i.person})" for i in group[:3]) + (" ..." if len(group) > 3 else "")
        table.add_row(label, str(len(group)), examples)
    out().print(table)


# -- identify --------------------------------------------------------------------------------
def image_files(paths: Iterable[Path]) -> list[Path]:
    files = []
    for p in paths:
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES and not f.name.startswith("."))
        else:
            files.append(p)
    return files


ID_COLUMNS = ["file", "face", "matched", "person_id", "name", "similarity", "confidence", "left", "top", "width", "height", "error"]


def identify_rows(file: Path, answer: dict[str, Any] | None, error: FewfaceError | None) -> list[dict[str, Any]]:
    if error is not None:
        return [{"file": str(file), "error": error.code}]
    rows = []
    for n, face in enumerate(answer["faces"] if answer else [], start=1):
        match = face["match"] or {}
        rows.append(
            {
                "file": str(file),
                "face": n,
                "matched": face["matched"],
                "person_id": match.get("person_id"),
                "name": match.get("name"),
                "similarity": face["similarity"],
                "confidence": face["confidence"],
                **face["box"],
            }
        )
    return rows or [{"file": str(file), "face": 0}]


@cli.command(short_help="Identify the faces in images and folders (table, CSV or JSON).")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--threshold", type=click.FloatRange(-1, 1), help="Match threshold (default: the service's rule).")
@click.option("--top-k", type=click.IntRange(1, 100), help="Candidates per face.")
@click.option("--csv", "csv_out", type=click.Path(dir_okay=False, allow_dash=True), help="Write rows as CSV here ('-': stdout).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, allow_dash=True), help="Write the answers as JSON here ('-': stdout).")
@click.option("--workers", type=click.IntRange(1, 64), default=4, show_default=True)
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.pass_obj
def identify(
    target: Target,
    paths: tuple[Path, ...],
    threshold: float | None,
    top_k: int | None,
    csv_out: str | None,
    json_out: str | None,
    workers: int,
    quiet: bool,
) -> None:
    """Identify every face in FILES and folders (searched recursively for images)."""
    files = image_files(paths)
    if not files:
        raise click.UsageError("no image files given")
    client = target.client()
    results: dict[Path, tuple[dict[str, Any] | None, FewfaceError | None]] = {}

    def work(file: Path) -> None:
        try:
            results[file] = (client.identify(file, threshold=threshold, top_k=top_k), None)
        except (TransportError, UnauthorizedError):
            raise
        except FewfaceError as exc:
            results[file] = (None, exc)
        except OSError as exc:
            results[file] = (None, FewfaceError(0, "unreadable_file", str(exc)))

    with progress_bar(quiet or len(files) < 2) as progress:
        parallel(files, work, workers, progress, "identifying")
    rows = [r for f in files for r in identify_rows(f, *results[f])]
    for f in files:
        if results[f][1] is not None:
            e = results[f][1]
            err().print(f"{f}: {e.status or ''} {e.code}: {e.message}", highlight=False, markup=False)
    if json_out:
        doc = [
            {
                "file": str(f),
                **(results[f][0] or {}),
                **({"error": results[f][1].code, "message": results[f][1].message} if results[f][1] else {}),
            }  # type: ignore[union-attr]
            for f in files
        ]
        write_text(json_out, json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    if csv_out:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=ID_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        write_text(csv_out, buffer.getvalue())
    if not json_out and not csv_out:
        table = Table(title=f"identify: {len(files)} images")
        for col in ("file", "face", "person", "name", "similarity", "confidence", "box"):
            table.add_column(col)
        for r in rows:
            box = f"{r['left']:.0f},{r['top']:.0f} {r['width']:.0f}x{r['height']:.0f}" if "left" in r else ""
            person = r.get("person_id") or (
                "error: " + r["error"] if r.get("error") else ("(no face)" if r.get("face") == 0 else "(unknown)")
            )
            table.add_row(
                Path(r["file"]).name,
                str(r.get("face", "")),
                person,
                r.get("name") or "",
                _num(r.get("similarity")),
                _num(r.get("confidence")),
                box,
            )
        out().print(table)
    sys.exit(EXIT_SOME_FAILED if any(e for _, e in results.values()) else EXIT_OK)


def _num(value: Any) -> str:
    return "" if value is None else f"{value:.3f}"


def write_text(dest: str, text: str) -> None:
    if dest == "-":
        click.echo(text, nl=False)
    else:
        Path(dest).write_text(text, encoding="utf-8")
        err().print(f"wrote {dest}", highlight=False)


# -- state files -----------------------------------------------------------------------------
@cli.command("export", short_help="Download the state file.")
@click.argument("output", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--gzip", "compress", is_flag=True, help="A gzipped state file.")
@click.pass_obj
def export_state(target: Target, output: str, compress: bool) -> None:
    """Download the gallery's state file to OUTPUT ('-': stdout)."""
    data = target.client().export_state(compress=compress)
    if output == "-":
        click.get_binary_stream("stdout").write(data)
    else:
        Path(output).write_bytes(data)
    raw = __import__("gzip").decompress(data) if compress else data
    doc = json.loads(raw)
    err().print(f"exported {len(doc['people'])} people, {len(doc['faces'])} faces ({doc['model']['id']}) to {output}", highlight=False)


@cli.command("import", short_help="Upload a state file (merge or replace).")
@click.argument("state", type=click.Path(exists=True, dir_okay=False, allow_dash=True))
@click.option(
    "--mode",
    type=click.Choice(["merge", "replace"]),
    default="merge",
    show_default=True,
    help="merge: add the file's people and faces; replace: empty the gallery first.",
)
@click.pass_obj
def import_state(target: Target, state: str, mode: str) -> None:
    """Upload a state file (as made by export or GET /v1/state); all or nothing."""
    data = click.get_binary_stream("stdin").read() if state == "-" else Path(state).read_bytes()
    answer = target.client().import_state(data, mode=mode)
    imported, total = answer["imported"], answer["total"]
    out().print(
        f"{mode}: imported {imported['people']} people, {imported['faces']} faces; "
        f"the gallery now holds {total['people']} people, {total['faces']} faces",
        highlight=False,
    )


# -- calibrate -------------------------------------------------------------------------------
@cli.command(short_help="Calibration report and plot.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), help="Write the report as JSON here.")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path), help="Write the PNG plot here.")
@click.option(
    "--target",
    "targets",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    multiple=True,
    help="Chance of naming a stranger (repeatable).",
)
@click.option("--gallery-size", type=click.IntRange(min=1), help="People a stranger is compared with (default: the gallery's).")
@click.option(
    "--folder",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Labelled photos FOLDER/<person>/<photo> instead of the gallery.",
)
@click.pass_obj
def calibrate(
    target: Target, json_out: Path | None, plot: Path | None, targets: tuple[float, ...], gallery_size: int | None, folder: Path | None
) -> None:
    """The calibration report (score distributions, FAR/FRR, EER, thresholds for target chances of
    naming a stranger) over the gallery, or over --folder through the local pipeline."""
    if folder is not None or target.data_dir is not None:  # local: python -m service.calibrate does it (read-only over a data dir)
        try:
            from service.calibrate import main as calibrate_main
        except ImportError as exc:
            raise ConfigProblem(f"a local calibration needs the server's packages ({exc})") from None
        argv = ["--folder", str(folder)] if folder is not None else ["--data-dir", str(target.data_dir)]
        argv += [a for t in targets for a in ("--target", str(t))]
        argv += ["--gallery-size", str(gallery_size)] if gallery_size else []
        argv += ["--json", str(json_out)] if json_out else []
        argv += ["--plot", str(plot)] if plot else []
        sys.exit(calibrate_main(argv))
    client = target.client()
    report = client.calibration(targets=targets or None, gallery_size=gallery_size)
    print_calibration(report)
    if json_out:
        json_out.write_text(json.dumps(report, indent=2) + "\n")
        err().print(f"wrote {json_out}", highlight=False)
    if plot:
        plot.write_bytes(client.calibration_plot(targets=targets or None, gallery_size=gallery_size))
        err().print(f"wrote {plot}", highlight=False)


def print_calibration(report: dict[str, Any]) -> None:
    console = out()
    cur, eer, n = report["current"], report["eer"], report["gallery_size"]
    console.print(
        f"{report['people']} people ({report['people_with_pairs']} with 2+ examples), {report['examples']} examples: "
        f"{report['genuine_pairs']} same-person and {report['impostor_pairs']} different-person pairs\n"
        f"equal error rate {eer['rate']:.2%} at {eer['threshold']:.4f}",
        highlight=False,
    )
    table = Table(title=f"thresholds (gallery of {n} people)")
    for col in ("threshold", "for", "chance to name a stranger", "photos missed", "pair FAR", "pair FRR"):
        table.add_column(col)
    table.add_row(
        f"{report['current_threshold']:.4f}",
        "current",
        f"{cur['stranger_chance']:.2%}",
        f"{cur['miss_rate']:.2%}",
        f"{cur['far']:.2%}",
        f"{cur['frr']:.2%}",
    )
    for row in report["targets"]:
        flag = "" if row["resolved"] else " (unresolved)"
        table.add_row(
            f"{row['threshold']:.4f}", f"target {row['target']:g}{flag}", f"<= {row['target']:.0%}", f"{row['miss_rate']:.2%}", "", ""
        )
    console.print(table)
    for w in report.get("warnings", []):
        console.print(f"[yellow]warning:[/] {w}", highlight=False)


# -- info, serve -----------------------------------------------------------------------------
@cli.command(short_help="GET /v1/info as JSON.")
@click.pass_obj
def info(target: Target) -> None:
    """The service's version, model, device, match rule and counts (GET /v1/info) as JSON."""
    click.echo(json.dumps(target.client().info(), indent=2))


@cli.command(short_help="Run the service (python -m service).")
@click.option("--host", help="Address to listen on (FEWFACE_HOST).")
@click.option("--port", type=click.IntRange(1, 65535), help="Port (FEWFACE_PORT).")
@click.pass_obj
def serve(target: Target, host: str | None, port: int | None) -> None:
    """Run the service (python -m service); every other setting comes from FEWFACE_* variables."""
    for key, value in (("FEWFACE_HOST", host), ("FEWFACE_PORT", port), ("FEWFACE_DATA_DIR", target.data_dir)):
        if value is not None:
            os.environ[key] = str(value)
    target.data_dir = None  # the server opens it, not this process
    try:
        from service.__main__ import main as serve_main
    except ImportError as exc:
        raise ConfigProblem(f"serving needs the server's packages ({exc}); see docs/cli.md#install") from None
    sys.exit(serve_main([]))


def main() -> None:
    """Console-script entry point (``fewface``)."""
    cli(prog_name="fewface")


if __name__ == "__main__":
    main()
