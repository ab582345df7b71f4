"""Is DVC's `dvc.lock` one DVC can read?

DVC rewrites dvc.lock in place after every stage. A `dvc repro` killed during that write leaves it empty or cut
off, and DVC then refuses to run ("'dvc.lock' is invalid"). The fix is to delete it: DVC files every finished
stage with cached outputs in its run-cache, so the next `dvc repro` restores them from there ("is cached -
skipping run") and re-runs only the stages whose outputs are not cached (validate, collect, analyze: seconds).
Measured on the smoke profile: after `rm dvc.lock`, every stage and all 24 cells came back from the run-cache,
identical; a test runs the same recovery on a tiny real project.
"""

from __future__ import annotations

from pathlib import Path

from mkd.core.errors import MkdError

LOCK = "dvc.lock"


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


def check(root: str | Path = ".") -> None:
    """Raise a clear error if root/dvc.lock exists but is not a lock DVC can read."""
    lock = Path(root) / LOCK
    if lock.is_file() and not is_complete(lock):
        raise MkdError(f"{lock} is empty or cut off (a `dvc repro` killed while DVC was writing it): delete it "
                       f"(`rm {lock}`) and run again; DVC restores every finished stage from its run-cache and "
                       "re-runs only what was not finished")
