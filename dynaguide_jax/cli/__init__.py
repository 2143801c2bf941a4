"""The ``dynaguide`` command. Every subcommand has ``--help``; defaults run offline on CPU.

One module per subcommand adds its parser and owns its handler; ``build_parser`` assembles them and
``main`` runs one, turning bad input (a missing file, a wrong value, an unwritable or full output) into
one line and exit status 2, or with ``--debug`` letting the exception through with its traceback."""
from __future__ import annotations

import argparse
import os
import sys

from dynaguide_jax.cli import bench, convert, data, demo, experiment, sweep, train
from dynaguide_jax.cli import eval as evaluate
from dynaguide_jax.cli.parser_tree import add_debug_flag, show_defaults

COMMANDS = (demo, experiment, sweep, convert, data, train, evaluate, bench)  # in --help order
DEBUG_HELP = "on an error, raise it with its full traceback instead of printing one line (exit status 2)"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dynaguide", description="DynaGuide in JAX: steer frozen diffusion "
                                "policies with latent-dynamics guidance.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub)
    add_debug_flag(p, DEBUG_HELP)
    show_defaults(p)
    return p


def error_message(e: Exception, args: argparse.Namespace) -> str | None:
    """The one line ``main`` prints for ``e``, or None for an error that is a bug (its traceback shows)."""
    from dynaguide_jax.outputs import NO_SPACE, OutputError, is_disk_full

    if isinstance(e, OutputError):  # names the path and what to do (a full disk during training too)
        return str(e)
    if is_disk_full(e):
        out = next((v for v in (getattr(args, "out", None), getattr(args, "out_dir", None))
                    if isinstance(v, str)), None)
        return (f"{NO_SPACE} while writing {os.path.abspath(out)}" if out else NO_SPACE) + ": free space and rerun"
    if type(e).__name__ == "CalvinEnvMissing":  # an optional dependency: the message says how to install it
        return str(e)
    if isinstance(e, (FileNotFoundError, KeyError, ValueError)):
        return str(e.args[0] if isinstance(e, KeyError) and e.args else e)
    return None


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    first = 1 if argv[:1] == ["--debug"] else 0  # the benchmark always shows tracebacks
    if argv[first:first + 1] == ["bench"]:  # the benchmark owns its flags (and its --help)
        return bench.run_guided_inference(argv[first + 1:], prog="dynaguide bench")
    args = build_parser().parse_args(argv)
    from dynaguide_jax.outputs import quiet_disk_full_reports

    try:
        with quiet_disk_full_reports():  # a full disk: this one message, not a traceback per pending write
            return args.func(args)
    except Exception as e:
        message = None if args.debug else error_message(e, args)
        if message is None:
            raise
        print(f"dynaguide {args.command}: error: {message}", file=sys.stderr)
        return 2
