"""Property tests (hypothesis) for every public op (issue 8, "Property tests").

* VALID inputs, generated per op, must match the independent float64 references in
  ``ascend_attn.testing`` within dtype-appropriate tolerances (same tolerance scheme as the
  per-op reference tests: the error may be a small multiple of the error the NPU rounding points
  themselves cause, plus a few ulps).
* INVALID inputs -- a valid case with exactly one field broken -- must raise ``ValueError`` or
  ``TypeError`` whose message starts with ``"<op>: "``, names the broken argument and follows the
  "... but got ..." template; never another exception, and no input tensor may change.

Strategies draw the structure (layouts, lengths, heads, modes, dtypes, ...) plus an integer seed
that fills the tensors, so shrinking stays cheap. ``scripts/fuzz.py`` reuses ``OPS`` below for
long randomised runs. ``PROPERTY_EXAMPLES`` (env) scales the example counts (default 1.0).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ascend_attn
from ascend_attn.testing import fa_reference as FR
from ascend_attn.testing import ifa_reference as IR
from ascend_attn.testing import reference as RR
from ascend_attn.testing.samples import compressed_mask, fa_reference_kwargs, ifa_case, numpy_kwargs
from frontends import arg as set_arg
from frontends import tensors_in

SCALE = float(os.environ.get("PROPERTY_EXAMPLES", "1"))
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
EPS = {"float32": 2.0 ** -24, "float16": 2.0 ** -11, "bfloat16": 2.0 ** -8}
RAU_OP, FA_OP, FAG_OP, IFA_OP = ("ring_attention_update", "flash_attention_varlen_score",
                                 "flash_attention_unpadding_score_grad", "incre_flash_attention")


def examples(n: int) -> int:
    return max(1, int(round(n * SCALE)))


def prop_settings(n: int):
    return settings(max_examples=examples(n), deadline=None, derandomize=True, database=None,
                    suppress_health_check=list(HealthCheck))


SEEDS = st.integers(0, 2 ** 31 - 1)
MEMORY = st.sampled_from(["contiguous", "contiguous", "permuted", "strided"])


def memory_form(x: torch.Tensor, form: str) -> torch.Tensor:
    """Same values, other memory layout: a permuted-storage view or a stride-2 view (issue 8)."""
    if form == "permuted" and x.dim() > 1:
        order = list(reversed(range(x.dim())))
        return x.permute(*order).contiguous().permute(*order)
    if form == "strided":
        return torch.stack([x, torch.zeros_like(x)], -1)[..., 0]
    return x


@dataclass
class Case:
    """One generated call: ``fn(*args, **kwargs)``; ``info`` feeds the checker."""
    op: str
    args: tuple
    kwargs: dict
    info: dict = field(default_factory=dict)

    def describe(self) -> str:
        def short(x):
            if isinstance(x, torch.Tensor):
                return f"Tensor{tuple(x.shape)}:{str(x.dtype).replace('torch.', '')}"
            if isinstance(x, (list, tuple)) and x and isinstance(x[0], torch.Tensor):
                return "[" + ", ".join(short(t) for t in x) + "]"
            return repr(x)
        return (f"{self.op}(" + ", ".join(short(a) for a in self.args) + ", "
                + ", ".join(f"{k}={short(v)}" for k, v in self.kwargs.items()) + f") info={self.info}")



def snapshot(case: Case):
    return [(t, t.detach().clone()) for t in tensors_in((case.args, case.kwargs))]


def assert_unchanged(snap):
    for t, c in snap:
        assert torch.equal(t.detach(), c) or (t.is_floating_point() and torch.equal(t.isnan(), c.isnan())
                                              and torch.equal(t.nan_to_num(), c.nan_to_num())), "input modified"


# =============================================================================== RingAttentionUpdate

@st.composite
def rau_valid(draw):
    dtype = draw(st.sampled_from(list(DTYPES)))
    layout = draw(st.sampled_from(["SBH", "TND"]))
    seed = draw(SEEDS)
    rng = np.random.default_rng(seed)
    if layout == "SBH":
        s, b, n = draw(st.integers(1, 6)), draw(st.integers(1, 3)), draw(st.integers(1, 4))
        d = draw(st.integers(1, 40))
        attn_shape, row_shape = (s, b, n * d), (b, n, s)
        sm_layout, seq = draw(st.sampled_from(["", "SBH", "TND"])), None
    else:
        lens = draw(st.lists(st.integers(0, 5), min_size=1, max_size=4).filter(lambda x: sum(x) > 0))
        n, d = draw(st.integers(1, 4)), draw(st.sampled_from([64, 128, 192]))
        t = sum(lens)
        attn_shape, row_shape = (t, n, d), (t, n)
        sm_layout = draw(st.sampled_from(["", "SBH", "TND"]))
        seq = [0] + np.cumsum(lens).tolist()
        seq_form = draw(st.sampled_from(["list", "tuple", "tensor32", "tensor64"]))
    big_stats = draw(st.booleans())
    arrays = {}
    for side in ("prev", "cur"):
        arrays[f"{side}_attn_out"] = rng.standard_normal(attn_shape).astype(np.float32)
        sd = 30.0 if big_stats else 3.0
        m = rng.normal(0.0, sd, row_shape)
        ssum = rng.uniform(1.0, 50.0, row_shape)
        arrays[f"{side}_softmax_max"] = np.repeat(m[..., None], 8, -1).astype(np.float32)
        arrays[f"{side}_softmax_sum"] = np.repeat(ssum[..., None], 8, -1).astype(np.float32)
    if layout == "TND" and sm_layout != "TND":
        for name in ("prev_softmax_max", "prev_softmax_sum", "cur_softmax_max", "cur_softmax_sum"):
            arrays[name] = RR.tnd_to_ntd(arrays[name], np.diff(seq))
    names = ("prev_attn_out", "prev_softmax_max", "prev_softmax_sum", "cur_attn_out", "cur_softmax_max",
             "cur_softmax_sum")
    tensors = [torch.from_numpy(arrays[nm]) for nm in names]
    tensors[0], tensors[3] = tensors[0].to(DTYPES[dtype]), tensors[3].to(DTYPES[dtype])
    form = draw(MEMORY)
    tensors = [memory_form(t, form) for t in tensors]
    seq_arg = seq
    if seq is not None:
        seq_arg = {"list": seq, "tuple": tuple(seq), "tensor32": torch.tensor(seq, dtype=torch.int32),
                   "tensor64": torch.tensor(seq, dtype=torch.int64)}[seq_form]
    kwargs = {"actual_seq_qlen": seq_arg, "input_layout": layout, "input_softmax_layout": sm_layout}
    return Case(RAU_OP, tuple(tensors), kwargs, {"dtype": dtype, "seq": seq})


def ulp(values, dtype_name):
    mantissa = {"float16": 10, "bfloat16": 7, "float32": 23}[dtype_name]
    min_exp = {"float16": -14, "bfloat16": -126, "float32": -126}[dtype_name]
    mag = np.maximum(np.abs(values), np.finfo(np.float64).tiny)
    return np.exp2(np.maximum(np.floor(np.log2(mag)), min_exp) - mantissa)


def check_rau_valid(case: Case):
    snap = snapshot(case)
    out, m, s = ascend_attn.ring_attention_update(*case.args, **case.kwargs)
    assert_unchanged(snap)
    dtype, kw = case.info["dtype"], dict(case.kwargs, actual_seq_qlen=case.info["seq"])
    assert out.dtype == DTYPES[dtype] and m.dtype == s.dtype == torch.float32
    assert out.shape == case.args[0].shape and m.shape == case.args[1].shape and s.shape == case.args[2].shape
    inputs = [t.double().numpy() for t in case.args]
    want = RR.ring_attention_update(*inputs, **kw)
    inputs[0], inputs[3] = np.abs(inputs[0]), np.abs(inputs[3])
    magnitude = RR.ring_attention_update(*inputs, **kw)[0]
    out64 = out.double().numpy()
    rounding = 0.0 if dtype == "float32" else 0.5 * ulp(np.maximum(np.abs(want[0]), np.abs(out64)), dtype)
    tol = rounding + 8 * np.finfo(np.float32).eps * magnitude + 1e-30
    assert np.all(np.abs(out64 - want[0]) <= tol), float(np.max(np.abs(out64 - want[0]) / tol))
    np.testing.assert_array_equal(m.numpy(), want[1].astype(np.float32))
    np.testing.assert_allclose(s.numpy(), want[2], rtol=4e-7)


def _rau_breaks(case: Case):
    """(name, mutate(args, kwargs) -> (args, kwargs), error, argument) applicable to ``case``."""
    args, kw = case.args, case.kwargs
    layout = kw["input_layout"]
    other = {"float32": torch.float16, "float16": torch.bfloat16, "bfloat16": torch.float32}[case.info["dtype"]]

    def set_stats(fn):
        def mutate(a, k):
            a = list(a)
            for i in (1, 2, 4, 5):
                a[i] = fn(a[i])
            return tuple(a), k
        return mutate

    def set_kw(**ch):
        return lambda a, k: (a, dict(k, **ch))

    def both_attn(fn):
        return lambda a, k: set_arg(3, fn)(*set_arg(0, fn)(a, k))

    rows = [
        ("layout", set_kw(input_layout="BSND"), ValueError, "input_layout"),
        ("layout-lower", set_kw(input_layout=layout.lower()), ValueError, "input_layout"),
        ("softmax-layout", set_kw(input_softmax_layout="NTD"), ValueError, "input_softmax_layout"),
        ("attn-float64", both_attn(lambda x: x.double()), TypeError, "prev_attn_out"),
        ("attn-int32", both_attn(lambda x: x.to(torch.int32)), TypeError, "prev_attn_out"),
        ("cur-attn-dtype", set_arg(3, lambda x: x.to(other)), TypeError, "cur_attn_out"),
        ("stats-fp16", set_arg(1, lambda x: x.half()), TypeError, "prev_softmax_max"),
        ("cur-sum-fp64", set_arg(5, lambda x: x.double()), TypeError, "cur_softmax_sum"),
        ("cur-attn-shape", set_arg(3, lambda x: torch.cat([x, x[:1]])), ValueError, "cur_attn_out"),
        ("stats-lanes-4", set_stats(lambda x: x[..., :4].contiguous()), ValueError, "prev_softmax_max"),
        ("cur-max-shape", set_arg(4, lambda x: torch.cat([x, x[:1]])), ValueError, "cur_softmax_max"),
    ]
    if layout == "SBH":
        rows += [
            ("sbh-attn-rank", both_attn(lambda x: x[None]), ValueError, "prev_attn_out"),
            ("sbh-stats-rank", set_stats(lambda x: x[0]), ValueError, "prev_softmax_max"),
            ("sbh-stats-batch", set_stats(lambda x: torch.cat([x, x[:1]])), ValueError, "prev_softmax_max"),
        ]
        if args[1].shape[1] > 1:
            rows.append(("sbh-hidden", both_attn(lambda x: torch.cat([x, x[..., :1]], -1)), ValueError,
                         "prev_attn_out"))
    else:
        t = args[0].shape[0]
        rows += [
            ("tnd-seq-missing", set_kw(actual_seq_qlen=None), ValueError, "actual_seq_qlen"),
            ("tnd-head-dim-32", both_attn(lambda x: x[..., :32].contiguous()), ValueError, "prev_attn_out"),
            ("tnd-seq-float", set_kw(actual_seq_qlen=torch.tensor([0.0, float(t)])), TypeError, "actual_seq_qlen"),
            ("tnd-seq-2d", set_kw(actual_seq_qlen=torch.tensor([[0, t]])), ValueError, "actual_seq_qlen"),
        ]
        if kw["input_softmax_layout"] != "TND":
            rows += [
                ("tnd-seq-not-to-T", set_kw(actual_seq_qlen=[0, t + 1]), ValueError, "actual_seq_qlen"),
                ("tnd-seq-not-from-0", set_kw(actual_seq_qlen=[1, t]), ValueError, "actual_seq_qlen"),
                ("tnd-seq-decreasing", set_kw(actual_seq_qlen=[0, t + 1, t]), ValueError, "actual_seq_qlen"),
            ]
    return rows


# =============================================================================== FlashAttention V4

MAXI = 2147483647


@st.composite
def fa_valid(draw, grad=True):
    dtype = draw(st.sampled_from(list(DTYPES)))
    b = draw(st.integers(1, 3))
    s1 = draw(st.lists(st.integers(0, 6), min_size=b, max_size=b))
    s2 = draw(st.lists(st.integers(0, 6), min_size=b, max_size=b))
    if sum(s1) == 0:
        s1[draw(st.integers(0, b - 1))] = draw(st.integers(1, 6))
    n2, g = draw(st.integers(1, 2)), draw(st.sampled_from([1, 2, 3]))
    n1 = n2 * g
    d = draw(st.sampled_from([1, 3, 8, 16, 24]))
    use_mask = draw(st.booleans())
    mode = draw(st.sampled_from([0, 1, 2, 3, 4, 6, 7, 8]))
    pre, nxt, prefix = MAXI, MAXI, None
    nonempty = [i for i in range(b) if s1[i] > 0]
    if use_mask and max(s2) == 0:
        s2[0] = 1  # a mask needs a non-empty kv side; before the mode rules, which only grow s2
    if use_mask:
        if mode == 3:
            s2 = [max(x, y) for x, y in zip(s1, s2)]
        elif mode == 4:
            pre = draw(st.integers(0, 6))
            nxt = draw(st.integers(-pre, 6))
            s2 = [max(y, x - nxt) if x > 0 else y for x, y in zip(s1, s2)]
        elif mode == 7:
            nxt = -draw(st.integers(0, 2))
            s2 = [max(y, x) if x > 0 else y for x, y in zip(s1, s2)]
            last = nonempty[-1]
            s2[last] = max(s2[last], s1[last] - nxt)
            pre = draw(st.sampled_from([MAXI, s2[last], s2[last] + 2]))
        elif mode == 8:
            nxt = draw(st.integers(-2, 6))
            first = nonempty[0]
            s2[first] = max(s2[first], s1[first] - nxt)
            pre = draw(st.sampled_from([MAXI, s2[first], s2[first] + 1]))
        elif mode == 0:
            if draw(st.booleans()):
                pre, nxt = draw(st.sampled_from([(MAXI, MAXI), (max(s1) + 1, max(s2) + 3)]))
            else:
                pre = draw(st.integers(-3, 6))
                nxt = draw(st.integers(max(0, -pre), 6))
                s2 = [max(y, x - pre) if x > 0 else y for x, y in zip(s1, s2)]
    else:
        pre, nxt = draw(st.sampled_from([(MAXI, MAXI), (1, 0), (0, 1)]))
    if mode == 6:  # prefix is required for mode 6 even without a mask
        prefix = [draw(st.integers(0, y)) if x > y else draw(st.integers(y - x, y)) for x, y in zip(s1, s2)]
    # pse: never with a zero-length query sequence, nor with modes 7/8 (their extra pse rules)
    pse_kind = None
    if min(s1) > 0 and mode not in (7, 8):
        pse_kind = draw(st.sampled_from([None, None, "packed0", "packed1", "rows1", "alibi2", "alibi3",
                                         "alibi2-batch"]))
    trailing = 0 if pse_kind else draw(st.integers(0, 2))
    if prefix is not None:
        prefix = prefix + [0] * trailing  # one entry per batch, switched-off batches included
    tail_q, tail_kv = draw(st.integers(0, 2)), draw(st.integers(0, 2))
    dropout = draw(st.sampled_from([None, None, 1.0, 0.8, 0.5, 1e-3]))
    layout = draw(st.sampled_from(["", "same_as_input"]))
    seq_form = draw(st.sampled_from(["list", "tensor32", "tensor64", "tuple"]))
    seed = draw(SEEDS)
    scale = draw(st.sampled_from([1.0, d ** -0.5, 0.3]))
    inner = draw(st.sampled_from([0, 1, 2]))

    gen = torch.Generator().manual_seed(seed)
    tdt = DTYPES[dtype]
    t1, t2 = sum(s1) + tail_q, sum(s2) + tail_kv
    q = torch.randn(t1, n1, d, generator=gen).to(tdt)
    k = torch.randn(t2, n2, d, generator=gen).to(tdt)
    v = torch.randn(t2, n2, d, generator=gen).to(tdt)
    form = draw(MEMORY)
    q, k, v = (memory_form(x, form) for x in (q, k, v))
    kw: dict[str, Any] = {"scale_value": scale, "sparse_mode": mode, "pre_tokens": pre, "next_tokens": nxt,
                          "softmax_out_layout": layout, "inner_precise": inner}
    if use_mask:
        if mode in (0, 1):
            if draw(st.booleans()):
                shape = (max(s1), max(s2))
            else:
                shape = (t1, t2)
            mask = torch.rand(shape, generator=gen) < draw(st.sampled_from([0.0, 0.3, 0.9]))
            kw["atten_mask"] = mask if draw(st.booleans()) else mask.to(torch.uint8)
        else:
            mask = compressed_mask(mode)
            kw["atten_mask"] = mask if draw(st.booleans()) else mask.to(torch.uint8)
    if prefix is not None:
        kw["prefix"] = prefix
    pairs = sum(x * y for x, y in zip(s1, s2))
    if pse_kind in ("packed0", "packed1"):
        kw.update(pse=torch.randn(n1 * pairs, generator=gen).to(tdt), pse_type=int(pse_kind[-1]))
    elif pse_kind == "rows1":
        kw.update(pse=torch.randn(n1 * sum(s2), generator=gen).to(tdt), pse_type=1)
    elif pse_kind:
        shape = (b, n1) if pse_kind.endswith("batch") else (n1,)
        kw.update(pse=torch.rand(shape, generator=gen), pse_type=int(pse_kind[5]),
                  q_start_idx=[draw(st.integers(-3, 3))], kv_start_idx=[draw(st.integers(-3, 3))])
    if dropout is not None:
        nbytes = max(1, -(-n1 * pairs // 8)) + draw(st.integers(0, 2))
        kw.update(drop_mask=torch.randint(0, 256, (nbytes,), dtype=torch.uint8, generator=gen), keep_prob=dropout)
    cum = lambda lens: [int(x) for x in np.cumsum(lens)] + [0] * trailing
    cq, ckv = cum(s1), cum(s2)
    conv = {"list": lambda x: x, "tuple": tuple, "tensor32": lambda x: torch.tensor(x, dtype=torch.int32),
            "tensor64": lambda x: torch.tensor(x, dtype=torch.int64)}[seq_form]
    info = {"dtype": dtype, "s1": s1, "s2": s2, "cq": cq, "ckv": ckv, "grad": grad, "seed": seed, "memory": form}
    return Case(FA_OP, (q, k, v, n1, conv(cq), conv(ckv)), kw, info)


def _fa_reference(case, dy, round_dtype=None):
    f = lambda t: t.detach().double().numpy()
    q, k, v = (f(x) for x in case.args[:3])
    kw = fa_reference_kwargs(case.kwargs)
    kw.pop("inner_precise", None)
    layout = kw.pop("softmax_out_layout")
    n1, cq, ckv = case.args[3], case.info["cq"], case.info["ckv"]
    fwd = FR.flash_attention_forward(q, k, v, n1, cq, ckv, softmax_out_layout=layout, round_dtype=round_dtype, **kw)
    grads = None
    if dy is not None:
        grads = FR.flash_attention_backward(q, k, v, f(dy), n1, cq, ckv, fwd[1], fwd[2], fwd[0],
                                            softmax_in_layout=layout, round_dtype=round_dtype, **kw)
    return fwd, grads


def _max_err(a, b):
    return float(np.abs(a.detach().double().numpy() - b).max()) if b.size else 0.0


def check_fa_valid(case: Case):
    snap = snapshot(case)
    dtype, grad = case.info["dtype"], case.info["grad"]
    q, k, v = (x.detach().clone().requires_grad_(grad) for x in case.args[:3])
    out, smax, ssum = ascend_attn.flash_attention_varlen_score(q, k, v, *case.args[3:], **case.kwargs)
    assert out.shape == q.shape and out.dtype == q.dtype
    assert smax.shape == ssum.shape == (q.shape[0], q.shape[1], 8) and smax.dtype == torch.float32
    dy = None
    if grad:
        dy = torch.randn(out.shape, generator=torch.Generator().manual_seed(case.info["seed"] + 1)).to(out.dtype)
        out.backward(dy)
    assert_unchanged(snap)
    ref_fwd, ref_grads = _fa_reference(case, dy)
    np.testing.assert_allclose(smax.numpy(), ref_fwd[1], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ssum.numpy(), ref_fwd[2], rtol=1e-4)
    got, want = [out], [ref_fwd[0]]
    if grad:
        got += [q.grad, k.grad, v.grad]
        want += list(ref_grads)
    for t in got:
        assert torch.isfinite(t.float()).all()
    # dropout scales intermediate terms by 1/keep_prob (dP, D = sum(dO * O)); their fp32 rounding
    # errors survive the cancellation dP - D, so the error floor grows with 1/keep_prob
    floor = 1.0 / case.kwargs["keep_prob"] if "drop_mask" in case.kwargs else 1.0
    if dtype == "float32":
        for name, g_, w in zip(("out", "dq", "dk", "dv"), got, want):
            assert _max_err(g_, w) <= 2e-5 * max(floor, float(np.abs(w).max(initial=0))), (name, _max_err(g_, w))
        return
    low_fwd, low_grads = _fa_reference(case, dy, round_dtype=dtype)
    low = [low_fwd[0]] + (list(low_grads) if grad else [])
    eps = EPS[dtype]
    for name, g_, w, lw in zip(("out", "dq", "dk", "dv"), got, want, low):
        wmax = float(np.abs(w).max(initial=0))
        bound = 3 * float(np.abs(lw - w).max(initial=0)) + 2 * eps * max(floor, wmax)
        assert _max_err(g_, w) <= bound, (name, _max_err(g_, w), bound)


def _fa_breaks(case: Case):
    args, kw = case.args, case.kwargs
    dtype = case.info["dtype"]
    other = {"float32": torch.float16, "float16": torch.bfloat16, "bfloat16": torch.float32}[dtype]
    cq, ckv = case.info["cq"], case.info["ckv"]
    t1 = args[0].shape[0]

    def set_arg(*pairs):
        def mutate(a, k):
            a = list(a)
            for i, fn in pairs:
                a[i] = fn(a[i])
            return tuple(a), k
        return mutate

    def set_kw(**ch):
        return lambda a, k: (a, {kk: vv for kk, vv in dict(k, **ch).items() if vv is not None})

    rows = [
        ("head-num", set_arg((3, lambda n: n + 1)), ValueError, "head_num"),
        ("key-dtype", set_arg((1, lambda x: x.to(other))), TypeError, "key"),
        ("value-dtype", set_arg((2, lambda x: x.to(other))), TypeError, "value"),
        ("qkv-float64", set_arg((0, lambda x: x.double()), (1, lambda x: x.double()), (2, lambda x: x.double())),
         TypeError, "query"),
        ("query-rank", set_arg((0, lambda x: x[None])), ValueError, "query"),
        ("value-heads", set_arg((2, lambda x: torch.cat([x, x], 1))), ValueError, "value"),
        ("head-dim-mismatch", set_arg((1, lambda x: torch.cat([x, x[..., :1]], -1)),
                                      (2, lambda x: torch.cat([x, x[..., :1]], -1))), ValueError, "key"),
        ("keep-prob-0", set_kw(keep_prob=0.0), ValueError, "keep_prob"),
        ("keep-prob-1.5", set_kw(keep_prob=1.5), ValueError, "keep_prob"),
        ("keep-prob-nan", set_kw(keep_prob=float("nan")), ValueError, "keep_prob"),
        ("dropout-no-mask", set_kw(keep_prob=0.5, drop_mask=None), ValueError, "drop_mask"),
        ("drop-mask-int8", set_kw(keep_prob=0.5, drop_mask=torch.zeros(4096, dtype=torch.int8)), TypeError,
         "drop_mask"),
        ("sparse-mode-5", set_kw(sparse_mode=5), ValueError, "sparse_mode"),
        ("sparse-mode-9", set_kw(sparse_mode=9), ValueError, "sparse_mode"),
        ("sparse-mode-neg", set_kw(sparse_mode=-1), ValueError, "sparse_mode"),
        ("inner-precise", set_kw(inner_precise=3), ValueError, "inner_precise"),
        ("softmax-layout", set_kw(softmax_out_layout="TND"), ValueError, "softmax_out_layout"),
        ("pse-type-4", set_kw(pse_type=4), ValueError, "pse_type"),
        ("seq-count", set_arg((5, lambda x: list(ckv) + [ckv[-1] if ckv[-1] else 0])), ValueError, "actual_seq_kvlen"),
        ("seq-over-T1", set_arg((4, lambda x: [c + t1 if c else 0 for c in cq])), ValueError, "actual_seq_qlen"),
        ("seq-float", set_arg((4, lambda x: torch.tensor(cq, dtype=torch.float32))), TypeError, "actual_seq_qlen"),
        ("seq-negative", set_arg((4, lambda x: [-1] + list(cq)[1:])), ValueError, "actual_seq_qlen"),
    ]
    if "atten_mask" in kw:
        rows.append(("mask-float", set_kw(atten_mask=kw["atten_mask"].float()), TypeError, "atten_mask"))
        if kw["sparse_mode"] not in (0, 1):
            rows.append(("mask-compressed-shape", set_kw(atten_mask=kw["atten_mask"][:1024, :1024]), ValueError,
                         "atten_mask"))
        else:
            rows.append(("mask-4d", set_kw(atten_mask=kw["atten_mask"][None, None]), ValueError, "atten_mask"))
    if kw["sparse_mode"] == 6 and "atten_mask" in kw:
        rows.append(("prefix-missing", set_kw(prefix=None), ValueError, "prefix"))
    if "drop_mask" in kw and kw["drop_mask"].numel() > 1:
        need = -(-args[3] * sum(x * y for x, y in zip(case.info["s1"], case.info["s2"])) // 8)
        if need > 1:
            rows.append(("drop-mask-small", set_kw(drop_mask=kw["drop_mask"][:need - 1]), ValueError, "drop_mask"))
    if kw.get("pse") is not None and kw.get("pse_type", 1) in (0, 1) and kw["pse"].numel():
        rows.append(("pse-length", set_kw(pse=torch.cat([kw["pse"], kw["pse"][:1]])), ValueError, "pse"))
        rows.append(("pse-dtype", set_kw(pse=kw["pse"].to(other)), TypeError, "pse"))
    if kw.get("pse") is None:
        rows.append(("pse-missing", set_kw(pse_type=2), ValueError, "pse"))
    return rows


# ------------------------------------------------------------------- FA grad invalid (forward first)

def _grad_call(case: Case):
    q, k, v = case.args[:3]
    out, smax, ssum = ascend_attn.flash_attention_varlen_score(*case.args, **case.kwargs)
    kw = dict(case.kwargs)
    layout = kw.pop("softmax_out_layout")
    dy = torch.ones_like(out)
    args = (q, k, v, dy, *case.args[3:], smax, ssum, out)
    return Case(FAG_OP, args, dict(kw, softmax_in_layout=layout), case.info)


def _fag_breaks(case: Case):
    other = {"float32": torch.float16, "float16": torch.bfloat16, "bfloat16": torch.float32}[case.info["dtype"]]
    return [
        ("dy-shape", set_arg(3, lambda x: torch.cat([x, x[:1]])), ValueError, "dy"),
        ("dy-dtype", set_arg(3, lambda x: x.to(other)), TypeError, "dy"),
        ("max-dtype", set_arg(7, lambda x: x.half()), TypeError, "softmax_max"),
        ("sum-lanes", set_arg(8, lambda x: x[..., :4].contiguous()), ValueError, "softmax_sum"),
        ("attention-in-shape", set_arg(9, lambda x: x[:, :, :-1] if x.shape[2] > 1 else torch.cat([x, x], 2)),
         ValueError, "attention_in"),
        ("layout", lambda a, k: (a, dict(k, softmax_in_layout="NTD")), ValueError, "softmax_in_layout"),
        ("head-num", set_arg(4, lambda n: n + 1), ValueError, "head_num"),
    ]


# =============================================================================== IncreFlashAttention

@st.composite
def ifa_valid(draw):
    layout = draw(st.sampled_from(["BSH", "BSND", "BNSD"]))
    dtype = draw(st.sampled_from(["float16", "bfloat16"]))
    batch = draw(st.integers(1, 3))
    nkv = draw(st.integers(1, 2))
    group = draw(st.sampled_from([1, 2, 3, 4]))
    d = draw(st.sampled_from([8, 16, 32]))
    kv_form = draw(st.sampled_from(["tensor", "tensor", "list", "paged"]))
    antiquant = draw(st.sampled_from([None, None, "channel", "tensor"]))
    block_size = 32 if antiquant else draw(st.sampled_from([16, 32]))
    kv_len = draw(st.integers(1, 40))
    if kv_form == "list":
        lengths = draw(st.lists(st.integers(1, kv_len), min_size=batch, max_size=batch))
    else:
        lengths = draw(st.lists(st.integers(0, kv_len), min_size=batch, max_size=batch))
    paged_layout = draw(st.sampled_from(["BSH", "BNSD"])) if layout == "BNSD" else "BSH"
    mask = draw(st.sampled_from([None, None, "B,S", "B,1,S", "B,1,1,S", "B,N,1,S", "1,N,1,S"]))
    pse = d % 16 == 0 and draw(st.booleans())
    seed = draw(SEEDS)
    args, kw = ifa_case(layout, dtype, batch=batch, heads_q=nkv * group, heads_kv=nkv, head_dim=d, kv_len=kv_len,
                        lengths=lengths, kv_form=kv_form, block_size=block_size, paged_layout=paged_layout,
                        mask=mask, pse=pse, antiquant=antiquant, seed=seed)
    if mask is not None:
        kw["atten_mask"] = kw["atten_mask"].to(draw(st.sampled_from([torch.bool, torch.uint8, torch.int8])))
    if kv_form == "tensor":
        form = draw(st.sampled_from(["given", "none", "broadcast", "longer", "left-pad"]))
        if form == "none":
            kw.pop("actual_seq_lengths")
        elif form == "broadcast":
            kw["actual_seq_lengths"] = [lengths[0]]
        elif form == "longer":
            kw["actual_seq_lengths"] = list(lengths) + [0]
        elif form == "left-pad":
            kw["kv_padding_size"] = torch.tensor([draw(st.integers(-1, kv_len))], dtype=torch.int64)
    if antiquant:
        if draw(st.booleans()):
            kw["antiquant_offset"] = None
        if draw(st.booleans()):
            kw["antiquant_scale"] = kw["antiquant_scale"].float()
            if kw["antiquant_offset"] is not None:
                kw["antiquant_offset"] = kw["antiquant_offset"].float()
        kw = {k: v for k, v in kw.items() if v is not None}
    quant = draw(st.sampled_from([None, None, None, "tensor", "channel"]))
    if quant:
        gen = torch.Generator().manual_seed(seed + 7)
        nq = nkv * group
        shape = (1,) if quant == "tensor" else draw(st.sampled_from(
            [(nq * d,), (1, nq * d), (nq, d), (1, nq, 1, d), (1, 1, nq, d)]))
        kw["quant_scale2"] = torch.rand(shape, generator=gen) * 40 + 20
        if draw(st.booleans()):
            kw["quant_offset2"] = torch.round(torch.rand(shape, generator=gen) * 6 - 3)
        if dtype == "bfloat16" and draw(st.booleans()):
            kw["quant_scale2"] = kw["quant_scale2"].bfloat16()
            if "quant_offset2" in kw:
                kw["quant_offset2"] = kw["quant_offset2"].bfloat16()
    kw["inner_precise"] = draw(st.sampled_from([0, 1]))
    form = draw(MEMORY)
    if form != "contiguous":
        mem = lambda x: [memory_form(t, form) for t in x] if isinstance(x, list) else memory_form(x, form)
        args = tuple(mem(a) for a in args)
        for name in ("atten_mask", "pse_shift"):
            if name in kw:
                kw[name] = memory_form(kw[name], form)
    info = {"dtype": dtype, "kv_form": kv_form, "quant": quant, "memory": form, "antiquant": antiquant, "kv_len": kv_len,
            "lengths": lengths, "block_size": block_size}
    return Case(IFA_OP, tuple(args), kw, info)


def _ifa_reference(case: Case, round_dtype=None):
    q, k, v = case.args
    conv = lambda x: [conv(t) for t in x] if isinstance(x, list) else (
        x.double().numpy() if x.dtype == torch.bfloat16 else x.numpy())
    kw = numpy_kwargs({k_: v_ for k_, v_ in case.kwargs.items() if k_ != "inner_precise"})
    return IR.incre_flash_attention(conv(q), conv(k), conv(v), round_dtype=round_dtype, **kw)


def check_ifa_valid(case: Case):
    snap = snapshot(case)
    got = ascend_attn.incre_flash_attention(*case.args, **case.kwargs)
    assert_unchanged(snap)
    q = case.args[0]
    assert got.shape == q.shape
    dtype = case.info["dtype"]
    if case.info["quant"]:
        assert got.dtype == torch.int8
        want = _ifa_reference(case, round_dtype=dtype)
        diff = np.abs(got.numpy().astype(np.int64) - want)
        assert diff.max(initial=0) <= 1, diff.max()
        return
    assert got.dtype == q.dtype
    exact = _ifa_reference(case)
    low = _ifa_reference(case, round_dtype=dtype)
    err = np.abs(got.double().numpy() - exact)
    bound = 3 * np.abs(low - exact).max(initial=0) + 2 * EPS[dtype] * max(1.0, np.abs(exact).max(initial=0))
    assert np.isfinite(got.double().numpy()).all()
    assert err.max(initial=0) <= bound, (err.max(), bound)


def _ifa_breaks(case: Case):
    args, kw = case.args, case.kwargs
    q = args[0]
    layout = kw["input_layout"]
    nq = kw["num_heads"]
    info = case.info
    paged = "block_table" in kw
    other = torch.bfloat16 if info["dtype"] == "float16" else torch.float16

    def set_kw(**ch):
        return lambda a, k: (a, {kk: vv for kk, vv in dict(k, **ch).items() if vv is not None})

    seq_dim = 2 if layout == "BNSD" else 1
    rows = [
        ("layout", set_kw(input_layout="SBH"), ValueError, "input_layout"),
        ("inner-precise", set_kw(inner_precise=2), ValueError, "inner_precise"),
        ("query-float32", set_arg(0, lambda x: x.float()), TypeError, "query"),
        ("query-s2", set_arg(0, lambda x: torch.cat([x, x], seq_dim)), ValueError, "query"),
        ("num-kv-heads", set_kw(num_key_value_heads=nq + 1), ValueError, "num_key_value_heads"),
        ("lengths-negative", set_kw(actual_seq_lengths=[-1] * q.shape[0]), ValueError, "actual_seq_lengths"),
        ("quant-offset-alone", set_kw(quant_scale2=None, quant_offset2=torch.zeros(1)), ValueError, "quant_offset2"),
        ("dequant-on-float", set_kw(dequant_scale1=torch.ones(1)), ValueError, "dequant_scale1"),
    ]
    if layout == "BSH":
        rows.append(("num-heads", set_kw(num_heads=q.shape[2] + 1), ValueError, "num_heads"))
    else:
        rows.append(("num-heads", set_kw(num_heads=nq + 1), ValueError, "num_heads"))
    cap = kw["block_table"].shape[1] * kw["block_size"] if paged else None
    if info["kv_form"] == "tensor":
        cap = info["kv_len"]
    if cap is not None:
        rows.append(("lengths-over-cap", set_kw(actual_seq_lengths=[cap + 1] * q.shape[0]), ValueError,
                     "actual_seq_lengths"))
    if q.shape[0] >= 3:
        rows.append(("lengths-count", set_kw(actual_seq_lengths=[0] * (q.shape[0] - 1)), ValueError,
                     "actual_seq_lengths"))
    if "atten_mask" in kw:
        rows.append(("mask-float", set_kw(atten_mask=kw["atten_mask"].float()), TypeError, "atten_mask"))
        rows.append(("mask-rank5", set_kw(atten_mask=kw["atten_mask"].reshape(1, 1, 1, *kw["atten_mask"].shape)),
                     ValueError, "atten_mask"))
    if "pse_shift" in kw:
        rows.append(("pse-dtype", set_kw(pse_shift=kw["pse_shift"].to(other)), TypeError, "pse_shift"))
        rows.append(("pse-rank", set_kw(pse_shift=kw["pse_shift"][0]), ValueError, "pse_shift"))
    if info["antiquant"] is None and info["kv_form"] != "list":
        rows.append(("antiquant-float-kv", set_kw(antiquant_scale=torch.ones(2, dtype=q.dtype)), ValueError,
                     "antiquant_scale"))
        rows.append(("key-dtype", set_arg(1, lambda x: x.to(other)), TypeError, "key"))
    if info["antiquant"]:
        rows.append(("antiquant-missing", set_kw(antiquant_scale=None, antiquant_offset=None), ValueError,
                     "antiquant_scale"))
        rows.append(("antiquant-shape", set_kw(antiquant_scale=torch.ones(3, dtype=q.dtype), antiquant_offset=None),
                     ValueError, "antiquant_scale"))
    if paged:
        rows += [
            ("block-table-int64", set_kw(block_table=kw["block_table"].long()), TypeError, "block_table"),
            ("block-size-unaligned", set_kw(block_size=kw["block_size"] - 8), ValueError, "block_size"),
            ("paged-left-pad", set_kw(kv_padding_size=torch.tensor([1])), ValueError, "kv_padding_size"),
            ("paged-no-lengths", set_kw(actual_seq_lengths=None), ValueError, "actual_seq_lengths"),
            ("block-table-1d", set_kw(block_table=kw["block_table"][0]), ValueError, "block_table"),
        ]
    else:
        rows.append(("block-size-without-table", set_kw(block_size=16), ValueError, "block_size"))
    if info["kv_form"] == "tensor":
        rows.append(("value-shape", set_arg(2, lambda x: torch.cat([x, x[:, :1] if layout != "BNSD" else x[:, :, :1]],
                                                                   seq_dim)), ValueError, "value"))
        rows.append(("kv-pad-int32", set_kw(kv_padding_size=torch.tensor([0], dtype=torch.int32)), TypeError,
                     "kv_padding_size"))
        rows.append(("kv-pad-two", set_kw(kv_padding_size=torch.tensor([0, 0])), ValueError, "kv_padding_size"))
    if info["kv_form"] == "list" and q.shape[0] > 1:  # a one-element list is just that tensor (§7.1)
        rows.append(("list-left-pad", set_kw(kv_padding_size=torch.tensor([0])), ValueError, "kv_padding_size"))
    if info["quant"]:
        rows.append(("quant-scale2-shape", set_kw(quant_scale2=torch.ones(7), quant_offset2=None), ValueError,
                     "quant_scale2"))
        rows.append(("quant-scale2-fp16", set_kw(quant_scale2=torch.ones(1, dtype=torch.float16), quant_offset2=None),
                     TypeError, "quant_scale2"))
    return rows


# =============================================================================== invalid-input driver

@st.composite
def broken(draw, base, breaks):
    case = draw(base)
    if isinstance(case, Case) and case.op == FA_OP and breaks is _fag_breaks:
        case = _grad_call(case)
    rows = breaks(case)
    name, mutate, error, arg = draw(st.sampled_from(rows))
    args, kwargs = mutate(case.args, case.kwargs)
    return Case(case.op, args, kwargs, dict(case.info, broken=name, error=error, arg=arg))


CALLS: dict[str, Callable] = {
    RAU_OP: lambda *a, **k: ascend_attn.ring_attention_update(*a, **k),
    FA_OP: lambda *a, **k: ascend_attn.flash_attention_varlen_score(*a, **k),
    FAG_OP: lambda *a, **k: ascend_attn.flash_attention_unpadding_score_grad(*a, **k),
    IFA_OP: lambda *a, **k: ascend_attn.incre_flash_attention(*a, **k),
}


# host length arguments stay real tensors under FakeTensorMode (their values are read on the host)
HOST_ARGS = {RAU_OP: (), FA_OP: (4, 5), FAG_OP: (5, 6), IFA_OP: ()}
HOST_KWARGS = {"actual_seq_qlen", "actual_seq_kvlen", "actual_seq_lengths", "prefix", "q_start_idx", "kv_start_idx"}


def _call(case: Case, fake: bool):
    if not fake:
        return CALLS[case.op](*case.args, **case.kwargs)
    from torch._subclasses.fake_tensor import FakeTensorMode
    with FakeTensorMode(allow_non_fake_inputs=True) as mode:
        def conv(x):
            if isinstance(x, torch.Tensor):
                return mode.from_tensor(x)
            if isinstance(x, (list, tuple)) and x and isinstance(x[0], torch.Tensor):
                return [mode.from_tensor(t) for t in x]
            return x
        args = tuple(a if i in HOST_ARGS[case.op] else conv(a) for i, a in enumerate(case.args))
        kwargs = {k: (v if k in HOST_KWARGS else conv(v)) for k, v in case.kwargs.items()}
        return CALLS[case.op](*args, **kwargs)


# Breaks that only the values of host lengths reveal: under FakeTensorMode (and torch.compile) the
# lengths are tensor data whose count is known but not their values, so the real kernel checks them.
LENGTH_VALUE_BREAKS = {"tnd-seq-not-to-T", "tnd-seq-not-from-0", "tnd-seq-decreasing", "seq-over-T1", "seq-negative",
                       "mask-4d", "drop-mask-small", "pse-length", "lengths-negative", "lengths-over-cap"}


def check_invalid(case: Case):
    """Eager AND FakeTensorMode (the fake kernels share the validation; no break here depends on
    tensor values), except the breaks of LENGTH_VALUE_BREAKS: eager only."""
    snap = snapshot(case)
    error, arg = case.info["error"], case.info["arg"]
    host = [a for i, a in enumerate(case.args) if i in HOST_ARGS[case.op]] + \
        [v for k, v in case.kwargs.items() if k in HOST_KWARGS]
    # length tensors hold host values: under FakeTensorMode they cannot be read (data-dependent)
    modes = (False,) if any(isinstance(h, torch.Tensor) for h in host) or \
        case.info["broken"] in LENGTH_VALUE_BREAKS else (False, True)
    for fake in modes:
        where = "fake" if fake else "eager"
        try:
            _call(case, fake)
        except (ValueError, TypeError) as exc:
            message = str(exc)
            assert type(exc) is error, \
                f"{case.info['broken']} ({where}): expected {error.__name__}, got {type(exc).__name__}: {message}"
            assert message.startswith(f"{case.op}: "), (where, message)
            assert arg in message and "but got" in message, (where, arg, message)
        else:
            raise AssertionError(f"{case.info['broken']} ({where}): no error raised")
        finally:
            assert_unchanged(snap)


# name -> (strategy, checker, CI example count)
OPS: dict[str, tuple[Any, Callable, int]] = {
    "rau-valid": (rau_valid(), check_rau_valid, 250),
    "rau-invalid": (broken(rau_valid(), _rau_breaks), check_invalid, 250),
    "fa-valid": (fa_valid(), check_fa_valid, 300),
    "fa-invalid": (broken(fa_valid(grad=False), _fa_breaks), check_invalid, 250),
    "fa-grad-invalid": (broken(fa_valid(grad=False), _fag_breaks), check_invalid, 100),
    "ifa-valid": (ifa_valid(), check_ifa_valid, 400),
    "ifa-invalid": (broken(ifa_valid(), _ifa_breaks), check_invalid, 300),
}


def _make_test(name):
    strategy, checker, count = OPS[name]

    @prop_settings(count)
    @given(strategy)
    def test(case):
        checker(case)
    test.__name__ = "test_" + name.replace("-", "_")
    return test


test_rau_valid = _make_test("rau-valid")
test_rau_invalid = _make_test("rau-invalid")
test_fa_valid = _make_test("fa-valid")
test_fa_invalid = _make_test("fa-invalid")
test_fa_grad_invalid = _make_test("fa-grad-invalid")
test_ifa_valid = _make_test("ifa-valid")
test_ifa_invalid = _make_test("ifa-invalid")


@prop_settings(30)
@given(st.lists(st.floats(2.0 ** -20, 2.0 ** 20, allow_nan=False, width=32), min_size=1, max_size=6),
       st.one_of(st.none(), st.floats(-400, 400, allow_nan=False, width=32)))
def test_trans_quant_param_matches_reference(scales, offset):
    scale = torch.tensor(scales, dtype=torch.float32)
    off = None if offset is None else torch.tensor([offset], dtype=torch.float32)
    got = ascend_attn.trans_quant_param(scale, off)
    want = IR.trans_quant_param(scale.numpy(), None if off is None else off.numpy())
    assert got.dtype == torch.int64
    np.testing.assert_array_equal(got.numpy(), want)


@prop_settings(20)
@given(st.sampled_from(["int-scale", "2d-scale", "int-offset", "bad-broadcast"]))
def test_trans_quant_param_invalid(kind):
    scale, offset, arg, err = {
        "int-scale": (torch.ones(3, dtype=torch.int32), None, "scale", TypeError),
        "2d-scale": (torch.ones(2, 2), None, "scale", ValueError),
        "int-offset": (torch.ones(3), torch.ones(3, dtype=torch.int64), "offset", TypeError),
        "bad-broadcast": (torch.ones(3), torch.ones(2), "offset", ValueError),
    }[kind]
    with pytest.raises(err) as info:
        ascend_attn.trans_quant_param(scale, offset)
    assert str(info.value).startswith("trans_quant_param: ") and arg in str(info.value)
