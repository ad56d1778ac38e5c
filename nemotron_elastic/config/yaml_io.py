# SPDX-License-Identifier: Apache-2.0
"""Strict YAML loading and saving of (nested) dataclass configs, with dotted command-line overrides.

Values are checked by `configtypes.from_dict` (re-exported here with `to_dict` and `ConfigError`): a bad
key or value is a one-line `ConfigError` naming the dotted key, e.g.

    model.mamba_num_heads: expected int or list[int], got str 'x'
    model.hiden_size: unknown key (did you mean 'hidden_size'?)

YAML is read with a SafeLoader that (unlike PyYAML's YAML 1.1 resolver) reads `1e-5` as a float rather
than a string, and that rejects duplicate keys instead of silently keeping the last one.

This is nanoGPT's configurator checks done properly: no exec, no global state.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml

from ..io import write_text
from .types import ConfigError, from_dict, to_dict

__all__ = ["ConfigError", "from_dict", "load_yaml", "parse_overrides", "save_yaml", "to_dict"]


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
    return yaml.load(text, Loader=_StrictLoader)



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


def _deep_merge(base: dict, update: dict, where: str = "") -> dict:
    """`update` merged into `base`; a list takes overrides by index (`stages.1.seq_len=4096`)."""
    merged = dict(base)
    for key, value in update.items():
        here = f"{where}.{key}" if where else str(key)
        current = merged.get(key)
        if isinstance(value, dict) and isinstance(current, dict):
            merged[key] = _deep_merge(current, value, here)
        elif isinstance(value, dict) and isinstance(current, list) and value and all(
                isinstance(k, str) and k.isdigit() for k in value):
            items = list(current)
            for index, item in value.items():
                i = int(index)
                if i >= len(items):
                    raise ConfigError(f"{here}.{index}: the list has {len(items)} items")
                both = isinstance(item, dict) and isinstance(items[i], dict)
                items[i] = _deep_merge(items[i], item, f"{here}.{index}") if both else item
            merged[key] = items
        else:
            merged[key] = value
    return merged


def load_yaml(cls: type, path: str | os.PathLike, overrides: list[str] | tuple[str, ...] = ()) -> Any:
    """Read a YAML file into dataclass `cls`, after applying dotted overrides.

    Args:
        cls: the dataclass type the file describes.
        path: the YAML file.
        overrides: `dotted.key=value` strings (see `parse_overrides`); they must name existing keys. A number
            indexes a list of the file (`stages.1.seq_len=4096`, `data.train.0.path=prepared/chat`).

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
    # A section written in its one-word form (`dist: fsdp`) still takes dotted overrides (`dist.shard_size=8`).
    for key, first_field in getattr(cls, "SHORTHANDS", {}).items():
        if isinstance(data.get(key), str) and isinstance(extra.get(key), dict):
            data[key] = {first_field: data[key]}
    try:
        return from_dict(cls, _deep_merge(data, extra))
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from e


def save_yaml(obj: Any, path: str | os.PathLike) -> None:
    """Write dataclass `obj` as YAML, atomically (`io.write_text`: a temporary file, then a rename).

    Args:
        obj: a dataclass instance.
        path: the destination; its folder is created if missing.
    """
    data = to_dict(obj)
    text = yaml.dump(data, Dumper=_StrictDumper, sort_keys=False, default_flow_style=False, width=1000)
    write_text(path, text)
