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
