"""Sample inputs of ``ascend_attn.self_attention`` for any combination of ATB SelfAttention's features.

:func:`sa_case` builds a valid call for a set of the coexistence table's features (names below), so
one builder serves the feature tests, the table enumeration, opcheck and the MindSpore tests.
"""
from __future__ import annotations

import math

FEATURE_NAMES = ("dynamic_batch", "split", "high_precision", "clamp", "compressed", "bypass", "logn", "quant", "bnsd",
                 "tensor_list")  # the order of validation.self_attention.FEATURES


def alibi_slopes(heads: int):
    """The usual ALiBi slopes 2^(-8 h / heads)."""
    return [2.0 ** (-8.0 * (h + 1) / heads) for h in range(heads)]


def compressed_alibi(mask_type: int, dtype, convention: str = "atb"):
    """A compressed [256, 256] ALiBi bias. ``convention`` "atb": C = j - i (sqrt: -sqrt(i - j); left-aligned:
    C = j) on and below the diagonal and -inf above, used with positive slopes; "negated": the torch_npu test's
    C = i - j with +60000 above the diagonal, used with negated slopes."""
    import torch
    i = torch.arange(256, dtype=torch.float64).view(-1, 1)
    j = torch.arange(256, dtype=torch.float64).view(1, -1)
    if mask_type == 6:
        c = j.expand(256, 256).clone()
    else:
        d = (i - j).clamp(min=0)
        c = -(d.sqrt() if mask_type == 5 else d)
    if convention == "negated":
        c = -c + torch.triu(torch.full((256, 256), 60000.0, dtype=torch.float64), 1)
    else:
        c = c.masked_fill(torch.ones(256, 256, dtype=torch.bool).triu(1), -math.inf)
    return c.to(dtype)


def norm_mask(shape, dtype, binary: bool, gen, causal_shift: int = 0):
    """A causal-ish explicit NORM mask with some random extra masked positions (never a whole row)."""
    import torch
    rows, cols = shape[-2], shape[-1]
    i = torch.arange(rows).view(-1, 1)
    j = torch.arange(cols).view(1, -1)
    masked = (j > i + causal_shift) | ((torch.rand(shape, generator=gen) < 0.2) & (j > 0))
    if binary:
        return masked.to(dtype)
    return torch.where(masked, torch.tensor(-10000.0), torch.tensor(0.0)).expand(shape).to(dtype)


def sa_case(features=(), *, calc_type=None, dtype="float16", mask_type=None, quant_type=None, heads=(4, 2), dim=16,
            seed=0, convention="atb", mask_shape=None):
    """(args, kwargs) of ``ascend_attn.self_attention`` with the named features on (FEATURE_NAMES) and
    whatever the features need (calc_type, kernel type, masks, ...). ``dtype``: the compute dtype (the output
    dtype with ``quant``). Small shapes: 3 batches, ``heads`` = (N, Nkv), head size ``dim``."""
    import torch
    f = set(features)
    unknown = f - set(FEATURE_NAMES)
    if unknown:
        raise KeyError(unknown)
    gen = torch.Generator().manual_seed(seed)
    tdtype = getattr(torch, dtype)
    n, nkv = heads
    if calc_type is None:
        if "quant" in f:
            calc_type = 3
        elif "tensor_list" in f or ("logn" in f and "high_precision" not in f):
            calc_type = 2
        elif "logn" in f:
            calc_type = 3 if not f & {"dynamic_batch", "split", "bypass"} else 2
        elif "split" in f:
            calc_type = 1
        elif f & {"bnsd", "bypass", "dynamic_batch"}:
            calc_type = 0
        else:
            calc_type = 3
    pa = calc_type == 3
    hp = "high_precision" in f
    if mask_type is None:
        if "compressed" in f:
            mask_type = 4 + seed % 3 if pa and (hp or dtype == "bfloat16") else 3
        else:
            mask_type = 1 if (seed % 2 == 0 or "bnsd" in f) else 0
    quant = "quant" in f
    if quant and quant_type is None:
        quant_type = 2 + seed % 2
    rand = lambda *shape: torch.randn(*shape, generator=gen)  # noqa: E731
    batch = 3
    seq_len = {3: [5, 0, 7], 2: [1, 1, 1]}.get(calc_type, [3, 1, 4])
    if calc_type == 0:
        token_offset = [5, 1, 9]
    elif calc_type == 1:
        token_offset = [3, 2, 4]  # prefill; batch 1 with a one-row prefix
    else:
        token_offset = [6, 1, 9]
    kw = {"seq_len": seq_len, "head_num": n, "kv_head_num": nkv, "qk_scale": dim ** -0.5, "calc_type": calc_type,
          "kernel_type": 1 if hp or ("logn" in f and pa) else 0, "mask_type": mask_type}
    if "dynamic_batch" in f:
        kw.update(batch_run_status_enable=True, batch_run_status=[1, 0, 1])
    if "clamp" in f:
        kw.update(clamp_type=1, clamp_min=-0.4, clamp_max=0.5)
    layers, layer, max_seq = 2, 1, 12
    key = value = None
    cache_k = cache_v = None
    tokens = sum(seq_len) + 1  # one unused trailing row
    if pa:
        if quant:
            q = torch.randint(-100, 101, (tokens, n, dim), generator=gen, dtype=torch.int8)
            key = torch.randint(-100, 101, (tokens, nkv, dim), generator=gen, dtype=torch.int8)
            value = torch.randint(-100, 101, (tokens, nkv, dim), generator=gen, dtype=torch.int8)
        else:
            q, key, value = rand(tokens, n, dim).to(tdtype), rand(tokens, nkv, dim).to(tdtype), \
                rand(tokens, nkv, dim).to(tdtype)
    elif "bnsd" in f:
        q = rand(batch, n, max(seq_len) + 1, dim).to(tdtype)
        cache_k = rand(layers, batch, nkv, max_seq, dim).to(tdtype)
        cache_v = rand(layers, batch, nkv, max_seq, dim).to(tdtype)
    else:
        q = rand(tokens, n * dim).to(tdtype)
        brs = "dynamic_batch" in f
        if "tensor_list" in f:
            shape = lambda s: (s, nkv * dim) if brs else (layers, s, nkv * dim)  # noqa: E731
            cache_k = [rand(*shape(max_seq - b)).to(tdtype) for b in range(batch)]
            cache_v = [rand(*shape(max_seq - b)).to(tdtype) for b in range(batch)]
        else:
            shape = (batch, max_seq, nkv * dim) if brs else (layers, batch, max_seq, nkv * dim)
            cache_k, cache_v = rand(*shape).to(tdtype), rand(*shape).to(tdtype)
        if "bypass" not in f and "tensor_list" not in f:
            key, value = rand(tokens, nkv * dim).to(tdtype), rand(tokens, nkv * dim).to(tdtype)
        if not brs:
            kw["layer_id"] = [layer]
    if not pa:
        kw["token_offset"] = token_offset
    if "bypass" in f or "tensor_list" in f or "bnsd" in f:
        kw["kv_cache_cfg"] = 1
    if "bnsd" in f:
        kw["input_layout"] = 1
    binary = kw["kernel_type"] == 1 or dtype == "bfloat16"
    mask = None
    rows, cols = max(seq_len) + 1, (max(seq_len) if pa else max(token_offset)) + 2
    if mask_type == 1:
        shape = mask_shape or ((batch, rows, cols) if seed % 4 < 2 else (rows, cols))
        mask = norm_mask(shape, tdtype, binary, gen, causal_shift=0 if pa else cols)
    elif mask_type == 2:
        shape = mask_shape or ((n, rows, cols) if seed % 4 < 2 else (batch, n, rows, cols))
        mask = (rand(*shape) * 0.5).to(tdtype)
    elif mask_type == 3:
        upper = torch.ones(128, 128, dtype=torch.bool).triu(1)
        mask = upper.to(tdtype) if binary else torch.where(upper, -math.inf, 0.0).to(tdtype)
    elif mask_type in (4, 5, 6):
        mask = compressed_alibi(mask_type, tdtype, convention)
        slopes = torch.tensor(alibi_slopes(n), dtype=torch.float32)
        kw["slopes"] = -slopes if convention == "negated" else slopes
    if "logn" in f:
        size = batch if calc_type == 2 else max(seq_len) + 2
        kw.update(scale_type=1, log_n=torch.rand(size, generator=gen) + 1.0)
    if quant:
        # per-head scales of symmetric int8 quantisation (values ~ scale * 100): qk_descale = s_q * s_k,
        # online vpv_descale = s_v; offline P = p_scale * P_int8 and vpv_descale = s_v * p_scale
        v_scale = torch.rand(n, generator=gen) * 0.01 + 0.005
        kw.update(quant_type=quant_type, out_data_type=dtype,
                  qk_descale=torch.rand(n, generator=gen) * 2e-4 + 1e-4, qk_offset=torch.zeros(n, dtype=torch.int32),
                  vpv_descale=v_scale, vpv_offset=torch.zeros(n, dtype=torch.int32))
        if quant_type == 2:
            kw["p_scale"] = torch.rand(n, generator=gen) * (1 / 127) + 1 / 127
            kw["vpv_descale"] = v_scale * kw["p_scale"]
    return (q, key, value, cache_k, cache_v, mask), kw


def reference_inputs(args, kwargs):
    """The same call as float64 numpy for ``testing.sa_reference.self_attention`` (enums as ints)."""
    import torch

    from ..validation.self_attention import enum_value

    def conv(x):
        if isinstance(x, (list, tuple)) and x and isinstance(x[0], torch.Tensor):
            return [conv(t) for t in x]
        if isinstance(x, torch.Tensor):
            return x.double().numpy() if x.is_floating_point() else x.numpy()
        return x
    kw = {k: conv(v) for k, v in kwargs.items()}
    for name in ("calc_type", "kernel_type", "clamp_type", "mask_type", "kv_cache_cfg", "scale_type", "quant_type",
                 "input_layout"):
        if name in kw:
            kw[name] = enum_value(name, kw[name])
    query = args[0]
    dtype = kwargs.get("out_data_type") if query.dtype == torch.int8 else str(query.dtype).rsplit(".", 1)[-1]
    kw["dtype"] = dtype
    return [conv(a) for a in args], kw
