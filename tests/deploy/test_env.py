"""Every environment variable the chart gives a vov container is one that program reads.

The set a program reads is taken from the program itself, never from a list kept here:
- its `--help`, where every flag names its variable ("(env VOV_...)");
- the source of every module of services/ and src/vov/ it has imported once started, for the
  names it reads directly: env_default("NAME", ...), os.environ.get("NAME"), os.environ["NAME"],
  os.getenv("NAME").
A variable the chart sets that no code reads would be silently ignored in the cluster.
"""

from __future__ import annotations

import ast
import functools
import re
import subprocess
import sys
from pathlib import Path

import pytest
from deploy_helpers import PROFILES, ROOT, of_kind, pod_spec, render, vov_service_of


def _literal_reads(source: str) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            f = node.func
            called = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
            on_environ = isinstance(f, ast.Attribute) and isinstance(f.value, (ast.Name, ast.Attribute)) \
                and (getattr(f.value, "id", None) == "environ" or getattr(f.value, "attr", None) == "environ")
            if called in ("env_default", "getenv") or (called == "get" and on_environ):
                names.add(node.args[0].value)
        if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant) \
                and getattr(node.value, "attr", getattr(node.value, "id", None)) == "environ":
            names.add(node.slice.value)
    return names


PROBE = """
import argparse, sys
from vov_services.{service} import server
parser = argparse.ArgumentParser(prog="vov-{service}")
server.add_arguments(parser)
print(parser.format_help())  # the text of --help
print("--- modules ---")
for m in list(sys.modules.values()):
    f = getattr(m, "__file__", None)
    f and print(f)
"""


@functools.lru_cache(maxsize=None)
def names_read_by(service: str) -> frozenset[str]:
    probe = subprocess.run([sys.executable, "-c", PROBE.format(service=service)], capture_output=True, text=True,
                           timeout=120, env={"PATH": "/usr/bin:/bin", "COLUMNS": "200"})
    assert probe.returncode == 0, probe.stderr
    help_text, modules = probe.stdout.split("--- modules ---")
    names = set(re.findall(r"\benv\s+([A-Z][A-Z0-9_]+)", help_text))
    ours = [Path(f).resolve() for f in modules.split()]
    ours = [f for f in ours if f.suffix == ".py" and (ROOT / "services" in f.parents or ROOT / "src" / "vov" in f.parents)]
    assert any(f.name == "server.py" and f.parent.name == service for f in ours)
    for f in ours:
        names |= _literal_reads(f.read_text())
    return frozenset(names)


def test_the_reader_finds_the_names_it_should():
    """The derivation itself: names known to be read through each route are found."""
    assert _literal_reads('x = env_default("A_B", 1)\ny = os.environ.get("C")\nz = os.environ["D"]\nos.getenv("E")') \
        == {"A_B", "C", "D", "E"}
    decoder = names_read_by("decoder")
    # a flag's variable (from --help), and one read without a flag (VOV_LOG_LEVEL, in services/common.py)
    assert {"VOV_DECODER_PORT", "VOV_LOG_LEVEL", "VOV_METRICS_PORT"} <= decoder
    assert "VOV_DECODER_PORT" not in names_read_by("encoder")


@pytest.mark.parametrize("profile", PROFILES)
def test_every_variable_the_chart_sets_is_read_by_its_program(profile):
    checked = 0
    for doc in of_kind(render(profile), "Deployment"):
        for container in pod_spec(doc)["containers"]:
            service = vov_service_of(container)
            if not service:
                continue
            set_here = {e["name"] for e in container.get("env", [])}
            unread = sorted(set_here - names_read_by(service))
            assert not unread, f"{profile}: the {service} does not read {unread}"
            checked += 1
    assert checked >= 1


@pytest.mark.parametrize("profile", PROFILES)
def test_numbers_reach_the_programs_as_integers(profile):
    """YAML numbers pass through Helm as floats: 67108864 would arrive as '6.7108864e+07'."""
    for doc in of_kind(render(profile), "Deployment"):
        for container in pod_spec(doc)["containers"]:
            for e in container.get("env", []):
                assert not re.fullmatch(r"[0-9.]+e[+-][0-9]+", str(e.get("value", ""))), (profile, e)
