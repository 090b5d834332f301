"""Resumable, checksum-verified downloads with the standard library.

A file is written to ``DEST.part``, resumed with an HTTP Range request when a
``.part`` is already there, checked against the expected size and sha256, and
only then moved to ``DEST`` with :func:`os.replace`, so ``DEST`` either does
not exist or is complete. When nothing says how long the file is (no
Content-Length, no size or sha256 in the registry), it is only finalised after
a cleanly terminated chunked transfer of a file whose format looks complete.
"""

from __future__ import annotations

import hashlib
import http.client
import http.cookiejar
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Callable, List, NamedTuple, Optional

from ..errors import DownloadError
from ..formats.sniff import looks_complete
from . import registry as _registry

# progress(filename, bytes on disk, total bytes or None), after every chunk.
Progress = Callable[[str, int, Optional[int]], None]

__all__ = ["download", "download_model", "sha256_file", "verify_model", "check_file", "FileCheck"]

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


@dataclass(frozen=True)
class _Limits:
    """How long a download may wait for the next byte, and how long it may take in all."""

    stall: float                  # Seconds without a byte before giving up.
    deadline: Optional[float]     # Seconds allowed in all, for messages; None = no limit.
    ends_at: Optional[float]      # time.monotonic() at which the deadline passes.

    @classmethod
    def start(cls, stall: float, deadline: Optional[float]) -> _Limits:
        return cls(stall, deadline, None if deadline is None else time.monotonic() + deadline)

    def passed(self) -> bool:
        return self.ends_at is not None and time.monotonic() >= self.ends_at

    def wait(self) -> float:
        """Socket timeout for the next wait: the stall timeout, cut short by the deadline."""
        if self.ends_at is None:
            return self.stall
        return max(min(self.stall, self.ends_at - time.monotonic()), 0.01)

    def why(self) -> str:
        """Why a wait timed out, for messages."""
        if self.passed():
            return f"passed the {self.deadline:g} s deadline"
        return f"no data for {self.stall:g} s"


def download(url: str, dest, sha256: Optional[str] = None, size: Optional[int] = None,
             progress: Optional[Progress] = None, timeout: float = 30,
             deadline: Optional[float] = None) -> Path:
    """Fetch ``url`` into ``dest``; returns ``dest`` as a Path.

    ``timeout`` is the stall timeout: the transfer stops when no byte arrives for
    that many seconds. ``deadline`` bounds the whole call, in seconds (None: no
    limit). Resumes from ``dest.part`` if present.

    Raises DownloadError on network failure, a stall or the deadline (the
    ``.part`` is kept, so running again resumes), when the server keeps stopping
    at the same byte (running again would not help), on a size or sha256
    mismatch (the ``.part`` is deleted), when nothing can tell a complete file from
    a cut-off one (the ``.part`` is kept), or when the server answers with an HTML
    page instead of the file.
    """
    return _download(url, Path(dest), sha256, size, progress, _Limits.start(timeout, deadline))


def _download(url: str, dest: Path, sha256, size, progress, limits: _Limits) -> Path:
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    cookies = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(cookies))
    for _ in range(MAX_CONFIRM_HOPS + 1):
        next_url = _fetch(opener, cookies, url, part, dest, sha256, size, progress, limits)
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


def _fetch(opener, cookies, url, part: Path, dest: Path, sha256, size, progress,
           limits: _Limits) -> Optional[str]:
    """Append the rest of ``url`` to ``part``. Returns None when done, or the URL to
    follow when the server sent a confirmation page instead of the file."""
    offset = part.stat().st_size if part.exists() else 0
    if size is not None and offset > size:
        part.unlink()
        offset = 0
    if size is not None and offset == size and offset > 0:
        return None  # Complete from an earlier run; _verify decides if it is good.
    # What an earlier run left, to tell a resumed run that gets no further.
    before = offset if part.exists() else None
    measured = size is not None or bool(sha256)

    headers = {"User-Agent": USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    manual = f"download the file manually to {dest}"
    if limits.passed():
        raise DownloadError(_stopped(url, dest, None, offset, size, limits.why()))
    try:
        resp = opener.open(urllib.request.Request(url, headers=headers), timeout=limits.wait())
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:
            # Nothing past what we have. A .part kept from a refused, unmeasured
            # transfer must not become final here unless the server confirms its length.
            if measured or _range_total(exc.headers.get("Content-Range")) == offset:
                return None
            lead = f"{_host(url)} did not say how long {dest.name} is"
            raise DownloadError(_unmeasured(lead, dest, part)) from None
        if 300 <= exc.code < 400:
            raise DownloadError(_redirect_failure(url, dest, exc, manual)) from None
        raise DownloadError(f"{_host(url)} answered HTTP {exc.code} {_one_line(exc.reason)} for {url}; "
                            f"try again later or {manual}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        if limits.passed():
            raise DownloadError(_stopped(url, dest, None, offset, size, limits.why())) from None
        reason = getattr(exc, "reason", None) or exc
        raise DownloadError(f"could not reach {_host(url)}: {_one_line(reason)}; "
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
        # Read before the body: http.client may forget it once the body is done.
        chunked = bool(getattr(resp, "chunked", False)) or \
            "chunked" in (resp.headers.get("Transfer-Encoding") or "").lower()
        total = start + length if length is not None else size
        got = _receive(resp, part, start, dest.name, total, progress, limits,
                       lambda got, why: _stopped(url, dest, before, got, total, why))
    # Without a Content-Length, only the registry's size tells a closed
    # connection from the end of the file.
    expected = start + length if length is not None else size
    if expected is not None and got < expected:
        raise DownloadError(_stopped(url, dest, before, got, total, "connection closed"))
    if length is None and not measured:
        _accept_unmeasured(url, dest, part, chunked)
    return None


def _receive(resp, part: Path, start: int, name: str, total, progress, limits: _Limits,
             stopped: Callable[[int, str], str]) -> int:
    """Write the body of ``resp`` into ``part`` from byte ``start``; returns the bytes on disk."""
    got = start
    with open(part, "r+b" if start else "wb") as f:
        f.seek(start)
        f.truncate()
        try:
            while True:
                if limits.passed():
                    raise DownloadError(stopped(got, limits.why()))
                _set_read_timeout(resp, limits.wait())
                # read1 returns as soon as any bytes arrive, so a slow trickle
                # cannot hold one call past the deadline.
                chunk = resp.read1(CHUNK)
                if not chunk:
                    break
                f.write(chunk)
                got += len(chunk)
                if progress is not None:
                    progress(name, got, total)
        except TimeoutError:
            raise DownloadError(stopped(got, limits.why())) from None
        except http.client.IncompleteRead:
            raise DownloadError(stopped(got, "connection closed mid-chunk")) from None
        except (OSError, http.client.HTTPException) as exc:
            raise DownloadError(stopped(got, _one_line(exc))) from None
    return got


def _set_read_timeout(resp, seconds: float) -> None:
    # urllib fixes the socket timeout when it connects; reaching the socket is the
    # only way to shorten the next wait to what is left of the deadline. Where it
    # cannot be reached, the deadline is still checked between reads.
    sock = getattr(getattr(resp.fp, "raw", None), "_sock", None)
    if sock is not None:
        sock.settimeout(seconds)


def _accept_unmeasured(url, dest: Path, part: Path, chunked: bool) -> None:
    """Allow a body whose length nobody gave only if it ended with the chunked
    terminator (http.client raises IncompleteRead on a cut chunked body) and its
    own format says it is whole; otherwise keep the .part and refuse."""
    if part.stat().st_size == 0:
        return  # _verify reports an empty answer as such.
    if chunked and looks_complete(part):
        return
    host = _host(url)
    lead = (f"{host} sent {dest.name} in chunks with no total length and it does not look complete"
            if chunked else f"{host} did not say how long {dest.name} is")
    raise DownloadError(_unmeasured(lead, dest, part))


def _unmeasured(lead: str, dest: Path, part: Path) -> str:
    return (f"{lead} and the registry has no size or sha256, so a cut-off transfer cannot be told "
            f"from a complete one; kept {part}, add the file's size or sha256 to the model's "
            f"registry entry and run again, or download it manually to {dest}")


def _stopped(url, dest: Path, before: Optional[int], got: int, total, why) -> str:
    """One line for a transfer that stopped early; ``before`` is what the .part had when
    this run started (None: there was none)."""
    of = f" of {total}" if total else ""
    if before is not None and got <= before:
        # Resuming cannot help: the server ignored the Range request and stopped at the
        # same place again, or honoured it and sent nothing more.
        return (f"{_host(url)} keeps stopping at {got}{of} bytes of {dest.name} ({why}; an earlier run "
                f"already had {before}), so running again will not finish it; try again later or "
                f"download it from a mirror to {dest}")
    return (f"download of {dest.name} from {_host(url)} stopped after {got}{of} bytes ({why}); "
            f"run the same command again to resume")


def _redirect_failure(url, dest: Path, exc: urllib.error.HTTPError, manual: str) -> str:
    # urllib gives up on loops and long chains with an HTTPError whose message
    # starts with this class attribute (and spans several lines).
    if str(exc.msg).startswith(urllib.request.HTTPRedirectHandler.inf_msg):
        return (f"{_host(url)} redirected too many times for {dest.name}; the link loops or is broken, "
                f"try again later or {manual}")
    return (f"{_host(url)} answered HTTP {exc.code} for {dest.name} with a redirect that cannot be "
            f"followed ({_one_line(exc.msg)}); try again later or {manual}")


def _one_line(reason) -> str:
    lines = str(reason).strip().splitlines()
    return lines[0] if lines else type(reason).__name__


def _range_start(content_range: Optional[str]) -> Optional[int]:
    m = re.match(r"\s*bytes\s+(\d+)-\d+/(\d+|\*)", content_range or "")
    return int(m.group(1)) if m else None


def _range_total(content_range: Optional[str]) -> Optional[int]:
    """The full length from a 416's ``Content-Range: bytes */LENGTH``, or None."""
    m = re.match(r"\s*bytes\s+\*/(\d+)", content_range or "")
    return int(m.group(1)) if m else None


def _verify(part: Path, dest: Path, sha256: Optional[str], size: Optional[int]) -> None:
    got = part.stat().st_size
    if got == 0:
        part.unlink()
        raise DownloadError(f"the server sent an empty file for {dest.name}; try again later or "
                            f"download it manually to {dest}")
    if size is not None and got < size:
        # _fetch reports cut transfers itself; here the server says the file ends here.
        raise DownloadError(f"{dest.name} is incomplete ({got} of {size} bytes) and the server has "
                            f"nothing more; try again later or download it from a mirror to {dest}")
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
                   registry=None, deadline: Optional[float] = None) -> List[Path]:
    """Download every file of registered model ``name``; returns their local paths.

    Files already present and verified are skipped (``force`` fetches them
    again). Each file's sources are tried in order: its URL, then its mirrors.
    ``timeout`` is the stall timeout of each transfer; ``deadline`` bounds the
    whole model, all files and mirrors together, in seconds (None: no limit).
    """
    entry = _registry.get_entry(name, registry)
    if entry.bundled:
        paths = [_registry.local_path(entry, f.filename) for f in entry.files]
        missing = [p for p in paths if not p.is_file()]
        if missing:
            raise DownloadError(f"the bundled model {entry.name!r} is missing from the installed "
                                f"package ({missing[0]}); reinstall pulse-sr")
        return paths

    limits = _Limits.start(timeout, deadline)
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
        out.append(_download_first(urls, dest, f, progress, limits))
    return out


def _download_first(urls: List[str], dest: Path, f: _registry.ModelFile, progress,
                    limits: _Limits) -> Path:
    """Try each source of ``f`` in turn; the first that works wins."""
    errors = []
    for url in urls:
        if errors and limits.passed():
            break  # Out of time: a mirror would fail the same way.
        try:
            return _download(url, dest, f.sha256, f.size, progress, limits)
        except DownloadError as exc:
            errors.append(exc)
    if len(errors) == 1:
        raise errors[0]
    tried = urls[:len(errors)]
    which = f"all {len(urls)}" if len(tried) == len(urls) else f"{len(tried)} of {len(urls)}"
    raise DownloadError(f"{errors[-1]} ({which} sources failed: {', '.join(_host(u) for u in tried)})")


class FileCheck(NamedTuple):
    """What :func:`verify_model` found for one file."""

    filename: str     # The file's name in the registry entry.
    status: str       # One of CHECK_STATUSES.
    message: str      # One line for the CLI: "ok", "missing", "size mismatch: expected A, got B", ...

    @property
    def ok(self) -> bool:
        """Usable: verified, or unverifiable but complete by its own format."""
        return self.status in ("ok", "unverifiable-complete")


CHECK_STATUSES = ("ok", "missing", "size-mismatch", "sha256-mismatch",
                  "unverifiable-complete", "unverifiable-incomplete")


def verify_model(name: str, registry=None) -> List[FileCheck]:
    """Re-check every file of registered model ``name`` on disk, in entry order.

    Checks presence, then the size and sha256 where the registry has them, and
    only where it has neither, whether the file's format says it is complete.
    Hashes every file, so it takes a while for large models. Raises
    UnknownModelError for an unknown name.
    """
    entry = _registry.get_entry(name, registry)
    return [check_file(_registry.local_path(entry, f.filename), f) for f in entry.files]


def check_file(path: Path, expected: _registry.ModelFile) -> FileCheck:
    """Check one file on disk against its registry record."""
    name = expected.filename
    if not path.is_file():
        partial = path.with_name(path.name + ".part").exists()
        return FileCheck(name, "missing", "missing (a partial download is there)" if partial else "missing")
    got = path.stat().st_size
    if expected.size is not None and got != expected.size:
        return FileCheck(name, "size-mismatch", f"size mismatch: expected {expected.size}, got {got}")
    if expected.sha256:
        if sha256_file(path) != expected.sha256.lower():
            return FileCheck(name, "sha256-mismatch", "sha256 mismatch")
        return FileCheck(name, "ok", "ok")
    if expected.size is not None:
        return FileCheck(name, "ok", "ok (size only; no published sha256)")
    if looks_complete(path):
        return FileCheck(name, "unverifiable-complete", "unverifiable: no published size or sha256; looks complete")
    return FileCheck(name, "unverifiable-incomplete", "unverifiable: no published size or sha256; looks incomplete")
