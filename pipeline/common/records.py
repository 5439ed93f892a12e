"""Typed records that stages write as JSON and later stages (or users' tools) read back.

A record is a frozen dataclass deriving from :class:`JsonRecord`: ``to_json`` turns it into JSON types (nested
records become objects, tuples lists, paths strings) and ``from_json`` rebuilds it from its field types, so no
module indexes a nested dict another module wrote. Keys a record does not know are ignored (a newer file still
reads); a missing key without a default raises KeyError naming it. A field may also be a plain dataclass of a
library beneath the pipeline (calib/'s layers), which cannot derive from JsonRecord: it is written and read alike.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

R = TypeVar("R", bound="JsonRecord")
D = TypeVar("D")


def to_plain(value: Any) -> Any:
    """``value`` as JSON types."""
    if isinstance(value, JsonRecord):
        return value.to_json()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {field.name: to_plain(getattr(value, field.name)) for field in dataclasses.fields(value)}
    if isinstance(value, (tuple, list)):
        return [to_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: to_plain(item) for key, item in value.items()}
    if isinstance(value, Path):
        return str(value)
    return value


def _from_plain(hint: Any, value: Any) -> Any:
    """``value`` (JSON types) as the type ``hint`` names."""
    origin, arguments = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        options = [a for a in arguments if a is not type(None)]
        return _from_plain(next((a for a in options if _fits(a, value)), options[0]), value)
    if origin is tuple:
        if len(arguments) == 2 and arguments[1] is Ellipsis:
            return tuple(_from_plain(arguments[0], item) for item in value)
        return tuple(_from_plain(a, item) for a, item in zip(arguments, value, strict=True))
    if origin is list:
        return [_from_plain(arguments[0], item) for item in value]
    if origin is dict:
        return {key: _from_plain(arguments[1], item) for key, item in value.items()}
    if isinstance(hint, type) and issubclass(hint, JsonRecord):
        return hint.from_json(value)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):  # a library's own record, e.g. calib's layers
        return _dataclass_from_plain(hint, value)
    if hint in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"expected a number, got {value!r}")
        return hint(value)
    if hint is Path:
        return Path(value)
    return value  # str, bool, Any: as JSON has them


def _fits(hint: Any, value: Any) -> bool:
    """Whether ``value`` can be the record ``hint`` (it has every field without a default); True for other types."""
    if not (isinstance(hint, type) and dataclasses.is_dataclass(hint)):
        return True
    return isinstance(value, dict) and {f.name for f in dataclasses.fields(hint) if _required(f)} <= value.keys()


def _required(field: dataclasses.Field) -> bool:
    return field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING


@functools.cache
def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


class JsonRecord:
    """Base of the pipeline's records (frozen dataclasses)."""

    def to_json(self) -> dict[str, Any]:
        return {field.name: to_plain(getattr(self, field.name)) for field in dataclasses.fields(self)}

    def key_numbers(self) -> dict[str, Any]:
        """What a summary of this record keeps (a stage's entry in stages.json): everything, unless the record's
        own file (surgery.json, verify.json) holds the details."""
        return self.to_json()

    @classmethod
    def from_json(cls: type[R], data: dict[str, Any]) -> R:
        return _dataclass_from_plain(cls, data)


def _dataclass_from_plain(cls: type[D], data: dict[str, Any]) -> D:
    """The dataclass ``cls`` from a JSON object of its fields."""
    if not isinstance(data, dict):
        raise TypeError(f"{cls.__name__}: expected a JSON object, got {type(data).__name__}")
    hints = _field_types(cls)
    values = {}
    for field in dataclasses.fields(cls):
        if field.name in data:
            values[field.name] = _from_plain(hints[field.name], data[field.name])
        elif _required(field):
            raise KeyError(field.name)
    return cls(**values)
