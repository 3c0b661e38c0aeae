"""RingAttentionUpdate (torch op) against the float64 reference, invariants, opcheck, compile."""
import numpy as np
import pytest
import torch

import ascend_attn
from ascend_attn.testing import reference as ref
from ascend_attn.testing.samples import RAU_TENSOR_NAMES, rau_arrays, rau_torch_sample_inputs

pytestmark = pytest.mark.usefixtures("cpu_path")

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def run_both(arrays, layout, sm_layout, dtype_name):
    """Op result, float64 reference and the error scale |prev|*wp + |cur|*wc for the same inputs."""
    dtype = DTYPES[dtype_name]
    tensors = {n: torch.from_numpy(arrays[n]) for n in RAU_TENSOR_NAMES}
    for n in ("prev_attn_out", "cur_attn_out"):
        tensors[n] = tensors[n].to(dtype)
    seq = arrays.get("actual_seq_qlen")
    got = ascend_attn.ring_attention_update(*(tensors[n] for n in RAU_TENSOR_NAMES), seq, layout, sm_layout)
    inputs = [tensors[n].double().numpy() for n in RAU_TENSOR_NAMES]
    want = ref.ring_attention_update(*inputs, seq, layout, sm_layout)
    inputs[0], inputs[3] = np.abs(inputs[0]), np.abs(inputs[3])
    magnitude = ref.ring_attention_update(*inputs, seq, layout, sm_layout)[0]
    return got, want, magnitude


def assert_close_to_reference(got, want, magnitude, dtype_name, ulp_of):
    out, m, s = got
    assert out.dtype == DTYPES[dtype_name]
    assert m.dtype == s.dtype == torch.float32
    out64 = out.double().numpy()
    # fp32 math (a few fp32 roundings of terms of size `magnitude`), then one RNE rounding to the
    # attention dtype (half an ulp; none for float32).
    rounding = 0.0 if dtype_name == "float32" else 0.5 * ulp_of(np.maximum(np.abs(want[0]), np.abs(out64)), dtype_name)
    tol = rounding + 8 * np.finfo(np.float32).eps * magnitude + 1e-30
    assert np.all(np.abs(out64 - want[0]) <= tol), np.max(np.abs(out64 - want[0]) / tol)
    np.testing.assert_array_equal(m.numpy(), want[1].astype(np.float32))  # max is exact
    np.testing.assert_allclose(s.numpy(), want[2], rtol=4e-7)


@pytest.mark.parametrize("dtype_name", list(DTYPES))
@pytest.mark.parametrize("s_len,batch,heads,head_dim", [(5, 3, 3, 40), (1, 1, 1, 8), (17, 2, 5, 24)])
def test_sbh_matches_reference(dtype_name, s_len, batch, heads, head_dim, ulp_of):
    arrays = rau_arrays("SBH", s_len=s_len, batch=batch, heads=heads, head_dim=head_dim, seed=s_len)
    got, want, mag = run_both(arrays, "SBH", "", dtype_name)
    assert got[0].shape == (s_len, batch, heads * head_dim) and got[1].shape == (batch, heads, s_len, 8)
    assert_close_to_reference(got, want, mag, dtype_name, ulp_of)


@pytest.mark.parametrize("dtype_name", list(DTYPES))
@pytest.mark.parametrize("sm_layout", ["", "SBH", "TND"])
@pytest.mark.parametrize("seq_lens,heads,head_dim", [((3, 1, 5), 3, 64), ((7,), 1, 128), ((2, 0, 9, 4), 5, 192)])
def test_tnd_matches_reference(dtype_name, sm_layout, seq_lens, heads, head_dim, ulp_of):
    arrays = rau_arrays("TND", seq_lens=seq_lens, heads=heads, head_dim=head_dim, seed=sum(seq_lens))
    if sm_layout != "TND":  # default: per-sequence NTD statistics
        for n in RAU_TENSOR_NAMES[1:3] + RAU_TENSOR_NAMES[4:6]:
            arrays[n] = ref.tnd_to_ntd(arrays[n], seq_lens)
    got, want, mag = run_both(arrays, "TND", sm_layout, dtype_name)
    assert_close_to_reference(got, want, mag, dtype_name, ulp_of)


def test_ntd_and_tnd_statistics_give_the_same_output():
    seq_lens = (4, 2, 6)
    arrays = rau_arrays("TND", seq_lens=seq_lens, heads=4, head_dim=64, seed=3)
    tnd = run_both(arrays, "TND", "TND", "float32")[0]
    ntd_arrays = dict(arrays)
    for n in RAU_TENSOR_NAMES[1:3] + RAU_TENSOR_NAMES[4:6]:
        ntd_arrays[n] = ref.tnd_to_ntd(arrays[n], seq_lens)
    ntd = run_both(ntd_arrays, "TND", "", "float32")[0]
    torch.testing.assert_close(ntd[0], tnd[0], rtol=0, atol=0)
    np.testing.assert_array_equal(ref.ntd_to_tnd(ntd[1].numpy(), seq_lens), tnd[1].numpy())


def test_ntd_statistics_are_really_read_per_sequence():
    """Permuting NTD data as if it were TND must change the result (the layout matters)."""
    seq_lens = (3, 5)
    arrays = rau_arrays("TND", seq_lens=seq_lens, heads=4, head_dim=64, seed=9)
    as_tnd = run_both(arrays, "TND", "TND", "float32")[0][0]
    as_ntd = run_both(arrays, "TND", "", "float32")[0][0]
    assert not torch.equal(as_tnd, as_ntd)


@pytest.mark.parametrize("layout", ["SBH", "TND"])
@pytest.mark.parametrize("dtype_name", list(DTYPES))
def test_merging_a_partial_with_itself(layout, dtype_name):
    arrays = rau_arrays(layout, seed=11)
    dtype = DTYPES[dtype_name]
    x = torch.from_numpy(arrays["prev_attn_out"]).to(dtype)
    m = torch.from_numpy(arrays["prev_softmax_max"])
    s = torch.from_numpy(arrays["prev_softmax_sum"])
    seq = arrays.get("actual_seq_qlen")
    out, new_m, new_s = ascend_attn.ring_attention_update(x, m, s, x, m, s, seq, layout, "TND" if layout == "TND" else "")
    assert torch.equal(out, x) and torch.equal(new_m, m) and torch.equal(new_s, 2 * s)


@pytest.mark.parametrize("chunks", [2, 3, 5, 8])
@pytest.mark.parametrize("layout", ["SBH", "TND-NTD", "TND-TND"])
def test_folding_key_chunks_reproduces_full_attention(chunks, layout):
    """Attention over all keys == RAU-fold of attention over key chunks (float64 partials)."""
    rng = np.random.default_rng(chunks)
    seq_lens = [9, 3, 12] if layout != "SBH" else [10, 10]
    heads, dim = 2, 64
    scale = dim ** -0.5
    qs = [rng.standard_normal((L, heads, dim)) for L in seq_lens]
    ks = [rng.standard_normal((L + chunks, heads, dim)) * 2 for L in seq_lens]
    vs = [rng.standard_normal((L + chunks, heads, dim)) for L in seq_lens]
    full = np.concatenate([ref.partial_attention(q, k, v, scale)[0] for q, k, v in zip(qs, ks, vs)])

    def partial(c):
        outs, maxs, sums = [], [], []
        for q, k, v in zip(qs, ks, vs):
            part = np.array_split(np.arange(k.shape[0]), chunks)[c]
            o, mx, sm = ref.partial_attention(q, k[part], v[part], scale)  # max/sum [N, S_b]
            outs.append(o)
            maxs.append(mx.T if layout != "TND-NTD" else mx)
            sums.append(sm.T if layout != "TND-NTD" else sm)
        if layout == "TND-NTD":  # per-sequence [N, S_b] blocks, flattened in batch order
            flat = lambda xs: np.concatenate([x.reshape(-1) for x in xs]).reshape(-1, heads)
            return np.concatenate(outs), flat(maxs), flat(sums)
        return np.concatenate(outs), np.concatenate(maxs), np.concatenate(sums)

    def to_op(o, mx, sm):
        lanes = lambda x: torch.from_numpy(np.repeat(x[..., None], 8, -1).astype(np.float32))
        if layout == "SBH":  # tokens [B*S] -> [S, B, H], stats [B, N, S, 8]
            b, s_len = len(seq_lens), seq_lens[0]
            attn = o.reshape(b, s_len, heads * dim).transpose(1, 0, 2)
            stat = lambda x: lanes(x.reshape(b, s_len, heads).transpose(0, 2, 1))
            return torch.from_numpy(attn.astype(np.float32)), stat(mx), stat(sm)
        return torch.from_numpy(o.astype(np.float32)), lanes(mx), lanes(sm)

    acc = to_op(*partial(0))
    seq = [0] + np.cumsum(seq_lens).tolist()
    op_layout, sm_layout = {"SBH": ("SBH", ""), "TND-NTD": ("TND", ""), "TND-TND": ("TND", "TND")}[layout]
    for c in range(1, chunks):
        acc = ascend_attn.ring_attention_update(*acc, *to_op(*partial(c)), seq, op_layout, sm_layout)
    out = acc[0].double().numpy()
    if layout == "SBH":
        out = out.transpose(1, 0, 2).reshape(-1, heads, dim)
    np.testing.assert_allclose(out, full, rtol=0, atol=2e-6)


def test_streams_in_chunks(monkeypatch):
    """Many chunks (one row each) give the same bits as one chunk: the tiling is exact."""
    from ascend_attn.kernels import ring_attention_update as kernel
    for args, kwargs in rau_torch_sample_inputs():
        whole = ascend_attn.ring_attention_update(*args, **kwargs)
        monkeypatch.setattr(kernel, "CHUNK_ELEMENTS", 1)
        tiled = ascend_attn.ring_attention_update(*args, **kwargs)
        monkeypatch.undo()
        for a, b in zip(whole, tiled):
            assert torch.equal(a, b)


def test_stats_at_flt_max_merge_as_documented():
    """Empty partials (max -FLT_MAX, sum +FLT_MAX): one side merges neutrally; two give 0/inf."""
    arrays = rau_arrays("TND", seq_lens=(2,), heads=1, head_dim=64, seed=5)
    t = {n: torch.from_numpy(arrays[n]) for n in RAU_TENSOR_NAMES}
    flt_max = torch.finfo(torch.float32).max
    empty_m, empty_s = torch.full_like(t["cur_softmax_max"], -flt_max), torch.full_like(t["cur_softmax_sum"], flt_max)
    out, m, s = ascend_attn.ring_attention_update(
        t["prev_attn_out"], t["prev_softmax_max"], t["prev_softmax_sum"],
        t["cur_attn_out"], empty_m, empty_s, [0, 2], "TND", "TND")
    assert torch.equal(out, t["prev_attn_out"]) and torch.equal(m, t["prev_softmax_max"])
    assert torch.equal(s, t["prev_softmax_sum"])
    out, m, s = ascend_attn.ring_attention_update(
        t["prev_attn_out"], empty_m, empty_s, t["cur_attn_out"], empty_m, empty_s, [0, 2], "TND", "TND")
    assert torch.all(out == 0) and torch.all(m == -flt_max) and torch.all(torch.isinf(s))


def test_sequence_lengths_as_tensor_tuple_or_list_agree():
    args, kwargs = rau_torch_sample_inputs()[1]
    seq = kwargs["actual_seq_qlen"]
    results = [ascend_attn.ring_attention_update(*args, form, "TND", "")[0]
                for form in (seq, tuple(seq), torch.tensor(seq), torch.tensor(seq, dtype=torch.int32))]
    for r in results[1:]:
        assert torch.equal(r, results[0])


def test_non_contiguous_inputs():
    args, kwargs = rau_torch_sample_inputs()[0]  # SBH float32
    expected = ascend_attn.ring_attention_update(*args, **kwargs)
    strided = [torch.cat([a, a], dim=-1)[..., : a.shape[-1]] for a in args]
    assert not strided[0].is_contiguous()
    got = ascend_attn.ring_attention_update(*strided, **kwargs)
    for a, b in zip(expected, got):
        assert torch.equal(a, b)


@pytest.mark.parametrize("case", range(len(rau_torch_sample_inputs())))
def test_opcheck(case):
    args, kwargs = rau_torch_sample_inputs()[case]
    torch.library.opcheck(torch.ops.ascend_attn.ring_attention_update.default,
                          ascend_attn.ring_attention_update.op_arguments(*args, **kwargs))


def test_torch_compile_fullgraph_matches_eager():
    def merge_then_scale(a, b, c, d, e, f, seq):
        out, m, s = ascend_attn.ring_attention_update(a, b, c, d, e, f, seq, "TND", "")
        return out * 2, m + 1, s

    compiled = torch.compile(merge_then_scale, fullgraph=True)
    for args, kwargs in rau_torch_sample_inputs()[1::3]:
        eager = merge_then_scale(*args, kwargs["actual_seq_qlen"])
        got = compiled(*args, kwargs["actual_seq_qlen"])
        for a, b in zip(eager, got):
            assert torch.equal(a, b)
