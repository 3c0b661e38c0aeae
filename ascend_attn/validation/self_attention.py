"""Validation of ATB SelfAttention (``ascend_attn.self_attention``), shared by every frontend.

Same contract as :mod:`ascend_attn.validation` (whose helpers it uses): frontends describe their
tensors as :class:`TensorMeta`, host integer lists as ``list[int]`` (``...`` = present but not known
yet, ``None`` = absent), and call :func:`check_self_attention`, which raises before anything is
written (``ValueError`` for values / shapes / combinations, ``TypeError`` for dtypes) with the
message template ``self_attention: <argument> only supports <supported>, but got <given>``, and
returns a :class:`SAPlan` (``None`` while shapes are unknown).

Enumerations follow ATB's ``infer::SelfAttentionParam`` values; :func:`enum_value` turns the names
(case-insensitive, with or without ATB's prefix) into those ints.

Features and the coexistence table of ATB's SelfAttention document ("各功能共存情况"): every pair
the table marks N raises a ValueError naming both features (checked first, so the message names the
pair even where a single-feature rule would also reject the call).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .common import (TensorMeta, lengths_known, check_dtype, check_rank, check_same_device, check_same_dtype,
                         check_same_shape, quote, type_error, value_error)

OP = "self_attention"

# ----------------------------------------------------------------------------- enumerations

UNDEFINED, ENCODER, DECODER, PA_ENCODER = 0, 1, 2, 3
KERNEL_DEFAULT, KERNEL_HIGH_PRECISION = 0, 1
CLAMP_UNDEFINED, CLAMP_MIN_MAX = 0, 1
MASK_UNDEFINED, MASK_NORM, MASK_ALIBI, MASK_NORM_COMPRESS = 0, 1, 2, 3
MASK_ALIBI_COMPRESS, MASK_ALIBI_COMPRESS_SQRT, MASK_ALIBI_COMPRESS_LEFT_ALIGN = 4, 5, 6
K_CACHE_V_CACHE, K_BYPASS_V_BYPASS = 0, 1
SCALE_TOR, SCALE_LOGN = 0, 1
QUANT_UNDEFINED, QUANT_QKV_OFFLINE, QUANT_QKV_ONLINE = 0, 2, 3
BSND, BNSD = 0, 1
ACL_DT_UNDEFINED, ACL_FLOAT16, ACL_BF16 = -1, 1, 27

# argument -> (ATB prefixes, {value: (canonical name, aliases)}, {known value: why it is rejected})
ENUMS: dict[str, tuple[tuple[str, ...], dict[int, tuple[str, ...]], dict[int, str]]] = {
    "calc_type": (("CALC_TYPE_",), {0: ("UNDEFINED",), 1: ("ENCODER",), 2: ("DECODER",), 3: ("PA_ENCODER",)},
                  {4: "PREFIX_ENCODER is not part of this op"}),
    "kernel_type": (("KERNELTYPE_", "KERNEL_TYPE_"), {0: ("DEFAULT",), 1: ("HIGH_PRECISION",)},
                    {2: "KERNELTYPE_EXP_M8V2 exists on Atlas inference products only"}),
    "clamp_type": (("CLAMP_TYPE_",), {0: ("UNDEFINED",), 1: ("MIN_MAX",)}, {}),
    "mask_type": (("MASK_TYPE_",), {0: ("UNDEFINED",), 1: ("NORM",), 2: ("ALIBI",), 3: ("NORM_COMPRESS",),
                                    4: ("ALIBI_COMPRESS",), 5: ("ALIBI_COMPRESS_SQRT",),
                                    6: ("ALIBI_COMPRESS_LEFT_ALIGN",)},
                  {7: "sliding-window masks are not supported", 8: "sliding-window masks are not supported",
                   9: "MASK_TYPE_CAUSAL_MASK is not supported"}),
    "kv_cache_cfg": (("KV_CACHE_CFG_",), {0: ("K_CACHE_V_CACHE",), 1: ("K_BYPASS_V_BYPASS",)}, {}),
    "scale_type": (("SCALE_TYPE_",), {0: ("TOR",), 1: ("LOGN",)}, {}),
    "quant_type": (("TYPE_QUANT_", "QUANT_TYPE_"), {0: ("UNDEFINED", "UNQUANT"), 2: ("QKV_OFFLINE",),
                                                   3: ("QKV_ONLINE",)},
                   {1: "TYPE_DEQUANT_FUSION is reserved by ATB"}),
    "input_layout": (("TYPE_", "INPUT_LAYOUT_"), {0: ("BSND",), 1: ("BNSD",)}, {}),
    "out_data_type": (("ACL_",), {-1: ("DT_UNDEFINED", "UNDEFINED"), 1: ("FLOAT16", "FP16", "HALF"),
                                 27: ("BF16", "BFLOAT16")}, {}),
}


def enum_choices(arg: str) -> str:
    """``0 (UNDEFINED), 1 (ENCODER), 2 (DECODER) or 3 (PA_ENCODER)``."""
    items = [f"{v} ({names[0]})" for v, names in ENUMS[arg][1].items()]
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " or " + items[-1]


def enum_value(arg: str, value: Any, op: str = OP) -> int:
    """An ATB enum given as its int or its name (``"PA_ENCODER"``, ``"pa_encoder"``,
    ``"CALC_TYPE_PA_ENCODER"``) -> the int. ``out_data_type`` also takes torch / MindSpore / numpy
    dtypes and dtype names. Unknown values raise ValueError (TypeError for other types)."""
    prefixes, values, rejected = ENUMS[arg]
    if arg == "out_data_type" and value is not None and not isinstance(value, (int, str)):
        value = str(value).rsplit(".", 1)[-1]  # torch.float16 / mindspore Float16 / numpy dtype
    if arg == "out_data_type" and value is None:
        return ACL_DT_UNDEFINED
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise type_error(op, arg, f"an int or an ATB name: {enum_choices(arg)}", type(value).__name__)
    if isinstance(value, str):
        name = value.strip().upper()
        for prefix in prefixes:
            if name.startswith(prefix) and name != prefix:
                name = name[len(prefix):]
                break
        for number, names in values.items():
            if name in names:
                return number
        raise value_error(op, arg, enum_choices(arg), quote(value))
    if value not in values:
        why = f" ({rejected[value]})" if value in rejected else ""
        raise value_error(op, arg, enum_choices(arg), f"{value}{why}")
    return int(value)


def enum_name(arg: str, value: int) -> str:
    return ENUMS[arg][1][value][0]


# ----------------------------------------------------------------------------- features and the table

@dataclass(frozen=True)
class Feature:
    """One row / column of the coexistence table."""

    name: str  # English
    atb: str  # the seed document's name
    arg: str  # the argument that switches it on
    setting: str  # how it is switched on


FEATURES = (
    Feature("dynamic batch", "控制可计算batch", "batch_run_status_enable", "batch_run_status_enable=True"),
    Feature("separate prefill/decode", "全量/增量分离", "calc_type", "calc_type ENCODER or DECODER"),
    Feature("high precision", "高精度", "kernel_type", "kernel_type HIGH_PRECISION"),
    Feature("clamp scaling", "clamp缩放", "clamp_type", "clamp_type MIN_MAX"),
    Feature("compressed mask", "压缩mask", "mask_type", "a compressed mask_type (NORM_COMPRESS or ALIBI_COMPRESS*)"),
    Feature("kv-bypass", "kv-bypass", "kv_cache_cfg", "kv_cache_cfg K_BYPASS_V_BYPASS"),
    Feature("logN scaling", "logN缩放", "scale_type", "scale_type LOGN"),
    Feature("qkv full quantization", "qkv全量化", "quant_type", "quant_type QKV_OFFLINE or QKV_ONLINE"),
    Feature("BNSD input", "BNSD维度输入", "input_layout", "input_layout BNSD"),
    Feature("kv tensor list", "kv tensorlist格式输入", "cache_k", "cache_k / cache_v given as lists of tensors"),
)
# The pairs the table marks N (indices into FEATURES); every other pair is Y.
CONFLICTS = frozenset({(0, 7), (1, 7), (5, 7), (6, 7), (6, 8), (6, 9), (7, 8), (7, 9), (8, 9)})
COMPRESSED_MASKS = (MASK_NORM_COMPRESS, MASK_ALIBI_COMPRESS, MASK_ALIBI_COMPRESS_SQRT, MASK_ALIBI_COMPRESS_LEFT_ALIGN)
ALIBI_COMPRESSED = (MASK_ALIBI_COMPRESS, MASK_ALIBI_COMPRESS_SQRT, MASK_ALIBI_COMPRESS_LEFT_ALIGN)


def active_features(*, batch_run_status_enable, calc_type, kernel_type, clamp_type, mask_type, kv_cache_cfg,
                    scale_type, quant_type, input_layout, cache_is_list) -> tuple[int, ...]:
    flags = (batch_run_status_enable, calc_type in (ENCODER, DECODER), kernel_type == KERNEL_HIGH_PRECISION,
             clamp_type == CLAMP_MIN_MAX, mask_type in COMPRESSED_MASKS, kv_cache_cfg == K_BYPASS_V_BYPASS,
             scale_type == SCALE_LOGN, quant_type in (QUANT_QKV_OFFLINE, QUANT_QKV_ONLINE), input_layout == BNSD,
             cache_is_list)
    return tuple(i for i, on in enumerate(flags) if on)


def check_coexistence(active: tuple[int, ...], op: str = OP) -> None:
    """Raise for a pair of active features the table marks N, naming both. Later features of the table
    are the more specific ones (a kv tensor list implies DECODER and kv-bypass, which conflict with
    quantization too), so the pair reported is the one with the latest features."""
    for a, b in sorted(CONFLICTS, key=lambda p: (-p[1], -p[0])):
        if a in active and b in active:
            fa, fb = FEATURES[a], FEATURES[b]
            raise value_error(
                op, fb.arg, f"{fb.name} off when {fa.name} is on ({fa.setting}): ATB's coexistence table marks "
                f"{fa.name} ({fa.atb}) and {fb.name} ({fb.atb}) as conflicting (N)", fb.setting)


# ----------------------------------------------------------------------------- the plan

SA_DTYPES = ("float16", "bfloat16")
SA_MAX_HEADS = 256
SA_MAX_HEAD_DIM = 256
SA_MAX_HEAD_DIM_ALIBI = 128
NORM_COMPRESS_SHAPE = (128, 128)
ALIBI_COMPRESS_SHAPE = (256, 256)


@dataclass(frozen=True, kw_only=True)
class SAPlan:
    """Validated SelfAttention arguments, as the kernel needs them.

    ``flow``: "pa" (PA_ENCODER: query/key/value hold the whole sequences), "cache" (BSND KV-cache flows:
    UNDEFINED / ENCODER / DECODER, with or without bypass) or "bnsd". ``q_rows``: rank of a BSND query
    (2: [T, N*D], 3: [T, N, D]). ``seq_q`` / ``seq_kv``: query rows and key rows of each batch (kv =
    ``token_offset`` in the cache flows, ``seq_len`` for PA_ENCODER); ``q_offsets``: first query row of
    each batch (BSND). ``active``: batches computed (batch_run_status). ``cache_form``: None, "tensor"
    or "list"; ``cache_has_layer``: the cache carries a leading layer axis (not with dynamic batch).
    ``mask_form``: None, "causal" (NORM_COMPRESS), "alibi_compressed", or for an explicit mask "2d",
    "batch", "head", "batch_head". ``binary_mask``: norm masks (explicit NORM and the compressed causal
    mask) use 0 = keep / 1 = masked (high precision or bf16: the default kernel's -inf replaced by 1)
    instead of additive values; ALiBi masks are always additive. ``round_scores``: the default kernel's fp16
    score rounding. ``compute_dtype``: dtype the attention math runs in (query dtype, or the output
    dtype for full quantization).
    """

    flow: str
    calc_type: int
    kernel_type: int
    clamp: tuple[float, float] | None
    mask_type: int
    mask_form: str | None
    binary_mask: bool
    bypass: bool
    logn: bool
    quant_type: int
    layout: int
    batch: int
    heads_q: int
    heads_kv: int
    head_dim: int
    q_rows: int
    seq_q: tuple[int, ...]
    seq_kv: tuple[int, ...]
    q_offsets: tuple[int, ...]
    active: tuple[bool, ...]
    layer: int
    cache_form: str | None
    cache_has_layer: bool
    qk_scale: float
    q_scale: float
    compute_dtype: str
    out_dtype: str
    round_scores: bool
    features: tuple[int, ...]

    @property
    def writes_cache(self) -> bool:
        return self.flow == "cache" and not self.bypass


# ----------------------------------------------------------------------------- helpers

def output_dtype(query_dtype: str | None, quant_type: int, out_data_type: int) -> str | None:
    """The output's dtype name (also the compute dtype): the query's, or with full quantization
    ``out_data_type``'s (float16 for ACL_FLOAT16, else bfloat16)."""
    if quant_type != QUANT_UNDEFINED:
        return "float16" if out_data_type == ACL_FLOAT16 else "bfloat16"
    return query_dtype


def _is_seq(x) -> bool:
    return isinstance(x, (list, tuple)) and not isinstance(x, TensorMeta)


def _meta_list(x) -> list[TensorMeta]:
    if x is None:
        return []
    return list(x) if _is_seq(x) else [x]


def _check_host_list(op, arg, values, batch, *, required, why):
    if values is None:
        if required:
            raise value_error(op, arg, f"a list of B = {batch} ints ({why})", "None")
        return None
    if values is Ellipsis:
        return Ellipsis
    if len(values) != batch:
        raise value_error(op, arg, f"B = {batch} values (one per batch, B = len(seq_len))", f"{len(values)} values")
    return list(values)


def check_float(op, arg, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise type_error(op, arg, "a float", type(value).__name__)


def _check_head_vector(op, arg, meta, heads, dtypes):
    check_dtype(op, arg, meta, dtypes)
    if meta.shape is not None and meta.shape != (heads,):
        raise value_error(op, arg, f"shape [head_num] = [{heads}]", f"shape {quote(meta.shape)}")


def _forbid(op, arg, value, why):
    if value is not None and not (isinstance(value, list) and not value):
        raise value_error(op, arg, f"None {why}", "a value")


# ----------------------------------------------------------------------------- the check

def check_attributes(*, head_num: int, kv_head_num: int = 0, qk_scale: float = 1.0, q_scale: float = 1.0,
                     calc_type: int = 0, kernel_type: int = 0, clamp_type: int = 0, clamp_min: float = 0.0,
                     clamp_max: float = 0.0, mask_type: int = 0, kv_cache_cfg: int = 0, scale_type: int = 0,
                     quant_type: int = 0, out_data_type: int = -1, input_layout: int = 0,
                     batch_run_status_enable: bool = False, cache_is_list: bool = False,
                     op: str = OP) -> tuple[int, ...]:
    """The parameters alone (types, values, the coexistence table, each feature's parameter prerequisites);
    ``cache_is_list``: the caches come as a kv tensor list. Returns the active features (FEATURES indices)."""
    enums = dict(calc_type=calc_type, kernel_type=kernel_type, clamp_type=clamp_type, mask_type=mask_type,
                 kv_cache_cfg=kv_cache_cfg, scale_type=scale_type, quant_type=quant_type,
                 out_data_type=out_data_type, input_layout=input_layout)
    for arg, v in enums.items():
        if isinstance(v, bool) or not isinstance(v, int):
            raise type_error(op, arg, "an int (ATB's enum value; enum_value() converts names)", type(v).__name__)
        enum_value(arg, v, op)
    if not isinstance(batch_run_status_enable, bool):
        raise type_error(op, "batch_run_status_enable", "a bool", type(batch_run_status_enable).__name__)
    for arg, v in (("head_num", head_num), ("kv_head_num", kv_head_num)):
        if isinstance(v, bool) or not isinstance(v, int):
            raise type_error(op, arg, "an int", type(v).__name__)
    for arg, v in (("qk_scale", qk_scale), ("q_scale", q_scale), ("clamp_min", clamp_min), ("clamp_max", clamp_max)):
        check_float(op, arg, v)
    if not 0 < head_num <= SA_MAX_HEADS:
        raise value_error(op, "head_num", f"1 <= head_num <= {SA_MAX_HEADS}", head_num)
    if kv_head_num < 0 or (kv_head_num and head_num % kv_head_num):
        raise value_error(op, "kv_head_num", f"0 (= head_num) or a divisor of head_num = {head_num}", kv_head_num)

    # --- the coexistence table first: an N pair names both features
    features = active_features(batch_run_status_enable=batch_run_status_enable, calc_type=calc_type,
                               kernel_type=kernel_type, clamp_type=clamp_type, mask_type=mask_type,
                               kv_cache_cfg=kv_cache_cfg, scale_type=scale_type, quant_type=quant_type,
                               input_layout=input_layout, cache_is_list=cache_is_list)
    check_coexistence(features, op)

    pa = calc_type == PA_ENCODER
    bypass = kv_cache_cfg == K_BYPASS_V_BYPASS
    quant = quant_type != QUANT_UNDEFINED
    hp = kernel_type == KERNEL_HIGH_PRECISION
    logn = scale_type == SCALE_LOGN

    # --- single-feature rules (ATB's SelfAttention document and operation checks)
    if batch_run_status_enable and pa:
        raise value_error(op, "batch_run_status_enable", "False when calc_type is PA_ENCODER (dynamic batch needs a "
                          "KV-cache flow)", "True")
    if bypass and pa:
        raise value_error(op, "kv_cache_cfg", "K_CACHE_V_CACHE when calc_type is PA_ENCODER (kv-bypass needs a "
                          "KV-cache flow)", "K_BYPASS_V_BYPASS")
    if input_layout == BNSD and not bypass:
        raise value_error(op, "input_layout", "BSND unless kv_cache_cfg is K_BYPASS_V_BYPASS (BNSD input needs "
                          "kv-bypass)", "BNSD")
    if input_layout == BNSD and mask_type == MASK_UNDEFINED:
        raise value_error(op, "mask_type", "a mask type other than UNDEFINED with input_layout BNSD", "UNDEFINED")
    if cache_is_list and not (calc_type == DECODER and bypass):
        raise value_error(op, "cache_k", "a single cache tensor unless calc_type is DECODER with kv_cache_cfg "
                          "K_BYPASS_V_BYPASS (the kv tensor list is a decode feature)", "a list of tensors")
    if logn:
        if calc_type not in (DECODER, PA_ENCODER):
            raise value_error(op, "calc_type", "DECODER or PA_ENCODER with scale_type LOGN",
                              enum_name("calc_type", calc_type))
        if pa and not hp:
            raise value_error(op, "kernel_type", "HIGH_PRECISION with scale_type LOGN and calc_type PA_ENCODER",
                              enum_name("kernel_type", kernel_type))
    if quant and not pa:
        raise value_error(op, "calc_type", "PA_ENCODER with qkv full quantization (quant_type QKV_OFFLINE / "
                          "QKV_ONLINE)", enum_name("calc_type", calc_type))
    if quant and out_data_type not in (ACL_FLOAT16, ACL_BF16):
        raise value_error(op, "out_data_type", "ACL_FLOAT16 (1) or ACL_BF16 (27) with qkv full quantization",
                          f"{out_data_type} ({enum_name('out_data_type', out_data_type)})")
    if not quant and out_data_type != ACL_DT_UNDEFINED:
        raise value_error(op, "out_data_type", "ACL_DT_UNDEFINED (-1) without qkv full quantization (the output "
                          "has the query dtype)", f"{out_data_type} ({enum_name('out_data_type', out_data_type)})")
    if mask_type in ALIBI_COMPRESSED and not pa:
        raise value_error(op, "mask_type", "UNDEFINED, NORM, ALIBI or NORM_COMPRESS unless calc_type is PA_ENCODER "
                          "(compressed ALiBi masks are a PA_ENCODER feature)", enum_name("mask_type", mask_type))
    if clamp_type == CLAMP_MIN_MAX and clamp_min > clamp_max:
        raise value_error(op, "clamp_min", f"a value <= clamp_max = {clamp_max}", clamp_min)

    return features


def check_self_attention(
    query: TensorMeta, key: TensorMeta | None, value: TensorMeta | None, cache_k, cache_v,
    attention_mask: TensorMeta | None = None, *, seq_len, token_offset=None, layer_id=None, batch_run_status=None,
    slopes=None, qk_descale=None, qk_offset=None, vpv_descale=None, vpv_offset=None, p_scale=None, log_n=None,
    head_num: int, kv_head_num: int = 0, qk_scale: float = 1.0, q_scale: float = 1.0, calc_type: int = 0,
    kernel_type: int = 0, clamp_type: int = 0, clamp_min: float = 0.0, clamp_max: float = 0.0, mask_type: int = 0,
    kv_cache_cfg: int = 0, scale_type: int = 0, quant_type: int = 0, out_data_type: int = -1, input_layout: int = 0,
    batch_run_status_enable: bool = False, op: str = OP,
) -> SAPlan | None:
    """Validate ATB SelfAttention arguments (enums as ints: use :func:`enum_value` first).

    ``cache_k`` / ``cache_v``: a TensorMeta, a list of them (one per batch: the kv tensor-list form) or
    None / []. Host lists (``seq_len``, ``token_offset``, ``layer_id``, ``batch_run_status``): ``list[int]``,
    ``None`` when absent, ``...`` when present but unknown (graph compilation), a list of ``...`` when only
    their count is known (torch's fake kernels: the checks of values are left to the real kernel). Returns the plan, or None
    while shapes are not known.
    """
    caches_k, caches_v = _meta_list(cache_k), _meta_list(cache_v)
    check_same_device(op, "query", query, key=key, value=value, cache_k=caches_k, cache_v=caches_v,
                      attention_mask=attention_mask, slopes=slopes, qk_descale=qk_descale, qk_offset=qk_offset,
                      vpv_descale=vpv_descale, vpv_offset=vpv_offset, p_scale=p_scale, log_n=log_n)
    is_list = _is_seq(cache_k) and _list_form(caches_k, batch_run_status_enable)
    features = check_attributes(
        head_num=head_num, kv_head_num=kv_head_num, qk_scale=qk_scale, q_scale=q_scale, calc_type=calc_type,
        kernel_type=kernel_type, clamp_type=clamp_type, clamp_min=clamp_min, clamp_max=clamp_max, mask_type=mask_type,
        kv_cache_cfg=kv_cache_cfg, scale_type=scale_type, quant_type=quant_type, out_data_type=out_data_type,
        input_layout=input_layout, batch_run_status_enable=batch_run_status_enable, cache_is_list=is_list, op=op)
    heads_kv = kv_head_num or head_num
    pa = calc_type == PA_ENCODER
    bypass = kv_cache_cfg == K_BYPASS_V_BYPASS
    quant = quant_type != QUANT_UNDEFINED
    hp = kernel_type == KERNEL_HIGH_PRECISION
    logn = scale_type == SCALE_LOGN

    # --- which tensors must / must not be given
    quant_names = ("qk_descale", "qk_offset", "vpv_descale", "vpv_offset", "p_scale")
    quant_given = dict(zip(quant_names, (qk_descale, qk_offset, vpv_descale, vpv_offset, p_scale)))
    if quant:
        label = "QKV_OFFLINE" if quant_type == QUANT_QKV_OFFLINE else "QKV_ONLINE"
        for name in quant_names[:4] + (("p_scale",) if quant_type == QUANT_QKV_OFFLINE else ()):
            if quant_given[name] is None:
                raise value_error(op, name, f"a [head_num] tensor with quant_type {label}", "None")
        if quant_type == QUANT_QKV_ONLINE:
            _forbid(op, "p_scale", p_scale, "with quant_type QKV_ONLINE (P is quantised online)")
    else:
        for name, meta in quant_given.items():
            _forbid(op, name, meta, "without qkv full quantization (quant_type UNDEFINED)")
    if mask_type == MASK_UNDEFINED:
        _forbid(op, "attention_mask", attention_mask, "with mask_type UNDEFINED")
    elif attention_mask is None:
        raise value_error(op, "attention_mask", f"a tensor with mask_type {enum_name('mask_type', mask_type)}", "None")
    if mask_type in ALIBI_COMPRESSED:
        if slopes is None:
            raise value_error(op, "slopes", "a [head_num] tensor with a compressed ALiBi mask_type", "None")
    else:
        _forbid(op, "slopes", slopes, "unless mask_type is a compressed ALiBi mask")
    if logn and log_n is None:
        raise value_error(op, "log_n", "a 1-D float32 tensor with scale_type LOGN", "None")
    if not logn:
        _forbid(op, "log_n", log_n, "unless scale_type is LOGN")
    if pa:
        if key is None or value is None:
            raise value_error(op, "key" if key is None else "value", "a tensor with calc_type PA_ENCODER", "None")
        for name, x in (("cache_k", caches_k), ("cache_v", caches_v)):
            if x:
                raise value_error(op, name, "None with calc_type PA_ENCODER (no KV cache)", "a tensor")
        _forbid(op, "token_offset", token_offset, "with calc_type PA_ENCODER")
        _forbid(op, "layer_id", layer_id, "with calc_type PA_ENCODER")
    else:
        if bypass:
            for name, x in (("key", key), ("value", value)):
                _forbid(op, name, x, "with kv_cache_cfg K_BYPASS_V_BYPASS (the caches already hold them)")
        elif key is None or value is None:
            raise value_error(op, "key" if key is None else "value",
                              "a tensor with kv_cache_cfg K_CACHE_V_CACHE (the new rows written to the cache)", "None")
        for name, x in (("cache_k", caches_k), ("cache_v", caches_v)):
            if not x:
                raise value_error(op, name, "a cache tensor (or a list of them) unless calc_type is PA_ENCODER", "None")
        if len(caches_k) != len(caches_v):
            raise value_error(op, "cache_v", "the same form as cache_k (a tensor, or a list of as many tensors)",
                              f"{len(caches_v)} tensor(s) for {len(caches_k)}")
    if not batch_run_status_enable:
        _forbid(op, "batch_run_status", batch_run_status, "unless batch_run_status_enable is True")

    # --- dtypes
    if quant:
        check_dtype(op, "query", query, ("int8",))
        compute = out_dtype = output_dtype(query.dtype, quant_type, out_data_type)
    else:
        check_dtype(op, "query", query, SA_DTYPES)
        compute = out_dtype = query.dtype
    for name, meta in (("key", key), ("value", value)):
        if meta is not None:
            check_same_dtype(op, name, meta, "query", query)
    for name, metas in (("cache_k", caches_k), ("cache_v", caches_v)):
        for i, meta in enumerate(metas):
            check_same_dtype(op, name + (f"[{i}]" if is_list else ""), meta, "query", query)
    if attention_mask is not None:
        allowed = (compute,) if compute is not None else SA_DTYPES
        check_dtype(op, "attention_mask", attention_mask, allowed)
    if slopes is not None:
        check_dtype(op, "slopes", slopes, ("float32", "float16", "bfloat16"))
    if log_n is not None:
        check_dtype(op, "log_n", log_n, ("float32",))
    for name in ("qk_descale", "vpv_descale", "p_scale"):
        if quant_given[name] is not None:
            check_dtype(op, name, quant_given[name], ("float32",))
    for name in ("qk_offset", "vpv_offset"):
        if quant_given[name] is not None:
            check_dtype(op, name, quant_given[name], ("int32",))
    if mask_type in ALIBI_COMPRESSED and attention_mask is not None and attention_mask.dtype == "float16" \
            and not hp:
        raise value_error(op, "kernel_type", "HIGH_PRECISION with a float16 compressed ALiBi mask", "DEFAULT")

    # --- host lists
    if seq_len is None:
        raise value_error(op, "seq_len", "a list of per-batch query lengths", "None")
    if seq_len is Ellipsis:
        return None
    batch = len(seq_len)
    if batch < 1:
        raise value_error(op, "seq_len", "at least one batch", "an empty list")
    # the counts but not the values of lists holding ``...`` are known (torch's fake kernels): the checks
    # that read values run where they are known (the real kernels)
    values_known = all(lengths_known(x) for x in (seq_len, token_offset, batch_run_status))
    if lengths_known(seq_len) and any(s < 0 for s in seq_len):
        raise value_error(op, "seq_len", "non-negative lengths", quote(list(seq_len)))
    status = _check_host_list(op, "batch_run_status", batch_run_status, batch, required=batch_run_status_enable,
                              why="batch_run_status_enable is True")
    if isinstance(status, list) and lengths_known(status) and any(s not in (0, 1) for s in status):
        raise value_error(op, "batch_run_status", "values 0 (skip the batch) or 1 (compute it)", quote(status))
    offsets = None
    if not pa:
        offsets = _check_host_list(op, "token_offset", token_offset, batch, required=True,
                                   why="the KV length of each batch")
    layer = 0
    if layer_id is not None and layer_id is not Ellipsis:
        if len(layer_id) != 1:
            raise value_error(op, "layer_id", "one value", f"{len(layer_id)} values")
        layer = int(layer_id[0])
    if status is Ellipsis or offsets is Ellipsis or layer_id is Ellipsis:
        return None
    active = seq_q = seq_kv = None
    if values_known:
        active = tuple(bool(s) for s in status) if isinstance(status, list) else (True,) * batch
        seq_q = tuple(int(s) for s in seq_len)
        seq_kv = seq_q if pa else tuple(int(t) for t in offsets)
    for b in range(batch if values_known else 0):
        if not active[b]:
            continue
        if calc_type == DECODER and seq_q[b] != 1:
            raise value_error(op, "seq_len", "1 for every batch with calc_type DECODER", f"{seq_q[b]} (batch {b})")
        if not pa and seq_kv[b] < seq_q[b]:
            raise value_error(op, "token_offset", "token_offset[b] >= seq_len[b] (the KV length includes the new "
                              "rows)", f"{seq_kv[b]} < {seq_q[b]} (batch {b})")

    # --- shapes
    metas = [query, key, value, attention_mask, *caches_k, *caches_v]
    if any(m is not None and m.shape is None for m in metas):
        return None
    flow = "pa" if pa else ("bnsd" if input_layout == BNSD else "cache")
    if flow == "bnsd":
        dim, q_rows, q_offsets = _check_bnsd(op, query, caches_k, caches_v, head_num, heads_kv, seq_q, seq_kv,
                                             active, layer, batch)
        cache_form, has_layer = "tensor", True
    else:
        dim, q_rows, q_offsets = _check_bsnd_qkv(op, query, key, value, head_num, heads_kv, seq_q, pa)
        cache_form, has_layer = None, False
        if not pa:
            cache_form, has_layer = _check_caches(op, caches_k, caches_v, is_list, batch_run_status_enable, heads_kv,
                                                  dim, seq_kv, active, layer, batch)
    max_dim = SA_MAX_HEAD_DIM_ALIBI if mask_type in ALIBI_COMPRESSED else SA_MAX_HEAD_DIM
    if not 1 <= dim <= max_dim:
        raise value_error(op, "query", f"a head size 1 <= D <= {max_dim}"
                          + (" with a compressed ALiBi mask" if max_dim == SA_MAX_HEAD_DIM_ALIBI else ""), f"D = {dim}")
    mask_form = None
    if attention_mask is not None:
        mask_form = _check_mask(op, attention_mask, mask_type, head_num, batch, seq_q, seq_kv, active)
    if slopes is not None:
        _check_head_vector(op, "slopes", slopes, head_num, ("float32", "float16", "bfloat16"))
    for name in ("qk_descale", "qk_offset", "vpv_descale", "vpv_offset", "p_scale"):
        meta = quant_given[name]
        if meta is not None:
            _check_head_vector(op, name, meta, head_num, ("float32",) if "offset" not in name else ("int32",))
    if log_n is not None and log_n.shape is not None and (values_known or calc_type == DECODER):
        need = batch if calc_type == DECODER else max([s for s, a in zip(seq_q, active) if a], default=0)
        what = "B = len(seq_len) values (one per batch) with calc_type DECODER" if calc_type == DECODER else \
            f"at least max(seq_len) = {need} values (one per query position) with calc_type PA_ENCODER"
        if len(log_n.shape) != 1 or log_n.shape[0] < need or (calc_type == DECODER and log_n.shape[0] != need):
            raise value_error(op, "log_n", f"a 1-D tensor of {what}", f"shape {quote(log_n.shape)}")
    if not values_known:
        return None
    binary = hp or compute == "bfloat16"
    return SAPlan(
        flow=flow, calc_type=calc_type, kernel_type=kernel_type,
        clamp=(float(clamp_min), float(clamp_max)) if clamp_type else None, mask_type=mask_type,
        mask_form=mask_form, binary_mask=binary, bypass=bypass, logn=logn, quant_type=quant_type,
        layout=input_layout, batch=batch, heads_q=head_num, heads_kv=heads_kv, head_dim=dim,
        q_rows=q_rows, seq_q=seq_q, seq_kv=seq_kv, q_offsets=q_offsets, active=active, layer=layer,
        cache_form=cache_form, cache_has_layer=has_layer, qk_scale=float(qk_scale),
        q_scale=float(q_scale), compute_dtype=compute, out_dtype=out_dtype,
        round_scores=not hp and compute == "float16", features=features)


def _list_form(caches: list, brs: bool) -> bool:
    """A list of caches is the per-batch tensor-list form unless it is one full cache tensor."""
    if len(caches) != 1:
        return len(caches) > 1
    shape = caches[0].shape
    return shape is not None and len(shape) == (2 if brs else 3)


def _check_bsnd_qkv(op, query, key, value, heads_q, heads_kv, seq_q, pa):
    """query [T, N*D] or [T, N, D] (key / value alike, with Nkv heads). Returns (D, rank, row offsets)."""
    rank = len(query.shape)
    if rank not in (2, 3):
        raise value_error(op, "query", "a 2-D [nTokens, head_num*head_size] or 3-D [nTokens, head_num, head_size] "
                          "shape (BSND)", f"shape {quote(query.shape)}")
    if rank == 2:
        if query.shape[1] % heads_q:
            raise value_error(op, "query", f"a hidden size divisible by head_num = {heads_q}",
                              f"shape {quote(query.shape)}")
        dim = query.shape[1] // heads_q
    else:
        if query.shape[1] != heads_q:
            raise value_error(op, "head_num", f"the query head count query.shape[1] = {query.shape[1]}", heads_q)
        dim = query.shape[2]
    kv_shape = (query.shape[0], heads_kv * dim) if rank == 2 else (query.shape[0], heads_kv, dim)
    for name, meta in (("key", key), ("value", value)):
        if meta is None:
            continue
        if meta.shape != kv_shape:
            raise value_error(op, name, f"shape {quote(kv_shape)} (the query's tokens, kv_head_num = {heads_kv} "
                              f"heads of size {dim})", f"shape {quote(meta.shape)}")
    if seq_q is None:  # values not known
        return dim, rank, None
    if sum(seq_q) > query.shape[0]:
        raise value_error(op, "seq_len", f"a total <= nTokens = {query.shape[0]}", sum(seq_q))
    offsets, o = [], 0
    for s in seq_q:
        offsets.append(o)
        o += s
    return dim, rank, tuple(offsets)


def _check_caches(op, caches_k, caches_v, is_list, brs, heads_kv, dim, seq_kv, active, layer, batch):
    """BSND caches: [layer, B, max_seq, Nkv*D] ([B, max_seq, Nkv*D] with dynamic batch), or B per-batch
    tensors [layer, max_seq_b, Nkv*D] ([max_seq_b, Nkv*D])."""
    hidden = heads_kv * dim
    rank = (2 if brs else 3) if is_list else (3 if brs else 4)
    form = ("[max_seq, kv_head_num*head_size]" if brs else "[layer, max_seq, kv_head_num*head_size]") if is_list else \
        ("[batch, max_seq, kv_head_num*head_size] (dynamic batch)" if brs else
         "[layer, batch, max_seq, kv_head_num*head_size]")
    if is_list and len(caches_k) != batch:
        raise value_error(op, "cache_k", f"a list of B = {batch} tensors (one per batch)", f"{len(caches_k)} tensors")
    caps = []
    for i, (k, v) in enumerate(zip(caches_k, caches_v)):
        name = "cache_k" + (f"[{i}]" if is_list else "")
        check_rank(op, name, k, rank, form)
        check_same_shape(op, name.replace("cache_k", "cache_v"), v, name, k)
        if k.shape[-1] != hidden:
            raise value_error(op, name, f"a last dimension kv_head_num*head_size = {hidden}", f"shape {quote(k.shape)}")
        if not is_list and k.shape[0 if brs else 1] != batch:
            raise value_error(op, name, f"B = len(seq_len) = {batch} batches", f"shape {quote(k.shape)}")
        if not brs:
            if not 0 <= layer < k.shape[0]:
                raise value_error(op, "layer_id", f"a layer in [0, {k.shape[0]})", layer)
        caps.append(k.shape[-2])
    caps = caps if is_list else caps * batch
    for b in range(batch if active is not None else 0):
        if active[b] and seq_kv[b] > caps[b]:
            raise value_error(op, "token_offset", f"values <= the cache length {caps[b]} (batch {b})", seq_kv[b])
    return ("list" if is_list else "tensor"), not brs


def _check_bnsd(op, query, caches_k, caches_v, heads_q, heads_kv, seq_q, seq_kv, active, layer, batch):
    """query [B, N, S, D]; caches [layer, B, Nkv, max_seq, D]."""
    check_rank(op, "query", query, 4, "[batch, head_num, seq_len, head_size] for input_layout BNSD")
    b, n, s, dim = query.shape
    if n != heads_q:
        raise value_error(op, "head_num", f"the query head count query.shape[1] = {n} (BNSD)", heads_q)
    if b != batch:
        raise value_error(op, "query", f"B = len(seq_len) = {batch} batches", f"shape {quote(query.shape)}")
    k, v = caches_k[0], caches_v[0]
    check_rank(op, "cache_k", k, 5, "[layer, batch, kv_head_num, max_seq, head_size] for input_layout BNSD")
    check_same_shape(op, "cache_v", v, "cache_k", k)
    if k.shape[1] != batch or k.shape[2] != heads_kv or k.shape[4] != dim:
        raise value_error(op, "cache_k", f"shape [layer, {batch}, {heads_kv}, max_seq, {dim}]",
                          f"shape {quote(k.shape)}")
    if not 0 <= layer < k.shape[0]:
        raise value_error(op, "layer_id", f"a layer in [0, {k.shape[0]})", layer)
    for i in range(batch if active is not None else 0):
        if active[i] and seq_q[i] > s:
            raise value_error(op, "seq_len", f"values <= the query's seq_len axis {s} (BNSD)",
                              f"{seq_q[i]} (batch {i})")
        if active[i] and seq_kv[i] > k.shape[3]:
            raise value_error(op, "token_offset", f"values <= the cache length {k.shape[3]} (batch {i})", seq_kv[i])
    return dim, 4, tuple(0 for _ in range(batch))


def _check_mask(op, mask, mask_type, heads, batch, seq_q, seq_kv, active):
    shape = mask.shape
    if mask_type == MASK_NORM_COMPRESS:
        if shape != NORM_COMPRESS_SHAPE:
            raise value_error(op, "attention_mask", "the compressed [128, 128] mask with mask_type NORM_COMPRESS",
                              f"shape {quote(shape)}")
        return "causal"
    if mask_type in ALIBI_COMPRESSED:
        if shape != ALIBI_COMPRESS_SHAPE:
            raise value_error(op, "attention_mask", "the compressed [256, 256] ALiBi bias with a compressed ALiBi "
                              "mask_type (the [head_num, seqlen, 128] form is not supported)", f"shape {quote(shape)}")
        return "alibi_compressed"
    if mask_type == MASK_NORM:
        forms = {2: "2d", 3: "batch"}
        text = f"[max_q, max_kv] or [B|1, max_q, max_kv] with B = {batch}"
        lead_ok = len(shape) != 3 or shape[0] in (1, batch)
    else:
        forms = {3: "head", 4: "batch_head"}
        text = f"[head_num, max_q, max_kv] or [B|1, head_num, max_q, max_kv] with head_num = {heads}, B = {batch}"
        lead_ok = len(shape) in (3, 4) and shape[-3] == heads and (len(shape) == 3 or shape[0] in (1, batch))
    if len(shape) not in forms or not lead_ok:
        raise value_error(op, "attention_mask", f"shape {text} for mask_type {enum_name('mask_type', mask_type)}",
                          f"shape {quote(shape)}")
    if active is None:  # lengths not known
        return forms[len(shape)]
    rows = max([s for s, a in zip(seq_q, active) if a], default=0)
    cols = max([s for s, a in zip(seq_kv, active) if a], default=0)
    if shape[-2] < rows or shape[-1] < cols:
        raise value_error(op, "attention_mask", f"at least max(seq_len) = {rows} rows and max KV length = {cols} "
                          "columns", f"shape {quote(shape)}")
    return forms[len(shape)]
