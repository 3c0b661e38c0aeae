"""FlashAttentionUnpaddingScoreGradV4 kernel (ops_kernels/flash_attention_unpadding_score_grad_v4)
on the host simulation of AscendC (ops_kernels/host_sim), compared with the torch op
``ascend_attn.flash_attention_unpadding_score_grad`` (CPU fallback).

The kernel and its pure tiling are compiled unchanged against the emulated AscendC API (Matmul
high-level API included), run block by block (threaded: the kernel uses SyncAll), and checked for
UB overflow, alignment, queue protocol, GM bounds and exactly-once output coverage. Shapes are
chosen to exercise the tiling branches: several cores, query/key block tails, several UB loops per
tile, GQA ratios 1/2/4, sparse modes 0 (no mask) / 2 / 3 / 4 / 6 / 7 / 8, both softmax statistics layouts,
fp16 / bf16 / fp32, zero-length sequences and tail rows.
"""
from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

import ascend_attn
from ascend_attn import validation as V
from ascend_attn.testing.samples import fa_case

REPO = Path(__file__).resolve().parents[1]
UB = 192 * 1024
I64 = ctypes.c_int64
DTYPE_CODE = {torch.float16: 0, torch.bfloat16: 1, torch.float32: 2}
OK, TILING_ERROR, UB_OVERFLOW = 0, 1, 2
# info[] of the runner
(BLOCK_DIM, S1_BLOCK, S2_BLOCK, S2_STRIDE, VEC_ROWS, UNITS, UB_PLANNED, UB_PEAK, POST_ROWS, KEY, WS, MASK, PSE,
 KV_UNITS) = range(14)

pytestmark = pytest.mark.skipif(shutil.which("cmake") is None or shutil.which("c++") is None,
                                reason="needs cmake and a C++17 compiler")


TARGET = "ascend_attn_host_sim_flash_attention_unpadding_score_grad_v4"  # this op only (+ emulation core)


@pytest.fixture(scope="module")
def fag(tmp_path_factory):
    # A host-sim build dir of this session (test_host_sim_*.py use <basetemp>/host_sim_build*) is reused:
    # building this op's target there compiles only what it lacks.
    base = tmp_path_factory.getbasetemp()
    built = sorted(p.parent for p in base.glob("host_sim_build*/CMakeCache.txt"))
    build = built[0] if built else tmp_path_factory.mktemp("host_sim_build")
    cmds = [["cmake", "--build", str(build), "-j", "4", "--target", TARGET]]
    if not built:
        cmds.insert(0, ["cmake", "-S", str(REPO), "-B", str(build), "-DASCEND_ATTN_HOST_SIM=ON"])
    for cmd in cmds:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    lib = ctypes.CDLL(str(build / "host_sim" / f"lib{TARGET}.so"))
    fn = lib.ascend_attn_sim_flash_attention_unpadding_score_grad_v4
    P = ctypes.c_void_p
    fn.argtypes = ([P] * 10 + [I64] + [P] * 4 + [ctypes.c_double] + [P] * 3 + [I64] * 6 + [ctypes.c_double]
                   + [I64] * 11 + [P, ctypes.c_char_p, I64])
    fn.restype = ctypes.c_int
    return fn


def _raw(t):
    t = t.detach().contiguous()
    return t.view(torch.int16) if t.dtype == torch.bfloat16 else t


def alibi_pse(batch_entries, heads, s_ref, gen, dtype):
    """The compressed ALiBi pse [B|1, N1, 1024, s_ref]: the last 1024 rows of a Toeplitz (function of
    i - j) matrix of s_ref rows, random per diagonal."""
    diag = torch.randn(batch_entries, heads, 2 * s_ref - 1, generator=gen)  # index (i - j) + s_ref - 1
    i = torch.arange(s_ref - 1024, s_ref).view(-1, 1)
    j = torch.arange(s_ref).view(1, -1)
    return diag[:, :, i - j + s_ref - 1].to(dtype)


def make_case(dtype, seq_q, seq_kv, heads_q, heads_kv, head_dim, sparse_mode, layout, *, seed=0, tail_rows=1,
              full_mask="none", pse_type=None, pse_form=None, dropout=False):
    """Forward + reference gradients. sparse_mode 0 runs without atten_mask (full attention) unless
    ``full_mask`` is "local" / "global". ``pse_form`` overrides samples.fa_case's pse: "row", "alibi"
    (compressed, one entry per batch) or "slopes_batch" ([B, N1] slopes)."""
    args, kw = fa_case(dtype, tuple(seq_q), tuple(seq_kv), heads_q, heads_kv, head_dim, sparse_mode=sparse_mode,
                       softmax_layout=layout, full_mask=full_mask, tail_rows=tail_rows, seed=seed,
                       pse_type=pse_type, dropout=dropout)
    if sparse_mode in (0, 1) and full_mask == "none":
        kw.pop("atten_mask", None)
    q, k, v, n1, cq, ckv = args
    gen = torch.Generator().manual_seed(seed + 7)
    if pse_form == "row":
        kw["pse"] = torch.randn(n1 * sum(seq_kv), generator=gen).to(q.dtype)
    elif pse_form == "alibi":
        kw["pse"] = alibi_pse(len(seq_q), n1, max(seq_kv), gen, q.dtype)
    elif pse_form == "slopes_batch":
        kw["pse"] = torch.rand(len(seq_q), n1, generator=gen)
    out, smax, ssum = ascend_attn.flash_attention_varlen_score(q, k, v, n1, cq, ckv, **kw)
    dy = torch.randn(q.shape, generator=torch.Generator().manual_seed(seed + 1)).to(q.dtype)
    gkw = dict(kw)
    gkw["softmax_in_layout"] = gkw.pop("softmax_out_layout")
    ref = ascend_attn.flash_attention_unpadding_score_grad(q, k, v, dy, n1, cq, ckv, smax, ssum, out, **gkw)
    plan = V.check_flash_attention_grad(
        *(V.meta_of(t) for t in (q, k, v, dy)), n1, cq, ckv, V.meta_of(smax), V.meta_of(ssum), V.meta_of(out),
        softmax_layout=gkw["softmax_in_layout"],
        **{n: (V.meta_of(kw[n]) if n in ("pse", "drop_mask", "atten_mask") else kw[n]) for n in kw
           if n not in ("softmax_out_layout",)})
    return dict(q=q, k=k, v=v, dy=dy, out=out, smax=smax, ssum=ssum, cq=cq, ckv=ckv, kw=kw, ref=ref[:3], plan=plan)


PSE_FORMS = {None: 0, "full": 1, "row": 2, "alibi": 3, "slopes": 4}
MASK_FORMS = {None: 0, "compressed": 0, "local": 1, "global": 2}


def run_sim(fn, case, *, cores=8, tiling_ub=UB, sim_ub=UB, s1=0, s2=0, vec_rows=0, sparse_mode=None, has_mask=None,
            deterministic=False):
    q, k, v, kw, plan = case["q"], case["k"], case["v"], case["kw"], case["plan"]
    ins = [_raw(x) for x in (q, k, v, case["dy"])]
    smax, ssum, attn = case["smax"].contiguous(), case["ssum"].contiguous(), _raw(case["out"])
    cq, ckv = (torch.tensor(case[n], dtype=torch.int64) for n in ("cq", "ckv"))
    prefix = torch.tensor(kw["prefix"], dtype=torch.int64) if kw.get("prefix") is not None else None
    outs = [_raw(torch.zeros_like(x)) for x in (q, k, v)]
    info, msg = (I64 * 14)(), ctypes.create_string_buffer(2048)
    ptr = lambda t: None if t is None else ctypes.c_void_p(t.data_ptr())  # noqa: E731
    (t1, n1, d), (t2, n2, _) = q.shape, k.shape
    mode = kw["sparse_mode"] if sparse_mode is None else sparse_mode
    mask = (kw.get("atten_mask") is not None) if has_mask is None else has_mask
    # optional inputs of the feature branches (a compressed mask is not passed: index rules)
    full_mask = kw["atten_mask"].contiguous().view(torch.uint8) if MASK_FORMS[plan.mask_form] else None
    pse = kw.get("pse")
    pse = None if pse is None else (pse.float() if plan.pse_form == "slopes" else _raw(pse)).contiguous()
    drop = kw.get("drop_mask")
    feat = torch.tensor([
        MASK_FORMS[plan.mask_form], full_mask.shape[-1] if full_mask is not None else 0,
        full_mask.numel() if full_mask is not None else 0,
        PSE_FORMS[plan.pse_form], plan.pse_type,
        (pse.shape[0] if pse.dim() > 1 else 1) if pse is not None else 1, pse.shape[-1] if pse is not None else 0,
        pse.numel() * pse.element_size() if pse is not None else 0, plan.q_start, plan.kv_start,
        drop.numel() if drop is not None else 0, int(deterministic)], dtype=torch.int64)
    rc = fn(*(ptr(x) for x in ins), ptr(smax), ptr(ssum), ptr(attn), ptr(cq), ptr(ckv), ptr(prefix), len(case["cq"]),
            ptr(full_mask), ptr(pse), ptr(drop), ptr(feat), float(kw.get("keep_prob", 1.0)),
            *(ptr(o) for o in outs), t1, t2, n1, n2, d, DTYPE_CODE[q.dtype], float(kw["scale_value"]), mode,
            kw["pre_tokens"], kw["next_tokens"], int(mask), int(kw["softmax_out_layout"] == "same_as_input"),
            cores, tiling_ub, sim_ub, s1, s2, vec_rows, info, msg, len(msg))
    grads = [o.view(torch.bfloat16) if q.dtype == torch.bfloat16 else o for o in outs]
    return rc, msg.value.decode(), list(info), grads


# 16-bit dtypes: the kernel and the fallback round P and dS at the same points (§0.5); they differ in
# exp and in the fp32 summation order, which can move an element of dS or P across a rounding
# boundary: allow a few output ulps at the tensor's scale.
def assert_close(got, ref, dtype):
    got, ref = got.double().numpy(), ref.double().numpy()
    scale = max(np.abs(ref).max(), 1e-3)
    rel = {"float32": 2e-5, "float16": 4 * 2.0 ** -10, "bfloat16": 4 * 2.0 ** -7}[dtype]
    err = np.abs(got - ref).max()
    assert err <= rel * scale, f"max error {err:.3g} > {rel * scale:.3g} (scale {scale:.3g})"


CASES = [
    # id: dtype, seq_q, seq_kv, Nq, Nkv, D, mode, softmax layout, tiling hints (s1, s2, vec_rows)
    ("fp32-g1-full-ntd-tails", "float32", (37, 5, 20), (40, 9, 21), 2, 2, 40, 0, "", (16, 16, 0)),
    ("fp16-g2-leftup-tnd-uploops", "float16", (37, 5, 20), (40, 9, 21), 4, 2, 40, 2, "same_as_input", (16, 32, 4)),
    ("bf16-g4-rightdown-ntd", "bfloat16", (21, 3, 30), (33, 3, 30), 8, 2, 32, 3, "", (16, 16, 5)),
    ("fp16-g1-rightdown-tnd-auto", "float16", (45, 17), (60, 17), 2, 2, 64, 3, "same_as_input", (0, 0, 0)),
    ("bf16-g2-full-tnd-auto", "bfloat16", (9, 30, 4), (12, 25, 40), 4, 2, 24, 0, "same_as_input", (0, 0, 0)),
    ("fp32-g4-leftup-ntd-vec3", "float32", (19, 26), (23, 20), 4, 1, 16, 2, "", (8, 16, 3)),
    ("fp16-g2-full-ntd-zero-len", "float16", (6, 0, 11, 0), (7, 5, 0, 0), 4, 2, 40, 0, "", (16, 16, 0)),
    ("fp32-g2-rightdown-tnd-s2tail", "float32", (13, 18), (29, 18), 2, 1, 8, 3, "same_as_input", (16, 24, 0)),
    # band rules (pre/next from samples.MODE_TOKENS): kept columns start inside a tile (unaligned)
    ("fp32-g2-band-ntd", "float32", (21, 9, 26), (24, 9, 27), 4, 2, 16, 4, "", (8, 16, 3)),
    ("fp16-g1-band-tnd", "float16", (40, 5), (43, 7), 2, 2, 40, 4, "same_as_input", (16, 16, 0)),
    ("bf16-g2-rightdown-band", "bfloat16", (17, 0, 22), (20, 4, 25), 4, 2, 32, 7, "", (8, 16, 0)),
    ("fp32-g4-band-leftup", "float32", (0, 19, 23), (3, 25, 23), 4, 1, 24, 8, "same_as_input", (8, 16, 5)),
    # prefix (mode 6): kept columns [0, max(i + delta + 1, prefix_b)), prefix from samples.fa_case
    ("fp16-g2-prefix-ntd", "float16", (19, 30, 6), (25, 21, 9), 4, 2, 32, 6, "", (16, 16, 0)),
    ("fp32-g1-prefix-tnd", "float32", (12, 7), (12, 20), 2, 2, 16, 6, "same_as_input", (8, 8, 0)),
]


@pytest.mark.parametrize("case_id,dtype,seq_q,seq_kv,nq,nkv,d,mode,layout,hints", CASES, ids=[c[0] for c in CASES])
def test_matches_torch_op(fag, case_id, dtype, seq_q, seq_kv, nq, nkv, d, mode, layout, hints):
    case = make_case(dtype, seq_q, seq_kv, nq, nkv, d, mode, layout)
    s1, s2, vec_rows = hints
    rc, msg, info, grads = run_sim(fag, case, s1=s1, s2=s2, vec_rows=vec_rows)
    assert rc == OK, msg
    for got, ref in zip(grads, case["ref"]):
        assert_close(got, ref, dtype)
    # tail rows (beyond the last cumulative length) come out as zeros
    tq, tk = sum(seq_q), sum(seq_kv)
    assert not grads[0][tq:].any() and not grads[1][tk:].any() and not grads[2][tk:].any()
    assert info[UB_PEAK] <= UB


def test_tiling_branches_exercised(fag):
    """Several cores, query and key tails, several UB loops per tile in one run."""
    case = make_case("float16", (37, 5, 20), (40, 9, 21), 4, 2, 40, 2, "same_as_input")
    rc, msg, info, _ = run_sim(fag, case, s1=16, s2=32, vec_rows=4)
    assert rc == OK, msg
    assert info[BLOCK_DIM] == 8 and info[UNITS] > info[BLOCK_DIM]
    assert 37 % info[S1_BLOCK] and 40 % info[S2_BLOCK]          # query and key tails
    assert info[VEC_ROWS] < info[S1_BLOCK]                        # UB loops inside a tile
    auto = make_case("float32", (300, 70), (320, 90), 2, 1, 32, 3, "")
    rc, msg, info, grads = run_sim(fag, auto, cores=48)
    assert rc == OK, msg
    assert info[S1_BLOCK] <= 128 and info[S2_BLOCK] <= 512 and info[UB_PLANNED] <= UB
    for got, ref in zip(grads, auto["ref"]):
        assert_close(got, ref, "float32")


@pytest.mark.parametrize("cores", [1, 3, 48])
def test_core_split_does_not_change_the_result(fag, cores):
    """Another split over cores only changes the order of the fp32 atomic adds."""
    case = make_case("float32", (29, 3, 17), (31, 6, 17), 4, 2, 24, 3, "same_as_input")
    rc, msg, info, grads = run_sim(fag, case, cores=cores, s1=8, s2=16)
    assert rc == OK, msg
    assert info[BLOCK_DIM] == min(cores, info[UNITS])
    for got, ref in zip(grads, case["ref"]):
        assert_close(got, ref, "float32")


def test_tiling_for_a_larger_ub_overflows_in_simulation(fag):
    """A tiling computed for 1 MiB of UB does not fit the simulated 192 KiB: the launch must fail."""
    case = make_case("float16", (100, 40), (300, 40), 2, 2, 64, 0, "")
    rc, msg, info, _ = run_sim(fag, case, tiling_ub=1024 * 1024, sim_ub=UB)
    assert rc == UB_OVERFLOW and "UB overflow" in msg, msg
    # a forced vector chunk too large for UB: the main phase's TPipe::InitBuffer fails
    rc, msg, info, _ = run_sim(fag, case, s1=64, s2=256, vec_rows=64)
    assert rc == UB_OVERFLOW and "UB overflow" in msg and "[rule BUFFER_SIZE]" in msg, msg
    assert info[UB_PLANNED] > UB


def test_unsupported_inputs_are_refused_by_the_tiling(fag):
    case = make_case("float16", (5, 3), (5, 3), 2, 2, 16, 0, "")
    for mode in (0, 1):  # a full-mask mode whose mask is not passed
        rc, msg, *_ = run_sim(fag, case, sparse_mode=mode, has_mask=True)
        assert rc == TILING_ERROR and "full mask" in msg, msg
    rc, msg, *_ = run_sim(fag, case, sparse_mode=5, has_mask=True)
    assert rc == TILING_ERROR and "sparse_mode" in msg, msg


# Feature branches (issue 19): full masks (modes 0 / 1, local and global forms, mask tiles applied with
# Select), every pse form and type, dropout (explicit drop_mask, keep_prob scaling), and combinations.
FEATURES = [
    # id: dtype, seq_q, seq_kv, Nq, Nkv, D, mode, layout, hints, features
    ("fp16-mode0-local-band", "float16", (21, 9, 26), (24, 9, 27), 4, 2, 32, 0, "", (16, 16, 0),
     dict(full_mask="local")),
    ("bf16-mode1-global", "bfloat16", (19, 30, 6), (25, 21, 9), 4, 2, 40, 1, "same_as_input", (16, 32, 5),
     dict(full_mask="global")),
    ("fp32-mode1-local-tails", "float32", (37, 5), (40, 9), 2, 1, 24, 1, "", (16, 16, 3), dict(full_mask="local")),
    ("fp32-pse0-full", "float32", (13, 18), (29, 18), 4, 2, 16, 0, "", (8, 16, 0), dict(pse_type=0)),
    ("fp16-pse1-full-rightdown", "float16", (21, 3, 30), (33, 3, 30), 4, 2, 32, 3, "same_as_input", (16, 16, 0),
     dict(pse_type=1)),
    ("bf16-pse1-row-band", "bfloat16", (21, 9, 26), (24, 9, 27), 4, 2, 32, 4, "", (8, 16, 3),
     dict(pse_type=1, pse_form="row")),
    ("fp32-pse2-slopes-leftup", "float32", (19, 26), (23, 20), 4, 1, 16, 2, "same_as_input", (8, 16, 0),
     dict(pse_type=2)),
    ("fp16-pse3-slopes-batch-mode0", "float16", (12, 7), (12, 20), 2, 2, 16, 0, "", (8, 8, 0),
     dict(pse_type=3, pse_form="slopes_batch", full_mask="global")),
    ("fp32-dropout", "float32", (13, 18), (29, 18), 2, 1, 24, 0, "", (8, 16, 3), dict(dropout=True)),
    ("fp16-dropout-band", "float16", (21, 9, 26), (24, 9, 27), 4, 2, 32, 4, "same_as_input", (16, 16, 0),
     dict(dropout=True)),
    ("bf16-dropout-pse0-mode1", "bfloat16", (17, 22), (20, 25), 4, 2, 16, 1, "", (8, 16, 0),
     dict(dropout=True, pse_type=0, full_mask="local")),
    ("fp32-dropout-prefix", "float32", (12, 7), (12, 20), 2, 2, 16, 6, "same_as_input", (8, 8, 0), dict(dropout=True)),
    ("fp16-dropout-mode1-zero-len", "float16", (6, 0, 11, 0), (7, 5, 0, 0), 4, 2, 40, 1, "", (16, 16, 0),
     dict(dropout=True, full_mask="local")),
]


@pytest.mark.parametrize("case_id,dtype,seq_q,seq_kv,nq,nkv,d,mode,layout,hints,features", FEATURES,
                         ids=[c[0] for c in FEATURES])
def test_feature_branches_match_torch_op(fag, case_id, dtype, seq_q, seq_kv, nq, nkv, d, mode, layout, hints,
                                         features):
    case = make_case(dtype, seq_q, seq_kv, nq, nkv, d, mode, layout, **features)
    s1, s2, vec_rows = hints
    rc, msg, info, grads = run_sim(fag, case, s1=s1, s2=s2, vec_rows=vec_rows)
    assert rc == OK, msg
    assert info[PSE] == PSE_FORMS[case["plan"].pse_form]
    for got, ref in zip(grads, case["ref"]):
        assert_close(got, ref, dtype)
    tq, tk = sum(seq_q), sum(seq_kv)
    assert not grads[0][tq:].any() and not grads[1][tk:].any() and not grads[2][tk:].any()
    assert info[UB_PEAK] <= UB


def test_compressed_alibi_pse_with_a_full_mask(fag):
    """The [B, N1, 1024, maxS2] ALiBi form (some S1 > 1024): values below the diagonal from the last row,
    above it (sparse_mode 0, next_tokens 1) from the last column."""
    case = make_case("float16", (1030, 7), (1030, 7), 2, 1, 16, 0, "", pse_type=1, pse_form="alibi",
                     full_mask="local", tail_rows=0)
    rc, msg, info, grads = run_sim(fag, case, cores=16)
    assert rc == OK, msg
    assert info[PSE] == PSE_FORMS["alibi"]
    for got, ref in zip(grads, case["ref"]):
        assert_close(got, ref, "float16")


@pytest.mark.parametrize("seq_q,seq_kv,mode,features", [
    ((29, 3, 17), (31, 6, 17), 0, dict(full_mask="local", pse_type=2, dropout=True)),
    ((9, 0, 14), (12, 5, 14), 3, dict(dropout=True)),  # kv rows of the empty sequence stay 0
])
def test_deterministic_accumulation_is_bitwise_independent_of_the_core_split(fag, seq_q, seq_kv, mode, features):
    """The deterministic branch accumulates dk / dv per kv-major unit on one core in a fixed order, dq per
    query unit: the same bits for any core count (and still the torch op's values)."""
    case = make_case("float32", seq_q, seq_kv, 4, 2, 24, mode, "same_as_input", **features)
    results = []
    for cores in (1, 3, 8):
        rc, msg, info, grads = run_sim(fag, case, cores=cores, s1=8, s2=16, deterministic=True)
        assert rc == OK, msg
        assert info[KV_UNITS] > 0
        results.append(grads)
    for got, ref in zip(results[0], case["ref"]):
        assert_close(got, ref, "float32")
    for other in results[1:]:
        assert all(torch.equal(a, b) for a, b in zip(results[0], other))
