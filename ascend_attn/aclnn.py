"""The aclnn entry points the NPU paths call, in one table shared by both frameworks.

On Ascend, torch reaches these through the C++ glue (``csrc/npu_ops.cpp``, ``EXEC_NPU_CMD``) and
MindSpore through ``ops.Custom(func="aclnn<OpType>", func_type="aot")``, which reads the op's
registration from the OPP (the ``ascend_attn`` vendor package, or CANN's built-in ops) and calls
``aclnn<OpType>GetWorkspaceSize(inputs..., attributes..., outputs..., ...)``. Both must pass the
arguments in the order of the op's IR, so that order is written down once, here
(``tests/test_aclnn.py`` checks it against the OpDef sources of ``ops_kernels/`` and the glue's
calls).

Which entry runs an input:

* RingAttentionUpdate: CANN's ``aclnnRingAttentionUpdateV2`` (it has ``input_softmax_layout``).
* FA varlen forward: CANN's ``aclnnFlashAttentionVarLenScoreV4``.
* FA grad V4: the package's ``aclnnFlashAttentionUnpaddingScoreGradV4`` (ops_kernels/).
* IncreFlashAttention: the package's ``aclnnIncreFlashAttentionV2`` where its kernel implements the
  input (:func:`ifa_package_reasons`: BSH, contiguous K/V, the float path and int8 scenarios
  A/B/C), else CANN's ``aclnnIncreFlashAttentionV4`` (pse_shift, paged / list K/V, antiquant,
  BSND / BNSD, left padding).

No torch or MindSpore import here: ``ascend-attn info`` and the tests read it anywhere.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AclnnApi:
    """One aclnn operator: where it comes from and its IR argument order (validation names)."""

    op_type: str  # OpDef / IR name; the C API is aclnn<op_type>
    source: str  # "package" (ops_kernels/, vendor ascend_attn) or "cann" (built-in)
    inputs: tuple[str, ...]  # tensors (and host int arrays), IR order
    attrs: tuple[str, ...]  # attributes, IR order
    outputs: tuple[str, ...]

    @property
    def api(self) -> str:
        return "aclnn" + self.op_type

    def input_values(self, values: dict) -> tuple:
        """The inputs, in IR order (absent optional inputs as None)."""
        return tuple(values.get(name) for name in self.inputs)

    def attr_values(self, values: dict) -> tuple:
        """The attributes, in IR order."""
        return tuple(values[name] for name in self.attrs)

    def arguments(self, values: dict) -> tuple:
        """Inputs then attributes: the call's argument list."""
        return self.input_values(values) + self.attr_values(values)


RAU_V2 = AclnnApi(
    "RingAttentionUpdateV2", "cann",
    ("prev_attn_out", "prev_softmax_max", "prev_softmax_sum", "cur_attn_out", "cur_softmax_max",
     "cur_softmax_sum", "actual_seq_qlen"),
    ("input_layout", "input_softmax_layout"),
    ("attn_out", "softmax_max", "softmax_sum"))

_FA_LENGTHS = ("prefix", "actual_seq_qlen", "actual_seq_kvlen", "q_start_idx", "kv_start_idx")
_FA_ATTRS = ("scale_value", "keep_prob", "pre_tokens", "next_tokens", "head_num", "input_layout",
             "inner_precise", "sparse_mode", "pse_type")

FA_FORWARD_V4 = AclnnApi(
    "FlashAttentionVarLenScoreV4", "cann",
    ("query", "key", "value", "pse", "drop_mask", "padding_mask", "atten_mask") + _FA_LENGTHS,
    _FA_ATTRS + ("softmax_out_layout",),
    ("softmax_max", "softmax_sum", "softmax_out", "attention_out"))

FA_GRAD_V4 = AclnnApi(
    "FlashAttentionUnpaddingScoreGradV4", "package",
    ("query", "key", "value", "dy", "pse", "drop_mask", "padding_mask", "atten_mask", "softmax_max",
     "softmax_sum", "softmax_in", "attention_in") + _FA_LENGTHS,
    _FA_ATTRS + ("seed", "offset", "softmax_in_layout"),
    ("dq", "dk", "dv", "dpse"))

_IFA_INPUTS = ("query", "key", "value", "pse_shift", "atten_mask", "actual_seq_lengths", "dequant_scale1",
               "quant_scale1", "dequant_scale2", "quant_scale2", "quant_offset2")
_IFA_ATTRS = ("num_heads", "scale_value", "input_layout", "num_key_value_heads", "block_size", "inner_precise")

IFA_PACKAGE_V2 = AclnnApi("IncreFlashAttentionV2", "package", _IFA_INPUTS, _IFA_ATTRS, ("attention_out",))

IFA_CANN_V4 = AclnnApi(
    "IncreFlashAttentionV4", "cann",
    _IFA_INPUTS + ("antiquant_scale", "antiquant_offset", "block_table", "kv_padding_size"),
    _IFA_ATTRS, ("attention_out",))

APIS = (RAU_V2, FA_FORWARD_V4, FA_GRAD_V4, IFA_PACKAGE_V2, IFA_CANN_V4)


def ifa_package_reasons(*, layout: str, kv_form: str, has_pse: bool, antiquant: bool, left_padding: bool,
                        head_dim: int, group: int) -> list[str]:
    """Why the package's IncreFlashAttentionV2 kernel cannot run an input; empty = it can. Mirrors
    the refusals of its tiling (``ops_kernels/incre_flash_attention_v2/op_host/
    incre_flash_attention_v2_tiling.cpp``). ``kv_form``: "tensor", "list" or "paged"; ``group``:
    query heads per KV head."""
    reasons = []
    if layout != "BSH":
        reasons.append(f"input_layout {layout} (the package kernel implements BSH)")
    if kv_form != "tensor":
        reasons.append(f"{kv_form} key/value (the package kernel reads one contiguous tensor)")
    for flag, what in ((has_pse, "pse_shift"), (antiquant, "antiquant"), (left_padding, "left padding")):
        if flag:
            reasons.append(f"{what} is not implemented by the package kernel")
    if head_dim % 16 or not 16 <= head_dim <= 512:
        reasons.append(f"head dim {head_dim} (the package kernel needs a multiple of 16 in [16, 512])")
    if group > 64:
        reasons.append(f"{group} query heads per KV head (the package kernel takes at most 64)")
    return reasons


def ifa_plan_reasons(plan) -> list[str]:
    """:func:`ifa_package_reasons` of a validated ``validation.IncrePlan``."""
    return ifa_package_reasons(layout=plan.layout, kv_form=plan.kv_form, has_pse=plan.has_pse,
                               antiquant=plan.antiquant is not None, left_padding=plan.left_padding,
                               head_dim=plan.head_dim, group=plan.heads_q // plan.heads_kv)


def ifa_api(plan, package_usable: bool) -> AclnnApi:
    """The IncreFlashAttention entry for this input: the package kernel where it can run it."""
    if package_usable and not ifa_plan_reasons(plan):
        return IFA_PACKAGE_V2
    return IFA_CANN_V4
