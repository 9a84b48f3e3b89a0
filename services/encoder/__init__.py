"""The vov encoder service: image in, .vov bitstream out (services/encoder/server.py)."""
