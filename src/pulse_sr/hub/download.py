"""Resumable, checksum-verified downloads with the standard library.

A file is written to ``DEST.part``, resumed with an HTTP Range request when a
``.part`` is already there, checked against the expected size and sha256, and
only then moved to ``DEST`` with :func:`os.replace`, so ``DEST`` either does
not exist or is complete.
"""

from __future__ import annotations

import hashlib
import http.client
import http.cookiejar
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from html.parser import HTMLParser
from pathlib import Path
from typing import Callable, List, Optional

# progress(filename, bytes on disk, total bytes or None), after every chunk.
Progress = Callable[[str, int, Optional[int]], None]

from . import registry as _registry
from ..errors import DownloadError

__all__ = ["download", "download_model", "sha256_file"]

CHUNK = 1 << 20
USER_AGENT = "pulse-sr (+https://pypi.org/project/pulse-sr/)"
# Interstitial pages (Google Drive's "can't scan this file for viruses") are
# followed at most this many times before giving up.
MAX_CONFIRM_HOPS = 3
MAX_HTML_BYTES = 1 << 20


def sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def download(url: str, dest, sha256: Optional[str] = None, size: Optional[int] = None,
             progress: Optional[Progress] = None, timeout: float = 30) -> Path:
    """Fetch ``url`` into ``dest``; returns ``dest`` as a Path.

    Resumes from ``dest.part`` if present. Raises DownloadError on network
    failure (the ``.part`` is kept, so running again resumes), on a size or
    sha256 mismatch (the ``.part`` is deleted) or when the server answers with an
    HTML page instead of the file.
    """
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    cookies = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(cookies))
    for _ in range(MAX_CONFIRM_HOPS + 1):
        next_url = _fetch(opener, cookies, url, part, dest, size, progress, timeout)
        if next_url is None:
            break
        url = next_url
    else:
        raise DownloadError(f"{_host(url)} kept answering with confirmation pages for {dest.name}; "
                            f"download it in a browser and save it as {dest}")
    _verify(part, dest, sha256, size)
    os.replace(part, dest)
    return dest


def _host(url: str) -> str:
    return urllib.parse.urlsplit(url).netloc or url


def _fetch(opener, cookies, url, part: Path, dest: Path, size, progress, timeout) -> Optional[str]:
    """Append the rest of ``url`` to ``part``. Returns None when done, or the URL to
    follow when the server sent a confirmation page instead of the file."""
    offset = part.stat().st_size if part.exists() else 0
    if size is not None and offset > size:
        part.unlink()
        offset = 0
    if size is not None and offset == size and offset > 0:
        return None  # Complete from an earlier run; _verify decides if it is good.

    headers = {"User-Agent": USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    manual = f"download the file manually to {dest}"
    try:
        resp = opener.open(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:
            return None  # Nothing past what we have; _verify decides.
        raise DownloadError(f"{_host(url)} answered HTTP {exc.code} {exc.reason} for {url}; "
                            f"try again later or {manual}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise DownloadError(f"could not reach {_host(url)}: {reason}; "
                            f"check your connection or {manual}") from None

    with resp:
        if resp.headers.get_content_type() == "text/html" and dest.suffix not in (".html", ".htm"):
            page = resp.read(MAX_HTML_BYTES).decode("utf-8", "replace")
            confirm = _confirm_url(resp.geturl(), page, cookies)
            if confirm is not None:
                return confirm
            raise DownloadError(f"{_host(url)} sent a web page instead of {dest.name} (quota exceeded "
                                f"or sign-in required?); open {url} in a browser and save it as {dest}")

        start = 0
        if resp.status == 206:
            start = _range_start(resp.headers.get("Content-Range"))
            if start is None or start > offset:
                part.unlink(missing_ok=True)
                raise DownloadError(f"{_host(url)} sent an unexpected byte range for {dest.name}; "
                                    f"the partial file was deleted, run again to restart")
        # A 200 answer to a Range request means the server ignored it: start over.
        length = resp.headers.get("Content-Length")
        length = int(length) if length and length.isdigit() else None
        total = start + length if length is not None else size
        received = 0
        with open(part, "r+b" if start else "wb") as f:
            f.seek(start)
            f.truncate()
            try:
                while True:
                    chunk = resp.read(CHUNK)
                    if not chunk:
                        break
                    f.write(chunk)
                    received += len(chunk)
                    if progress is not None:
                        progress(dest.name, start + received, total)
            except (OSError, http.client.HTTPException) as exc:
                raise DownloadError(_interrupted(url, dest, start + received, total, exc)) from None
        if length is not None and received < length:
            raise DownloadError(_interrupted(url, dest, start + received, total, "connection closed"))
    return None


def _interrupted(url, dest, got, total, why) -> str:
    of = f" of {total}" if total else ""
    return (f"download of {dest.name} from {_host(url)} stopped after {got}{of} bytes ({why}); "
            f"run the same command again to resume")


def _range_start(content_range: Optional[str]) -> Optional[int]:
    m = re.match(r"\s*bytes\s+(\d+)-\d+/(\d+|\*)", content_range or "")
    return int(m.group(1)) if m else None


def _verify(part: Path, dest: Path, sha256: Optional[str], size: Optional[int]) -> None:
    got = part.stat().st_size
    if got == 0:
        part.unlink()
        raise DownloadError(f"the server sent an empty file for {dest.name}; try again later or "
                            f"download it manually to {dest}")
    if size is not None and got < size:
        raise DownloadError(f"{dest.name} is incomplete ({got} of {size} bytes); "
                            f"run the same command again to resume")
    if size is not None and got > size:
        part.unlink()
        raise DownloadError(f"{dest.name}: expected {size} bytes, got {got}; the file was deleted, "
                            f"try again or check the source")
    if sha256:
        actual = sha256_file(part)
        if actual != sha256.lower():
            part.unlink()
            raise DownloadError(f"{dest.name} is corrupt: sha256 expected {sha256.lower()}, got {actual}; "
                                f"the file was deleted, try again or download it manually to {dest}")


class _FormParser(HTMLParser):
    """Collects each form's action and its hidden inputs."""

    def __init__(self):
        super().__init__()
        self.forms: List[dict] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "form":
            self.forms.append({"action": attrs.get("action") or "", "fields": {}})
        elif tag == "input" and self.forms and attrs.get("name") and attrs.get("type") == "hidden":
            self.forms[-1]["fields"][attrs["name"]] = attrs.get("value") or ""


def _confirm_url(url: str, page: str, cookies) -> Optional[str]:
    """Best-effort URL that skips Google Drive's large-file warning page, or None.

    Drive has used three variants over the years: a ``download_warning`` cookie
    whose value goes into ``confirm=``, a link carrying ``confirm=`` in the page,
    and (currently) a GET form with hidden ``id``/``confirm``/``uuid`` inputs.
    """
    parts = urllib.parse.urlsplit(url)
    query = dict(urllib.parse.parse_qsl(parts.query))
    if "confirm" in query:
        return None  # Already confirmed once; another page means a real refusal.

    parser = _FormParser()
    try:
        parser.feed(page)
    except Exception:  # Malformed HTML: fall through to the other variants.
        parser.forms = []
    for form in parser.forms:
        if "confirm" in form["fields"]:
            action = urllib.parse.urljoin(url, form["action"] or url)
            return action.split("?")[0] + "?" + urllib.parse.urlencode(form["fields"])

    token = next((c.value for c in cookies if c.name.startswith("download_warning")), None)
    if token is None:
        m = re.search(r"confirm=([0-9A-Za-z_-]+)", page)
        token = m.group(1) if m else None
    if token is None:
        return None
    query["confirm"] = token
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


def _is_good(path: Path, sha256: Optional[str], size: Optional[int]) -> bool:
    if not path.is_file() or (size is not None and path.stat().st_size != size):
        return False
    return not sha256 or sha256_file(path) == sha256.lower()


def download_model(name: str, force: bool = False, progress: Optional[Progress] = None, timeout: float = 30,
                   registry=None) -> List[Path]:
    """Download every file of registered model ``name``; returns their local paths.

    Files already present and verified are skipped (``force`` fetches them
    again). Each file's sources are tried in order: its URL, then its mirrors.
    """
    entry = _registry.get_entry(name, registry)
    if entry.kind == "bundled":
        paths = [_registry.local_path(entry, f.filename) for f in entry.files]
        missing = [p for p in paths if not p.is_file()]
        if missing:
            raise DownloadError(f"the bundled model {entry.name!r} is missing from the installed "
                                f"package ({missing[0]}); reinstall pulse-sr")
        return paths

    out = []
    for f in entry.files:
        dest = _registry.local_path(entry, f.filename)
        part = dest.with_name(dest.name + ".part")
        if force:
            dest.unlink(missing_ok=True)
            part.unlink(missing_ok=True)
        elif dest.exists():
            if _is_good(dest, f.sha256, f.size):
                out.append(dest)
                continue
            dest.unlink()  # Wrong size or hash: fetch it again.
        urls = entry.urls(f.filename)
        if not urls:
            raise DownloadError(f"no public URL is known for {f.filename} of {entry.name!r}; "
                                f"place the file at {dest} by hand")
        errors = []
        for url in urls:
            try:
                out.append(download(url, dest, f.sha256, f.size, progress=progress, timeout=timeout))
                break
            except DownloadError as exc:
                errors.append(exc)
        else:
            if len(errors) == 1:
                raise errors[0]
            raise DownloadError(f"{errors[-1]} (all {len(urls)} sources failed: "
                                f"{', '.join(_host(u) for u in urls)})")
    return out
