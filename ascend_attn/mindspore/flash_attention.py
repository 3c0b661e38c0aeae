"""MindSpore FlashAttention V4: varlen (TND) forward and grad primitives, and ``flash_attention_score``.

* :class:`FlashAttentionVarLenScoreV4` (aclnnFlashAttentionVarLenScoreV4) and
  :class:`FlashAttentionUnpaddingScoreGradV4` (aclnnFlashAttentionUnpaddingScoreGradV4): primitive-like
  Cells, attributes in the constructor, tensors and host integer lists as call inputs. The forward's
  ``ops.Custom`` carries a ``bprop`` that calls the grad primitive's op, so ``ms.grad`` /
  ``value_and_grad`` differentiate with respect to query, key and value in PyNative and GRAPH_MODE.
* :func:`flash_attention_score`: MindSpore's functional signature; ``input_layout`` "TND" goes straight
  to the V4 primitive, "BSH", "SBH", "BSND" and "BNSD" (uniform S1, S2) are converted to TND and back.

Backend (``backends.select``): the ``ops.Custom`` pyfunc around the torch core ``kernels/flash_attention.py``
(through ``_bridge``). Validation is the shared module's, at three points, as for RingAttentionUpdate:
``__call__`` (from Python, any mode: everything, including host values of the length lists and the
compressed-mask content), the Custom op's infer functions (GRAPH_MODE compile: shapes and dtypes; the
length values are not known there) and the pyfunc (run time: everything again; MindSpore swallows
pyfunc errors in PyNative, hence the ``__call__`` check).

Absent optional inputs travel as a one-byte placeholder tensor; which inputs are real is part of the
key of a lazily built, cached Custom op (one per combination actually used), so every kernel function
has a fixed, explicit parameter list (pyfunc takes a ``*args`` kernel as one tuple input).

bfloat16: pyfunc cannot carry it, so bf16 tensors are cast to float32 around the Custom op (exact) and
the pyfunc casts them back to bfloat16 before calling the torch kernel, which therefore computes exactly
what the torch op computes on bf16 (P rounded to bf16 before ``@V``, outputs RNE); results come back
as float32 holding bf16 values and are cast to bf16 (exact). float16 passes through unchanged.
"""
from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass

import numpy as np

import mindspore as ms
from mindspore import nn, ops

from .. import aclnn, backends
from .. import validation as V
from ._aclnn import aot_op
from ._bridge import (bf16_names, bind_inputs, custom_inputs, int64_tensor, is_bf16, present_names, to_numpy,
                      to_torch)

FWD_OP = V.FA_FWD_OP
GRAD_OP = V.FA_GRAD_OP
MAX_TOKENS = V.MAX_TOKENS_DEFAULT

# Custom-op inputs, by validation name, in the aclnn V4 order (paddingMask / softmaxIn are reserved
# there and never reach the kernel). The first three / four are always given.
FWD_SLOTS = ("query", "key", "value", "pse", "drop_mask", "atten_mask", "prefix", "actual_seq_qlen",
             "actual_seq_kvlen", "q_start_idx", "kv_start_idx")
GRAD_SLOTS = ("query", "key", "value", "dy", "pse", "drop_mask", "atten_mask", "softmax_max", "softmax_sum",
              "attention_in", "prefix", "actual_seq_qlen", "actual_seq_kvlen", "q_start_idx", "kv_start_idx")
INT_LISTS = ("prefix", "actual_seq_qlen", "actual_seq_kvlen", "q_start_idx", "kv_start_idx")
# Floating inputs that may be bf16 (external pse has the query dtype); they are cast around the op.
CASTABLE = ("query", "key", "value", "dy", "pse", "attention_in")

# MindSpore's names of the call inputs where they differ from the validation (torch / aclnn) names:
# messages name what the user passed.
FWD_MS_NAMES = {"pse": "real_shift", "atten_mask": "attn_mask"}
GRAD_MS_NAMES = {"pse": "pse_shift"}
FUNCTIONAL_MS_NAMES = {"pse": "real_shift", "atten_mask": "attn_mask", "scale_value": "scalar_value"}

NON_TND_LAYOUTS = ("BSH", "SBH", "BSND", "BNSD")
INPUT_LAYOUTS = ("TND",) + NON_TND_LAYOUTS
NON_TND_SPARSE_MODES = (0, 1, 2, 3, 4, 6)


# ----------------------------------------------------------------------------- messages

@contextlib.contextmanager
def ms_names(names: dict):
    """Re-raise validation errors under MindSpore's argument names (``pse`` -> ``real_shift`` ...).

    Only the argument the message is about (``<op>: <arg> only supports``) is renamed; type and text
    otherwise stay those of ``validation.py``.
    """
    try:
        yield
    except (ValueError, TypeError) as exc:
        text = str(exc)
        for op in (FWD_OP, GRAD_OP):
            for old, new in names.items():
                if text.startswith(f"{op}: {old} only supports"):
                    raise type(exc)(f"{op}: {new}" + text[len(f"{op}: {old}"):]) from None
        raise


# ----------------------------------------------------------------------------- attributes and checks

@dataclass(frozen=True)
class FlashAttrs:
    """The constructor attributes shared by the forward and the grad primitive."""

    head_num: int
    scale_value: float = 1.0
    keep_prob: float = 1.0
    pre_tokens: int = MAX_TOKENS
    next_tokens: int = MAX_TOKENS
    inner_precise: int = 0
    sparse_mode: int = 0
    pse_type: int = 1
    softmax_layout: str = ""  # softmax_out_layout (forward) / softmax_in_layout (grad)

    def options(self, values: dict) -> dict:
        """Keyword arguments of ``validation.check_flash_attention`` for the given inputs."""
        return dict(pse=values.get("pse"), drop_mask=values.get("drop_mask"), atten_mask=values.get("atten_mask"),
                    prefix=values.get("prefix"), scale_value=self.scale_value, keep_prob=self.keep_prob,
                    pre_tokens=self.pre_tokens, next_tokens=self.next_tokens, inner_precise=self.inner_precise,
                    sparse_mode=self.sparse_mode, pse_type=self.pse_type, q_start_idx=values.get("q_start_idx"),
                    kv_start_idx=values.get("kv_start_idx"), softmax_layout=self.softmax_layout)


def check_inputs(op: str, attrs: FlashAttrs, values: dict):
    """Full check (docs/errors.md). ``values``: validation name -> TensorMeta / host int list / None.

    Returns the FlashPlan (None when shapes are unknown).
    """
    q, k, v = values["query"], values["key"], values["value"]
    seq_q, seq_kv = values.get("actual_seq_qlen"), values.get("actual_seq_kvlen")
    if op == GRAD_OP:
        stats = [V.require(values.get(n), op, n, "the forward's output") for n in
                 ("softmax_max", "softmax_sum", "attention_in")]
        dy = V.require(values.get("dy"), op, "dy", "the gradient of attention_out")
        return V.check_flash_attention_grad(q, k, v, dy, attrs.head_num, seq_q, seq_kv, *stats,
                                            **attrs.options(values))
    return V.check_flash_attention(q, k, v, attrs.head_num, seq_q, seq_kv, **attrs.options(values))


def check_attributes(op: str, attrs: FlashAttrs) -> None:
    """Constructor-time check of the attributes alone (sparse_mode, keep_prob, ...).

    Tensors are unknown metas; drop_mask / pse count as given so their "required" rules wait for
    the call.
    """
    unknown = V.TensorMeta(None, None)
    values = {"query": unknown, "key": unknown, "value": unknown, "dy": unknown, "softmax_max": unknown,
              "softmax_sum": unknown, "attention_in": unknown, "pse": unknown, "drop_mask": unknown,
              "actual_seq_qlen": [0], "actual_seq_kvlen": [0]}
    check_inputs(op, attrs, values)


def check_compile_time(op: str, attrs: FlashAttrs, metas: dict, shapes_known: bool) -> None:
    """GRAPH_MODE infer-time check: shapes or dtypes of the tensors, but no length values.

    Length lists that are given stand in as zero-length sequences (B from their shape), which every
    length rule accepts; the rules that need real lengths (full-mask shapes for sparse_mode 0/1,
    pse forms, per-sequence mode rules) run in the pyfunc once the values exist.
    """
    values = dict(metas)
    batch = 1
    for name in ("actual_seq_qlen", "actual_seq_kvlen", "prefix", "q_start_idx", "kv_start_idx"):
        meta = metas.get(name)
        if meta is not None:
            V.check_int_sequence_meta(op, name, meta)
            if name == "actual_seq_qlen" and meta.shape and meta.shape[0] > 0:
                batch = meta.shape[0]
    for name in ("actual_seq_qlen", "actual_seq_kvlen", "prefix"):
        values[name] = None if metas.get(name) is None else [0] * batch
    for name in ("q_start_idx", "kv_start_idx"):
        values[name] = None if metas.get(name) is None else [0]
    if shapes_known:
        values["pse"] = None  # pse forms depend on the lengths
        if attrs.sparse_mode in (0, 1):
            values["atten_mask"] = None  # [maxS1, maxS2] / [T1, T2] depend on the lengths
        attrs = FlashAttrs(**{**attrs.__dict__, "pse_type": 1})  # "pse_type needs pse" ran in the dtype pass
    check_inputs(op, attrs, values)


def check_mask_content(op: str, plan, atten_mask) -> None:
    """The canonical content of a compressed mask (the CPU fallback checks it, docs/semantics.md §4).

    ``atten_mask``: torch or MindSpore tensor (read back to the host only when compressed).
    """
    if atten_mask is not None and plan is not None and plan.mask_form == "compressed":
        from ..kernels.flash_attention import check_compressed_mask
        if hasattr(atten_mask, "asnumpy"):
            atten_mask = to_torch(atten_mask.asnumpy())
        check_compressed_mask(atten_mask, plan.sparse_mode, op)


@functools.lru_cache(maxsize=None)
def reject_reserved(op: str, name: str, given: bool) -> bool:
    """Reserved inputs (padding_mask, softmax_in) must be None; cached so a graph runs it at compile time."""
    if given:
        raise V.value_error(op, name, "None (reserved)", "a tensor")
    return True


def _shape_meta(shape) -> tuple | None:
    shape = tuple(int(d) for d in shape)
    return None if any(d < 0 for d in shape) else shape  # dynamic dims: unknown


# ----------------------------------------------------------------------------- Custom ops

@dataclass(frozen=True)
class OpKey:
    """What a Custom op is specialised on: which optional slots are real, which were bf16."""

    present: tuple[str, ...]
    bf16: tuple[str, ...]


def _run_kernel(op: str, attrs: FlashAttrs, key: OpKey, slots: tuple, arrays: tuple):
    """pyfunc body: numpy arrays of all slots -> torch (bf16 restored) -> check -> kernel -> numpy."""
    import torch
    from ..kernels import flash_attention as kernel

    tensors, lists = {}, {}
    for name, array in zip(slots, arrays):
        if name not in key.present:
            continue
        if name in INT_LISTS:
            lists[name] = [int(x) for x in np.asarray(array).reshape(-1)]
        else:
            t = to_torch(array)
            tensors[name] = t.to(torch.bfloat16) if name in key.bf16 else t
    if "drop_mask" in tensors:
        tensors["drop_mask"] = tensors["drop_mask"].reshape(-1)  # bit-packed: any shape, flat order
    values = {n: V.meta_of(t) for n, t in tensors.items()}
    values.update(lists)
    plan = check_inputs(op, attrs, values)
    check_mask_content(op, plan, tensors.get("atten_mask"))
    extra = {n: tensors.get(n) for n in ("pse", "drop_mask", "atten_mask")}
    if op == FWD_OP:
        outs = kernel.flash_attention_forward(tensors["query"], tensors["key"], tensors["value"], plan, **extra)
    else:
        outs = kernel.flash_attention_backward(tensors["query"], tensors["key"], tensors["value"], tensors["dy"],
                                               tensors["softmax_max"], tensors["softmax_sum"],
                                               tensors["attention_in"], plan, **extra)
    return tuple(to_numpy(o.float() if o.dtype == torch.bfloat16 else o) for o in outs)


class _Infer:
    """infer_shape / infer_dtype of one Custom op: the compile-time check, then output shapes/dtypes.

    The graph compiler calls them separately (shapes first); each pass checks what it can see.
    Inputs that were cast from bf16 in ``construct`` are validated as bf16.
    """

    def __init__(self, op: str, attrs: FlashAttrs, key: OpKey, slots: tuple, names: dict):
        self.op, self.attrs, self.key, self.slots, self.names = op, attrs, key, slots, names

    def _metas(self, shapes, dtypes) -> dict:
        metas = {}
        for i, name in enumerate(self.slots):
            if name not in self.key.present:
                continue
            shape = None if shapes is None else _shape_meta(shapes[i])
            dtype = None
            if dtypes is not None:
                dtype = "bfloat16" if name in self.key.bf16 else V.dtype_name(dtypes[i])
            metas[name] = V.TensorMeta(shape, dtype)
        return metas

    def shape(self, *shapes):
        with ms_names(self.names):
            check_compile_time(self.op, self.attrs, self._metas(shapes, None), shapes_known=True)
        q, k, v = (list(s) for s in shapes[:3])
        if self.op == FWD_OP:
            return q, [q[0], q[1], 8], [q[0], q[1], 8]
        return q, k, v

    def dtype(self, *dtypes):
        with ms_names(self.names):
            check_compile_time(self.op, self.attrs, self._metas(None, dtypes), shapes_known=False)
        q, k, v = dtypes[:3]
        if self.op == FWD_OP:
            return q, ms.float32, ms.float32
        return q, k, v


def _placeholder():
    return ms.Tensor(np.zeros((1,), np.uint8))


@functools.lru_cache(maxsize=None)
def custom_op(op: str, attr_values: tuple, present: tuple, bf16: tuple) -> ops.Custom:
    """The Custom op of ``op`` for these attributes and this combination of given / bf16 inputs.

    Built on first use and cached here (not on the Cell): GRAPH_MODE evaluates a call of this cache
    at compile time as plain Python, and equal primitives share their ops. All arguments are plain
    tuples / strings so a graph can pass them as constants.
    """
    attrs, key = FlashAttrs(*attr_values), OpKey(tuple(present), tuple(bf16))
    if op == GRAD_OP:
        return build_grad_custom(attrs, key)
    # The bprop's grad op takes dy / attention_in like query (both bf16 when query was), and the
    # forward's statistics in its softmax_out_layout.
    extra = ("dy", "attention_in") if "query" in key.bf16 else ()
    grad = custom_op(GRAD_OP, attr_values, key.present + ("dy", "softmax_max", "softmax_sum", "attention_in"),
                     key.bf16 + extra)
    return build_forward_custom(attrs, key, grad)


def build_grad_custom(attrs: FlashAttrs, key: OpKey) -> ops.Custom:
    """Custom op over ``kernels.flash_attention_backward``: GRAD_SLOTS in, ``(dq, dk, dv)`` out."""
    infer = _Infer(GRAD_OP, attrs, key, GRAD_SLOTS, GRAD_MS_NAMES)

    def grad_kernel(query, key_, value, dy, pse, drop_mask, atten_mask, softmax_max, softmax_sum, attention_in,
                    prefix, actual_seq_qlen, actual_seq_kvlen, q_start_idx, kv_start_idx):
        arrays = (query, key_, value, dy, pse, drop_mask, atten_mask, softmax_max, softmax_sum, attention_in,
                  prefix, actual_seq_qlen, actual_seq_kvlen, q_start_idx, kv_start_idx)
        with ms_names(GRAD_MS_NAMES):
            return _run_kernel(GRAD_OP, attrs, key, GRAD_SLOTS, arrays)

    return ops.Custom(func=grad_kernel, out_shape=infer.shape, out_dtype=infer.dtype, func_type="pyfunc")


def build_forward_custom(attrs: FlashAttrs, key: OpKey, grad_custom: ops.Custom) -> ops.Custom:
    """Custom op over ``kernels.flash_attention_forward``: FWD_SLOTS in, ``(out, max, sum)`` out.

    Its bprop is the grad primitive's op (same attributes, ``softmax_in_layout`` = the forward's
    ``softmax_out_layout``); the statistics are not differentiable outputs (as in CANN), and only
    query, key and value get gradients (dpse is unused in V4).
    """
    infer = _Infer(FWD_OP, attrs, key, FWD_SLOTS, FWD_MS_NAMES)

    def forward_kernel(query, key_, value, pse, drop_mask, atten_mask, prefix, actual_seq_qlen,
                       actual_seq_kvlen, q_start_idx, kv_start_idx):
        arrays = (query, key_, value, pse, drop_mask, atten_mask, prefix, actual_seq_qlen, actual_seq_kvlen,
                  q_start_idx, kv_start_idx)
        with ms_names(FWD_MS_NAMES):
            return _run_kernel(FWD_OP, attrs, key, FWD_SLOTS, arrays)

    def bprop(query, key_, value, pse, drop_mask, atten_mask, prefix, actual_seq_qlen, actual_seq_kvlen,
              q_start_idx, kv_start_idx, out, dout):
        dq, dk, dv = grad_custom(query, key_, value, dout[0], pse, drop_mask, atten_mask, out[1], out[2], out[0],
                                 prefix, actual_seq_qlen, actual_seq_kvlen, q_start_idx, kv_start_idx)
        return (dq, dk, dv, ops.zeros_like(pse), ops.zeros_like(drop_mask), ops.zeros_like(atten_mask),
                ops.zeros_like(prefix), ops.zeros_like(actual_seq_qlen), ops.zeros_like(actual_seq_kvlen),
                ops.zeros_like(q_start_idx), ops.zeros_like(kv_start_idx))

    return ops.Custom(func=forward_kernel, out_shape=infer.shape, out_dtype=infer.dtype, func_type="pyfunc",
                      bprop=bprop)


# ----------------------------------------------------------------------------- Ascend: aclnn

def aclnn_attrs(op: str, attrs: FlashAttrs) -> dict:
    """The aclnn attributes of a primitive (CANN's forward V4 / the package's grad V4)."""
    layout = "softmax_out_layout" if op == FWD_OP else "softmax_in_layout"
    return {"scale_value": attrs.scale_value, "keep_prob": attrs.keep_prob, "pre_tokens": attrs.pre_tokens,
            "next_tokens": attrs.next_tokens, "head_num": attrs.head_num, "input_layout": "TND",
            "inner_precise": attrs.inner_precise, "sparse_mode": attrs.sparse_mode, "pse_type": attrs.pse_type,
            "seed": 0, "offset": 0, layout: attrs.softmax_layout}


@functools.lru_cache(maxsize=None)
def aclnn_op(op: str, attr_values: tuple) -> ops.Custom:
    """aot Custom op of the forward (CANN's aclnnFlashAttentionVarLenScoreV4, length lists as host int
    arrays) or the grad (the package's aclnnFlashAttentionUnpaddingScoreGradV4, lengths as int64 tensors).
    The forward's bprop is the grad op; outputs are in IR order (forward: max, sum, softmax_out, out)."""
    if op == GRAD_OP:
        return aot_op(aclnn.FA_GRAD_V4, lambda *s: (s[0], s[1], s[2], [0]), lambda *d: (d[0], d[1], d[2], d[0]))
    grad = aclnn_op(GRAD_OP, attr_values)
    grad_attrs = aclnn.FA_GRAD_V4.attr_values(aclnn_attrs(GRAD_OP, FlashAttrs(*attr_values)))
    n_in = len(aclnn.FA_FORWARD_V4.inputs)

    def bprop(*args):  # forward inputs, forward attributes, out, dout
        given, out, dout = dict(zip(aclnn.FA_FORWARD_V4.inputs, args[:n_in])), args[-2], args[-1]
        lengths = {n: int64_tensor(given[n]) for n in INT_LISTS}
        dq, dk, dv, _ = grad(*aclnn.FA_GRAD_V4.input_values(dict(
            given, **lengths, dy=dout[3], softmax_max=out[0], softmax_sum=out[1], attention_in=out[3])), *grad_attrs)
        return (dq, dk, dv) + tuple(None if a is None or not isinstance(a, ms.Tensor) else ops.zeros_like(a)
                                    for a in args[3:-2])

    return aot_op(aclnn.FA_FORWARD_V4, lambda *s: ([s[0][0], s[0][1], 8], [s[0][0], s[0][1], 8], [0], s[0]),
                  lambda *d: (ms.float32, ms.float32, d[0], d[0]), bprop=bprop)


# ----------------------------------------------------------------------------- construct helpers



def _hostint64_tensor(x):
    """Host length argument (list, tuple, int, numpy / torch / MindSpore tensor) -> int64 MindSpore tensor."""
    if x is None or isinstance(x, ms.Tensor):
        return x
    if isinstance(x, int):
        x = [x]
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return ms.Tensor(np.asarray(x, dtype=np.int64).reshape(-1))


def _host_tuple(op: str, name: str, x):
    """Host length argument -> tuple of ints (an aclIntArray input of an aot op), or None."""
    if x is None:
        return None
    return tuple(V.int_list(op, name, [x] if isinstance(x, int) else x))


def _host_values(op: str, bound: dict, ms_to_v: dict) -> dict:
    """Call inputs (MindSpore names) -> validation values: TensorMeta / host int list / None."""
    values = {}
    for ms_name, value in bound.items():
        name = ms_to_v.get(ms_name, ms_name)
        if name in INT_LISTS:
            values[name] = V.int_list(op, ms_name, [value] if isinstance(value, int) and not isinstance(value, bool)
                                      else value)
        else:
            values[name] = V.meta_of(value)
    return values


class _FlashPrimitive(nn.Cell):
    """Shared machinery of the two primitives: host check in ``__call__``, Custom ops per OpKey."""

    OP = ""
    INPUTS: tuple = ()
    MS_NAMES: dict = {}
    RESERVED: tuple = ()  # reserved inputs that must be None (paddingMask, softmaxIn)

    def __init__(self, attrs: FlashAttrs):
        super().__init__()
        with ms_names(self.MS_NAMES):
            check_attributes(self.OP, attrs)
        self.attrs = attrs
        self.attr_values = tuple(attrs.__dict__.values())  # graph constants for custom_op(...)
        backend, _ = backends.select("mindspore", self.OP, ms.get_context("device_target"))
        self.backend = backend.name
        self._absent = _placeholder()
        # Ascend: the aclnn op (graph constants: the op and its attribute values)
        self.aclnn_op = aclnn_op(self.OP, self.attr_values) if backend.name == "mindspore.kernels" else None
        api = aclnn.FA_GRAD_V4 if self.OP == GRAD_OP else aclnn.FA_FORWARD_V4
        self.aclnn_attrs = api.attr_values(aclnn_attrs(self.OP, attrs))

    @property
    def _ms_to_v(self):
        return {v: k for k, v in self.MS_NAMES.items()}

    def check(self, *args, **kwargs):
        """Everything, on the host (shapes, dtypes, length values, compressed-mask content)."""
        bound = bind_inputs(self.INPUTS, args, kwargs, self.OP)
        for name in self.RESERVED:
            reject_reserved(self.OP, name, bound.get(name) is not None)
        bound = {n: v for n, v in bound.items() if n not in self.RESERVED}
        with ms_names(self.MS_NAMES):
            values = _host_values(self.OP, bound, self._ms_to_v)
            plan = check_inputs(self.OP, self.attrs, values)
            mask_name = self.MS_NAMES.get("atten_mask", "atten_mask")
            check_mask_content(self.OP, plan, bound.get(mask_name))
        return bound

    def __call__(self, *args, **kwargs):
        # From Python (PyNative, or the top level of GRAPH_MODE): check everything on the host first,
        # so errors are raised before any kernel runs (PyNative swallows pyfunc errors).
        bound = self.check(*args, **kwargs)
        # CANN's forward takes the length lists as host int arrays; everything else as int64 tensors
        host_arrays = self.aclnn_op is not None and self.OP == FWD_OP
        lengths = {n: _host_tuple(self.OP, n, bound.get(n)) if host_arrays else _hostint64_tensor(bound.get(n))
                   for n in INT_LISTS if n in self.INPUTS}
        return super().__call__(**{n: lengths[n] if n in INT_LISTS else bound.get(n)
                                   for n in self.INPUTS if n not in self.RESERVED})


class FlashAttentionUnpaddingScoreGradV4(_FlashPrimitive):
    r"""FlashAttention grad V4 primitive (aclnnFlashAttentionUnpaddingScoreGradV4), TND layout.

    ``FlashAttentionUnpaddingScoreGradV4(head_num, scale_value, keep_prob, pre_tokens, next_tokens,
    inner_precise, sparse_mode, pse_type, softmax_in_layout)(query, key, value, dy, pse_shift=None,
    drop_mask=None, padding_mask=None, atten_mask=None, softmax_max=None, softmax_sum=None,
    softmax_in=None, attention_in=None, prefix=None, actual_seq_qlen=None, actual_seq_kvlen=None,
    q_start_idx=None, kv_start_idx=None)``.

    query / dy / attention_in ``[T1, N1, D]``, key / value ``[T2, N2, D]``; softmax_max / softmax_sum
    ``[T1, N1, 8]`` float32 (NTD data for ``softmax_in_layout=""``, TND for ``"same_as_input"``);
    ``padding_mask`` and ``softmax_in`` are reserved (must be None). Length lists as in the forward.
    Returns ``(dq, dk, dv, dpse)``; dpse is an empty tensor (unused in V4).
    """

    OP = GRAD_OP
    INPUTS = ("query", "key", "value", "dy", "pse_shift", "drop_mask", "padding_mask", "atten_mask",
              "softmax_max", "softmax_sum", "softmax_in", "attention_in", "prefix", "actual_seq_qlen",
              "actual_seq_kvlen", "q_start_idx", "kv_start_idx")
    MS_NAMES = GRAD_MS_NAMES
    RESERVED = ("padding_mask", "softmax_in")

    def __init__(self, head_num, scale_value=1.0, keep_prob=1.0, pre_tokens=MAX_TOKENS, next_tokens=MAX_TOKENS,
                 inner_precise=0, sparse_mode=0, pse_type=1, softmax_in_layout=""):
        super().__init__(FlashAttrs(head_num, scale_value, keep_prob, pre_tokens, next_tokens, inner_precise,
                                    sparse_mode, pse_type, softmax_in_layout))

    def construct(self, query, key, value, dy, pse_shift=None, drop_mask=None, padding_mask=None, atten_mask=None,
                  softmax_max=None, softmax_sum=None, softmax_in=None, attention_in=None, prefix=None,
                  actual_seq_qlen=None, actual_seq_kvlen=None, q_start_idx=None, kv_start_idx=None):
        reject_reserved(GRAD_OP, "padding_mask", padding_mask is not None)
        reject_reserved(GRAD_OP, "softmax_in", softmax_in is not None)
        prefix, actual_seq_qlen, actual_seq_kvlen = (int64_tensor(prefix), int64_tensor(actual_seq_qlen),
                                                     int64_tensor(actual_seq_kvlen))
        q_start_idx, kv_start_idx = int64_tensor(q_start_idx), int64_tensor(kv_start_idx)
        if self.aclnn_op is not None:
            return self.aclnn_op(*aclnn.FA_GRAD_V4.input_values(dict(
                query=query, key=key, value=value, dy=dy, pse=pse_shift, drop_mask=drop_mask, atten_mask=atten_mask,
                softmax_max=softmax_max, softmax_sum=softmax_sum, attention_in=attention_in, prefix=prefix,
                actual_seq_qlen=actual_seq_qlen, actual_seq_kvlen=actual_seq_kvlen, q_start_idx=q_start_idx,
                kv_start_idx=kv_start_idx)), *self.aclnn_attrs)
        given = (query, key, value, dy, pse_shift, drop_mask, atten_mask, softmax_max, softmax_sum, attention_in,
                 prefix, actual_seq_qlen, actual_seq_kvlen, q_start_idx, kv_start_idx)
        op = custom_op(GRAD_OP, self.attr_values, present_names(GRAD_SLOTS, given),
                       bf16_names(GRAD_SLOTS, given, CASTABLE))
        dq, dk, dv = op(*custom_inputs(GRAD_SLOTS, given, CASTABLE, self._absent))
        if is_bf16(query):
            dq, dk, dv = ops.cast(dq, ms.bfloat16), ops.cast(dk, ms.bfloat16), ops.cast(dv, ms.bfloat16)
        return dq, dk, dv, ops.zeros((0,), query.dtype)


class FlashAttentionVarLenScoreV4(_FlashPrimitive):
    r"""FlashAttention varlen forward V4 primitive (aclnnFlashAttentionVarLenScoreV4), TND layout.

    ``FlashAttentionVarLenScoreV4(head_num, scale_value=1.0, keep_prob=1.0, pre_tokens=2147483647,
    next_tokens=2147483647, inner_precise=0, sparse_mode=0, pse_type=1, softmax_out_layout="")(query,
    key, value, real_shift=None, drop_mask=None, padding_mask=None, attn_mask=None, prefix=None,
    actual_seq_qlen=None, actual_seq_kvlen=None, q_start_idx=None, kv_start_idx=None)``.

    query ``[T1, N1, D]``, key / value ``[T2, N2, D]`` (N1 % N2 == 0), float16 / bfloat16 / float32.
    ``actual_seq_qlen`` / ``actual_seq_kvlen``: cumulative lengths without a leading 0 (required);
    ``prefix`` (sparse_mode 6), ``q_start_idx`` / ``kv_start_idx`` (ALiBi offsets): int lists, tuples
    or 1-D integer tensors. ``real_shift`` = pse (docs/semantics.md §5), ``attn_mask`` 1 = masked (§4),
    ``drop_mask`` bit-packed uint8 keep bits (§6); ``padding_mask`` reserved (must be None).

    Returns ``(attention_out [T1, N1, D], softmax_max [T1, N1, 8], softmax_sum [T1, N1, 8])``, stats
    float32 with NTD data (``softmax_out_layout=""``) or TND data (``"same_as_input"``).
    Differentiable w.r.t. query, key, value through :class:`FlashAttentionUnpaddingScoreGradV4`.
    """

    OP = FWD_OP
    INPUTS = ("query", "key", "value", "real_shift", "drop_mask", "padding_mask", "attn_mask", "prefix",
              "actual_seq_qlen", "actual_seq_kvlen", "q_start_idx", "kv_start_idx")
    MS_NAMES = FWD_MS_NAMES
    RESERVED = ("padding_mask",)

    def __init__(self, head_num, scale_value=1.0, keep_prob=1.0, pre_tokens=MAX_TOKENS, next_tokens=MAX_TOKENS,
                 inner_precise=0, sparse_mode=0, pse_type=1, softmax_out_layout=""):
        super().__init__(FlashAttrs(head_num, scale_value, keep_prob, pre_tokens, next_tokens, inner_precise,
                                    sparse_mode, pse_type, softmax_out_layout))

    def construct(self, query, key, value, real_shift=None, drop_mask=None, padding_mask=None, attn_mask=None,
                  prefix=None, actual_seq_qlen=None, actual_seq_kvlen=None, q_start_idx=None, kv_start_idx=None):
        reject_reserved(FWD_OP, "padding_mask", padding_mask is not None)
        if self.aclnn_op is not None:
            softmax_max, softmax_sum, _, out = self.aclnn_op(*aclnn.FA_FORWARD_V4.input_values(dict(
                query=query, key=key, value=value, pse=real_shift, drop_mask=drop_mask, atten_mask=attn_mask,
                prefix=prefix, actual_seq_qlen=actual_seq_qlen, actual_seq_kvlen=actual_seq_kvlen,
                q_start_idx=q_start_idx, kv_start_idx=kv_start_idx)), *self.aclnn_attrs)
            return out, softmax_max, softmax_sum
        prefix, actual_seq_qlen, actual_seq_kvlen = (int64_tensor(prefix), int64_tensor(actual_seq_qlen),
                                                     int64_tensor(actual_seq_kvlen))
        q_start_idx, kv_start_idx = int64_tensor(q_start_idx), int64_tensor(kv_start_idx)
        given = (query, key, value, real_shift, drop_mask, attn_mask, prefix, actual_seq_qlen, actual_seq_kvlen,
                 q_start_idx, kv_start_idx)
        op = custom_op(FWD_OP, self.attr_values, present_names(FWD_SLOTS, given),
                       bf16_names(FWD_SLOTS, given, CASTABLE))
        out, softmax_max, softmax_sum = op(*custom_inputs(FWD_SLOTS, given, CASTABLE, self._absent))
        if is_bf16(query):
            out = ops.cast(out, ms.bfloat16)
        return out, softmax_max, softmax_sum


# ----------------------------------------------------------------------------- non-TND layouts

@dataclass(frozen=True)
class LayoutPlan:
    """How a uniform-batch (non-TND) call maps onto the TND primitive.

    ``mask_form``: None, "keep" (2-D: [S1, S2] or compressed), "squeeze" ([1, 1, S1, S2] -> [S1, S2])
    or "global" ([B, 1, S1, S2] -> block-diagonal [T1, T2]); ``pse_form``: None, "flat"
    ([B, N1, S1, S2] / [B, N1, 1, S2] -> packed 1-D), "broadcast" ([1, N1, S1, S2]) or "keep"
    (ALiBi-compressed [B|1, N1, 1024, S2]).
    """

    batch: int
    s1: int
    s2: int
    n1: int
    n2: int
    d: int  # head dim of query
    dk: int  # head dim of key / value (checked equal to d by the TND validation)
    mask_form: str | None
    pse_form: str | None
    seq_q: tuple[int, ...]
    seq_kv: tuple[int, ...]


def _bsnd_dims(op, layout, arg, shape, n, d):
    """(B, S, N, D) of a tensor in a non-TND layout; ``n`` / ``d`` None = take from the shape."""
    if layout in ("BSH", "SBH"):
        b, s = (shape[0], shape[1]) if layout == "BSH" else (shape[1], shape[0])
        h = shape[2]
        if d is None:
            if h % n:
                raise V.value_error(op, "head_num", f"a divisor of the hidden size H1 = {h} of query", n)
            d = h // n
        if h % d:
            raise V.value_error(op, arg, f"a hidden size that is a multiple of D = {d} (H1 / head_num)", f"H = {h}")
        return b, s, h // d, d
    if layout == "BSND":
        return shape[0], shape[1], shape[2], shape[3]
    return shape[0], shape[2], shape[1], shape[3]  # BNSD


@functools.lru_cache(maxsize=None)
def layout_plan(layout: str, head_num: int, q_shape: tuple, k_shape: tuple, v_shape: tuple,
                mask_shape: tuple | None, pse_shape: tuple | None, seq_given: bool) -> LayoutPlan:
    """Shape checks of a non-TND call and its TND mapping (cached: GRAPH_MODE runs it at compile time)."""
    op = FWD_OP
    if isinstance(head_num, bool) or not isinstance(head_num, int):
        raise V.type_error(op, "head_num", "an int", type(head_num).__name__)
    if head_num <= 0:
        raise V.value_error(op, "head_num", "a positive int", head_num)
    rank = 3 if layout in ("BSH", "SBH") else 4
    form = {"BSH": "[B, S, H]", "SBH": "[S, B, H]", "BSND": "[B, S, N, D]", "BNSD": "[B, N, S, D]"}[layout]
    for name, shape in (("query", q_shape), ("key", k_shape), ("value", v_shape)):
        V.check_rank(op, name, V.TensorMeta(shape, None), rank, f'{form} for input_layout "{layout}"')
    V.check_same_shape(op, "value", V.TensorMeta(v_shape, None), "key", V.TensorMeta(k_shape, None))
    if seq_given:
        raise V.value_error(op, "actual_seq_qlen", f'None when input_layout is "{layout}" (lengths come from the '
                            "shapes)", "a value")
    b, s1, n1, d = _bsnd_dims(op, layout, "query", q_shape, head_num, None)
    if n1 != head_num:
        raise V.value_error(op, "head_num", f"the number of query heads N1 = {n1}", head_num)
    bk, s2, n2, dk = _bsnd_dims(op, layout, "key", k_shape, None, d if rank == 3 else None)
    if bk != b:
        raise V.value_error(op, "key", f"the batch size of query B = {b}", f"B = {bk}")
    return LayoutPlan(b, s1, s2, n1, n2, d, dk,
                      _mask_form(op, layout, mask_shape, b, s1, s2),
                      _pse_form(op, layout, pse_shape, b, n1, s1, s2),
                      tuple(s1 * (i + 1) for i in range(b)), tuple(s2 * (i + 1) for i in range(b)))


def _mask_form(op, layout, shape, b, s1, s2):
    if shape is None:
        return None
    if len(shape) == 2:
        return "keep"  # [S1, S2] or compressed: the TND checks apply as they are
    if len(shape) == 4 and shape[1:] == (1, s1, s2) and shape[0] in (1, b):
        return "squeeze" if shape[0] == 1 else "global"
    raise V.value_error(op, "attn_mask", f"[S1, S2] = {V.quote((s1, s2))}, [1, 1, S1, S2], [B, 1, S1, S2] = "
                        f"{V.quote((b, 1, s1, s2))} or the compressed 2048x2048 (3072x2048) mask when input_layout "
                        f'is "{layout}" (per-head [B, N1, S1, S2] masks are not supported)', f"shape {V.quote(shape)}")


def _pse_form(op, layout, shape, b, n1, s1, s2):
    if shape is None:
        return None
    if len(shape) == 4 and shape[1] == n1 and shape[3] == s2:
        if shape[0] == b and shape[2] in (s1, 1):
            return "flat"  # the TND packed full form / row form
        if shape[0] == 1 and shape[2] == s1:
            return "broadcast"
        if shape[0] in (1, b) and shape[2] == V.FA_ALIBI_ROWS and s1 > V.FA_ALIBI_ROWS:
            return "keep"
    raise V.value_error(op, "real_shift", f"[B, N1, S1, S2] = {V.quote((b, n1, s1, s2))}, [1, N1, S1, S2], "
                        f"[B, N1, 1, S2] or [B|1, N1, 1024, S2] (S1 > 1024) when input_layout is \"{layout}\"",
                        f"shape {V.quote(shape)}")


def _shape_of(x):
    return None if x is None else tuple(x.shape)


def _in_float32_if_bf16(move):
    """Run a data-movement function (reshape / transpose) on a bf16 tensor through float32.

    MindSpore's CPU backend has no bfloat16 Transpose / Reshape kernels, so GRAPH_MODE fails to
    compile them; bf16 -> fp32 -> bf16 is exact, and Cast has bf16 CPU kernels."""
    def wrapped(x, *args):
        if x.dtype == ms.bfloat16:
            return ops.cast(move(ops.cast(x, ms.float32), *args), ms.bfloat16)
        return move(x, *args)
    return wrapped


@_in_float32_if_bf16
def _to_tnd(x, layout, n, d):
    """[B, S, H] / [S, B, H] / [B, S, N, D] / [B, N, S, D] -> [B*S, N, D] (differentiable MindSpore ops)."""
    if layout == "SBH":
        x = ops.transpose(x, (1, 0, 2))
    elif layout == "BNSD":
        x = ops.transpose(x, (0, 2, 1, 3))
    return ops.reshape(x, (-1, n, d))


@_in_float32_if_bf16
def _from_tnd(x, layout, b, s, n, d):
    """[B*S, N, D] -> the input layout."""
    if layout in ("BSH", "SBH"):
        x = ops.reshape(x, (b, s, n * d))
        return ops.transpose(x, (1, 0, 2)) if layout == "SBH" else x
    x = ops.reshape(x, (b, s, n, d))
    return ops.transpose(x, (0, 2, 1, 3)) if layout == "BNSD" else x


def _mask_to_tnd(mask, form, b, s1, s2):
    if form == "squeeze":
        return ops.reshape(mask, (s1, s2))
    if form == "global":
        # Block-diagonal [T1, T2]: sequence b's block is its mask, everything across sequences masked
        # (never read by the kernel, which slices the diagonal blocks).
        own = ops.reshape(ops.cast(mask, ms.bool_), (b, s1, 1, s2))
        across = ops.reshape(ops.eye(b, b, ms.int32) == 0, (b, 1, b, 1))
        return ops.reshape(ops.logical_or(own, across), (b * s1, b * s2))
    return mask


@_in_float32_if_bf16
def _pse_to_tnd(pse, form, b, n1, s1, s2):
    if form == "broadcast":
        return ops.reshape(ops.broadcast_to(pse, (b, n1, s1, s2)), (-1,))
    if form == "flat":
        return ops.reshape(pse, (-1,))
    return pse


def _tnd_meta(meta, shape):
    return None if meta is None else V.TensorMeta(shape, meta.dtype)


class FlashAttentionScoreCell(nn.Cell):
    """``flash_attention_score`` for one set of attributes: layout conversion around the V4 primitive.

    TND: straight to :class:`FlashAttentionVarLenScoreV4`. BSH / SBH / BSND / BNSD (uniform S1, S2 per
    batch): q/k/v to ``[B*S, N, D]``, lengths ``[S, 2S, ...]``, masks and pse to their TND forms, outputs
    back to the input layout, statistics ``[B, N1, S1, 8]`` (the NTD data of the TND call).
    """

    INPUTS = ("query", "key", "value", "real_shift", "drop_mask", "attn_mask", "prefix", "actual_seq_qlen",
              "actual_seq_kvlen")

    def __init__(self, head_num, keep_prob=1.0, scalar_value=1.0, pre_tokens=MAX_TOKENS, next_tokens=MAX_TOKENS,
                 inner_precise=0, input_layout="TND", sparse_mode=0, softmax_out_layout=""):
        super().__init__()
        op = FWD_OP
        V.check_choice(op, "input_layout", input_layout, INPUT_LAYOUTS)
        if input_layout != "TND":
            if sparse_mode not in NON_TND_SPARSE_MODES:
                raise V.value_error(op, "sparse_mode", f'0, 1, 2, 3, 4 or 6 when input_layout is "{input_layout}"',
                                    sparse_mode)
            if softmax_out_layout != "":
                raise V.value_error(op, "softmax_out_layout", f'"" when input_layout is "{input_layout}" (statistics '
                                    "are [B, N1, S1, 8])", V.quote(softmax_out_layout))
        with ms_names(FUNCTIONAL_MS_NAMES):
            self.prim = FlashAttentionVarLenScoreV4(head_num, scalar_value, keep_prob, pre_tokens, next_tokens,
                                                    inner_precise, sparse_mode, 1, softmax_out_layout)
        self.head_num = head_num
        self.input_layout = input_layout

    def plan(self, query, key, value, real_shift, attn_mask, seq_given):
        return layout_plan(self.input_layout, self.head_num, tuple(query.shape), tuple(key.shape),
                           tuple(value.shape), _shape_of(attn_mask), _shape_of(real_shift), seq_given)

    def check(self, *args, **kwargs):
        """Host check of a call (MindSpore names); non-TND: layout shapes, then the TND call's checks."""
        bound = bind_inputs(self.INPUTS, args, kwargs, FWD_OP)
        call = {n: bound.get(n) for n in self.INPUTS}
        if self.input_layout == "TND":
            with ms_names(FUNCTIONAL_MS_NAMES):
                self.prim.check(**call)
            return call
        seq_given = call["actual_seq_qlen"] is not None or call["actual_seq_kvlen"] is not None
        plan = self.plan(call["query"], call["key"], call["value"], call["real_shift"], call["attn_mask"], seq_given)
        with ms_names(FUNCTIONAL_MS_NAMES):
            values = self._tnd_values(plan, call)
            tnd_plan = check_inputs(FWD_OP, self.prim.attrs, values)
            if plan.mask_form == "keep":
                check_mask_content(FWD_OP, tnd_plan, call["attn_mask"])
        return call

    def _tnd_values(self, plan: LayoutPlan, call: dict) -> dict:
        """Validation values of the TND call a non-TND call becomes (metas only, nothing converted)."""
        meta = {n: V.meta_of(call[n]) for n in ("query", "key", "value", "real_shift", "drop_mask", "attn_mask")}
        t1, t2 = plan.batch * plan.s1, plan.batch * plan.s2
        mask_shape = {"keep": meta["attn_mask"] and meta["attn_mask"].shape, "squeeze": (plan.s1, plan.s2),
                      "global": (t1, t2)}.get(plan.mask_form)
        pse = meta["real_shift"]
        pse_shape = None if pse is None else (pse.shape if plan.pse_form == "keep" else
                                              (plan.batch * int(np.prod(pse.shape[1:])),))
        drop = meta["drop_mask"]
        return {"query": _tnd_meta(meta["query"], (t1, plan.n1, plan.d)),
                "key": _tnd_meta(meta["key"], (t2, plan.n2, plan.dk)),
                "value": _tnd_meta(meta["value"], (t2, plan.n2, plan.dk)),
                "pse": _tnd_meta(pse, pse_shape),
                "drop_mask": _tnd_meta(drop, None if drop is None else (int(np.prod(drop.shape)),)),
                "atten_mask": None if meta["attn_mask"] is None else V.TensorMeta(mask_shape, meta["attn_mask"].dtype),
                "prefix": V.int_list(FWD_OP, "prefix", call["prefix"]),
                "actual_seq_qlen": list(plan.seq_q), "actual_seq_kvlen": list(plan.seq_kv)}

    def __call__(self, *args, **kwargs):
        # From Python: the whole check on the host first (PyNative swallows pyfunc errors).
        call = self.check(*args, **kwargs)
        for name in ("prefix", "actual_seq_qlen", "actual_seq_kvlen"):
            call[name] = _hostint64_tensor(call[name])
        return super().__call__(**call)

    def construct(self, query, key, value, real_shift=None, drop_mask=None, attn_mask=None, prefix=None,
                  actual_seq_qlen=None, actual_seq_kvlen=None):
        if self.input_layout == "TND":
            return self.prim(query, key, value, real_shift, drop_mask, None, attn_mask, prefix, actual_seq_qlen,
                             actual_seq_kvlen)
        plan = self.plan(query, key, value, real_shift, attn_mask,
                         actual_seq_qlen is not None or actual_seq_kvlen is not None)
        layout, b, s1 = self.input_layout, plan.batch, plan.s1
        out, softmax_max, softmax_sum = self.prim(
            _to_tnd(query, layout, plan.n1, plan.d), _to_tnd(key, layout, plan.n2, plan.dk),
            _to_tnd(value, layout, plan.n2, plan.dk),
            None if real_shift is None else _pse_to_tnd(real_shift, plan.pse_form, b, plan.n1, s1, plan.s2),
            None if drop_mask is None else ops.reshape(drop_mask, (-1,)), None,
            None if attn_mask is None else _mask_to_tnd(attn_mask, plan.mask_form, b, s1, plan.s2),
            prefix, plan.seq_q, plan.seq_kv)
        stats_shape = (b, plan.n1, s1, 8)
        return (_from_tnd(out, layout, b, s1, plan.n1, plan.d), ops.reshape(softmax_max, stats_shape),
                ops.reshape(softmax_sum, stats_shape))


@functools.lru_cache(maxsize=None)
def _score_cell(head_num, keep_prob, scalar_value, pre_tokens, next_tokens, inner_precise, input_layout,
                sparse_mode, softmax_out_layout) -> FlashAttentionScoreCell:
    """One Cell per attribute set, made on first use (GRAPH_MODE evaluates this at compile time)."""
    return FlashAttentionScoreCell(head_num, keep_prob, scalar_value, pre_tokens, next_tokens, inner_precise,
                               input_layout, sparse_mode, softmax_out_layout)


def flash_attention_score(query, key, value, head_num, real_shift=None, drop_mask=None, padding_mask=None,
                          attn_mask=None, prefix=None, actual_seq_qlen=None, actual_seq_kvlen=None, keep_prob=1.0,
                          scalar_value=1.0, pre_tokens=2147483647, next_tokens=2147483647, inner_precise=0,
                          input_layout="TND", sparse_mode=0, softmax_out_layout=""):
    r"""MindSpore's ``ops.flash_attention_score`` signature over the V4 ops; PyNative and GRAPH_MODE.

    ``input_layout`` "TND": query ``[T1, N1, D]``, key / value ``[T2, N2, D]``, ``actual_seq_qlen`` /
    ``actual_seq_kvlen`` cumulative without a leading 0 (list, tuple or 1-D int tensor); ``attn_mask``
    ``[maxS1, maxS2]`` / ``[T1, T2]`` (sparse_mode 0/1) or compressed (2-4, 6-8); ``real_shift`` the
    packed 1-D pse forms or ``[B|1, N1, 1024, maxS2]``; statistics ``[T1, N1, 8]`` (NTD data, or TND
    with ``softmax_out_layout="same_as_input"``).

    "BSH" ``[B, S, H]``, "SBH" ``[S, B, H]``, "BSND" ``[B, S, N, D]``, "BNSD" ``[B, N, S, D]``: uniform
    S1 / S2 per batch, no length lists; ``attn_mask`` ``[S1, S2]``, ``[1, 1, S1, S2]``, ``[B, 1, S1, S2]``
    or compressed (per-head ``[B, N1, S1, S2]`` masks raise ValueError); ``real_shift`` ``[B, N1, S1, S2]``,
    ``[1, N1, S1, S2]``, ``[B, N1, 1, S2]`` or ``[B|1, N1, 1024, S2]``; ``drop_mask`` bit-packed in
    ``[B, N1, S1, S2]`` order; sparse_mode 0-4, 6; statistics ``[B, N1, S1, 8]``.

    ``real_shift`` is pse with pse_type 1 (``(QK^T + pse) * scale``); ``scalar_value`` is the scale;
    ``padding_mask`` is reserved and must be None. Returns ``(attention_out, softmax_max, softmax_sum)``,
    differentiable w.r.t. query, key and value (grad: FlashAttentionUnpaddingScoreGradV4).
    """
    reject_reserved(FWD_OP, "padding_mask", padding_mask is not None)
    cell = _score_cell(head_num, keep_prob, scalar_value, pre_tokens, next_tokens, inner_precise, input_layout,
                       sparse_mode, softmax_out_layout)
    return cell(query, key, value, real_shift, drop_mask, attn_mask, prefix, actual_seq_qlen, actual_seq_kvlen)
