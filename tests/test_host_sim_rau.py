"""RingAttentionUpdate AscendC kernel, run on the host simulation of AscendC (ops_kernels/host_sim).

The session fixture configures the host simulation with CMake (``-DASCEND_ATTN_HOST_SIM=ON``) and
builds ``libascend_attn_host_sim_ring_attention_update.so`` (emulation core + this op); every case then goes through the op's pure tiling function and
the unchanged kernel source, one emulated AI core after the other, and is compared with the torch
CPU fallback ``ascend_attn.ring_attention_update``.

Exactness: max is compared bitwise. The remaining math is IEEE fp32 (+, *, / and the RNE cast)
except ``exp``: the emulator evaluates it in double and rounds once, torch's CPU kernel (SLEEF,
<= 1 ulp) differs from that in ~0.6 % of arguments, and the NPU's own Exp accuracy is unknown
(semantics.md 0.5, 11.1). So

* inputs whose exp arguments are all 0 (equal maxima) must match bitwise for every dtype;
* random inputs: sum within 4 fp32 ulps, fp32 output within 8 * eps32 * (|prev| + |cur|) (an
  upper bound of |prev*wp| + |cur*wc|, weights in [0, 1]), fp16/bf16 output within 1 ulp of the
  dtype (the fp32 value differs by a few fp32 ulps, so the RNE rounding can land on the
  neighbouring 16-bit value). In practice ~0.3 % of fp32 sums/outputs differ, 16-bit outputs rarely.

The second half pins the emulation itself (runners/sim_selftest_runner.cpp): level-0 addressing,
Brcb, Compare/Select, reductions, SyncAll, every enforced limit, Cast round modes and Matmul.
"""
from __future__ import annotations

import ctypes
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import ascend_attn
from ascend_attn.testing.reference import tnd_to_ntd
from ascend_attn.testing.samples import RAU_TENSOR_NAMES, rau_arrays

REPO = Path(__file__).resolve().parents[1]
DTYPES = {"float16": (torch.float16, 0), "bfloat16": (torch.bfloat16, 1), "float32": (torch.float32, 2)}
I64P = ctypes.POINTER(ctypes.c_int64)
MSG_LEN = 4096

# status codes of ops_kernels/host_sim/include/ascend_attn_sim/base.h
OK, TILING_ERROR, UB_OVERFLOW = 0, 1, 2


@pytest.fixture(scope="session")
def sim(tmp_path_factory):
    if shutil.which("cmake") is None:
        pytest.skip("cmake not found")
    build = tmp_path_factory.mktemp("host_sim_build")
    t0 = time.monotonic()
    # Only this op's library (emulation core + RingAttentionUpdate): the other ops' sources are
    # neither compiled nor needed here; `cmake --build` without --target builds them all.
    target = "ascend_attn_host_sim_ring_attention_update"
    for cmd in (["cmake", "-S", str(REPO), "-B", str(build), "-DASCEND_ATTN_HOST_SIM=ON"],
                ["cmake", "--build", str(build), "-j2", "--target", target]):
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}"
    lib = ctypes.CDLL(str(build / "host_sim" / f"lib{target}.so"))
    vp, i64, cp = ctypes.c_void_p, ctypes.c_int64, ctypes.c_char_p
    fn = lib.ascend_attn_sim_ring_attention_update
    fn.restype = ctypes.c_int
    fn.argtypes = [vp] * 6 + [I64P, i64] + [vp] * 3 + [i64, I64P, i64, I64P, i64, cp, cp, i64, i64, i64, i64,
                                                      I64P, i64, I64P, cp, i64]
    buf = ctypes.create_string_buffer(1024)
    lib.ascend_attn_sim_ring_attention_update_tiling_fields(buf, 1024)
    lib.rau_fields = buf.value.decode().split(",")
    lib.build_seconds = time.monotonic() - t0
    return lib


def i64_array(values):
    return (ctypes.c_int64 * max(1, len(values)))(*values)


def run_sim(lib, tensors, seq, layout, sm_layout, *, core_num, ub_size=192 * 1024, tiling_ub_size=0, threaded=False):
    """Run the kernel; returns (rc, message, (out, max, sum), tiling dict, peak UB bytes)."""
    prev, pmax, psum, cur, cmax, csum = (t.contiguous() for t in tensors)
    out = torch.full_like(prev, float("nan"))
    new_max = torch.full_like(pmax, float("nan"))
    new_sum = torch.full_like(psum, float("nan"))
    seq_arr = i64_array(seq or [])
    tiling = (ctypes.c_int64 * len(lib.rau_fields))()
    peak = ctypes.c_int64(0)
    msg = ctypes.create_string_buffer(MSG_LEN)
    attn_shape, stats_shape = list(prev.shape), list(pmax.shape)
    rc = lib.ascend_attn_sim_ring_attention_update(
        prev.data_ptr(), pmax.data_ptr(), psum.data_ptr(), cur.data_ptr(), cmax.data_ptr(), csum.data_ptr(),
        seq_arr if seq is not None else None, len(seq) if seq is not None else -1,
        out.data_ptr(), new_max.data_ptr(), new_sum.data_ptr(),
        {torch.float16: 0, torch.bfloat16: 1, torch.float32: 2}[prev.dtype],
        i64_array(attn_shape), len(attn_shape), i64_array(stats_shape), len(stats_shape),
        layout.encode(), sm_layout.encode(), core_num, ub_size, tiling_ub_size, int(threaded),
        tiling, len(lib.rau_fields), ctypes.byref(peak), msg, MSG_LEN)
    return rc, msg.value.decode(), (out, new_max, new_sum), dict(zip(lib.rau_fields, tiling)), peak.value


def make_inputs(layout, sm_layout, dtype_name, *, seq_lens=(3, 1, 5), s_len=5, batch=3, heads=3, head_dim=64,
                seed=0, equal_max=False):
    arrays = rau_arrays(layout, seq_lens=seq_lens, s_len=s_len, batch=batch, heads=heads, head_dim=head_dim, seed=seed)
    if equal_max:  # every exp argument is exactly 0
        arrays["cur_softmax_max"] = arrays["prev_softmax_max"].copy()
    seq = arrays.get("actual_seq_qlen")
    if layout == "TND" and sm_layout != "TND":
        for n in RAU_TENSOR_NAMES[1:3] + RAU_TENSOR_NAMES[4:6]:
            arrays[n] = tnd_to_ntd(arrays[n], seq_lens)
    tensors = [torch.from_numpy(arrays[n]) for n in RAU_TENSOR_NAMES]
    dtype = DTYPES[dtype_name][0]
    tensors[0], tensors[3] = tensors[0].to(dtype), tensors[3].to(dtype)
    return tensors, (list(seq) if seq is not None else None)


def fallback(tensors, seq, layout, sm_layout):
    return ascend_attn.ring_attention_update(*tensors, seq, layout, sm_layout)


def bits(t):
    return t.contiguous().view({2: torch.int16, 4: torch.int32}[t.element_size()])


def assert_bitwise(got, want):
    for g, w, name in zip(got, want, ("attn_out", "softmax_max", "softmax_sum")):
        assert g.dtype == w.dtype and g.shape == w.shape, name
        mismatch = (bits(g) != bits(w)).sum().item()
        assert mismatch == 0, f"{name}: {mismatch} of {g.numel()} elements differ"


def assert_matches_fallback(got, want, tensors, dtype_name, ulp_of):
    out, m, s = got
    w_out, w_m, w_s = want
    assert torch.equal(bits(m), bits(w_m)), "softmax_max must be bitwise equal"
    s64, ws64 = s.double().numpy(), w_s.double().numpy()
    assert np.all(np.abs(s64 - ws64) <= 4 * ulp_of(ws64, "float32")), "softmax_sum beyond 4 fp32 ulps"
    o64, wo64 = out.double().numpy(), w_out.double().numpy()
    if dtype_name == "float32":
        prev, cur = tensors[0].double().abs(), tensors[3].double().abs()
        # |prev*wp| + |cur*wc| <= |prev| + |cur| (weights in [0, 1])
        scale = (prev + cur).numpy()
        assert np.all(np.abs(o64 - wo64) <= 8 * np.finfo(np.float32).eps * scale + 1e-38)
    else:
        ulp = ulp_of(np.maximum(np.abs(o64), np.abs(wo64)), dtype_name)
        assert np.all(np.abs(o64 - wo64) <= ulp), "attn_out beyond 1 ulp of its dtype"


def check_case(sim, ulp_of, layout, sm_layout, dtype_name, *, core_num, ub_size=192 * 1024, seed=0, **shape):
    tensors, seq = make_inputs(layout, sm_layout, dtype_name, seed=seed, **shape)
    rc, msg, got, tiling, peak = run_sim(sim, tensors, seq, layout, sm_layout, core_num=core_num, ub_size=ub_size)
    assert rc == OK, msg
    assert peak == tiling["ubBytes"] <= ub_size  # the kernel allocates exactly what the tiling planned
    assert_matches_fallback(got, fallback(tensors, seq, layout, sm_layout), tensors, dtype_name, ulp_of)
    eq_tensors, _ = make_inputs(layout, sm_layout, dtype_name, seed=seed + 1, equal_max=True, **shape)
    rc, msg, eq_got, _, _ = run_sim(sim, eq_tensors, seq, layout, sm_layout, core_num=core_num, ub_size=ub_size)
    assert rc == OK, msg
    assert_bitwise(eq_got, fallback(eq_tensors, seq, layout, sm_layout))
    return tiling


ALL_DTYPES = list(DTYPES)


# ---- layouts x dtypes x cores, default UB (one UB loop per run) -------------------------------------

@pytest.mark.parametrize("dtype_name", ALL_DTYPES)
@pytest.mark.parametrize("core_num", [1, 3, 8, 48])
def test_sbh_cores(sim, ulp_of, dtype_name, core_num):
    # 45 rows; D = 40 is not a multiple of 16: padded UB rows; 48 cores -> 45 used
    tiling = check_case(sim, ulp_of, "SBH", "", dtype_name, core_num=core_num, s_len=5, batch=3, heads=3, head_dim=40)
    assert tiling["usedCoreNum"] == min(core_num, 45)
    assert tiling["coreRowsRemainder"] == 45 % tiling["usedCoreNum"]
    assert tiling["colLoops"] == 1


@pytest.mark.parametrize("dtype_name", ALL_DTYPES)
@pytest.mark.parametrize("sm_layout", ["", "SBH", "TND"])
@pytest.mark.parametrize("core_num", [1, 3, 48])
def test_tnd_cores(sim, ulp_of, dtype_name, sm_layout, core_num):
    # zero-length sequence, 5 heads: 75 rows, NTD runs of length S_b
    check_case(sim, ulp_of, "TND", sm_layout, dtype_name, core_num=core_num, seq_lens=(2, 0, 9, 4), heads=5,
               head_dim=64)


# ---- small UB: several row loops with tails, column chunks ----------------------------------------

@pytest.mark.parametrize("dtype_name", ALL_DTYPES)
@pytest.mark.parametrize("layout,sm_layout", [("SBH", ""), ("TND", ""), ("TND", "TND")])
def test_row_loops_with_tails(sim, ulp_of, dtype_name, layout, sm_layout):
    dsize = 4 if dtype_name == "float32" else 2
    per_row = 448 + 64 * (6 * dsize + (8 if dsize < 4 else 0))
    ub = 3 * per_row + 100  # 3 rows per UB loop: loops end at row-range and run boundaries
    shape = dict(s_len=7, batch=2, heads=3, head_dim=64) if layout == "SBH" else dict(seq_lens=(5, 1, 7), heads=3,
                                                                                       head_dim=64)
    tiling = check_case(sim, ulp_of, layout, sm_layout, dtype_name, core_num=8, ub_size=ub, **shape)
    assert tiling["rowsPerLoop"] == 3 and tiling["colLoops"] == 1
    assert tiling["coreRowsBase"] > tiling["rowsPerLoop"]  # several loops per core, last one a tail


@pytest.mark.parametrize("dtype_name", ALL_DTYPES)
@pytest.mark.parametrize("core_num", [1, 3])
def test_head_dim_split(sim, ulp_of, dtype_name, core_num):
    # one row of D = 40 does not fit: column chunks of 16 elements, tail 8
    tiling = check_case(sim, ulp_of, "SBH", "", dtype_name, core_num=core_num, ub_size=1000, s_len=4, batch=2,
                        heads=3, head_dim=40)
    assert (tiling["colsPerLoop"], tiling["colLoops"], tiling["colTail"], tiling["rowsPerLoop"]) == (16, 3, 8, 1)


@pytest.mark.parametrize("dtype_name", ALL_DTYPES)
def test_tnd_head_dim_split_ntd(sim, ulp_of, dtype_name):
    tiling = check_case(sim, ulp_of, "TND", "", dtype_name, core_num=3, ub_size=2500, seq_lens=(3, 4), heads=2,
                        head_dim=128)
    assert tiling["colLoops"] > 1


def test_larger_shape_and_threaded_blocks(sim, ulp_of):
    tensors, seq = make_inputs("TND", "", "bfloat16", seq_lens=(37, 0, 64, 11), heads=8, head_dim=128, seed=7)
    want = fallback(tensors, seq, "TND", "")
    rc, msg, got, tiling, _ = run_sim(sim, tensors, seq, "TND", "", core_num=48)
    assert rc == OK, msg
    assert_matches_fallback(got, want, tensors, "bfloat16", ulp_of)
    rc, msg, got_threaded, _, _ = run_sim(sim, tensors, seq, "TND", "", core_num=48, threaded=True)
    assert rc == OK, msg
    assert_bitwise(got_threaded, got)  # blocks are independent: same result in any order
    assert tiling["usedCoreNum"] == 48


def test_lanes_weights_from_lane0(sim, ulp_of):
    # lanes differ: max/sum per lane, attention weights from lane 0 (semantics.md 1, [P])
    tensors, seq = make_inputs("TND", "TND", "float32", seq_lens=(4, 3), heads=2, head_dim=64, seed=3)
    for i in (1, 2, 4, 5):
        tensors[i] = tensors[i] * torch.linspace(1.0, 1.5, 8)
    rc, msg, got, _, _ = run_sim(sim, tensors, seq, "TND", "TND", core_num=3)
    assert rc == OK, msg
    assert_matches_fallback(got, fallback(tensors, seq, "TND", "TND"), tensors, "float32", ulp_of)


# ---- UB limits ---------------------------------------------------------------------------------------

def test_ub_too_small_for_one_row_is_a_tiling_error(sim):
    tensors, seq = make_inputs("SBH", "", "float16", head_dim=64)
    rc, msg, *_ = run_sim(sim, tensors, seq, "SBH", "", core_num=8, ub_size=600)
    assert rc == TILING_ERROR
    assert "cannot hold even one row tile" in msg and "UB" in msg


@pytest.mark.parametrize("threaded", [False, True])
def test_tiling_larger_than_device_ub_fails_in_simulation(sim, threaded):
    # the tiling plans for 192 KiB, the emulated core has 16 KiB: TPipe::InitBuffer must refuse
    tensors, seq = make_inputs("TND", "TND", "float32", seq_lens=(40, 30), heads=4, head_dim=128)
    rc, msg, *_ = run_sim(sim, tensors, seq, "TND", "TND", core_num=2, ub_size=16 * 1024, tiling_ub_size=192 * 1024,
                          threaded=threaded)
    assert rc == UB_OVERFLOW, msg
    assert "UB_OVERFLOW" in msg and "TPipe::InitBuffer" in msg and "16384" in msg


def test_invalid_layout_is_a_tiling_error(sim):
    tensors, seq = make_inputs("TND", "", "float32", head_dim=64)
    rc, msg, *_ = run_sim(sim, tensors, seq, "TND", "BSH", core_num=2)
    assert rc == TILING_ERROR and "input_softmax_layout" in msg



# ==== the emulation itself (ops_kernels/host_sim/runners/sim_selftest_runner.cpp) ===================
# Later kernels are written against the same emulation, so its semantics and limits are pinned here.

def selftest(sim, case, x, n_out, blocks=1):
    fn = sim.ascend_attn_sim_selftest
    fn.argtypes = [ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64,
                   ctypes.c_char_p, ctypes.c_int64]
    x = np.ascontiguousarray(x, np.float32)
    y = np.full(n_out, np.nan, np.float32)
    msg = ctypes.create_string_buffer(MSG_LEN)
    rc = fn(case, x.ctypes.data, x.size, y.ctypes.data, y.size, blocks, msg, MSG_LEN)
    return rc, msg.value.decode(), y


def test_sim_level0_brcb_row_broadcast(sim):
    x = np.random.default_rng(1).normal(size=520).astype(np.float32)
    rc, msg, y = selftest(sim, 0, x, 512)
    assert rc == OK, msg
    want = (x[:512].reshape(8, 64) * x[512:520, None]).reshape(8, 8, 8)
    want[:, 1::2, :] += np.float32(1000)  # level-0 Adds on every other DataBlock (block stride 2)
    np.testing.assert_array_equal(y, want.reshape(-1))


def test_sim_compare_select_reduce_exp(sim):
    x = np.random.default_rng(2).normal(size=200).astype(np.float32)
    rc, msg, y = selftest(sim, 1, x[:128], 128)
    assert rc == OK, msg
    a, b = x[:64], x[64:128]
    np.testing.assert_array_equal(y[:64], np.where(a > b, a, b))
    np.testing.assert_array_equal(y[64:], np.where(a < 0, a, np.float32(-1)))
    rc, msg, y = selftest(sim, 2, x, 8)
    assert rc == OK, msg
    assert y[0] == x.max() and y[1:2].view(np.uint32)[0] == x.argmax()
    assert abs(y[2] - x.astype(np.float64).sum()) < 1e-4
    assert y[3] == np.float32(np.exp(np.float64(x[0])))  # double exp rounded once


def test_sim_syncall_threaded(sim):
    rc, msg, y = selftest(sim, 3, np.zeros(8), 5 * 8, blocks=5)
    assert rc == OK, msg
    np.testing.assert_array_equal(y.reshape(5, 8)[:, 0], [1, 2, 3, 4, 0])


@pytest.mark.parametrize("case,code,text", [
    (10, 4, "depth 2 exceeded"),
    (11, 3, "not a multiple of 32 bytes"),
    (12, 2, "UB overflow"),
    (13, 4, "after FreeTensor"),
    (14, 5, "outside every buffer"),
    (15, 6, "written 0 times"),
    (16, 3, "not 32-byte aligned"),
    (17, 4, "not returned by FreeTensor"),
    (18, 7, "SyncAll"),
    (19, 7, "partially overlaps"),
    (20, 4, "is empty"),
    (21, 5, "read-only GM input"),
    (22, 4, "sits in a queue"),
    (23, 8, "blockCount 4096"),
])
def test_sim_enforces_limits(sim, case, code, text):
    rc, msg, _ = selftest(sim, case, np.zeros(64), 64)
    assert rc == code and text in msg, msg


# The 910B API rules of CANN's CPU-debug checks (hicann/asc-tools cpudebug/src/api_check), restated in
# host_sim/include/ascend_attn_sim/chip_limits.h: a deliberate violation fails and names its rule.
@pytest.mark.parametrize("case,code,rule", [
    (11, 3, "DATACOPY_LEN_32B"),       # DataCopy of 36 bytes
    (12, 2, "BUFFER_SIZE"),            # 200 KiB of queues in a 192 KiB UB
    (16, 3, "ADDR_ALIGN_32B"),         # vector operand at +4 bytes
    (23, 8, "DATACOPYPAD_PARAMS"),     # blockCount 4096
    (24, 8, "MASK_RANGE"),             # bit mask selecting nothing
    (25, 5, "TENSOR_SIZE_OVERFLOW"),   # 8 repeats of 256 bytes in a 256-byte tensor
    (26, 7, "TENSOR_POSITION"),        # vector instruction on an L1 tensor
])
def test_sim_names_the_910b_rule_a_kernel_breaks(sim, case, code, rule):
    rc, msg, _ = selftest(sim, case, np.zeros(64), 64)
    assert rc == code and f"[rule {rule}]" in msg, msg


CAST_CODES = {"float16": 0, "bfloat16": 1, "float32": 2, "int8": 3, "int32": 4}
MODES = {"NONE": 0, "RINT": 1, "FLOOR": 2, "CEIL": 3, "ROUND": 4, "TRUNC": 5, "ODD": 6}


def sim_cast(sim, src: torch.Tensor, dst_dtype: torch.dtype, mode: str):
    fn = sim.ascend_attn_sim_cast
    fn.argtypes = [ctypes.c_int64] * 3 + [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_char_p,
                                          ctypes.c_int64]
    code = {torch.float16: 0, torch.bfloat16: 1, torch.float32: 2, torch.int8: 3, torch.int32: 4}
    src = src.contiguous()
    dst = torch.zeros(src.shape, dtype=dst_dtype)
    msg = ctypes.create_string_buffer(MSG_LEN)
    rc = fn(code[src.dtype], code[dst_dtype], MODES[mode], src.data_ptr(), dst.data_ptr(), src.numel(), msg, MSG_LEN)
    assert rc == OK, msg.value.decode()
    return dst


def engineered_f32():
    tie = [1 + 2.0**-11, -(1 + 3 * 2.0**-11), 2049.0, 2051.0, -2049.0, 2.0**-25, 3 * 2.0**-25, -(2.0**-25),
           65504.0, 65519.0, 65520.0, -65520.0, 70000.0, 1e-10, -0.0, 0.5, 1.5, 2.5, -2.5, 3e38, -3.4e38]
    rng = np.random.default_rng(5)
    rand = np.concatenate([rng.normal(0, 1000, 3000), rng.normal(0, 1e-5, 1000), rng.uniform(-300, 300, 1000)])
    return np.concatenate([tie, rand]).astype(np.float32)


def half_neighbours(a64):
    """Largest fp16 <= a and smallest fp16 >= a for a >= 0 (float64)."""
    with np.errstate(over="ignore"):
        h = a64.astype(np.float16)
        lo = np.where(h.astype(np.float64) <= a64, h, np.nextafter(h, np.float16(0)))
        hi = np.where(lo.astype(np.float64) == a64, lo, np.nextafter(lo, np.float16(np.inf)))
    return lo.astype(np.float64), hi.astype(np.float64), lo, hi


@pytest.mark.parametrize("mode", ["NONE", "RINT", "ROUND", "FLOOR", "CEIL", "TRUNC", "ODD"])
def test_sim_cast_float_to_half(sim, mode):
    x = engineered_f32()
    got = sim_cast(sim, torch.from_numpy(x), torch.float16, mode).numpy().astype(np.float64)
    a = np.abs(x.astype(np.float64))
    sign = np.where(np.signbit(x), -1.0, 1.0)
    lo, hi, lo16, hi16 = half_neighbours(a)
    if mode in ("NONE", "RINT"):
        with np.errstate(over="ignore"):
            want = x.astype(np.float16).astype(np.float64)
    elif mode == "ROUND":  # semantics.md 0.5 HALF_AWAY16
        want = sign * np.where(a >= 65520.0, np.inf, np.where(a >= (lo + hi) / 2, hi, lo))
    elif mode == "TRUNC":
        want = sign * lo
    elif mode == "FLOOR":
        want = np.where(sign > 0, lo, -hi)
    elif mode == "CEIL":
        want = np.where(sign > 0, hi, -lo)
    else:  # ODD: exact, else the neighbour whose last significand bit is 1
        odd_hi = (hi16.view(np.uint16) & 1) == 1
        want = sign * np.where(lo == a, a, np.where(odd_hi, hi, lo))
    np.testing.assert_array_equal(got, want)


def test_sim_cast_float_to_bf16_and_back(sim):
    x = engineered_f32()
    t = torch.from_numpy(x)
    np.testing.assert_array_equal(sim_cast(sim, t, torch.bfloat16, "RINT").view(torch.int16).numpy(),
                                  t.to(torch.bfloat16).view(torch.int16).numpy())
    u = x.view(np.uint32)
    mag, sgn = u & 0x7FFFFFFF, u & 0x80000000
    np.testing.assert_array_equal(sim_cast(sim, t, torch.bfloat16, "TRUNC").view(torch.int16).numpy().view(np.uint16),
                                  (u >> 16).astype(np.uint16))
    away = (sgn | ((mag + 0x8000) & 0xFFFF0000)) >> 16  # ties away from zero on the magnitude
    np.testing.assert_array_equal(sim_cast(sim, t, torch.bfloat16, "ROUND").view(torch.int16).numpy().view(np.uint16),
                                  away.astype(np.uint16))
    b = t.to(torch.bfloat16)
    assert torch.equal(sim_cast(sim, b, torch.float32, "NONE"), b.float())  # widening is exact


@pytest.mark.parametrize("mode", ["RINT", "ROUND", "FLOOR", "CEIL", "TRUNC"])
def test_sim_cast_float_to_int32_saturates(sim, mode):
    x = np.concatenate([engineered_f32(), np.array([3e9, -3e9, np.nan, 0.5, -0.5, 1.5], np.float32)])
    got = sim_cast(sim, torch.from_numpy(x), torch.int32, mode).numpy()
    f = {"RINT": np.rint, "FLOOR": np.floor, "CEIL": np.ceil, "TRUNC": np.trunc,
         "ROUND": lambda v: np.sign(v) * np.floor(np.abs(v) + 0.5)}[mode]
    with np.errstate(invalid="ignore"):
        want = np.clip(np.nan_to_num(f(x.astype(np.float64)), nan=0.0), -2**31, 2**31 - 1).astype(np.int64)
    np.testing.assert_array_equal(got, want)


def test_sim_cast_half_to_int8_saturates(sim):
    x = torch.tensor([0.5, 1.5, 2.5, -2.5, 127.4, 127.6, 300.0, -129.0, -1000.0, float("nan"), float("inf")],
                     dtype=torch.float16)
    got = sim_cast(sim, x, torch.int8, "NONE")
    assert got.tolist() == [0, 2, 2, -2, 127, 127, 127, -128, -128, 0, 127]


def sim_matmul(sim, dtype, M, N, K, *, trans_a=False, trans_b=False, base=(16, 16, 32), order=0, mode=0, blocks=1,
               quant_word=0):
    fn = sim.ascend_attn_sim_matmul
    fn.argtypes = ([ctypes.c_int64] + [ctypes.c_void_p] * 3 + [ctypes.c_int64] * 11 + [ctypes.c_uint64, ctypes.c_char_p,
                                                                                      ctypes.c_int64])
    g = torch.Generator().manual_seed(M * N + K)
    if dtype == torch.int8:
        a, b = (torch.randint(-128, 128, s, generator=g, dtype=torch.int8) for s in ((M, K), (K, N)))
        c = torch.zeros(M, N, dtype=torch.float16 if quant_word else torch.int32)
    else:
        a, b = (torch.randn(s, generator=g).to(dtype) for s in ((M, K), (K, N)))
        c = torch.full((M, N), float("nan"))
    a_in = (a.t() if trans_a else a).contiguous()
    b_in = (b.t() if trans_b else b).contiguous()
    msg = ctypes.create_string_buffer(MSG_LEN)
    code = 4 if quant_word else {torch.float16: 0, torch.bfloat16: 1, torch.int8: 3}[dtype]
    rc = fn(code, a_in.data_ptr(), b_in.data_ptr(), c.data_ptr(), M, N, K, int(trans_a), int(trans_b), *base, order,
            mode, blocks, quant_word, msg, MSG_LEN)
    return rc, msg.value.decode(), a, b, c


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.int8])
@pytest.mark.parametrize("trans_a,trans_b,order,mode,blocks", [(0, 0, 0, 0, 1), (1, 1, 1, 1, 3), (0, 1, 0, 1, 4)])
def test_sim_matmul(sim, dtype, trans_a, trans_b, order, mode, blocks):
    M, N, K = 50, 40, 96
    rc, msg, a, b, c = sim_matmul(sim, dtype, M, N, K, trans_a=bool(trans_a), trans_b=bool(trans_b), order=order,
                                  mode=mode, blocks=blocks)
    assert rc == OK, msg
    ref = a.double() @ b.double()
    if dtype == torch.int8:
        assert torch.equal(c.long(), ref.long())
    else:  # fp32 accumulation of exact products
        bound = K * np.finfo(np.float32).eps * (a.double().abs() @ b.double().abs())
        assert torch.all((c.double() - ref).abs() <= bound)


def test_sim_matmul_l0_budget(sim):
    rc, msg, *_ = sim_matmul(sim, torch.float16, 64, 64, 256, base=(256, 64, 256))
    assert rc == UB_OVERFLOW and "L0A overflow" in msg, msg


def test_sim_matmul_int8_dequant_to_half(sim):
    # fixpipe: fp16_rne(fp32(int32 acc) * fp19(word)), semantics.md 7.5 / 7.7
    scale = np.float32(0.0123456789)
    word = (int(np.array(scale).view(np.uint32)) & 0xFFFFE000) | (1 << 46)
    rc, msg, a, b, c = sim_matmul(sim, torch.int8, 33, 20, 64, trans_b=True, mode=1, blocks=2, quant_word=word)
    assert rc == OK, msg
    fp19 = np.array(int(np.array(scale).view(np.uint32)) & 0xFFFFE000, np.uint32).view(np.float32)
    acc = (a.long() @ b.long()).numpy().astype(np.float32)
    np.testing.assert_array_equal(c.numpy(), (acc * fp19).astype(np.float16))
