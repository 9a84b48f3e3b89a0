"""`vov backbones`: the backbones vov knows, what each needs and its defaults."""

from __future__ import annotations

import argparse

NAME = "backbones"
HELP = "the backbones vov knows, what each needs and its defaults"


def add_arguments(p: argparse.ArgumentParser) -> None:
    pass


def run(args) -> None:
    from vov.backbones import format_listing

    print(format_listing(), end="")
