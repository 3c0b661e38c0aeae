"""The aclnn entry points the NPU paths call, in one table shared by both frameworks.

On Ascend, torch reaches these through the C++ glue (``csrc/npu_ops.cpp``, ``EXEC_NPU_CMD``) and
MindSpore through ``ops.Custom(func="aclnn<OpType>", func_type="aot")``, which reads the op's
registration from the OPP (the ``ascend_attn`` vendor package, or CANN's built-in ops) and calls
``aclnn<OpType>GetWorkspaceSize(inputs..., attributes..., outputs..., ...)``. Both must pass the
arguments in the order of the op's IR, so that order is written down once, here
(``tests/test_aclnn.py`` checks it against the OpDef sources of ``ops_kernels/`` and the glue's
calls).

Which entry runs an input: the package's kernel where it implements the input, else CANN's built-in
op of the documented name, else (no CANN op usable) the device-generic fallback.

* RingAttentionUpdate: the package's ``aclnnAscendAttnRingAttentionUpdate`` (the whole V2 contract),
  else CANN's ``aclnnRingAttentionUpdateV2``.
* FA varlen forward: CANN's ``aclnnFlashAttentionVarLenScoreV4``.
* FA grad V4: the package's ``aclnnAscendAttnFlashAttentionUnpaddingScoreGradV4`` where its kernel
  implements the input (:func:`fag_package_reasons`), else CANN's ``aclnnFlashAttentionUnpaddingScoreGradV4``.
* IncreFlashAttention: the package's ``aclnnAscendAttnIncreFlashAttentionV2`` where its kernel
  implements the input (:func:`ifa_package_reasons`: BSH / BSND / BNSD, one K/V tensor or tensor
  lists, float path and int8 scenarios A/B/C), else CANN's ``aclnnIncreFlashAttentionV4`` (pse_shift,
  paged K/V, antiquant, left padding).

Every package OpType carries the vendor prefix ``AscendAttn`` (:data:`PACKAGE_PREFIX`): a custom-op
package reusing a built-in OpType would compete with CANN's own op (custom vendors are resolved
first, and the generated ``aclnn<OpType>`` symbols of ``libcust_opapi.so`` collide with those of
``libopapi.so``), so installing it could take a CANN feature away from every program on the machine.

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


PACKAGE_PREFIX = "AscendAttn"  # vendor prefix of every OpType of the ascend_attn package (ops_kernels/)

_RAU_INPUTS = ("prev_attn_out", "prev_softmax_max", "prev_softmax_sum", "cur_attn_out", "cur_softmax_max",
               "cur_softmax_sum", "actual_seq_qlen")
_RAU_ATTRS = ("input_layout", "input_softmax_layout")
_RAU_OUTPUTS = ("attn_out", "softmax_max", "softmax_sum")

RAU_V2 = AclnnApi("RingAttentionUpdateV2", "cann", _RAU_INPUTS, _RAU_ATTRS, _RAU_OUTPUTS)
# the package's op: actual_seq_qlen is an int64 tensor input (read on the host by the tiling)
RAU_PACKAGE = AclnnApi(PACKAGE_PREFIX + "RingAttentionUpdate", "package", _RAU_INPUTS, _RAU_ATTRS, _RAU_OUTPUTS)

_FA_LENGTHS = ("prefix", "actual_seq_qlen", "actual_seq_kvlen", "q_start_idx", "kv_start_idx")
_FA_ATTRS = ("scale_value", "keep_prob", "pre_tokens", "next_tokens", "head_num", "input_layout",
             "inner_precise", "sparse_mode", "pse_type")

FA_FORWARD_V4 = AclnnApi(
    "FlashAttentionVarLenScoreV4", "cann",
    ("query", "key", "value", "pse", "drop_mask", "padding_mask", "atten_mask") + _FA_LENGTHS,
    _FA_ATTRS + ("softmax_out_layout",),
    ("softmax_max", "softmax_sum", "softmax_out", "attention_out"))

_FA_GRAD_INPUTS = ("query", "key", "value", "dy", "pse", "drop_mask", "padding_mask", "atten_mask", "softmax_max",
                   "softmax_sum", "softmax_in", "attention_in") + _FA_LENGTHS
_FA_GRAD_ATTRS = _FA_ATTRS + ("seed", "offset", "softmax_in_layout")
_FA_GRAD_OUTPUTS = ("dq", "dk", "dv", "dpse")

# CANN's takes the length lists as host int arrays, the package's as value-dependent int64 tensors.
FA_GRAD_CANN_V4 = AclnnApi("FlashAttentionUnpaddingScoreGradV4", "cann", _FA_GRAD_INPUTS, _FA_GRAD_ATTRS,
                           _FA_GRAD_OUTPUTS)
FA_GRAD_PACKAGE = AclnnApi(PACKAGE_PREFIX + "FlashAttentionUnpaddingScoreGradV4", "package", _FA_GRAD_INPUTS,
                           _FA_GRAD_ATTRS, _FA_GRAD_OUTPUTS)

_IFA_INPUTS = ("query", "key", "value", "pse_shift", "atten_mask", "actual_seq_lengths", "dequant_scale1",
               "quant_scale1", "dequant_scale2", "quant_scale2", "quant_offset2")
_IFA_ATTRS = ("num_heads", "scale_value", "input_layout", "num_key_value_heads", "block_size", "inner_precise")

IFA_PACKAGE_V2 = AclnnApi(PACKAGE_PREFIX + "IncreFlashAttentionV2", "package", _IFA_INPUTS, _IFA_ATTRS,
                          ("attention_out",))

IFA_CANN_V4 = AclnnApi(
    "IncreFlashAttentionV4", "cann",
    _IFA_INPUTS + ("antiquant_scale", "antiquant_offset", "block_table", "kv_padding_size"),
    _IFA_ATTRS, ("attention_out",))

APIS = (RAU_V2, RAU_PACKAGE, FA_FORWARD_V4, FA_GRAD_CANN_V4, FA_GRAD_PACKAGE, IFA_PACKAGE_V2, IFA_CANN_V4)


def rau_api(package_usable: bool) -> AclnnApi:
    """The RingAttentionUpdate entry: the package's kernel implements the whole V2 contract."""
    return RAU_PACKAGE if package_usable else RAU_V2


def fag_package_reasons(*, sparse_mode: int, has_mask: bool, has_pse: bool, has_dropout: bool, head_dim: int,
                        pse_form: str | None = None) -> list[str]:
    """Why the package's FA grad V4 kernel cannot run an input; empty = it can. Mirrors the refusals
    of its tiling (``ops_kernels/flash_attention_unpadding_score_grad_v4/op_host/
    flash_attention_unpadding_score_grad_v4_tiling.cpp``). ``pse_form``: the validation's
    (``FlashPlan.pse_form``: "full", "row", "alibi", "slopes"), None when unknown or absent."""
    # The kernel implements every sparse_mode (full masks of modes 0 / 1 read tile by tile, the index
    # rules of the compressed ones), every pse form and type, dropout and prefix (tiling branches,
    # tests/test_host_sim_fag.py); what is left is the head-dim range of its UB plan.
    del has_mask, has_pse, has_dropout, pse_form
    reasons = []
    if not 1 <= head_dim <= 768:
        reasons.append(f"head dim {head_dim} (the package kernel takes 1 to 768)")
    if sparse_mode not in (0, 1, 2, 3, 4, 6, 7, 8):
        reasons.append(f"sparse_mode {sparse_mode} (the package kernel takes 0-4 and 6-8)")
    return reasons


def fag_plan_reasons(plan) -> list[str]:
    """:func:`fag_package_reasons` of a validated ``validation.FlashPlan``."""
    return fag_package_reasons(sparse_mode=plan.sparse_mode, has_mask=plan.mask_form is not None,
                               has_pse=plan.pse_form is not None, has_dropout=plan.dropout, head_dim=plan.head_dim,
                               pse_form=plan.pse_form)


def fag_api(plan, package_usable: bool) -> AclnnApi:
    """The FA grad V4 entry for this input: the package kernel where it can run it, else CANN's."""
    if package_usable and not fag_plan_reasons(plan):
        return FA_GRAD_PACKAGE
    return FA_GRAD_CANN_V4


def ifa_package_reasons(*, layout: str, kv_form: str, has_pse: bool, antiquant: bool, left_padding: bool,
                        head_dim: int, group: int) -> list[str]:
    """Why the package's IncreFlashAttentionV2 kernel cannot run an input; empty = it can. Mirrors
    the refusals of its tiling (``ops_kernels/incre_flash_attention_v2/op_host/
    incre_flash_attention_v2_tiling.cpp``). ``kv_form``: "tensor", "list" or "paged"; ``group``:
    query heads per KV head."""
    reasons = []
    if layout not in ("BSH", "BSND", "BNSD"):
        reasons.append(f"input_layout {layout} (the package kernel implements BSH, BSND and BNSD)")
    if kv_form not in ("tensor", "list"):
        reasons.append(f"{kv_form} key/value (the package kernel reads one K/V tensor or a tensor list; "
                       "paged K/V is CANN's V4)")
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


# Input classes per op for ``ascend-attn info``: (op, class, package-kernel reasons of that class).
def _input_classes():
    fag = dict(sparse_mode=0, has_mask=False, has_pse=False, has_dropout=False, head_dim=128)
    ifa = dict(layout="BSH", kv_form="tensor", has_pse=False, antiquant=False, left_padding=False, head_dim=128,
               group=8)
    return (
        ("ring_attention_update", "SBH / TND, any statistics layout", []),
        ("flash_attention_unpadding_score_grad", "no atten_mask", fag_package_reasons(**fag)),
        ("flash_attention_unpadding_score_grad", "compressed mask (sparse_mode 2-4, 6-8)",
         fag_package_reasons(**dict(fag, sparse_mode=3, has_mask=True))),
        ("flash_attention_unpadding_score_grad", "full mask (sparse_mode 0 / 1)",
         fag_package_reasons(**dict(fag, has_mask=True))),
        ("flash_attention_unpadding_score_grad", "pse", fag_package_reasons(**dict(fag, has_pse=True))),
        ("flash_attention_unpadding_score_grad", "dropout", fag_package_reasons(**dict(fag, has_dropout=True))),
        ("incre_flash_attention", "BSH, one K/V tensor", ifa_package_reasons(**ifa)),
        ("incre_flash_attention", "BNSD / BSND", ifa_package_reasons(**dict(ifa, layout="BNSD"))
         + ifa_package_reasons(**dict(ifa, layout="BSND"))),
        ("incre_flash_attention", "tensor-list K/V", ifa_package_reasons(**dict(ifa, kv_form="list"))),
        ("incre_flash_attention", "paged K/V", ifa_package_reasons(**dict(ifa, kv_form="paged"))),
        ("incre_flash_attention", "pse_shift / antiquant / left padding",
         ifa_package_reasons(**dict(ifa, has_pse=True, antiquant=True, left_padding=True))),
    )


_CANN_ENTRY = {"ring_attention_update": RAU_V2, "flash_attention_varlen_score": FA_FORWARD_V4,
               "flash_attention_unpadding_score_grad": FA_GRAD_CANN_V4, "incre_flash_attention": IFA_CANN_V4}
_PACKAGE_ENTRY = {"ring_attention_update": RAU_PACKAGE, "flash_attention_unpadding_score_grad": FA_GRAD_PACKAGE,
                  "incre_flash_attention": IFA_PACKAGE_V2}


def entry_report(package_reason: str | None) -> list[tuple[str, str, str, str]]:
    """(op, input class, aclnn entry, why) on Ascend: the package's kernel where it implements the input
    class and the package is usable (``package_reason`` None), else CANN's built-in op."""
    rows = [("flash_attention_varlen_score", "any", FA_FORWARD_V4.api, "CANN's op (no package kernel)")]
    for op, what, reasons in _input_classes():
        if package_reason is None and not reasons:
            rows.append((op, what, _PACKAGE_ENTRY[op].api, "package kernel implements it"))
        else:
            why = "; ".join(reasons) if reasons else f"package not usable: {package_reason}"
            rows.append((op, what, _CANN_ENTRY[op].api, why))
    return rows
