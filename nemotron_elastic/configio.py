# SPDX-License-Identifier: Apache-2.0
"""Strict YAML loading and saving of (nested) dataclass configs, with dotted command-line overrides.

`from_dict` checks every value against the dataclass annotations (read with `typing.get_type_hints`, so
`from __future__ import annotations` works) and names the offending dotted key in a one-line `ConfigError`:

    model.mamba_num_heads: expected int or list[int], got str 'x'
    model.hiden_size: unknown key (did you mean 'hidden_size'?)

Supported annotations: bool, int, float (ints accepted, bools rejected), str, pathlib.Path, `Literal[...]`,
`X | None` and other unions, `list[X]`, `tuple[X, ...]`, `dict[str, X]`, nested dataclasses and `Any`.

YAML is read with a SafeLoader that (unlike PyYAML's YAML 1.1 resolver) reads `1e-5` as a float rather
than a string, and that rejects duplicate keys instead of silently keeping the last one.

This is nanoGPT's configurator checks done properly (STYLE.md 5.5): no exec, no global state.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import os
import re
import secrets
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

import yaml


class ConfigError(ValueError):
    """A bad config value, key, file or override; the message is one line starting with where it is."""


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 style floats (`1e-5`) and duplicate keys as errors."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
            except TypeError:  # an unhashable key: the parent class reports it
                continue
            if duplicate:
                mark = key_node.start_mark
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


class _StrictDumper(yaml.SafeDumper):
    """SafeDumper that quotes strings `_StrictLoader` would read as floats (e.g. the string "1e-5")."""

    def represent_list(self, data: list) -> yaml.SequenceNode:
        # Per-layer widths read best on one line ([64, 48, 64]); mappings and nested lists stay block style.
        flow = all(not isinstance(v, (list, tuple, dict)) for v in data)
        return self.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_StrictDumper.add_representer(list, _StrictDumper.represent_list)


# PyYAML's float regex needs a '.', so `1e-5` would load as the string "1e-5"; this adds exponent-only floats.
# The dumper gets the same rule so that such strings round-trip quoted.
for _cls in (_StrictLoader, _StrictDumper):
    _cls.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
        list("-+0123456789"),
    )


def _yaml_load(text: str) -> Any:
    return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass


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
        if sep and head in fields:  # "pattern: bad" inside "model" -> "model.pattern: bad"
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


def parse_overrides(overrides: list[str] | tuple[str, ...]) -> dict:
    """Turn `["train.lr=3e-4", "model.pattern=M-*", "x.y=[1,2]"]` into a nested dict.

    Values are parsed as YAML (so `3` is an int, `[1,2]` a list, `null` None); a value that is not valid YAML
    (e.g. `*-*-`, which YAML reads as an alias) is taken as a plain string. A later override of the same
    key wins.

    Args:
        overrides: `dotted.key=value` strings.

    Returns:
        The nested dict, ready to deep-merge into a loaded config.

    Raises:
        ConfigError: on an item without '=' or with an empty key segment.
    """
    result: dict = {}
    for item in overrides:
        key, sep, text = item.partition("=")
        parts = [p.strip() for p in key.split(".")]
        if not sep or not all(parts):
            raise ConfigError(f"override {item!r}: expected dotted.key=value")
        try:
            value = _yaml_load(text) if text.strip() else None
        except yaml.YAMLError:
            value = text.strip()
        node = result
        for i, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                prefix = ".".join(parts[: i + 1])
                raise ConfigError(f"{prefix}: set to a value by an earlier override, so {key} cannot be set")
            node = child
        node[parts[-1]] = value
    return result


def _deep_merge(base: dict, update: dict) -> dict:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_yaml(cls: type, path: str | os.PathLike, overrides: list[str] | tuple[str, ...] = ()) -> Any:
    """Read a YAML file into dataclass `cls`, after applying dotted overrides.

    Args:
        cls: the dataclass type the file describes.
        path: the YAML file.
        overrides: `dotted.key=value` strings (see `parse_overrides`); they must name existing keys.

    Returns:
        An instance of `cls`.

    Raises:
        ConfigError: one line starting with `path:` (missing or unreadable file, malformed YAML with its line
            number, top level not a mapping) or, for a bad key or value, `path: dotted.key: ...`.
    """
    extra = parse_overrides(overrides)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read ({getattr(e, 'strerror', None) or e})") from None
    try:
        data = _yaml_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        parts = (getattr(e, "context", None), getattr(e, "problem", None))
        what = " ".join(" ".join(str(p) for p in parts if p).split()) or type(e).__name__
        raise ConfigError(f"{path}: {where}invalid YAML: {what}") from None
    if data is None:  # an empty file: every field at its default
        data = {}
    if not isinstance(data, dict):
        kind = type(data).__name__
        raise ConfigError(f"{path}: top level must be a mapping of {cls.__name__} fields, got {kind}")
    try:
        return from_dict(cls, _deep_merge(data, extra))
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from e


def save_yaml(obj: Any, path: str | os.PathLike) -> None:
    """Write dataclass `obj` as YAML, atomically (temp file in the same folder, then `os.replace`).

    Args:
        obj: a dataclass instance.
        path: the destination; its folder is created if missing.
    """
    data = to_dict(obj)
    text = yaml.dump(data, Dumper=_StrictDumper, sort_keys=False, default_flow_style=False, width=1000)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "x", encoding="utf-8") as f:  # "x": fresh file, created with the umask's permissions
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
