"""MindSpore RingAttentionUpdate: primitive-like Cell and MindSpore's functional signature.

Backends (``backends.select``): on Ascend, MindSpore's own ``ops.ring_attention_update`` (it
has no ``input_softmax_layout="TND"``), else the package's ``aclnnAscendAttnRingAttentionUpdate`` (or,
without the package, CANN's ``aclnnRingAttentionUpdateV2``) as an aot Custom op (``_aclnn``); elsewhere an
``ops.Custom`` pyfunc around the torch CPU core, in PyNative and GRAPH_MODE, built from the ``_op`` skeleton.
Validation is the shared module's, at three points:
``__call__`` (from Python, any mode: full check including host values of actual_seq_qlen),
the Custom op's infer functions (GRAPH_MODE compile: shapes and dtypes) and the pyfunc itself
(run time: values; MindSpore swallows pyfunc errors in PyNative, hence the ``__call__`` check).
bf16 attention outputs cross the pyfunc as float32 and are bf16 again inside it, as for every op.

MindSpore's V1 document adds a UB-size limit for TND shapes; it is enforced here (and not by
the torch op, whose V2 contract has no such limit).
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import mindspore as ms
from mindspore import ops

from .. import aclnn, backends
from .. import validation as V
from ._aclnn import aot_op, same_as_inputs
from ._bridge import bf16_names, custom_inputs, int64_tensor, is_bf16, present_names
from ._op import OpKey, Primitive, PyfuncOp, absent_placeholder, per_attribute_set

OP = V.RAU_OP
# Call inputs (also the Custom op's slots); the attention outputs may be bf16 (cast around the op).
INPUTS = ("prev_attn_out", "prev_softmax_max", "prev_softmax_sum", "cur_attn_out", "cur_softmax_max",
          "cur_softmax_sum", "actual_seq_qlen")
CASTABLE = ("prev_attn_out", "cur_attn_out")


class RauAttrs(NamedTuple):
    layout: str
    input_softmax_layout: str


def _check(metas, seq, attrs: RauAttrs):
    return V.check_ring_attention_update(*metas, seq, attrs.layout, attrs.input_softmax_layout, op=OP,
                                         layout_arg="layout", ub_limit=True)


class _RauPyfunc(PyfuncOp):
    """The Custom op over ``kernels.ring_attention_update``: INPUTS in, ``(out, max, sum)`` out."""

    OP = OP
    SLOTS = INPUTS
    INT_LISTS = ("actual_seq_qlen",)

    def _check_metas(self, metas):
        seq = ... if "actual_seq_qlen" in metas else None  # its values are not known at compile time
        return _check([metas[n] for n in INPUTS[:6]], seq, self.attrs)

    def infer_shapes(self, metas, shapes):
        self._check_metas(metas)
        return tuple(shapes[:3])

    def infer_dtypes(self, metas, dtypes, shapes):
        self._check_metas(metas)
        return tuple(dtypes[:3])

    def run(self, tensors, lists):
        from ..kernels.ring_attention_update import ring_attention_update
        tensors = [tensors[n] for n in INPUTS[:6]]
        plan = _check([V.meta_of(t) for t in tensors], lists.get("actual_seq_qlen"), self.attrs)
        return ring_attention_update(*tensors, plan)


@functools.lru_cache(maxsize=None)
def custom_op(attr_values: tuple, present: tuple, bf16: tuple) -> ops.Custom:
    """The Custom op for these attributes and this combination of given / bf16 inputs (cached; plain tuples,
    so a graph evaluates this at compile time)."""
    return _RauPyfunc(RauAttrs(*attr_values), OpKey(present, bf16)).custom()


class RingAttentionUpdate(Primitive):
    r"""RingAttentionUpdate primitive: ``RingAttentionUpdate(layout="SBH")(prev_attn_out,
    prev_softmax_max, prev_softmax_sum, cur_attn_out, cur_softmax_max, cur_softmax_sum,
    actual_seq_qlen=None)``.

    ``layout="SBH"``: attn ``(S, B, H)``, stats ``(B, N, S, 8)``; ``"TND"``: attn ``(T, N, D)``,
    stats ``(T, N, 8)``, ``actual_seq_qlen`` an int64 1-D tensor from 0 to T.
    ``input_softmax_layout`` (extension of MindSpore's V1 op, as in aclnn V2): ``""`` for NTD
    statistics, ``"TND"`` for token-major statistics.
    Returns ``(attn_out, softmax_max, softmax_sum)``.
    """

    OP = OP
    INPUTS = INPUTS
    INT_LISTS = ("actual_seq_qlen",)

    def __init__(self, layout: str = "SBH", input_softmax_layout: str = ""):
        super().__init__()
        V.check_choice(OP, "layout", layout, V.RAU_LAYOUTS)
        V.check_choice(OP, "input_softmax_layout", input_softmax_layout, V.RAU_SOFTMAX_LAYOUTS)
        self.layout = layout
        self.input_softmax_layout = input_softmax_layout
        device = ms.get_context("device_target")
        backend, _ = backends.select("mindspore", OP, device, input_softmax_layout=input_softmax_layout)
        self.backend = backend.name
        self.use_native = backend.name == "mindspore.native"
        # the package's AscendAttnRingAttentionUpdate where installed, else CANN's RingAttentionUpdateV2
        self.aclnn_api = aclnn.rau_api(backends.probe_kernel_package() is None)
        self.aclnn_op = (aot_op(self.aclnn_api, same_as_inputs(3), same_as_inputs(3))
                         if backend.name == "mindspore.kernels" else None)
        self.attrs = RauAttrs(layout, input_softmax_layout)
        self.attr_values = tuple(self.attrs)  # graph constants for custom_op(...)
        self._absent = absent_placeholder()

    def check(self, *args, **kwargs) -> dict:
        """Everything, on the host (shapes, dtypes, the values of actual_seq_qlen)."""
        bound = self.bind(args, kwargs, required=INPUTS[:6])
        bound["actual_seq_qlen"] = V.int_list(OP, "actual_seq_qlen", bound["actual_seq_qlen"])
        _check([V.meta_of(bound[n]) for n in INPUTS[:6]], bound["actual_seq_qlen"], self.attrs)
        return bound

    def construct(self, prev_attn_out, prev_softmax_max, prev_softmax_sum,
                  cur_attn_out, cur_softmax_max, cur_softmax_sum, actual_seq_qlen=None):
        if self.use_native:
            return ops.ring_attention_update(prev_attn_out, prev_softmax_max, prev_softmax_sum,
                                             cur_attn_out, cur_softmax_max, cur_softmax_sum,
                                             actual_seq_qlen, self.layout)
        if self.aclnn_op is not None:
            return self.aclnn_op(*self.aclnn_api.arguments(dict(
                prev_attn_out=prev_attn_out, prev_softmax_max=prev_softmax_max, prev_softmax_sum=prev_softmax_sum,
                cur_attn_out=cur_attn_out, cur_softmax_max=cur_softmax_max, cur_softmax_sum=cur_softmax_sum,
                actual_seq_qlen=actual_seq_qlen, input_layout=self.layout,
                input_softmax_layout=self.input_softmax_layout)))
        given = (prev_attn_out, prev_softmax_max, prev_softmax_sum, cur_attn_out, cur_softmax_max, cur_softmax_sum,
                 int64_tensor(actual_seq_qlen))
        op = custom_op(self.attr_values, present_names(INPUTS, given), bf16_names(INPUTS, given, CASTABLE))
        out, new_max, new_sum = op(*custom_inputs(INPUTS, given, CASTABLE, self._absent))
        if is_bf16(prev_attn_out):
            out = ops.cast(out, ms.bfloat16)
        return out, new_max, new_sum


_primitive = per_attribute_set(RingAttentionUpdate)


def ring_attention_update(prev_attn_out, prev_softmax_max, prev_softmax_sum, cur_attn_out,
                          cur_softmax_max, cur_softmax_sum, actual_seq_qlen=None, layout="SBH"):
    """Same signature as ``mindspore.ops.ring_attention_update``; see :class:`RingAttentionUpdate`."""
    prim = _primitive(layout)
    return prim(prev_attn_out, prev_softmax_max, prev_softmax_sum, cur_attn_out, cur_softmax_max, cur_softmax_sum,
                actual_seq_qlen)
