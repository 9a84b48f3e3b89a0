"""Media in and out: still images (`vov.media.image`) and clips (`vov.media.video` chooses the format's module)."""

from vov.media.bounds import DEFAULT_FPS, MAX_DURATION_S, MAX_FPS, MAX_FRAME_PIXELS, MAX_FRAMES, MAX_VIDEO_PIXELS
from vov.media.camera import camera_move
from vov.media.clip import Clip, crop_frames, pad_frames
from vov.media.colour import YCbCrFormat
from vov.media.image import (MAX_PIXELS, MAX_SIDE, MIN_SIDE, Picture, check_size, load_image, pad_to_multiple,
                             save_image, to_uint8)
from vov.media.video import load_media, load_media_bytes, load_video, open_video_writer, save_video
from vov.media.writer import VideoWriter
from vov.media.y4m import read_y4m

__all__ = ["MAX_PIXELS", "MAX_SIDE", "MIN_SIDE", "Picture", "check_size", "load_image", "pad_to_multiple",
           "save_image", "to_uint8",
           "DEFAULT_FPS", "MAX_DURATION_S", "MAX_FPS", "MAX_FRAME_PIXELS", "MAX_FRAMES", "MAX_VIDEO_PIXELS", "Clip",
           "VideoWriter", "YCbCrFormat", "camera_move", "crop_frames", "load_media", "load_media_bytes", "load_video",
           "open_video_writer", "pad_frames", "read_y4m", "save_video"]
