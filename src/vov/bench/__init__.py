"""Evaluation: rate-distortion against classical codecs."""
