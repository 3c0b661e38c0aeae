"""``ascend_attn::ring_attention_update``: schema, fallback, fake kernel and NPU slot.

Flow: ``ascend_attn.ring_attention_update`` (public, normalises ``actual_seq_qlen`` to a host
list) -> ``torch.ops.ascend_attn.ring_attention_update`` (one schema) -> the device-generic
fallback for every device, the NPU kernel on ``npu`` tensors when ``torch_npu`` is usable
(registered by ``torch_ops.npu``), and the fake kernel under FakeTensor / torch.compile. All three
run the same shared validation first.
"""
from __future__ import annotations

import torch

from .. import validation as V
from ..kernels import ring_attention_update as kernel

SCHEMA = (
    "(Tensor prev_attn_out, Tensor prev_softmax_max, Tensor prev_softmax_sum, "
    "Tensor cur_attn_out, Tensor cur_softmax_max, Tensor cur_softmax_sum, "
    'int[]? actual_seq_qlen=None, str input_layout="SBH", str input_softmax_layout="") '
    "-> (Tensor, Tensor, Tensor)"
)


def check(prev_attn_out, prev_softmax_max, prev_softmax_sum, cur_attn_out, cur_softmax_max,
          cur_softmax_sum, actual_seq_qlen, input_layout, input_softmax_layout) -> V.RingUpdatePlan:
    tensors = (prev_attn_out, prev_softmax_max, prev_softmax_sum, cur_attn_out, cur_softmax_max, cur_softmax_sum)
    seq = V.int_list(V.RAU_OP, "actual_seq_qlen", actual_seq_qlen)
    return V.check_ring_attention_update(*(V.meta_of(t) for t in tensors), seq, input_layout,
                                         input_softmax_layout)


@torch.library.custom_op("ascend_attn::ring_attention_update", mutates_args=(), schema=SCHEMA)
def ring_attention_update_op(prev_attn_out, prev_softmax_max, prev_softmax_sum, cur_attn_out,
                             cur_softmax_max, cur_softmax_sum, actual_seq_qlen=None,
                             input_layout="SBH", input_softmax_layout=""):
    plan = check(prev_attn_out, prev_softmax_max, prev_softmax_sum, cur_attn_out, cur_softmax_max,
                 cur_softmax_sum, actual_seq_qlen, input_layout, input_softmax_layout)
    return kernel.ring_attention_update(prev_attn_out, prev_softmax_max, prev_softmax_sum,
                                        cur_attn_out, cur_softmax_max, cur_softmax_sum, plan)


@ring_attention_update_op.register_fake
def _fake(prev_attn_out, prev_softmax_max, prev_softmax_sum, cur_attn_out, cur_softmax_max,
          cur_softmax_sum, actual_seq_qlen=None, input_layout="SBH", input_softmax_layout=""):
    check(prev_attn_out, prev_softmax_max, prev_softmax_sum, cur_attn_out, cur_softmax_max,
          cur_softmax_sum, actual_seq_qlen, input_layout, input_softmax_layout)
    return (prev_attn_out.new_empty(prev_attn_out.shape),
            prev_softmax_max.new_empty(prev_softmax_max.shape),
            prev_softmax_sum.new_empty(prev_softmax_sum.shape))


def npu_kernel(prev_attn_out, prev_softmax_max, prev_softmax_sum, cur_attn_out, cur_softmax_max,
               cur_softmax_sum, actual_seq_qlen=None, input_layout="SBH", input_softmax_layout=""):
    """NPU tensors: the package's aclnnAscendAttnRingAttentionUpdate through the glue extension where
    the package and the glue are installed, else CANN's aclnnRingAttentionUpdateV2 through torch_npu
    (``aclnn.rau_api``; same contract and validation either way)."""
    check(prev_attn_out, prev_softmax_max, prev_softmax_sum, cur_attn_out, cur_softmax_max,
          cur_softmax_sum, actual_seq_qlen, input_layout, input_softmax_layout)
    from .. import aclnn, backends
    usable = backends.probe_kernel_package() is None and backends.probe_npu_glue() is None
    if aclnn.rau_api(usable) is aclnn.RAU_PACKAGE:
        from .. import _npu_ext
        return _npu_ext.ring_attention_update(
            prev_attn_out, prev_softmax_max, prev_softmax_sum, cur_attn_out, cur_softmax_max, cur_softmax_sum,
            V.int_list(V.RAU_OP, "actual_seq_qlen", actual_seq_qlen), input_layout, input_softmax_layout, True)
    import torch_npu
    return torch_npu.npu_ring_attention_update(
        prev_attn_out, prev_softmax_max, prev_softmax_sum, cur_attn_out, cur_softmax_max,
        cur_softmax_sum, actual_seq_qlen=actual_seq_qlen, input_layout=input_layout,
        input_softmax_layout=input_softmax_layout)


def ring_attention_update(prev_attn_out, prev_softmax_max, prev_softmax_sum,
                          cur_attn_out, cur_softmax_max, cur_softmax_sum,
                          actual_seq_qlen=None, input_layout="SBH", input_softmax_layout=""):
    """Merge two partial attention results by their softmax statistics (RingAttentionUpdate).

    Same contract as ``torch_npu.npu_ring_attention_update`` (aclnnRingAttentionUpdateV2).

    Layouts:
      * ``input_layout="SBH"``: ``*_attn_out`` ``[S, B, H]`` (H = N*D), ``*_softmax_max/sum``
        ``[B, N, S, 8]`` float32. ``actual_seq_qlen`` and ``input_softmax_layout`` are ignored.
      * ``input_layout="TND"``: ``*_attn_out`` ``[T, N, D]`` (D % 64 == 0, N <= 256, D <= 768),
        stats ``[T, N, 8]`` float32 holding per-sequence NTD data (``input_softmax_layout`` ""
        or "SBH"; ``actual_seq_qlen`` cumulative with a leading 0, ending at T) or true TND data
        (``input_softmax_layout="TND"``).

    ``actual_seq_qlen``: list/tuple of ints or a 1-D integer tensor (read on the host).
    Attention dtype float16 / bfloat16 / float32; math in float32, output rounded to nearest even.

    Returns ``(attn_out, softmax_max, softmax_sum)``, shaped like the ``prev_*`` inputs.
    """
    seq = V.int_list(V.RAU_OP, "actual_seq_qlen", actual_seq_qlen)
    return torch.ops.ascend_attn.ring_attention_update(
        prev_attn_out, prev_softmax_max, prev_softmax_sum, cur_attn_out, cur_softmax_max,
        cur_softmax_sum, seq, input_layout, input_softmax_layout)
