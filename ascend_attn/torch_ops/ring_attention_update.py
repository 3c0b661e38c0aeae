"""``ascend_attn::ring_attention_update``: schema, fallback, fake kernel and NPU slot.

Flow: ``ascend_attn.ring_attention_update`` (public, normalises ``actual_seq_qlen`` to an int64
CPU tensor) -> ``torch.ops.ascend_attn.ring_attention_update`` (one schema) -> the device-generic
fallback for every device, the NPU kernel on ``npu`` tensors when ``torch_npu`` is usable
(registered by ``torch_ops.npu``), and the fake kernel under FakeTensor / torch.compile. All three
run the same shared validation first.
"""
from __future__ import annotations

from .. import validation as V
from ..kernels import ring_attention_update as kernel
from .op_args import OpArgs, host_lengths, lengths_tensor

RAU = OpArgs("ring_attention_update", (
    "(Tensor prev_attn_out, Tensor prev_softmax_max, Tensor prev_softmax_sum, "
    "Tensor cur_attn_out, Tensor cur_softmax_max, Tensor cur_softmax_sum, "
    'Tensor? actual_seq_qlen=None, str input_layout="SBH", str input_softmax_layout="") '
    "-> (Tensor, Tensor, Tensor)"), lengths=("actual_seq_qlen",))
SCHEMA = RAU.schema


def check(a: dict, *, known: bool) -> V.RingUpdatePlan:
    """The shared validation on torch (``known``: real) or fake tensors (lengths unknown)."""
    return V.check_ring_attention_update(**RAU.for_validation(a, known=known, op=V.RAU_OP))


def _forward(a: dict):
    plan = check(a, known=True)
    return kernel.ring_attention_update(*(a[n] for n in RAU.tensors), plan)


def _fake(a: dict):
    check(a, known=False)
    return tuple(a[n].new_empty(a[n].shape) for n in ("prev_attn_out", "prev_softmax_max", "prev_softmax_sum"))


def _npu(a: dict):
    """NPU tensors: the package's aclnnAscendAttnRingAttentionUpdate through the glue extension where
    the package and the glue are installed, else CANN's aclnnRingAttentionUpdateV2 through torch_npu
    (``aclnn.rau_api``; same contract and validation either way). Lengths go as host lists."""
    check(a, known=True)
    seq = host_lengths(V.RAU_OP, "actual_seq_qlen", a["actual_seq_qlen"], known=True)
    from .. import aclnn, backends
    usable = backends.probe_kernel_package() is None and backends.probe_npu_glue() is None
    if aclnn.rau_api(usable) is aclnn.RAU_PACKAGE:
        from .. import _npu_ext
        return _npu_ext.ring_attention_update(*(a[n] for n in RAU.tensors), seq, a["input_layout"],
                                              a["input_softmax_layout"], True)
    import torch_npu
    return torch_npu.npu_ring_attention_update(*(a[n] for n in RAU.tensors), actual_seq_qlen=seq,
                                               input_layout=a["input_layout"],
                                               input_softmax_layout=a["input_softmax_layout"])


ring_attention_update_op = RAU.define(_forward)
ring_attention_update_op.register_fake(RAU.binding(_fake))
npu_kernel = RAU.binding(_npu)


def _prepare(a: dict) -> dict:
    a["actual_seq_qlen"] = lengths_tensor(V.RAU_OP, "actual_seq_qlen", a["actual_seq_qlen"])
    return a


@RAU.public(_prepare)
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
