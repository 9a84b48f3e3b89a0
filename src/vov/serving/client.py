"""Calling the vov services: what `vov compress --server`, `vov decompress --server` and `vov edit
--server` use.

gRPC errors come back as vov.errors types carrying the server's message, so the command prints one
clear line: INVALID_ARGUMENT -> MediaError (compress) or BitstreamError (decompress),
FAILED_PRECONDITION -> BackboneMismatch, RESOURCE_EXHAUSTED -> LimitExceeded, UNAVAILABLE and the
rest -> VovError.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass

import numpy as np

from vov.errors import BackboneMismatch, BitstreamError, MediaError, UsageError, VovError
from vov.files import read_bytes
from vov.limits import LimitExceeded

CHUNK = 1 << 20
STAGES = {"fit": 1, "rate": 2, "search": 3}  # CompressProgress.stage -> vov.method.fit.Progress.stage
DEFAULT_PORTS = {"encoder": 50051, "decoder": 50052}  # where `vov serve` and the services listen unless told
MAX_MESSAGE = 64 << 20  # the client accepts what any server limit allows


@dataclass(frozen=True)
class ClientTls:
    """TLS for a client channel: the CA that signs the server's certificate, and for mutual TLS the
    client's own certificate and key (PEM bytes)."""

    ca: bytes | None = None
    cert: bytes | None = None
    key: bytes | None = None

    @classmethod
    def from_files(cls, ca: str | None, cert: str | None = None, key: str | None = None) -> "ClientTls | None":
        """None (plaintext) when no file is given; UsageError for half a key pair or a missing CA."""
        if not (ca or cert or key):
            return None
        if bool(cert) != bool(key):
            raise UsageError("--tls-cert and --tls-key go together (mutual TLS needs both)")
        if not ca:
            raise UsageError("TLS needs --tls-ca, the certificate authority that signed the server's certificate")
        return cls(read_bytes(ca), read_bytes(cert) if cert else None, read_bytes(key) if key else None)


_HOST_PORT = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[^:\[\]/]+)(?::(.*))?")


def target(server: str, service: str) -> str:
    """The gRPC target of `server` for `service` ("encoder" or "decoder"): HOST alone gets the
    service's default port (DEFAULT_PORTS, where `vov serve` listens); a gRPC URI (dns:///, unix:,
    ipv4:, ...) is kept as given."""
    if re.match(r"(dns|unix|unix-abstract|ipv4|ipv6|vsock):", server):
        return server  # a gRPC name resolver's URI, not HOST:PORT
    found = _HOST_PORT.fullmatch(server)
    if found is None:
        raise UsageError(f"--server is HOST:PORT, not {server!r}")
    host, port = found.groups()
    if port is None or port == "":
        return f"{host}:{DEFAULT_PORTS[service]}"
    if not (port.isdigit() and 0 < int(port) <= 65535):
        raise UsageError(f"--server is HOST:PORT with a port from 1 to 65535, not {server!r}")
    return server


def channel(server: str, tls: ClientTls | None = None):
    import grpc

    options = [("grpc.max_receive_message_length", MAX_MESSAGE), ("grpc.max_send_message_length", MAX_MESSAGE)]
    if tls is None:
        return grpc.insecure_channel(server, options=options)
    credentials = grpc.ssl_channel_credentials(root_certificates=tls.ca, private_key=tls.key,
                                               certificate_chain=tls.cert)
    return grpc.secure_channel(server, credentials, options=options)


def _error(e, server: str, bad_input: type[VovError], service: str) -> VovError:
    import grpc

    code, details = e.code(), e.details() or ""
    if code == grpc.StatusCode.UNIMPLEMENTED:
        other = "decoder" if service == "encoder" else "encoder"
        return UsageError(f"{server} is not a vov {service} service (it does not know the call; the {other}'s "
                          f"port?); `vov serve` puts the encoder on {DEFAULT_PORTS['encoder']} and the decoder on "
                          f"{DEFAULT_PORTS['decoder']}")
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return bad_input(details)
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        return BackboneMismatch(details)
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return LimitExceeded(f"{server}: {details}")
    if code == grpc.StatusCode.UNAVAILABLE:
        return VovError(f"{server}: unavailable: {details}")
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return VovError(f"{server}: no answer in time")
    return VovError(f"{server}: {code.name.lower()}: {details}")


def compress_events(server: str, image_bytes: bytes, options, timeout: float | None = None,
                    tls: ClientTls | None = None, rate=None):
    """Yield the server's CompressResponse messages (progress events, then the result); `rate` (a
    vov.options.Rate; None: the options' own target or weight) travels as the request's rate."""
    import grpc

    from vov.options import to_wire
    from vov.v1 import codec_pb2, codec_pb2_grpc

    def requests():
        yield codec_pb2.CompressRequest(options=codec_pb2.CompressOptions(**to_wire(options, rate)))
        for offset in range(0, len(image_bytes), CHUNK):
            yield codec_pb2.CompressRequest(chunk=image_bytes[offset: offset + CHUNK])

    with channel(target(server, "encoder"), tls) as ch:
        try:
            yield from codec_pb2_grpc.EncoderStub(ch).Compress(requests(), timeout=timeout)
        except grpc.RpcError as e:
            raise _error(e, server, MediaError, "encoder") from None


def remote_compress(server: str, image_bytes: bytes, options, quiet: bool = False, tls: ClientTls | None = None,
                    rate=None, on_note=None) -> bytes:
    """Compress through an encoder service; a progress bar follows the fit unless `quiet`, and
    `on_note(text)` hears what the encoder says about the file (a rate it could not reach)."""
    from vov.progress import FitBars

    result = None
    with FitBars(quiet) as bars:
        # read to the end of the stream, so the call ends as the server ends it (OK), not cancelled
        for message in compress_events(server, image_bytes, options, tls=tls, rate=rate):
            if message.HasField("progress"):
                p = message.progress
                bars.update(step=p.step, total=p.total, stage=STAGES.get(p.stage, 1), loss=p.loss,
                            est_bits=p.estimated_bits, clip=p.clip or 1, clips=p.clips or 1)
            elif message.HasField("result"):
                result = message.result
    if result is None:
        raise VovError(f"{server}: the encoder ended the call without a result")
    if result.note and on_note is not None:
        on_note(result.note)
    return result.bitstream


def decompress_events(server: str, data: bytes, timeout: float | None = None, tls: ClientTls | None = None):
    import grpc

    from vov.v1 import codec_pb2, codec_pb2_grpc

    with channel(target(server, "decoder"), tls) as ch:
        try:
            yield from codec_pb2_grpc.DecoderStub(ch).Decompress(codec_pb2.DecompressRequest(bitstream=data), timeout=timeout)
        except grpc.RpcError as e:
            raise _error(e, server, BitstreamError, "decoder") from None


def remote_decompress_png(server: str, data: bytes, timeout: float | None = None, tls: ClientTls | None = None,
                          on_step=None) -> tuple[bytes, bool]:
    """The decoded image as PNG bytes, and whether it is grey; `on_step(step, total)` follows the sampler."""
    info, parts = None, []
    for message in decompress_events(server, data, timeout, tls):
        if message.HasField("progress"):
            if on_step:
                on_step(message.progress.step, message.progress.total)
        elif message.HasField("image"):
            info = message.image
        elif message.HasField("png_chunk"):  # read to the end of the stream (the call then ends OK)
            parts.append(message.png_chunk.data)
    if info is None or not parts:
        raise VovError(f"{server}: the decoder ended the call without an image")
    return b"".join(parts), info.grey


def remote_decompress_to(server: str, data: bytes, output: str, tls: ClientTls | None = None,
                         quiet: bool = True) -> None:
    """Decompress through a decoder service into `output`: an image file, or for a clip a video file
    or a folder of frames written frame by frame as they arrive (the first before the last clip is
    decoded). A progress bar follows the decoder's sampler unless `quiet`."""
    write_stream(decompress_events(server, data, tls=tls), server, output, quiet)


def edit_request(files: list[bytes], options):
    """The EditRequest of `options` (a vov.edit.EditOptions) on `files`."""
    from vov.v1 import codec_pb2

    request = codec_pb2.EditRequest(files=list(files), weights=list(options.weights or ()), replay=options.replay)
    if options.caption is not None:
        request.caption = options.caption
    if options.strength != 1.0:
        request.strength = options.strength
    return request


def edit_events(server: str, files: list[bytes], options, timeout: float | None = None, tls: ClientTls | None = None):
    """Yield the decoder's DecompressResponse messages for an edit (vov.edit.EditOptions) of `files`."""
    import grpc

    from vov.v1 import codec_pb2_grpc

    with channel(target(server, "decoder"), tls) as ch:
        try:
            yield from codec_pb2_grpc.DecoderStub(ch).Edit(edit_request(files, options), timeout=timeout)
        except grpc.RpcError as e:
            raise _error(e, server, UsageError, "decoder") from None


def remote_edit_to(server: str, files: list[bytes], output: str, options, tls: ClientTls | None = None,
                   quiet: bool = True) -> None:
    """Edit through a decoder service into `output`, written as `remote_decompress_to` writes."""
    write_stream(edit_events(server, files, options, tls=tls), server, output, quiet)


def write_stream(events, server: str, output: str, quiet: bool = True) -> None:
    """Write a decoder's DecompressResponse stream into `output` (an image file, a video file or a
    folder of frames, the frames as they arrive); a progress bar follows the sampler unless `quiet`."""
    from PIL import Image

    from vov.media import save_image
    from vov.media.video import open_video_writer
    from vov.progress import StepBar

    bar, writer, info, parts, grey = StepBar(quiet), None, None, [], False
    try:
        for message in events:
            event = message.WhichOneof("event")
            if event == "progress":
                bar(message.progress.step, message.progress.total)
            elif event == "video":
                info = message.video
                writer = open_video_writer(output, info.width, info.height, (info.fps_num, info.fps_den), grey=info.grey)
            elif event == "frame":
                if writer is None:
                    raise VovError(f"{server}: the decoder sent a frame before the clip's description")
                frame = Image.open(io.BytesIO(message.frame.png)).convert("RGB")
                writer.write(np.asarray(frame, dtype=np.float32) / 255.0)
            elif event == "image":
                grey = message.image.grey
            elif event == "png_chunk":
                parts.append(message.png_chunk.data)
        if writer is not None:
            if writer.frames_written != info.frames:
                raise VovError(f"{server}: the decoder sent {writer.frames_written} of {info.frames} frames")
            writer.close()
        elif parts:
            img = Image.open(io.BytesIO(b"".join(parts))).convert("RGB")
            save_image(np.asarray(img, dtype=np.float32) / 255.0, output, grey=grey)
        else:
            raise VovError(f"{server}: the decoder ended the call without an image or frames")
    except BaseException:
        if writer is not None and not writer.closed:
            writer.abort()
        raise
    finally:
        bar.close()


def remote_decompress(server: str, data: bytes, tls: ClientTls | None = None,
                      quiet: bool = True) -> tuple[np.ndarray, bool]:
    """Decompress through a decoder service: (pixels float32 HxWx3 in [0, 1], grey); a progress bar
    follows the decoder's sampler unless `quiet`."""
    from PIL import Image

    from vov.progress import StepBar

    with StepBar(quiet) as on_step:
        png, grey = remote_decompress_png(server, data, tls=tls, on_step=on_step)
    img = Image.open(io.BytesIO(png)).convert("RGB")
    return np.asarray(img, dtype=np.float32) / 255.0, grey
