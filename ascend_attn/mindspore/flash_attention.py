"""MindSpore FlashAttention V4: the varlen (TND) forward and grad primitives.

* :class:`FlashAttentionVarLenScoreV4` (aclnnFlashAttentionVarLenScoreV4) and
  :class:`FlashAttentionUnpaddingScoreGradV4` (aclnnFlashAttentionUnpaddingScoreGradV4): primitive-like
  Cells, attributes in the constructor, tensors and host integer lists as call inputs. The forward's
  ``ops.Custom`` carries a ``bprop`` that calls the grad primitive's op, so ``ms.grad`` /
  ``value_and_grad`` differentiate with respect to query, key and value in PyNative and GRAPH_MODE.
* ``flash_attention_score`` (MindSpore's functional signature, all input layouts) is
  ``flash_attention_score.py``, a layout adapter over the forward primitive.

Backend (``backends.select``): the ``ops.Custom`` pyfunc around the torch core ``kernels/flash_attention.py``,
built from the ``_op`` skeleton. Validation is the shared module's, at three points, as for every op:
``__call__`` (from Python, any mode: everything, including host values of the length lists and the
compressed-mask content), the Custom op's infer functions (GRAPH_MODE compile: shapes and dtypes; the
length values are not known there) and the pyfunc (run time: everything again; MindSpore swallows
pyfunc errors in PyNative, hence the ``__call__`` check).

Absent optional inputs travel as a one-byte placeholder tensor; which inputs are real is part of the
key of a lazily built, cached Custom op (one per combination actually used).

bfloat16: pyfunc cannot carry it, so bf16 tensors are cast to float32 around the Custom op (exact) and
the pyfunc casts them back to bfloat16 before calling the torch kernel, which therefore computes exactly
what the torch op computes on bf16 (P rounded to bf16 before ``@V``, outputs RNE); results come back
as float32 holding bf16 values and are cast to bf16 (exact). float16 passes through unchanged.
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
from ._op import OpKey, Primitive, PyfuncOp, absent_placeholder, renamed

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
    seq_meta = metas.get("actual_seq_qlen")  # a 1-D integer tensor (the skeleton checked it)
    batch = seq_meta.shape[0] if seq_meta is not None and seq_meta.shape and seq_meta.shape[0] > 0 else 1
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
        from ..kernels.masks import check_compressed_mask
        check_compressed_mask(host_torch(atten_mask), plan.sparse_mode, op)


@functools.lru_cache(maxsize=None)
def reject_reserved(op: str, name: str, given: bool) -> bool:
    """Reserved inputs (padding_mask, softmax_in) must be None; cached so a graph runs it at compile time."""
    if given:
        raise V.value_error(op, name, "None (reserved)", "a tensor")
    return True


# ----------------------------------------------------------------------------- Custom ops

class _FlashPyfunc(PyfuncOp):
    """The Custom op of the forward or the grad over ``kernels/flash_attention.py``.

    The shape pass checks shapes, the dtype pass dtypes alone (the rules that need both also need the
    length values, so they run in the pyfunc).
    """

    INT_LISTS = INT_LISTS

    def infer_shapes(self, metas, shapes):
        check_compile_time(self.OP, self.attrs, metas, shapes_known=True)
        return self.out_shapes(*(list(s) for s in shapes[:3]))

    def infer_dtypes(self, metas, dtypes, shapes):
        metas = {n: V.TensorMeta(None, m.dtype) for n, m in metas.items()}
        check_compile_time(self.OP, self.attrs, metas, shapes_known=False)
        return self.out_dtypes(*dtypes[:3])

    def run(self, tensors, lists):
        if tensors["drop_mask"] is not None:
            tensors["drop_mask"] = tensors["drop_mask"].reshape(-1)  # bit-packed: any shape, flat order
        values = {n: V.meta_of(t) for n, t in tensors.items()}
        values.update(lists)
        plan = check_inputs(self.OP, self.attrs, values)
        check_mask_content(self.OP, plan, tensors["atten_mask"])
        from ..kernels import flash_attention as kernel
        return self.compute(kernel, tensors, plan, {n: tensors[n] for n in ("pse", "drop_mask", "atten_mask")})


class _ForwardPyfunc(_FlashPyfunc):
    """FWD_SLOTS in, ``(out, max, sum)`` out."""

    OP, SLOTS, MS_NAMES = FWD_OP, FWD_SLOTS, FWD_MS_NAMES

    def out_shapes(self, q, k, v):
        return q, [q[0], q[1], 8], [q[0], q[1], 8]

    def out_dtypes(self, q, k, v):
        return q, ms.float32, ms.float32

    def compute(self, kernel, t, plan, extra):
        return kernel.flash_attention_forward(t["query"], t["key"], t["value"], plan, **extra)


class _GradPyfunc(_FlashPyfunc):
    """GRAD_SLOTS in, ``(dq, dk, dv)`` out."""

    OP, SLOTS, MS_NAMES = GRAD_OP, GRAD_SLOTS, GRAD_MS_NAMES

    def out_shapes(self, q, k, v):
        return q, k, v

    def out_dtypes(self, q, k, v):
        return q, k, v

    def compute(self, kernel, t, plan, extra):
        return kernel.flash_attention_backward(t["query"], t["key"], t["value"], t["dy"], t["softmax_max"],
                                               t["softmax_sum"], t["attention_in"], plan, **extra)


@functools.lru_cache(maxsize=None)
def custom_op(op: str, attr_values: tuple, present: tuple, bf16: tuple) -> ops.Custom:
    """The Custom op of ``op`` for these attributes and this combination of given / bf16 inputs.

    Built on first use and cached here (not on the Cell): GRAPH_MODE evaluates a call of this cache
    at compile time as plain Python, and equal primitives share their ops. All arguments are plain
    tuples / strings so a graph can pass them as constants.
    """
    attrs, key = FlashAttrs(*attr_values), OpKey(tuple(present), tuple(bf16))
    if op == GRAD_OP:
        return _GradPyfunc(attrs, key).custom()
    # The bprop's grad op takes dy / attention_in like query (both bf16 when query was), and the
    # forward's statistics in its softmax_out_layout.
    extra = ("dy", "attention_in") if "query" in key.bf16 else ()
    grad = custom_op(GRAD_OP, attr_values, key.present + ("dy", "softmax_max", "softmax_sum", "attention_in"),
                     key.bf16 + extra)
    return _ForwardPyfunc(attrs, key).custom(bprop=_forward_bprop(grad))


def _forward_bprop(grad_custom: ops.Custom):
    """The forward Custom op's bprop: the grad primitive's op (same attributes, ``softmax_in_layout`` = the
    forward's ``softmax_out_layout``). The statistics are not differentiable outputs (as in CANN), and only
    query, key and value get gradients (dpse is unused in V4). Its parameters are spelled out: GRAPH_MODE
    parses it."""
    def bprop(query, key_, value, pse, drop_mask, atten_mask, prefix, actual_seq_qlen, actual_seq_kvlen,
              q_start_idx, kv_start_idx, out, dout):
        dq, dk, dv = grad_custom(query, key_, value, dout[0], pse, drop_mask, atten_mask, out[1], out[2], out[0],
                                 prefix, actual_seq_qlen, actual_seq_kvlen, q_start_idx, kv_start_idx)
        return (dq, dk, dv, ops.zeros_like(pse), ops.zeros_like(drop_mask), ops.zeros_like(atten_mask),
                ops.zeros_like(prefix), ops.zeros_like(actual_seq_qlen), ops.zeros_like(actual_seq_kvlen),
                ops.zeros_like(q_start_idx), ops.zeros_like(kv_start_idx))
    return bprop


# ----------------------------------------------------------------------------- Ascend: aclnn

def aclnn_attrs(op: str, attrs: FlashAttrs) -> dict:
    """The aclnn attributes of a primitive (CANN's forward V4 / the grad V4, package's or CANN's)."""
    layout = "softmax_out_layout" if op == FWD_OP else "softmax_in_layout"
    return {"scale_value": attrs.scale_value, "keep_prob": attrs.keep_prob, "pre_tokens": attrs.pre_tokens,
            "next_tokens": attrs.next_tokens, "head_num": attrs.head_num, "input_layout": "TND",
            "inner_precise": attrs.inner_precise, "sparse_mode": attrs.sparse_mode, "pse_type": attrs.pse_type,
            "seed": 0, "offset": 0, layout: attrs.softmax_layout}


def grad_api(sparse_mode: int, atten_mask, pse, drop_mask, query) -> aclnn.AclnnApi:
    """The grad entry of an input (``aclnn.fag_package_reasons``): the package's kernel where it implements
    it and the package is installed, else CANN's built-in op. Needs only what a graph knows statically
    (which optional inputs are present, the head dim)."""
    reasons = aclnn.fag_package_reasons(sparse_mode=sparse_mode, has_mask=atten_mask is not None,
                                        has_pse=pse is not None, has_dropout=drop_mask is not None,
                                        head_dim=query.shape[-1])
    if backends.probe_kernel_package() is None and not reasons:
        return aclnn.FA_GRAD_PACKAGE
    return aclnn.FA_GRAD_CANN_V4


@functools.lru_cache(maxsize=None)
def grad_aot_op(api: aclnn.AclnnApi) -> ops.Custom:
    """aot Custom op of a grad entry (the package's: lengths as int64 tensors; CANN's: host int arrays)."""
    return aot_op(api, lambda *s: (s[0], s[1], s[2], [0]), lambda *d: (d[0], d[1], d[2], d[0]))


def grad_lengths(api: aclnn.AclnnApi, values: dict) -> dict:
    """The length lists as the entry takes them: int64 tensors (package) or host tuples (CANN)."""
    if api is aclnn.FA_GRAD_PACKAGE:
        return {n: int64_tensor(values.get(n)) for n in INT_LISTS}
    return {n: values.get(n) for n in INT_LISTS}


@functools.lru_cache(maxsize=None)
def aclnn_op(op: str, attr_values: tuple) -> ops.Custom | None:
    """aot Custom op of the forward (CANN's aclnnFlashAttentionVarLenScoreV4, length lists as host int
    arrays); the grad's entry depends on the input (:func:`grad_api`), so the grad primitive has none
    here. The forward's bprop is the grad op; outputs are in IR order (forward: max, sum, softmax_out, out)."""
    if op == GRAD_OP:
        return None
    attrs = FlashAttrs(*attr_values)
    grad_attrs = aclnn.FA_GRAD_PACKAGE.attr_values(aclnn_attrs(GRAD_OP, attrs))
    n_in = len(aclnn.FA_FORWARD_V4.inputs)

    def bprop(*args):  # forward inputs, forward attributes, out, dout
        given, out, dout = dict(zip(aclnn.FA_FORWARD_V4.inputs, args[:n_in])), args[-2], args[-1]
        api = grad_api(attrs.sparse_mode, given["atten_mask"], given["pse"], given["drop_mask"], given["query"])
        dq, dk, dv, _ = grad_aot_op(api)(*api.input_values(dict(
            given, **grad_lengths(api, given), dy=dout[3], softmax_max=out[0], softmax_sum=out[1],
            attention_in=out[3])), *grad_attrs)
        return (dq, dk, dv) + tuple(None if a is None or not isinstance(a, ms.Tensor) else ops.zeros_like(a)
                                    for a in args[3:-2])

    return aot_op(aclnn.FA_FORWARD_V4, lambda *s: ([s[0][0], s[0][1], 8], [s[0][0], s[0][1], 8], [0], s[0]),
                  lambda *d: (ms.float32, ms.float32, d[0], d[0]), bprop=bprop)


# ----------------------------------------------------------------------------- the primitives

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


class _FlashPrimitive(Primitive):
    """Shared machinery of the two primitives: the host check, the aclnn op on Ascend."""

    MS_NAMES: dict = {}
    RESERVED: tuple = ()  # reserved inputs that must be None (paddingMask, softmaxIn)
    INT_LISTS = INT_LISTS

    def __init__(self, attrs: FlashAttrs):
        super().__init__()
        with renamed(self.MS_NAMES):
            check_attributes(self.OP, attrs)
        self.attrs = attrs
        self.attr_values = tuple(attrs.__dict__.values())  # graph constants for custom_op(...)
        backend, _ = backends.select("mindspore", self.OP, ms.get_context("device_target"))
        self.backend = backend.name
        self._absent = absent_placeholder()
        # Ascend: the aclnn op (graph constants: the op and its attribute values)
        self.use_aclnn = backend.name == "mindspore.kernels"
        self.aclnn_op = aclnn_op(self.OP, self.attr_values) if self.use_aclnn else None
        api = aclnn.FA_GRAD_PACKAGE if self.OP == GRAD_OP else aclnn.FA_FORWARD_V4  # both grad entries: same attrs
        self.aclnn_attrs = api.attr_values(aclnn_attrs(self.OP, attrs))

    @property
    def _ms_to_v(self):
        return {v: k for k, v in self.MS_NAMES.items()}

    def check(self, *args, **kwargs):
        """Everything, on the host (shapes, dtypes, length values, compressed-mask content)."""
        bound = self.bind(args, kwargs, required=("query", "key", "value"))
        for name in self.RESERVED:
            reject_reserved(self.OP, name, bound.get(name) is not None)
        bound = {n: v for n, v in bound.items() if n not in self.RESERVED}
        with renamed(self.MS_NAMES):
            values = _host_values(self.OP, bound, self._ms_to_v)
            plan = check_inputs(self.OP, self.attrs, values)
            mask_name = self.MS_NAMES.get("atten_mask", "atten_mask")
            check_mask_content(self.OP, plan, bound.get(mask_name))
        return bound

    def _grad_api(self, bound: dict) -> aclnn.AclnnApi:
        names = self.MS_NAMES
        return grad_api(self.attrs.sparse_mode, bound.get(names.get("atten_mask", "atten_mask")),
                        bound.get(names.get("pse", "pse")), bound.get("drop_mask"), bound["query"])

    def host_list_input(self, name, values, bound):
        # CANN's forward and grad take the length lists as host int arrays; everything else as int64 tensors
        if self.use_aclnn and (self.OP == FWD_OP or self._grad_api(bound) is aclnn.FA_GRAD_CANN_V4):
            return _host_tuple(self.OP, name, values)
        return super().host_list_input(name, values, bound)


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
        if self.use_aclnn:
            api = grad_api(self.attrs.sparse_mode, atten_mask, pse_shift, drop_mask, query)
            lengths = grad_lengths(api, dict(prefix=prefix, actual_seq_qlen=actual_seq_qlen,
                                             actual_seq_kvlen=actual_seq_kvlen, q_start_idx=q_start_idx,
                                             kv_start_idx=kv_start_idx))
            return grad_aot_op(api)(*api.input_values(dict(
                query=query, key=key, value=value, dy=dy, pse=pse_shift, drop_mask=drop_mask, atten_mask=atten_mask,
                softmax_max=softmax_max, softmax_sum=softmax_sum, attention_in=attention_in, **lengths)),
                *self.aclnn_attrs)
        prefix, actual_seq_qlen, actual_seq_kvlen = (int64_tensor(prefix), int64_tensor(actual_seq_qlen),
                                                     int64_tensor(actual_seq_kvlen))
        q_start_idx, kv_start_idx = int64_tensor(q_start_idx), int64_tensor(kv_start_idx)
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
