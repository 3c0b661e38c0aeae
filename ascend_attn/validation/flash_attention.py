"""FlashAttention V4 (``flash_attention_varlen_score`` / ``flash_attention_unpadding_score_grad``):
forward and backward checks and the :class:`FlashPlan` they return."""
from __future__ import annotations

from dataclasses import dataclass

from .common import (FA_COMPRESSED, FLOAT_DTYPES, TensorMeta, check_choice, check_dtype, check_rank,
                     check_same_device, check_same_dtype, check_same_shape, int_list, lengths_known, quote,
                     type_error, value_error)


FA_FWD_OP = "flash_attention_varlen_score"
FA_GRAD_OP = "flash_attention_unpadding_score_grad"
FA_SOFTMAX_LAYOUTS = ("", "same_as_input")
FA_MAX_HEADS = 256
FA_MAX_HEAD_DIM = 768
FA_MAX_BATCH = 2048
FA_MAX_BATCH_PREFIX = 1024
FA_MAX_TOKENS = 1 << 20
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


@dataclass(frozen=True, kw_only=True)
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
    return FlashPlan(
        seq_q=seq_q, seq_kv=seq_kv, heads_q=n1, heads_kv=n2, head_dim=d, sparse_mode=sparse_mode,
        pre_tokens=int(pre_tokens), next_tokens=int(next_tokens), mask_form=mask_form,
        pse_form=pse_form, pse_type=pse_type, q_start=q_start, kv_start=kv_start,
        scale=float(scale_value), keep_prob=float(keep_prob), dropout=drop_mask is not None,
        prefix=tuple(prefix_list) if prefix_list is not None else None,
        softmax_layout="TND" if softmax_layout == "same_as_input" else "NTD")


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
