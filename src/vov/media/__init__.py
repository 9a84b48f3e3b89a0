"""Media in and out: still images (`vov.media.image`)."""

from vov.media.image import (MAX_PIXELS, MAX_SIDE, MIN_SIDE, Picture, check_size, load_image, pad_to_multiple,
                             save_image, to_uint8)

__all__ = ["MAX_PIXELS", "MAX_SIDE", "MIN_SIDE", "Picture", "check_size", "load_image", "pad_to_multiple",
           "save_image", "to_uint8"]
