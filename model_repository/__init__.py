"""Triton model repository templates (cpu/, gpu/); `vov export` fills them in and adds the ONNX files."""
