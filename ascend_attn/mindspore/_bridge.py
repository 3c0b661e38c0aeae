"""Run the torch CPU core on the numpy arrays MindSpore hands to a pyfunc kernel.

``torch.from_numpy`` shares memory, so the bridge adds no copy on the way in; outputs are
handed back as numpy arrays. MindSpore's pyfunc kernels cannot carry bfloat16 (numpy has no
such dtype), so the frontends compute bf16 inputs in float32 and cast the result back, which
is exact: bf16 -> fp32 is lossless and the kernels round their fp32 result RNE either way.
"""
from __future__ import annotations

import numpy as np


def to_torch(array):
    import torch
    return torch.from_numpy(np.ascontiguousarray(array))


def to_numpy(tensor) -> np.ndarray:
    return tensor.detach().cpu().numpy()
