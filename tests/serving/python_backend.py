"""The Triton Python backend's module (`triton_python_backend_utils`) in miniature, so that the
repository's model.py files run in this process: their checks and bookkeeping are tested in
milliseconds, and the real Triton tests (tests/services) keep to what needs the server.

Calls between models (business-logic scripting) go to the other models loaded here by name.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from pathlib import Path

import numpy as np


class Tensor:
    def __init__(self, name: str, array):
        self._name, self._array = name, np.asarray(array)

    @classmethod
    def from_dlpack(cls, name, array):
        return cls(name, np.from_dlpack(array))

    def name(self) -> str:
        return self._name

    def as_numpy(self) -> np.ndarray:
        return self._array

    def __dlpack__(self, stream=None):
        return self._array.__dlpack__()

    def __dlpack_device__(self):
        return self._array.__dlpack_device__()


class TritonError:
    def __init__(self, message: str):
        self._message = message

    def message(self) -> str:
        return self._message


class InferenceResponse:
    def __init__(self, output_tensors=(), error=None):
        self.output_tensors, self._error = list(output_tensors), error

    def has_error(self) -> bool:
        return self._error is not None

    def error(self):
        return self._error


class Request:
    """An incoming request: its inputs by name (Triton adds START, END and CORRID for sequences)."""

    def __init__(self, inputs: dict[str, np.ndarray]):
        self.inputs = {name: Tensor(name, value) for name, value in inputs.items()}


class Backend:
    """The fake module, with the models it can reach by name."""

    def __init__(self):
        self.models: dict[str, object] = {}
        self.calls: list[tuple[str, dict]] = []  # (model, {input: shape}) of every call between models
        module = types.ModuleType("triton_python_backend_utils")
        module.Tensor, module.TritonError, module.InferenceResponse = Tensor, TritonError, InferenceResponse
        module.get_input_tensor_by_name = lambda request, name: request.inputs.get(name)
        module.get_output_tensor_by_name = lambda response, name: next(
            (t for t in response.output_tensors if t.name() == name), None)
        backend = self

        class InferenceRequest:
            def __init__(self, model_name, inputs, requested_output_names, **options):
                self.model_name, self.inputs = model_name, inputs

            def exec(self):
                backend.calls.append((self.model_name, {t.name(): t.as_numpy().shape for t in self.inputs}))
                request = Request({t.name(): t.as_numpy() for t in self.inputs})
                return backend.models[self.model_name].execute([request])[0]

        module.InferenceRequest = InferenceRequest
        self.module = module

    def __enter__(self) -> "Backend":
        self._previous = sys.modules.get("triton_python_backend_utils")
        sys.modules["triton_python_backend_utils"] = self.module
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is None:
            sys.modules.pop("triton_python_backend_utils", None)
        else:
            sys.modules["triton_python_backend_utils"] = self._previous

    def load(self, repository: Path, name: str):
        """Initialise `name`'s model.py from an exported repository, as Triton does."""
        from google.protobuf import json_format, text_format
        from tritonclient.grpc import model_config_pb2

        folder = Path(repository) / name
        config = text_format.Parse((folder / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
        spec = importlib.util.spec_from_file_location(f"triton_model_{name}", folder / "1" / "model.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        model = module.TritonPythonModel()
        model.initialize({"model_config": json.dumps(json_format.MessageToDict(config, preserving_proto_field_name=True)),
                          "model_repository": str(folder), "model_version": "1"})
        self.models[name] = model
        return model


def sequence_request(corrid: int, start: bool = False, end: bool = False, **inputs) -> Request:
    """A request of a sequence, with the control inputs Triton's sequence batcher adds (config.pbtxt)."""
    controls = {"START": np.array([[int(start)]], np.int32), "END": np.array([[int(end)]], np.int32),
                "CORRID": np.array([[corrid]], np.uint64)}
    return Request({**controls, **{k: v for k, v in inputs.items() if v is not None}})


def output(response, name: str = "velocity") -> np.ndarray:
    assert not response.has_error(), response.error().message()
    return next(t for t in response.output_tensors if t.name() == name).as_numpy()


def error(response) -> str:
    assert response.has_error(), "the request was accepted"
    return response.error().message()
