"""IncreFlashAttentionV2 kernel (ops_kernels/incre_flash_attention_v2) on the AscendC host simulation.

The kernel source is compiled unchanged against ops_kernels/host_sim (cmake,
-DASCEND_ATTN_HOST_SIM=ON, only this op's library), run through its C-ABI runner with ctypes and
compared with the torch op ``ascend_attn.incre_flash_attention`` (CPU fallback): fp16/bf16 outputs
within 2 ulps of their (batch, head) row's largest magnitude, int8 outputs within +-1. Shapes
exercise the tiling: several cores (former/tail split of the batch x KV-head items), KV tails,
several UB loops per item, GQA up to G = 64, empty batches, broadcast / absent
actual_seq_lengths, atten_mask (per batch / per head, fully masked rows), every scenario (float fp16/bf16, C per-tensor/per-channel with and without
offset, B and A with uint64 dequant words and float32 dequant values). A tiling told a larger UB
than the simulated core has must fail with UB_OVERFLOW; impossible tilings are refused.
"""
from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

import ascend_attn
from ascend_attn.testing.samples import ifa_case

REPO = Path(__file__).resolve().parents[1]
# status codes of ops_kernels/host_sim/include/ascend_attn_sim/base.h
TILING_ERROR, UB_OVERFLOW = 1, 2
TARGET = "ascend_attn_host_sim_incre_flash_attention_v2"
IN_DTYPES = {torch.float16: 0, torch.int8: 1, torch.bfloat16: 2}
P = ctypes.c_void_p


@pytest.fixture(scope="module")
def ifa(tmp_path_factory):
    """The runner of a fresh host-sim build of this op only (or of ``$ASCEND_ATTN_HOST_SIM_LIB``, an
    existing libascend_attn_host_sim[_incre_flash_attention_v2].so, to skip the build)."""
    path = os.environ.get("ASCEND_ATTN_HOST_SIM_LIB")
    if not path:
        if shutil.which("cmake") is None:
            pytest.skip("cmake not found")
        build = tmp_path_factory.mktemp("host_sim_build_ifa")
        for cmd in (["cmake", "-S", str(REPO), "-B", str(build), "-DASCEND_ATTN_HOST_SIM=ON"],
                    ["cmake", "--build", str(build), "--target", TARGET, f"-j{os.cpu_count() or 2}"]):
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
            assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}"
        path = build / "host_sim" / f"lib{TARGET}.so"
    lib = ctypes.CDLL(str(path))
    f = lib.ascend_attn_sim_incre_flash_attention_v2
    f.restype = ctypes.c_int
    f.argtypes = [P, P, P, P, P, P, ctypes.c_int64, P, P, P, P, P, P, P, ctypes.c_int64, P, P, ctypes.c_float, P,
                  ctypes.c_char_p, ctypes.c_int64]
    return f


def _flat(t, dtype):
    if t is None:
        return None
    if t.dtype == torch.int64:  # dequant words (trans_quant_param): raw uint64 bits
        return np.ascontiguousarray(t.reshape(-1).numpy())
    return np.ascontiguousarray(t.reshape(-1).to(torch.float32).numpy().astype(dtype))


def _ptr(a):
    return None if a is None else a.ctypes.data_as(P)


LAYOUTS = {"BSH": 0, "BSND": 1, "BNSD": 2}


def run_sim(fn, query, key, value, kw, *, cores=8, ub=192 * 1024, sim_ub=0, max_kv_block=0, max_split=1,
            as_descriptor=False, min_split_len=0):
    """Runs the kernel; returns (status, message, output tensor, tiling info). ``key`` / ``value``: one
    tensor or per-batch lists (tensor-list K/V); ``as_descriptor``: one tensor handed over as a list of
    one (CANN's DYNAMIC-input form). ``max_split`` 1 keeps the flash-decode split off."""
    nq = kw["num_heads"]
    nkv = kw.get("num_key_value_heads", 0) or nq
    layout = kw.get("input_layout", "BSH")
    d = query.shape[-1] // nq if layout == "BSH" else query.shape[-1]
    seq_dim = 2 if layout == "BNSD" else 1
    q = query.contiguous()
    is_list = isinstance(key, (list, tuple))
    if is_list:
        keys, values = [x.contiguous() for x in key], [x.contiguous() for x in value]
        list_seq = np.array([x.shape[seq_dim] for x in keys], dtype=np.int64)
        k_ptrs = (ctypes.c_void_p * len(keys))(*[x.data_ptr() for x in keys])
        v_ptrs = (ctypes.c_void_p * len(values))(*[x.data_ptr() for x in values])
        k_arg, v_arg, seq_kv = ctypes.addressof(k_ptrs), ctypes.addressof(v_ptrs), int(list_seq.max())
    else:
        k, v = key.contiguous(), value.contiguous()
        list_seq, k_arg, v_arg, seq_kv = None, k.data_ptr(), v.data_ptr(), key.shape[seq_dim]
    qs2, qo2 = _flat(kw.get("quant_scale2"), np.float32), _flat(kw.get("quant_offset2"), np.float32)
    d1, d2 = _flat(kw.get("dequant_scale1"), np.float32), _flat(kw.get("dequant_scale2"), np.float32)
    q1 = _flat(kw.get("quant_scale1"), np.float32)
    seq = kw.get("actual_seq_lengths")
    seq = None if seq is None else np.asarray(seq, dtype=np.int64)
    out_dtype = torch.int8 if qs2 is not None else (torch.float16 if query.dtype == torch.int8 else query.dtype)
    out = torch.zeros(query.shape, dtype=out_dtype)
    mask = kw.get("atten_mask")
    mask = None if mask is None else mask.contiguous().view(torch.uint8)
    mask_shape = np.array([] if mask is None else list(mask.shape), dtype=np.int64)
    shape = np.array([query.shape[0], nq, nkv, d, seq_kv], dtype=np.int64)
    deq_float = int(d1 is not None and d1.dtype == np.float32)
    opts = np.array([IN_DTYPES[query.dtype], deq_float, 0 if qs2 is None else qs2.size, int(qo2 is not None),
                     cores, ub, sim_ub, max_kv_block, LAYOUTS[layout], 1 if is_list else 2 * int(as_descriptor),
                     max_split, min_split_len], dtype=np.int64)
    info = np.zeros(9, dtype=np.int64)
    msg = ctypes.create_string_buffer(2048)
    rc = fn(q.data_ptr(), k_arg, v_arg, _ptr(list_seq), out.data_ptr(), _ptr(seq), 0 if seq is None else seq.size,
            _ptr(d1), _ptr(q1), _ptr(d2), _ptr(qs2), _ptr(qo2), None if mask is None else mask.data_ptr(),
            _ptr(mask_shape), mask_shape.size, _ptr(shape), _ptr(opts),
            float(kw.get("scale_value", 1.0)), _ptr(info), msg, len(msg))
    keys = ("used_cores", "kv_block", "ub_bytes", "mode", "workspace", "items_per_core", "former_cores", "seq_align",
            "split")
    return rc, msg.value.decode(), out, dict(zip(keys, info.tolist()))


def assert_fp16_close(out, ref, head_dim, ulps=2):
    """Within `ulps` ulps (fp16 or bf16, the output's dtype) of the largest magnitude of the
    element's (batch, head) row: with several UB blocks the kernel rounds P relative to running
    maxima, the reference relative to the global one, an error on the scale of the row
    (cancellation can leave it on small elements)."""
    assert out.dtype == ref.dtype
    mantissa = 10 if ref.dtype == torch.float16 else 7
    a, b = out.float().reshape(-1, head_dim), ref.float().reshape(-1, head_dim)
    scale = b.abs().amax(-1, keepdim=True).clamp(min=2.0 ** -14)
    ulp = torch.exp2(torch.floor(torch.log2(scale)) - mantissa)
    err = ((a - b).abs() / ulp).max()
    assert err <= ulps, f"{float(err)} ulps (of the row maximum) > {ulps}"


def assert_int8_close(out, ref):
    diff = (out.int() - ref.int()).abs()
    assert int(diff.max()) <= 1, f"int8 output off by {int(diff.max())}"


def assert_out_close(out, ref, head_dim=32):
    """int8 outputs within +-1, float outputs within 2 row ulps."""
    if out.dtype == torch.int8:
        assert_int8_close(out, ref)
    else:
        assert_fp16_close(out, ref, head_dim)


def ok(result):
    rc, msg, out, info = result
    assert rc == 0, msg
    return out, info


# ----------------------------------------------------------------------------------- float path

@pytest.mark.parametrize("batch,heads_q,heads_kv,head_dim,kv_len,lengths,cores,max_kv", [
    (3, 8, 2, 32, 100, [100, 37, 64], 4, 32),      # 6 items on 4 cores (2 former), tails, 4 UB loops, G=4
    (2, 8, 1, 128, 600, [600, 513], 1, 0),         # one core, default KV block 512 + tails, G=8
    (4, 4, 4, 64, 50, [0, 50, 1, 33], 16, 0),      # G=1, empty batch, more cores than items
    (1, 64, 1, 16, 70, [70], 2, 32),               # G=64 (max), one item
])
def test_float_path(ifa, batch, heads_q, heads_kv, head_dim, kv_len, lengths, cores, max_kv):
    args, kw = ifa_case("BSH", "float16", batch, heads_q, heads_kv, head_dim, kv_len, lengths=lengths, seed=batch)
    out, info = ok(run_sim(ifa, *args, kw, cores=cores, max_kv_block=max_kv))
    assert info["used_cores"] == min(cores, batch * heads_kv) and info["mode"] == 0
    assert info["kv_block"] % 32 == 0 and (max_kv == 0 or info["kv_block"] <= max_kv)
    assert_fp16_close(out, ascend_attn.incre_flash_attention(*args, **kw), head_dim)


@pytest.mark.parametrize("seq", [None, [45]])
def test_float_path_default_and_broadcast_lengths(ifa, seq):
    args, kw = ifa_case("BSH", "float16", 2, 4, 2, 32, 45, seed=7)
    kw["actual_seq_lengths"] = seq
    out, _ = ok(run_sim(ifa, *args, kw, cores=3, max_kv_block=32))
    assert_fp16_close(out, ascend_attn.incre_flash_attention(*args, **kw), 32)


@pytest.mark.parametrize("quant", [False, True])
def test_bf16(ifa, quant):
    """bf16 q/k/v: P and the output rounded RNE; scenario C with float32 quant_scale2."""
    args, kw = ifa_case("BSH", "bfloat16", 3, 8, 2, 32, 100, lengths=[100, 0, 45], seed=13)
    if quant:
        kw["quant_scale2"] = torch.rand(8 * 32, generator=torch.Generator().manual_seed(1)) * 100 + 50
    out, info = ok(run_sim(ifa, *args, kw, cores=5, max_kv_block=32))
    assert info["mode"] == (1 if quant else 0)
    ref = ascend_attn.incre_flash_attention(*args, **kw)
    assert_out_close(out, ref)


# ------------------------------------------------------------------- scenario C (fp16 -> int8)

@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("offset", [False, True])
def test_scenario_c(ifa, per_channel, offset):
    gen = torch.Generator().manual_seed(11)
    batch, nq, nkv, d = 3, 4, 2, 64
    args, kw = ifa_case("BSH", "float16", batch, nq, nkv, d, 90, lengths=[90, 0, 41], seed=5)
    n = nq * d if per_channel else 1
    kw["quant_scale2"] = torch.rand(n, generator=gen) * 150 + 60
    if offset:
        kw["quant_offset2"] = torch.randn(n, generator=gen) * 4
    out, info = ok(run_sim(ifa, *args, kw, cores=4, max_kv_block=32))
    assert info["mode"] == 1
    ref = ascend_attn.incre_flash_attention(*args, **kw)
    assert ref.dtype == torch.int8 and out.dtype == torch.int8
    assert_int8_close(out, ref)


# -------------------------------------------------------------------- full int8 (A and B, §7.5)

def _int8_case(scenario, words, per_channel=False, seed=0):
    gen = torch.Generator().manual_seed(seed)
    batch, nq, nkv, d, s = 3, 8, 2, 32, 150
    q = torch.randint(-100, 100, (batch, 1, nq * d), generator=gen, dtype=torch.int8)
    k = torch.randint(-100, 100, (batch, s, nkv * d), generator=gen, dtype=torch.int8)
    v = torch.randint(-100, 100, (batch, s, nkv * d), generator=gen, dtype=torch.int8)
    sq, sk, sv = 0.01, 0.012, 0.02
    deq = (lambda x: ascend_attn.trans_quant_param(torch.tensor([x]))) if words else \
        (lambda x: torch.tensor([x], dtype=torch.float32))
    kw = {"num_heads": nq, "num_key_value_heads": nkv, "scale_value": d ** -0.5,
          "actual_seq_lengths": [150, 0, 33], "dequant_scale1": deq(sq * sk),
          "quant_scale1": torch.tensor([127.0]), "dequant_scale2": deq(sv / 127)}
    if scenario == "A":
        n = nq * d if per_channel else 1
        kw["quant_scale2"] = torch.rand(n, generator=gen) * 40 + 10
        kw["quant_offset2"] = torch.randn(n, generator=gen) * 2
    return (q, k, v), kw


@pytest.mark.parametrize("words", [True, False])
def test_scenario_b(ifa, words):
    args, kw = _int8_case("B", words, seed=1)
    out, info = ok(run_sim(ifa, *args, kw, cores=4, max_kv_block=64))
    assert info["mode"] == 2 and info["seq_align"] == 192
    assert_fp16_close(out, ascend_attn.incre_flash_attention(*args, **kw), 32)


@pytest.mark.parametrize("words,per_channel", [(True, False), (False, True)])
def test_scenario_a(ifa, words, per_channel):
    args, kw = _int8_case("A", words, per_channel, seed=2)
    out, info = ok(run_sim(ifa, *args, kw, cores=5, max_kv_block=32))
    assert info["mode"] == 3
    assert_int8_close(out, ascend_attn.incre_flash_attention(*args, **kw))


# -------------------------------------------------------------------------------- atten_mask

@pytest.mark.parametrize("mask", ["B,S", "B,1,1,S", "B,N,1,S", "1,N,1,S"])
def test_mask_float(ifa, mask):
    """Masked positions excluded; batch 1 (per-batch masks) / head 1 (per-head masks) fully masked -> 0."""
    args, kw = ifa_case("BSH", "float16", 3, 8, 2, 32, 100, lengths=[100, 70, 45], mask=mask, seed=17)
    m = kw["atten_mask"]
    if mask.startswith("B,") and "N" not in mask:
        m[1] = True
    else:
        m[:, 1] = True
    out, _ = ok(run_sim(ifa, *args, kw, cores=4, max_kv_block=32))
    ref = ascend_attn.incre_flash_attention(*args, **kw)
    assert_fp16_close(out, ref, 32)
    assert (ref.float().view(3, 8, 32).abs().sum(-1) == 0).any()


@pytest.mark.parametrize("scenario", ["A", "B", "C"])
def test_mask_quant(ifa, scenario):
    """Masks in the int8 scenarios; the fully masked batch gives quant2(0) (A, C) or 0 (B)."""
    gen = torch.Generator().manual_seed(23)
    if scenario == "C":
        args, kw = ifa_case("BSH", "float16", 3, 8, 2, 32, 150, lengths=[150, 0, 33], seed=5)
        kw["quant_scale2"] = torch.rand(1, generator=gen) * 100 + 50
        kw["quant_offset2"] = torch.tensor([3.0])
    else:
        args, kw = _int8_case(scenario, True, seed=3)
    batch, s = args[1].shape[0], args[1].shape[1]
    kw["atten_mask"] = torch.rand(batch, 1, 1, s, generator=gen) < 0.3
    kw["atten_mask"][2] = True
    out, _ = ok(run_sim(ifa, *args, kw, cores=3, max_kv_block=64))
    ref = ascend_attn.incre_flash_attention(*args, **kw)
    assert_out_close(out, ref)


# ------------------------------------------------- layouts, tensor-list K/V, flash-decode split

def _to_layout(args, kw, layout, as_list=False):
    """A BSH case (one K/V tensor) as ``layout`` (query (B,1,N,D) / (B,N,1,D), K/V (B,S,N,D) /
    (B,N,S,D)), optionally as per-batch tensor lists cut to each batch's actual length."""
    q, k, v = args
    nq, nkv = kw["num_heads"], kw.get("num_key_value_heads") or kw["num_heads"]
    b, s = k.shape[0], k.shape[1]
    d = q.shape[-1] // nq
    if layout == "BSND":
        q, k, v = q.view(b, 1, nq, d), k.view(b, s, nkv, d), v.view(b, s, nkv, d)
    elif layout == "BNSD":
        q = q.view(b, nq, 1, d)
        k, v = (x.view(b, s, nkv, d).permute(0, 2, 1, 3).contiguous() for x in (k, v))
    if as_list:
        lengths = kw.get("actual_seq_lengths") or [s] * b
        dim = 2 if layout == "BNSD" else 1
        k, v = ([x[i:i + 1].narrow(dim, 0, max(int(n), 1)).contiguous() for i, n in enumerate(lengths)]
                for x in (k, v))
    return (q, k, v), dict(kw, input_layout=layout)


@pytest.mark.parametrize("layout", ["BSH", "BSND", "BNSD"])
@pytest.mark.parametrize("kv_form", ["tensor", "list", "list of one"])
def test_layouts_and_tensor_lists(ifa, layout, kv_form):
    """V2's layouts (BNSD: K/V rows of one head contiguous) and tensor-list K/V (one tensor per batch of
    its own length, addresses and shapes read from the list descriptors; or one tensor as a list of
    one, as CANN passes DYNAMIC inputs), with a per-head mask."""
    base, kw = ifa_case("BSH", "float16", 3, 8, 2, 32, 100, lengths=[100, 37, 64], mask="B,N,1,S", seed=19)
    args, kw = _to_layout(base, kw, layout, kv_form == "list")
    out, info = ok(run_sim(ifa, *args, kw, cores=4, max_kv_block=32, as_descriptor=kv_form == "list of one"))
    assert info["split"] == 1
    assert_fp16_close(out, ascend_attn.incre_flash_attention(*args, **kw), 32)


@pytest.mark.parametrize("scenario,layout,as_list", [("A", "BNSD", False), ("B", "BSND", True), ("C", "BNSD", True)])
def test_quant_scenarios_in_other_layouts(ifa, scenario, layout, as_list):
    if scenario == "C":
        base, kw = ifa_case("BSH", "float16", 3, 8, 2, 32, 150, lengths=[150, 0, 33], seed=5)
        kw["quant_scale2"] = torch.rand(8 * 32, generator=torch.Generator().manual_seed(3)) * 100 + 50
    else:
        base, kw = _int8_case(scenario, True, per_channel=scenario == "A", seed=4)
    args, kw = _to_layout(base, kw, layout, as_list)
    out, info = ok(run_sim(ifa, *args, kw, cores=4, max_kv_block=64))
    ref = ascend_attn.incre_flash_attention(*args, **kw)
    assert_out_close(out, ref)


@pytest.mark.parametrize("dtype,layout,as_list,quant,mask", [
    ("float16", "BSH", False, False, False),
    ("bfloat16", "BNSD", True, False, True),
    ("float16", "BSND", False, True, True),
])
def test_flash_decode_split_over_cores(ifa, dtype, layout, as_list, quant, mask):
    """B * Nkv = 2 items on 16 cores: each item's KV range is cut over several cores (partial acc, max,
    sum in the workspace), then combined after SyncAll; a split beyond a batch's length is empty."""
    base, kw = ifa_case("BSH", dtype, 2, 8, 1, 32, 700, lengths=[700, 150], mask="B,1,1,S" if mask else None,
                        seed=29)
    if quant:
        kw["quant_scale2"] = torch.rand(1, generator=torch.Generator().manual_seed(5)) * 100 + 50
    args, kw = _to_layout(base, kw, layout, as_list)
    out, info = ok(run_sim(ifa, *args, kw, cores=16, max_kv_block=64, max_split=0, min_split_len=64))
    assert info["split"] > 1 and info["used_cores"] == 2 * info["split"]
    # CANN's rule: at least 512 positions per split (700 positions: no split)
    assert ok(run_sim(ifa, *args, kw, cores=16, max_kv_block=64, max_split=0))[1]["split"] == 1
    ref = ascend_attn.incre_flash_attention(*args, **kw)
    assert_out_close(out, ref)
    # the same input without the split: same values within rounding
    plain, _ = ok(run_sim(ifa, *args, kw, cores=16, max_kv_block=64, max_split=1))
    assert_out_close(out, plain)


# --------------------------------------------------------------------------- tiling failures

def test_tiling_overflowing_ub_fails_in_simulation(ifa):
    """Tiling told 4 MiB of UB picks a KV block the simulated 192 KiB core cannot hold."""
    args, kw = ifa_case("BSH", "float16", 1, 64, 1, 128, 2048, lengths=[2048], seed=3)
    rc, msg, _, info = run_sim(ifa, *args, kw, cores=1, ub=4 << 20, sim_ub=192 * 1024, max_kv_block=2048)
    assert info["ub_bytes"] > 192 * 1024
    assert rc == UB_OVERFLOW, msg
    assert "UB" in msg


def test_tiling_refuses(ifa):
    args, kw = ifa_case("BSH", "float16", 1, 64, 1, 128, 64, seed=3)
    rc, msg, _, _ = run_sim(ifa, *args, kw, ub=8 * 1024)  # not even a 32-position block fits
    assert rc == TILING_ERROR and "UB" in msg
    args, kw = ifa_case("BSH", "float16", 1, 2, 1, 40, 64, seed=3)
    rc, msg, _, _ = run_sim(ifa, *args, kw)
    assert rc == TILING_ERROR and "head dim" in msg
