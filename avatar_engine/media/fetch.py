"""Getting input bytes from a caller: http(s) URLs or base64, with caps, timeouts and an SSRF guard.

The guard resolves the host once, refuses non-public addresses and then connects to exactly the
address it checked (no second DNS lookup an attacker could rebind), re-checking every redirect hop.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
import socket
import time
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import urllib3

from ..errors import AvatarError
from ..serving.deadline import Deadline
from ..settings import Settings

_DATA_URI = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[^,;]*)*?),", re.I)
_USER_AGENT = "avatar-renderer/0.1 (+input fetch)"
_CHUNK = 64 * 1024


@dataclass(frozen=True)
class Fetched:
    """Raw bytes of one input and where they came from (never the base64 text itself)."""

    data: bytes
    origin: str


def decode_base64(text: str, *, field: str, max_bytes: int) -> bytes:
    """Decode plain or `data:` URI base64, refusing oversized payloads before decoding them."""
    if not isinstance(text, str):
        raise AvatarError("invalid_input", f"{field} must be a base64 string")
    body = text.strip()
    if body[:5].lower() == "data:":
        match = _DATA_URI.match(body)
        if not match or ";base64" not in (match.group("params") or "").lower():
            raise AvatarError("invalid_input", f"{field} is a data: URI but not a ';base64,' one")
        body = body[match.end():]
    body = re.sub(r"\s+", "", body)
    decoded = len(body.rstrip("=")) * 3 // 4  # exact for valid base64, padded or not: a payload at the cap passes
    if decoded > max_bytes:
        raise AvatarError("input_too_large", f"{field} decodes to {decoded} bytes, over the {max_bytes}-byte limit")
    body = body.replace("-", "+").replace("_", "/")  # accept the URL-safe alphabet too
    body += "=" * (-len(body) % 4)
    try:
        data = base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        raise AvatarError("invalid_input", f"{field} is not valid base64") from None
    if not data:
        raise AvatarError("invalid_input", f"{field} is empty")
    return data


_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
_SITE_LOCAL = ipaddress.ip_network("fec0::/10")


def _embedded_ipv4(addr):
    """The IPv4 address an IPv6 address carries (mapped, NAT64, 6to4, IPv4-compatible), if any."""
    if addr.version != 6:
        return None
    if addr.ipv4_mapped:
        return addr.ipv4_mapped
    if addr.sixtofour:
        return addr.sixtofour
    if addr in _NAT64 or addr in _IPV4_COMPATIBLE:
        return ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
    return None


def _check_address(ip: str, host: str, settings: Settings) -> None:
    addr = ipaddress.ip_address(ip)
    if addr.version == 6 and addr in _SITE_LOCAL:
        raise AvatarError("fetch_failed", f"refusing to fetch from {host}: it resolves to a non-public address")
    addr = _embedded_ipv4(addr) or addr
    if addr.is_global and not addr.is_multicast:
        return
    if settings.allow_private_urls and not addr.is_link_local and not addr.is_multicast and not addr.is_unspecified:
        return  # tests serve from loopback; the metadata range stays closed even then
    raise AvatarError("fetch_failed", f"refusing to fetch from {host}: it resolves to a non-public address")


def _resolve(host: str, port: int, settings: Settings) -> str:
    """getaddrinfo has no timeout of its own: it runs in a helper thread we stop waiting for after
    FETCH_CONNECT_TIMEOUT_S (the job's deadline bounds it too, through the fetch step)."""
    try:
        infos = Deadline.unbounded().call(lambda: socket.getaddrinfo(host, port, type=socket.SOCK_STREAM),
                                          stage="dns", limit_s=settings.fetch_connect_timeout_s)
    except TimeoutError:
        raise AvatarError("fetch_failed", f"resolving host {host!r} took longer than "
                                          f"{settings.fetch_connect_timeout_s:g} s") from None
    except (socket.gaierror, UnicodeError):
        raise AvatarError("fetch_failed", f"cannot resolve host {host!r}") from None
    addresses = [info[4][0] for info in infos]
    for ip in addresses:  # every answer must be allowed, not just the first
        _check_address(ip, host, settings)
    return addresses[0]


def _pool(scheme: str, host: str, ip: str, port: int, settings: Settings):
    timeout = urllib3.Timeout(connect=settings.fetch_connect_timeout_s, read=settings.fetch_read_timeout_s)
    if scheme == "https":
        return urllib3.HTTPSConnectionPool(
            ip, port, timeout=timeout, retries=False, server_hostname=host, assert_hostname=host, maxsize=1
        )
    return urllib3.HTTPConnectionPool(ip, port, timeout=timeout, retries=False, maxsize=1)


def fetch_url(url: str, *, field: str, max_bytes: int, settings: Settings) -> Fetched:
    """GET `url` (http/https only) following at most `fetch_max_redirects` re-checked redirects."""
    deadline = time.monotonic() + settings.fetch_total_timeout_s
    current = url
    for hop in range(settings.fetch_max_redirects + 1):
        parts = urlsplit(current)
        scheme = (parts.scheme or "").lower()
        if scheme not in ("http", "https"):
            if hop:
                raise AvatarError("fetch_failed", f"{field}: the server redirected to a non-http(s) URL ({scheme or 'none'}:)")
            raise AvatarError("invalid_input", f"{field}: only http and https URLs are accepted, not {scheme or 'none'}:")
        if not parts.hostname:
            raise AvatarError("invalid_input", f"{field}: URL has no host")
        if parts.username or parts.password:
            raise AvatarError("invalid_input", f"{field}: URLs with credentials are not accepted")
        try:
            port = parts.port if parts.port is not None else (443 if scheme == "https" else 80)
        except ValueError:
            port = 0
        if not 0 < port < 65536:  # ':0' must not mean the default port
            raise AvatarError("invalid_input" if not hop else "fetch_failed", f"{field}: URL has an invalid port")
        ip = _resolve(parts.hostname, port, settings)
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        host_header = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
        pool = _pool(scheme, parts.hostname, ip, port, settings)
        try:
            resp = pool.urlopen(
                "GET", path, headers={"Host": host_header, "User-Agent": _USER_AGENT, "Accept-Encoding": "identity"},
                redirect=False, preload_content=False, retries=False,
            )
        except urllib3.exceptions.HTTPError as exc:
            pool.close()
            raise AvatarError("fetch_failed", f"{field}: could not download from {parts.hostname}: {type(exc).__name__}") from None
        try:
            if resp.status in (301, 302, 303, 307, 308):
                location = resp.headers.get("Location")
                if not location:
                    raise AvatarError("fetch_failed", f"{field}: redirect without a Location header")
                current = urljoin(current, location)
                continue
            if resp.status != 200:
                raise AvatarError("fetch_failed", f"{field}: server answered HTTP {resp.status}")
            declared = resp.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > max_bytes:
                raise AvatarError("input_too_large", f"{field} is {declared} bytes, over the {max_bytes}-byte limit")
            return Fetched(_read_capped(resp, field, max_bytes, deadline), origin=f"{scheme}://{parts.hostname}")
        finally:
            resp.release_conn()
            resp.close()
            pool.close()
    raise AvatarError("fetch_failed", f"{field}: more than {settings.fetch_max_redirects} redirects")


def _read_capped(resp, field: str, max_bytes: int, deadline: float) -> bytes:
    chunks, total = [], 0
    try:
        while True:
            chunk = resp.read1(_CHUNK)  # returns what has arrived: a slow drip still meets the deadline
            if not chunk:
                break
            total += len(chunk)
            if total > max_bytes:
                raise AvatarError("input_too_large", f"{field} is larger than the {max_bytes}-byte limit")
            if time.monotonic() > deadline:
                raise AvatarError("fetch_failed", f"{field}: download took longer than the time limit")
            chunks.append(chunk)
    except urllib3.exceptions.HTTPError as exc:  # read timeout, truncated body (short Content-Length)
        raise AvatarError("fetch_failed", f"{field}: download broke off ({type(exc).__name__})") from None
    if not total:
        raise AvatarError("fetch_failed", f"{field}: the server sent an empty body")
    return b"".join(chunks)


# Per input kind: its byte cap setting and the request fields' prefix (for error messages).
_INPUT_KINDS = {"image": ("max_image_bytes", "image"), "audio": ("max_audio_bytes", "audio"),
                "video": ("max_video_bytes", "reference_video")}


def load_input(url: str | None, b64: str | None, *, kind: str, settings: Settings) -> Fetched:
    """The bytes of the `image`, `audio` or `video` (FOMM reference video) input, from whichever source
    the request gave."""
    cap, prefix = _INPUT_KINDS[kind]
    max_bytes = getattr(settings, cap)
    if b64 is not None:
        return Fetched(decode_base64(b64, field=f"{prefix}_b64", max_bytes=max_bytes), origin="base64")
    assert url is not None
    return fetch_url(url, field=f"{prefix}_url", max_bytes=max_bytes, settings=settings)
