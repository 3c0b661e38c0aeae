"""Sample inputs for the ops: one builder per op, shared by opcheck, the tests and the demo."""
from __future__ import annotations

import numpy as np


def _lanes(rows: np.ndarray) -> np.ndarray:
    """Statistics carry 8 identical lanes."""
    return np.repeat(rows[..., None], 8, axis=-1).astype(np.float32)


def rau_arrays(layout: str = "SBH", *, seq_lens=(3, 1, 5), s_len: int = 5, batch: int = 3,
               heads: int = 3, head_dim: int = 64, seed: int = 0) -> dict:
    """numpy float32 inputs of RingAttentionUpdate with valid statistics.

    SBH: attn ``[S, B, N*D]``, stats ``[B, N, S, 8]``. TND: attn ``[T, N, D]``, stats
    ``[T, N, 8]`` (true TND data; convert with ``reference.tnd_to_ntd`` for the default layout).
    Returns a dict of the six arrays plus ``actual_seq_qlen`` (TND).
    """
    rng = np.random.default_rng(seed)
    if layout == "SBH":
        attn_shape, row_shape = (s_len, batch, heads * head_dim), (batch, heads, s_len)
    else:
        total = int(sum(seq_lens))
        attn_shape, row_shape = (total, heads, head_dim), (total, heads)
    out = {}
    for side in ("prev", "cur"):
        out[f"{side}_attn_out"] = rng.standard_normal(attn_shape).astype(np.float32)
        out[f"{side}_softmax_max"] = _lanes(rng.normal(0.0, 3.0, row_shape))
        out[f"{side}_softmax_sum"] = _lanes(rng.uniform(1.0, 50.0, row_shape))
    if layout == "TND":
        out["actual_seq_qlen"] = [0] + list(np.cumsum(seq_lens).tolist())
    return out


RAU_TENSOR_NAMES = ("prev_attn_out", "prev_softmax_max", "prev_softmax_sum",
                    "cur_attn_out", "cur_softmax_max", "cur_softmax_sum")


def rau_torch_sample_inputs(device: str = "cpu"):
    """(args, kwargs) pairs covering both layouts, both TND statistics layouts and 3 dtypes."""
    import torch

    from .reference import tnd_to_ntd
    cases = []
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        for layout, sm_layout in (("SBH", ""), ("TND", ""), ("TND", "TND")):
            arrays = rau_arrays(layout, seed=len(cases))
            seq = arrays.get("actual_seq_qlen")
            if layout == "TND" and sm_layout == "":
                lens = np.diff(seq)
                for name in RAU_TENSOR_NAMES[1:3] + RAU_TENSOR_NAMES[4:6]:
                    arrays[name] = tnd_to_ntd(arrays[name], lens)
            args = [torch.from_numpy(arrays[n]).to(device) for n in RAU_TENSOR_NAMES]
            args[0], args[3] = args[0].to(dtype), args[3].to(dtype)
            cases.append((tuple(args), {"actual_seq_qlen": seq, "input_layout": layout,
                                        "input_softmax_layout": sm_layout}))
    return cases
