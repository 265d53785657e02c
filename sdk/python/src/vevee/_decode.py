"""JSON answers into the dataclasses of `types`, by their annotations.

One generic decoder instead of a hand-written one per type, so that a field added to a dataclass is
decoded without more code. JSON keys are the camelCase of the field names. A value of the wrong
kind (a string where an amount belongs) raises `VeveeAPIError`: better a clear error at the border
than a wrong number deep in the app.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
import typing
from typing import Any, TypeVar, Union, get_args, get_origin

from .errors import VeveeAPIError
from .types import Page

T = TypeVar("T")

_NONE_TYPE = type(None)


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(word[:1].upper() + word[1:] for word in rest)


@functools.cache
def _fields(cls: type) -> tuple[tuple[str, str, Any, bool], ...]:
    """(attribute, JSON key, annotation, has a default) for each field of a dataclass."""
    module = sys.modules[cls.__module__]
    hints = typing.get_type_hints(cls, vars(module))
    out = []
    for f in dataclasses.fields(cls):
        has_default = (
            f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        )
        out.append((f.name, camel(f.name), hints[f.name], has_default))
    return tuple(out)


def decode(tp: Any, value: Any, where: str = "answer") -> Any:
    """`value` (decoded JSON) as an instance of the annotation `tp`."""
    if tp is Any:
        return value
    origin = get_origin(tp)
    if origin is Union:
        args = get_args(tp)
        if value is None and _NONE_TYPE in args:
            return None
        others = [a for a in args if a is not _NONE_TYPE]
        if len(others) == 1:
            return decode(others[0], value, where)
        raise TypeError(f"no decoder for {tp}")  # a programming error in `types`, not an answer
    if origin is typing.Literal:
        # A later server may send a value this client does not know yet: keep it as it is.
        if value not in get_args(tp) and not isinstance(value, (str, bool)):
            raise _wrong(where, f"one of {get_args(tp)}", value)
        return value
    if origin is list:
        if not isinstance(value, list):
            raise _wrong(where, "a list", value)
        (item,) = get_args(tp)
        return [decode(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise _wrong(where, "an object", value)
        return value
    if tp is _NONE_TYPE:
        if value is not None:
            raise _wrong(where, "null", value)
        return None
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return _decode_dataclass(tp, value, where)
    if tp is bool:
        if not isinstance(value, bool):
            raise _wrong(where, "true or false", value)
        return value
    if tp is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise _wrong(where, "an integer", value)
        return value
    if tp is str:
        if not isinstance(value, str):
            raise _wrong(where, "a string", value)
        return value
    raise TypeError(f"no decoder for {tp}")


def decode_as(cls: type[T], value: Any, where: str = "answer") -> T:
    """`decode` with the result typed as the dataclass `cls`."""
    result: T = decode(cls, value, where)
    return result


def _decode_dataclass(cls: type, value: Any, where: str) -> Any:
    if not isinstance(value, dict):
        raise _wrong(where, f"a {cls.__name__} object", value)
    kwargs: dict[str, Any] = {}
    for name, key, annotation, has_default in _fields(cls):
        if key in value:
            kwargs[name] = decode(annotation, value[key], f"{where}.{key}")
        elif not has_default:
            if _optional(annotation):
                kwargs[name] = None
            else:
                raise VeveeAPIError(
                    f"vevee's answer has no {where}.{key}: is the server older than this client?",
                    type="api_error",
                    code="unexpected_answer",
                    body=value,
                )
    return cls(**kwargs)


def _optional(tp: Any) -> bool:
    return tp is Any or (get_origin(tp) is Union and _NONE_TYPE in get_args(tp))


def _wrong(where: str, expected: str, value: Any) -> VeveeAPIError:
    return VeveeAPIError(
        f"vevee's answer has {where} = {value!r}, expected {expected}",
        type="api_error",
        code="unexpected_answer",
        body=value,
    )


def decode_page(item: type[T], value: Any, where: str = "answer") -> Page[T]:
    """A list answer, `{"data": [...], "hasMore": bool}`."""
    if not isinstance(value, dict):
        raise _wrong(where, "a list object", value)
    data = decode(list[item], value.get("data"), f"{where}.data")  # type: ignore[valid-type]
    has_more = decode(bool, value.get("hasMore", False), f"{where}.hasMore")
    return Page(data=data, has_more=has_more)


def decode_event_page(value: Any, where: str = "answer") -> Page[dict[str, Any]]:
    """`GET /v1/events`: a page whose items stay the JSON objects that `verify_webhook` returns,
    so that one handler takes both delivered and listed events."""
    if not isinstance(value, dict):
        raise _wrong(where, "a list object", value)
    data: list[dict[str, Any]] = decode(list[dict[str, Any]], value.get("data"), f"{where}.data")
    for i, event in enumerate(data):
        if not isinstance(event.get("id"), str) or not isinstance(event.get("type"), str):
            raise _wrong(f"{where}.data[{i}]", "an event with an id and a type", event)
    has_more = decode(bool, value.get("hasMore", False), f"{where}.hasMore")
    return Page(data=data, has_more=has_more)
