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


def rau_torch_sample_inputs(device: str = "cpu", *, long_rows: bool = False):
    """(args, kwargs) pairs covering both layouts, both TND statistics layouts and 3 dtypes.

    long_rows: S = 300 rows (SBH) and sequences of 130, 1 and 260 rows (TND), enough rows for
    several work units of the native kernel, with a partial last one.
    """
    size = {"s_len": 300, "seq_lens": (130, 1, 260), "batch": 2, "heads": 2, "head_dim": 64} if long_rows else {}
    import torch

    from .reference import tnd_to_ntd
    cases = []
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        for layout, sm_layout in (("SBH", ""), ("TND", ""), ("TND", "TND")):
            arrays = rau_arrays(layout, seed=len(cases), **size)
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


def compressed_mask(sparse_mode: int):
    """The canonical compressed atten_mask of a sparse mode (1 = masked), bool, a fresh CPU tensor."""
    from ..kernels.masks import canonical_compressed_mask
    return canonical_compressed_mask(sparse_mode).clone()


# pre/next tokens that satisfy every mode's documented constraints for the lengths used below.
MODE_TOKENS = {0: (3, 1), 1: (2147483647, 2147483647), 2: (2147483647, 2147483647), 3: (2147483647, 2147483647),
               4: (3, 1), 6: (2147483647, 2147483647), 7: (2147483647, -1), 8: (2147483647, 2)}


def fa_case(dtype="float32", seq_q=(5, 3, 7), seq_kv=(6, 3, 9), heads_q=4, heads_kv=2, head_dim=40, *,
            sparse_mode=0, pse_type=None, dropout=False, softmax_layout="", full_mask="local", tail_rows=1,
            seed=0, requires_grad=False):
    """(args, kwargs) of ``flash_attention_varlen_score`` with valid inputs for the given features.

    ``pse_type`` None = no pse; 0/1 = external packed pse; 2/3 = ALiBi slopes. ``tail_rows``
    extra rows after the last sequence in q and k/v (must come out as zeros).
    """
    import torch
    gen = torch.Generator().manual_seed(seed)
    tdtype = getattr(torch, dtype)
    t1, t2 = sum(seq_q) + tail_rows, sum(seq_kv) + tail_rows
    q, k, v = (torch.randn(t, n, head_dim, generator=gen).to(tdtype)
               for t, n in ((t1, heads_q), (t2, heads_kv), (t2, heads_kv)))
    if requires_grad:
        q, k, v = (x.requires_grad_() for x in (q, k, v))
    pre, nxt = MODE_TOKENS[sparse_mode]
    kw = {"scale_value": head_dim ** -0.5, "sparse_mode": sparse_mode, "pre_tokens": pre, "next_tokens": nxt,
          "softmax_out_layout": softmax_layout}
    if sparse_mode in (0, 1):
        if full_mask == "local":
            kw["atten_mask"] = torch.rand(max(seq_q), max(seq_kv), generator=gen) < 0.25
        elif full_mask == "global":
            kw["atten_mask"] = (torch.rand(t1, t2, generator=gen) < 0.25).to(torch.uint8)
    else:
        kw["atten_mask"] = compressed_mask(sparse_mode)
    if sparse_mode == 6:
        kw["prefix"] = [min(s2, max(s2 - s1, 0) + 1) for s1, s2 in zip(seq_q, seq_kv)]
    pairs = sum(a * b for a, b in zip(seq_q, seq_kv))
    if pse_type in (0, 1):
        kw.update(pse=torch.randn(heads_q * pairs, generator=gen).to(tdtype), pse_type=pse_type)
    elif pse_type in (2, 3):
        kw.update(pse=torch.rand(heads_q, generator=gen), pse_type=pse_type, q_start_idx=[2], kv_start_idx=[1])
    if dropout:
        kw.update(drop_mask=torch.randint(0, 256, (-(-heads_q * pairs // 8),), dtype=torch.uint8, generator=gen),
                  keep_prob=0.8)
    cum = lambda lens: [int(x) for x in torch.tensor(lens).cumsum(0)]
    return (q, k, v, heads_q, cum(seq_q), cum(seq_kv)), kw


def fa_reference_kwargs(kwargs: dict) -> dict:
    """The same keyword arguments as numpy float64 for ``testing.fa_reference``."""
    out = {}
    for key, value in kwargs.items():
        if hasattr(value, "numpy"):
            value = value.double().numpy() if value.is_floating_point() else value.numpy()
        out[key] = value
    return out


def ifa_case(layout="BSH", dtype="float16", batch=3, heads_q=8, heads_kv=2, head_dim=32, kv_len=40, *,
             lengths=None, kv_form="tensor", block_size=16, paged_layout="BSH", mask=None, pse=False,
             antiquant=None, seed=0):
    """(args, kwargs) of ``incre_flash_attention`` for float queries with the given features.

    ``kv_form``: "tensor", "list" (per-batch tensors of their own lengths) or "paged" (a shuffled
    block table, unused pages filled with NaN). ``mask``: None or one of "B,S", "B,1,S",
    "B,1,1,S", "B,N,1,S", "1,N,1,S". ``antiquant``: None, "channel" or "tensor" (int8 K/V).
    """
    import torch
    gen = torch.Generator().manual_seed(seed)
    tdtype = getattr(torch, dtype)
    lengths = list(lengths) if lengths is not None else [kv_len - 3 * b for b in range(batch)]
    q_shape = {"BSH": (batch, 1, heads_q * head_dim), "BSND": (batch, 1, heads_q, head_dim),
               "BNSD": (batch, heads_q, 1, head_dim)}[layout]

    def kv_shape(b, s):
        return {"BSH": (b, s, heads_kv * head_dim), "BSND": (b, s, heads_kv, head_dim),
                "BNSD": (b, heads_kv, s, head_dim)}[layout]
    query = torch.randn(q_shape, generator=gen).to(tdtype)
    if antiquant:
        make = lambda shape: torch.randint(-128, 128, shape, generator=gen, dtype=torch.int8)
    else:
        make = lambda shape: torch.randn(shape, generator=gen).to(tdtype)
    kw = {"num_heads": heads_q, "num_key_value_heads": heads_kv, "input_layout": layout,
          "scale_value": head_dim ** -0.5, "actual_seq_lengths": lengths}
    if kv_form == "list":
        key = [make(kv_shape(1, s)) for s in lengths]
        value = [make(kv_shape(1, s)) for s in lengths]
        kw["actual_seq_lengths"] = [max(s - 1, 0) for s in lengths]
    elif kv_form == "paged":
        pages_per_batch = -(-kv_len // block_size)
        num_blocks = batch * pages_per_batch + 2
        shape = (num_blocks, block_size, heads_kv * head_dim) if paged_layout == "BSH" else \
            (num_blocks, heads_kv, block_size, head_dim)
        key, value = make(shape), make(shape)
        table = torch.randperm(num_blocks, generator=gen)[: batch * pages_per_batch].view(batch, pages_per_batch)
        used = set()
        for b, length in enumerate(lengths):
            used.update(table[b, : -(-length // block_size)].tolist())
        if not antiquant:
            for blk in set(range(num_blocks)) - used:
                key[blk] = float("nan")
                value[blk] = float("nan")
        kw.update(block_table=table.to(torch.int32), block_size=block_size)
    else:
        key, value = make(kv_shape(batch, kv_len)), make(kv_shape(batch, kv_len))
    width = kv_len if kv_form != "paged" else table.shape[1] * block_size
    if mask is not None:
        mshape = {"B,S": (batch, width), "B,1,S": (batch, 1, width), "B,1,1,S": (batch, 1, 1, width),
                  "B,N,1,S": (batch, heads_q, 1, width), "1,N,1,S": (1, heads_q, 1, width)}[mask]
        kw["atten_mask"] = torch.rand(mshape, generator=gen) < 0.3
    if pse:
        kw["pse_shift"] = torch.randn(batch, heads_q, 1, width, generator=gen).to(tdtype)
    if antiquant:
        shape = (2,) if antiquant == "tensor" else {
            "BNSD": (2, heads_kv, 1, head_dim), "BSH": (2, heads_kv * head_dim), "BSND": (2, heads_kv, head_dim)}[layout]
        kw["antiquant_scale"] = (torch.rand(shape, generator=gen) * 0.02 + 0.005).to(tdtype)
        kw["antiquant_offset"] = torch.randint(-4, 5, shape, generator=gen).to(tdtype)
    return (query, key, value), kw


def numpy_kwargs(kwargs: dict) -> dict:
    """torch tensors (and lists of them) -> numpy; floats keep their dtype where numpy has it."""
    def conv(v):
        if isinstance(v, list) and v and hasattr(v[0], "numpy"):
            return [conv(x) for x in v]
        if hasattr(v, "numpy"):
            import torch
            return v.double().numpy() if v.dtype == torch.bfloat16 else v.numpy()
        return v
    return {k: conv(v) for k, v in kwargs.items()}
