"""Command-line options declared once, on the dataclass field each one sets.

A field that a command sets from an option carries an ``Option`` in its
metadata: the help a person reads, the flag when it is not the field's name,
and whether ``--resume`` may change it. A field set otherwise (by a preset)
carries none. A command names each option as a parameter and builds it
from its declaration by that name (cli/train.py), the Python API takes the
same names, and error messages name a field by its flag, so flag, help and
field never drift apart.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Option:
    help: str
    flag: str | None = None  # default: --field-name
    off: str | None = None  # a switch's other flag (default: --no-field-name)
    resumable: bool = False  # --resume may change it
    shared: bool = False  # one option for several fields (the mode's margin): the command maps it


def option(default=dataclasses.MISSING, *, help: str, flag: str | None = None, off: str | None = None,
           resumable: bool = False, shared: bool = False, factory=dataclasses.MISSING):
    """A dataclass field that a command-line option sets."""
    return field(default=default, default_factory=factory,
                 metadata={"option": Option(help, flag, off, resumable, shared)})


def flag_name(name: str, opt: Option | None) -> str:
    return (opt.flag if opt and opt.flag else None) or "--" + name.replace("_", "-")


@dataclass(frozen=True)
class Declared:
    """One declared option: the field it sets, its declaration and its type (None stripped)."""

    name: str
    option: Option
    type: type

    @property
    def flag(self) -> str:
        return flag_name(self.name, self.option)

    @property
    def parameter(self) -> str:
        """The name a command or a function takes it by: the field's, or a shared option's flag (--margin: margin)."""
        return self.flag.removeprefix("--").replace("-", "_") if self.option.shared else self.name


def declared(cls) -> list[Declared]:
    """The options declared on ``cls``'s fields, nested dataclasses' fields included, in field order."""
    out = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        kind = hints[f.name]
        if dataclasses.is_dataclass(kind):
            out += declared(kind)
        elif f.metadata.get("option") is not None:
            out.append(Declared(f.name, f.metadata["option"], _without_none(kind)))
    return out


def parameters(cls) -> dict[str, Declared]:
    """The options declared on ``cls`` by parameter name, in field order; a shared one once (its first field's)."""
    out: dict[str, Declared] = {}
    for d in declared(cls):
        out.setdefault(d.parameter, d)
    return out


def fields_of(cls) -> dict[str, dataclasses.Field]:
    """Every leaf field of ``cls`` by name, nested dataclasses' fields included."""
    out = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        out.update(fields_of(hints[f.name]) if dataclasses.is_dataclass(hints[f.name]) else {f.name: f})
    return out


def flag_of(cls, name: str) -> str:
    """How a person names field ``name`` of ``cls`` on the command line."""
    return flag_name(name, fields_of(cls)[name].metadata.get("option"))


def _without_none(kind):
    """``int | None`` -> ``int``; other types as they are."""
    args = [a for a in typing.get_args(kind) if a is not type(None)]
    return args[0] if typing.get_origin(kind) in (typing.Union, types.UnionType) and len(args) == 1 else kind
