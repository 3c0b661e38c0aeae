"""MindSpore IncreFlashAttention: the ``IncreFlashAttentionV2`` primitive and MindSpore's functional signature.

* :class:`IncreFlashAttentionV2`: primitive-like Cell, attributes (``num_heads``, ``input_layout``,
  ``scale_value``, ``num_key_value_heads``, ``block_size``, ``inner_precise``) in the constructor,
  tensors (and the host list ``actual_seq_lengths``) as call inputs, in MindSpore's
  ``IncreFlashAttention`` input order.
* :func:`incre_flash_attention`: ``mindspore.ops.incre_flash_attention``'s signature over the primitive.

Backend (``backends.select``): on Ascend, the package's ``aclnnAscendAttnIncreFlashAttentionV2`` as an aot Custom op
where its kernel implements the input (``aclnn.ifa_package_reasons``), else MindSpore's own
``ops.incre_flash_attention`` (CANN's V4). Elsewhere an ``ops.Custom`` pyfunc around the torch core
``kernels/incre_flash_attention.py`` (the ``_op`` skeleton), in PyNative and GRAPH_MODE. Validation is the
shared module's (``validation.check_incre_flash_attention`` with the mask named ``attn_mask``), at three
points, as for RingAttentionUpdate: ``__call__`` (from Python, any mode: everything, including the host
values of ``actual_seq_lengths`` and the device values the kernel reads: dequant words, ``kv_padding_size``,
referenced ``block_table`` entries), the Custom op's infer functions (GRAPH_MODE compile: shapes and dtypes;
the length values are not known there) and the pyfunc (run time: everything again; MindSpore swallows
pyfunc errors in PyNative, hence the ``__call__`` check).

Absent optional inputs travel as a one-byte placeholder tensor; which inputs are real is part of the key of
a lazily built, cached Custom op (one per combination actually used).

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

import functools
from dataclasses import dataclass

import mindspore as ms
from mindspore import ops

from .. import aclnn, backends
from .. import validation as V
from ._aclnn import aot_op
from ._bridge import bf16_names, custom_inputs, host_torch, int64_tensor, is_bf16, present_names
from ._op import (OpKey, Primitive, PyfuncOp, absent_placeholder, list_splits, per_attribute_set,
                  split_metas)

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


# ----------------------------------------------------------------------------- the Custom op

class _IfaPyfunc(PyfuncOp):
    """The Custom op over ``kernels.incre_flash_attention``: INPUTS in, the attention output out.

    The validation rules mix shapes and dtypes (the quantisation scenario follows the dtypes), so the dtype
    pass runs the whole compile-time check on both. ``actual_seq_lengths`` values are not known at compile
    time: a given tensor stands in as ``[0]`` (length-1 broadcast, accepted by every rule); the rules on
    the real lengths run in the pyfunc. A K/V list concatenated in ``construct`` is split back (``key.splits``).
    """

    OP = OP
    SLOTS = INPUTS
    INT_LISTS = ("actual_seq_lengths",)
    MS_NAMES = {"atten_mask": MASK}  # the core's run-time messages

    def infer_shapes(self, metas, shapes):
        return list(shapes[0])

    def infer_dtypes(self, metas, dtypes, shapes):
        for name in ("key", "value"):
            metas[name] = split_metas(metas[name], self.key.splits, self.attrs.seq_axis)
        if metas.pop("actual_seq_lengths", None) is not None:
            metas["actual_seq_lengths"] = [0]
        plan = check_inputs(self.attrs, metas)
        if plan is None:  # shapes unknown: the plan's rule from the dtypes alone
            q = metas["query"].dtype
            out = "int8" if "quant_scale2" in self.key.present else ("float16" if q == "int8" else q)
        else:
            out = plan.out_dtype
        return ms.float32 if out == "bfloat16" else getattr(ms, out)

    def run(self, tensors, lists):
        import torch
        from ..kernels import incre_flash_attention as kernel
        kv = {n: list(torch.split(tensors[n], list(self.key.splits), dim=self.attrs.seq_axis)) if self.key.splits
              else tensors[n] for n in ("key", "value")}
        values = {n: V.meta_of(t) for n, t in tensors.items()}
        values.update({n: ([V.meta_of(t) for t in x] if isinstance(x, list) else V.meta_of(x)) for n, x in kv.items()})
        values["actual_seq_lengths"] = lists.get("actual_seq_lengths")
        plan = check_inputs(self.attrs, values)
        check_values(plan, {**tensors, "key": kv["key"] if not isinstance(kv["key"], list) else kv["key"][0]})
        return kernel.incre_flash_attention(tensors["query"], kv["key"], kv["value"], plan, atten_mask=tensors[MASK],
                                            **{n: tensors[n] for n in OPTIONAL_TENSORS if n != MASK})


@functools.lru_cache(maxsize=None)
def custom_op(attr_values: tuple, present: tuple, bf16: tuple, kv_splits) -> ops.Custom:
    """The Custom op for these attributes and this combination of given / bf16 inputs / K/V list.

    Built on first use and cached here (not on the Cell): GRAPH_MODE evaluates a call of this cache at
    compile time as plain Python, and equal primitives share their ops. All arguments are plain tuples so
    a graph can pass them as constants.
    """
    return _IfaPyfunc(IncreAttrs(*attr_values), OpKey(present, bf16, kv_splits)).custom()


# ----------------------------------------------------------------------------- construct helpers

def _is_list(x):
    return isinstance(x, (list, tuple))


def _shapes(tensors):
    return tuple(tuple(t.shape) for t in tensors)


@functools.lru_cache(maxsize=None)
def _kv_splits(layout: str, key_shapes: tuple, value_shapes: tuple):
    """(S_b of a K/V tensor list, its S axis); the shape rules the concatenation needs are checked here with
    validation's messages (the full check runs in the infer functions). Cached, so a graph evaluates it at
    compile time as plain Python (shapes are constants there)."""
    axis = 2 if layout == "BNSD" else 1
    return list_splits(OP, "key", "value", key_shapes, value_shapes, axis, "S", rank=3 if layout == "BSH" else 4,
                       rank_form=f'for input_layout "{layout}"'), axis


# ----------------------------------------------------------------------------- Ascend: aclnn

@functools.lru_cache(maxsize=None)
def aclnn_op(quant_out: bool) -> ops.Custom:
    """aot Custom op of the package's AscendAttnIncreFlashAttentionV2; the output is int8 with quant_scale2
    (scenarios A, C), else float16 for int8 query (B), else the query dtype."""
    def infer_dtype(query, *_):
        return ms.int8 if quant_out else (ms.float16 if query == ms.int8 else query)
    return aot_op(aclnn.IFA_PACKAGE_V2, lambda query, *_: query, infer_dtype)


def _head_dim(query_shape, layout: str, num_heads: int) -> int:
    return query_shape[-1] // num_heads if layout == "BSH" else query_shape[-1]


# ----------------------------------------------------------------------------- the primitive

class IncreFlashAttentionV2(Primitive):
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

    OP = OP
    INPUTS = INPUTS
    INT_LISTS = ("actual_seq_lengths",)

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
        self._absent = absent_placeholder()
        self.use_aclnn = backend.name == "mindspore.kernels"
        self.package_usable = self.use_aclnn and backends.probe_kernel_package() is None
        self.aclnn_attrs = aclnn.IFA_PACKAGE_V2.attr_values(attrs.__dict__)

    def check(self, *args, **kwargs) -> dict:
        """Everything, on the host (shapes, dtypes, length values, dequant words, padding, block_table)."""
        bound = self.bind(args, kwargs, required=("query", "key", "value"))
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
        check_values(plan, {**{n: host_torch(bound[n]) for n in needed}, "key": V.meta_of(key)})
        bound["actual_seq_lengths"] = values["actual_seq_lengths"]
        return bound

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


_primitive = per_attribute_set(IncreFlashAttentionV2)


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
