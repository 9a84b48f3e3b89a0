"""Media in and out: still images (`vov.media.image`) and clips (`vov.media.video`)."""

from vov.media.image import (MAX_PIXELS, MAX_SIDE, MIN_SIDE, Picture, check_size, load_image, pad_to_multiple,
                             save_image, to_uint8)
from vov.media.video import (DEFAULT_FPS, MAX_DURATION_S, MAX_FPS, MAX_FRAME_PIXELS, MAX_FRAMES, MAX_VIDEO_PIXELS,
                             Clip, VideoWriter, YCbCrFormat, camera_move, crop_frames, load_media, load_media_bytes,
                             load_video,
                             open_video_writer, pad_frames, read_y4m, save_video)

__all__ = ["MAX_PIXELS", "MAX_SIDE", "MIN_SIDE", "Picture", "check_size", "load_image", "pad_to_multiple",
           "save_image", "to_uint8",
           "DEFAULT_FPS", "MAX_DURATION_S", "MAX_FPS", "MAX_FRAME_PIXELS", "MAX_FRAMES", "MAX_VIDEO_PIXELS", "Clip",
           "VideoWriter", "YCbCrFormat", "camera_move", "crop_frames", "load_media", "load_media_bytes", "load_video",
           "open_video_writer", "pad_frames", "read_y4m", "save_video"]
