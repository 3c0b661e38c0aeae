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

Backend: an ``ops.Custom`` pyfunc around the torch core ``kernels/self_attention.py`` (the ``_op`` skeleton),
PyNative and GRAPH_MODE, on every device target (on Ascend, SelfAttention is ATB's, not the ascend_attn
kernel package's). Validation is ``validation.self_attention``'s, at three points: ``__call__`` (from
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

import mindspore as ms
from mindspore import ops

from .. import backends
from .. import validation as V
from ..validation import self_attention as SV
from ._bridge import bf16_names, custom_inputs, host_torch, int64_tensor, is_bf16, present_names
from ._op import (OpKey, Primitive, PyfuncOp, absent_placeholder, list_splits, per_attribute_set,
                  split_metas)

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


class _SaPyfunc(PyfuncOp):
    """The Custom op over ``kernels.self_attention``: INPUTS in, ``attention_out`` (and the updated caches when
    the op writes them) out. Shapes arrive first, then dtypes: the check runs in the dtype pass on both, with
    plausible stand-ins for the host values. A kv tensor list concatenated in ``construct`` is split back
    along the sequence axis -2 (``key.splits``)."""

    OP = OP
    SLOTS = INPUTS
    INT_LISTS = HOST

    def _outputs(self, query, cache):
        return [query, cache, cache] if self.attrs.writes_cache else query

    def infer_shapes(self, metas, shapes):
        return self._outputs(list(shapes[0]), list(shapes[INPUTS.index("cache_k")]))

    def infer_dtypes(self, metas, dtypes, shapes):
        host_shapes = {n: metas.pop(n).shape for n in HOST if n in metas}
        for name in ("cache_k", "cache_v"):
            metas[name] = split_metas(metas.get(name), self.key.splits, -2)
        if shapes is None or any(s is None for s in host_shapes.values()):
            metas.update({n: ... for n in host_shapes})
            metas["seq_len"] = ...
        else:
            metas.update(_stand_ins(self.attrs, host_shapes))
        plan = check_inputs(self.attrs, metas)
        out = plan.out_dtype if plan is not None else (
            {SV.ACL_FLOAT16: "float16", SV.ACL_BF16: "bfloat16"}.get(self.attrs.out_data_type)
            or metas["query"].dtype)
        as_ms = lambda name: ms.float32 if name == "bfloat16" else getattr(ms, name)  # noqa: E731
        cache = metas.get("cache_k")
        return self._outputs(as_ms(out), None if not isinstance(cache, V.TensorMeta) else as_ms(cache.dtype))

    def run(self, tensors, lists):
        import torch
        from ..kernels import self_attention as kernel
        caches = {}
        for name in ("cache_k", "cache_v"):
            t = tensors.pop(name)
            if t is None:
                caches[name] = []
            elif self.key.splits:
                caches[name] = list(torch.split(t, list(self.key.splits), dim=-2))
            else:
                caches[name] = [t.clone()]  # written by the kernel: never MindSpore's input buffer
        values = {n: V.meta_of(t) for n, t in tensors.items()}
        values.update({n: [V.meta_of(t) for t in c] if self.key.splits else (V.meta_of(c[0]) if c else None)
                       for n, c in caches.items()})
        values.update(lists)
        plan = check_inputs(self.attrs, values)
        out = kernel.self_attention(plan, tensors["query"], tensors["key"], tensors["value"], caches["cache_k"],
                                    caches["cache_v"], **{n: tensors[n] for n in ("attention_mask", "slopes", "log_n",
                                                                                  "qk_descale", "vpv_descale",
                                                                                  "p_scale")})
        return (out, caches["cache_k"][0], caches["cache_v"][0]) if self.attrs.writes_cache else out


@functools.lru_cache(maxsize=None)
def custom_op(attr_values: tuple, present: tuple, bf16: tuple, cache_splits) -> ops.Custom:
    """The Custom op for these attributes and this combination of inputs (cached; plain tuples, so a graph
    can evaluate this at compile time)."""
    return _SaPyfunc(SAAttrs(*attr_values), OpKey(present, bf16, cache_splits)).custom()


# ----------------------------------------------------------------------------- construct helpers

def _is_list(x):
    return isinstance(x, (list, tuple))


@functools.lru_cache(maxsize=None)
def _cache_splits(key_shapes: tuple, value_shapes: tuple):
    """Per-batch lengths of a kv tensor list, after the checks its concatenation needs (validation's messages)."""
    return list_splits(OP, "cache_k", "cache_v", key_shapes, value_shapes, -2, "the sequence axis")


def _host_list(name, x):
    if isinstance(x, int) and not isinstance(x, bool):
        x = [x]
    return V.int_list(OP, name, x)


# ----------------------------------------------------------------------------- the primitive

class SelfAttention(Primitive):
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

    OP = OP
    INPUTS = INPUTS
    INT_LISTS = HOST

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
        self._absent = absent_placeholder()

    def check(self, *args, **kwargs) -> dict:
        """Everything on the host: shapes, dtypes, host list values, the mask values the kernel checks."""
        from ..kernels import self_attention as kernel
        bound = self.bind(args, kwargs, required=("query",))
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
            kernel.check_device_values(plan, host_torch(bound["attention_mask"]))
        bound.update({n: values[n] for n in HOST})
        return bound

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


_primitive = per_attribute_set(SelfAttention)


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
