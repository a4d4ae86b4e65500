"""Resumable batch submits: `python -m avatar_engine batch manifest.jsonl|.csv`.

Each manifest row is one request input (JSONL: one object a line; CSV: one column per field,
`output.delivery`-style columns for nested fields; an optional `row_id` names the row). Rows are
submitted to the endpoint with at most `concurrency` jobs in flight: scaling is the endpoint's
(Runpod adds workers for queued jobs), this only bounds what one script keeps open.

Everything lives in one output folder: `state.json` (written atomically after every change, so a
Ctrl-C or a crash leaves it consistent), `results.jsonl` (one line per finished row, rebuilt from the
state), and `videos/` (base64 results always land here; URL results with `download`). A re-run skips
rows that finished, waits again on rows that were submitted (their job id is in the state; a job the
endpoint no longer knows is submitted again) and submits the rest. A row whose input changed since
the state was written starts over.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import itertools
import json
import logging
import os
import queue
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin

import requests
from pydantic import BaseModel

from ..errors import AvatarError
from ..schema import ENGINE_OPTION_ALIASES, RenderRequest
from .endpoint import AvatarClient, EndpointError, JobFailed, JobNotFound, JobStatus, RenderResult

log = logging.getLogger(__name__)

STATE_VERSION = 1
# worker failures that another attempt may not repeat; input problems are final
RETRYABLE_CODES = frozenset({"internal", "timeout", "upload_failed"})
#: Python's default csv field limit: a longer cell makes its row fail (use JSONL for big inline base64)
CSV_MAX_CELL_CHARS = 131072


@dataclass(frozen=True)
class RowError:
    """A manifest row that cannot become a request: it is recorded FAILED with `code`, never submitted."""

    code: str
    message: str


Payload = dict | RowError


@dataclass(frozen=True)
class BatchOptions:
    """How hard to push and how patient to be."""

    concurrency: int = 4
    retries: int = 2  # extra submits of a row after a retryable failure (or unreachable endpoint)
    timeout_s: float = 900.0  # per job, from submit to final status
    download: bool = False  # also fetch URL results into videos/
    retry_failed: bool = False  # a re-run submits failed rows again
    progress: bool = True
    retry_pause_s: float = 2.0


@dataclass
class BatchSummary:
    total: int
    completed: int
    failed: int
    pending: int
    submitted: int  # jobs submitted by this run
    resumed: int  # jobs this run waited on from an earlier run
    errors: dict[str, int] = field(default_factory=dict)
    wall_s: float = 0.0
    interrupted: bool = False
    out_dir: str = ""

    def to_dict(self) -> dict:
        return self.__dict__.copy()


# -- manifest --------------------------------------------------------------------------------


def _is_text(annotation: Any) -> bool:
    """str, a Literal of strings, or an optional one of those: a CSV cell for it is never read as JSON."""
    origin = get_origin(annotation)
    if origin is Literal:
        return all(isinstance(v, str) for v in get_args(annotation))
    if origin in (Union, UnionType):
        return all(_is_text(a) for a in get_args(annotation) if a is not type(None))
    return annotation is str


@functools.lru_cache(maxsize=1)
def string_fields() -> frozenset[str]:
    """CSV columns that hold text, read from the request schema (nested ones as `group.field`)."""
    names = {"row_id", "driver"}
    for name, info in RenderRequest.model_fields.items():
        nested = info.annotation if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel) \
            else None
        if nested is None:
            names.update([name] if _is_text(info.annotation) else [])
            continue
        for sub, sub_info in nested.model_fields.items():
            if _is_text(sub_info.annotation):
                names.add(f"{name}.{sub}")
                names.update([sub] if ENGINE_OPTION_ALIASES.get(sub) == name else [])
    return frozenset(names)


def _cell(name: str, text: str) -> Any:
    if name in string_fields():
        return text
    try:
        return json.loads(text)  # numbers, true/false, [top, bottom, left, right]
    except ValueError:
        return text


def _csv_payload(record: dict) -> dict:
    payload: dict = {}
    for key, text in record.items():
        if key is None or text is None or text.strip() == "":
            continue
        key, text = key.strip(), text.strip()
        value = _cell(key, text)
        head, _, tail = key.partition(".")
        if tail:
            payload.setdefault(head, {})[tail] = value
        else:
            payload[key] = value
    return payload


def _csv_rows(path: Path) -> list[tuple[str, Payload]]:
    """One row per record; a record the csv module refuses (a cell over the limit) is a row error."""
    rows: list[tuple[str, Payload]] = []
    with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: Excel's "CSV UTF-8" starts with a BOM
        reader = csv.reader(f)
        header = next(reader, None) or []
        for n in itertools.count(1):
            try:
                cells = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                rows.append((str(n), RowError("invalid_input", f"{path.name} row {n} (line {reader.line_num}): {exc}; "
                                              f"a CSV cell holds at most {CSV_MAX_CELL_CHARS} characters, put large "
                                              "base64 inputs in a JSONL manifest or send a URL")))
                continue
            payload = _csv_payload(dict(zip(header, cells)))
            rows.append((str(payload.pop("row_id", n)), payload))
    return rows


def _jsonl_row(value: Any, n: int) -> tuple[str, Payload]:
    """A request object, or `{"row_id": ..., "input": {...}}`; anything else is a row error."""
    if not isinstance(value, dict):
        return str(n), RowError("invalid_input", f"line {n}: a row must be a JSON object, not {type(value).__name__}")
    if "input" in value and set(value) <= {"input", "row_id"}:
        inner = value["input"]
        if not isinstance(inner, dict):
            return str(value.get("row_id", n)), RowError(
                "invalid_input", f"line {n}: 'input' must be a JSON object, not {type(inner).__name__}")
        payload = dict(inner)
        inner_id = payload.pop("row_id", n)
        return str(value.get("row_id", inner_id)), payload
    payload = dict(value)
    return str(payload.pop("row_id", n)), payload


def _jsonl_rows(path: Path) -> list[tuple[str, Payload]]:
    rows: list[tuple[str, Payload]] = []
    with open(path, encoding="utf-8-sig") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            try:
                value = json.loads(line)
            except ValueError as exc:
                rows.append((str(n), RowError("invalid_input", f"line {n}: not JSON ({exc})")))
                continue
            rows.append(_jsonl_row(value, n))
    return rows


def load_manifest(path: str | Path) -> list[tuple[str, Payload]]:
    """(row id, request input or `RowError`) per row. JSONL unless the file name ends in .csv."""
    path = Path(path)
    rows = _csv_rows(path) if path.suffix.lower() == ".csv" else _jsonl_rows(path)
    ids = [r for r, _ in rows]
    if len(set(ids)) != len(ids):
        duplicates = sorted({r for r in ids if ids.count(r) > 1})
        raise ValueError(f"{path}: duplicate row_id values: {', '.join(duplicates[:5])}")
    return rows


def video_names(row_ids: list[str]) -> dict[str, str]:
    """A distinct MP4 file name per row id, also on case-insensitive file systems: a plain id keeps its
    name; an id with other characters (`a/b`, `a:b`, `a b`) or one that only differs in case from
    another gets a hash of the id appended, so `a/b` never overwrites the video of `a_b`."""
    def plain(row_id: str) -> str:
        kept = "".join(c if (c.isascii() and c.isalnum()) or c in "-_." else "_" for c in row_id)
        return kept.lstrip(".")[:80]

    seen = Counter(plain(r).lower() for r in row_ids)
    names = {}
    for row_id in row_ids:
        name = plain(row_id)
        if not name or name != row_id or seen[name.lower()] > 1:
            name = f"{name or 'row'}-{hashlib.sha256(row_id.encode()).hexdigest()[:12]}"
        names[row_id] = f"{name}.mp4"
    if len({n.lower() for n in names.values()}) != len(names):  # an id spelled like another's hashed name
        names = {r: f"{hashlib.sha256(r.encode()).hexdigest()}.mp4" for r in row_ids}
    return names


def _digest(payload: Payload) -> str:
    if isinstance(payload, RowError):
        payload = {"row_error": payload.message}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def read_state(path: Path) -> dict[str, dict]:
    """The rows of an earlier run's `state.json`; a file that is not one fails naming the file."""
    if not path.exists():
        return {}
    hint = "fix or remove it to start the batch over"
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ValueError(f"{path}: not a readable batch state ({exc}); {hint}") from None
    rows = doc.get("rows", {}) if isinstance(doc, dict) else None
    if not isinstance(rows, dict):
        raise ValueError(f"{path}: a batch state is a JSON object with a 'rows' object; {hint}")
    for row_id, row in rows.items():
        if not isinstance(row, dict) or not isinstance(row.get("status", ""), str) \
                or not isinstance(row.get("attempts", 0), int):
            raise ValueError(f"{path}: row {row_id!r} is not a batch state row; {hint}")
    return rows


# -- state -----------------------------------------------------------------------------------


def atomic_write(path: Path, text: str) -> None:
    """Write-then-rename: readers (and a re-run after Ctrl-C) see the old file or the new one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _final(row: dict, retry_failed: bool) -> bool:
    return row.get("status") == "COMPLETED" or (row.get("status") == "FAILED" and not retry_failed)


class _Batch:
    def __init__(self, rows: list[tuple[str, Payload]], client: AvatarClient, out_dir: Path, options: BatchOptions):
        self.rows, self.client, self.out, self.opt = rows, client, out_dir, options
        self.state_path = out_dir / "state.json"
        self.results_path = out_dir / "results.jsonl"
        self.videos = out_dir / "videos"
        self.video_names = video_names([r for r, _ in rows])
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.submitted = self.resumed = 0
        self.state = self._load_state()

    def _load_state(self) -> dict:
        old = read_state(self.state_path)
        rows = {}
        for row_id, payload in self.rows:
            digest = _digest(payload)
            prior = old.get(row_id)
            if isinstance(payload, RowError):  # never submitted: failed from the manifest, every run
                rows[row_id] = {"row": row_id, "digest": digest, "status": "FAILED", "job_id": None, "attempts": 0,
                                "error_code": payload.code, "error_message": payload.message}
            elif prior and prior.get("digest") == digest:
                if prior.get("status") == "FAILED" and self.opt.retry_failed:
                    prior = {**prior, "status": "pending", "job_id": None, "attempts": 0}
                rows[row_id] = prior
            else:
                rows[row_id] = {"row": row_id, "digest": digest, "status": "pending", "job_id": None, "attempts": 0}
        return {"version": STATE_VERSION, "endpoint": self.client.root, "rows": rows}

    def save(self) -> None:
        """Persist the state (caller holds the lock); nothing is written once the batch stopped."""
        if not self.stop.is_set():
            atomic_write(self.state_path, json.dumps(self.state, indent=1))

    def update(self, row_id: str, **changes) -> dict:
        with self.lock:
            if self.stop.is_set():
                raise _Stopped
            self.state["rows"][row_id].update(changes)
            self.save()
            return self.state["rows"][row_id]

    def write_results(self) -> None:
        lines = []
        for row_id, _ in self.rows:
            r = self.state["rows"][row_id]
            if r["status"] in ("COMPLETED", "FAILED"):
                lines.append(json.dumps({k: r.get(k) for k in (
                    "row", "job_id", "status", "video", "error_code", "error_message", "attempts",
                    "submitted_at", "finished_at", "wall_s", "delay_ms", "execution_ms", "timings_ms")}))
        atomic_write(self.results_path, "".join(line + "\n" for line in lines))

    # -- one row -----------------------------------------------------------------------

    def _video(self, row_id: str, result: RenderResult) -> str | None:
        if result.video_b64 or (self.opt.download and result.video_url):
            return str(result.save(self.videos / self.video_names[row_id]))
        return result.video_url or result.video_path

    def _finish(self, row_id: str, status: JobStatus, started: float) -> None:
        done = {"finished_at": time.time(), "delay_ms": status.delay_ms, "execution_ms": status.execution_ms,
                "wall_s": round(time.time() - started, 3)}
        try:
            result = status.result()  # JobFailed for anything but a completed render
            video = self._video(row_id, result)
        except AvatarError as exc:
            self.update(row_id, status="FAILED", error_code=exc.code, error_message=exc.message, **done)
            return
        except (OSError, ValueError, requests.RequestException) as exc:  # an odd result, or no disk here
            self.update(row_id, status="FAILED", error_code="internal",
                        error_message=f"the result could not be read or saved ({type(exc).__name__}: {exc})", **done)
            return
        self.update(row_id, status="COMPLETED", video=video, timings_ms=result.timings_ms, error_code=None,
                    error_message=None, **done)

    def process(self, row_id: str, payload: dict) -> None:
        try:
            self._process(row_id, payload)
        except _Stopped:
            pass  # interrupted: the state on disk already says where this row stands

    def _process(self, row_id: str, payload: dict) -> None:
        row = self.state["rows"][row_id]
        started, transport_failures = time.time(), 0
        while not self.stop.is_set():
            try:
                if row.get("job_id"):
                    with self.lock:
                        self.resumed += 1
                    final = self.client.wait(row["job_id"], timeout_s=self.opt.timeout_s)
                else:
                    job = self.client.run(payload)
                    with self.lock:
                        self.submitted += 1
                    row = self.update(row_id, status="submitted", job_id=job.id, attempts=row.get("attempts", 0) + 1,
                                      submitted_at=time.time())
                    final = job if job.done else self.client.wait(job.id, timeout_s=self.opt.timeout_s)
            except JobNotFound:
                row = self.update(row_id, job_id=None)  # expired, or the local server already ran it
                continue
            except JobFailed as exc:  # our deadline passed: the job may still run, so it is not submitted again
                self.update(row_id, status="FAILED", error_code=exc.code, error_message=exc.message,
                            finished_at=time.time(), wall_s=round(time.time() - started, 3))
                return
            except EndpointError as exc:  # unreachable after the client's own retries
                transport_failures += 1
                if transport_failures <= self.opt.retries:
                    time.sleep(self.opt.retry_pause_s)
                    continue
                self.update(row_id, status="FAILED", error_code=exc.code, error_message=exc.message,
                            finished_at=time.time(), wall_s=round(time.time() - started, 3))
                return
            code = (final.error or {}).get("code") if not final.ok else None
            if (not final.ok and (code in RETRYABLE_CODES or final.status == "TIMED_OUT")
                    and row.get("attempts", 0) <= self.opt.retries):
                row = self.update(row_id, job_id=None, last_error=code or final.status)
                continue
            self._finish(row_id, final, started)
            return

    # -- all rows ----------------------------------------------------------------------

    def run(self) -> BatchSummary:
        from tqdm import tqdm

        self.out.mkdir(parents=True, exist_ok=True)
        with self.lock:
            self.save()
        todo = [(r, p) for r, p in self.rows
                if not isinstance(p, RowError) and not _final(self.state["rows"][r], self.opt.retry_failed)]
        work: queue.Queue = queue.Queue()
        for item in todo:
            work.put(item)
        bar = tqdm(total=len(self.rows), initial=len(self.rows) - len(todo), unit="job", desc="batch",
                   disable=not self.opt.progress, dynamic_ncols=True)
        finished = threading.Semaphore(0)

        def worker():
            while not self.stop.is_set():
                try:
                    row_id, payload = work.get_nowait()
                except queue.Empty:
                    return
                try:
                    self.process(row_id, payload)
                except Exception:  # noqa: BLE001 - one broken row must not stall the batch
                    log.exception("row %s failed unexpectedly", row_id)
                finally:
                    finished.release()

        started = time.time()
        threads = [threading.Thread(target=worker, daemon=True, name=f"batch-{i}")
                   for i in range(max(1, min(self.opt.concurrency, len(todo))))]
        for t in threads:
            t.start()
        interrupted = False
        try:
            for _ in todo:
                while not finished.acquire(timeout=0.2):
                    pass
                bar.update(1)
        except KeyboardInterrupt:
            interrupted = True
        finally:
            with self.lock:
                self.save()
                self.stop.set()  # from here no thread writes; the state on disk is the last consistent one
                self.write_results()
            bar.close()
        return self.summary(time.time() - started, interrupted)

    def summary(self, wall_s: float, interrupted: bool) -> BatchSummary:
        rows = self.state["rows"].values()
        errors: dict[str, int] = {}
        for r in rows:
            if r["status"] == "FAILED":
                errors[r.get("error_code") or "internal"] = errors.get(r.get("error_code") or "internal", 0) + 1
        completed = sum(r["status"] == "COMPLETED" for r in rows)
        failed = sum(r["status"] == "FAILED" for r in rows)
        return BatchSummary(total=len(self.rows), completed=completed, failed=failed,
                            pending=len(self.rows) - completed - failed, submitted=self.submitted,
                            resumed=self.resumed, errors=errors, wall_s=round(wall_s, 2), interrupted=interrupted,
                            out_dir=str(self.out))


class _Stopped(Exception):
    """The batch was interrupted: the row's thread leaves without touching the state."""


def run_batch(manifest: str | Path, *, client: AvatarClient | None = None, out_dir: str | Path | None = None,
              options: BatchOptions | None = None) -> BatchSummary:
    """Submit every unfinished row of `manifest`; `out_dir` defaults to `<manifest>.out/`."""
    manifest = Path(manifest)
    rows = load_manifest(manifest)
    out = Path(out_dir) if out_dir else manifest.with_name(manifest.name + ".out")
    return _Batch(rows, client or AvatarClient.from_env(), out, options or BatchOptions()).run()
