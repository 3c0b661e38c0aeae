"""Run one op call through each frontend from framework-neutral numpy inputs.

A case is ``{"tensors": {name: (np.ndarray, dtype_name)}, "kwargs": {...}}``; each runner
converts the arrays into its framework, calls the op and returns (outputs, inputs) so tests can
check that inputs were not modified.
"""
import numpy as np


def torch_tensor(array, dtype_name):
    import torch
    return torch.from_numpy(np.array(array)).to(getattr(torch, dtype_name))


def ms_tensor(array, dtype_name):
    import mindspore as ms
    return ms.Tensor(np.array(array, dtype=np.float64 if dtype_name == "float64" else None)).astype(getattr(ms, dtype_name))


def as_numpy(x):
    if hasattr(x, "asnumpy"):
        import mindspore as ms
        return (x.astype(ms.float32) if x.dtype == ms.bfloat16 else x).asnumpy()
    if x.dtype.is_floating_point:
        return x.float().numpy() if x.dtype.itemsize < 4 else x.numpy()
    return x.numpy()


def seq_arg(seq, make):
    """Length arguments: lists stay lists; ("tensor", values, dtype) become framework tensors."""
    if isinstance(seq, tuple) and seq and seq[0] == "tensor":
        return make(np.array(seq[1]), seq[2])
    return seq


# ----------------------------------------------------------------------------- constraint-table rows
# A row's change maps (args, kwargs) of a valid call to the broken call.

def kw(**changes):
    """Keyword changes; a value of None removes the keyword (the op's default is None)."""
    def change(args, kwargs):
        out = dict(kwargs, **changes)
        return args, {k: v for k, v in out.items() if v is not None}
    return change


def arg(index, fn):
    """Replace positional argument ``index`` by ``fn(old)``."""
    def change(args, kwargs):
        args = list(args)
        args[index] = fn(args[index])
        return tuple(args), kwargs
    return change


def both(*changes):
    """Apply several changes in order."""
    def change(args, kwargs):
        for c in changes:
            args, kwargs = c(args, kwargs)
        return args, kwargs
    return change


def tensors_in(obj):
    """Every torch tensor inside nested lists / tuples / dicts (to check inputs stay unchanged)."""
    import torch
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for x in obj:
            yield from tensors_in(x)
    elif isinstance(obj, dict):
        for x in obj.values():
            yield from tensors_in(x)
