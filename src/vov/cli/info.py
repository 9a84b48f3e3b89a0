"""`vov info`: a .vov file's header, clips and sizes."""

from __future__ import annotations

import argparse

from vov.files import read_bytes

NAME = "info"
HELP = "show a .vov file's header, clips and sizes"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input")


def run(args) -> None:
    from vov.format import bitstream

    data = read_bytes(args.input)
    f = bitstream.load(data)
    sizes = bitstream.part_sizes(f)
    if f.sampler == 0 and "search" in sizes:  # a plain file's search fields are unused header bytes
        sizes["header"] += sizes.pop("search")
    # the parts are measured as the current format lays them out; a 1.0 file holds the same priors,
    # payload and checksum in a header of its own size
    sizes["header"] = len(data) - sum(size for part, size in sizes.items() if part != "header")
    pixels = f.pixels
    print(f"format      {f.version[0]}.{f.version[1]}")
    print(f"backbone    {f.backbone} ({f.backbone_hash.hex()})")
    rate = f", {f.fps_num}/{f.fps_den} fps" if f.frames > 1 else ""
    print(f"media       {f.width}x{f.height}, {f.frames} frame(s){rate}, {'grey' if f.colour else 'RGB'}")
    print(f"adapter     {f.adapter_name}, rank {f.rank}, d {f.d}, seed {f.adapter_seed}, targets {f.targets}")
    schedule = "uniform" if f.schedule == 0 else f"flow shift {f.shift:g}"
    print(f"sampler     {f.sampler_steps} {'Euler' if f.sampler == 0 else 'SDE'} steps ({schedule}), "
          f"noise seed {f.noise_seed}, guidance {f.guidance:g}")
    if f.sampler == 1:
        index_bits = sum(8 * len(s.search) for s in f.segments)
        print(f"best-of-N   N = {1 << f.search_bits}, {f.sde_steps} scaled steps from step {f.sde_start}, g cap "
              f"{f.g_cap:g}; indices {index_bits} bits in all ({f.search_bits} bits each)")
        if f.search_tile:
            print(f"tiles       {f.tile_rows} x {f.tile_cols} tiles of {f.search_tile} x {f.search_tile} latent cells, "
                  f"one index each a step")
    if f.caption:
        print(f"caption     {f.caption}")
    for i, (s, size) in enumerate(zip(f.segments, bitstream.segment_sizes(f))):
        print(f"clip {i:<6} {s.frames} frame(s), {size} bytes, {8 * size / (s.frames * f.width * f.height):.5f} bpp, "
              f"step {s.step_size:.6g}, |q| <= {s.qmax}, prior {len(s.prior_weights)} logistics")
    print(f"size        {len(data)} bytes = " + " + ".join(f"{k} {v}" for k, v in sizes.items()))
    print(f"rate        {8 * len(data) / pixels:.5f} bpp ({8 * len(data)} bits / {pixels} pixels)")
