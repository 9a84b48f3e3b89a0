"""A short run of the decoder fuzz campaign (bench/fuzz_decoder.py; the full one takes 100,000 files):
every hostile file decodes or ends in a vov error, quickly, with no memory blow-up."""

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[2] / "bench" / "fuzz_decoder.py"


@pytest.fixture(scope="module")
def fuzz():
    spec = importlib.util.spec_from_file_location("fuzz_decoder", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_hostile_files_get_typed_errors_quickly(fuzz):
    result = fuzz.campaign(1500, seed=7, workers=1, slow=2.0)
    assert result["untyped"] == [], result["untyped"][:2]
    assert result["slow"] == [], result["slow"][:2]
    assert result["peak_rss_growth_mib"] < 1024
    assert set(result["kinds"]) == set(fuzz.KINDS)
    assert result["outcomes"].get("ok", 0) > 0 and result["outcomes"].get("BitstreamError", 0) > 0


def test_mutations_are_reproducible(fuzz):
    import random

    seeds = fuzz.seeds()
    rng_a, rng_b = random.Random(5), random.Random(5)
    a = [fuzz.mutate(rng_a, seeds) for _ in range(20)]
    b = [fuzz.mutate(rng_b, seeds) for _ in range(20)]
    assert a == b and len({data for _, data in a}) > 15
