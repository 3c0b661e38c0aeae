"""Run the torch CPU core on the numpy arrays MindSpore hands to a pyfunc kernel.

``torch.from_numpy`` shares memory, so the bridge adds no copy on the way in; outputs are
handed back as numpy arrays. MindSpore's pyfunc kernels cannot carry bfloat16 (numpy has no
such dtype), so bf16 tensors cross the pyfunc boundary as float32 (exact: bf16 -> fp32 is
lossless) and are turned back into bf16 inside it (``_op.PyfuncOp``); bf16 results come back as
float32 holding bf16 values and are cast to bf16 after the op (exact).
"""
from __future__ import annotations

import mindspore as ms
import numpy as np
from mindspore import ops


def to_torch(array):
    """numpy (as MindSpore hands it out) -> torch, sharing memory.

    MindSpore's 64-bit integers can arrive as numpy ``longlong`` / ``ulonglong``, which
    ``torch.from_numpy`` rejects: they are viewed as int64 / uint64 (same bits).
    """
    import torch
    array = np.ascontiguousarray(array)
    if array.dtype.kind in "iu" and array.dtype.itemsize == 8:
        array = array.view(np.int64 if array.dtype.kind == "i" else np.uint64)
    return torch.from_numpy(array)


def is_bf16(x) -> bool:
    return x is not None and x.dtype == ms.bfloat16


def int64_tensor(x):
    """A host length argument inside construct (a list / tuple / int is a constant in a graph)
    as an int64 tensor input of a Custom op; tensors pass through. (Used inside construct, so no
    imports here: GRAPH_MODE cannot parse them.)"""
    if isinstance(x, (list, tuple)):
        return ms.Tensor(x, ms.int64)
    if isinstance(x, int):
        return ms.Tensor([x], ms.int64)
    return x


def to_numpy(tensor) -> np.ndarray:
    """torch -> numpy for a pyfunc output; bf16 (which numpy lacks) as float32 holding the same values."""
    import torch
    if tensor.dtype == torch.bfloat16:
        tensor = tensor.float()
    return tensor.detach().cpu().numpy()


def host_torch(x):
    """MindSpore / numpy / torch tensor -> CPU torch tensor of the same dtype (bf16 through float32, exact),
    for the host checks of device values in ``__call__``; None stays None."""
    import torch
    if x is None:
        return None
    if hasattr(x, "asnumpy"):
        if x.dtype == ms.bfloat16:
            return to_torch(x.astype(ms.float32).asnumpy()).to(torch.bfloat16)
        return to_torch(x.asnumpy())
    if hasattr(x, "detach"):
        return x.detach().cpu()
    return to_torch(x)


def hostint64_tensor(x):
    """Host length argument (list, tuple, int, numpy / torch / MindSpore tensor) -> 1-D int64 MindSpore tensor,
    the form a Custom op takes it in; MindSpore tensors and None pass through."""
    if x is None or isinstance(x, ms.Tensor):
        return x
    if isinstance(x, int):
        x = [x]
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return ms.Tensor(np.asarray(x, dtype=np.int64).reshape(-1))


def bind_inputs(names: tuple, args: tuple, kwargs: dict, op: str) -> dict:
    """Positional and keyword call inputs of a primitive Cell -> {input name: value}."""
    if len(args) > len(names):
        raise TypeError(f"{op}: takes at most {len(names)} inputs, but got {len(args)}")
    bound = dict(zip(names, args))
    for name, value in kwargs.items():
        if name not in names or name in bound:
            raise TypeError(f"{op}: got an unexpected or repeated input {name!r}")
        bound[name] = value
    return bound


def custom_inputs(names: tuple, values: tuple, castable: tuple, absent):
    """Inputs of a pyfunc Custom op in slot order: an absent optional input as the placeholder
    ``absent``, a bf16 input named in ``castable`` as float32 (the pyfunc casts it back). Used inside
    construct (GRAPH_MODE compiles it)."""
    inputs = []
    for name, value in zip(names, values):
        if value is None:
            inputs.append(absent)
        elif name in castable and value.dtype == ms.bfloat16:
            inputs.append(ops.cast(value, ms.float32))
        else:
            inputs.append(value)
    return tuple(inputs)


def present_names(names: tuple, values: tuple) -> tuple:
    """Names of the given (not None) inputs: part of a Custom op's cache key."""
    return tuple(n for n, v in zip(names, values) if v is not None)


def bf16_names(names: tuple, values: tuple, castable: tuple) -> tuple:
    """Names of the castable inputs given as bf16 (they cross the pyfunc as float32): part of the key."""
    return tuple(n for n, v in zip(names, values) if n in castable and is_bf16(v))
