"""What a user must never get silently: NaN turned into a finite number, a call on tensors of mixed
devices that reads memory which is not there, or a cache written before the call raises."""
import math

import numpy as np
import pytest
import torch

import ascend_attn
from ascend_attn.testing.samples import fa_case, ifa_case, rau_torch_sample_inputs
from ascend_attn.testing.sa_samples import sa_case

pytestmark = pytest.mark.usefixtures("cpu_path")


# ----------------------------------------------------------------------------- NaN propagation

def _ifa_heads(out, heads_q=8):
    """[B, 1, Nq*D] (BSH) -> [B, Nq, D] float32."""
    return out.float().view(out.shape[0], heads_q, -1)


@pytest.mark.parametrize("kv_form", ["tensor", "paged"])
def test_ifa_nan_in_query_propagates_to_that_head_only(kv_form):
    (q, k, v), kw = ifa_case(kv_form=kv_form)
    q = q.clone()
    q.view(3, 8, 32)[1, 5, 7] = math.nan  # batch 1, query head 5
    out = _ifa_heads(ascend_attn.incre_flash_attention(q, k, v, **kw))
    assert out[1, 5].isnan().all()
    nan_heads = out.isnan().any(-1)
    nan_heads[1, 5] = False
    assert not nan_heads.any()


def test_ifa_nan_key_row_inside_the_attended_range_propagates_to_its_group():
    (q, k, v), kw = ifa_case(lengths=[40, 30, 20])
    k = k.clone()
    k.view(3, 40, 2, 32)[2, 10, 1, 0] = math.nan  # batch 2, position 10 < 20, KV head 1 -> query heads 4..7
    out = _ifa_heads(ascend_attn.incre_flash_attention(q, k, v, **kw))
    assert out[2, 4:].isnan().all()
    assert torch.isfinite(out[2, :4]).all() and torch.isfinite(out[:2]).all()


def test_ifa_nan_key_row_outside_the_attended_range_is_never_read():
    (q, k, v), kw = ifa_case(lengths=[40, 30, 20])
    k, v = k.clone(), v.clone()
    k.view(3, 40, 2, 32)[2, 25:] = math.nan  # beyond actual_seq_lengths[2] = 20
    v.view(3, 40, 2, 32)[2, 25:] = math.nan
    assert torch.isfinite(ascend_attn.incre_flash_attention(q, k, v, **kw).float()).all()


def test_ifa_fully_masked_row_stays_zero_and_antiquant_propagates_nan():
    (q, k, v), kw = ifa_case(mask="B,S")
    kw["atten_mask"] = torch.zeros_like(kw["atten_mask"])
    kw["atten_mask"][0] = True  # every position of batch 0 masked
    out = _ifa_heads(ascend_attn.incre_flash_attention(q, k, v, **kw))
    assert (out[0] == 0).all() and torch.isfinite(out).all()

    (q, k, v), kw = ifa_case(antiquant="channel")
    q = q.clone()
    q.view(3, 8, 32)[0, 0, 0] = math.nan
    out = _ifa_heads(ascend_attn.incre_flash_attention(q, k, v, **kw))
    assert out[0, 0].isnan().all() and torch.isfinite(out[1:]).all()


def test_flash_attn_with_kvcache_decode_propagates_nan_in_the_cache():
    gen = torch.Generator().manual_seed(3)
    q = torch.randn(2, 1, 4, 16, generator=gen)
    k_cache, v_cache = torch.randn(2, 12, 2, 16, generator=gen), torch.randn(2, 12, 2, 16, generator=gen)
    k_cache[1, 3, 0, 5] = math.nan  # inside cache_seqlens[1] = 9, KV head 0 -> query heads 0, 1
    out = ascend_attn.flash_attn_with_kvcache(q, k_cache, v_cache, cache_seqlens=torch.tensor([6, 9]))
    assert out[1, 0, :2].isnan().all()
    assert torch.isfinite(out[0]).all() and torch.isfinite(out[1, 0, 2:]).all()


def test_fa_nan_query_row_propagates():
    args, kw = fa_case("float32", sparse_mode=3)
    q = args[0].clone()
    q[4, 1, 0] = math.nan
    q.requires_grad_()
    out, smax, _ = ascend_attn.flash_attention_varlen_score(q, *args[1:], **kw)
    assert out[4, 1].isnan().all()
    rows = out.isnan().any(-1)
    rows[4, 1] = False
    assert not rows.any()
    out.sum().backward()  # the grad kernel recomputes the row from NaN statistics: NaN again
    assert q.grad[4, 1].isnan().all()


def test_mindspore_ifa_propagates_nan():
    ms = pytest.importorskip("mindspore")
    from ascend_attn.mindspore import incre_flash_attention
    (q, k, v), kw = ifa_case()
    q = q.clone()
    q.view(3, 8, 32)[2, 3, 1] = math.nan
    ms.set_context(mode=ms.PYNATIVE_MODE)
    got = incre_flash_attention(ms.Tensor(q.numpy()), [ms.Tensor(k.numpy())], [ms.Tensor(v.numpy())],
                                actual_seq_lengths=kw["actual_seq_lengths"], num_heads=8, input_layout="BSH",
                                scale_value=kw["scale_value"], num_key_value_heads=2)
    out = np.asarray(got.asnumpy(), dtype=np.float32).reshape(3, 8, 32)
    assert np.isnan(out[2, 3]).all()
    nan_heads = np.isnan(out).any(-1)
    nan_heads[2, 3] = False
    assert not nan_heads.any()


# ----------------------------------------------------------------------------- mixed devices

def _on_meta(args, index):
    args = list(args)
    args[index] = args[index].to("meta")
    return args


def _calls():
    """(name, call with its argument number ``index`` moved to the meta device, argument name)."""
    rau = rau_torch_sample_inputs()
    fa_args, fa_kw = fa_case("float32", sparse_mode=3)
    (iq, ik, iv), ifa_kw = ifa_case()
    q, k, v = (torch.randn(2, 5, 4, 16) for _ in range(3))

    def fa_grad(meta_index):
        q_, k_, v_ = fa_args[:3]
        out, smax, ssum = ascend_attn.flash_attention_varlen_score(*fa_args, **fa_kw)
        tensors = [q_, k_, v_, torch.ones_like(out), smax, ssum, out]
        tensors[meta_index] = tensors[meta_index].to("meta")
        q_, k_, v_, dy, smax, ssum, out = tensors
        grad_kw = {("softmax_in_layout" if n == "softmax_out_layout" else n): x for n, x in fa_kw.items()}
        return ascend_attn.flash_attention_unpadding_score_grad(
            q_, k_, v_, dy, fa_args[3], fa_args[4], fa_args[5], smax, ssum, out, **grad_kw)

    return [
        ("ring_attention_update", lambda: ascend_attn.ring_attention_update(*_on_meta(rau[0][0], 3), **rau[0][1]),
         "cur_attn_out"),
        ("flash_attention_varlen_score", lambda: ascend_attn.flash_attention_varlen_score(
            *_on_meta(fa_args, 1), **fa_kw), "key"),
        ("flash_attention_unpadding_score_grad", lambda: fa_grad(3), "dy"),
        ("incre_flash_attention", lambda: ascend_attn.incre_flash_attention(iq, iv.to("meta"), iv, **ifa_kw), "key"),
        ("flash_attn_func", lambda: ascend_attn.flash_attn_func(q, k, v.to("meta")), "v"),
        ("flash_attn_with_kvcache", lambda: ascend_attn.flash_attn_with_kvcache(
            q[:, :1], k.to("meta"), v, cache_seqlens=torch.tensor([3, 4])), "k_cache"),
    ]


@pytest.mark.parametrize("index", range(6))
def test_mixed_devices_raise_instead_of_reading_missing_memory(index):
    name, call, arg = _calls()[index]
    with pytest.raises(ValueError, match="device") as info:
        call()
    assert "meta" in str(info.value)


def test_self_attention_mixed_devices_raise():
    args, kw = sa_case()
    args = list(args)
    first = next(i for i, a in enumerate(args) if isinstance(a, torch.Tensor) and i > 0)
    args[first] = args[first].to("meta")
    with pytest.raises(ValueError, match="self_attention: .* device of query"):
        ascend_attn.self_attention(*args, **kw)


# ----------------------------------------------------------------------------- no write before an error

def test_self_attention_checks_every_attention_plan_before_writing_the_cache(monkeypatch):
    """The cache update happens only once every check has passed: a check that fails late (here: the
    FA plan of a batch group, forced to fail) leaves the caches bit-identical."""
    from ascend_attn import validation as V
    args, kw = sa_case()
    before = [a.clone() for a in args if isinstance(a, torch.Tensor)]
    real = V.check_flash_attention

    def failing(*a, **k):
        real(*a, **k)
        raise ValueError("late check")
    monkeypatch.setattr(V, "check_flash_attention", failing)
    with pytest.raises(ValueError, match="late check"):
        ascend_attn.self_attention(*args, **kw)
    after = [a for a in args if isinstance(a, torch.Tensor)]
    assert all(torch.equal(a, b) for a, b in zip(after, before))
