# SPDX-License-Identifier: Apache-2.0
"""Plain data <-> (nested) dataclass configs, checked against the annotations.

`from_dict` checks every value against the dataclass annotations (read with `typing.get_type_hints`, so
`from __future__ import annotations` works) and names the offending dotted key in a one-line `ConfigError`:

    model.mamba_num_heads: expected int or list[int], got str 'x'
    model.hiden_size: unknown key (did you mean 'hidden_size'?)

Supported annotations: bool, int, float (ints accepted, bools rejected), str, pathlib.Path, `Literal[...]`,
`X | None` and other unions, `list[X]`, `tuple[X, ...]`, `dict[str, X]`, nested dataclasses and `Any`.
`to_dict` is the inverse: a plain, YAML-able dict. Reading and writing YAML files is `yaml_io.py`.

The command-line value types (`DTYPES`, `positive_int`) shared by every command are at the end.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import functools
import math
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union


class ConfigError(ValueError):
    """A bad config value, key, file or override; the message is one line starting with where it is."""



def _describe(value: Any) -> str:
    """`str 'x'`: the type and a short repr of a bad value, for error messages."""
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


def _type_name(tp: Any) -> str:
    """A readable name for an annotation: `int`, `list[int]`, `one of 'a', 'b'`, `float or None`."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is type(None):
        return "None"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args)
    if origin is not None:
        return f"{origin.__name__}[{', '.join('...' if a is ... else _type_name(a) for a in args)}]"
    return getattr(tp, "__name__", repr(tp))


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _convert(value: Any, tp: Any, where: str) -> Any:
    """Check `value` against annotation `tp` and return it converted (int -> float, dict -> dataclass)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping ({tp.__name__}), got {_describe(value)}")
        return from_dict(tp, value, where)
    if origin in (Union, types.UnionType):
        return _convert_union(value, args, where)
    if origin is Literal:
        # Compare types too: YAML `1` must not satisfy Literal[True], nor `true` satisfy Literal[1].
        if any(value == a and type(value) is type(a) for a in args):
            return value
        close = difflib.get_close_matches(str(value), [str(a) for a in args], n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {_describe(value)}{hint}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected {_type_name(tp)}, got {_describe(value)}")
        if origin is list or (len(args) == 2 and args[1] is ...):
            items = [_convert(v, args[0] if args else Any, f"{where}[{i}]") for i, v in enumerate(value)]
            return items if origin is list else tuple(items)
        if len(value) != len(args):
            raise ConfigError(f"{where}: expected {len(args)} items ({_type_name(tp)}), got {len(value)}")
        return tuple(_convert(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected {_type_name(tp)}, got {_describe(value)}")
        key_tp, val_tp = args or (Any, Any)
        return {
            _convert(k, key_tp, where): _convert(v, val_tp, _join(where, str(k))) for k, v in value.items()
        }
    if origin is not None:
        raise ConfigError(f"{where}: unsupported annotation {tp!r}")  # a config class bug, not user input
    return _convert_scalar(value, tp, where)


def _convert_union(value: Any, args: tuple, where: str) -> Any:
    if value is None and type(None) in args:
        return None
    arms = [a for a in args if a is not type(None)]
    # Recurse straight into the arm whose shape matches, so errors name the inner key (`x.heads[2]: ...`).
    for arm in arms:
        origin = typing.get_origin(arm)
        if (isinstance(value, dict) and (dataclasses.is_dataclass(arm) or origin is dict)) or (
            isinstance(value, (list, tuple)) and origin in (list, tuple)
        ):
            return _convert(value, arm, where)
    if len(arms) == 1 and (typing.get_origin(arms[0]) is not None or dataclasses.is_dataclass(arms[0])):
        return _convert(value, arms[0], where)  # e.g. Literal[...] | None: keep the arm's own message
    for arm in arms:
        try:
            return _convert(value, arm, where)
        except ConfigError:
            continue
    hint = _quoted_number_hint(value) if float in arms else ""
    raise ConfigError(f"{where}: expected {_type_name(Union[args])}, got {_describe(value)}{hint}")


def _convert_scalar(value: Any, tp: type, where: str) -> Any:
    # bool is a subclass of int: `true` must not pass as 1, nor `1` as true.
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if tp is bool and isinstance(value, bool):
        return value
    if tp is str and isinstance(value, str):
        return value
    if tp is type(None) and value is None:
        return None
    if isinstance(tp, type) and issubclass(tp, Path) and isinstance(value, (str, Path)):
        return tp(value)
    if tp not in (float, int, bool, str, type(None)) and isinstance(tp, type) and isinstance(value, tp):
        return value
    hint = _quoted_number_hint(value) if tp is float else ""
    raise ConfigError(f"{where}: expected {_type_name(tp)}, got {_describe(value)}{hint}")


def _quoted_number_hint(value: Any) -> str:
    """A hint for `"1e-5"`-like strings, which only reach a float field when quoted or not read by us."""
    if isinstance(value, str) and re.fullmatch(r"[-+]?(\d[\d_]*\.?\d*|\.\d+)([eE][-+]?\d+)?", value.strip()):
        return " (a quoted number? write it without quotes)"
    return ""


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def from_dict(cls: type, data: dict, where: str = "") -> Any:
    """Build dataclass `cls` from a plain dict, strictly.

    Args:
        cls: a dataclass type; fields that are dataclasses are built recursively.
        data: field name -> value, e.g. from YAML.
        where: dotted path of `data` inside the whole config, used in error messages ("" at the top).

    Returns:
        An instance of `cls`.

    Raises:
        ConfigError: on an unknown key (with a close match suggested), a missing required field, a value of
            the wrong type, or a ValueError from `cls.__post_init__` (re-raised with the dotted path).
    """
    if not isinstance(data, dict):
        name = cls.__name__
        raise ConfigError(f"{where or name}: expected a mapping ({name}), got {_describe(data)}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in data:
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f" ({cls.__name__} has no such field)"
            raise ConfigError(f"{_join(where, str(key))}: unknown key{hint}")
    hints = _hints(cls)
    kwargs = {}
    for name, field in fields.items():
        if name in data:
            kwargs[name] = _convert(data[name], hints[name], _join(where, name))
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{_join(where, name)}: missing required field")
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except ValueError as e:
        message = " ".join(str(e).split())  # one line
        head, sep, rest = message.partition(": ")
        if sep and head.split("[")[0] in fields:  # "pattern: bad" inside "model" -> "model.pattern: bad"
            raise ConfigError(f"{_join(where, head)}: {rest}") from e
        raise ConfigError(f"{where}: {message}" if where else message) from e


def to_dict(obj: Any) -> dict:
    """A dataclass instance as a plain, YAML-able dict (nested dataclasses as dicts, tuples as lists).

    Args:
        obj: a dataclass instance.

    Returns:
        Field name -> value for every init field, in declaration order.
    """
    if not dataclasses.is_dataclass(obj) or isinstance(obj, type):
        raise TypeError(f"to_dict expects a dataclass instance, got {type(obj).__name__}")
    return _plain(obj)


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value) if f.init}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, Path):
        return str(value)
    return value


# --- command-line value types (argparse), shared by every command ---------------------------------------
DTYPES = ("float32", "bfloat16", "float16")


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1, else a one-line usage error."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


_INTERVAL = re.compile(r"^([\[(])\s*(-?inf|-?[0-9.e+-]+)\s*,\s*(inf|-?[0-9.e+-]+)\s*([\])])$")


def check_ranges(obj: Any, **intervals: str) -> None:
    """Raise `ValueError("field: must be ...")` for the first field of `obj` outside its interval.

    Args:
        obj: a config dataclass instance.
        intervals: field name -> interval in the usual notation, e.g. "(0, inf)", "[0, 1)", "[1, inf)".
            A list field is checked item by item. NaN is outside every interval.
    """
    for name, text in intervals.items():
        low_bracket, low, high, high_bracket = _INTERVAL.match(text).groups()
        low, high = float(low), float(high)
        values = getattr(obj, name)
        for i, value in enumerate(values if isinstance(values, list) else [values]):
            if value is None:
                continue
            above = value > low if low_bracket == "(" else value >= low
            below = value < high if high_bracket == ")" else value <= high
            if not (above and below):  # also NaN
                where = f"{name}[{i}]" if isinstance(values, list) else name
                if math.isinf(high):
                    rule = f"{'>' if low_bracket == '(' else '>='} {low:g}"
                else:
                    rule = f"in {text}"
                raise ValueError(f"{where}: must be {rule}, got {value}")
