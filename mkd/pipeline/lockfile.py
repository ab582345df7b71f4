"""A last complete copy of DVC's `dvc.lock`, and putting it back.

Why: DVC rewrites dvc.lock in place after every stage. A `dvc repro` killed during that write leaves it
empty or cut off, and DVC then refuses to run ("'dvc.lock' is invalid"); deleting it would make DVC redo
every stage, the teacher included. DVC writes the lock before it starts the next stage's command, so each
`mkd` stage command, on starting, copies a lock that parses to `.dvc/tmp/mkd-dvc.lock.good`.
`mkd restore-lock` puts that copy back: a stage finished after it was taken (at most the one being recorded
at the kill) is restored from DVC's run-cache if DVC had filed it there ("is cached - skipping run"), else
run again.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from mkd.core.atomic import atomic_path
from mkd.core.errors import MkdError

LOCK = "dvc.lock"
BACKUP = Path(".dvc") / "tmp" / "mkd-dvc.lock.good"


def _load(path: Path):
    import yaml

    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None


def _complete(path: Path) -> dict | None:
    """The parsed lock if DVC can read it: YAML that passes DVC's own lockfile schema; else None (an empty or
    cut-off file)."""
    data = _load(path)
    if not isinstance(data, dict) or not isinstance(data.get("stages"), dict):
        return None
    try:
        from dvc.schema import COMPILED_LOCKFILE_SCHEMA
    except ImportError:  # no DVC here: the structure above is all that can be checked
        return data
    try:
        COMPILED_LOCKFILE_SCHEMA(data)
    except Exception:  # voluptuous' Invalid: DVC itself would refuse this lock
        return None
    return data


def is_complete(path: Path) -> bool:
    return _complete(path) is not None


def backup(root: str | Path = ".") -> bool:
    """Copy root/dvc.lock to the backup if it is complete; True if a copy was made. Quietly does nothing
    outside a DVC project (no .dvc folder) or when there is no lock yet."""
    root = Path(root)
    lock = root / LOCK
    if not (root / ".dvc").is_dir() or not lock.is_file():
        return False
    # Copy first, then check the copy: DVC (or a second `dvc repro`) may rewrite the lock between a check of
    # the original and the copy, and a checked-then-copied file could be a cut-off one.
    try:
        with atomic_path(root / BACKUP) as tmp:
            shutil.copyfile(lock, tmp)
            if not is_complete(tmp):
                raise _Incomplete
    except _Incomplete:  # atomic_path removed the copy; the previous backup stays
        return False
    return True


class _Incomplete(Exception):
    pass


def check(root: str | Path = ".") -> None:
    """Raise a clear error if root/dvc.lock exists but is not a lock DVC can read."""
    lock = Path(root) / LOCK
    if lock.is_file() and not is_complete(lock):
        has_backup = is_complete(Path(root) / BACKUP)
        fix = ("run `mkd restore-lock` to put back its last complete copy; `dvc repro` then reruns only the "
               "stages finished after that copy" if has_backup else
               "no complete copy was kept; `git checkout dvc.lock` (if committed) or delete it and let `dvc repro` redo every stage")
        raise MkdError(f"{lock} is empty or cut off (a `dvc repro` killed while DVC was writing it): {fix}")


def restore(root: str | Path = ".") -> str:
    """Put the backup back over root/dvc.lock; returns what was done, one line."""
    root = Path(root)
    lock, copy = root / LOCK, root / BACKUP
    if lock.is_file() and is_complete(lock):
        return f"{lock} is complete; nothing to restore"
    data = _complete(copy)
    if data is None:
        raise MkdError(f"no complete copy of {lock} at {copy}: `git checkout dvc.lock` (if committed), or delete "
                       f"{lock} and let `dvc repro` redo every stage")
    with atomic_path(lock) as tmp:
        shutil.copyfile(copy, tmp)
    return f"restored {lock} from {copy} ({len(data['stages'])} stages recorded); `dvc repro` reruns only the others"
