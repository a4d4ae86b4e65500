#!/usr/bin/env python3
"""Download an image's checkpoints into MODEL_ROOT, verified, at image build time (or once onto a volume).

    python builder/fetch_models.py --image sadtalker --root /models
    python builder/fetch_models.py --image hq --root /runpod-volume/models --url fomm_vox=https://... --url diff2lip=https://...

Why this is not `wget`: a checkpoint cut short by a dropped connection must never be baked into an image
(the worker would fail on every cold start), and a retried download should not start 700 MB over.
So each file is written to `<name>.part`, resumed with an HTTP Range request after a failure, checked
against the server's Content-Length, the manifest's size and its sha256 (when published), and only then
renamed into place. Any file that cannot be fetched intact makes the script exit non-zero, which fails
the `docker build`. A `<name>.verified.json` next to each file records what was checked, so the
worker's health action can report "verified" without hashing hundreds of megabytes per call.

Each entry's `sources` are tried in order (upstream first, then community mirrors); `MODEL_URLS` / `--url`
replaces them. Google Drive sources go through `gdown` (installed in the image by the requirements files; the
worker never imports it). A download that turns out to be an HTML page, empty or cut short is refused with
what it is (`loading.py`'s sniffer, copied next to this script in the image). When every source fails, the
error names the file, every URL tried and what to do next; an entry's `fallback_files` may serve instead.

Standard library only otherwise: it runs in the weights layer of the Dockerfiles, before the worker's code
exists. The manifest is `avatar_engine/runtime/models.json` (the same file the worker reads).
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import importlib.util
import json
import re
import os
import shlex
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

DEFAULT_MANIFEST = Path(__file__).resolve().parent.parent / "avatar_engine" / "runtime" / "models.json"
CHUNK = 1 << 20
SIDE_SUFFIX = ".verified.json"


class FetchError(Exception):
    """A checkpoint could not be fetched intact; the message names the file and what was wrong."""


@dataclass(frozen=True)
class Source:
    """One place a file can be fetched from: `kind` http, gdrive (a Drive file) or gdrive_folder (`file` in it)."""

    kind: str
    url: str
    role: str = "upstream"
    file: str | None = None


@dataclass(frozen=True)
class Entry:
    """One manifest file: where it goes under the root, where it comes from, what it must hash to."""

    key: str
    path: str
    url: str | None
    size: int | None
    sha256: str | None
    page: str | None = None
    sources: tuple[Source, ...] = ()
    fallback_files: tuple[str, ...] = ()

    def candidates(self, override: str | None = None) -> list[Source]:
        """The override alone when given, else the manifest's sources (or its bare `url`)."""
        if override:
            return [source_for_url(override, "override")]
        if self.sources:
            return list(self.sources)
        return [source_for_url(self.url, "upstream")] if self.url else []


def source_for_url(url: str, role: str) -> Source:
    """A bare URL as a Source: Google Drive links go through gdown, anything else is plain HTTP."""
    if "drive.google.com/drive/folders/" in url:
        raise FetchError(f"{url} is a Drive folder: give the file's own link (drive.google.com/file/d/<id>)")
    return Source("gdrive" if "drive.google.com" in url else "http", url, role)


@dataclass(frozen=True)
class FetchOptions:
    retries: int = 5
    timeout_s: float = 60.0
    backoff_s: float = 2.0
    user_agent: str = "avatar-renderer-builder/1"


def load_manifest(path: Path = DEFAULT_MANIFEST) -> dict:
    return json.loads(Path(path).read_text())


def entries_for(manifest: dict, image: str | None = None, only: list[str] | None = None) -> list[Entry]:
    """The files an image bakes (or the named ones), in manifest order."""
    files = manifest["files"]
    if image is not None and image not in manifest["images"]:
        raise FetchError(f"unknown image {image!r}; known: {', '.join(sorted(manifest['images']))}")
    unknown = [k for k in only or [] if k not in files]
    if unknown:
        raise FetchError(f"unknown manifest entries: {', '.join(unknown)}")
    keys = [k for k, f in files.items() if (image is None or image in f["images"]) and (not only or k in only)]
    return [entry_from(manifest, k) for k in keys]


def entry_from(manifest: dict, key: str) -> Entry:
    spec = manifest["files"][key]
    sources = tuple(Source(s["kind"], s["url"], s.get("role", "upstream"), s.get("file")) for s in spec.get("sources", []))
    return Entry(key, spec["path"], spec.get("url"), spec.get("size"), spec.get("sha256"), spec.get("page"),
                 sources, tuple(spec.get("fallback_files", [])))


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def write_record(path: Path, sha256: str) -> None:
    """Record what was verified: health trusts it only while the file's size and mtime still match."""
    st = path.stat()
    record = {"sha256": sha256, "size": st.st_size, "mtime": int(st.st_mtime)}
    tmp = path.with_name(path.name + SIDE_SUFFIX + ".part")
    tmp.write_text(json.dumps(record))
    os.replace(tmp, path.with_name(path.name + SIDE_SUFFIX))


def _check_whole(entry: Entry, path: Path) -> str:
    """Size and checksum of a complete file against the manifest; returns its sha256."""
    size = path.stat().st_size
    if entry.size is not None and size != entry.size:
        raise FetchError(f"{entry.key}: {path} is {size} bytes, the manifest says {entry.size}")
    digest = sha256_file(path)
    if entry.sha256 is not None and digest != entry.sha256.lower():
        raise FetchError(f"{entry.key}: sha256 mismatch for {path}: got {digest}, the manifest says {entry.sha256}")
    return digest


def _download_once(url: str, part: Path, opts: FetchOptions) -> None:
    """One HTTP attempt, appending to `part` from its current length. Raises on a short body."""
    have = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"User-Agent": opts.user_agent, "Accept-Encoding": "identity"})
    if have:
        req.add_header("Range", f"bytes={have}-")
    try:
        resp = urllib.request.urlopen(req, timeout=opts.timeout_s)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # our range starts at the end: the part may already be whole
            return
        raise
    with resp:
        status = resp.status
        if have and status == 206:
            start = _range_start(resp.headers.get("Content-Range"))
            if start != have:
                raise OSError(f"server resumed at byte {start}, not {have}")
            mode = "ab"
        else:  # 200: the server ignored the range (or there was none): start over
            mode, have = "wb", 0
        length = resp.headers.get("Content-Length")
        expected = int(length) if length is not None else None
        got = 0
        with open(part, mode) as fh:
            while True:
                block = resp.read(CHUNK)
                if not block:
                    break
                fh.write(block)
                got += len(block)
        if expected is not None and got != expected:
            raise OSError(f"connection closed after {got} of {expected} bytes")


def _range_start(content_range: str | None) -> int | None:
    # "bytes 100-999/1000"
    try:
        return int(content_range.split()[1].split("-")[0])
    except (AttributeError, IndexError, ValueError):
        return None


def fetch(entry: Entry, root: Path, url: str | None = None, opts: FetchOptions = FetchOptions(),
          log=print, gdown=None) -> Path:
    """Make `root/entry.path` an intact copy of the entry, trying each source in turn; returns its path.

    Raises FetchError naming the file, every URL tried with why it failed, and what to do instead."""
    dest = root / entry.path
    if dest.is_file():
        try:
            write_record(dest, _check_whole(entry, dest))
            log(f"{entry.key}: {dest} already present and checked")
            return dest
        except FetchError as exc:
            log(f"{entry.key}: replacing the existing file ({exc})")
    sources = entry.candidates(url)
    if not sources:
        where = f" (upstream: {entry.page})" if entry.page else ""
        raise FetchError(f"{entry.key}: the manifest has no source for {entry.path}{where}; pass --url {entry.key}=<url> "
                         f"or MODEL_URLS='{entry.key}=<url>', or put the file at {dest}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tried = []
    for source in sources:
        try:
            if source.kind == "http":
                return _fetch_http(entry, dest, source.url, opts, log)
            return _fetch_gdrive(entry, dest, source, log, gdown)
        except FetchError as exc:
            tried.append(f"{source.url} ({source.role}): {str(exc).removeprefix(entry.key + ': ')}")
            log(f"{entry.key}: {source.url} failed: {exc}")
    raise FetchError(failure_message(entry, dest, tried))


def failure_message(entry: Entry, dest: Path, tried: list[str]) -> str:
    """The file, every URL tried and why it failed, and the three ways round it."""
    lines = "".join(f"\n  - {t}" for t in tried)
    return (f"{entry.key}: could not fetch {entry.path}; tried {len(tried)} source(s):{lines}\n"
            f"  next: put the file at {dest} yourself (or mount a network volume holding <MODEL_ROOT>/{entry.path}, "
            f"docs/DEPLOY.md), or pass a working link: MODEL_URLS='{entry.key}=<url>' (build arg) or "
            f"--url {entry.key}=<url>")


def _fetch_http(entry: Entry, dest: Path, url: str, opts: FetchOptions, log) -> Path:
    """One source over HTTP(S): resumable `.part`, checked, sniffed, then renamed into place."""
    part = dest.with_name(dest.name + ".part")
    fresh_retry_done = False
    attempt = 0
    while True:
        attempt += 1
        try:
            _download_once(url, part, opts)
        except (OSError, urllib.error.URLError, http.client.HTTPException) as exc:  # timeouts, short bodies
            if isinstance(exc, urllib.error.HTTPError) and 400 <= exc.code < 500 and exc.code not in (408, 429):
                raise FetchError(f"{entry.key}: HTTP {exc.code} from {url}") from None
            if attempt >= opts.retries:
                raise FetchError(f"{entry.key}: gave up after {attempt} attempts: {exc}") from None
            delay = opts.backoff_s * 2 ** (attempt - 1)
            log(f"{entry.key}: attempt {attempt} failed ({exc}); resuming in {delay:.1f} s")
            time.sleep(delay)
            continue
        size = part.stat().st_size
        if entry.size is not None and size < entry.size and attempt < opts.retries:
            log(f"{entry.key}: only {size} of {entry.size} bytes; resuming")
            continue
        try:
            _refuse_non_weights(entry, part)
            digest = _check_whole(entry, part)
        except FetchError:
            # A resumed part can hold bytes of an older upload; one clean download decides.
            part.unlink(missing_ok=True)
            if fresh_retry_done or attempt >= opts.retries:
                raise
            fresh_retry_done = True
            log(f"{entry.key}: verification failed; downloading again from the start")
            continue
        return _keep(entry, part, dest, digest, log)


def _keep(entry: Entry, part: Path, dest: Path, digest: str, log) -> Path:
    os.replace(part, dest)
    write_record(dest, digest)
    log(f"{entry.key}: {dest} ({dest.stat().st_size} bytes, sha256 {digest[:12]}…)")
    return dest


def _sniffer():
    """`sniff_checkpoint` from the worker's runtime/loading.py: imported in a checkout, loaded by path in the
    image (the Dockerfiles copy it next to this script); None when neither is there."""
    try:
        from avatar_engine.runtime.loading import sniff_checkpoint
        return sniff_checkpoint
    except ImportError:
        pass
    here = Path(__file__).resolve().parent
    for candidate in (here / "loading.py", here.parent / "avatar_engine" / "runtime" / "loading.py"):
        if candidate.is_file():
            spec = importlib.util.spec_from_file_location("_avatar_loading", candidate)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            return module.sniff_checkpoint
    return None


def _refuse_non_weights(entry: Entry, path: Path) -> None:
    """An HTML page (sign-in, quota, 'not found'), an empty body or a cut-short archive is not the file."""
    sniff = _sniffer()
    if sniff is None:
        return
    kind = sniff(path, entry.size)
    if kind.kind in ("html", "empty", "truncated", "missing"):
        raise FetchError(f"{entry.key}: the download is {kind.detail}")


def _drive_id(url: str) -> str:
    found = re.search(r"/d/([\w-]{10,})|[?&]id=([\w-]{10,})", url)
    if not found:
        raise FetchError(f"no Google Drive file id in {url}")
    return found.group(1) or found.group(2)


def _fetch_gdrive(entry: Entry, dest: Path, source: Source, log, gdown=None) -> Path:
    """A Google Drive file (or a file found by name in a Drive folder) through gdown, builder-only."""
    if gdown is None:
        try:
            import gdown
        except ImportError:
            raise FetchError(f"{entry.key}: Google Drive needs the gdown package (pip install gdown)") from None
    if source.kind == "gdrive_folder":
        listing = gdown.download_folder(url=source.url, skip_download=True, quiet=True) or []
        matches = [f for f in listing if Path(f.path).name == source.file]
        if not matches:
            names = ", ".join(sorted(Path(f.path).name for f in listing)[:8]) or "nothing (folder gone or private)"
            raise FetchError(f"{entry.key}: no {source.file} in the Drive folder; it lists {names}")
        file_id = matches[0].id
    else:
        file_id = _drive_id(source.url)
    part = dest.with_name(dest.name + ".part")
    try:
        out = gdown.download(id=file_id, output=str(part), quiet=True, resume=True)
    except Exception as exc:  # noqa: BLE001 - gdown raises its own types for quota, permission, HTML pages
        raise FetchError(f"{entry.key}: gdown failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}") from None
    if out is None or not part.is_file():
        raise FetchError(f"{entry.key}: gdown returned no file for Drive id {file_id}")
    try:
        _refuse_non_weights(entry, part)
        digest = _check_whole(entry, part)
    except FetchError:
        part.unlink(missing_ok=True)
        raise
    return _keep(entry, part, dest, digest, log)


def parse_urls(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, url = pair.partition("=")
        if not sep or not key or not url:
            raise FetchError(f"--url wants key=url, got {pair!r}")
        out[key] = url
    return out


def fetch_with_fallbacks(manifest: dict, entry: Entry, root: Path, urls: dict[str, str], opts: FetchOptions,
                         log=print) -> str | None:
    """Fetch `entry`, else the first of its `fallback_files` that fetches; the error text when none does."""
    try:
        fetch(entry, root, urls.get(entry.key), opts, log)
        return None
    except FetchError as exc:
        errors = [str(exc)]
    for key in entry.fallback_files:
        log(f"{entry.key}: trying {key} instead (the worker accepts either)")
        try:
            fetch(entry_from(manifest, key), root, urls.get(key), opts, log)
            return None
        except FetchError as exc:
            errors.append(str(exc))
    return "\n".join(errors)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--image", help="bake every file this image needs (see the manifest's images)")
    ap.add_argument("--only", action="append", default=[], help="fetch only this manifest entry (repeatable)")
    ap.add_argument("--root", type=Path, default=Path(os.environ.get("MODEL_ROOT", "/models")))
    ap.add_argument("--manifest", type=Path, default=DEFAULT_MANIFEST)
    ap.add_argument("--url", action="append", default=[], help="key=url: override an entry's URL (repeatable)")
    ap.add_argument("--retries", type=int, default=5)
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds without data before an attempt fails")
    ap.add_argument("--list", action="store_true", help="print the selected entries and exit")
    args = ap.parse_args(argv)
    try:
        if args.image is None and not args.only:
            raise FetchError("name an --image or one or more --only entries")
        manifest = load_manifest(args.manifest)
        entries = entries_for(manifest, args.image, args.only)
        urls = parse_urls(shlex.split(os.environ.get("MODEL_URLS", "")) + args.url)
        if args.list:
            for e in entries:
                where = [urls[e.key]] if e.key in urls else [f"{c.kind}:{c.url}" for c in e.candidates()]
                print(f"{e.key}\t{e.path}\t{' '.join(where) or '-'}")
            return 0
        opts = FetchOptions(retries=args.retries, timeout_s=args.timeout)
        failures = []
        for entry in entries:
            error = fetch_with_fallbacks(manifest, entry, args.root, urls, opts)
            if error:
                failures.append(error)
                print(f"ERROR {error}", file=sys.stderr)
    except FetchError as exc:
        print(f"ERROR {exc}", file=sys.stderr)
        return 2
    if failures:
        print(f"{len(failures)} of {len(entries)} checkpoints failed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
