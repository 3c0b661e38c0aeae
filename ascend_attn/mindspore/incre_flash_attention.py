"""MindSpore IncreFlashAttention: the ``IncreFlashAttentionV2`` primitive and MindSpore's functional signature.

* :class:`IncreFlashAttentionV2`: primitive-like Cell, attributes (``num_heads``, ``input_layout``,
  ``scale_value``, ``num_key_value_heads``, ``block_size``, ``inner_precise``) in the constructor,
  tensors (and the host list ``actual_seq_lengths``) as call inputs, in MindSpore's
  ``IncreFlashAttention`` input order.
* :func:`incre_flash_attention`: ``mindspore.ops.incre_flash_attention``'s signature over the primitive.

Backend (``backends.select``): on Ascend, the package's ``aclnnIncreFlashAttentionV2`` as an aot Custom op
where its kernel implements the input (``aclnn.ifa_package_reasons``), else MindSpore's own
``ops.incre_flash_attention`` (CANN's V4). Elsewhere an ``ops.Custom`` pyfunc around the torch core
``kernels/incre_flash_attention.py`` (through ``_bridge``), in PyNative and GRAPH_MODE. Validation is the
shared module's (``validation.check_incre_flash_attention`` with the mask named ``attn_mask``), at three
points, as for RingAttentionUpdate: ``__call__`` (from Python, any mode: everything, including the host
values of ``actual_seq_lengths`` and the device values the kernel reads: dequant words, ``kv_padding_size``,
referenced ``block_table`` entries), the Custom op's infer functions (GRAPH_MODE compile: shapes and dtypes;
the length values are not known there) and the pyfunc (run time: everything again; MindSpore swallows
pyfunc errors in PyNative, hence the ``__call__`` check).

Absent optional inputs travel as a one-byte placeholder tensor; which inputs are real is part of the key of
a lazily built, cached Custom op (one per combination actually used), so the kernel function has a fixed,
explicit parameter list (pyfunc takes a ``*args`` kernel as one tuple input).

Tensor-list K/V (a list of B tensors of batch 1 with their own S_b, PyNative and GRAPH_MODE): the list is
concatenated along S in ``construct`` (one copy of the cache) and the per-batch lengths S_b (static shapes)
are part of the Custom op's key; the pyfunc splits it back into per-batch views for the core. A list of
one tensor is that tensor (docs/semantics.md §7.1).

bfloat16: pyfunc cannot carry it, so bf16 tensors (query, key, value, pse_shift, quant / antiquant
parameters) are cast to float32 around the Custom op (exact) and the pyfunc casts them back to bfloat16
before calling the torch core, which therefore computes exactly what the torch op computes; a bf16 result
comes back as float32 holding bf16 values and is cast to bf16 (exact). uint64 / int64 dequant words, int8
and bool tensors pass through unchanged. The output dtype is the plan's (int8 for scenarios A and C,
float16 for B, else the query dtype).
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

OP = V.IFA_OP
MASK = "attn_mask"  # MindSpore's name of the mask (validation / torch: atten_mask)

# Call inputs of the primitive, MindSpore's IncreFlashAttention order (also the Custom op's slots).
INPUTS = ("query", "key", "value", "attn_mask", "actual_seq_lengths", "pse_shift", "dequant_scale1",
          "quant_scale1", "dequant_scale2", "quant_scale2", "quant_offset2", "antiquant_scale", "antiquant_offset",
          "block_table", "kv_padding_size")
OPTIONAL_TENSORS = ("attn_mask", "pse_shift", "dequant_scale1", "quant_scale1", "dequant_scale2", "quant_scale2",
                    "quant_offset2", "antiquant_scale", "antiquant_offset", "block_table", "kv_padding_size")
# Floating inputs that may be bf16; they are cast to float32 around the op and back in the pyfunc.
CASTABLE = ("query", "key", "value", "pse_shift", "quant_scale1", "quant_scale2", "quant_offset2",
            "antiquant_scale", "antiquant_offset")


@contextlib.contextmanager
def ms_names():
    """Re-raise the core's ``atten_mask`` messages (run-time checks) under MindSpore's name ``attn_mask``."""
    try:
        yield
    except (ValueError, TypeError) as exc:
        text, old = str(exc), f"{OP}: atten_mask only supports"
        if text.startswith(old):
            raise type(exc)(f"{OP}: {MASK} only supports" + text[len(old):]) from None
        raise


# ----------------------------------------------------------------------------- attributes and checks

@dataclass(frozen=True)
class IncreAttrs:
    """The constructor attributes of the primitive."""

    num_heads: int = 1
    input_layout: str = "BSH"
    scale_value: float = 1.0
    num_key_value_heads: int = 0
    block_size: int = 0
    inner_precise: int = 1

    @property
    def seq_axis(self) -> int:
        """S axis of a contiguous K/V tensor in this layout."""
        return 2 if self.input_layout == "BNSD" else 1


def check_inputs(attrs: IncreAttrs, values: dict):
    """Full check (docs/semantics.md §7, docs/errors.md). ``values``: MindSpore name -> TensorMeta (or a
    list of them for key/value) / host int list / None. Returns the IncrePlan (None when shapes are unknown)."""
    opts = {("atten_mask" if n == MASK else n): values.get(n) for n in INPUTS[3:]}
    return V.check_incre_flash_attention(values["query"], values["key"], values["value"], **opts,
                                         num_heads=attrs.num_heads, input_layout=attrs.input_layout,
                                         scale_value=attrs.scale_value, num_key_value_heads=attrs.num_key_value_heads,
                                         block_size=attrs.block_size, inner_precise=attrs.inner_precise, op=OP,
                                         mask_arg=MASK)


def check_attributes(attrs: IncreAttrs) -> None:
    """Constructor-time check of the attributes alone (input_layout, inner_precise, int types)."""
    unknown = V.TensorMeta(None, None)
    check_inputs(attrs, {"query": unknown, "key": unknown, "value": unknown})


def check_values(plan, tensors: dict) -> None:
    """The device values the core reads before computing, checked on the host with the core's
    own function and messages: PyNative swallows the pyfunc's errors, so ``__call__`` runs this
    first. ``tensors``: MindSpore name -> torch tensor / None.
    """
    from ..kernels import incre_flash_attention as kernel
    if plan is None:
        return
    names = ("block_table", "pse_shift", "kv_padding_size", "dequant_scale1", "dequant_scale2", "quant_scale1")
    kernel.check_device_values(plan, key=tensors["key"], atten_mask=tensors.get(MASK), mask_arg=MASK,
                               **{n: tensors.get(n) for n in names})


def _shape_meta(shape) -> tuple | None:
    shape = tuple(int(d) for d in shape)
    return None if any(d < 0 for d in shape) else shape  # dynamic dims: unknown


def _split_metas(meta: V.TensorMeta, splits, axis: int):
    """The per-batch metas of a concatenated tensor list (``splits``: the S_b); else the meta itself."""
    if splits is None:
        return meta
    if meta.shape is None:
        return [V.TensorMeta(None, meta.dtype) for _ in splits]
    return [V.TensorMeta(meta.shape[:axis] + (s,) + meta.shape[axis + 1:], meta.dtype) for s in splits]


# ----------------------------------------------------------------------------- the Custom op

@dataclass(frozen=True)
class OpKey:
    """What a Custom op is specialised on: the given optional inputs, those that were bf16, and the S_b
    of a concatenated K/V list (None for a single K/V tensor)."""

    present: tuple[str, ...]
    bf16: tuple[str, ...]
    kv_splits: tuple[int, ...] | None


def _run_kernel(attrs: IncreAttrs, key: OpKey, arrays: tuple):
    """pyfunc body: numpy arrays of all slots -> torch (bf16 restored, K/V list split) -> check -> core -> numpy."""
    import torch
    from ..kernels import incre_flash_attention as kernel

    tensors, seq = {}, None
    for name, array in zip(INPUTS, arrays):
        if name not in key.present:
            tensors[name] = None
        elif name == "actual_seq_lengths":
            seq = [int(x) for x in np.asarray(array).reshape(-1)]
        else:
            t = to_torch(array)
            tensors[name] = t.to(torch.bfloat16) if name in key.bf16 else t
    kv = {}
    for name in ("key", "value"):
        t = tensors[name]
        kv[name] = list(torch.split(t, list(key.kv_splits), dim=attrs.seq_axis)) if key.kv_splits else t
    values = {n: V.meta_of(t) for n, t in tensors.items()}
    values.update({n: ([V.meta_of(t) for t in x] if isinstance(x, list) else V.meta_of(x)) for n, x in kv.items()})
    values["actual_seq_lengths"] = seq
    plan = check_inputs(attrs, values)
    check_values(plan, {**tensors, "key": kv["key"] if not isinstance(kv["key"], list) else kv["key"][0]})
    out = kernel.incre_flash_attention(
        tensors["query"], kv["key"], kv["value"], plan, atten_mask=tensors[MASK],
        **{n: tensors[n] for n in OPTIONAL_TENSORS if n != MASK})
    return to_numpy(out.float() if out.dtype == torch.bfloat16 else out)


class _Infer:
    """infer_shape / infer_dtype of one Custom op.

    The graph compiler calls infer_shape before infer_dtype (separately); the validation rules mix shapes
    and dtypes (the quantisation scenario follows the dtypes), so the shape pass keeps the shapes and the
    dtype pass runs the whole compile-time check on both. ``actual_seq_lengths`` values are not known at
    compile time: a given tensor stands in as ``[0]`` (length-1 broadcast, accepted by every rule); the
    rules on the real lengths run in the pyfunc.
    """

    def __init__(self, attrs: IncreAttrs, key: OpKey):
        self.attrs, self.key, self.shapes = attrs, key, None

    def _values(self, shapes, dtypes) -> dict:
        values = {}
        for i, name in enumerate(INPUTS):
            if name not in self.key.present:
                continue
            shape = None if shapes is None else _shape_meta(shapes[i])
            dtype = "bfloat16" if name in self.key.bf16 else V.dtype_name(dtypes[i])
            values[name] = V.TensorMeta(shape, dtype)
        for name in ("key", "value"):
            values[name] = _split_metas(values[name], self.key.kv_splits, self.attrs.seq_axis)
        seq = values.pop("actual_seq_lengths", None)
        if seq is not None:
            V.check_int_sequence_meta(OP, "actual_seq_lengths", seq)
            values["actual_seq_lengths"] = [0]
        return values

    def shape(self, *shapes):
        self.shapes = shapes
        return list(shapes[0])

    def dtype(self, *dtypes):
        shapes, self.shapes = self.shapes, None
        plan = check_inputs(self.attrs, self._values(shapes, dtypes))
        if plan is None:  # shapes unknown: the plan's rule from the dtypes alone
            q = "bfloat16" if "query" in self.key.bf16 else V.dtype_name(dtypes[0])
            int8_out = "quant_scale2" in self.key.present
            out = "int8" if int8_out else ("float16" if q == "int8" else q)
        else:
            out = plan.out_dtype
        return ms.float32 if out == "bfloat16" else getattr(ms, out)


@functools.lru_cache(maxsize=None)
def custom_op(attr_values: tuple, present: tuple, bf16: tuple, kv_splits) -> ops.Custom:
    """The Custom op for these attributes and this combination of given / bf16 inputs / K/V list.

    Built on first use and cached here (not on the Cell): GRAPH_MODE evaluates a call of this cache at
    compile time as plain Python, and equal primitives share their ops. All arguments are plain tuples so
    a graph can pass them as constants.
    """
    attrs, key = IncreAttrs(*attr_values), OpKey(tuple(present), tuple(bf16), kv_splits)
    infer = _Infer(attrs, key)

    def ifa_kernel(query, key_, value, attn_mask, actual_seq_lengths, pse_shift, dequant_scale1, quant_scale1,
                   dequant_scale2, quant_scale2, quant_offset2, antiquant_scale, antiquant_offset, block_table,
                   kv_padding_size):
        arrays = (query, key_, value, attn_mask, actual_seq_lengths, pse_shift, dequant_scale1, quant_scale1,
                  dequant_scale2, quant_scale2, quant_offset2, antiquant_scale, antiquant_offset, block_table,
                  kv_padding_size)
        with ms_names():
            return _run_kernel(attrs, key, arrays)

    return ops.Custom(func=ifa_kernel, out_shape=infer.shape, out_dtype=infer.dtype, func_type="pyfunc")


# ----------------------------------------------------------------------------- construct helpers



def _hostint64_tensor(values):
    return None if values is None else ms.Tensor(np.asarray(values, dtype=np.int64).reshape(-1))


def _is_list(x):
    return isinstance(x, (list, tuple))


def _shapes(tensors):
    return tuple(tuple(t.shape) for t in tensors)


@functools.lru_cache(maxsize=None)
def _kv_splits(layout: str, key_shapes: tuple, value_shapes: tuple):
    """(S_b of a K/V tensor list, its S axis); the shape rules the concatenation needs are checked here with
    validation's messages (the full check runs in the infer functions). Cached, so a graph evaluates it at
    compile time as plain Python (shapes are constants there)."""
    if len(key_shapes) != len(value_shapes):
        raise V.value_error(OP, "value", "the same form as key (a tensor, or a list of as many tensors)",
                            f"{len(value_shapes)} tensor(s) for {len(key_shapes)} key tensor(s)")
    rank = 3 if layout == "BSH" else 4
    axis = 2 if layout == "BNSD" else 1
    first = None
    for i, (k, v) in enumerate(zip(key_shapes, value_shapes)):
        k, v = tuple(k), tuple(v)
        V.check_rank(OP, f"key[{i}]", V.TensorMeta(k, None), rank, f'for input_layout "{layout}"')
        V.check_same_shape(OP, f"value[{i}]", V.TensorMeta(v, None), f"key[{i}]", V.TensorMeta(k, None))
        rest = k[:axis] + k[axis + 1:]
        if first is not None and rest != first:
            raise V.value_error(OP, f"key[{i}]", "the shape of key[0] except S", f"shape {V.quote(k)}")
        first = rest if first is None else first
    return tuple(int(k[axis]) for k in key_shapes), axis


def _bind(args: tuple, kwargs: dict) -> dict:
    bound = bind_inputs(INPUTS, args, kwargs, OP)
    for name in ("query", "key", "value"):
        if bound.get(name) is None:
            raise TypeError(f"{OP}: missing input {name!r}")
    return {n: bound.get(n) for n in INPUTS}



def _torch_of(x):
    """MindSpore / numpy / torch tensor -> CPU torch tensor (bf16 kept) for the host value checks."""
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


# ----------------------------------------------------------------------------- Ascend: aclnn

@functools.lru_cache(maxsize=None)
def aclnn_op(quant_out: bool) -> ops.Custom:
    """aot Custom op of the package's IncreFlashAttentionV2; the output is int8 with quant_scale2
    (scenarios A, C), else float16 for int8 query (B), else the query dtype."""
    def infer_dtype(query, *_):
        return ms.int8 if quant_out else (ms.float16 if query == ms.int8 else query)
    return aot_op(aclnn.IFA_PACKAGE_V2, lambda query, *_: query, infer_dtype)


def _head_dim(query_shape, layout: str, num_heads: int) -> int:
    return query_shape[-1] // num_heads if layout == "BSH" else query_shape[-1]


# ----------------------------------------------------------------------------- the primitive

class IncreFlashAttentionV2(nn.Cell):
    r"""IncreFlashAttention V2 primitive (int8 scenarios A/B/C) with the V4 extensions.

    ``IncreFlashAttentionV2(num_heads=1, input_layout="BSH", scale_value=1.0, num_key_value_heads=0,
    block_size=0, inner_precise=1)(query, key, value, attn_mask=None, actual_seq_lengths=None,
    pse_shift=None, dequant_scale1=None, quant_scale1=None, dequant_scale2=None, quant_scale2=None,
    quant_offset2=None, antiquant_scale=None, antiquant_offset=None, block_table=None, kv_padding_size=None)``.

    Layouts (query S = 1; output shaped like query): "BSH" query ``(B, 1, Nq*D)``, key/value
    ``(B, S, Nkv*D)``; "BSND" ``(B, 1, Nq, D)`` / ``(B, S, Nkv, D)``; "BNSD" ``(B, Nq, 1, D)`` /
    ``(B, Nkv, S, D)``. ``key``/``value``: a tensor or a list of B tensors of batch 1 (own S_b).
    Paged KV: ``block_table`` int32 ``(B, M)`` with ``block_size``, caches ``(num_blocks, block_size,
    Nkv*D)`` or (BNSD query) ``(num_blocks, Nkv, block_size, D)``. ``attn_mask`` (1 = masked) ``(B, S)``,
    ``(B, 1, S)``, ``(B, 1, 1, S)``, ``(B|1, Nq, 1, S)``; ``actual_seq_lengths``: list, tuple or 1-D
    integer tensor; ``pse_shift`` ``(B|1, Nq, 1, S)``; ``kv_padding_size`` int64, one element.
    Quantisation as ``ascend_attn.incre_flash_attention`` (docs/semantics.md §7.4-§7.7): dequant scales float32
    or uint64/int64 words from ``trans_quant_param``.
    Returns the attention output: int8 (scenarios A, C), float16 (B) or the query dtype.
    """

    def __init__(self, num_heads=1, input_layout="BSH", scale_value=1.0, num_key_value_heads=0, block_size=0,
                 inner_precise=1):
        super().__init__()
        if isinstance(scale_value, bool) or not isinstance(scale_value, (int, float)):
            raise V.type_error(OP, "scale_value", "a float", type(scale_value).__name__)
        attrs = IncreAttrs(num_heads, input_layout, float(scale_value), num_key_value_heads, block_size,
                           inner_precise)
        check_attributes(attrs)
        self.num_heads, self.input_layout, self.scale_value = num_heads, input_layout, float(scale_value)
        self.num_key_value_heads, self.block_size, self.inner_precise = num_key_value_heads, block_size, inner_precise
        self.attrs = attrs
        self.attr_values = tuple(attrs.__dict__.values())  # graph constants for custom_op(...)
        backend, _ = backends.select("mindspore", OP, ms.get_context("device_target"))
        self.backend = backend.name
        self._absent = ms.Tensor(np.zeros((1,), np.uint8))
        self.use_aclnn = backend.name == "mindspore.kernels"
        self.package_usable = self.use_aclnn and backends.probe_kernel_package() is None
        self.aclnn_attrs = aclnn.IFA_PACKAGE_V2.attr_values(attrs.__dict__)

    def check(self, *args, **kwargs) -> dict:
        """Everything, on the host (shapes, dtypes, length values, dequant words, padding, block_table)."""
        bound = _bind(args, kwargs)
        values = {}
        for name, x in bound.items():
            if name == "actual_seq_lengths":
                values[name] = V.int_list(OP, name, [x] if isinstance(x, int) and not isinstance(x, bool) else x)
            elif name in ("key", "value") and _is_list(x):
                values[name] = [V.meta_of(t) for t in x] if len(x) != 1 else V.meta_of(x[0])
            else:
                values[name] = V.meta_of(x)
        plan = check_inputs(self.attrs, values)
        key = bound["key"][0] if _is_list(bound["key"]) else bound["key"]
        needed = ("dequant_scale1", "dequant_scale2", "quant_scale1", MASK, "pse_shift", "kv_padding_size",
                  "block_table")
        check_values(plan, {**{n: _torch_of(bound[n]) for n in needed}, "key": V.meta_of(key)})
        bound["actual_seq_lengths"] = values["actual_seq_lengths"]
        return bound

    def __call__(self, *args, **kwargs):
        # From Python (PyNative, or the top level of GRAPH_MODE): check everything on the host first, so
        # errors are raised before any kernel runs (PyNative swallows pyfunc errors).
        bound = self.check(*args, **kwargs)
        bound["actual_seq_lengths"] = _hostint64_tensor(bound["actual_seq_lengths"])
        for name in ("key", "value"):
            if _is_list(bound[name]):
                bound[name] = list(bound[name])
        return super().__call__(**bound)

    def construct(self, query, key, value, attn_mask=None, actual_seq_lengths=None, pse_shift=None,
                  dequant_scale1=None, quant_scale1=None, dequant_scale2=None, quant_scale2=None, quant_offset2=None,
                  antiquant_scale=None, antiquant_offset=None, block_table=None, kv_padding_size=None):
        if self.use_aclnn:
            return self._aclnn(query, key, value, attn_mask, actual_seq_lengths, pse_shift, dequant_scale1,
                               quant_scale1, dequant_scale2, quant_scale2, quant_offset2, antiquant_scale,
                               antiquant_offset, block_table, kv_padding_size)
        kv_splits = None
        if _is_list(key) and _is_list(value) and len(key) == 1 and len(value) == 1:
            key, value = key[0], value[0]
        elif _is_list(key) or _is_list(value):
            keys = key if _is_list(key) else (key,)
            vals = value if _is_list(value) else (value,)
            # the concatenation axis comes out of the check, so a graph evaluates the check first
            kv_splits, axis = _kv_splits(self.input_layout, _shapes(keys), _shapes(vals))
            key, value = ops.concat(keys, axis), ops.concat(vals, axis)
        actual_seq_lengths = int64_tensor(actual_seq_lengths)
        given = (query, key, value, attn_mask, actual_seq_lengths, pse_shift, dequant_scale1, quant_scale1,
                 dequant_scale2, quant_scale2, quant_offset2, antiquant_scale, antiquant_offset, block_table,
                 kv_padding_size)
        op = custom_op(self.attr_values, present_names(INPUTS, given), bf16_names(INPUTS, given, CASTABLE), kv_splits)
        out = op(*custom_inputs(INPUTS, given, CASTABLE, self._absent))
        if is_bf16(query) and quant_scale2 is None:
            out = ops.cast(out, ms.bfloat16)
        return out


    def _aclnn(self, query, key, value, attn_mask, actual_seq_lengths, pse_shift, dequant_scale1, quant_scale1,
               dequant_scale2, quant_scale2, quant_offset2, antiquant_scale, antiquant_offset, block_table,
               kv_padding_size):
        """Ascend: the package kernel where it implements the input, else MindSpore's own op (CANN's V4)."""
        if _is_list(key) and len(key) == 1:
            key, value = key[0], value[0]
        kv_form = "paged" if block_table is not None else ("list" if _is_list(key) else "tensor")
        reasons = aclnn.ifa_package_reasons(
            layout=self.input_layout, kv_form=kv_form, has_pse=pse_shift is not None,
            antiquant=antiquant_scale is not None,
            left_padding=kv_padding_size is not None and actual_seq_lengths is not None,
            head_dim=_head_dim(query.shape, self.input_layout, self.num_heads),
            group=self.num_heads // (self.num_key_value_heads or self.num_heads))
        if self.package_usable and not reasons:
            return aclnn_op(quant_scale2 is not None)(*aclnn.IFA_PACKAGE_V2.input_values(dict(
                query=query, key=key, value=value, pse_shift=pse_shift, atten_mask=attn_mask,
                actual_seq_lengths=actual_seq_lengths, dequant_scale1=dequant_scale1, quant_scale1=quant_scale1,
                dequant_scale2=dequant_scale2, quant_scale2=quant_scale2, quant_offset2=quant_offset2)),
                *self.aclnn_attrs)
        return ops.incre_flash_attention(
            query, key if _is_list(key) else [key], value if _is_list(value) else [value], attn_mask,
            actual_seq_lengths, pse_shift, dequant_scale1, quant_scale1, dequant_scale2, quant_scale2, quant_offset2,
            antiquant_scale, antiquant_offset, block_table, self.num_heads, self.input_layout, self.scale_value,
            self.num_key_value_heads, self.block_size, self.inner_precise, kv_padding_size)


@functools.lru_cache(maxsize=None)
def _primitive(num_heads, input_layout, scale_value, num_key_value_heads, block_size, inner_precise):
    """One primitive per attribute set, made on first use (GRAPH_MODE evaluates this at compile time)."""
    return IncreFlashAttentionV2(num_heads, input_layout, scale_value, num_key_value_heads, block_size, inner_precise)


def incre_flash_attention(query, key, value, attn_mask=None, actual_seq_lengths=None, pse_shift=None,
                          dequant_scale1=None, quant_scale1=None, dequant_scale2=None, quant_scale2=None,
                          quant_offset2=None, antiquant_scale=None, antiquant_offset=None, block_table=None,
                          num_heads=1, input_layout="BSH", scale_value=1.0, num_key_value_heads=0, block_size=0,
                          inner_precise=1, kv_padding_size=None):
    """``mindspore.ops.incre_flash_attention``'s signature over :class:`IncreFlashAttentionV2`; PyNative
    and GRAPH_MODE. See the primitive for shapes, layouts and quantisation."""
    prim = _primitive(num_heads, input_layout, scale_value, num_key_value_heads, block_size, inner_precise)
    return prim(query, key, value, attn_mask, actual_seq_lengths, pse_shift, dequant_scale1, quant_scale1,
                dequant_scale2, quant_scale2, quant_offset2, antiquant_scale, antiquant_offset, block_table,
                kv_padding_size)
