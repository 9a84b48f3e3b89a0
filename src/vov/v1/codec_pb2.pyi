from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("backbone", "content_hash", "latent_channels", "pixel_multiple", "max_rank", "target_presets", "engine")
    BACKBONE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_HASH_FIELD_NUMBER: _ClassVar[int]
    LATENT_CHANNELS_FIELD_NUMBER: _ClassVar[int]
    PIXEL_MULTIPLE_FIELD_NUMBER: _ClassVar[int]
    MAX_RANK_FIELD_NUMBER: _ClassVar[int]
    TARGET_PRESETS_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    backbone: str
    content_hash: str
    latent_channels: int
    pixel_multiple: int
    max_rank: int
    target_presets: _containers.RepeatedScalarFieldContainer[str]
    engine: str
    def __init__(self, backbone: _Optional[str] = ..., content_hash: _Optional[str] = ..., latent_channels: _Optional[int] = ..., pixel_multiple: _Optional[int] = ..., max_rank: _Optional[int] = ..., target_presets: _Optional[_Iterable[str]] = ..., engine: _Optional[str] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    def __init__(self, models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ...) -> None: ...

class CompressOptions(_message.Message):
    __slots__ = ("target_bpp", "kind", "rank", "dim", "targets", "steps", "sampler_steps", "seed", "backbone", "caption", "best_of", "scaling_steps", "best_of_tile", "best_of_search")
    TARGET_BPP_FIELD_NUMBER: _ClassVar[int]
    LAMBDA_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    TARGETS_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    SAMPLER_STEPS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    BACKBONE_FIELD_NUMBER: _ClassVar[int]
    CAPTION_FIELD_NUMBER: _ClassVar[int]
    BEST_OF_FIELD_NUMBER: _ClassVar[int]
    SCALING_STEPS_FIELD_NUMBER: _ClassVar[int]
    BEST_OF_TILE_FIELD_NUMBER: _ClassVar[int]
    BEST_OF_SEARCH_FIELD_NUMBER: _ClassVar[int]
    target_bpp: float
    kind: str
    rank: int
    dim: int
    targets: str
    steps: int
    sampler_steps: int
    seed: int
    backbone: str
    caption: str
    best_of: int
    scaling_steps: int
    best_of_tile: int
    best_of_search: bool
    def __init__(self, target_bpp: _Optional[float] = ..., kind: _Optional[str] = ..., rank: _Optional[int] = ..., dim: _Optional[int] = ..., targets: _Optional[str] = ..., steps: _Optional[int] = ..., sampler_steps: _Optional[int] = ..., seed: _Optional[int] = ..., backbone: _Optional[str] = ..., caption: _Optional[str] = ..., best_of: _Optional[int] = ..., scaling_steps: _Optional[int] = ..., best_of_tile: _Optional[int] = ..., best_of_search: bool = ..., **kwargs) -> None: ...

class CompressRequest(_message.Message):
    __slots__ = ("options", "chunk")
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    options: CompressOptions
    chunk: bytes
    def __init__(self, options: _Optional[_Union[CompressOptions, _Mapping]] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class CompressProgress(_message.Message):
    __slots__ = ("step", "total", "stage", "loss", "estimated_bits", "clip", "clips")
    STEP_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_BITS_FIELD_NUMBER: _ClassVar[int]
    LAMBDA_FIELD_NUMBER: _ClassVar[int]
    CLIP_FIELD_NUMBER: _ClassVar[int]
    CLIPS_FIELD_NUMBER: _ClassVar[int]
    step: int
    total: int
    stage: str
    loss: float
    estimated_bits: float
    clip: int
    clips: int
    def __init__(self, step: _Optional[int] = ..., total: _Optional[int] = ..., stage: _Optional[str] = ..., loss: _Optional[float] = ..., estimated_bits: _Optional[float] = ..., clip: _Optional[int] = ..., clips: _Optional[int] = ..., **kwargs) -> None: ...

class CompressResult(_message.Message):
    __slots__ = ("bitstream", "bpp", "width", "height", "d", "payload_bits", "estimated_bits", "seconds", "frames", "clips", "note")
    BITSTREAM_FIELD_NUMBER: _ClassVar[int]
    BPP_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    D_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_BITS_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_BITS_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    CLIPS_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    bitstream: bytes
    bpp: float
    width: int
    height: int
    d: int
    payload_bits: int
    estimated_bits: float
    seconds: float
    frames: int
    clips: int
    note: str
    def __init__(self, bitstream: _Optional[bytes] = ..., bpp: _Optional[float] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., d: _Optional[int] = ..., payload_bits: _Optional[int] = ..., estimated_bits: _Optional[float] = ..., seconds: _Optional[float] = ..., frames: _Optional[int] = ..., clips: _Optional[int] = ..., note: _Optional[str] = ...) -> None: ...

class CompressResponse(_message.Message):
    __slots__ = ("progress", "result")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    progress: CompressProgress
    result: CompressResult
    def __init__(self, progress: _Optional[_Union[CompressProgress, _Mapping]] = ..., result: _Optional[_Union[CompressResult, _Mapping]] = ...) -> None: ...

class DecompressRequest(_message.Message):
    __slots__ = ("bitstream",)
    BITSTREAM_FIELD_NUMBER: _ClassVar[int]
    bitstream: bytes
    def __init__(self, bitstream: _Optional[bytes] = ...) -> None: ...

class DecompressProgress(_message.Message):
    __slots__ = ("step", "total")
    STEP_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    step: int
    total: int
    def __init__(self, step: _Optional[int] = ..., total: _Optional[int] = ...) -> None: ...

class ImageInfo(_message.Message):
    __slots__ = ("width", "height", "grey", "png_bytes")
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    GREY_FIELD_NUMBER: _ClassVar[int]
    PNG_BYTES_FIELD_NUMBER: _ClassVar[int]
    width: int
    height: int
    grey: bool
    png_bytes: int
    def __init__(self, width: _Optional[int] = ..., height: _Optional[int] = ..., grey: bool = ..., png_bytes: _Optional[int] = ...) -> None: ...

class PngChunk(_message.Message):
    __slots__ = ("data", "last")
    DATA_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    last: bool
    def __init__(self, data: _Optional[bytes] = ..., last: bool = ...) -> None: ...

class VideoInfo(_message.Message):
    __slots__ = ("width", "height", "frames", "fps_num", "fps_den", "grey", "clips")
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    FPS_NUM_FIELD_NUMBER: _ClassVar[int]
    FPS_DEN_FIELD_NUMBER: _ClassVar[int]
    GREY_FIELD_NUMBER: _ClassVar[int]
    CLIPS_FIELD_NUMBER: _ClassVar[int]
    width: int
    height: int
    frames: int
    fps_num: int
    fps_den: int
    grey: bool
    clips: int
    def __init__(self, width: _Optional[int] = ..., height: _Optional[int] = ..., frames: _Optional[int] = ..., fps_num: _Optional[int] = ..., fps_den: _Optional[int] = ..., grey: bool = ..., clips: _Optional[int] = ...) -> None: ...

class Frame(_message.Message):
    __slots__ = ("index", "clip", "png")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    CLIP_FIELD_NUMBER: _ClassVar[int]
    PNG_FIELD_NUMBER: _ClassVar[int]
    index: int
    clip: int
    png: bytes
    def __init__(self, index: _Optional[int] = ..., clip: _Optional[int] = ..., png: _Optional[bytes] = ...) -> None: ...

class DecompressResponse(_message.Message):
    __slots__ = ("progress", "image", "png_chunk", "video", "frame")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    PNG_CHUNK_FIELD_NUMBER: _ClassVar[int]
    VIDEO_FIELD_NUMBER: _ClassVar[int]
    FRAME_FIELD_NUMBER: _ClassVar[int]
    progress: DecompressProgress
    image: ImageInfo
    png_chunk: PngChunk
    video: VideoInfo
    frame: Frame
    def __init__(self, progress: _Optional[_Union[DecompressProgress, _Mapping]] = ..., image: _Optional[_Union[ImageInfo, _Mapping]] = ..., png_chunk: _Optional[_Union[PngChunk, _Mapping]] = ..., video: _Optional[_Union[VideoInfo, _Mapping]] = ..., frame: _Optional[_Union[Frame, _Mapping]] = ...) -> None: ...

class EditRequest(_message.Message):
    __slots__ = ("files", "weights", "caption", "strength", "replay")
    FILES_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    CAPTION_FIELD_NUMBER: _ClassVar[int]
    STRENGTH_FIELD_NUMBER: _ClassVar[int]
    REPLAY_FIELD_NUMBER: _ClassVar[int]
    files: _containers.RepeatedScalarFieldContainer[bytes]
    weights: _containers.RepeatedScalarFieldContainer[float]
    caption: str
    strength: float
    replay: bool
    def __init__(self, files: _Optional[_Iterable[bytes]] = ..., weights: _Optional[_Iterable[float]] = ..., caption: _Optional[str] = ..., strength: _Optional[float] = ..., replay: bool = ...) -> None: ...
