"""Where a painting's file is: relative paths kept inside the image folder."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

from pbn_cli.core.errors import InputError
from pbn_cli.core.manifest import Record, read_manifest
from pbn_cli.core.workspace import Workspace

_DRIVE = re.compile(r"^[A-Za-z]:")


def check_relative(rel: str) -> str | None:
    """Why ``rel`` cannot name a file inside the image folder, or None if it can."""
    if not rel:
        return "empty filename"
    if "\x00" in rel:
        return "path escapes the image folder: filename contains a NUL byte"
    if rel.startswith(("/", "\\")) or _DRIVE.match(rel):
        return "path escapes the image folder: absolute path"
    if ".." in re.split(r"[\\/]", rel):
        return "path escapes the image folder: `..` in the filename"
    return None


def locate(root_real: str, rel: str) -> tuple[str | None, str | None]:
    """``(full path, None)`` for a file inside ``root_real``, else ``(None, reason)``.

    ``root_real`` must already be ``os.path.realpath``-ed. Symbolic links are
    followed and must land inside the folder too.
    """
    reason = check_relative(rel)
    if reason:
        return None, reason
    full = os.path.join(root_real, rel)
    try:
        st = os.lstat(full)
    except FileNotFoundError:
        st = None
    except OSError as err:
        return None, f"unreadable path: {err.strerror}"
    # a plain file directly in the (already real) folder needs no more checks
    if st is not None and stat.S_ISREG(st.st_mode) and os.sep not in rel and "/" not in rel:
        return full, None
    real = os.path.realpath(full)
    if real != root_real and not real.startswith(root_real.rstrip(os.sep) + os.sep):
        return None, "path escapes the image folder: symbolic link leads outside"
    if not os.path.exists(real):
        return None, "file missing"
    if not os.path.isfile(real):
        return None, "not a file"
    return real, None


def recorded_root(ws: Workspace, folder: Path) -> dict[str, str]:
    """The image folder as ingest records it: ``image_root`` relative to the workspace folder (so a workspace moved
    together with its images keeps finding them), absolute only where no relative path leads there (another drive);
    ``image_root_absolute`` beside it, for a copy of the workspace moved without its images."""
    absolute = os.path.realpath(folder)
    try:
        relative = os.path.relpath(absolute, os.path.realpath(ws.root))
    except ValueError:  # on another drive
        relative = absolute
    return {"image_root": relative, "image_root_absolute": absolute}


def image_root(ws: Workspace, record: Record | None = None, override: Path | None = None) -> str:
    """The real path of the image folder: ``--images`` if given, else the one ingest recorded (in ``record``, by
    default the ingest manifest's), relative to the workspace folder, or where it was when it was recorded.

    The one reader of ``image_root``: older workspaces recorded it absolute, which reads the same."""
    if override:
        candidates = [Path(override)]
    else:
        extra = (record or ws.require("ingest")).extra
        if not extra.get("image_root"):
            raise InputError(f"no image folder recorded in {ws.root}; point to it with --images")
        candidates = [Path(os.path.realpath(ws.root)) / extra["image_root"]]
        if extra.get("image_root_absolute"):
            candidates.append(Path(extra["image_root_absolute"]))
    for root in candidates:
        if root.is_dir():
            return os.path.realpath(root)
    hint = "" if override else " (the workspace may have moved: point to it with --images)"
    raise InputError(f"image folder {os.path.normpath(candidates[0])} does not exist{hint}")


def painting_files(ws: Workspace) -> dict[str, str]:
    """Each workspace painting's original file, by image_id: its path in the split manifest under the image folder
    ingest recorded (the one home of "a workspace painting's file")."""
    split, record = read_manifest(ws.manifest("split"))
    root = image_root(ws, record)
    return {str(i): os.path.join(root, p) for i, p in zip(split["image_id"], split["path"])}


def painting_file(ws: Workspace, image_id: str, files: dict[str, str] | None = None) -> Path:
    """The original file of the workspace painting ``image_id`` (from ``files`` when already read)."""
    files = painting_files(ws) if files is None else files
    if str(image_id) not in files:
        raise InputError(f"no painting {image_id!r} in the workspace")
    return Path(files[str(image_id)])
