"""MindSpore RingAttentionUpdate: primitive-like Cell and MindSpore's functional signature.

Backends (``backends.select``): on Ascend, MindSpore's own ``ops.ring_attention_update`` (it
has no ``input_softmax_layout="TND"``), else the package's ``aclnnAscendAttnRingAttentionUpdate`` (or,
without the package, CANN's ``aclnnRingAttentionUpdateV2``) as an aot Custom op (``_aclnn``); elsewhere an ``ops.Custom`` pyfunc around the torch CPU core, in PyNative and
GRAPH_MODE. Validation is the shared module's, at three points:
``__call__`` (from Python, any mode: full check including host values of actual_seq_qlen),
the Custom op's infer functions (GRAPH_MODE compile: shapes and dtypes) and the pyfunc itself
(run time: values; MindSpore swallows pyfunc errors in PyNative, hence the ``__call__`` check).

MindSpore's V1 document adds a UB-size limit for TND shapes; it is enforced here (and not by
the torch op, whose V2 contract has no such limit).
"""
from __future__ import annotations

import mindspore as ms
from mindspore import nn, ops

from .. import aclnn, backends
from .. import validation as V
from ._aclnn import aot_op, same_as_inputs
from ._bridge import to_numpy, to_torch

OP = V.RAU_OP


def _check(metas, seq, layout, input_softmax_layout):
    return V.check_ring_attention_update(*metas, seq, layout, input_softmax_layout, op=OP,
                                         layout_arg="layout", ub_limit=True)


def _make_custom(layout: str, input_softmax_layout: str, has_seq: bool) -> ops.Custom:
    seen = {}

    def infer_shape(*shapes):
        metas = [V.TensorMeta(tuple(s), None) for s in shapes[:6]]
        if has_seq:
            V.check_int_sequence_meta(OP, "actual_seq_qlen", V.TensorMeta(tuple(shapes[6]), None))
        _check(metas, ... if has_seq else None, layout, input_softmax_layout)
        seen["shapes"] = shapes  # the graph compiler infers shapes before dtypes
        return tuple(shapes[:3])

    def infer_dtype(*dtypes):
        shapes = seen.get("shapes")
        metas = [V.TensorMeta(tuple(shapes[i]) if shapes else None, V.dtype_name(d))
                 for i, d in enumerate(dtypes[:6])]
        if has_seq:
            V.check_int_sequence_meta(OP, "actual_seq_qlen", V.TensorMeta(None, V.dtype_name(dtypes[6])))
        _check(metas, ... if has_seq else None, layout, input_softmax_layout)
        return tuple(dtypes[:3])

    def compute(arrays, seq):
        from ..kernels.ring_attention_update import ring_attention_update
        tensors = [to_torch(a) for a in arrays]
        plan = _check([V.meta_of(t) for t in tensors], seq, layout, input_softmax_layout)
        return tuple(to_numpy(o) for o in ring_attention_update(*tensors, plan))

    # pyfunc kernels must spell out their inputs (a *args kernel is taken as one tuple input).
    def compute_with_seq(prev_out, prev_max, prev_sum, cur_out, cur_max, cur_sum, seq):
        return compute((prev_out, prev_max, prev_sum, cur_out, cur_max, cur_sum), [int(v) for v in seq.reshape(-1)])

    def compute_no_seq(prev_out, prev_max, prev_sum, cur_out, cur_max, cur_sum):
        return compute((prev_out, prev_max, prev_sum, cur_out, cur_max, cur_sum), None)

    return ops.Custom(func=compute_with_seq if has_seq else compute_no_seq, out_shape=infer_shape,
                      out_dtype=infer_dtype, func_type="pyfunc")


class RingAttentionUpdate(nn.Cell):
    r"""RingAttentionUpdate primitive: ``RingAttentionUpdate(layout="SBH")(prev_attn_out,
    prev_softmax_max, prev_softmax_sum, cur_attn_out, cur_softmax_max, cur_softmax_sum,
    actual_seq_qlen=None)``.

    ``layout="SBH"``: attn ``(S, B, H)``, stats ``(B, N, S, 8)``; ``"TND"``: attn ``(T, N, D)``,
    stats ``(T, N, 8)``, ``actual_seq_qlen`` an int64 1-D tensor from 0 to T.
    ``input_softmax_layout`` (extension of MindSpore's V1 op, as in aclnn V2): ``""`` for NTD
    statistics, ``"TND"`` for token-major statistics.
    Returns ``(attn_out, softmax_max, softmax_sum)``.
    """

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
        fallback = backend.name == "mindspore.fallback"
        self.custom_with_seq = _make_custom(layout, input_softmax_layout, True) if fallback else None
        self.custom_no_seq = _make_custom(layout, input_softmax_layout, False) if fallback else None

    def __call__(self, *args, **kwargs):
        # Called from Python (PyNative, or the top level of GRAPH_MODE): check everything on the
        # host first, so errors are raised before any kernel runs, identical to the torch op.
        names = ("prev_attn_out", "prev_softmax_max", "prev_softmax_sum", "cur_attn_out",
                 "cur_softmax_max", "cur_softmax_sum", "actual_seq_qlen")
        bound = dict(zip(names, args), **kwargs)
        seq = V.int_list(OP, "actual_seq_qlen", bound.get("actual_seq_qlen"))
        _check([V.meta_of(bound.get(n)) for n in names[:6]], seq, self.layout, self.input_softmax_layout)
        return super().__call__(*args, **kwargs)

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
        bf16 = prev_attn_out.dtype == ms.bfloat16 and cur_attn_out.dtype == ms.bfloat16
        if bf16:
            prev_attn_out = ops.cast(prev_attn_out, ms.float32)
            cur_attn_out = ops.cast(cur_attn_out, ms.float32)
        if actual_seq_qlen is None:
            out, new_max, new_sum = self.custom_no_seq(prev_attn_out, prev_softmax_max, prev_softmax_sum,
                                                       cur_attn_out, cur_softmax_max, cur_softmax_sum)
        else:
            out, new_max, new_sum = self.custom_with_seq(prev_attn_out, prev_softmax_max, prev_softmax_sum,
                                                         cur_attn_out, cur_softmax_max, cur_softmax_sum,
                                                         actual_seq_qlen)
        if bf16:
            out = ops.cast(out, ms.bfloat16)
        return out, new_max, new_sum


# One primitive per layout, made at import so GRAPH_MODE can reference them as constants.
_SBH = RingAttentionUpdate("SBH")
_TND = RingAttentionUpdate("TND")


def ring_attention_update(prev_attn_out, prev_softmax_max, prev_softmax_sum, cur_attn_out,
                          cur_softmax_max, cur_softmax_sum, actual_seq_qlen=None, layout="SBH"):
    """Same signature as ``mindspore.ops.ring_attention_update``; see :class:`RingAttentionUpdate`."""
    if layout == "TND":
        return _TND(prev_attn_out, prev_softmax_max, prev_softmax_sum, cur_attn_out,
                    cur_softmax_max, cur_softmax_sum, actual_seq_qlen)
    if layout == "SBH":
        return _SBH(prev_attn_out, prev_softmax_max, prev_softmax_sum, cur_attn_out,
                    cur_softmax_max, cur_softmax_sum, actual_seq_qlen)
    raise V.value_error(OP, "layout", V.one_of(V.RAU_LAYOUTS), V.quote(layout))
