"""Passes over the ``dynaguide`` parser tree: every (sub)command's parser, the defaults its --help
shows, and the ``--debug`` flag its leaves accept."""
from __future__ import annotations

import argparse
from collections.abc import Iterator


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """``{name: parser}`` of ``parser``'s subcommands (empty for a leaf)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def walk(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
         ) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """``(path, parser)`` for ``parser`` and every subcommand below it, depth first (path:
    ``("train", "policy")``)."""
    yield path, parser
    for name, child in subcommands(parser).items():
        yield from walk(child, (*path, name))


def shown_default(action: argparse.Action) -> str | None:
    """How --help should write ``action``'s default, or None where there is none to show (a flag such
    as ``--quiet``, a None or SUPPRESS default)."""
    if action.nargs == 0 or action.default is None or action.default is argparse.SUPPRESS:
        return None
    if isinstance(action.default, (list, tuple)):
        return " ".join(map(str, action.default))
    return repr(action.default) if action.default == "" else str(action.default)


def show_defaults(parser: argparse.ArgumentParser) -> None:
    """Append ``(default: X)`` to the help of every option in the tree whose help does not mention its
    default yet (argparse prints an option's allowed values itself, as ``{a,b}``)."""
    for _, p in walk(parser):
        for action in p._actions:
            text = shown_default(action)
            if text is None or "default" in (action.help or ""):
                continue
            note = f"(default: {text.replace('%', '%%')})"  # argparse %-formats help strings
            action.help = f"{action.help} {note}" if action.help else note


def add_debug_flag(parser: argparse.ArgumentParser, help: str) -> None:
    """``--debug`` on the top parser and on every command that runs (``dynaguide --debug train ...`` or
    ``dynaguide train policy --debug ...``); below the top it sets nothing unless given."""
    parser.add_argument("--debug", action="store_true", help=help)
    for path, p in walk(parser):
        if path and not subcommands(p) and p.get_default("func") is not None:
            p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=help)
