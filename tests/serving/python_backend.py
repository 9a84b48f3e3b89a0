"""The Triton Python backend's module (`triton_python_backend_utils`) in miniature, so that the
repository's model.py files run in this process: their checks and bookkeeping are tested in
milliseconds, and the real Triton tests (tests/services) keep to what needs the server.

Calls between models (business-logic scripting) go to the other models loaded here by name.
`Tensor.from_dlpack` takes a DLPack capsule as the stub of Triton 24.10 does (python_backend's
PbTensor::FromDLPackCapsule): it reads the DLTensor, refuses strides other than the C order ones on
every axis but the first ("DLPack tensor is not contiguous") and a type it does not read, and
renames the capsule "used_dlpack", the stub's name for a capsule it took. The strides checked are
the ones numpy 2 exports, the array's own, whatever numpy runs here (numpy 1 leaves them out of the
capsule of an array it calls contiguous, so the stub checks nothing then).
"""

from __future__ import annotations

import ctypes
import importlib.util
import json
import sys
import types
from pathlib import Path

import numpy as np


class TritonModelException(Exception):
    """What the stub raises into a model's execute()."""


class _DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class _DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class _DLTensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("device", _DLDevice), ("ndim", ctypes.c_int32), ("dtype", _DLDataType),
                ("shape", ctypes.POINTER(ctypes.c_int64)), ("strides", ctypes.POINTER(ctypes.c_int64)),
                ("byte_offset", ctypes.c_uint64)]


class _DLManagedTensor(ctypes.Structure):
    pass


_DELETER = ctypes.CFUNCTYPE(None, ctypes.POINTER(_DLManagedTensor))
_DLManagedTensor._fields_ = [("dl_tensor", _DLTensor), ("manager_ctx", ctypes.c_void_p), ("deleter", _DELETER)]
_STUB_USED = b"used_dlpack"  # the name the stub gives a capsule it took
_get_pointer = ctypes.pythonapi.PyCapsule_GetPointer
_get_pointer.argtypes, _get_pointer.restype = [ctypes.py_object, ctypes.c_char_p], ctypes.c_void_p
_set_name = ctypes.pythonapi.PyCapsule_SetName
_set_name.argtypes, _set_name.restype = [ctypes.py_object, ctypes.c_char_p], ctypes.c_int
_TYPES = {(0, 8): np.int8, (0, 16): np.int16, (0, 32): np.int32, (0, 64): np.int64, (1, 8): np.uint8,
          (1, 16): np.uint16, (1, 32): np.uint32, (1, 64): np.uint64, (2, 16): np.float16, (2, 32): np.float32,
          (2, 64): np.float64}  # (DLPack type code, bits) the stub reads; kDLBool (6) is not one


def take_capsule(capsule) -> np.ndarray:
    """A copy of the array in a DLPack capsule, taken as the stub takes it (module docstring)."""
    managed = _DLManagedTensor.from_address(_get_pointer(capsule, b"dltensor"))
    tensor = managed.dl_tensor
    dims = [tensor.shape[i] for i in range(tensor.ndim)]
    if tensor.strides:
        strides = [tensor.strides[i] for i in range(tensor.ndim)]
    else:  # numpy 1: what numpy 2 would export, the producing array's own strides (in elements)
        producer = ctypes.cast(managed.manager_ctx, ctypes.py_object).value
        strides = [s // producer.itemsize for s in producer.strides]
    expected = 1
    for i in range(1, len(dims)):
        if strides[len(dims) - i] != expected:
            raise TritonModelException("DLPack tensor is not contiguous. Only contiguous DLPack tensors that "
                                       "are stored in C-Order are supported.")
        expected *= dims[len(dims) - i]
    dtype = _TYPES.get((tensor.dtype.code, tensor.dtype.bits))
    if dtype is None or tensor.dtype.lanes != 1:
        raise TritonModelException(f"DLPack type code {tensor.dtype.code} of {tensor.dtype.bits} bits is not supported")
    count = int(np.prod(dims, dtype=np.int64))
    raw = ctypes.string_at(tensor.data + tensor.byte_offset, count * np.dtype(dtype).itemsize) if count else b""
    array = np.frombuffer(raw, dtype).reshape(dims).copy()
    _set_name(capsule, _STUB_USED)
    managed.deleter(ctypes.pointer(managed))  # the stub's tensor lets go of the producer's memory
    TAKEN.append(capsule)
    return array


TAKEN: list = []  # capsules taken since the last `noisy_capsules()`, kept alive until then
_get_name = ctypes.pythonapi.PyCapsule_GetName
_get_name.argtypes, _get_name.restype = [ctypes.py_object], ctypes.c_char_p
_QUIET = b"used_dltensor"


def noisy_capsules() -> int:
    """How many capsules taken since the last call still carry the stub's name: numpy's destructor
    does not know it and writes a traceback for each (into Triton's log, in the real server). They
    are renamed quietly and let go."""
    noisy = 0
    for capsule in TAKEN:
        if _get_name(capsule) == _STUB_USED:
            noisy += 1
            _set_name(capsule, _QUIET)
    TAKEN.clear()
    return noisy


class Tensor:
    def __init__(self, name: str, array):
        self._name, self._array = name, np.asarray(array)

    @classmethod
    def from_dlpack(cls, name, tensor):
        capsule = tensor if type(tensor).__name__ == "PyCapsule" else tensor.__dlpack__(stream=None)
        return cls(name, take_capsule(capsule))

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
        self.noisy = 0  # capsules left with the stub's name (noisy_capsules)
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
        self.noisy += noisy_capsules()
        if self._previous is None:
            sys.modules.pop("triton_python_backend_utils", None)
        else:
            sys.modules["triton_python_backend_utils"] = self._previous

    def load(self, repository: Path, name: str):
        """Initialise `name`'s model.py from an exported repository, as Triton does."""
        from google.protobuf import json_format, text_format
        from tritonclient.grpc import model_config_pb2

        folder = Path(repository) / name
        if str(folder / "1") not in sys.path:  # as the stub does: the model's own modules import
            sys.path.append(str(folder / "1"))
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
