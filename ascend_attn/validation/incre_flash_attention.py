"""IncreFlashAttention (``incre_flash_attention``): checks and the :class:`IncrePlan`."""
from __future__ import annotations

from dataclasses import dataclass

from .common import (FLOAT_DTYPES, TensorMeta, check_choice, check_dtype, check_rank, check_same_device,
                     check_same_dtype, check_same_shape, lengths_known, quote, type_error, value_error)


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


@dataclass(frozen=True, kw_only=True)
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
    _check_attributes(op, input_layout, inner_precise, num_heads, num_key_value_heads, block_size)
    keys, values, is_list = _kv_lists(op, key, value)
    check_same_device(op, "query", query, key=keys, value=values, atten_mask=atten_mask, pse_shift=pse_shift,
                      dequant_scale1=dequant_scale1, quant_scale1=quant_scale1, dequant_scale2=dequant_scale2,
                      quant_scale2=quant_scale2, quant_offset2=quant_offset2, antiquant_scale=antiquant_scale,
                      antiquant_offset=antiquant_offset, block_table=block_table, kv_padding_size=kv_padding_size)
    _check_qkv_dtypes(op, query, keys, values, is_list)
    kv_dtype = keys[0].dtype
    given = {n: m for n, m in zip(QUANT_SCENARIO_ARGS, (dequant_scale1, quant_scale1, dequant_scale2,
                                                         quant_scale2, quant_offset2)) if m is not None}
    scenario = _quant_scenario(op, query.dtype, kv_dtype, given)
    _check_antiquant_dtypes(op, query.dtype, kv_dtype, antiquant_scale, antiquant_offset)
    _check_side_dtypes(op, query.dtype, pse_shift, atten_mask, mask_arg, block_table, kv_padding_size)

    if query.shape is None or any(k.shape is None for k in keys + values):
        return None

    batch, heads_q, heads_kv, dim = _layout_heads(op, query, input_layout, num_heads, num_key_value_heads)
    # None: absent; ...: present, values unknown (torch.compile's fake kernel: the real kernel checks them)
    seq_lens = actual_seq_lengths if actual_seq_lengths is None or actual_seq_lengths is Ellipsis \
        else list(actual_seq_lengths)
    if block_table is not None:
        kv_form = "paged"
        paged_layout, caps = _paged_kv(op, keys, values, block_table, kv_padding_size, seq_lens, is_list,
                                       input_layout, batch, heads_kv, dim, block_size, kv_dtype)
    else:
        kv_form, paged_layout = ("list" if is_list else "tensor"), None
        caps = _tensor_kv(op, keys, values, is_list, input_layout, batch, heads_kv, dim, block_size)
    lens = _valid_lengths(op, seq_lens, batch, caps)
    _check_kv_padding(op, kv_padding_size, is_list)
    antiquant = _antiquant_form(op, antiquant_scale, input_layout, heads_kv, dim)
    quant_channel = _quant_channel(op, given, heads_q, dim)
    # left padding: re-checked once the size is read; lengths not known: checked by the real kernel
    needed = max(caps) if kv_form == "paged" else None if lens is None else max(lens)
    mask_heads = _mask_heads(op, atten_mask, mask_arg, batch, heads_q, needed)
    _check_pse_shape(op, pse_shift, batch, heads_q, dim, needed)
    return IncrePlan(
        layout=input_layout, batch=batch, heads_q=heads_q, heads_kv=heads_kv, head_dim=dim,
        starts=None if lens is None else tuple(0 for _ in lens), ends=None if lens is None else tuple(lens),
        caps=tuple(caps),
        # Right padding; left padding (its value is device data) is applied by ifa_left_padding.
        left_padding=kv_padding_size is not None and seq_lens is not None,
        kv_form=kv_form, paged_layout=paged_layout, block_size=block_size, scenario=scenario, antiquant=antiquant,
        has_mask=atten_mask is not None, mask_heads=mask_heads, has_pse=pse_shift is not None,
        quant_channel=quant_channel, scale=float(scale_value),
        out_dtype={"A": "int8", "B": "float16", "C": "int8", "float": query.dtype}[scenario])


# ----------------------------------------------------------------------------- attributes and dtypes

def _check_attributes(op, input_layout, inner_precise, num_heads, num_key_value_heads, block_size):
    check_choice(op, "input_layout", input_layout, IFA_LAYOUTS)
    if inner_precise not in (0, 1):
        raise value_error(op, "inner_precise", "0 or 1", inner_precise)
    for name, v in (("num_heads", num_heads), ("num_key_value_heads", num_key_value_heads), ("block_size", block_size)):
        if isinstance(v, bool) or not isinstance(v, int):
            raise type_error(op, name, "an int", type(v).__name__)


def _kv_lists(op, key, value):
    """(keys, values, is_list): key / value as lists of TensorMetas; ``is_list``: the tensor-list form."""
    seq_form = lambda x: isinstance(x, (list, tuple)) and not isinstance(x, TensorMeta)
    keys = list(key) if seq_form(key) else [key]
    values = list(value) if seq_form(value) else [value]
    if not keys:
        raise value_error(op, "key", "a tensor or a non-empty list of tensors", "an empty list")
    if seq_form(key) != seq_form(value) or len(keys) != len(values):
        raise value_error(op, "value", "the same form as key (a tensor, or a list of as many tensors)",
                          f"{len(values)} tensor(s) for {len(keys)} key tensor(s)")
    return keys, values, seq_form(key) and len(keys) > 1


def _check_qkv_dtypes(op, query, keys, values, is_list):
    check_dtype(op, "query", query, IFA_QUERY_DTYPES)
    for i, (k, v) in enumerate(zip(keys, values)):
        suffix = f"[{i}]" if is_list else ""
        check_dtype(op, "key" + suffix, k, IFA_QUERY_DTYPES)
        check_same_dtype(op, "key" + suffix, k, "key", keys[0])
        check_same_dtype(op, "value" + suffix, v, "key", keys[0])


def _quant_scenario(op, q_dtype, kv_dtype, given) -> str:
    """The quantization scenario (§7.5, §10) of the dtypes and the quant tensors ``given`` (name -> meta)."""
    if q_dtype == "int8":
        if kv_dtype != "int8":
            raise type_error(op, "key", "int8 key/value when query is int8", kv_dtype)
        scenario = "A" if "quant_scale2" in given else "B"
    else:
        if kv_dtype is not None and q_dtype is not None and kv_dtype != "int8" and kv_dtype != q_dtype:
            raise type_error(op, "key", f"the query dtype ({q_dtype}) or int8 (with antiquant_scale)", kv_dtype)
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
    if "quant_offset2" in given and "quant_scale2" not in given:
        raise value_error(op, "quant_offset2", "None unless quant_scale2 is given", "a tensor")
    for name in ("dequant_scale1", "dequant_scale2"):
        if name in given:
            check_dtype(op, name, given[name], IFA_DEQUANT_DTYPES)
    scale_dtypes = ("float32", "bfloat16") if q_dtype == "bfloat16" else ("float32",)
    for name in ("quant_scale1", "quant_scale2", "quant_offset2"):
        if name in given:
            check_dtype(op, name, given[name], scale_dtypes)
    if "quant_offset2" in given:
        check_same_dtype(op, "quant_offset2", given["quant_offset2"], "quant_scale2", given["quant_scale2"])
        check_same_shape(op, "quant_offset2", given["quant_offset2"], "quant_scale2", given["quant_scale2"])
    return scenario


def _check_antiquant_dtypes(op, q_dtype, kv_dtype, antiquant_scale, antiquant_offset):
    q_int8, kv_int8 = q_dtype == "int8", kv_dtype == "int8"
    if kv_int8 and not q_int8 and antiquant_scale is None:
        raise value_error(op, "antiquant_scale", "a tensor when key/value are int8 and query is float", "None")
    if antiquant_scale is None and antiquant_offset is not None:
        raise value_error(op, "antiquant_offset", "None unless antiquant_scale is given", "a tensor")
    if antiquant_scale is not None:
        if not kv_int8 or q_int8:
            raise value_error(op, "antiquant_scale", "a tensor only with a float query and int8 key/value",
                              f"query {q_dtype}, key {kv_dtype}")
        check_dtype(op, "antiquant_scale", antiquant_scale, (q_dtype, "float32") if q_dtype else FLOAT_DTYPES)
        if antiquant_offset is not None:
            check_same_dtype(op, "antiquant_offset", antiquant_offset, "antiquant_scale", antiquant_scale)
            check_same_shape(op, "antiquant_offset", antiquant_offset, "antiquant_scale", antiquant_scale)


def _check_side_dtypes(op, q_dtype, pse_shift, atten_mask, mask_arg, block_table, kv_padding_size):
    if pse_shift is not None:
        check_dtype(op, "pse_shift", pse_shift,
                    ("float16",) if q_dtype == "int8" else (q_dtype,) if q_dtype else FLOAT_DTYPES)
    if atten_mask is not None:
        check_dtype(op, mask_arg, atten_mask, IFA_MASK_DTYPES)
    if block_table is not None:
        check_dtype(op, "block_table", block_table, ("int32",))
    if kv_padding_size is not None:
        check_dtype(op, "kv_padding_size", kv_padding_size, ("int64",))


# ----------------------------------------------------------------------------- shapes (§7.1)

def _layout_heads(op, query, input_layout, num_heads, num_key_value_heads):
    """(batch, heads_q, heads_kv, head_dim) of the query in ``input_layout`` and the head attributes."""
    form = {"BSH": "(B, 1, Nq*D)", "BSND": "(B, 1, Nq, D)", "BNSD": "(B, Nq, 1, D)"}[input_layout]
    check_rank(op, "query", query, _rank(input_layout), form + f' for input_layout "{input_layout}"')
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
    return batch, heads_q, heads_kv, dim


def _rank(layout) -> int:
    return 3 if layout == "BSH" else 4


def _paged_kv(op, keys, values, block_table, kv_padding_size, seq_lens, is_list, input_layout, batch, heads_kv,
              dim, block_size, kv_dtype):
    """(paged_layout, caps) of a paged cache: "BSH" (num_blocks, block_size, Nkv*D) or "BNSD"."""
    cache = keys[0].shape
    if is_list:
        raise value_error(op, "key", "a single cache tensor with block_table (paged KV)", f"a list of {len(keys)}")
    if kv_padding_size is not None:
        raise value_error(op, "kv_padding_size", "None with block_table (left padding of a paged cache)", "a tensor")
    check_same_shape(op, "value", values[0], "key", keys[0])
    bt = block_table.shape
    if len(bt) != 2 or bt[0] != batch:
        raise value_error(op, "block_table", f"a 2-D (B, max_blocks) table with B = {batch}", f"shape {quote(bt)}")
    align = 32 if kv_dtype == "int8" else 16
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
    return paged_layout, [bt[1] * block_size] * batch


def _tensor_kv(op, keys, values, is_list, input_layout, batch, heads_kv, dim, block_size):
    """Cache length S_b of each batch of a contiguous K/V tensor or a tensor list (one per batch)."""
    if block_size:
        raise value_error(op, "block_size", "0 without block_table", block_size)
    if is_list and len(keys) != batch:
        raise value_error(op, "key", f"a list of B = {batch} tensors", f"{len(keys)} tensors")
    if len(keys) > IFA_MAX_LIST and is_list:
        raise value_error(op, "key", f"at most {IFA_MAX_LIST} tensors", len(keys))
    caps = []
    for i, (k, v) in enumerate(zip(keys, values)):
        name = f"key[{i}]" if is_list else "key"
        check_rank(op, name, k, _rank(input_layout), f"for input_layout \"{input_layout}\"")
        check_same_shape(op, name.replace("key", "value"), v, name, k)
        kb, ks, kn, kd = _ifa_kv_split(input_layout, k.shape)
        want_b = 1 if is_list else batch
        if kb != want_b:
            raise value_error(op, name, f"batch {want_b}", f"shape {quote(k.shape)}")
        if (kn, kd) != ((None, heads_kv * dim) if input_layout == "BSH" else (heads_kv, dim)):
            raise value_error(op, name, f"{heads_kv} key/value heads of dim {dim}", f"shape {quote(k.shape)}")
        if ks > IFA_MAX_KV:
            raise value_error(op, name, f"S <= {IFA_MAX_KV}", f"S = {ks}")
        if is_list and i and (k.shape[:1] + _drop_seq(input_layout, k.shape)) != \
                (keys[0].shape[:1] + _drop_seq(input_layout, keys[0].shape)):
            raise value_error(op, name, "the shape of key[0] except S", f"shape {quote(k.shape)}")
        caps.append(ks)
    return caps if is_list else caps * batch


# ----------------------------------------------------------------------------- lengths (§7.2)

def _valid_lengths(op, seq_lens, batch, caps):
    """Valid KV length of each batch (``caps`` when absent), None when the values are not known."""
    if seq_lens is not None and seq_lens is not Ellipsis and len(seq_lens) not in (1,) and len(seq_lens) < batch:
        raise value_error(op, "actual_seq_lengths", f"1 or at least B = {batch} values", f"{len(seq_lens)} values")
    if not lengths_known(seq_lens):
        return None
    if seq_lens is None:
        return caps
    seq_lens = (seq_lens * batch if len(seq_lens) == 1 else seq_lens[:batch])
    for b, (length, cap) in enumerate(zip(seq_lens, caps)):
        if not 0 <= length <= cap:
            raise value_error(op, "actual_seq_lengths", f"values in [0, {cap}] (batch {b})", length)
    return seq_lens


def _check_kv_padding(op, kv_padding_size, is_list):
    if kv_padding_size is None:
        return
    if kv_padding_size.shape is not None and _numel(kv_padding_size.shape) != 1:
        raise value_error(op, "kv_padding_size", "one element", f"shape {quote(kv_padding_size.shape)}")
    if is_list:
        raise value_error(op, "kv_padding_size", "None with a tensor list (left padding of per-batch tensors)",
                          "a tensor")


# ----------------------------------------------------------------------------- quant parameter shapes (§7.4, §7.6)

def _antiquant_form(op, antiquant_scale, input_layout, heads_kv, dim):
    """None, "tensor" or "channel"."""
    if antiquant_scale is None:
        return None
    per_channel = {"BNSD": (2, heads_kv, 1, dim), "BSH": (2, heads_kv * dim), "BSND": (2, heads_kv, dim)}[input_layout]
    if antiquant_scale.shape == (2,):
        return "tensor"
    if antiquant_scale.shape == per_channel:
        return "channel"
    raise value_error(op, "antiquant_scale", f"shape (2,) (per-tensor) or {quote(per_channel)} (per-channel, "
                      f"{input_layout})", f"shape {quote(antiquant_scale.shape)}")


def _quant_channel(op, given, heads_q, dim) -> bool:
    """Whether quant_scale2 is per channel; the per-tensor parameters hold one element."""
    for name in ("dequant_scale1", "quant_scale1", "dequant_scale2"):
        if name in given and _numel(given[name].shape) != 1:
            raise value_error(op, name, "one element (per-tensor)", f"shape {quote(given[name].shape)}")
    quant_scale2 = given.get("quant_scale2")
    if quant_scale2 is None:
        return False
    n = _numel(quant_scale2.shape)
    ok = {(heads_q * dim,), (1, heads_q * dim), (1, 1, heads_q * dim), (heads_q, dim), (heads_q, 1, dim),
          (1, heads_q, dim), (1, heads_q, 1, dim), (1, 1, heads_q, dim)}
    if n != 1 and quant_scale2.shape not in ok:
        raise value_error(op, "quant_scale2", f"one element or Nq*D = {heads_q * dim} values (per channel, e.g. "
                          f"[{heads_q * dim}] or [{heads_q}, {dim}])", f"shape {quote(quant_scale2.shape)}")
    return n != 1


# ----------------------------------------------------------------------------- mask and pse_shift shapes (§7.2)

def _mask_heads(op, atten_mask, mask_arg, batch, heads_q, needed) -> bool:
    """Whether the mask has a per-head row; ``needed``: the KV length its last dim must cover (None: unknown)."""
    if atten_mask is None:
        return False
    ms = atten_mask.shape
    mask_heads = False
    if len(ms) in (2, 3, 4) and ms[0] == batch and all(x == 1 for x in ms[1:-1]):
        pass
    elif len(ms) == 4 and ms[0] in (1, batch) and ms[1] == heads_q and ms[2] == 1:
        mask_heads = True
    else:
        raise value_error(op, mask_arg, f"shape (B, S), (B, 1, S), (B, 1, 1, S), (B, Nq, 1, S) or (1, Nq, 1, S) "
                          f"with B = {batch}, Nq = {heads_q}", f"shape {quote(ms)}")
    if needed is not None and ms[-1] < needed:
        raise value_error(op, mask_arg, f"a last dimension >= the KV length {needed}", ms[-1])
    return mask_heads


def _check_pse_shape(op, pse_shift, batch, heads_q, dim, needed):
    if pse_shift is None:
        return
    ps = pse_shift.shape
    if len(ps) != 4 or ps[0] not in (1, batch) or ps[1] != heads_q or ps[2] != 1:
        raise value_error(op, "pse_shift", f"shape (B|1, Nq, 1, S) with B = {batch}, Nq = {heads_q}",
                          f"shape {quote(ps)}")
    if needed is not None and ps[3] < needed:
        raise value_error(op, "pse_shift", f"a last dimension >= the KV length {needed}", ps[3])
    if dim % 16:
        raise value_error(op, "pse_shift", "D % 16 == 0", f"D = {dim}")


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
