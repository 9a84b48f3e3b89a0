"""Serving: ONNX export, the engines that run it, Triton, `vov serve` and the services' client."""
