"""numpy arrays into Triton tensors, in a Python-backend model, under numpy 1 and numpy 2 alike.

`vov export` puts this file beside every Python-backend model.py of a repository (the stub puts a
model's version directory on the import path), so each model imports it as `vov_triton_tensors`.

Two facts about the stub of Triton 24.10 (Python backend r24.10) shape it:
- its numpy bridge, `pb_utils.Tensor(name, array)`, was built against numpy 1 and hands Triton
  empty tensors under numpy 2, so arrays cross by DLPack (`pb_utils.Tensor.from_dlpack`);
- `from_dlpack` refuses a tensor unless the strides of every axis but the first are exactly the C
  order ones of its shape (the last axis 1 element, each earlier one the product of the sizes
  after it), while numpy leaves strides free where no element depends on them: an empty array
  (np.zeros((1, 16, 0, 0, 0)) has strides (0, 0, 0, 0, 0)) and an axis of length 1. Such an array
  is contiguous to numpy and "not contiguous" to the stub, so it is given the stub's strides first
  (the same memory, viewed with the strides the stub computes).
After taking a capsule the stub renames it "used_dlpack" where DLPack says "used_dltensor", and
numpy's capsule destructor, not recognising the name, prints a traceback for every tensor into
Triton's log; the capsule is given the DLPack name once the stub has taken it.

Booleans cross through the numpy bridge: DLPack's boolean is not a type the stub reads. A read-only
array (ONNX Runtime returns a graph's constant outputs read-only) is copied first: numpy refuses to
export one by DLPack.
"""

import ctypes

import numpy as np

CONSUMED = b"used_dltensor"  # DLPack's name for a capsule whose tensor a consumer took

_set_name = ctypes.pythonapi.PyCapsule_SetName
_set_name.argtypes = [ctypes.py_object, ctypes.c_char_p]
_set_name.restype = ctypes.c_int


def stub_strides(shape, itemsize):
    """The strides (bytes) the stub requires of an array of `shape`: C order, computed as it computes them."""
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step * itemsize)
        step *= size
    return tuple(reversed(strides))


def to_triton(pb_utils, name, array):
    """A Triton tensor named `name` holding `array` (copied to C order first if it is not)."""
    array = np.ascontiguousarray(array)
    if not array.flags.writeable:  # DLPack cannot export a read-only array (ONNX Runtime's constant outputs)
        array = array.copy()
    if array.dtype == np.bool_:
        return pb_utils.Tensor(name, array)
    strides = stub_strides(array.shape, array.itemsize)
    if array.strides != strides:
        array = np.lib.stride_tricks.as_strided(array, array.shape, strides)
    capsule = array.__dlpack__()
    tensor = pb_utils.Tensor.from_dlpack(name, capsule)
    _set_name(capsule, CONSUMED)
    return tensor
