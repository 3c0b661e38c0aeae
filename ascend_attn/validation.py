"""Framework-neutral input validation, shared by every frontend.

Every frontend (PyTorch eager, the fake/meta kernels, MindSpore PyNative and the MindSpore
GRAPH_MODE infer functions) describes its inputs as :class:`TensorMeta` (shape + canonical dtype
name) and calls the ``check_*`` function of the op here, so the error a user sees is the same
text whichever framework they use.

Messages follow one template (``api.md``)::

    <op>: <argument> only supports <what is supported>, but got <what was given>

``ValueError`` is raised for wrong values, shapes, layouts and combinations; ``TypeError`` for
wrong dtypes. Checks only read metadata and host values, so nothing is ever written to a user
tensor when they raise.

A meta whose ``shape`` or ``dtype`` is ``None`` means "not known here" (MindSpore's graph
compiler infers shapes and dtypes in two separate calls); checks that need the missing part are
skipped and run again once both are known.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple, Sequence

FLOAT_DTYPES = ("float16", "bfloat16", "float32")
INT_DTYPES = ("int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64")


class TensorMeta(NamedTuple):
    """What validation needs to know of a tensor: its shape and canonical dtype name."""

    shape: tuple[int, ...] | None
    dtype: str | None

    @property
    def ndim(self) -> int | None:
        return None if self.shape is None else len(self.shape)


_DTYPE_ALIASES = {
    "half": "float16", "float": "float32", "double": "float64", "bf16": "bfloat16",
    "fp16": "float16", "fp32": "float32", "long": "int64", "int": "int32", "bool_": "bool",
}


def dtype_name(dtype: Any) -> str:
    """Canonical lower-case dtype name of a torch, MindSpore or numpy dtype.

    torch gives ``torch.float16``, MindSpore ``Float16`` or ``Tensor[Float16]`` (in its infer
    functions), numpy ``float16``; all become ``"float16"``.
    """
    text = str(dtype)
    if text.startswith("Tensor[") and text.endswith("]"):
        text = text[len("Tensor["):-1]
    text = text.rsplit(".", 1)[-1].lower()
    return _DTYPE_ALIASES.get(text, text)


def meta_of(x: Any) -> TensorMeta | None:
    """TensorMeta of a torch / MindSpore / numpy tensor, or None for ``None``."""
    if x is None:
        return None
    if isinstance(x, TensorMeta):
        return x
    return TensorMeta(tuple(int(d) for d in x.shape), dtype_name(x.dtype))


# ----------------------------------------------------------------------------- messages

def quote(value: Any) -> str:
    """How a given value is shown in a message: strings in double quotes, shapes as lists."""
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, tuple):
        return str(list(value))
    return str(value)


def one_of(options: Sequence[Any]) -> str:
    """``"SBH" or "TND"`` / ``float16, bfloat16 or float32``."""
    shown = [quote(o) for o in options]
    if len(shown) == 1:
        return shown[0]
    return ", ".join(shown[:-1]) + " or " + shown[-1]


def value_error(op: str, arg: str, supported: str, got: Any) -> ValueError:
    return ValueError(f"{op}: {arg} only supports {supported}, but got {got}")


def type_error(op: str, arg: str, supported: str, got: Any) -> TypeError:
    return TypeError(f"{op}: {arg} only supports {supported}, but got {got}")


def check_choice(op: str, arg: str, value: Any, options: Sequence[Any]) -> None:
    if not isinstance(value, type(options[0])) or value not in options:
        raise value_error(op, arg, one_of(options), quote(value))


def check_dtype(op: str, arg: str, meta: TensorMeta, allowed: Sequence[str]) -> None:
    if meta.dtype is not None and meta.dtype not in allowed:
        raise type_error(op, arg, "dtype " + one_of(list(allowed)).replace('"', ""), meta.dtype)


def check_same_dtype(op: str, arg: str, meta: TensorMeta, ref_arg: str, ref: TensorMeta) -> None:
    if meta.dtype is not None and ref.dtype is not None and meta.dtype != ref.dtype:
        raise type_error(op, arg, f"the dtype of {ref_arg} ({ref.dtype})", meta.dtype)


def check_rank(op: str, arg: str, meta: TensorMeta, rank: int, form: str) -> None:
    if meta.shape is not None and len(meta.shape) != rank:
        raise value_error(op, arg, f"{rank}-D shape {form}", f"shape {quote(meta.shape)}")


def check_same_shape(op: str, arg: str, meta: TensorMeta, ref_arg: str, ref: TensorMeta) -> None:
    if meta.shape is not None and ref.shape is not None and meta.shape != ref.shape:
        raise value_error(op, arg, f"the shape of {ref_arg} {quote(ref.shape)}",
                          f"shape {quote(meta.shape)}")


def require(meta: TensorMeta | None, op: str, arg: str, why: str) -> TensorMeta:
    if meta is None:
        raise value_error(op, arg, f"a tensor ({why})", "None")
    return meta


# ----------------------------------------------------------------------------- host integer lists

def check_int_sequence_meta(op: str, arg: str, meta: TensorMeta) -> None:
    """A length argument given as a tensor: 1-D, integer dtype."""
    if meta.dtype is not None and meta.dtype not in INT_DTYPES:
        raise type_error(op, arg, "an integer tensor, list or tuple", f"dtype {meta.dtype}")
    if meta.shape is not None and len(meta.shape) != 1:
        raise value_error(op, arg, "a 1-D sequence", f"shape {quote(meta.shape)}")


def int_list(op: str, arg: str, value: Any) -> list[int] | None:
    """Host integer values of a length argument: ``list[int]``, tuple or 1-D integer tensor.

    Device tensors are read back to the host (the NPU ops take these as host arrays as well).
    """
    if value is None:
        return None
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        check_int_sequence_meta(op, arg, meta_of(value))
        if hasattr(value, "asnumpy"):  # MindSpore
            value = value.asnumpy()
        if hasattr(value, "detach"):  # torch, any device
            value = value.detach().cpu()
        return [int(v) for v in value.tolist()]
    if isinstance(value, (list, tuple)):
        out = []
        for v in value:
            if isinstance(v, bool) or not hasattr(v, "__index__"):
                raise type_error(op, arg, "integers", f"an element {v!r} of type {type(v).__name__}")
            out.append(int(v.__index__()))
        return out
    raise type_error(op, arg, "a list, tuple or 1-D integer tensor", type(value).__name__)


# ----------------------------------------------------------------------------- RingAttentionUpdate

RAU_OP = "ring_attention_update"
RAU_LAYOUTS = ("SBH", "TND")
RAU_SOFTMAX_LAYOUTS = ("", "SBH", "TND")
RAU_STAT_NAMES = ("prev_softmax_max", "prev_softmax_sum", "cur_softmax_max", "cur_softmax_sum")
RAU_MAX_HEADS = 256
RAU_MAX_HEAD_DIM = 768
RAU_HEAD_DIM_ALIGN = 64
# MindSpore's ring_attention_update (V1) document: the TND rows must fit the 192 KiB UB.
MS_RAU_UB_BYTES = 192 * 1024


@dataclass(frozen=True)
class RingUpdatePlan:
    """What the kernels need once the inputs are known to be valid.

    ``stats_layout`` says how a (token, head) row is found in the statistics:
    ``"BNS"`` ([B, N, S, 8] for SBH), ``"NTD"`` (per-sequence [N, S_b, 8] blocks, located with
    ``seq_offsets``, cumulative with a leading 0) or ``"TND"`` ([T, N, 8]).
    """

    layout: str
    stats_layout: str
    num_heads: int
    head_dim: int
    seq_offsets: tuple[int, ...] | None


def ms_rau_ub_bytes(num_heads: int, head_dim: int, dtype: str) -> int:
    """UB bytes MindSpore's document budgets for one TND row of ring_attention_update."""
    def align_up(x: int, a: int) -> int:
        return (x + a - 1) // a * a
    data_size = 4 if dtype == "float32" else 2
    return align_up(num_heads * head_dim, 64) * (data_size * 6 + 8) + align_up(num_heads * 8, 64) * 56


def check_ring_attention_update(
    prev_attn_out: TensorMeta, prev_softmax_max: TensorMeta, prev_softmax_sum: TensorMeta,
    cur_attn_out: TensorMeta, cur_softmax_max: TensorMeta, cur_softmax_sum: TensorMeta,
    actual_seq_qlen: list[int] | None | type(Ellipsis), input_layout: str,
    input_softmax_layout: str, *, op: str = RAU_OP, layout_arg: str = "input_layout",
    ub_limit: bool = False,
) -> RingUpdatePlan | None:
    """Validate RingAttentionUpdate inputs (semantics.md §1, §10).

    ``actual_seq_qlen`` is the host list, ``None`` when absent, or ``...`` when present but its
    values are not known yet (graph compilation). ``ub_limit`` adds MindSpore's V1 UB-size rule.
    Returns the plan, or None when shapes were not all known.
    """
    check_choice(op, layout_arg, input_layout, RAU_LAYOUTS)
    check_choice(op, "input_softmax_layout", input_softmax_layout, RAU_SOFTMAX_LAYOUTS)
    attn = {"prev_attn_out": prev_attn_out, "cur_attn_out": cur_attn_out}
    stats = dict(zip(RAU_STAT_NAMES, (prev_softmax_max, prev_softmax_sum, cur_softmax_max, cur_softmax_sum)))

    check_dtype(op, "prev_attn_out", prev_attn_out, FLOAT_DTYPES)
    check_same_dtype(op, "cur_attn_out", cur_attn_out, "prev_attn_out", prev_attn_out)
    for name, meta in stats.items():
        check_dtype(op, name, meta, ("float32",))

    tnd = input_layout == "TND"
    attn_form = "[T, N, D]" if tnd else "[S, B, H]"
    stats_form = "[T, N, 8]" if tnd else "[B, N, S, 8]"
    for name, meta in attn.items():
        check_rank(op, name, meta, 3, attn_form)
    check_same_shape(op, "cur_attn_out", cur_attn_out, "prev_attn_out", prev_attn_out)
    for name, meta in stats.items():
        check_rank(op, name, meta, 3 if tnd else 4, stats_form)
        if meta.shape is not None and meta.shape[-1] != 8:
            raise value_error(op, name, "a last dimension of 8", f"shape {quote(meta.shape)}")
        check_same_shape(op, name, meta, "prev_softmax_max", prev_softmax_max)

    if tnd and actual_seq_qlen is None:
        raise value_error(op, "actual_seq_qlen", f'a 1-D integer sequence when {layout_arg} is "TND"', "None")

    shape, sshape = prev_attn_out.shape, prev_softmax_max.shape
    if shape is None or sshape is None:
        return None
    if tnd:
        t, n, d = shape
        if sshape[:2] != (t, n):
            raise value_error(op, "prev_softmax_max", f"shape [T, N, 8] = {quote((t, n, 8))} matching prev_attn_out",
                              f"shape {quote(sshape)}")
        if d % RAU_HEAD_DIM_ALIGN:
            raise value_error(op, "prev_attn_out", f'a last dimension D that is a multiple of {RAU_HEAD_DIM_ALIGN} when {layout_arg} is "TND"', f"D = {d}")
        if d > RAU_MAX_HEAD_DIM:
            raise value_error(op, "prev_attn_out", f"D <= {RAU_MAX_HEAD_DIM}", f"D = {d}")
        if n > RAU_MAX_HEADS:
            raise value_error(op, "prev_attn_out", f"N <= {RAU_MAX_HEADS}", f"N = {n}")
        if ub_limit and prev_attn_out.dtype is not None:
            need = ms_rau_ub_bytes(n, d, prev_attn_out.dtype)
            if need > MS_RAU_UB_BYTES:
                raise value_error(
                    op, "prev_attn_out",
                    f"TND shapes with AlignUp(N*D,64)*(DataSize*6+8)+AlignUp(N*8,64)*56 <= {MS_RAU_UB_BYTES}",
                    f"N = {n}, D = {d}, {prev_attn_out.dtype}: {need}")
        offsets = None
        stats_layout = "TND" if input_softmax_layout == "TND" else "NTD"
        if stats_layout == "NTD" and actual_seq_qlen is not Ellipsis:
            offsets = tuple(check_rau_seq_qlen(actual_seq_qlen, t, op=op, layout_arg=layout_arg))
        return RingUpdatePlan("TND", stats_layout, n, d, offsets)

    s, b, h = shape
    if (sshape[0], sshape[2]) != (b, s):
        raise value_error(op, "prev_softmax_max", f"shape [B, N, S, 8] with B = {b}, S = {s} from prev_attn_out",
                          f"shape {quote(sshape)}")
    n = sshape[1]
    if n == 0 or h % n:
        raise value_error(op, "prev_attn_out", f"H divisible by N = {n} (N from prev_softmax_max)", f"H = {h}")
    return RingUpdatePlan("SBH", "BNS", n, h // n, None)


def check_rau_seq_qlen(values: list[int], total: int, *, op: str = RAU_OP,
                       layout_arg: str = "input_layout") -> list[int]:
    """``actual_seq_qlen`` of RingAttentionUpdate with NTD statistics: 0, non-decreasing, T."""
    ok = (len(values) >= 1 and values[0] == 0 and values[-1] == total
          and all(a <= b for a, b in zip(values, values[1:])))
    if not ok:
        raise value_error(op, "actual_seq_qlen",
                          f"a cumulative sequence starting at 0, non-decreasing and ending at T = {total} "
                          f'when {layout_arg} is "TND"', quote(list(values)))
    return values


# ----------------------------------------------------------------------------- FlashAttention V4

FA_FWD_OP = "flash_attention_varlen_score"
FA_GRAD_OP = "flash_attention_unpadding_score_grad"
FA_SOFTMAX_LAYOUTS = ("", "same_as_input")
FA_MAX_HEADS = 256
FA_MAX_HEAD_DIM = 768
FA_MAX_BATCH = 2048
FA_MAX_BATCH_PREFIX = 1024
FA_MAX_TOKENS = 1 << 20
FA_COMPRESSED = {2: (2048, 2048), 3: (2048, 2048), 4: (2048, 2048), 6: (3072, 2048),
                 7: (2048, 2048), 8: (2048, 2048)}
FA_ALIBI_ROWS = 1024
MAX_TOKENS_DEFAULT = 2147483647
_float64_allowed = False


class allow_float64:
    """Accept float64 q/k/v in the FA ops (the CPU fallback computes in float64 then).

    Not a CANN dtype: a test hook so ``torch.autograd.gradcheck`` can run in float64.
    """

    def __enter__(self):
        global _float64_allowed
        self._old, _float64_allowed = _float64_allowed, True

    def __exit__(self, *exc):
        global _float64_allowed
        _float64_allowed = self._old


def fa_float_dtypes() -> tuple[str, ...]:
    return FLOAT_DTYPES + (("float64",) if _float64_allowed else ())


@dataclass(frozen=True)
class FlashPlan:
    """Validated FA arguments, as the kernels need them (semantics.md §2-§6).

    ``seq_q``/``seq_kv``: per-sequence lengths; ``mask_form``: None (no mask: full attention),
    "local" ([maxS1, maxS2]), "global" ([T1, T2]) or "compressed"; ``pse_form``: None, "full",
    "row", "alibi" (compressed [B|1, N1, 1024, maxS2]) or "slopes"; ``softmax_layout`` "NTD"/"TND".
    """

    seq_q: tuple[int, ...]
    seq_kv: tuple[int, ...]
    heads_q: int
    heads_kv: int
    head_dim: int
    sparse_mode: int
    pre_tokens: int
    next_tokens: int
    mask_form: str | None
    pse_form: str | None
    pse_type: int
    q_start: int
    kv_start: int
    scale: float
    keep_prob: float
    dropout: bool
    prefix: tuple[int, ...] | None
    softmax_layout: str

    @property
    def first_active(self) -> int:
        return next((b for b, s in enumerate(self.seq_q) if s > 0), -1)

    @property
    def last_active(self) -> int:
        return max((b for b, s in enumerate(self.seq_q) if s > 0), default=-1)


def fa_seq_lengths(op: str, arg: str, values: list[int] | None) -> tuple[int, ...]:
    """Cumulative lengths WITHOUT a leading 0 -> per-sequence lengths (semantics.md §0.2).

    Accepted: non-decreasing, optionally followed by a run of zeros (batches switched off).
    """
    if values is None:
        raise value_error(op, arg, "a cumulative length list (no leading 0) for the TND layout", "None")
    if len(values) == 0:
        raise value_error(op, arg, "at least one sequence", "an empty list")
    active = len(values)
    while active > 0 and values[active - 1] == 0:
        active -= 1
    head = values[:active]
    if any(v < 0 for v in values) or any(a > b for a, b in zip(head, head[1:])):
        raise value_error(op, arg, "non-decreasing cumulative lengths without a leading 0, optionally "
                          "followed by zeros (e.g. [2, 5, 9] or [2, 5, 9, 0, 0])", quote(list(values)))
    lengths = [b - a for a, b in zip([0] + head, head)] + [0] * (len(values) - active)
    return tuple(lengths)


def _fa_check_tensors(op, query, key, value):
    dtypes = fa_float_dtypes()
    check_dtype(op, "query", query, dtypes)
    check_same_dtype(op, "key", key, "query", query)
    check_same_dtype(op, "value", value, "query", query)
    for name, meta in (("query", query), ("key", key), ("value", value)):
        check_rank(op, name, meta, 3, "[T, N, D] (only the TND layout)")
    check_same_shape(op, "value", value, "key", key)


def check_flash_attention(
    query: TensorMeta, key: TensorMeta, value: TensorMeta, head_num: int,
    actual_seq_qlen, actual_seq_kvlen, *, pse: TensorMeta | None = None,
    drop_mask: TensorMeta | None = None, atten_mask: TensorMeta | None = None, prefix=None,
    scale_value: float = 1.0, keep_prob: float = 1.0, pre_tokens: int = MAX_TOKENS_DEFAULT,
    next_tokens: int = MAX_TOKENS_DEFAULT, inner_precise: int = 0, sparse_mode: int = 0,
    pse_type: int = 1, q_start_idx=None, kv_start_idx=None, softmax_layout: str = "",
    op: str = FA_FWD_OP, layout_arg: str = "softmax_out_layout",
) -> FlashPlan | None:
    """Validate the FA V4 forward / grad arguments shared by both ops (semantics.md §10).

    Length arguments are host lists (already normalised with ``int_list``). Returns None when
    shapes are not known (MindSpore graph compile, dtype pass).
    """
    check_choice(op, layout_arg, softmax_layout, FA_SOFTMAX_LAYOUTS)
    _fa_check_tensors(op, query, key, value)
    if isinstance(head_num, bool) or not isinstance(head_num, int):
        raise type_error(op, "head_num", "an int", type(head_num).__name__)
    if inner_precise not in (0, 1, 2):
        raise value_error(op, "inner_precise", "0, 1 or 2", inner_precise)
    if not 0.0 < keep_prob <= 1.0:
        raise value_error(op, "keep_prob", "a value in (0, 1]", keep_prob)
    if sparse_mode not in range(9) or sparse_mode == 5:
        raise value_error(op, "sparse_mode", "0, 1, 2, 3, 4, 6, 7 or 8 (5 is not supported in TND)", sparse_mode)
    if pse_type not in (0, 1, 2, 3):
        raise value_error(op, "pse_type", "0, 1, 2 or 3", pse_type)
    if drop_mask is not None:
        check_dtype(op, "drop_mask", drop_mask, ("uint8",))
    if atten_mask is not None:
        check_dtype(op, "atten_mask", atten_mask, ("bool", "uint8"))
    if pse is not None:
        check_dtype(op, "pse", pse, ("float32",) if pse_type in (2, 3) else (query.dtype,) if query.dtype else fa_float_dtypes())

    seq_q = fa_seq_lengths(op, "actual_seq_qlen", actual_seq_qlen)
    seq_kv = fa_seq_lengths(op, "actual_seq_kvlen", actual_seq_kvlen)
    if len(seq_q) != len(seq_kv):
        raise value_error(op, "actual_seq_kvlen", f"the same number of sequences as actual_seq_qlen ({len(seq_q)})",
                          len(seq_kv))
    batch = len(seq_q)
    if batch > (FA_MAX_BATCH_PREFIX if prefix is not None else FA_MAX_BATCH):
        raise value_error(op, "actual_seq_qlen", f"B <= {FA_MAX_BATCH_PREFIX if prefix is not None else FA_MAX_BATCH}"
                          + (" with prefix" if prefix is not None else ""), f"B = {batch}")
    if keep_prob < 1.0 and drop_mask is None:
        raise value_error(op, "drop_mask", "a bit-packed uint8 mask whenever keep_prob < 1", "None")
    if pse_type in (0, 2, 3) and pse is None:
        raise value_error(op, "pse", f"a tensor when pse_type is {pse_type}", "None")

    q_start = (int_list(op, "q_start_idx", q_start_idx) or [0])[0]
    kv_start = (int_list(op, "kv_start_idx", kv_start_idx) or [0])[0]
    if query.shape is None or key.shape is None:
        return None

    t1, n1, d = query.shape
    t2, n2, dk = key.shape
    if head_num != n1:
        raise value_error(op, "head_num", f"the number of query heads query.shape[1] = {n1}", head_num)
    if n2 == 0 or n1 % n2:
        raise value_error(op, "key", f"N2 dividing N1 = {n1} (GQA/MQA)", f"N2 = {n2}")
    if n1 > FA_MAX_HEADS:
        raise value_error(op, "query", f"N1 <= {FA_MAX_HEADS}", f"N1 = {n1}")
    if dk != d:
        raise value_error(op, "key", f"the head dim of query D = {d}", f"D = {dk}")
    if not 1 <= d <= FA_MAX_HEAD_DIM:
        raise value_error(op, "query", f"1 <= D <= {FA_MAX_HEAD_DIM}", f"D = {d}")
    if t1 > FA_MAX_TOKENS or t2 > FA_MAX_TOKENS:
        raise value_error(op, "query" if t1 > FA_MAX_TOKENS else "key", f"T <= {FA_MAX_TOKENS}", f"T1 = {t1}, T2 = {t2}")
    if sum(seq_q) > t1:
        raise value_error(op, "actual_seq_qlen", f"a total <= T1 = {t1}", sum(seq_q))
    if sum(seq_kv) > t2:
        raise value_error(op, "actual_seq_kvlen", f"a total <= T2 = {t2}", sum(seq_kv))

    if drop_mask is not None and drop_mask.shape is not None:
        need = -(-n1 * sum(a * b for a, b in zip(seq_q, seq_kv)) // 8)
        have = 1
        for s in drop_mask.shape:
            have *= s
        if have < need:
            raise value_error(op, "drop_mask", f"at least ceil(N1 * sum(S1_b * S2_b) / 8) = {need} bytes", f"{have} bytes")

    prefix_list = int_list(op, "prefix", prefix)
    mask_form = _fa_check_mask(op, atten_mask, sparse_mode, seq_q, seq_kv, t1, t2, pre_tokens,
                               next_tokens, prefix_list)
    pse_form = _fa_check_pse(op, pse, pse_type, sparse_mode, seq_q, seq_kv, n1, batch, q_start, kv_start,
                             atten_mask is not None)
    return FlashPlan(seq_q, seq_kv, n1, n2, d, sparse_mode, int(pre_tokens), int(next_tokens), mask_form,
                     pse_form, pse_type, q_start, kv_start, float(scale_value), float(keep_prob),
                     drop_mask is not None, tuple(prefix_list) if prefix_list is not None else None,
                     "TND" if softmax_layout == "same_as_input" else "NTD")


def _fa_check_mask(op, atten_mask, mode, seq_q, seq_kv, t1, t2, pre, nxt, prefix):
    """Mask shape per sparse mode, and the per-mode length rules that apply with a mask (§4, §10)."""
    if mode == 6 and (prefix is None or len(prefix) != len(seq_q)):
        raise value_error(op, "prefix", f"a list of B = {len(seq_q)} ints when sparse_mode is 6",
                          "None" if prefix is None else f"{len(prefix)} values")
    if atten_mask is None:
        return None  # full attention whatever the mode (CANN documents this)
    shape = atten_mask.shape
    max_q, max_kv = max(seq_q), max(seq_kv)
    if mode in (0, 1):
        if len(shape) != 2:
            raise value_error(op, "atten_mask", f"a 2-D mask [maxS1, maxS2] = {quote((max_q, max_kv))} or "
                              f"[T1, T2] = {quote((t1, t2))} in TND for sparse_mode {mode}", f"shape {quote(shape)}")
        if shape == (max_q, max_kv):
            form = "local"
        elif shape == (t1, t2):
            form = "global"
        else:
            raise value_error(op, "atten_mask", f"shape [maxS1, maxS2] = {quote((max_q, max_kv))} or [T1, T2] = "
                              f"{quote((t1, t2))}", f"shape {quote(shape)}")
    else:
        want = FA_COMPRESSED[mode]
        if shape != want:
            raise value_error(op, "atten_mask", f"the compressed {want[0]}x{want[1]} mask for sparse_mode {mode}",
                              f"shape {quote(shape)}")
        form = "compressed"
    active = [b for b, s in enumerate(seq_q) if s > 0]
    if mode == 3:
        for b in active:
            if seq_q[b] > seq_kv[b]:
                raise value_error(op, "actual_seq_qlen", "S1_b <= S2_b for every sequence with sparse_mode 3",
                                  f"S1 = {seq_q[b]}, S2 = {seq_kv[b]} in sequence {b}")
    elif mode == 4:
        if pre < 0:
            raise value_error(op, "pre_tokens", "pre_tokens >= 0 with sparse_mode 4", pre)
        if nxt < 0 and pre + nxt < 0:
            raise value_error(op, "next_tokens", "pre_tokens + next_tokens >= 0 when next_tokens < 0", f"{pre} + {nxt}")
        for b in active:
            if seq_q[b] - nxt > seq_kv[b]:
                raise value_error(op, "next_tokens", "S1_b - next_tokens <= S2_b for every sequence with sparse_mode 4",
                                  f"next_tokens = {nxt}, S1 = {seq_q[b]}, S2 = {seq_kv[b]} in sequence {b}")
    elif mode == 0:
        if not (pre >= max_q and (nxt >= max_kv or nxt == 0)):
            if nxt < 0:
                raise value_error(op, "next_tokens", "next_tokens >= 0 with sparse_mode 0 and a mask", nxt)
            if pre < 0 and nxt < -pre:
                raise value_error(op, "next_tokens", "next_tokens >= -pre_tokens when pre_tokens < 0", nxt)
            for b in active:
                if seq_kv[b] + pre < seq_q[b]:
                    raise value_error(op, "pre_tokens", "S2_b + pre_tokens >= S1_b for every sequence with sparse_mode 0",
                                      f"pre_tokens = {pre}, S1 = {seq_q[b]}, S2 = {seq_kv[b]} in sequence {b}")
    elif mode == 6:
        for b, (s1, s2) in enumerate(zip(seq_q, seq_kv)):
            lo = 0 if s1 > s2 else s2 - s1
            if not lo <= prefix[b] <= s2:
                raise value_error(op, "prefix", f"prefix[{b}] in [{lo}, {s2}] (sequence {b}: S1 = {s1}, S2 = {s2})",
                                  prefix[b])
    elif mode in (7, 8) and active:
        edge = active[-1] if mode == 7 else active[0]
        if pre < seq_kv[edge]:
            raise value_error(op, "pre_tokens", f"pre_tokens >= S2 of the {'last' if mode == 7 else 'first'} "
                              f"sequence ({seq_kv[edge]}) with sparse_mode {mode}", pre)
        if mode == 7:
            if nxt > 0:
                raise value_error(op, "next_tokens", "next_tokens <= 0 with sparse_mode 7", nxt)
            for b in active:
                if seq_q[b] > seq_kv[b]:
                    raise value_error(op, "actual_seq_qlen", "S1_b <= S2_b for every sequence with sparse_mode 7",
                                      f"S1 = {seq_q[b]}, S2 = {seq_kv[b]} in sequence {b}")
        if seq_q[edge] - nxt > seq_kv[edge]:
            raise value_error(op, "next_tokens", f"S1 - next_tokens <= S2 for sequence {edge} with sparse_mode {mode}",
                              f"next_tokens = {nxt}, S1 = {seq_q[edge]}, S2 = {seq_kv[edge]}")
    return form


def _fa_check_pse(op, pse, pse_type, mode, seq_q, seq_kv, n1, batch, q_start, kv_start, has_mask):
    if pse is None:
        return None
    if any(s == 0 for s in seq_q):
        raise value_error(op, "pse", "sequences with S1_b > 0 only (no zero-length query sequence) when pse is given",
                          f"actual_seq_qlen lengths {list(seq_q)}")
    if mode == 7 and has_mask:
        raise value_error(op, "pse", "None with sparse_mode 7", "a tensor")
    if mode == 8 and has_mask:
        if any(a != b for a, b in zip(seq_q[1:], seq_kv[1:])) or seq_q[0] - seq_kv[0] + q_start - kv_start != 0:
            raise value_error(op, "pse", "S1_b == S2_b for b >= 1 and S1_0 - S2_0 + q_start_idx - kv_start_idx == 0 "
                              "with sparse_mode 8", f"S1 {list(seq_q)}, S2 {list(seq_kv)}")
    shape = pse.shape
    if shape is None:
        return None
    if pse_type in (2, 3):
        if shape not in ((n1,), (batch, n1)):
            raise value_error(op, "pse", f"ALiBi slopes of shape [N1] = [{n1}] or [B, N1] = [{batch}, {n1}] "
                              f"for pse_type {pse_type}", f"shape {quote(shape)}")
        return "slopes"
    full = n1 * sum(a * b for a, b in zip(seq_q, seq_kv))
    row = n1 * sum(seq_kv)
    if len(shape) == 1 and shape[0] == full:
        return "full"
    if len(shape) == 1 and shape[0] == row:
        return "row"
    if len(shape) == 4 and shape[0] in (1, batch) and shape[1:] == (n1, FA_ALIBI_ROWS, max(seq_kv)):
        if any(a != b for a, b in zip(seq_q, seq_kv)) or max(seq_q) <= FA_ALIBI_ROWS or mode not in (0, 2, 3):
            raise value_error(op, "pse", "the ALiBi-compressed [B|1, N1, 1024, maxS2] form only when every S1_b == S2_b, "
                              "some S1_b > 1024 and sparse_mode is 0, 2 or 3",
                              f"S1 {list(seq_q)}, S2 {list(seq_kv)}, sparse_mode {mode}")
        return "alibi"
    raise value_error(op, "pse", f"a 1-D tensor of N1*sum(S1_b*S2_b) = {full} or N1*sum(S2_b) = {row} elements, or "
                      f"[B|1, N1, 1024, maxS2] = [{batch}, {n1}, 1024, {max(seq_kv)}]", f"shape {quote(shape)}")


def check_flash_attention_grad(query, key, value, dy, head_num, actual_seq_qlen, actual_seq_kvlen,
                               softmax_max, softmax_sum, attention_in, **kwargs) -> FlashPlan | None:
    """Grad V4: the forward's checks plus dy / attention_in like query and stats [T1, N1, 8] fp32."""
    op = FA_GRAD_OP
    plan = check_flash_attention(query, key, value, head_num, actual_seq_qlen, actual_seq_kvlen, op=op,
                                 layout_arg="softmax_in_layout", **kwargs)
    for name, meta in (("dy", dy), ("attention_in", attention_in)):
        check_same_dtype(op, name, meta, "query", query)
        check_same_shape(op, name, meta, "query", query)
    for name, meta in (("softmax_max", softmax_max), ("softmax_sum", softmax_sum)):
        check_dtype(op, name, meta, ("float32",))
        if meta.shape is not None and query.shape is not None and meta.shape != (query.shape[0], query.shape[1], 8):
            raise value_error(op, name, f"shape [T1, N1, 8] = {quote((query.shape[0], query.shape[1], 8))}",
                              f"shape {quote(meta.shape)}")
    return plan
