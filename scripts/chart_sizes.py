"""The sizes of the chart's model profiles (helm/vov/profiles/), computed from the models' published facts.

    python scripts/chart_sizes.py            # the tables docs/deploy.md shows ("Sizing")

Every size is an estimate from a formula over facts (parameter counts, files on the hub, the served
shapes), stated below, never a measurement; tests/deploy/test_profiles.py checks that the tables in
docs/deploy.md and the profiles' rendered values are these. GB = 10^9 bytes, GiB = 2^30 bytes.

Formulas (each process as vov runs it):
- weights volume: the folder's files on the hub, plus 15%; rounded up to 10 GiB.
- decoder memory (CPU node): what it loads (the transformer in fp32, as on any CPU today, though the
  Triton engine runs it; the VAE in fp32; the text encoder in bf16, on the first caption), plus, for
  each of its `workers` concurrent decodes, the decoded frames of one clip in fp32 twice (pixels and
  their 8-bit copy on the way to PNG), plus 2 GiB for Python, torch and gRPC; rounded up to 4 GiB.
- encoder memory (host RAM of the GPU node): its largest component in bf16 while it loads plus one
  fp32 shard of 5 GB (weights are read shard by shard, then moved to the GPU), plus one clip's
  frames in fp32 four times (upload, decoded frames, the fit's copies), plus 2 GiB; rounded up to 4 GiB.
- Triton memory (host): the plans read whole before they go to the GPU (TensorRT deserialisation:
  fp16, 2 bytes a parameter, the VAE decoder graphs in fp32), the held decodes of the session model
  (`bytes_per_sequence` x 32 sequences x 2 instances), /dev/shm (tmpfs counts against the limit),
  plus 4 GiB for the CUDA context, Triton and its Python stubs; rounded up to 4 GiB.
- /dev/shm: the Python backend passes each batch to the denoiser through shared memory: rows of
  (LoRA row + caption + latents in and velocity out) x max batch, twice per instance (one batch in
  flight, one being built) x 2 instances; for Wan, whose `vae_decoder` model loops its two chunk
  graphs, the causal cache in and out of one chunk call (one instance) and its four pixel frames;
  plus 512 MiB; rounded up to 1 GiB.
- plan build memory (trtexec, host): the ONNX weights in fp32 (4 bytes a parameter) held by the
  parser, the builder's fp16 copy and the serialized plan (2 + 2 bytes), plus 4 GiB; rounded up to 8 GiB.
- plan volume, per replica: the staged export (fp32 graphs: the transformer and the VAE decoder's
  graphs, Wan's two of one latent frame each) plus one key's plans (fp16), plus 20%; rounded up to 10 GiB.
- GPU memory of the encoder (which GPU to choose): every component on the GPU (the transformer and
  the text encoder in bf16, the VAE in fp32), plus a fit's activations with gradient checkpointing
  (each layer's input kept, tokens x width x 2 bytes x layers, and one layer's forward and backward
  working set, tokens x (FFN width + 4 x model width) x 2 bytes x 3), plus 2 GiB.
- GPU memory of Triton (which GPU to choose): the fp16 plans, plus the denoiser's activations at the
  largest served shape for each of its 2 instances (fused attention, as TensorRT builds it for
  fp16: per row, tokens x (FFN width + 4 x model width) x 2 bytes), plus the latent decoder's peak
  (one clip: its output in fp32 and the widest feature map, 4 frames x 192 channels at full size x
  4 bytes, three times; for Wan also the causal cache into and out of a chunk call), plus 2 GiB of
  workspace.
- a step and the longest decode the limits admit, on an A100 (the slower of the GPUs the chart's
  examples name): the denoiser's FLOPs per step at the largest shape (2 x parameters x tokens, plus
  4 x layers x tokens^2 x width for attention) for each row of a full batch, x steps x clips, at
  125 TFLOP/s (40% of its dense bf16 peak). The decoder's grace is the longest decode plus a minute,
  rounded up to a minute; Triton's drain waits for twice a step without requests (at least 15 s), and
  for at most the decoder's grace plus Triton's connection age.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass

GIB = 1 << 30
GB = 1e9
SHARD = 5 * GB
A100_FLOPS = 125e12
CONNECTION_AGE = 300  # triton.maxConnectionAgeSeconds


@dataclass(frozen=True)
class Model:
    name: str
    hub_id: str
    transformer_params: float
    width: int
    layers: int
    ffn: int
    text_encoder_params: float
    vae_params: float  # the whole VAE (the encoder runs it whole)
    vae_decoder_params: float
    files_gb: float  # the folder's files on the hub
    text_tokens: int
    text_dim: int
    slot_features: int  # sum of (in + out) over the slot layers of one block
    max_rank: int
    max_batch: int
    frames: int  # the served clip (1: images)
    width_px: int
    height_px: int
    decoder_graphs: int  # the latent decoder's graphs (Wan: the first latent frame and any later one)
    steps: int  # sampler steps of a decode at the limits
    clips: int  # clips of one decode at the limits
    workers: int  # concurrent decodes per decoder pod
    decoder_cache_per_cell: int = 0  # bytes of the latent decoder's causal cache per latent cell (fp32)

    @property
    def tokens(self) -> int:
        latent_frames = 1 + (self.frames - 1) // 4 if self.frames > 1 else 1
        return latent_frames * (self.height_px // 16) * (self.width_px // 16)

    @property
    def latent_bytes(self) -> int:
        latent_frames = 1 + (self.frames - 1) // 4 if self.frames > 1 else 1
        return 16 * latent_frames * (self.height_px // 8) * (self.width_px // 8) * 4

    @property
    def lora_row_bytes(self) -> int:
        return 4 * self.max_rank * self.slot_features * self.layers

    @property
    def bytes_per_sequence(self) -> int:  # as vov export writes it into vov_engine.json
        return self.lora_row_bytes + 4 * self.text_tokens * self.text_dim + self.text_tokens

    @property
    def clip_pixel_bytes(self) -> int:
        return self.frames * self.width_px * self.height_px * 3 * 4


# Facts: parameter counts and widths from the models' configs; file sizes as the hub lists them.
# Wan2.1's VAE keeps 32 causal caches of two frames each, 605312 bytes per latent cell in all
# (vov.serving.graphs.chunk_caches of its real config): 3.8 GB at 832x480.
WAN_DECODER_CACHE = 605312
WAN_1_3B = Model("wan-1.3b", "Wan-AI/Wan2.1-T2V-1.3B-Diffusers", 1.42e9, 1536, 30, 8960, 5.68e9, 127e6, 73e6,
                 files_gb=5.68 + 22.73 + 0.508 + 0.022, text_tokens=512, text_dim=4096,
                 slot_features=8 * (1536 + 1536) + (1536 + 8960) + (8960 + 1536), max_rank=2, max_batch=2,
                 frames=81, width_px=832, height_px=480, decoder_graphs=2, steps=50, clips=2, workers=4,
                 decoder_cache_per_cell=WAN_DECODER_CACHE)
WAN_14B = Model("wan-14b", "Wan-AI/Wan2.1-T2V-14B-Diffusers", 14.3e9, 5120, 40, 13824, 5.68e9, 127e6, 73e6,
                files_gb=57.2 + 22.73 + 0.508 + 0.022, text_tokens=512, text_dim=4096,
                slot_features=8 * (5120 + 5120) + (5120 + 13824) + (13824 + 5120), max_rank=2, max_batch=1,
                frames=81, width_px=1280, height_px=720, decoder_graphs=2, steps=50, clips=1, workers=2,
                decoder_cache_per_cell=WAN_DECODER_CACHE)
QWEN_IMAGE = Model("qwen-image", "Qwen/Qwen-Image", 20.4e9, 3072, 60, 12288, 8.29e9, 127e6, 73e6,
                   files_gb=40.9 + 16.6 + 0.254 + 0.012, text_tokens=1024, text_dim=3584,
                   slot_features=8 * (3072 + 3072) + (3072 + 12288) + (12288 + 3072), max_rank=4, max_batch=4,
                   frames=1, width_px=1328, height_px=1328, decoder_graphs=1, steps=50, clips=1, workers=8)
MODELS = (WAN_1_3B, WAN_14B, QWEN_IMAGE)


def up(value_bytes: float, step_gib: int) -> int:
    """Bytes -> GiB, rounded up to a multiple of `step_gib`."""
    return int(math.ceil(value_bytes / GIB / step_gib) * step_gib)


def max_frames(m: Model) -> int:
    """Frames of the longest file the limits admit: `clips` clips sharing their boundary frames."""
    return m.frames + (m.clips - 1) * (m.frames - 1) if m.frames > 1 else 1


def decoder_cache_bytes(m: Model) -> int:
    """The causal cache a chunked latent decoder passes from one latent frame to the next."""
    return m.decoder_cache_per_cell * (m.height_px // 8) * (m.width_px // 8)


def shm_gib(m: Model) -> int:
    per_row = m.lora_row_bytes + 4 * m.text_tokens * m.text_dim + 2 * m.latent_bytes
    chunk = 2 * decoder_cache_bytes(m) + 4 * 3 * m.width_px * m.height_px * 4 if m.decoder_cache_per_cell else 0
    return up(per_row * m.max_batch * 2 * 2 + chunk + 512 * (1 << 20), 1)


def plan_bytes(m: Model) -> float:
    return 2 * m.transformer_params + 4 * m.vae_decoder_params * m.decoder_graphs


def sizes(m: Model) -> dict[str, int]:
    """GiB per setting (and seconds for the decode times) of one model profile."""
    bf16 = max(2 * m.transformer_params, 2 * m.text_encoder_params)
    decoder = 4 * m.transformer_params + 4 * m.vae_params + 2 * m.text_encoder_params
    decoder += m.workers * 2 * m.clip_pixel_bytes + 2 * GIB
    encoder = bf16 + SHARD + 4 * m.clip_pixel_bytes + 2 * GIB
    sessions = m.bytes_per_sequence * 32 * 2
    triton = plan_bytes(m) + sessions + shm_gib(m) * GIB + 4 * GIB
    build = 8 * m.transformer_params + 4 * GIB
    staged = 4 * m.transformer_params + 4 * m.vae_decoder_params * m.decoder_graphs
    activations = 2 * m.max_batch * m.tokens * (m.ffn + 4 * m.width) * 2
    vae_peak = m.clip_pixel_bytes + 3 * 4 * 192 * m.width_px * m.height_px * 4 + 2 * decoder_cache_bytes(m)
    gpu = plan_bytes(m) + activations + vae_peak + 2 * GIB
    fit = m.tokens * m.width * 2 * m.layers + m.tokens * (m.ffn + 4 * m.width) * 2 * 3
    encoder_gpu = 2 * m.transformer_params + 2 * m.text_encoder_params + 4 * m.vae_params + fit + 2 * GIB
    flops = 2 * m.transformer_params * m.tokens + 4 * m.layers * m.tokens ** 2 * m.width
    step = m.max_batch * flops / A100_FLOPS
    longest = step * m.steps * m.clips
    grace = int(math.ceil((longest + 60) / 60) * 60)
    return {
        "weights_volume": up(m.files_gb * GB * 1.15, 10),
        "decoder_memory": up(decoder, 4),
        "encoder_memory": up(encoder, 4),
        "triton_memory": up(triton, 4),
        "shm": shm_gib(m),
        "plan_build_memory": up(build, 8),
        "plan_volume": up((staged + plan_bytes(m)) * 1.2, 10),
        "triton_gpu_memory": up(gpu, 1),
        "encoder_gpu_memory": up(encoder_gpu, 1),
        "step_seconds": int(math.ceil(step)),
        "longest_decode_seconds": int(math.ceil(longest)),
        "decoder_grace_seconds": grace,
        "drain_quiet_seconds": max(15, 2 * int(math.ceil(step))),
        "drain_max_seconds": grace + CONNECTION_AGE,
        # what the chart checks the grace against: the limits' work (pixels x frames x steps) per second
        "decode_rate": int(m.width_px * m.height_px * max_frames(m) * m.steps / longest),
    }


def facts_table() -> str:
    rows = ["| model | transformer | text encoder | files on the hub | served shape | tokens a step | LoRA row + caption (a held decode) |",
            "|---|---|---|---|---|---|---|"]
    for m in MODELS:
        shape = (f"{m.frames} frames of {m.width_px}x{m.height_px}" if m.frames > 1 else f"{m.width_px}x{m.height_px}")
        rows.append(f"| `{m.hub_id}` | {m.transformer_params / 1e9:.2f}B ({2 * m.transformer_params / GB:.1f} GB bf16) "
                    f"| {m.text_encoder_params / 1e9:.2f}B ({2 * m.text_encoder_params / GB:.1f} GB bf16) "
                    f"| {m.files_gb:.1f} GB | {shape}, batch {m.max_batch}, `R_max` {m.max_rank} "
                    f"| {m.tokens} | {m.bytes_per_sequence / 1e6:.0f} MB |")
    return "\n".join(rows)


SIZE_COLUMNS = [("weights_volume", "weights volume"), ("decoder_memory", "decoder memory"),
                ("encoder_memory", "encoder memory"), ("triton_memory", "Triton memory"), ("shm", "Triton /dev/shm"),
                ("plan_build_memory", "plan build memory"), ("plan_volume", "plan volume"),
                ("triton_gpu_memory", "Triton GPU memory"), ("encoder_gpu_memory", "encoder GPU memory")]


def sizes_table() -> str:
    head = "| profile | " + " | ".join(label for _, label in SIZE_COLUMNS) + " | a step / the longest decode (A100) |"
    rows = [head, "|---" * (len(SIZE_COLUMNS) + 2) + "|"]
    for m in MODELS:
        s = sizes(m)
        cells = [f"{s[key]} GiB" for key, _ in SIZE_COLUMNS]
        rows.append(f"| `{m.name}` | " + " | ".join(cells) + f" | {s['step_seconds']} s / {s['longest_decode_seconds']} s |")
    return "\n".join(rows)


def main() -> int:
    sys.stdout.write(facts_table() + "\n\n" + sizes_table() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
