"""MindSpore ATB SelfAttention: the ``SelfAttention`` primitive and the functional ``self_attention``.

* :class:`SelfAttention`: primitive-like Cell; ATB's parameters (``infer::SelfAttentionParam`` in snake_case,
  enums as ints or ATB names) in the constructor, ATB's tensors as call inputs, in ATB's order (``query``,
  ``key``, ``value``, ``cache_k``, ``cache_v``, ``attention_mask``, ``token_offset``, ``seq_len``, ``layer_id``,
  ``batch_run_status``, ``slopes``, ``qk_descale``, ``qk_offset``, ``vpv_descale``, ``vpv_offset``,
  ``p_scale``, ``log_n``). Host lists (``token_offset``, ``seq_len``, ``layer_id``, ``batch_run_status``):
  lists, tuples, ints or 1-D integer tensors.
* :func:`self_attention`: the same as one function, keyword attributes.

Outputs: MindSpore's pyfunc kernels cannot write their inputs, so the KV cache update is functional here:
where the torch op writes ``cache_k`` / ``cache_v`` in place (``kv_cache_cfg`` K_CACHE_V_CACHE with a
KV-cache ``calc_type``), the primitive returns ``(attention_out, cache_k, cache_v)`` with the updated
caches (the inputs are left as they are); otherwise (PA_ENCODER, kv-bypass) it returns ``attention_out``.

Backend: an ``ops.Custom`` pyfunc around the torch core ``kernels/self_attention.py`` (through ``_bridge``),
PyNative and GRAPH_MODE, on every device target (on Ascend, SelfAttention is ATB's, not the ascend_attn
kernel package's). Validation is ``validation_self_attention``'s, at three points: ``__call__`` (from
Python: everything, including host list values and the mask values the kernel checks), the infer functions
(GRAPH_MODE compile: shapes and dtypes, with plausible stand-ins for the host values) and the pyfunc (run
time: everything again; MindSpore swallows pyfunc errors in PyNative, hence the ``__call__`` check).

bfloat16 crosses the pyfunc as float32 (exact) and is turned back into bfloat16 inside it and after it, so
the results are the torch op's bits. A kv tensor list (one cache per batch) is concatenated along its
sequence axis in ``construct`` and split again in the pyfunc (its lengths are part of the Custom op's key).
"""
from __future__ import annotations

import functools
from dataclasses import asdict, dataclass

import numpy as np

import mindspore as ms
from mindspore import nn, ops

from .. import backends
from .. import validation as V
from .. import validation_self_attention as SV
from ._bridge import (bf16_names, bind_inputs, custom_inputs, int64_tensor, is_bf16, present_names, to_numpy,
                      to_torch)

OP = SV.OP
INPUTS = ("query", "key", "value", "cache_k", "cache_v", "attention_mask", "token_offset", "seq_len", "layer_id",
          "batch_run_status", "slopes", "qk_descale", "qk_offset", "vpv_descale", "vpv_offset", "p_scale", "log_n")
HOST = ("token_offset", "seq_len", "layer_id", "batch_run_status")
CASTABLE = ("query", "key", "value", "cache_k", "cache_v", "attention_mask", "slopes")
ENUMS = ("calc_type", "kernel_type", "clamp_type", "mask_type", "kv_cache_cfg", "scale_type", "quant_type",
         "out_data_type", "input_layout")


@dataclass(frozen=True)
class SAAttrs:
    """The constructor attributes (enums as ATB's ints)."""

    head_num: int = 1
    kv_head_num: int = 0
    qk_scale: float = 1.0
    q_scale: float = 1.0
    calc_type: int = 0
    kernel_type: int = 0
    clamp_type: int = 0
    clamp_min: float = 0.0
    clamp_max: float = 0.0
    mask_type: int = 0
    kv_cache_cfg: int = 0
    scale_type: int = 0
    quant_type: int = 0
    out_data_type: int = -1
    input_layout: int = 0
    batch_run_status_enable: bool = False

    @property
    def writes_cache(self) -> bool:
        return self.kv_cache_cfg == SV.K_CACHE_V_CACHE and self.calc_type != SV.PA_ENCODER


def make_attrs(**given) -> SAAttrs:
    """Attributes with ATB names turned into ints and the scalar types checked."""
    for name in ("qk_scale", "q_scale", "clamp_min", "clamp_max"):
        SV.check_float(OP, name, given[name])
        given[name] = float(given[name])
    for name in ENUMS:
        given[name] = SV.enum_value(name, given[name])
    attrs = SAAttrs(**given)
    SV.check_attributes(**asdict(attrs), op=OP)
    return attrs


def check_inputs(attrs: SAAttrs, values: dict):
    """Full check; ``values``: input name -> TensorMeta (list of them for a kv tensor list) / host list /
    ``...`` (unknown host values) / None. Returns the plan (None when shapes or host values are unknown)."""
    named = {n: values.get(n) for n in INPUTS[6:]}
    return SV.check_self_attention(values["query"], values.get("key"), values.get("value"), values.get("cache_k"),
                                   values.get("cache_v"), values.get("attention_mask"), **named, **asdict(attrs),
                                   op=OP)


# ----------------------------------------------------------------------------- the Custom op

@dataclass(frozen=True)
class OpKey:
    """What a Custom op is specialised on: the given optional inputs, those that were bf16, and the per-batch
    cache lengths of a concatenated kv tensor list (None for one cache tensor)."""

    present: tuple[str, ...]
    bf16: tuple[str, ...]
    cache_splits: tuple[int, ...] | None


def _split(meta: V.TensorMeta, splits):
    """Per-batch metas of a concatenated kv tensor list (sequence axis -2)."""
    if splits is None or meta is None:
        return meta
    if meta.shape is None:
        return [V.TensorMeta(None, meta.dtype) for _ in splits]
    return [V.TensorMeta(meta.shape[:-2] + (s,) + meta.shape[-1:], meta.dtype) for s in splits]


def _run_kernel(attrs: SAAttrs, key: OpKey, arrays: tuple):
    """pyfunc body: numpy arrays -> torch (bf16 restored, tensor list split, caches copied) -> check -> core."""
    import torch
    from ..kernels import self_attention as kernel

    tensors, host = {}, {}
    for name, array in zip(INPUTS, arrays):
        if name not in key.present:
            tensors[name] = None
        elif name in HOST:
            host[name] = [int(x) for x in np.asarray(array).reshape(-1)]
        else:
            t = to_torch(array)
            tensors[name] = t.to(torch.bfloat16) if name in key.bf16 else t
    caches = {}
    for name in ("cache_k", "cache_v"):
        t = tensors.pop(name)
        if t is None:
            caches[name] = []
        elif key.cache_splits:
            caches[name] = list(torch.split(t, list(key.cache_splits), dim=-2))
        else:
            caches[name] = [t.clone()]  # written by the kernel: never MindSpore's input buffer
    values = {n: V.meta_of(t) for n, t in tensors.items()}
    values.update({n: [V.meta_of(t) for t in c] if key.cache_splits else (V.meta_of(c[0]) if c else None)
                   for n, c in caches.items()})
    values.update(host)
    plan = check_inputs(attrs, values)
    out = kernel.self_attention(plan, tensors["query"], tensors["key"], tensors["value"], caches["cache_k"],
                                caches["cache_v"], **{n: tensors[n] for n in ("attention_mask", "slopes", "log_n",
                                                                              "qk_descale", "vpv_descale",
                                                                              "p_scale")})
    outs = [out] + ([caches["cache_k"][0], caches["cache_v"][0]] if attrs.writes_cache else [])
    result = tuple(to_numpy(o.float() if o.dtype == torch.bfloat16 else o) for o in outs)
    return result if attrs.writes_cache else result[0]


def _stand_ins(attrs: SAAttrs, host_shapes: dict) -> dict:
    """Plausible host values for the compile-time check (their real values are checked at run time):
    batch from the shape of ``seq_len``, one query row per batch (DECODER) or none, KV length 1."""
    batch = host_shapes["seq_len"][0] if host_shapes.get("seq_len") else 1
    out = {"seq_len": [1 if attrs.calc_type == SV.DECODER else 0] * batch}
    if "token_offset" in host_shapes:
        out["token_offset"] = [1] * batch
    if "layer_id" in host_shapes:
        out["layer_id"] = [0]
    if "batch_run_status" in host_shapes:
        out["batch_run_status"] = [1] * batch
    return out


class _Infer:
    """infer_shape / infer_dtype of one Custom op (shapes arrive first, then dtypes: the check runs in the
    dtype pass on both)."""

    def __init__(self, attrs: SAAttrs, key: OpKey):
        self.attrs, self.key, self.shapes = attrs, key, None

    def _values(self, shapes, dtypes) -> dict:
        values, host_shapes = {}, {}
        for i, name in enumerate(INPUTS):
            if name not in self.key.present:
                continue
            shape = None if shapes is None else tuple(int(d) for d in shapes[i])
            if shape is not None and any(d < 0 for d in shape):
                shape = None  # dynamic dims: unknown
            if name in HOST:
                V.check_int_sequence_meta(OP, name, V.TensorMeta(shape, V.dtype_name(dtypes[i])))
                host_shapes[name] = shape
                continue
            dtype = "bfloat16" if name in self.key.bf16 else V.dtype_name(dtypes[i])
            values[name] = V.TensorMeta(shape, dtype)
        for name in ("cache_k", "cache_v"):
            values[name] = _split(values.get(name), self.key.cache_splits)
        if shapes is None or any(s is None for s in host_shapes.values()):
            values.update({n: ... for n in host_shapes})
            values["seq_len"] = ...
        else:
            values.update(_stand_ins(self.attrs, host_shapes))
        return values

    def _outputs(self, query, cache):
        return [query, cache, cache] if self.attrs.writes_cache else query

    def shape(self, *shapes):
        self.shapes = shapes
        return self._outputs(list(shapes[0]), list(shapes[INPUTS.index("cache_k")]))

    def dtype(self, *dtypes):
        shapes, self.shapes = self.shapes, None
        values = self._values(shapes, dtypes)
        plan = check_inputs(self.attrs, values)
        out = plan.out_dtype if plan is not None else (
            {SV.ACL_FLOAT16: "float16", SV.ACL_BF16: "bfloat16"}.get(self.attrs.out_data_type)
            or values["query"].dtype)
        as_ms = lambda name: ms.float32 if name == "bfloat16" else getattr(ms, name)  # noqa: E731
        cache = values.get("cache_k")
        return self._outputs(as_ms(out), None if not isinstance(cache, V.TensorMeta) else as_ms(cache.dtype))


@functools.lru_cache(maxsize=None)
def custom_op(attr_values: tuple, present: tuple, bf16: tuple, cache_splits) -> ops.Custom:
    """The Custom op for these attributes and this combination of inputs (cached; plain tuples, so a graph
    can evaluate this at compile time)."""
    attrs, key = SAAttrs(*attr_values), OpKey(tuple(present), tuple(bf16), cache_splits)
    infer = _Infer(attrs, key)

    def sa_kernel(query, key_, value, cache_k, cache_v, attention_mask, token_offset, seq_len, layer_id,
                  batch_run_status, slopes, qk_descale, qk_offset, vpv_descale, vpv_offset, p_scale, log_n):
        return _run_kernel(attrs, key, (query, key_, value, cache_k, cache_v, attention_mask, token_offset, seq_len,
                                        layer_id, batch_run_status, slopes, qk_descale, qk_offset, vpv_descale,
                                        vpv_offset, p_scale, log_n))

    return ops.Custom(func=sa_kernel, out_shape=infer.shape, out_dtype=infer.dtype, func_type="pyfunc")


# ----------------------------------------------------------------------------- construct helpers

def _is_list(x):
    return isinstance(x, (list, tuple))


@functools.lru_cache(maxsize=None)
def _cache_splits(key_shapes: tuple, value_shapes: tuple):
    """Per-batch lengths of a kv tensor list, after the checks its concatenation needs (validation's messages)."""
    if len(key_shapes) != len(value_shapes):
        raise V.value_error(OP, "cache_v", "the same form as cache_k (a tensor, or a list of as many tensors)",
                            f"{len(value_shapes)} tensor(s) for {len(key_shapes)}")
    for i, (k, v) in enumerate(zip(key_shapes, value_shapes)):
        V.check_same_shape(OP, f"cache_v[{i}]", V.TensorMeta(tuple(v), None), f"cache_k[{i}]",
                           V.TensorMeta(tuple(k), None))
        if len(k) < 2 or tuple(k[:-2]) + tuple(k[-1:]) != tuple(key_shapes[0][:-2]) + tuple(key_shapes[0][-1:]):
            raise V.value_error(OP, f"cache_k[{i}]", "the shape of cache_k[0] except the sequence axis",
                                f"shape {V.quote(tuple(k))}")
    return tuple(int(k[-2]) for k in key_shapes)


def _host_mask(x):
    """The mask's values as a CPU torch tensor of its dtype (bf16 through float32, exact), for ``__call__``."""
    import torch
    if x is None or not hasattr(x, "asnumpy"):
        return x
    return to_torch(x.astype(ms.float32).asnumpy()).to(getattr(torch, V.dtype_name(x.dtype)))


def _host_list(name, x):
    if isinstance(x, int) and not isinstance(x, bool):
        x = [x]
    return V.int_list(OP, name, x)


# ----------------------------------------------------------------------------- the primitive

class SelfAttention(nn.Cell):
    r"""ATB SelfAttention (``atb::infer::SelfAttentionParam``) as a MindSpore primitive.

    ``SelfAttention(head_num, kv_head_num=0, qk_scale=1.0, q_scale=1.0, calc_type=0, kernel_type=0,
    clamp_type=0, clamp_min=0.0, clamp_max=0.0, mask_type=0, kv_cache_cfg=0, scale_type=0, quant_type=0,
    out_data_type=-1, input_layout=0, batch_run_status_enable=False)(query, key=None, value=None,
    cache_k=None, cache_v=None, attention_mask=None, token_offset=None, seq_len=None, layer_id=None,
    batch_run_status=None, slopes=None, qk_descale=None, qk_offset=None, vpv_descale=None, vpv_offset=None,
    p_scale=None, log_n=None)``.

    Shapes, features and formulas as ``ascend_attn.self_attention`` (README "ATB SelfAttention"). Returns
    ``attention_out``, or ``(attention_out, cache_k, cache_v)`` with the updated caches when the op writes
    the KV cache (K_CACHE_V_CACHE with calc_type UNDEFINED / ENCODER / DECODER).
    """

    def __init__(self, head_num=1, kv_head_num=0, qk_scale=1.0, q_scale=1.0, calc_type=0, kernel_type=0,
                 clamp_type=0, clamp_min=0.0, clamp_max=0.0, mask_type=0, kv_cache_cfg=0, scale_type=0, quant_type=0,
                 out_data_type=-1, input_layout=0, batch_run_status_enable=False):
        super().__init__()
        attrs = make_attrs(head_num=head_num, kv_head_num=kv_head_num, qk_scale=qk_scale, q_scale=q_scale,
                           calc_type=calc_type, kernel_type=kernel_type, clamp_type=clamp_type, clamp_min=clamp_min,
                           clamp_max=clamp_max, mask_type=mask_type, kv_cache_cfg=kv_cache_cfg, scale_type=scale_type,
                           quant_type=quant_type, out_data_type=out_data_type, input_layout=input_layout,
                           batch_run_status_enable=batch_run_status_enable)
        self.attrs = attrs
        self.attr_values = tuple(asdict(attrs).values())  # graph constants for custom_op(...)
        self.writes_cache = attrs.writes_cache
        self.bf16_quant_out = attrs.out_data_type == SV.ACL_BF16
        # ATB's own op on Ascend; the ascend_attn package has no kernel for it, so this is the fallback
        self.backend = backends.select("mindspore", OP, ms.get_context("device_target"))[0].name
        self._absent = ms.Tensor(np.zeros((1,), np.uint8))

    def check(self, *args, **kwargs) -> dict:
        """Everything on the host: shapes, dtypes, host list values, the mask values the kernel checks."""
        from ..kernels import self_attention as kernel
        bound = bind_inputs(INPUTS, args, kwargs, OP)
        if bound.get("query") is None:
            raise TypeError(f"{OP}: missing input 'query'")
        bound = {n: bound.get(n) for n in INPUTS}
        values = {}
        for name, x in bound.items():
            if name in HOST:
                values[name] = _host_list(name, x)
            elif name in ("cache_k", "cache_v") and _is_list(x):
                values[name] = [V.meta_of(t) for t in x]
            else:
                values[name] = V.meta_of(x)
        plan = check_inputs(self.attrs, values)
        if plan is not None:
            kernel.check_device_values(plan, _host_mask(bound["attention_mask"]))
        bound.update({n: values[n] for n in HOST})
        return bound

    def __call__(self, *args, **kwargs):
        bound = self.check(*args, **kwargs)
        for name in HOST:
            if bound[name] is not None:
                bound[name] = ms.Tensor(np.asarray(bound[name], dtype=np.int64).reshape(-1))
        for name in ("cache_k", "cache_v"):
            if _is_list(bound[name]):
                bound[name] = list(bound[name])
        return super().__call__(**bound)

    def construct(self, query, key=None, value=None, cache_k=None, cache_v=None, attention_mask=None,
                  token_offset=None, seq_len=None, layer_id=None, batch_run_status=None, slopes=None, qk_descale=None,
                  qk_offset=None, vpv_descale=None, vpv_offset=None, p_scale=None, log_n=None):
        splits = None
        if _is_list(cache_k) and _is_list(cache_v) and len(cache_k) == 1 and len(cache_v) == 1:
            cache_k, cache_v = cache_k[0], cache_v[0]
        elif _is_list(cache_k) or _is_list(cache_v):
            keys = cache_k if _is_list(cache_k) else (cache_k,)
            vals = cache_v if _is_list(cache_v) else (cache_v,)
            splits = _cache_splits(tuple(tuple(t.shape) for t in keys), tuple(tuple(t.shape) for t in vals))
            cache_k, cache_v = ops.concat(keys, -2), ops.concat(vals, -2)
        token_offset, seq_len = int64_tensor(token_offset), int64_tensor(seq_len)
        layer_id, batch_run_status = int64_tensor(layer_id), int64_tensor(batch_run_status)
        given = (query, key, value, cache_k, cache_v, attention_mask, token_offset, seq_len, layer_id,
                 batch_run_status, slopes, qk_descale, qk_offset, vpv_descale, vpv_offset, p_scale, log_n)
        op = custom_op(self.attr_values, present_names(INPUTS, given), bf16_names(INPUTS, given, CASTABLE), splits)
        out = op(*custom_inputs(INPUTS, given, CASTABLE, self._absent))
        bf16_out = is_bf16(query) or self.bf16_quant_out
        if self.writes_cache:
            o, new_k, new_v = out
            if is_bf16(cache_k):
                new_k, new_v = ops.cast(new_k, ms.bfloat16), ops.cast(new_v, ms.bfloat16)
            return (ops.cast(o, ms.bfloat16) if bf16_out else o), new_k, new_v
        return ops.cast(out, ms.bfloat16) if bf16_out else out


@functools.lru_cache(maxsize=None)
def _primitive(*attr_values) -> SelfAttention:
    """One primitive per attribute set, made on first use (GRAPH_MODE evaluates this at compile time)."""
    return SelfAttention(*attr_values)


def self_attention(query, key=None, value=None, cache_k=None, cache_v=None, attention_mask=None, token_offset=None,
                   seq_len=None, layer_id=None, batch_run_status=None, slopes=None, qk_descale=None, qk_offset=None,
                   vpv_descale=None, vpv_offset=None, p_scale=None, log_n=None, *, head_num, kv_head_num=0,
                   qk_scale=1.0, q_scale=1.0, calc_type=0, kernel_type=0, clamp_type=0, clamp_min=0.0, clamp_max=0.0,
                   mask_type=0, kv_cache_cfg=0, scale_type=0, quant_type=0, out_data_type=-1, input_layout=0,
                   batch_run_status_enable=False):
    """ATB SelfAttention as one function (PyNative and GRAPH_MODE); see :class:`SelfAttention`."""
    prim = _primitive(head_num, kv_head_num, qk_scale, q_scale, calc_type, kernel_type, clamp_type, clamp_min,
                      clamp_max, mask_type, kv_cache_cfg, scale_type, quant_type, out_data_type, input_layout,
                      batch_run_status_enable)
    return prim(query, key, value, cache_k, cache_v, attention_mask, token_offset, seq_len, layer_id,
                batch_run_status, slopes, qk_descale, qk_offset, vpv_descale, vpv_offset, p_scale, log_n)
