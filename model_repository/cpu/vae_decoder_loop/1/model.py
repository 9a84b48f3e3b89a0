"""Triton Python-backend model `vae_decoder` of a chunked latent decoder (Wan): a clip's latents
decoded one latent frame at a time through the two chunk graphs, which it calls (business-logic
scripting): `vae_decoder_first` for the first latent frame (one pixel frame), `vae_decoder_next` for
every later one (`temporal_factor` pixel frames), each given the causal cache the previous call
returned (its outputs `cache_i_next` become the next call's inputs `cache_i`). The graphs are fixed in
size whatever the clip's length; this loop is the one of vov.serving.chunks, here because the stub
runs without vov. The same script serves CPU repositories (the chunk graphs in ONNX Runtime) and GPU
ones (TensorRT plans).

Each request is checked before any graph runs: latents (batch, vov_latent_channels, frames,
height, width) with 1 to vov_max_frames frames and at most vov_max_latent_cells cells a frame. A
request outside them, or one whose chunk call fails, fails alone; the model stays up.

Parameters (config.pbtxt):
  vov_latent_channels   channels of the latents
  vov_max_frames        latent frames of a request, at most
  vov_max_latent_cells  latent height x width of a frame, at most
  vov_first_model       the graph of the first latent frame
  vov_next_model        the graph of every later latent frame
  vov_caches            the number of cache tensors the graphs pass on
"""

import json
import os
import sys


def _parameters(config):
    return {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}


class ChunkFailed(Exception):
    pass


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = _parameters(config)
        for path in params.get("python_path", "").split(os.pathsep):
            if path and path not in sys.path:
                sys.path.append(path)
        import numpy as np

        self.np = np
        number = lambda key: int(params.get(key) or 0)  # noqa: E731
        self.channels = number("vov_latent_channels")
        self.max_frames = number("vov_max_frames")
        self.max_cells = number("vov_max_latent_cells")
        self.first_model = params.get("vov_first_model") or "vae_decoder_first"
        self.next_model = params.get("vov_next_model") or "vae_decoder_next"
        self.caches = number("vov_caches")
        from vov_triton_tensors import to_triton

        self.to_triton = to_triton

    def check(self, latents):
        """Why these latents are out of bounds, or None."""
        if latents.ndim != 5 or min(latents.shape) < 1:
            return f"latents must be (batch, channels, frames, height, width), not {tuple(latents.shape)}"
        _, c, f, h, w = latents.shape
        if c != self.channels:
            return f"latents have {c} channels, the model takes {self.channels}"
        if f > self.max_frames:
            return f"latents have {f} frames, at most {self.max_frames} allowed"
        if h * w > self.max_cells:
            return f"latents of {h}x{w} cells a frame exceed {self.max_cells}, the model's bound"
        return None

    def call(self, pb_utils, model, inputs, with_cache):
        """One chunk graph's outputs [pixels, cache_0_next, ...] (pixels alone without the cache)."""
        names = ["pixels"] + ([f"cache_{i}_next" for i in range(self.caches)] if with_cache else [])
        options = {}
        if hasattr(pb_utils, "PreferredMemory"):  # a plan's outputs come back in host memory
            options["preferred_memory"] = pb_utils.PreferredMemory(pb_utils.TRITONSERVER_MEMORY_CPU, 0)
        try:
            response = pb_utils.InferenceRequest(model_name=model, inputs=inputs, requested_output_names=names,
                                                 **options).exec()
        except Exception as e:  # the chunk model is gone or stopping: not the request's fault
            raise ChunkFailed(f"the {model} model failed: {e}") from None
        if response.has_error():
            raise ChunkFailed(response.error().message())
        return [pb_utils.get_output_tensor_by_name(response, name) for name in names]

    def decode(self, pb_utils, latents):
        np = self.np
        frames = latents.shape[2]
        first = self.to_triton(pb_utils, "latents", np.ascontiguousarray(latents[:, :, :1]))
        out = self.call(pb_utils, self.first_model, [first], frames > 1)
        pixels = [np.array(np.from_dlpack(out[0]))]
        for i in range(1, frames):
            inputs = [self.to_triton(pb_utils, "latents", np.ascontiguousarray(latents[:, :, i: i + 1]))]
            inputs += [pb_utils.Tensor.from_dlpack(f"cache_{k}", tensor) for k, tensor in enumerate(out[1:])]
            out = self.call(pb_utils, self.next_model, inputs, i + 1 < frames)
            pixels.append(np.array(np.from_dlpack(out[0])))
        return pixels[0] if frames == 1 else np.concatenate(pixels, axis=2)

    def execute(self, requests):
        import triton_python_backend_utils as pb_utils

        responses = []
        for request in requests:
            latents = self.np.from_dlpack(pb_utils.get_input_tensor_by_name(request, "latents"))
            problem = self.check(latents)
            if problem is None:
                try:
                    pixels = self.decode(pb_utils, latents)
                except ChunkFailed as e:
                    problem = str(e)
            if problem is not None:
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(f"vov: {problem}")))
            else:
                responses.append(pb_utils.InferenceResponse(output_tensors=[self.to_triton(pb_utils, "pixels", pixels)]))
        return responses

    def finalize(self):
        pass
