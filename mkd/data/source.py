"""Where MASSIVE 1.1 comes from: a local folder or tarball, or the official release (downloaded once into
the cache and checksum-checked); the SHA-256 checks of what is read."""

from __future__ import annotations

import http.client
import logging
import os
import tarfile
import urllib.request
from pathlib import Path
from typing import Any, Sequence

from mkd.core.atomic import atomic_path
from mkd.core.cache import cache_root
from mkd.core.errors import DataError
from mkd.core.hashing import file_sha256

log = logging.getLogger(__name__)

OFFICIAL_URL = "https://amazon-massive-nlu-dataset.s3.amazonaws.com/amazon-massive-dataset-1.1.tar.gz"
OFFICIAL_FILENAME = "amazon-massive-dataset-1.1.tar.gz"
# SHA-256 of the official tarball (40,251,390 bytes). Not computed from a download (mkd was built offline):
# it is the value that several unrelated public projects pinned after downloading the archive from
# OFFICIAL_URL (found through a code search, all agreeing). Set to None to download unverified.
OFFICIAL_SHA256: str | None = "4cba5faa11c71437928e17cb1b9b3d8b8e727e7ea363a3a9a8045e19c0491577"

FIX_SOURCE = ("set MKD_MASSIVE, or data.massive in params.yaml, to a MASSIVE 1.1 folder or tarball (or 'official' "
              "to download it, from MKD_MASSIVE_URL when set; 'auto' = MKD_MASSIVE, else ../shared/massive, else "
              "the download)")
# A copy kept beside the checkout, e.g. one shared by several clones on a machine (the `auto` source looks here
# first).
SHARED_COPY = Path("..") / "shared" / "massive"


def official_release() -> tuple[str, str | None]:
    """The URL and SHA-256 that `official` downloads: OFFICIAL_URL / OFFICIAL_SHA256 (read at call time), or a
    mirror (an institute's copy; a local server in CI) named by MKD_MASSIVE_URL with its MKD_MASSIVE_SHA256.
    A mirror must name its checksum: a re-packed archive is not the official one, and nothing unverified is read."""
    url = os.environ.get("MKD_MASSIVE_URL")
    if not url:
        return OFFICIAL_URL, OFFICIAL_SHA256
    sha = os.environ.get("MKD_MASSIVE_SHA256", "").strip().lower()
    if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
        raise DataError(f"MKD_MASSIVE_URL names a mirror of MASSIVE 1.1 ({url}); set MKD_MASSIVE_SHA256 to the "
                        f"64-hex-digit SHA-256 of that archive (the official one's is {OFFICIAL_SHA256})")
    return url, sha


def _fetch(url: str, dest: Path) -> None:
    """Copy `url` (https://, file://) into `dest`. Separate so tests can replace it."""
    with urllib.request.urlopen(url, timeout=60) as resp, open(dest, "wb") as out:  # noqa: S310 (fixed URL)
        expected, received = resp.headers.get("Content-Length"), 0
        while block := resp.read(1 << 20):
            out.write(block)
            received += len(block)
    # http.client returns a body cut short by a dropped connection as if it were whole: count the bytes.
    if expected is not None and received != int(expected):
        raise OSError(f"the connection closed after {received:,} of {int(expected):,} bytes")


_UNSET: Any = object()


def download_official(cache_dir: str | os.PathLike | None = None, url: str | None = None,
                      sha256: str | None = _UNSET) -> Path:
    """Download the official MASSIVE 1.1 tarball into the cache (once) and check its SHA-256.

    url/sha256 default to `official_release()` (OFFICIAL_URL / OFFICIAL_SHA256, or the MKD_MASSIVE_URL mirror).
    sha256=None skips the check (logged). A mismatch raises DataError and leaves no file behind.
    """
    release_url, release_sha256 = official_release()
    url = url or release_url
    expected = release_sha256 if sha256 is _UNSET else sha256
    folder = Path(cache_dir) if cache_dir is not None else cache_root()
    target = folder / OFFICIAL_FILENAME
    if target.is_file():
        if expected is None or file_sha256(target) == expected:
            return target
        log.warning("cached %s does not match the expected SHA-256; downloading it again", target)
    log.info("downloading MASSIVE 1.1 from %s to %s", url, target)
    try:
        with atomic_path(target) as tmp:
            try:
                _fetch(url, tmp)
            except (OSError, ValueError, http.client.HTTPException) as exc:  # URLError, HTTPError, timeouts are
                # OSErrors; a connection cut mid-body is IncompleteRead (an HTTPException); ValueError: bad URL
                raise DataError(f"could not download MASSIVE 1.1 from {url}: {exc}. Download it by hand and {FIX_SOURCE}") from exc
            actual = file_sha256(tmp)
            if expected is None:
                log.warning("no expected SHA-256 for %s; its content is unverified (sha256 %s)", url, actual)
            elif actual != expected:
                raise DataError(
                    f"checksum mismatch for {url}: expected sha256 {expected}, got {actual}. The download is "
                    f"corrupt or the file changed upstream; nothing was kept. Retry, or {FIX_SOURCE}"
                )
    except DataError:
        if target.exists() and expected is not None and file_sha256(target) != expected:
            target.unlink()  # the stale cached copy that did not match either
        raise
    return target


def locate_source(spec: str | os.PathLike | None = None) -> Path | None:
    """Where MASSIVE is, fetching nothing: a local folder or tarball, or None for the official release.

    env MKD_MASSIVE wins when set; else `spec`: a folder, a tarball, "official", or "auto" (../shared/massive
    beside the checkout when it is there, else the official release)."""
    env = os.environ.get("MKD_MASSIVE")
    origin = "MKD_MASSIVE" if env else "data.massive"
    if env:
        spec = env
    if spec is None or str(spec).strip() == "":
        raise DataError(f"no MASSIVE 1.1 source given; {FIX_SOURCE}")
    if str(spec) == "auto":
        return SHARED_COPY.resolve() if SHARED_COPY.is_dir() else None
    if str(spec) == "official":
        return None
    path = Path(spec).expanduser()
    if path.is_dir():
        return path.resolve()
    if path.is_file():
        if not _is_tarball(path):
            raise DataError(f"{path} ({origin}) is a file but not a tar archive; {FIX_SOURCE}")
        return path.resolve()
    raise DataError(
        f"MASSIVE 1.1 not found at {path} (from {origin}): looked for a folder of <locale>.jsonl[.gz] files "
        f"or the tarball {OFFICIAL_FILENAME}. Fix: {FIX_SOURCE}"
    )


def resolve_source(spec: str | os.PathLike | None = None) -> Path:
    """locate_source, downloading the official release (once, checksum-verified) when that is the source."""
    path = locate_source(spec)
    return download_official() if path is None else path


def _is_tarball(path: Path) -> bool:
    try:
        return tarfile.is_tarfile(path)
    except OSError:
        return False


def locale_file(folder: Path, locale: str) -> Path:
    """The one file of `locale` in a source folder (at its top, in data/ or in 1.1/data/; .jsonl.gz or .jsonl)."""
    candidates = []
    for sub in (Path("."), Path("data"), Path("1.1") / "data"):
        for suffix in (".jsonl.gz", ".jsonl"):
            candidates.append(folder / sub / f"{locale}{suffix}")
    for sub in (Path("."), Path("data"), Path("1.1") / "data"):
        both = [folder / sub / f"{locale}{suffix}" for suffix in (".jsonl.gz", ".jsonl")]
        if all(c.is_file() for c in both):
            raise DataError(f"two copies of locale {locale!r}: {both[0]} and {both[1]}; keep one (which is right is "
                            "not for mkd to guess)")
    for c in candidates:
        if c.is_file():
            return c
    raise DataError(
        f"no file for locale {locale!r} in {folder}: looked for {', '.join(str(c.relative_to(folder)) for c in candidates[:2])} "
        f"(also under data/ and 1.1/data/). Fix: {FIX_SOURCE}"
    )


def verify_checksums(folder: Path, locales: Sequence[str] | None = None) -> None:
    """Check the files listed in `folder`/SHA256SUMS (only the requested locales' when given).

    No SHA256SUMS (or a tarball path) -> nothing to check. Mismatch -> DataError with expected and actual.
    """
    folder = Path(folder)
    sums = folder / "SHA256SUMS"
    if not folder.is_dir() or not sums.is_file():
        return
    wanted = None if locales is None else {f"{loc}{sfx}" for loc in locales for sfx in (".jsonl", ".jsonl.gz")}
    for n, line in enumerate(sums.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.split(None, 1)
        if len(parts) != 2 or len(parts[0]) != 64:
            raise DataError(f"{sums}, line {n}: not '<sha256>  <file>'")
        expected, fname = parts[0].lower(), parts[1].strip().lstrip("*")
        if wanted is not None and fname not in wanted:
            continue
        path = folder / fname
        if not path.is_file():
            if wanted is None:
                raise DataError(f"{path} is listed in {sums} but missing")
            continue
        actual = file_sha256(path)
        if actual != expected:
            raise DataError(
                f"checksum mismatch for {path}: expected sha256 {expected}, actual {actual}. "
                f"The file is corrupt or was edited; restore it from the MASSIVE 1.1 source."
            )


def source_files(source: Path, locales: Sequence[str]) -> dict[str, str]:
    """SHA-256 of each file prepare reads for `locales` (the tarball itself for a tarball source)."""
    if source.is_file():
        return {source.name: file_sha256(source)}
    out = {}
    for loc in locales:
        path = locale_file(source, loc)
        out[str(path.relative_to(source))] = file_sha256(path)
    return out
