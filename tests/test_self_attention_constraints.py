"""ATB SelfAttention's coexistence table and documented constraints.

* The table ("各功能共存情况"): all 45 pairs of its 10 features. Each N pair raises a ValueError naming both
  features (eager and FakeTensor), with no input changed; each Y pair runs with both features on and
  matches the float64 reference.
* One row per constraint: error type, the ``self_attention: `` prefix, the argument named, the "... but got"
  template, inputs unchanged; eager and FakeTensor (value-dependent rows: eager only; the values of the host
  lengths are data, not constants, under FakeTensor and torch.compile, only their counts are known).
"""
from __future__ import annotations

import itertools

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._pytree import tree_map_only

import ascend_attn
from ascend_attn.validation import self_attention as SV
from ascend_attn.testing.sa_samples import FEATURE_NAMES, sa_case
from frontends import arg, both, kw, tensors_in
from test_self_attention import check_case

OP = "self_attention"


def run(args, kwargs, fake):
    """The eager op, or the fake kernel (every tensor, also inside the cache lists, made fake)."""
    if not fake:
        return ascend_attn.self_attention(*args, **kwargs)
    with FakeTensorMode(allow_non_fake_inputs=True) as mode:
        args, kwargs = tree_map_only(torch.Tensor, mode.from_tensor, (args, kwargs))
        return ascend_attn.self_attention(*args, **kwargs)


def assert_raises_unchanged(args, kwargs, fake, error, *needles):
    copies = [(t, t.clone()) for t in tensors_in((args, kwargs))]
    with pytest.raises(error) as info:
        run(args, kwargs, fake)
    message = str(info.value)
    assert message.startswith(f"{OP}: ") and "only supports" in message and "but got" in message, message
    for needle in needles:
        assert needle in message, message
    for t, c in copies:
        assert torch.equal(t, c), "input modified"
    return message


# ----------------------------------------------------------------------------- the coexistence table

def switch_on(index, args, kwargs):
    """Turn feature ``index`` on in a valid call (whatever else that breaks: the table is checked first)."""
    args, kwargs = list(args), dict(kwargs)
    name = FEATURE_NAMES[index]
    if name == "dynamic_batch":
        kwargs.update(batch_run_status_enable=True, batch_run_status=[1] * len(kwargs["seq_len"]))
    elif name == "split":
        kwargs["calc_type"] = "DECODER"
    elif name == "high_precision":
        kwargs["kernel_type"] = "HIGH_PRECISION"
    elif name == "clamp":
        kwargs.update(clamp_type="MIN_MAX", clamp_min=-1.0, clamp_max=1.0)
    elif name == "compressed":
        kwargs["mask_type"] = "NORM_COMPRESS"
    elif name == "bypass":
        kwargs["kv_cache_cfg"] = "K_BYPASS_V_BYPASS"
    elif name == "logn":
        kwargs["scale_type"] = "LOGN"
    elif name == "quant":
        kwargs.update(quant_type="QKV_OFFLINE")
    elif name == "bnsd":
        kwargs["input_layout"] = "BNSD"
    elif name == "tensor_list":
        rank = 2 if kwargs.get("batch_run_status_enable") else 3
        args[3] = [torch.zeros((4,) * rank, dtype=torch.float16) for _ in kwargs["seq_len"]]
        args[4] = [torch.zeros((4,) * rank, dtype=torch.float16) for _ in kwargs["seq_len"]]
    return tuple(args), kwargs


PAIRS = list(itertools.combinations(range(len(FEATURE_NAMES)), 2))
N_PAIRS = [p for p in PAIRS if p in SV.CONFLICTS]
Y_PAIRS = [p for p in PAIRS if p not in SV.CONFLICTS]
pair_id = lambda p: f"{FEATURE_NAMES[p[0]]}+{FEATURE_NAMES[p[1]]}"  # noqa: E731


def test_table_shape():
    """10 features, 45 pairs: 9 marked N in the seed's table, 36 Y."""
    assert len(SV.FEATURES) == len(FEATURE_NAMES) == 10
    assert len(N_PAIRS) == 9 and len(Y_PAIRS) == 36
    assert {(SV.FEATURES[a].atb, SV.FEATURES[b].atb) for a, b in N_PAIRS} == {
        ("控制可计算batch", "qkv全量化"), ("全量/增量分离", "qkv全量化"), ("kv-bypass", "qkv全量化"),
        ("logN缩放", "qkv全量化"), ("logN缩放", "BNSD维度输入"), ("logN缩放", "kv tensorlist格式输入"),
        ("qkv全量化", "BNSD维度输入"), ("qkv全量化", "kv tensorlist格式输入"),
        ("BNSD维度输入", "kv tensorlist格式输入")}


@pytest.mark.parametrize("fake", [False, True], ids=["eager", "fake"])
@pytest.mark.parametrize("pair", N_PAIRS, ids=[pair_id(p) for p in N_PAIRS])
def test_n_pair_raises_naming_both_features(pair, fake):
    a, b = pair
    for first, second in ((a, b), (b, a)):  # either feature on first, the other switched on
        base = ("logn", "high_precision") if FEATURE_NAMES[first] == "logn" else (FEATURE_NAMES[first],)
        args, kwargs = sa_case(base, seed=1)
        args, kwargs = switch_on(second, args, kwargs)
        fa, fb = SV.FEATURES[a], SV.FEATURES[b]
        assert_raises_unchanged(args, kwargs, fake, ValueError, fa.name, fb.name, fa.atb, fb.atb, "(N)")


@pytest.mark.parametrize("pair", Y_PAIRS, ids=[pair_id(p) for p in Y_PAIRS])
def test_y_pair_runs_and_matches_the_reference(pair):
    names = tuple(FEATURE_NAMES[i] for i in pair)
    args, kwargs, _ = check_case(names, seed=sum(pair))
    brs = kwargs.get("batch_run_status_enable", False)
    caches = args[3] if isinstance(args[3], list) else [args[3]] if args[3] is not None else []
    enums = {n: SV.enum_value(n, kwargs.get(n, 0)) for n in ("calc_type", "kernel_type", "clamp_type", "mask_type",
                                                               "kv_cache_cfg", "scale_type", "quant_type",
                                                               "input_layout")}
    on = SV.active_features(batch_run_status_enable=brs, cache_is_list=isinstance(args[3], list) and
                            SV._list_form([ascend_attn.validation.meta_of(t) for t in caches], brs), **enums)
    assert set(pair) <= set(on), (names, on)


# ----------------------------------------------------------------------------- constraint rows

BASES = {
    "pa": lambda: sa_case((), calc_type=3, mask_type=1, seed=0),
    "pa-alibi": lambda: sa_case(("compressed", "high_precision"), mask_type=4),
    "pa-causal": lambda: sa_case(("compressed",), calc_type=3, mask_type=3),
    "pa-hp-norm": lambda: sa_case(("high_precision",), calc_type=3, mask_type=1),
    "cache": lambda: sa_case((), calc_type=0, mask_type=1, seed=2),
    "decoder": lambda: sa_case(("split",), calc_type=2, seed=1),
    "bypass": lambda: sa_case(("bypass",), seed=1),
    "bnsd": lambda: sa_case(("bnsd",)),
    "list": lambda: sa_case(("tensor_list",)),
    "brs": lambda: sa_case(("dynamic_batch",), calc_type=0),
    "logn": lambda: sa_case(("logn",)),
    "quant": lambda: sa_case(("quant",), quant_type=2),
    "quant-online": lambda: sa_case(("quant",), quant_type=3),
}
half = lambda x: x.half()  # noqa: E731
floats = lambda x: x.float()  # noqa: E731

# (id, base, change, error, argument named, value-dependent: reads host length values or tensor data)
ROWS = [
    # enumerations
    ("calc-type-unknown-int", "pa", kw(calc_type=7), ValueError, "calc_type", False),
    ("calc-type-unknown-name", "pa", kw(calc_type="PREFILL"), ValueError, "calc_type", False),
    ("calc-type-prefix-encoder", "pa", kw(calc_type=4), ValueError, "calc_type", False),
    ("calc-type-float", "pa", kw(calc_type=3.0), TypeError, "calc_type", False),
    ("kernel-type-exp-m8v2", "pa", kw(kernel_type=2), ValueError, "kernel_type", False),
    ("mask-type-sliding-window", "pa", kw(mask_type="SLIDING_WINDOW_NORM"), ValueError, "mask_type", False),
    ("mask-type-sliding-window-int", "pa", kw(mask_type=8), ValueError, "mask_type", False),
    ("quant-type-dequant-fusion", "pa", kw(quant_type=1), ValueError, "quant_type", False),
    ("input-layout-unknown", "pa", kw(input_layout="TND"), ValueError, "input_layout", False),
    ("out-data-type-float32", "quant", kw(out_data_type="float32"), ValueError, "out_data_type", False),
    ("kv-cache-cfg-unknown", "cache", kw(kv_cache_cfg=2), ValueError, "kv_cache_cfg", False),
    ("clamp-type-unknown", "pa", kw(clamp_type=2), ValueError, "clamp_type", False),
    ("scale-type-logn-fp32", "pa", kw(scale_type=2), ValueError, "scale_type", False),
    # scalars
    ("head-num-zero", "pa", kw(head_num=0), ValueError, "head_num", False),
    ("head-num-not-query-heads", "pa", kw(head_num=2, kv_head_num=1), ValueError, "head_num", False),
    ("kv-head-num-not-divisor", "pa", kw(kv_head_num=3), ValueError, "kv_head_num", False),
    ("qk-scale-string", "pa", kw(qk_scale="0.25"), TypeError, "qk_scale", False),
    ("clamp-min-above-max", "pa", kw(clamp_type=1, clamp_min=1.0, clamp_max=0.5), ValueError, "clamp_min", False),
    # single-feature prerequisites
    ("dynamic-batch-pa-encoder", "pa", kw(batch_run_status_enable=True, batch_run_status=[1, 1, 1]), ValueError,
     "batch_run_status_enable", False),
    ("bypass-pa-encoder", "pa", kw(kv_cache_cfg="K_BYPASS_V_BYPASS"), ValueError, "kv_cache_cfg", False),
    ("bnsd-without-bypass", "cache", kw(input_layout="BNSD"), ValueError, "input_layout", False),
    ("bnsd-without-mask", "bnsd", both(kw(mask_type=0), arg(5, lambda m: None)), ValueError, "mask_type", False),
    ("tensor-list-encoder", "list", kw(calc_type="ENCODER", seq_len=[1, 1, 1], token_offset=[6, 1, 9]), ValueError,
     "cache_k", False),
    ("tensor-list-without-bypass", "list", both(kw(kv_cache_cfg=0), arg(1, lambda _: torch.zeros(3, 32).half()),
                                                arg(2, lambda _: torch.zeros(3, 32).half())), ValueError, "cache_k",
     False),
    ("logn-combined", "cache", kw(scale_type="LOGN", log_n=torch.ones(9)), ValueError, "calc_type", False),
    ("logn-pa-without-high-precision", "pa", kw(scale_type="LOGN", log_n=torch.ones(9)), ValueError, "kernel_type",
     False),
    ("logn-without-log-n", "logn", kw(log_n=None), ValueError, "log_n", False),
    ("log-n-without-logn", "decoder", kw(log_n=torch.ones(3)), ValueError, "log_n", False),
    ("log-n-decoder-shape", "logn", kw(log_n=torch.ones(4)), ValueError, "log_n", False),
    ("log-n-pa-too-short", "pa", kw(scale_type="LOGN", kernel_type=1, log_n=torch.ones(6)), ValueError, "log_n", True),
    ("log-n-float16", "logn", kw(log_n=torch.ones(3).half()), TypeError, "log_n", False),
    ("quant-combined", "cache", kw(quant_type="QKV_ONLINE", out_data_type="float16"), ValueError, "calc_type", False),
    ("quant-without-out-data-type", "quant", kw(out_data_type=None), ValueError, "out_data_type", False),
    ("out-data-type-without-quant", "pa", kw(out_data_type="float16"), ValueError, "out_data_type", False),
    ("quant-without-qk-descale", "quant", kw(qk_descale=None), ValueError, "qk_descale", False),
    ("quant-without-qk-offset", "quant", kw(qk_offset=None), ValueError, "qk_offset", False),
    ("quant-offline-without-p-scale", "quant", kw(p_scale=None), ValueError, "p_scale", False),
    ("quant-online-with-p-scale", "quant-online", kw(p_scale=torch.ones(4)), ValueError, "p_scale", False),
    ("qk-descale-without-quant", "pa", kw(qk_descale=torch.ones(4)), ValueError, "qk_descale", False),
    ("quant-float-query", "quant", arg(0, half), TypeError, "query", False),
    ("qk-descale-shape", "quant", kw(qk_descale=torch.ones(2)), ValueError, "qk_descale", False),
    ("qk-offset-float", "quant", kw(qk_offset=torch.zeros(4)), TypeError, "qk_offset", False),
    ("vpv-descale-float16", "quant", kw(vpv_descale=torch.ones(4).half()), TypeError, "vpv_descale", False),
    ("alibi-compress-encoder", "cache", kw(mask_type="ALIBI_COMPRESS"), ValueError, "mask_type", False),
    ("alibi-compress-without-slopes", "pa-alibi", kw(slopes=None), ValueError, "slopes", False),
    ("slopes-without-alibi-compress", "pa", kw(slopes=torch.ones(4)), ValueError, "slopes", False),
    ("slopes-shape", "pa-alibi", kw(slopes=torch.ones(3)), ValueError, "slopes", False),
    ("alibi-compress-fp16-default-kernel", "pa-alibi", kw(kernel_type=0), ValueError, "kernel_type", False),
    ("alibi-compress-head-dim-over-128", "pa-alibi",
     both(arg(0, lambda q: torch.zeros(13, 4, 130).half()), arg(1, lambda k: torch.zeros(13, 2, 130).half()),
          arg(2, lambda v: torch.zeros(13, 2, 130).half())), ValueError, "query", False),
    ("alibi-compress-head-seq-128-form", "pa-alibi", arg(5, lambda m: torch.zeros(4, 8, 128).half()), ValueError,
     "attention_mask", False),
    # which tensors
    ("mask-with-mask-type-undefined", "pa", kw(mask_type=0), ValueError, "attention_mask", False),
    ("mask-type-without-mask", "pa", arg(5, lambda m: None), ValueError, "attention_mask", False),
    ("pa-encoder-with-cache", "pa", arg(3, lambda _: torch.zeros(2, 3, 12, 32).half()), ValueError, "cache_k", False),
    ("pa-encoder-with-token-offset", "pa", kw(token_offset=[5, 0, 7]), ValueError, "token_offset", False),
    ("pa-encoder-without-key", "pa", arg(1, lambda _: None), ValueError, "key", False),
    ("kv-cache-without-key", "cache", arg(1, lambda _: None), ValueError, "key", False),
    ("bypass-with-key", "bypass", arg(1, lambda _: torch.zeros(9, 32).half()), ValueError, "key", False),
    ("cache-without-cache-v", "cache", arg(4, lambda _: None), ValueError, "cache_v", False),
    ("cache-without-token-offset", "cache", kw(token_offset=None), ValueError, "token_offset", False),
    ("batch-run-status-without-enable", "cache", kw(batch_run_status=[1, 0, 1]), ValueError, "batch_run_status",
     False),
    ("batch-run-status-missing", "brs", kw(batch_run_status=None), ValueError, "batch_run_status", False),
    ("batch-run-status-values", "brs", kw(batch_run_status=[1, 2, 1]), ValueError, "batch_run_status", True),
    ("batch-run-status-length", "brs", kw(batch_run_status=[1, 0]), ValueError, "batch_run_status", False),
    # dtypes
    ("query-float32", "pa", both(arg(0, floats), arg(1, floats), arg(2, floats)), TypeError, "query", False),
    ("key-dtype", "pa", arg(1, lambda k: k.bfloat16()), TypeError, "key", False),
    ("cache-dtype", "cache", arg(3, lambda c: c.bfloat16()), TypeError, "cache_k", False),
    ("mask-dtype", "pa", arg(5, floats), TypeError, "attention_mask", False),
    ("mask-bool", "pa", arg(5, lambda m: m != 0), TypeError, "attention_mask", False),
    # shapes and lengths
    ("query-rank", "pa", arg(0, lambda q: q[None]), ValueError, "query", False),
    ("key-heads", "pa", arg(1, lambda k: torch.cat([k, k], 1)), ValueError, "key", False),
    ("value-tokens", "pa", arg(2, lambda v: v[:-1]), ValueError, "value", False),
    ("seq-len-over-tokens", "pa", kw(seq_len=[5, 4, 7]), ValueError, "seq_len", True),
    ("seq-len-negative", "pa", kw(seq_len=[5, -1, 7]), ValueError, "seq_len", True),
    ("seq-len-none", "pa", lambda a, k: (a, dict(k, seq_len=None)), ValueError, "seq_len", False),
    ("decoder-seq-len-2", "decoder", both(kw(seq_len=[1, 2, 0])), ValueError, "seq_len", True),
    ("token-offset-below-seq-len", "cache", kw(token_offset=[2, 1, 9]), ValueError, "token_offset", True),
    ("token-offset-over-cache", "cache", kw(token_offset=[5, 1, 13]), ValueError, "token_offset", True),
    ("token-offset-length", "cache", kw(token_offset=[5, 1]), ValueError, "token_offset", False),
    ("layer-id-out-of-range", "cache", kw(layer_id=[2]), ValueError, "layer_id", False),
    ("layer-id-two-values", "cache", kw(layer_id=[0, 1]), ValueError, "layer_id", False),
    ("cache-hidden", "cache", both(arg(3, lambda c: c[..., :16]), arg(4, lambda c: c[..., :16])), ValueError,
     "cache_k", False),
    ("cache-v-shape", "cache", arg(4, lambda c: c[:, :, :8]), ValueError, "cache_v", False),
    ("cache-batch", "cache", both(arg(3, lambda c: c[:, :2]), arg(4, lambda c: c[:, :2])), ValueError, "cache_k",
     False),
    ("cache-rank-dynamic-batch", "brs", both(arg(3, lambda c: c[None]), arg(4, lambda c: c[None])), ValueError,
     "cache_k", False),
    ("tensor-list-length", "list", both(arg(3, lambda c: c[:2]), arg(4, lambda c: c[:2])), ValueError, "cache_k",
     False),
    ("bnsd-query-rank", "bnsd", arg(0, lambda q: q[0]), ValueError, "query", False),
    ("bnsd-cache-heads", "bnsd", both(arg(3, lambda c: c[:, :, :1]), arg(4, lambda c: c[:, :, :1])), ValueError,
     "cache_k", False),
    ("bnsd-seq-len-over-s", "bnsd", kw(seq_len=[3, 1, 6], token_offset=[5, 1, 9]), ValueError, "seq_len", True),
    ("norm-mask-too-small", "pa", arg(5, lambda m: m[..., :6, :6]), ValueError, "attention_mask", True),
    ("norm-mask-batch", "pa", arg(5, lambda m: torch.cat([m, m])), ValueError, "attention_mask", False),
    ("norm-mask-4d", "pa", arg(5, lambda m: m[:, None]), ValueError, "attention_mask", False),
    ("alibi-mask-heads", "pa", both(kw(mask_type="ALIBI"), arg(5, lambda m: m)), ValueError, "attention_mask", False),
    ("norm-compress-shape", "pa-causal", arg(5, lambda m: m[:64, :64]), ValueError, "attention_mask", False),
    ("alibi-compress-shape", "pa-alibi", arg(5, lambda m: m[:128, :128]), ValueError, "attention_mask", False),
    # mask values (device data: eager only)
    ("norm-compress-inverted", "pa-causal", arg(5, lambda m: m.T.contiguous()), ValueError, "attention_mask", True),
    ("norm-compress-hp-with-inf", "pa-causal", kw(kernel_type="HIGH_PRECISION"), ValueError, "attention_mask", True),
    ("alibi-compress-not-toeplitz", "pa-alibi", arg(5, lambda m: m.index_fill(1, torch.tensor([7]), 3.0)),
     ValueError, "attention_mask", True),
    ("binary-mask-additive-values", "pa-hp-norm", arg(5, lambda m: m * -10000.0), ValueError, "attention_mask",
     True),
]


def make(row):
    args, kwargs = BASES[row[1]]()
    return row[2](args, kwargs)


PARAMS = [pytest.param(r, f, id=f"{r[0]}-{'fake' if f else 'eager'}") for r in ROWS for f in (False, True)
          if not (f and r[5])]


def test_row_ids_are_unique():
    assert len({r[0] for r in ROWS}) == len(ROWS)


@pytest.mark.parametrize("row,fake", PARAMS)
def test_constraint(row, fake):
    args, kwargs = make(row)
    message = assert_raises_unchanged(args, kwargs, fake, row[3])
    assert message.startswith(f"{OP}: {row[4]} only supports"), message


@pytest.mark.parametrize("base", list(BASES))
def test_base_cases_are_valid(base):
    args, kwargs = BASES[base]()
    run(args, kwargs, fake=False)
    args, kwargs = BASES[base]()
    run(args, kwargs, fake=True)


def test_value_dependent_rows_pass_under_fake_tensors():
    """Fake kernels cannot read values: the value-dependent rows trace fine."""
    for row in ROWS:
        if row[5]:
            args, kwargs = make(row)
            run(args, kwargs, fake=True)
