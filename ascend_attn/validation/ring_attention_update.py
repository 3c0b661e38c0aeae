"""RingAttentionUpdate (``ring_attention_update``): merging two partial attention results."""
from __future__ import annotations

from dataclasses import dataclass

from .common import (FLOAT_DTYPES, TensorMeta, check_choice, check_dtype, check_rank, check_same_device,
                     check_same_dtype, check_same_shape, lengths_known, quote, value_error)


RAU_OP = "ring_attention_update"
RAU_LAYOUTS = ("SBH", "TND")
RAU_SOFTMAX_LAYOUTS = ("", "SBH", "TND")
RAU_STAT_NAMES = ("prev_softmax_max", "prev_softmax_sum", "cur_softmax_max", "cur_softmax_sum")
RAU_MAX_HEADS = 256
RAU_MAX_HEAD_DIM = 768
RAU_HEAD_DIM_ALIGN = 64
# MindSpore's ring_attention_update (V1) document: the TND rows must fit the 192 KiB UB.
MS_RAU_UB_BYTES = 192 * 1024


@dataclass(frozen=True, kw_only=True)
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
        return RingUpdatePlan(
            layout="TND", stats_layout=stats_layout, num_heads=n, head_dim=d, seq_offsets=offsets)

    s, b, h = shape
    if (sshape[0], sshape[2]) != (b, s):
        raise value_error(op, "prev_softmax_max", f"shape [B, N, S, 8] with B = {b}, S = {s} from prev_attn_out",
                          f"shape {quote(sshape)}")
    n = sshape[1]
    if n == 0 or h % n:
        raise value_error(op, "prev_attn_out", f"H divisible by N = {n} (N from prev_softmax_max)", f"H = {h}")
    return RingUpdatePlan(layout="SBH", stats_layout="BNS", num_heads=n, head_dim=h // n, seq_offsets=None)


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
