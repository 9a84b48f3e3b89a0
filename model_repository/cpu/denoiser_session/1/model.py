"""Triton Python-backend model: vov's decode sessions, so the adaptation crosses to Triton once per decode.

Triton's sequence batcher (config.pbtxt) gives every decode a correlation id and routes all its
requests to the instance that received its first. The protocol, one request per sampler step:

  first request (START)  latents, t, and the decode's constants: `rank` (1,), `slots` (K,) int32 (the
                         slot layers it adapts, increasing), `factors` (N,) float32 (per slot A (rank x
                         in) then B (out x rank), row-major), `embeddings` (L, D) and `mask` (L,) (a
                         caption shorter than the graph's tokens is padded here, masked out)
  every later request    latents (C, F, h, w) and t (1,) only
  release (END)          t only, no latents: the sequence's constants are dropped, the reply is empty

The constants are checked once (`begin`), expanded into the padded `lora` row of the exported graph
(the same arithmetic as vov.serving.contract.LoraLayout.unpack, from `layout.json` beside this file)
and kept. The rows of the requests that the batcher hands over together (different decodes) go to
the stateless `denoiser` model as one batch per shape, through Triton's business-logic scripting.

Memory is bounded: at most `vov_max_sequences` decodes are held per instance, each
4 * (lora total + L * D) + L bytes; Triton keeps further decodes waiting (max_candidate_sequences)
and a full table drops its least recently used decode. A decode idle for `vov_idle_seconds` is
dropped. A request whose decode is no longer held fails with "no adaptation held"; the decoder then
sends its constants again with START. Errors: a request outside the protocol or the bounds fails
with a message starting "vov:" (the decoder does not send it again); anything else that fails (this
model, or the denoiser it calls, e.g. while Triton stops) fails with another message, and the
decoder sends the request again once Triton serves. Each request's reply is made on its own, so a
failure touches no other decode of the batch.

Nothing of vov is imported here (numpy, Triton's own module, and `vov_triton_tensors`, which `vov
export` puts beside this file), so the model runs unchanged in NVIDIA's Triton image on GPU nodes,
in front of the TensorRT plan. Every array handed to Triton, the empty reply to a release
included, goes through `vov_triton_tensors.to_triton` (the stub refuses the strides numpy gives
empty arrays and axes of length 1).
"""

import json
import os
import sys
import time
from collections import OrderedDict

HELD = "no adaptation held"  # the decoder recognises this and starts the sequence again
SESSION_FAULT = "the session model failed"  # a fault of this model: the decoder retries the request


class Refused(Exception):
    """A request outside the bounds; its message is the reply's error."""


def _parameters(config):
    return {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}


class Layout:
    """The slot layers' sizes and offsets in the padded row (see vov.serving.contract.LoraLayout).

    `unpack` is the arithmetic of vov's LoraLayout.unpack written again: this file runs in Triton's
    Python-backend stub, where vov is not installed (NVIDIA's Triton image on GPU nodes), so it cannot
    import it. tests/serving/test_session_model.py holds both to the same rows."""

    def __init__(self, data):
        self.max_rank = int(data["max_rank"])
        self.slots = [(int(s["in_features"]), int(s["out_features"]), int(s["offset"])) for s in data["slots"]]
        self.total = sum(self.max_rank * (i + o) for i, o, _ in self.slots)

    def unpack(self, np, rank, slots, factors):
        r, big = rank, self.max_rank
        expected = sum(r * (self.slots[i][0] + self.slots[i][1]) for i in slots)
        if factors.size != expected:
            raise Refused(f"factors hold {factors.size} numbers, {len(slots)} layers at rank {r} take {expected}")
        row = np.zeros(self.total, dtype=np.float32)
        pos = 0
        for i in slots:
            n_in, n_out, offset = self.slots[i]
            a = factors[pos: pos + r * n_in].reshape(r, n_in)
            pos += r * n_in
            b = factors[pos: pos + n_out * r].reshape(n_out, r)
            pos += n_out * r
            middle = offset + big * n_in
            row[offset:middle].reshape(big, n_in)[:r] = a
            row[middle: middle + n_out * big].reshape(n_out, big)[:, :r] = b
        return row


class Sequence:
    __slots__ = ("row", "embeddings", "mask", "used")

    def __init__(self, row, embeddings, mask, used):
        self.row, self.embeddings, self.mask, self.used = row, embeddings, mask, used


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
        here = os.path.join(args["model_repository"], args["model_version"])
        with open(os.path.join(here, "layout.json")) as f:
            self.layout = Layout(json.load(f))
        if self.layout.total != number("vov_lora_total"):
            raise ValueError("layout.json does not match vov_lora_total")
        self.channels = number("vov_latent_channels")
        self.max_frames = number("vov_max_frames")
        self.max_cells = number("vov_max_latent_cells")
        self.text_tokens = number("vov_text_tokens")
        self.text_dim = number("vov_text_dim")
        self.takes_mask = params.get("vov_takes_mask") == "1"
        self.capacity = max(1, number("vov_max_sequences"))
        self.idle = max(1, number("vov_idle_seconds"))
        self.target = params.get("vov_denoiser_model") or "denoiser"
        self.sequences = OrderedDict()  # correlation id -> Sequence, least recently used first
        from vov_triton_tensors import to_triton

        self.to_triton = to_triton

    # ---- tensors

    def tensor(self, pb_utils, name, array):
        return self.to_triton(pb_utils, name, array)

    def get(self, pb_utils, request, name):
        tensor = pb_utils.get_input_tensor_by_name(request, name)
        return None if tensor is None else self.np.from_dlpack(tensor)

    # ---- sequences

    def begin(self, pb_utils, request, corrid, now):
        """The decode's constants from its first request, checked and expanded."""
        np = self.np
        rank, slots = self.get(pb_utils, request, "rank"), self.get(pb_utils, request, "slots")
        factors, embeddings = self.get(pb_utils, request, "factors"), self.get(pb_utils, request, "embeddings")
        mask = self.get(pb_utils, request, "mask")
        if rank is None or slots is None or factors is None or embeddings is None:
            raise Refused("the first request of a decode carries rank, slots, factors and embeddings")
        if rank.size != 1 or not 1 <= int(rank.reshape(-1)[0]) <= self.layout.max_rank:
            raise Refused(f"rank must be one number from 1 to {self.layout.max_rank}")
        r = int(rank.reshape(-1)[0])
        slots = slots.reshape(-1).astype(np.int64)
        n = len(self.layout.slots)
        if not 1 <= slots.size <= n or slots.min() < 0 or slots.max() >= n or (np.diff(slots) <= 0).any():
            raise Refused(f"slots must be 1 to {n} increasing indices below {n}")
        factors = factors.reshape(-1)
        if factors.dtype != np.float32 or not np.isfinite(factors).all():
            raise Refused("factors must be finite float32 numbers")
        row = self.layout.unpack(np, r, slots.tolist(), factors)
        if embeddings.ndim != 3 or embeddings.shape[0] != 1 or embeddings.shape[2] != self.text_dim:
            raise Refused(f"embeddings must be (tokens, {self.text_dim}), not {tuple(embeddings.shape[1:])}")
        tokens = embeddings.shape[1]
        if not 1 <= tokens <= self.text_tokens or (not self.takes_mask and tokens != self.text_tokens):
            exact = "exactly" if not self.takes_mask else "1 to"
            raise Refused(f"embeddings must hold {exact} {self.text_tokens} tokens, not {tokens}")
        if not np.isfinite(embeddings).all():
            raise Refused("embeddings must be finite")
        if mask is None:
            mask = np.ones((1, tokens), dtype=bool)
        elif mask.shape != (1, tokens) or mask.dtype != np.bool_:
            raise Refused(f"the mask must be {tokens} booleans, one per embedding")
        if tokens < self.text_tokens:  # the graph takes text_tokens: pad with masked-out zeros
            extra = self.text_tokens - tokens
            embeddings = np.concatenate([embeddings, np.zeros((1, extra, self.text_dim), np.float32)], 1)
            mask = np.concatenate([mask, np.zeros((1, extra), bool)], 1)
        if corrid not in self.sequences:
            while len(self.sequences) >= self.capacity:
                self.sequences.popitem(last=False)
        self.sequences[corrid] = Sequence(row, np.ascontiguousarray(embeddings, dtype=np.float32),
                                          np.ascontiguousarray(mask), now)
        self.sequences.move_to_end(corrid)

    def check_latents(self, latents, t):
        if latents.ndim != 5 or latents.shape[0] != 1 or min(latents.shape) < 1:
            raise Refused(f"latents must be (channels, frames, height, width), not {tuple(latents.shape[1:])}")
        _, c, f, h, w = latents.shape
        if c != self.channels:
            raise Refused(f"latents have {c} channels, the model takes {self.channels}")
        if self.max_frames and f > self.max_frames:
            raise Refused(f"latents have {f} frames, at most {self.max_frames} allowed")
        if self.max_cells and h * w > self.max_cells:
            raise Refused(f"latents of {h}x{w} cells a frame exceed {self.max_cells}, the model's bound")
        if t.size != 1 or not 0.0 <= float(t.reshape(-1)[0]) <= 1.0:
            raise Refused("t must be one time between 0 and 1")

    def expire(self, now):
        while self.sequences:
            corrid, oldest = next(iter(self.sequences.items()))
            if now - oldest.used <= self.idle:
                break
            del self.sequences[corrid]

    # ---- requests

    def execute(self, requests):
        """One response per request, each built on its own: a request that is refused, or whose reply
        cannot be made, fails alone (an exception out of here would fail every decode of the batch)."""
        import triton_python_backend_utils as pb_utils

        np = self.np
        now = time.monotonic()
        self.expire(now)
        responses = [None] * len(requests)
        steps = []  # (request index, correlation id, latents, t, sequence, ends)
        for i, request in enumerate(requests):
            try:
                step = self.accept(pb_utils, request, now)
                if step is None:  # a release: its reply is empty
                    empty = np.zeros((1, self.channels, 0, 0, 0), dtype=np.float32)
                    responses[i] = self.reply(pb_utils, empty)
                else:
                    steps.append((i, *step))
            except Refused as e:
                responses[i] = self.failure(pb_utils, f"vov: {e}")
            except Exception as e:  # a fault of this model, not of the request: worth a retry
                responses[i] = self.failure(pb_utils, f"{SESSION_FAULT}: {e}")
        groups = {}
        for step in steps:
            groups.setdefault((step[2].shape, step[4].embeddings.shape), []).append(step)
        for members in groups.values():
            error, out = self.denoise(pb_utils, members)
            for k, (i, _, _, _, _, _) in enumerate(members):
                try:
                    responses[i] = self.failure(pb_utils, error) if error is not None else self.reply(pb_utils, out[k: k + 1])
                except Exception as e:
                    responses[i] = self.failure(pb_utils, f"{SESSION_FAULT}: {e}")
        for _, corrid, _, _, _, ends in steps:
            if ends:
                self.sequences.pop(corrid, None)
        return responses

    def accept(self, pb_utils, request, now):
        """A request's step (correlation id, latents, t, sequence, ends), or None for a release;
        Refused if it is outside the protocol or the bounds."""
        np = self.np
        start = self.get(pb_utils, request, "START")
        end = self.get(pb_utils, request, "END")
        corrid = int(self.get(pb_utils, request, "CORRID").reshape(-1)[0])
        starts, ends = bool(start.reshape(-1)[0]), bool(end.reshape(-1)[0])
        if starts:
            self.sequences.pop(corrid, None)
            self.begin(pb_utils, request, corrid, now)
        latents, t = self.get(pb_utils, request, "latents"), self.get(pb_utils, request, "t")
        if latents is None:
            if not ends:
                raise Refused("only the request that ends a decode may come without latents")
            self.sequences.pop(corrid, None)
            return None
        sequence = self.sequences.get(corrid)
        if sequence is None:
            raise Refused(f"{HELD} for this decode (dropped after {self.idle} s idle, or by a full "
                          f"table of {self.capacity}); send it again with START")
        self.check_latents(latents, t)
        sequence.used = now
        self.sequences.move_to_end(corrid)
        return corrid, latents, t.reshape(1, 1).astype(np.float32), sequence, ends

    def reply(self, pb_utils, velocity):
        return pb_utils.InferenceResponse(output_tensors=[self.tensor(pb_utils, "velocity", velocity)])

    def failure(self, pb_utils, message):
        return pb_utils.InferenceResponse(error=pb_utils.TritonError(message))

    def denoise(self, pb_utils, members):
        """One call of the stateless denoiser for these rows: (error message, None) or (None, velocity)."""
        np = self.np
        inputs = [self.tensor(pb_utils, "latents", np.concatenate([m[2] for m in members])),
                  self.tensor(pb_utils, "t", np.concatenate([m[3] for m in members])),
                  self.tensor(pb_utils, "embeddings", np.concatenate([m[4].embeddings for m in members]))]
        if self.takes_mask:
            inputs.append(self.tensor(pb_utils, "mask", np.concatenate([m[4].mask for m in members])))
        inputs.append(self.tensor(pb_utils, "lora", np.stack([m[4].row for m in members])))
        options = {}
        if hasattr(pb_utils, "PreferredMemory"):  # the plan's output comes back in host memory
            options["preferred_memory"] = pb_utils.PreferredMemory(pb_utils.TRITONSERVER_MEMORY_CPU, 0)
        try:
            request = pb_utils.InferenceRequest(model_name=self.target, inputs=inputs,
                                                requested_output_names=["velocity"], **options)
            response = request.exec()
        except Exception as e:  # the denoiser model is gone or stopping: not the request's fault
            return f"the {self.target} model failed: {e}", None
        if response.has_error():
            return response.error().message(), None
        return None, np.array(np.from_dlpack(pb_utils.get_output_tensor_by_name(response, "velocity")))

    def finalize(self):
        self.sequences.clear()
