"""The `vov` command: one module per subcommand, each a thin shell over the library.

A subcommand's module names itself (`NAME`, `HELP`), adds its flags (`add_arguments(parser)`) and
does its work (`run(args)`); adding a command is one module and one line in `COMMANDS`. The flags
several commands share are in `vov.cli.flags`.

Bad input ends with one line `vov: error: ...` and exit status 2.
"""

from __future__ import annotations

import argparse
import sys

from vov.cli import backbones, bench, compress, data, decompress, edit, export, info, serve, train_base
from vov.errors import VovError

COMMANDS = (compress, decompress, info, backbones, serve, export, bench, edit, train_base, data)


class Parser(argparse.ArgumentParser):
    """Bad flags end as every other bad input does: one line `vov: error: ...`, exit status 2."""

    def error(self, message: str):
        self.exit(2, f"vov: error: {message} (`{self.prog} --help` lists the options)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="vov", description="Images and clips stored as adaptations of a diffusion model.")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_arguments(sub.add_parser(command.NAME, help=command.HELP))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    run = {command.NAME: command.run for command in COMMANDS}[args.command]
    try:
        run(args)
    except VovError as e:
        print(f"vov: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vov: interrupted", file=sys.stderr)
        return 130
    return 0
