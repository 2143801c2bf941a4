"""Turn frozen config dataclasses into argparse flags and back (one flag per field)."""
from __future__ import annotations

import argparse
import dataclasses
import typing


def _parse_bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def _optional_int(text: str):
    return None if text.lower() == "none" else int(text)


def add_dataclass_args(parser: argparse.ArgumentParser, cls, skip=(), only_given: bool = False) -> None:
    """``--field-name`` for every field of ``cls`` with its default and type (and its allowed values when
    the field's metadata has ``choices``); the field's metadata ``help``, if any, comes first. With
    ``only_given``, a flag the user did not give sets nothing (``argparse.SUPPRESS``: a preset decides);
    its help still shows the field's default."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        hint = str(hints[f.name])
        kw: dict = {"default": argparse.SUPPRESS if only_given else f.default, "dest": f.name}
        if "tuple" in hint:
            elem = float if "float" in hint else int if "int" in hint else _parse_bool if "bool" in hint else str
            kw.update(nargs="+", type=elem, help=f"default: {' '.join(map(str, f.default))}")
        elif hints[f.name] is bool:
            kw.update(type=_parse_bool, help=f"true/false (default: {f.default})")
        elif "None" in hint and "int" in hint:
            kw.update(type=_optional_int, help=f"integer or none (default: {f.default})")
        elif f.metadata.get("choices"):  # listed in --help and checked by argparse
            kw.update(choices=tuple(f.metadata["choices"]), help=f"default: {f.default}")
        else:
            base = {"int": int, "float": float}.get(getattr(hints[f.name], "__name__", ""), str)
            kw.update(type=base, help=f"default: {f.default!r}" if f.default == "" else f"default: {f.default}")
        if f.metadata.get("help"):
            kw["help"] = f"{f.metadata['help']}; {kw['help']}"
        parser.add_argument(flag, **kw)


def given_fields(cls, args: argparse.Namespace, skip=()) -> dict:
    """The fields of ``cls`` the user gave as flags (``add_dataclass_args(..., only_given=True)``), lists as
    tuples, without ``skip``: the overrides of a preset."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in vars(args).items()
            if k in cls.__dataclass_fields__ and k not in skip}


def dataclass_from_args(cls, args: argparse.Namespace, **overrides):
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}
    for k, v in values.items():
        if isinstance(v, list):
            values[k] = tuple(v)
    values.update(overrides)
    return cls(**values)


def dataclass_parser(cls, description: str | None, prog: str | None = None) -> argparse.ArgumentParser:
    """A parser with one flag per field of ``cls`` and ``description`` (a module docstring) verbatim."""
    p = argparse.ArgumentParser(prog=prog, description=description,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_dataclass_args(p, cls)
    return p
