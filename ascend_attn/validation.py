"""Framework-neutral input validation, shared by every frontend.

Every frontend (PyTorch eager, the fake/meta kernels, MindSpore PyNative and the MindSpore
GRAPH_MODE infer functions) describes its inputs as :class:`TensorMeta` (shape + canonical dtype
name) and calls the ``check_*`` function of the op here, so the error a user sees is the same
text whichever framework they use.

Messages follow one template (``docs/errors.md``)::

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
    """What validation needs to know of a tensor: its shape, canonical dtype name and (torch
    tensors only) device, as ``str(tensor.device)``; ``None`` where a framework has no such notion."""

    shape: tuple[int, ...] | None
    dtype: str | None
    device: str | None = None

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
    # Only torch tensors carry a device worth checking (MindSpore places tensors itself).
    device = str(x.device) if type(x).__module__.startswith("torch") else None
    return TensorMeta(tuple(int(d) for d in x.shape), dtype_name(x.dtype), device)


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


def check_same_device(op: str, ref_arg: str, ref: TensorMeta, **named) -> None:
    """Every tensor argument in ``named`` (a TensorMeta, a list of them, or None) lives on ``ref``'s
    device: kernels index all inputs from one device, so a mixed call (a CPU query with a meta key)
    would read memory that is not there."""
    if ref is None or ref.device is None:
        return
    for name, given in named.items():
        metas = list(given) if isinstance(given, (list, tuple)) and not isinstance(given, TensorMeta) else [given]
        for i, meta in enumerate(metas):
            if meta is not None and meta.device is not None and meta.device != ref.device:
                arg = f"{name}[{i}]" if len(metas) > 1 else name
                raise value_error(op, arg, f"a tensor on the device of {ref_arg} ({ref.device})", meta.device)


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


def _is_integer(v: Any) -> bool:
    import numbers
    return isinstance(v, numbers.Integral) or type(v).__name__ == "SymInt"


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
            # isinstance against numbers.Integral-like types only: torch.compile traces this with
            # SymInt elements, which are ints for our purpose (SymInt is not an int subclass).
            if isinstance(v, bool) or isinstance(v, float) or not _is_integer(v):
                raise type_error(op, arg, "integers", f"an element {v!r} of type {type(v).__name__}")
            out.append(v if type(v).__name__ == "SymInt" else int(v))
        return out
    raise type_error(op, arg, "a list, tuple or 1-D integer tensor", type(value).__name__)


def lengths_known(values: Any) -> bool:
    """Whether the values of a host length argument are known: ``None`` (absent) or a list of ints.

    Not known: ``...`` (nothing known: MindSpore's graph compile) or a list holding ``...`` (the count
    known, the values not: torch's fake kernels, where lengths are tensor data). Checks that read
    values are skipped then; the kernel that has the values runs them before writing any output.
    """
    return values is not Ellipsis and (values is None or not any(v is Ellipsis for v in values))


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
    """Validate RingAttentionUpdate inputs (docs/semantics.md §1, docs/errors.md).

    ``actual_seq_qlen`` is the host list, ``None`` when absent, or not known yet (graph compilation,
    :func:`lengths_known`). ``ub_limit`` adds MindSpore's V1 UB-size rule.
    Returns the plan, or None when shapes were not all known.
    """
    check_choice(op, layout_arg, input_layout, RAU_LAYOUTS)
    check_choice(op, "input_softmax_layout", input_softmax_layout, RAU_SOFTMAX_LAYOUTS)
    check_same_device(op, "prev_attn_out", prev_attn_out, prev_softmax_max=prev_softmax_max,
                      prev_softmax_sum=prev_softmax_sum, cur_attn_out=cur_attn_out,
                      cur_softmax_max=cur_softmax_max, cur_softmax_sum=cur_softmax_sum)
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
        if stats_layout == "NTD" and lengths_known(actual_seq_qlen):
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
    """Validated FA arguments, as the kernels need them (docs/semantics.md §2-§6).

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
    """Cumulative lengths WITHOUT a leading 0 -> per-sequence lengths (docs/semantics.md §0.2).

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
    """Validate the FA V4 forward / grad arguments shared by both ops (docs/errors.md).

    Length arguments (``actual_seq_qlen``, ``actual_seq_kvlen``, ``prefix``) are host lists (already
    normalised with ``int_list``), or not known (:func:`lengths_known`: torch.compile's fake kernels):
    then only the checks of metadata run, the kernel that has the values runs the rest.
    Returns None when shapes or length values are not known (MindSpore graph compile, dtype pass).
    """
    check_choice(op, layout_arg, softmax_layout, FA_SOFTMAX_LAYOUTS)
    check_same_device(op, "query", query, key=key, value=value, pse=pse, drop_mask=drop_mask, atten_mask=atten_mask)
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

    values_known = all(lengths_known(x) for x in (actual_seq_qlen, actual_seq_kvlen, prefix))
    seq_q = seq_kv = batch = None  # the values / the count; a list of ... has a count only
    if values_known:
        seq_q = fa_seq_lengths(op, "actual_seq_qlen", actual_seq_qlen)
        seq_kv = fa_seq_lengths(op, "actual_seq_kvlen", actual_seq_kvlen)
    if not any(x is Ellipsis for x in (actual_seq_qlen, actual_seq_kvlen, prefix)):
        if len(actual_seq_qlen) != len(actual_seq_kvlen):
            raise value_error(op, "actual_seq_kvlen", f"the same number of sequences as actual_seq_qlen "
                              f"({len(actual_seq_qlen)})", len(actual_seq_kvlen))
        batch = len(actual_seq_qlen)
        if batch > (FA_MAX_BATCH_PREFIX if prefix is not None else FA_MAX_BATCH):
            raise value_error(op, "actual_seq_qlen",
                              f"B <= {FA_MAX_BATCH_PREFIX if prefix is not None else FA_MAX_BATCH}"
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
    if not values_known:  # the checks that need only the count
        if batch is not None:
            _fa_check_mask(op, atten_mask, sparse_mode, None, None, t1, t2, pre_tokens, next_tokens, prefix, batch)
            _fa_check_pse(op, pse, pse_type, sparse_mode, None, None, n1, batch, q_start, kv_start,
                          atten_mask is not None)
        return None
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
                               next_tokens, prefix_list, batch)
    pse_form = _fa_check_pse(op, pse, pse_type, sparse_mode, seq_q, seq_kv, n1, batch, q_start, kv_start,
                             atten_mask is not None)
    if pse_form == "alibi":
        # The compressed form holds the diagonals j - i <= 1023 only (its last row and last column):
        # kept positions further above the diagonal would have no pse value.
        above = max(seq_kv) - 1 if mask_form is None or sparse_mode == 0 and next_tokens > 1023 else 0
        if above > FA_ALIBI_ROWS - 1:
            raise value_error(op, "pse", "the ALiBi-compressed form where kept positions satisfy j - i <= 1023 "
                              "(a causal mask, or sparse_mode 0 with next_tokens <= 1023)",
                              f"sparse_mode {sparse_mode}, next_tokens {next_tokens}, "
                              f"{'no mask' if mask_form is None else 'a mask'}")
    return FlashPlan(seq_q, seq_kv, n1, n2, d, sparse_mode, int(pre_tokens), int(next_tokens), mask_form,
                     pse_form, pse_type, q_start, kv_start, float(scale_value), float(keep_prob),
                     drop_mask is not None, tuple(prefix_list) if prefix_list is not None else None,
                     "TND" if softmax_layout == "same_as_input" else "NTD")


def _fa_check_mask(op, atten_mask, mode, seq_q, seq_kv, t1, t2, pre, nxt, prefix, batch):
    """Mask shape per sparse mode, and the per-mode length rules that apply with a mask (§4, §10).

    ``seq_q`` / ``seq_kv`` None: only the ``batch`` count is known, the checks that read lengths are
    left to the kernel that has them (returns None then)."""
    if mode == 6 and (prefix is None or len(prefix) != batch):
        raise value_error(op, "prefix", f"a list of B = {batch} ints when sparse_mode is 6",
                          "None" if prefix is None else f"{len(prefix)} values")
    if atten_mask is None:
        return None  # full attention whatever the mode (CANN documents this)
    shape = atten_mask.shape
    if mode not in (0, 1):
        want = FA_COMPRESSED[mode]
        if shape != want:
            raise value_error(op, "atten_mask", f"the compressed {want[0]}x{want[1]} mask for sparse_mode {mode}",
                              f"shape {quote(shape)}")
    if seq_q is None:
        return None
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
    if seq_q is not None and any(s == 0 for s in seq_q):
        raise value_error(op, "pse", "sequences with S1_b > 0 only (no zero-length query sequence) when pse is given",
                          f"actual_seq_qlen lengths {list(seq_q)}")
    if mode == 7 and has_mask:
        raise value_error(op, "pse", "None with sparse_mode 7", "a tensor")
    if mode == 8 and has_mask and seq_q is not None:
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
    if seq_q is None:  # lengths not known
        return None
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
    check_same_device(op, "query", query, dy=dy, softmax_max=softmax_max, softmax_sum=softmax_sum,
                      attention_in=attention_in)
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


# ----------------------------------------------------------------------------- IncreFlashAttention

IFA_OP = "incre_flash_attention"
IFA_LAYOUTS = ("BSH", "BSND", "BNSD")
IFA_QUERY_DTYPES = ("float16", "bfloat16", "int8")
IFA_MASK_DTYPES = ("bool", "int8", "uint8")
IFA_DEQUANT_DTYPES = ("float32", "uint64", "int64")
IFA_MAX_BATCH, IFA_MAX_HEADS, IFA_MAX_HEAD_DIM, IFA_MAX_KV = 65536, 256, 512, 262144
IFA_MAX_GROUP, IFA_MAX_LIST, IFA_MAX_BLOCK = 64, 256, 512
QUANT_SCENARIO_ARGS = ("dequant_scale1", "quant_scale1", "dequant_scale2", "quant_scale2", "quant_offset2")
# scenario -> (required, forbidden) (docs/semantics.md §7.5)
QUANT_SCENARIOS = {
    "A": (("dequant_scale1", "quant_scale1", "dequant_scale2", "quant_scale2"), ()),
    "B": (("dequant_scale1", "quant_scale1", "dequant_scale2"), ("quant_scale2", "quant_offset2")),
    "C": (("quant_scale2",), ("dequant_scale1", "quant_scale1", "dequant_scale2")),
    "float": ((), ("dequant_scale1", "quant_scale1", "dequant_scale2", "quant_scale2", "quant_offset2")),
}


@dataclass(frozen=True)
class IncrePlan:
    """Validated IncreFlashAttention arguments (docs/semantics.md §7).

    ``starts``/``ends``: valid KV positions ``[start_b, end_b)`` per batch (absolute positions in
    the cache; ``start_b < 0`` means the batch outputs 0 / quant2(0)). ``kv_form``: "tensor",
    "list" or "paged" (``paged_layout`` "BSH" = (num_blocks, block_size, Nkv*D), "BNSD" =
    (num_blocks, Nkv, block_size, D)). ``scenario``: "float", "A", "B" or "C" (§7.5).
    ``antiquant``: None, "channel" or "tensor". ``mask_heads``: the mask has a per-head row.
    ``starts``/``ends`` are for right padding; with ``left_padding`` the kernel reads the padding
    size and calls :func:`ifa_left_padding`. They are None when the lengths were not known (the
    fake kernel under torch.compile: it needs the output dtype only).
    """

    layout: str
    batch: int
    heads_q: int
    heads_kv: int
    head_dim: int
    starts: tuple[int, ...] | None
    ends: tuple[int, ...] | None
    caps: tuple[int, ...]  # cache length S_b of each batch (M*block_size when paged)
    left_padding: bool  # kv_padding_size given together with actual_seq_lengths
    kv_form: str
    paged_layout: str | None
    block_size: int
    scenario: str
    antiquant: str | None
    has_mask: bool
    mask_heads: bool
    has_pse: bool
    quant_channel: bool
    scale: float
    out_dtype: str


def _ifa_kv_split(layout, shape):
    """(B, S, N, D) of a contiguous K/V tensor in ``layout`` (BSH: N*D as H)."""
    if layout == "BSH":
        return shape[0], shape[1], None, shape[2]
    if layout == "BSND":
        return shape[0], shape[1], shape[2], shape[3]
    return shape[0], shape[2], shape[1], shape[3]


def check_incre_flash_attention(
    query: TensorMeta, key, value, *, atten_mask=None, actual_seq_lengths=None, pse_shift=None,
    dequant_scale1=None, quant_scale1=None, dequant_scale2=None, quant_scale2=None, quant_offset2=None,
    antiquant_scale=None, antiquant_offset=None, block_table=None, num_heads: int = 1,
    input_layout: str = "BSH", scale_value: float = 1.0, num_key_value_heads: int = 0, block_size: int = 0,
    inner_precise: int = 1, kv_padding_size=None, op: str = IFA_OP,
    mask_arg: str = "atten_mask",
) -> IncrePlan | None:
    """Validate IncreFlashAttention (V2 quant + V4 extensions) arguments (docs/semantics.md §7, docs/errors.md).

    ``key``/``value``: a TensorMeta or a list of them (tensor-list form). ``actual_seq_lengths``:
    host list, None, or not known (:func:`lengths_known`: the value checks are skipped). Other tensors:
    TensorMeta or None. Returns None if shapes are unknown.
    """
    check_choice(op, "input_layout", input_layout, IFA_LAYOUTS)
    if inner_precise not in (0, 1):
        raise value_error(op, "inner_precise", "0 or 1", inner_precise)
    for name, v in (("num_heads", num_heads), ("num_key_value_heads", num_key_value_heads), ("block_size", block_size)):
        if isinstance(v, bool) or not isinstance(v, int):
            raise type_error(op, name, "an int", type(v).__name__)
    seq_form = lambda x: isinstance(x, (list, tuple)) and not isinstance(x, TensorMeta)
    keys = list(key) if seq_form(key) else [key]
    values = list(value) if seq_form(value) else [value]
    is_list = seq_form(key) and len(keys) > 1
    if not keys:
        raise value_error(op, "key", "a tensor or a non-empty list of tensors", "an empty list")
    if seq_form(key) != seq_form(value) or len(keys) != len(values):
        raise value_error(op, "value", "the same form as key (a tensor, or a list of as many tensors)",
                          f"{len(values)} tensor(s) for {len(keys)} key tensor(s)")
    check_same_device(op, "query", query, key=keys, value=values, atten_mask=atten_mask, pse_shift=pse_shift,
                      dequant_scale1=dequant_scale1, quant_scale1=quant_scale1, dequant_scale2=dequant_scale2,
                      quant_scale2=quant_scale2, quant_offset2=quant_offset2, antiquant_scale=antiquant_scale,
                      antiquant_offset=antiquant_offset, block_table=block_table, kv_padding_size=kv_padding_size)
    check_dtype(op, "query", query, IFA_QUERY_DTYPES)
    kv_dtype = keys[0].dtype
    for i, (k, v) in enumerate(zip(keys, values)):
        suffix = f"[{i}]" if is_list else ""
        check_dtype(op, "key" + suffix, k, IFA_QUERY_DTYPES)
        check_same_dtype(op, "key" + suffix, k, "key", keys[0])
        check_same_dtype(op, "value" + suffix, v, "key", keys[0])
    paged = block_table is not None
    q_int8 = query.dtype == "int8"
    kv_int8 = kv_dtype == "int8"

    # dtype combinations and the quantization scenario (§7.5, §10)
    given = {n: m for n, m in zip(QUANT_SCENARIO_ARGS, (dequant_scale1, quant_scale1, dequant_scale2,
                                                         quant_scale2, quant_offset2)) if m is not None}
    if q_int8:
        if not kv_int8:
            raise type_error(op, "key", "int8 key/value when query is int8", kv_dtype)
        scenario = "A" if "quant_scale2" in given else "B"
    else:
        if kv_dtype is not None and query.dtype is not None and not kv_int8 and kv_dtype != query.dtype:
            raise type_error(op, "key", f"the query dtype ({query.dtype}) or int8 (with antiquant_scale)", kv_dtype)
        scenario = "C" if "quant_scale2" in given else "float"
    required, forbidden = QUANT_SCENARIOS[scenario]
    label = {"A": "int8 query with int8 output (scenario A)", "B": "int8 query with fp16 output (scenario B)",
             "C": "float query with int8 output (scenario C)", "float": "float query and output"}[scenario]
    for name in required:
        if name not in given:
            raise value_error(op, name, f"a tensor for {label}", "None")
    for name in forbidden:
        if name in given:
            raise value_error(op, name, f"None for {label}", "a tensor")
    if quant_offset2 is not None and quant_scale2 is None:
        raise value_error(op, "quant_offset2", "None unless quant_scale2 is given", "a tensor")
    for name in ("dequant_scale1", "dequant_scale2"):
        if name in given:
            check_dtype(op, name, given[name], IFA_DEQUANT_DTYPES)
    scale_dtypes = ("float32", "bfloat16") if query.dtype == "bfloat16" else ("float32",)
    for name in ("quant_scale1", "quant_scale2", "quant_offset2"):
        if name in given:
            check_dtype(op, name, given[name], scale_dtypes)
    if quant_offset2 is not None:
        check_same_dtype(op, "quant_offset2", quant_offset2, "quant_scale2", quant_scale2)
        check_same_shape(op, "quant_offset2", quant_offset2, "quant_scale2", quant_scale2)

    if kv_int8 and not q_int8 and antiquant_scale is None:
        raise value_error(op, "antiquant_scale", "a tensor when key/value are int8 and query is float", "None")
    if antiquant_scale is None and antiquant_offset is not None:
        raise value_error(op, "antiquant_offset", "None unless antiquant_scale is given", "a tensor")
    if antiquant_scale is not None:
        if not kv_int8 or q_int8:
            raise value_error(op, "antiquant_scale", "a tensor only with a float query and int8 key/value",
                              f"query {query.dtype}, key {kv_dtype}")
        check_dtype(op, "antiquant_scale", antiquant_scale, (query.dtype, "float32") if query.dtype else FLOAT_DTYPES)
        if antiquant_offset is not None:
            check_same_dtype(op, "antiquant_offset", antiquant_offset, "antiquant_scale", antiquant_scale)
            check_same_shape(op, "antiquant_offset", antiquant_offset, "antiquant_scale", antiquant_scale)
    if pse_shift is not None:
        check_dtype(op, "pse_shift", pse_shift, ("float16",) if q_int8 else (query.dtype,) if query.dtype else FLOAT_DTYPES)
    if atten_mask is not None:
        check_dtype(op, mask_arg, atten_mask, IFA_MASK_DTYPES)
    if paged:
        check_dtype(op, "block_table", block_table, ("int32",))
    if kv_padding_size is not None:
        check_dtype(op, "kv_padding_size", kv_padding_size, ("int64",))

    if query.shape is None or any(k.shape is None for k in keys + values):
        return None

    # shapes, layouts, heads (§7.1)
    rank = 3 if input_layout == "BSH" else 4
    form = {"BSH": "(B, 1, Nq*D)", "BSND": "(B, 1, Nq, D)", "BNSD": "(B, Nq, 1, D)"}[input_layout]
    check_rank(op, "query", query, rank, form + f' for input_layout "{input_layout}"')
    qs = query.shape
    batch = qs[0]
    q_seq = qs[2] if input_layout == "BNSD" else qs[1]
    if q_seq != 1:
        raise value_error(op, "query", "a sequence length of 1 (incremental decoding)", f"S = {q_seq}")
    heads_q = num_heads
    if input_layout == "BSH":
        if heads_q <= 0 or qs[2] % heads_q:
            raise value_error(op, "num_heads", f"a divisor of H = {qs[2]}", num_heads)
        dim = qs[2] // heads_q
    else:
        nq = qs[2] if input_layout == "BSND" else qs[1]
        if nq != heads_q:
            raise value_error(op, "num_heads", f"the query head count {nq}", num_heads)
        dim = qs[3]
    heads_kv = num_key_value_heads or heads_q
    if heads_kv <= 0 or heads_q % heads_kv:
        raise value_error(op, "num_key_value_heads", f"a divisor of num_heads = {heads_q} (0 = num_heads)",
                          num_key_value_heads)
    if heads_q // heads_kv > IFA_MAX_GROUP:
        raise value_error(op, "num_key_value_heads", f"num_heads / num_key_value_heads <= {IFA_MAX_GROUP}",
                          f"{heads_q} / {heads_kv}")
    if batch > IFA_MAX_BATCH or batch < 1:
        raise value_error(op, "query", f"1 <= B <= {IFA_MAX_BATCH}", f"B = {batch}")
    if heads_q > IFA_MAX_HEADS:
        raise value_error(op, "num_heads", f"N <= {IFA_MAX_HEADS}", heads_q)
    if not 1 <= dim <= IFA_MAX_HEAD_DIM:
        raise value_error(op, "query", f"1 <= D <= {IFA_MAX_HEAD_DIM}", f"D = {dim}")

    # None: absent; ...: present, values unknown (torch.compile's fake kernel: the real kernel checks them)
    seq_lens = actual_seq_lengths if actual_seq_lengths is None or actual_seq_lengths is Ellipsis \
        else list(actual_seq_lengths)
    if paged:
        kv_form, paged_layout = "paged", None
        cache = keys[0].shape
        if is_list:
            raise value_error(op, "key", "a single cache tensor with block_table (paged KV)", f"a list of {len(keys)}")
        if kv_padding_size is not None:
            raise value_error(op, "kv_padding_size", "None with block_table (left padding of a paged cache)", "a tensor")
        check_same_shape(op, "value", values[0], "key", keys[0])
        bt = block_table.shape
        if len(bt) != 2 or bt[0] != batch:
            raise value_error(op, "block_table", f"a 2-D (B, max_blocks) table with B = {batch}", f"shape {quote(bt)}")
        align = 32 if kv_int8 else 16
        if not (0 < block_size <= IFA_MAX_BLOCK and block_size % align == 0):
            raise value_error(op, "block_size", f"a multiple of {align} in (0, {IFA_MAX_BLOCK}] for {kv_dtype} key/value",
                              block_size)
        if len(cache) == 3:
            if cache[1] != block_size or cache[2] != heads_kv * dim:
                raise value_error(op, "key", f"a paged cache (num_blocks, block_size, Nkv*D) = (n, {block_size}, "
                                  f"{heads_kv * dim})", f"shape {quote(cache)}")
            if heads_kv * dim > 65535:
                raise value_error(op, "key", "Nkv*D <= 65535 for a (num_blocks, block_size, H) cache", heads_kv * dim)
            paged_layout = "BSH"
        elif len(cache) == 4 and input_layout == "BNSD":
            if cache[1:] != (heads_kv, block_size, dim):
                raise value_error(op, "key", f"a paged cache (num_blocks, Nkv, block_size, D) = (n, {heads_kv}, "
                                  f"{block_size}, {dim})", f"shape {quote(cache)}")
            paged_layout = "BNSD"
        else:
            raise value_error(op, "key", "a paged cache of rank 3, or rank 4 with a BNSD query",
                              f"rank {len(cache)} with {input_layout}")
        if seq_lens is None:
            raise value_error(op, "actual_seq_lengths", "a list of lengths with block_table (paged KV)", "None")
        caps = [bt[1] * block_size] * batch
    else:
        paged_layout = None
        if block_size:
            raise value_error(op, "block_size", "0 without block_table", block_size)
        kv_form = "list" if is_list else "tensor"
        if is_list and len(keys) != batch:
            raise value_error(op, "key", f"a list of B = {batch} tensors", f"{len(keys)} tensors")
        if len(keys) > IFA_MAX_LIST and is_list:
            raise value_error(op, "key", f"at most {IFA_MAX_LIST} tensors", len(keys))
        caps = []
        for i, (k, v) in enumerate(zip(keys, values)):
            name = f"key[{i}]" if is_list else "key"
            check_rank(op, name, k, rank, f"for input_layout \"{input_layout}\"")
            check_same_shape(op, name.replace("key", "value"), v, name, k)
            kb, ks, kn, kd = _ifa_kv_split(input_layout, k.shape)
            want_b = 1 if is_list else batch
            if kb != want_b:
                raise value_error(op, name, f"batch {want_b}", f"shape {quote(k.shape)}")
            if (kn, kd) != ((None, heads_kv * dim) if input_layout == "BSH" else (heads_kv, dim)):
                raise value_error(op, name, f"{heads_kv} key/value heads of dim {dim}", f"shape {quote(k.shape)}")
            if ks > IFA_MAX_KV:
                raise value_error(op, name, f"S <= {IFA_MAX_KV}", f"S = {ks}")
            if is_list and i and (k.shape[:1] + _drop_seq(input_layout, k.shape)) != (keys[0].shape[:1] + _drop_seq(input_layout, keys[0].shape)):
                raise value_error(op, name, "the shape of key[0] except S", f"shape {quote(k.shape)}")
            caps.append(ks)
        if not is_list:
            caps = caps * batch
    # lengths and the valid range (§7.2)
    if seq_lens is not None and seq_lens is not Ellipsis and len(seq_lens) not in (1,) and len(seq_lens) < batch:
        raise value_error(op, "actual_seq_lengths", f"1 or at least B = {batch} values", f"{len(seq_lens)} values")
    if not lengths_known(seq_lens):
        lens = None
    elif seq_lens is not None:
        seq_lens = (seq_lens * batch if len(seq_lens) == 1 else seq_lens[:batch])
        for b, (length, cap) in enumerate(zip(seq_lens, caps)):
            if not 0 <= length <= cap:
                raise value_error(op, "actual_seq_lengths", f"values in [0, {cap}] (batch {b})", length)
        lens = seq_lens
    else:
        lens = caps
    if kv_padding_size is not None:
        if kv_padding_size.shape is not None and _numel(kv_padding_size.shape) != 1:
            raise value_error(op, "kv_padding_size", "one element", f"shape {quote(kv_padding_size.shape)}")
        if is_list:
            raise value_error(op, "kv_padding_size", "None with a tensor list (left padding of per-batch tensors)",
                              "a tensor")
    # Right padding; left padding (its value is device data) is applied by ifa_left_padding.
    left_padding = kv_padding_size is not None and seq_lens is not None
    # antiquant shapes (§7.4)
    antiquant = None
    if antiquant_scale is not None:
        per_channel = {"BNSD": (2, heads_kv, 1, dim), "BSH": (2, heads_kv * dim), "BSND": (2, heads_kv, dim)}[input_layout]
        if antiquant_scale.shape == (2,):
            antiquant = "tensor"
        elif antiquant_scale.shape == per_channel:
            antiquant = "channel"
        else:
            raise value_error(op, "antiquant_scale", f"shape (2,) (per-tensor) or {quote(per_channel)} (per-channel, "
                              f"{input_layout})", f"shape {quote(antiquant_scale.shape)}")
    # quant parameter shapes (§7.6)
    for name in ("dequant_scale1", "quant_scale1", "dequant_scale2"):
        if name in given and _numel(given[name].shape) != 1:
            raise value_error(op, name, "one element (per-tensor)", f"shape {quote(given[name].shape)}")
    quant_channel = False
    if quant_scale2 is not None:
        n = _numel(quant_scale2.shape)
        ok = {(heads_q * dim,), (1, heads_q * dim), (1, 1, heads_q * dim), (heads_q, dim), (heads_q, 1, dim),
              (1, heads_q, dim), (1, heads_q, 1, dim), (1, 1, heads_q, dim)}
        if n != 1 and quant_scale2.shape not in ok:
            raise value_error(op, "quant_scale2", f"one element or Nq*D = {heads_q * dim} values (per channel, e.g. "
                              f"[{heads_q * dim}] or [{heads_q}, {dim}])", f"shape {quote(quant_scale2.shape)}")
        quant_channel = n != 1
    # mask and pse_shift shapes (§7.2)
    # left padding: re-checked once the size is read; lengths not known: checked by the real kernel
    needed = max(caps) if paged else None if lens is None else max(lens)
    mask_heads = False
    if atten_mask is not None:
        ms = atten_mask.shape
        if len(ms) in (2, 3, 4) and ms[0] == batch and all(x == 1 for x in ms[1:-1]):
            pass
        elif len(ms) == 4 and ms[0] in (1, batch) and ms[1] == heads_q and ms[2] == 1:
            mask_heads = True
        else:
            raise value_error(op, mask_arg, f"shape (B, S), (B, 1, S), (B, 1, 1, S), (B, Nq, 1, S) or (1, Nq, 1, S) "
                              f"with B = {batch}, Nq = {heads_q}", f"shape {quote(ms)}")
        if needed is not None and ms[-1] < needed:
            raise value_error(op, mask_arg, f"a last dimension >= the KV length {needed}", ms[-1])
    if pse_shift is not None:
        ps = pse_shift.shape
        if len(ps) != 4 or ps[0] not in (1, batch) or ps[1] != heads_q or ps[2] != 1:
            raise value_error(op, "pse_shift", f"shape (B|1, Nq, 1, S) with B = {batch}, Nq = {heads_q}",
                              f"shape {quote(ps)}")
        if needed is not None and ps[3] < needed:
            raise value_error(op, "pse_shift", f"a last dimension >= the KV length {needed}", ps[3])
        if dim % 16:
            raise value_error(op, "pse_shift", "D % 16 == 0", f"D = {dim}")
    out_dtype = {"A": "int8", "B": "float16", "C": "int8", "float": query.dtype}[scenario]
    starts, ends = (None, None) if lens is None else (tuple(0 for _ in lens), tuple(lens))
    return IncrePlan(input_layout, batch, heads_q, heads_kv, dim, starts, ends, tuple(caps),
                     left_padding, kv_form, paged_layout, block_size, scenario, antiquant, atten_mask is not None,
                     mask_heads, pse_shift is not None, quant_channel, float(scale_value), out_dtype)


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def _drop_seq(layout, shape):
    return tuple(s for i, s in enumerate(shape) if i != (2 if layout == "BNSD" else 1))[1:]


def ifa_left_padding(plan: IncrePlan, pad: int) -> IncrePlan:
    """Apply ``kv_padding_size`` (docs/semantics.md §7.2): batch b's valid range becomes
    ``[S - pad - L_b, S - pad)`` with ``pad = max(kv_padding_size, 0)``; a negative start means
    the batch outputs 0 / quant2(0)."""
    from dataclasses import replace
    pad = max(int(pad), 0)
    ends = tuple(cap - pad for cap in plan.caps)
    starts = tuple(end - (oe - os) for end, os, oe in zip(ends, plan.starts, plan.ends))
    return replace(plan, starts=starts, ends=ends)


# ============================================================================= flash_attention_score layouts
# MindSpore's ``flash_attention_score`` over the TND V4 op: "BSH", "SBH", "BSND" and "BNSD" calls (uniform
# S1 / S2 per batch) map onto one TND call. The shape rules of that mapping, framework-neutral (shapes as
# tuples, TensorMetas); the data movement is ``mindspore/flash_attention_score.py``. Argument names in
# messages are the caller's (``mask_arg`` / ``pse_arg``).

FA_SCORE_UNIFORM_LAYOUTS = ("BSH", "SBH", "BSND", "BNSD")
FA_SCORE_LAYOUTS = ("TND",) + FA_SCORE_UNIFORM_LAYOUTS
FA_SCORE_UNIFORM_SPARSE_MODES = (0, 1, 2, 3, 4, 6)
_FA_SCORE_FORMS = {"BSH": "[B, S, H]", "SBH": "[S, B, H]", "BSND": "[B, S, N, D]", "BNSD": "[B, N, S, D]"}


@dataclass(frozen=True)
class FaLayoutPlan:
    """How a uniform-batch (non-TND) ``flash_attention_score`` call maps onto the TND op.

    ``mask_form``: None, "keep" (2-D: [S1, S2] or compressed), "squeeze" ([1, 1, S1, S2] -> [S1, S2])
    or "global" ([B, 1, S1, S2] -> block-diagonal [T1, T2]); ``pse_form``: None, "flat"
    ([B, N1, S1, S2] / [B, N1, 1, S2] -> packed 1-D), "broadcast" ([1, N1, S1, S2]) or "keep"
    (ALiBi-compressed [B|1, N1, 1024, S2]). ``seq_q`` / ``seq_kv``: the TND call's cumulative lengths.
    """

    batch: int
    s1: int
    s2: int
    n1: int
    n2: int
    d: int  # head dim of query
    dk: int  # head dim of key / value (checked equal to d by the TND validation)
    mask_form: str | None
    pse_form: str | None
    seq_q: tuple[int, ...]
    seq_kv: tuple[int, ...]


def check_fa_score_attributes(op: str, input_layout: Any, sparse_mode: Any, softmax_out_layout: Any) -> None:
    """Attributes ``flash_attention_score`` accepts per layout (the TND op checks the rest)."""
    check_choice(op, "input_layout", input_layout, FA_SCORE_LAYOUTS)
    if input_layout == "TND":
        return
    if sparse_mode not in FA_SCORE_UNIFORM_SPARSE_MODES:
        raise value_error(op, "sparse_mode", f'0, 1, 2, 3, 4 or 6 when input_layout is "{input_layout}"', sparse_mode)
    if softmax_out_layout != "":
        raise value_error(op, "softmax_out_layout", f'"" when input_layout is "{input_layout}" (statistics '
                          "are [B, N1, S1, 8])", quote(softmax_out_layout))


def _fa_score_dims(op, layout, arg, shape, n, d):
    """(B, S, N, D) of a tensor in a uniform layout; ``n`` / ``d`` None = take from the shape."""
    if layout in ("BSH", "SBH"):
        b, s = (shape[0], shape[1]) if layout == "BSH" else (shape[1], shape[0])
        h = shape[2]
        if d is None:
            if h % n:
                raise value_error(op, "head_num", f"a divisor of the hidden size H1 = {h} of query", n)
            d = h // n
        if h % d:
            raise value_error(op, arg, f"a hidden size that is a multiple of D = {d} (H1 / head_num)", f"H = {h}")
        return b, s, h // d, d
    if layout == "BSND":
        return shape[0], shape[1], shape[2], shape[3]
    return shape[0], shape[2], shape[1], shape[3]  # BNSD


def check_fa_score_layout(op: str, layout: str, head_num: Any, q_shape: tuple, k_shape: tuple, v_shape: tuple,
                          mask_shape: tuple | None, pse_shape: tuple | None, seq_given: bool, *,
                          mask_arg: str = "atten_mask", pse_arg: str = "pse") -> FaLayoutPlan:
    """Shape checks of a uniform-layout call and its TND mapping (the TND call's checks follow)."""
    if isinstance(head_num, bool) or not isinstance(head_num, int):
        raise type_error(op, "head_num", "an int", type(head_num).__name__)
    if head_num <= 0:
        raise value_error(op, "head_num", "a positive int", head_num)
    rank = 3 if layout in ("BSH", "SBH") else 4
    form = _FA_SCORE_FORMS[layout]
    for name, shape in (("query", q_shape), ("key", k_shape), ("value", v_shape)):
        check_rank(op, name, TensorMeta(shape, None), rank, f'{form} for input_layout "{layout}"')
    check_same_shape(op, "value", TensorMeta(v_shape, None), "key", TensorMeta(k_shape, None))
    if seq_given:
        raise value_error(op, "actual_seq_qlen", f'None when input_layout is "{layout}" (lengths come from the '
                          "shapes)", "a value")
    b, s1, n1, d = _fa_score_dims(op, layout, "query", q_shape, head_num, None)
    if n1 != head_num:
        raise value_error(op, "head_num", f"the number of query heads N1 = {n1}", head_num)
    bk, s2, n2, dk = _fa_score_dims(op, layout, "key", k_shape, None, d if rank == 3 else None)
    if bk != b:
        raise value_error(op, "key", f"the batch size of query B = {b}", f"B = {bk}")
    return FaLayoutPlan(b, s1, s2, n1, n2, d, dk,
                        fa_score_mask_form(op, layout, mask_shape, b, s1, s2, mask_arg),
                        fa_score_pse_form(op, layout, pse_shape, b, n1, s1, s2, pse_arg),
                        tuple(s1 * (i + 1) for i in range(b)), tuple(s2 * (i + 1) for i in range(b)))


def fa_score_mask_form(op: str, layout: str, shape: tuple | None, b: int, s1: int, s2: int,
                       arg: str = "atten_mask") -> str | None:
    """The mask form of a uniform-layout call (see :class:`FaLayoutPlan`)."""
    if shape is None:
        return None
    if len(shape) == 2:
        return "keep"  # [S1, S2] or compressed: the TND checks apply as they are
    if len(shape) == 4 and shape[1:] == (1, s1, s2) and shape[0] in (1, b):
        return "squeeze" if shape[0] == 1 else "global"
    raise value_error(op, arg, f"[S1, S2] = {quote((s1, s2))}, [1, 1, S1, S2], [B, 1, S1, S2] = "
                      f"{quote((b, 1, s1, s2))} or the compressed 2048x2048 (3072x2048) mask when input_layout "
                      f'is "{layout}" (per-head [B, N1, S1, S2] masks are not supported)', f"shape {quote(shape)}")


def fa_score_pse_form(op: str, layout: str, shape: tuple | None, b: int, n1: int, s1: int, s2: int,
                      arg: str = "pse") -> str | None:
    """The pse form of a uniform-layout call (see :class:`FaLayoutPlan`)."""
    if shape is None:
        return None
    if len(shape) == 4 and shape[1] == n1 and shape[3] == s2:
        if shape[0] == b and shape[2] in (s1, 1):
            return "flat"  # the TND packed full form / row form
        if shape[0] == 1 and shape[2] == s1:
            return "broadcast"
        if shape[0] in (1, b) and shape[2] == FA_ALIBI_ROWS and s1 > FA_ALIBI_ROWS:
            return "keep"
    raise value_error(op, arg, f"[B, N1, S1, S2] = {quote((b, n1, s1, s2))}, [1, N1, S1, S2], "
                      f"[B, N1, 1, S2] or [B|1, N1, 1024, S2] (S1 > 1024) when input_layout is \"{layout}\"",
                      f"shape {quote(shape)}")


def fa_score_tnd_values(plan: FaLayoutPlan, query: TensorMeta, key: TensorMeta, value: TensorMeta,
                        pse: TensorMeta | None, drop_mask: TensorMeta | None,
                        atten_mask: TensorMeta | None) -> dict:
    """Validation values of the TND call a uniform-layout call becomes (metas and lengths, nothing
    converted), for ``check_flash_attention``."""
    from math import prod

    def reshaped(meta, shape):
        return None if meta is None else TensorMeta(shape, meta.dtype)

    t1, t2 = plan.batch * plan.s1, plan.batch * plan.s2
    mask_shape = {"keep": atten_mask and atten_mask.shape, "squeeze": (plan.s1, plan.s2),
                  "global": (t1, t2)}.get(plan.mask_form)
    pse_shape = None if pse is None else (pse.shape if plan.pse_form == "keep" else
                                          (plan.batch * prod(pse.shape[1:]),))
    return {"query": reshaped(query, (t1, plan.n1, plan.d)),
            "key": reshaped(key, (t2, plan.n2, plan.dk)),
            "value": reshaped(value, (t2, plan.n2, plan.dk)),
            "pse": reshaped(pse, pse_shape),
            "drop_mask": reshaped(drop_mask, None if drop_mask is None else (prod(drop_mask.shape),)),
            "atten_mask": reshaped(atten_mask, mask_shape),
            "actual_seq_qlen": list(plan.seq_q), "actual_seq_kvlen": list(plan.seq_kv)}
