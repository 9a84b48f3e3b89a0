"""Triton Python-backend model: one exported vov ONNX graph run by ONNX Runtime on the CPU.

The same file serves `denoiser` and every latent decoder graph (`vae_decoder`, and a chunked
decoder's `vae_decoder_first` and `vae_decoder_next`, whose cache outputs it returns with the pixels);
the graph is `model.onnx` beside this file (with `model.onnx.data` where its weights are external). Triton's
dynamic batcher hands over several requests at once; those whose inputs share a shape (apart from
the batch axis) run as one ONNX Runtime call, and each request gets its own rows back. Rows are
independent: in the denoiser every row carries its own caption and packed adaptation (`lora`).

Every request's shapes are checked before ONNX Runtime sees them (`check`): the latent channels, the
frames (exactly `vov_frames` when the graph bakes the count, else at most `vov_max_frames`), at most
`vov_max_latent_cells` latent cells a frame (the bound that keeps the graph's attention matrices,
which grow with the square of a frame's tokens, within the decoder's stated memory), embeddings of
`vov_text_dim` wide and exactly `vov_text_tokens` long, a mask as long as the embeddings, and a
`lora` row of exactly `vov_lora_total` floats. A request outside them fails alone with an error
naming the bound; the model stays up.

Parameters (config.pbtxt):
  python_path           extra import paths (the environment that holds onnxruntime), ':'-separated
  intra_op_threads      ONNX Runtime threads per instance (0: ONNX Runtime decides)
  vov_latent_channels   channels of the latents
  vov_frames            latent frames the graph takes (-1: any up to vov_max_frames)
  vov_max_frames        latent frames of a request, at most
  vov_max_latent_cells  latent height x width of a frame, at most
  vov_text_tokens       caption tokens (denoiser only; shorter captions come padded, masked out)
  vov_text_dim          width of the caption embeddings (denoiser only)
  vov_lora_total        length of the packed adaptation row (denoiser only)
"""

import json
import os
import sys


def _parameters(config):
    return {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}


def _int(params, key):
    return int(params.get(key) or 0)


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = _parameters(config)
        for path in params.get("python_path", "").split(os.pathsep):
            if path and path not in sys.path:
                sys.path.append(path)
        import numpy as np
        import onnxruntime as ort

        self.np = np
        options = ort.SessionOptions()
        options.intra_op_num_threads = _int(params, "intra_op_threads")
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        graph = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
        self.session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
        self.inputs = [(i.name, len(i.shape)) for i in self.session.get_inputs()]
        self.outputs = [o.name for o in self.session.get_outputs()]  # the graph's, in its order
        self.channels = _int(params, "vov_latent_channels")
        self.frames = _int(params, "vov_frames")
        self.max_frames = _int(params, "vov_max_frames")
        self.max_cells = _int(params, "vov_max_latent_cells")
        self.text_tokens = _int(params, "vov_text_tokens")
        self.text_dim = _int(params, "vov_text_dim")
        self.lora_total = _int(params, "vov_lora_total")
        self.has_mask = any(name == "mask" for name, _ in self.inputs)
        from vov_triton_tensors import to_triton  # beside this file (vov export); numpy 1 and 2 alike

        self._to_triton = to_triton

    def to_triton(self, pb_utils, name, array):
        return self._to_triton(pb_utils, name, array)

    def check(self, row) -> str | None:
        """Why this request's inputs are out of bounds, or None."""
        values = {name: value for (name, _), value in zip(self.inputs, row)}
        batch = None
        for name, value in values.items():
            if value.ndim == 0 or (batch is not None and value.shape[0] != batch):
                return f"every input needs the same batch axis ({name} has shape {tuple(value.shape)})"
            batch = value.shape[0]
        latents = values.get("latents")
        if latents is not None:
            if latents.ndim != 5 or min(latents.shape) < 1:
                return f"latents must be (batch, channels, frames, height, width), not {tuple(latents.shape)}"
            _, c, f, h, w = latents.shape
            if self.channels and c != self.channels:
                return f"latents have {c} channels, the model takes {self.channels}"
            if self.frames > 0 and f != self.frames:
                return f"latents have {f} frames, this graph takes exactly {self.frames}"
            if self.max_frames and f > self.max_frames:
                return f"latents have {f} frames, at most {self.max_frames} allowed"
            if self.max_cells and h * w > self.max_cells:
                return f"latents of {h}x{w} cells a frame exceed {self.max_cells}, the model's bound"
        t = values.get("t")
        if t is not None and t.ndim != 1:
            return f"t must hold one time per row, not shape {tuple(t.shape)}"
        embeddings = values.get("embeddings")
        if embeddings is not None:
            if embeddings.ndim != 3 or embeddings.shape[1] < 1:
                return f"embeddings must be (batch, tokens, width), not {tuple(embeddings.shape)}"
            if self.text_dim and embeddings.shape[2] != self.text_dim:
                return f"embeddings are {embeddings.shape[2]} wide, the model takes {self.text_dim}"
            if self.text_tokens and embeddings.shape[1] != self.text_tokens:
                return f"embeddings must hold exactly {self.text_tokens} tokens, not {embeddings.shape[1]}"
            mask = values.get("mask")
            if mask is not None and mask.shape != embeddings.shape[:2]:
                return f"the mask must be (batch, tokens) like the embeddings, not {tuple(mask.shape)}"
        lora = values.get("lora")
        if lora is not None and self.lora_total and lora.shape[1:] != (self.lora_total,):
            return f"lora rows must hold {self.lora_total} floats, not {tuple(lora.shape[1:])}"
        return None

    def execute(self, requests):
        import triton_python_backend_utils as pb_utils

        np = self.np
        arrays = []
        for request in requests:
            row = []
            for name, rank in self.inputs:
                value = np.from_dlpack(pb_utils.get_input_tensor_by_name(request, name))
                if value.ndim == rank + 1 and value.shape[-1] == 1:  # Triton's [batch, 1] for a per-row scalar (t)
                    value = value.reshape(value.shape[:-1])
                row.append(value)
            arrays.append(row)
        responses = [None] * len(requests)
        groups = {}
        for i, row in enumerate(arrays):
            problem = self.check(row)
            if problem is not None:
                responses[i] = pb_utils.InferenceResponse(error=pb_utils.TritonError(f"vov: {problem}"))
                continue
            groups.setdefault(tuple(v.shape[1:] for v in row), []).append(i)
        for members in groups.values():
            feed = {name: np.concatenate([arrays[i][k] for i in members]) for k, (name, _) in enumerate(self.inputs)}
            try:
                outs = self.session.run(None, feed)
            except Exception as e:  # a request the graph cannot take fails alone (refused), the model stays up
                for i in members:
                    responses[i] = pb_utils.InferenceResponse(error=pb_utils.TritonError(f"vov: onnxruntime: {e}"))
                continue
            start = 0
            for i in members:
                n = arrays[i][0].shape[0]
                tensors = [self.to_triton(pb_utils, name, np.ascontiguousarray(out[start: start + n]))
                           for name, out in zip(self.outputs, outs)]
                responses[i] = pb_utils.InferenceResponse(output_tensors=tensors)
                start += n
        return responses

    def finalize(self):
        self.session = None
