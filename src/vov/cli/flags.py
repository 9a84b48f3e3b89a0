"""What several commands share: value parsers, the backbone flags, the server and TLS flags, the
decode limits, the quiet flag, and the one-line note on stderr."""

from __future__ import annotations

import argparse
import dataclasses
import sys

from vov import limits


def _number(kind, zero: bool):
    """An argparse type: a finite number of `kind` above zero (or also zero, with `zero`)."""
    wanted = "zero or a positive finite number" if zero else "a positive finite number"

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not (value >= 0 if zero else value > 0) or value == float("inf"):
            raise argparse.ArgumentTypeError(f"must be {wanted}, not {text}")
        return value

    return parse


def positive(kind):
    """An argparse type: a positive finite number of `kind` (int or float)."""
    return _number(kind, zero=False)


def non_negative(kind):
    """An argparse type: zero or a positive finite number of `kind` (int or float)."""
    return _number(kind, zero=True)


def add_backbone(p: argparse.ArgumentParser, *, name: bool, device_help: str = "cpu, cuda or cuda:N (default: the "
                                                                                "backbone's)") -> None:
    """--model and --device, and with `name` --backbone (a file names its own backbone)."""
    from vov.backbones import DEFAULT_BACKBONE

    if name:
        p.add_argument("--backbone", default=DEFAULT_BACKBONE,
                       help=f"foundation model (default: {DEFAULT_BACKBONE}; `vov backbones`)")
    p.add_argument("--model", help="the backbone's weights: a folder in the diffusers layout or a hub id "
                                   "(default: the backbone's own; a file records which weights it needs)")
    p.add_argument("--device", help=device_help)


def add_server(p: argparse.ArgumentParser, service: str, what: str) -> None:
    """--server HOST:PORT of the `service` ("encoder" or "decoder") that does `what`, and the TLS flags."""
    from vov.serving.client import DEFAULT_PORTS

    p.add_argument("--server", metavar="HOST:PORT",
                   help=f"{what} through a vov {service} service (port {DEFAULT_PORTS[service]} when HOST alone "
                        f"is given, as `vov serve` listens)")
    p.add_argument("--tls-ca", help="with --server: verify the server's certificate against this CA (PEM); "
                                    "turns TLS on")
    p.add_argument("--tls-cert", help="with --server: client certificate (PEM) for mutual TLS")
    p.add_argument("--tls-key", help="with --server: client private key (PEM) for mutual TLS")


def tls(args):
    """The ClientTls of the TLS flags (None: plaintext)."""
    from vov.serving.client import ClientTls

    return ClientTls.from_files(args.tls_ca, args.tls_cert, args.tls_key)


def add_quiet(p: argparse.ArgumentParser, what: str = "no progress bar") -> None:
    p.add_argument("-q", "--quiet", action="store_true", help=what)


def add_limits(p: argparse.ArgumentParser) -> None:
    """--max-pixels ... --max-clip-pixels, each None unless given (`limits_of` then reads the
    environment, then the defaults)."""
    group = p.add_argument_group("decode limits (files over them are refused before any work)")
    defaults = limits.Limits()
    for f in dataclasses.fields(limits.Limits):
        group.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, type=positive(int), default=None,
                           help=f"{limits.HELP[f.name]} (env {limits.ENV[f.name]}, default {getattr(defaults, f.name)})")


def limits_of(args) -> limits.Limits:
    return limits.from_args(args)


def note(text: str) -> None:
    print(f"vov: note: {text}", file=sys.stderr)
