"""Folders of artists: ``ROOT/<artist>/<painting>`` (torchvision's ImageFolder layout).

The artist is the first-level folder; paintings may sit deeper
(``ROOT/<artist>/<series>/<painting>``). Hidden files and folders (a name
starting with ``.``: ``.DS_Store``, ``.ipynb_checkpoints``, ``._x.jpg``) are
skipped. Folders are walked without following symbolic links; a link is
listed like a file, so that ingest checks where it leads (``paths.locate``).

The listing's fingerprint hashes every entry's relative path, kind, size,
modification time and link target (a folder's name only): an unchanged tree
gives the same fingerprint, any added, removed, renamed, edited or re-linked
file another; hidden files coming and going change nothing.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from pbn_cli.core.errors import InputError

#: why a symbolic link to a folder gives no paintings
LINKED_FOLDER = "symbolic link to a folder: not followed"


@dataclass
class Entry:
    """One thing found under an artist folder."""

    rel: str  # path relative to the root, with `/`, as the file system names it
    artist: str  # the first-level folder's name, as the file system names it
    reason: str | None = None  # why it cannot be a painting, known from the listing alone


@dataclass
class FolderListing:
    """What a walk of a folder of artists found."""

    root: Path
    entries: list[Entry] = field(default_factory=list)
    empty_artists: list[str] = field(default_factory=list)  # artist folders with nothing in them
    hidden: int = 0  # hidden files and folders skipped
    fingerprint: str = ""


def is_hidden(name: str) -> bool:
    return name.startswith(".")


def printable(name: str) -> str:
    """``name`` made writable as UTF-8 (undecodable bytes of a file name become U+FFFD)."""
    try:
        name.encode("utf-8")
        return name
    except UnicodeEncodeError:
        return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _line(rel: str, st: os.stat_result, target: str = "") -> bytes:
    """A folder by its name alone (its time changes when hidden files come and go); a file or link by its stat."""
    if stat.S_ISDIR(st.st_mode):
        return f"{rel}\0d\n".encode("utf-8", "surrogateescape")
    kind = "l" if stat.S_ISLNK(st.st_mode) else "f"
    return f"{rel}\0{kind}\0{st.st_size}\0{st.st_mtime_ns}\0{target}\n".encode("utf-8", "surrogateescape")


def _walk(folder: str, rel: str, artist: str, listing: FolderListing, digest) -> int:
    """Add the entries under ``folder`` (``rel`` from the root) to ``listing``; how many were added."""
    found = 0
    try:
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as err:
        listing.entries.append(Entry(rel, artist, f"unreadable folder: {err.strerror or err}"))
        return 1
    for entry in entries:
        if is_hidden(entry.name):
            listing.hidden += 1
            continue
        sub = f"{rel}/{entry.name}"
        st = entry.stat(follow_symlinks=False)
        if entry.is_dir(follow_symlinks=False):
            digest.update(_line(sub, st))
            found += _walk(entry.path, sub, artist, listing, digest)
            continue
        target = os.readlink(entry.path) if entry.is_symlink() else ""
        digest.update(_line(sub, st, target))
        reason = None if printable(sub) == sub else "file name is not valid UTF-8: rename it"
        listing.entries.append(Entry(sub, artist, reason))
        found += 1
    return found


def list_artist_folders(root: Path) -> FolderListing:
    """Every painting candidate under ``root``'s artist folders, sorted by path.

    A file directly in ``root`` (outside any artist folder) is listed with a
    reason; a root without artist folders is an ``InputError``.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"folder {root} does not exist")
    listing = FolderListing(root)
    digest = hashlib.sha256()
    with os.scandir(root) as it:
        top = sorted(it, key=lambda e: e.name)
    artists = 0
    for entry in top:
        if is_hidden(entry.name):
            listing.hidden += 1
            continue
        st = entry.stat(follow_symlinks=False)
        if entry.is_dir(follow_symlinks=False):
            artists += 1
            digest.update(_line(entry.name, st))
            if _walk(entry.path, entry.name, entry.name, listing, digest) == 0:
                listing.empty_artists.append(printable(entry.name))
            continue
        target = os.readlink(entry.path) if entry.is_symlink() else ""
        digest.update(_line(entry.name, st, target))
        why = (LINKED_FOLDER if entry.is_symlink() and entry.is_dir()
               else "not in an artist folder: expected FOLDER/<artist>/<painting>")
        listing.entries.append(Entry(entry.name, "", why))
    if artists == 0:
        raise InputError(
            f"{root} has no artist folders: expected one sub-folder per artist (FOLDER/<artist>/<painting>), "
            "or give a CSV or a Parquet table"
        )
    listing.fingerprint = digest.hexdigest()[:16]
    return listing
