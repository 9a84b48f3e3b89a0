"""The vov decoder service: .vov bitstream in, image out (services/decoder/server.py)."""
