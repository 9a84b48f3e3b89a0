"""Where a decode runs its denoiser and latent decoder: one interface, one module per engine.

    session = engine.open(adapter, condition)  # the adaptation and the caption cross once, here
    with session:
        v = session.denoise(latents, t)        # each sampler step: latents and t only
    pixels = engine.decode(latents)            # (B, C, F, h, w) latents -> (B, 3, F', H, W) pixels

- `torch`: the backbone itself in this process, the reference (what `vov decompress` runs);
- `onnx`: the exported graphs in ONNX Runtime, in this process;
- `triton`: the exported graphs served by Triton, over gRPC;
- `local`: the decoder service's in-process engine (ONNX Runtime on a repository it keeps current),
  and `make_engine`, which picks Triton or it.

`base` holds the interface (`Engine`, `Session`) and what the engines share; vov.codec.decompress
takes any engine.
"""
