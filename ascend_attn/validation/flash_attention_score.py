"""MindSpore's ``flash_attention_score`` layouts over the TND V4 op: their shape rules."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .common import TensorMeta, check_choice, check_rank, check_same_shape, quote, type_error, value_error
from .flash_attention import FA_ALIBI_ROWS


# MindSpore's ``flash_attention_score`` over the TND V4 op: "BSH", "SBH", "BSND" and "BNSD" calls (uniform
# S1 / S2 per batch) map onto one TND call. The shape rules of that mapping, framework-neutral (shapes as
# tuples, TensorMetas); the data movement is ``mindspore/flash_attention_score.py``. Argument names in
# messages are the caller's (``mask_arg`` / ``pse_arg``).

FA_SCORE_UNIFORM_LAYOUTS = ("BSH", "SBH", "BSND", "BNSD")
FA_SCORE_LAYOUTS = ("TND",) + FA_SCORE_UNIFORM_LAYOUTS
FA_SCORE_UNIFORM_SPARSE_MODES = (0, 1, 2, 3, 4, 6)
_FA_SCORE_FORMS = {"BSH": "[B, S, H]", "SBH": "[S, B, H]", "BSND": "[B, S, N, D]", "BNSD": "[B, N, S, D]"}


@dataclass(frozen=True, kw_only=True)
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
    return FaLayoutPlan(
        batch=b, s1=s1, s2=s2, n1=n1, n2=n2, d=d, dk=dk,
        mask_form=fa_score_mask_form(op, layout, mask_shape, b, s1, s2, mask_arg),
        pse_form=fa_score_pse_form(op, layout, pse_shape, b, n1, s1, s2, pse_arg),
        seq_q=tuple(s1 * (i + 1) for i in range(b)), seq_kv=tuple(s2 * (i + 1) for i in range(b)))


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
