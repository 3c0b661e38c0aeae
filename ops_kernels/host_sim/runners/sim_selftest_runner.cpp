/*
 * Self-tests of the AscendC host emulation (C ABI, host-sim build only).
 *
 *   ascend_attn_sim_cast      : one Cast between two dtypes with a RoundMode, through UB
 *   ascend_attn_sim_matmul    : C = A x B with the Matmul high-level API, rows split over blocks
 *   ascend_attn_sim_selftest  : small kernels; cases 0..9 compute results the test checks
 *                               against numpy, cases >= 10 misuse the API on purpose and must
 *                               fail with a specific status code.
 * They document by example how a kernel is launched (see also ring_attention_update_runner.cpp).
 */
#include <cstdint>
#include <functional>
#include <string>

#include "ascend_attn_sim/runtime.h"
#include "kernel_operator.h"
#include "lib/matmul_intf.h"

using namespace AscendC;
namespace sim = AscendC::sim;

namespace {

// dtype codes of ascend_attn_sim_cast
enum Code : int64_t { kF16 = 0, kBF16 = 1, kF32 = 2, kI8 = 3, kI32 = 4, kI16 = 5, kU8 = 6 };

int64_t SizeOf(int64_t code)
{
    switch (code) {
        case kF16:
        case kBF16:
        case kI16: return 2;
        case kF32:
        case kI32: return 4;
        default: return 1;
    }
}

template <typename S, typename D>
void CastKernel(GM_ADDR src, GM_ADDR dst, int64_t n, RoundMode mode)
{
    constexpr int64_t chunk = 1024;
    TPipe pipe;
    TQue<TPosition::VECIN, 1> qin;
    TQue<TPosition::VECOUT, 1> qout;
    pipe.InitBuffer(qin, 1, chunk * sizeof(S));
    pipe.InitBuffer(qout, 1, chunk * sizeof(D));
    GlobalTensor<S> s;
    GlobalTensor<D> d;
    s.SetGlobalBuffer((__gm__ S*)src, n);
    d.SetGlobalBuffer((__gm__ D*)dst, n);
    for (int64_t off = 0; off < n; off += chunk) {
        const int64_t len = n - off < chunk ? n - off : chunk;
        LocalTensor<S> a = qin.AllocTensor<S>();
        DataCopyPad(a, s[off], {1, static_cast<uint32_t>(len * sizeof(S)), 0, 0, 0}, {false, 0, 0, 0});
        qin.EnQue(a);
        a = qin.DeQue<S>();
        LocalTensor<D> b = qout.AllocTensor<D>();
        Cast(b, a, mode, static_cast<uint32_t>(len));
        qin.FreeTensor(a);
        qout.EnQue(b);
        b = qout.DeQue<D>();
        DataCopyPad(d[off], b, {1, static_cast<uint32_t>(len * sizeof(D)), 0, 0, 0});
        qout.FreeTensor(b);
    }
}

template <typename S>
std::function<void(GM_ADDR, GM_ADDR, int64_t, RoundMode)> PickDst(int64_t dst)
{
    switch (dst) {
        case kF16: return CastKernel<S, half>;
        case kBF16: return CastKernel<S, bfloat16_t>;
        case kF32: return CastKernel<S, float>;
        case kI8: return CastKernel<S, int8_t>;
        case kI32: return CastKernel<S, int32_t>;
        case kI16: return CastKernel<S, int16_t>;
        case kU8: return CastKernel<S, uint8_t>;
        default: return nullptr;
    }
}

std::function<void(GM_ADDR, GM_ADDR, int64_t, RoundMode)> PickCast(int64_t src, int64_t dst)
{
    switch (src) {
        case kF16: return PickDst<half>(dst);
        case kBF16: return PickDst<bfloat16_t>(dst);
        case kF32: return PickDst<float>(dst);
        case kI8: return PickDst<int8_t>(dst);
        case kI32: return PickDst<int32_t>(dst);
        case kI16: return PickDst<int16_t>(dst);
        case kU8: return PickDst<uint8_t>(dst);
        default: return nullptr;
    }
}

// ---- self-test kernels -------------------------------------------------------------------------------
// All use x = in (float), y = out (float).

// 0: row broadcast through Brcb + level-0 Mul (src1 block stride 0): y[r, :] = x[r, :] * x[512 + r]
//    for 8 rows of 64; then a level-0 Adds on the odd DataBlocks only (blk stride 2, mask 32).
void RowBroadcast(GM_ADDR in, GM_ADDR out)
{
    TPipe pipe;
    TBuf<TPosition::VECCALC> buf;
    pipe.InitBuffer(buf, (512 + 8 + 64 + 512) * sizeof(float));
    GlobalTensor<float> x, y;
    x.SetGlobalBuffer((__gm__ float*)in, 520);
    y.SetGlobalBuffer((__gm__ float*)out, 512);
    LocalTensor<float> all = buf.Get<float>();
    LocalTensor<float> rows = all;
    LocalTensor<float> scal = all[512];
    LocalTensor<float> bc = all[512 + 8];
    LocalTensor<float> res = all[512 + 8 + 64];
    DataCopy(rows, x, 512);
    DataCopy(scal, x[512], 8);
    Brcb(bc, scal, 1, {1, 8});                                  // 8 blocks: block r = scal[r] x 8
    Mul(res, rows, bc, 64, 8, {1, 1, 0, 8, 8, 1});              // repeat r: row r times block r
    Adds(res[8], res[8], 1000.0f, 32, 8, {2, 2, 8, 8});         // blocks 1, 3, 5, 7 of each row += 1000
    DataCopy(y, res, 512);
}

// 1: Compare + Select: y[i] = x[i] > x[64 + i] ? x[i] : x[64 + i]; y[64 + i] = x[i] < 0 ? x[i] : -1
void CompareSelect(GM_ADDR in, GM_ADDR out)
{
    TPipe pipe;
    TBuf<TPosition::VECCALC> buf;
    TBuf<TPosition::VECCALC> maskBuf;
    pipe.InitBuffer(buf, 4 * 64 * sizeof(float));
    pipe.InitBuffer(maskBuf, 64);
    GlobalTensor<float> x, y;
    x.SetGlobalBuffer((__gm__ float*)in, 128);
    y.SetGlobalBuffer((__gm__ float*)out, 128);
    LocalTensor<float> a = buf.Get<float>();
    LocalTensor<float> b = a[64];
    LocalTensor<float> r0 = a[128];
    LocalTensor<float> r1 = a[192];
    LocalTensor<uint8_t> m = maskBuf.Get<uint8_t>();
    DataCopy(a, x, 128);
    Compare(m, a, b, CMPMODE::GT, 64);
    Select(r0, m, a, b, SELMODE::VSEL_TENSOR_TENSOR_MODE, 64);
    CompareScalar(m, a, 0.0f, CMPMODE::LT, 64);
    Select(r1, m, a, -1.0f, SELMODE::VSEL_TENSOR_SCALAR_MODE, 64);
    DataCopy(y, r0, 128);
}

// 2: y[0] = max(x[0:200]), y[1] = its index (uint32 bits), y[2] = sum(x[0:200]), y[3] = exp(x[0]),
//    y[4..7] = 0
void Reduce(GM_ADDR in, GM_ADDR out)
{
    TPipe pipe;
    TBuf<TPosition::VECCALC> buf;
    pipe.InitBuffer(buf, (200 + 8 + 16 + 16) * sizeof(float));
    GlobalTensor<float> x, y;
    x.SetGlobalBuffer((__gm__ float*)in, 200);
    y.SetGlobalBuffer((__gm__ float*)out, 8);
    LocalTensor<float> v = buf.Get<float>();
    LocalTensor<float> res = v[200];
    LocalTensor<float> work = v[208];
    LocalTensor<float> tmp = v[224];
    DataCopyPad(v, x, {1, 200 * sizeof(float), 0, 0, 0}, {false, 0, 0, 0});
    Duplicate(res, 0.0f, 8);
    ReduceMax(res, v, work, 200, true);
    ReduceSum(tmp, v, work, 200);
    Exp(tmp[8], v, 1);
    event_t e = static_cast<event_t>(GetTPipePtr()->FetchEventID(HardEvent::V_S));
    SetFlag<HardEvent::V_S>(e);
    WaitFlag<HardEvent::V_S>(e);
    res.SetValue(2, tmp.GetValue(0));
    res.SetValue(3, tmp.GetValue(8));
    DataCopy(y, res, 8);
}

// 3: two phases over all blocks with SyncAll (threaded launch): every block writes its id to
//    scratch, then reads its right neighbour's value into y[block * 8].
void SyncPhases(GM_ADDR scratch, GM_ADDR out)
{
    TPipe pipe;
    TBuf<TPosition::VECCALC> buf;
    pipe.InitBuffer(buf, 32);
    const int64_t b = GetBlockIdx();
    const int64_t n = GetBlockNum();
    GlobalTensor<float> s, y;
    s.SetGlobalBuffer((__gm__ float*)scratch, n * 8);
    y.SetGlobalBuffer((__gm__ float*)out, n * 8);
    LocalTensor<float> v = buf.Get<float>();
    Duplicate(v, static_cast<float>(b), 8);
    DataCopy(s[b * 8], v, 8);
    SyncAll();
    DataCopy(v, s[((b + 1) % n) * 8], 8);
    DataCopy(y[b * 8], v, 8);
}

// Matmul: block b computes rows [m0, m0 + m) of C = A x B (A [M, K] or [K, M] when transA,
// B [K, N] or [N, K] when transB); mode 0: IterateAll to GM, 1: Iterate + GetTensorC to GM.
template <typename AT, typename CT>
void MatmulKernel(GM_ADDR a, GM_ADDR b, GM_ADDR c, const TCubeTiling* tiling, int64_t mode, bool transA, bool transB,
                  uint64_t quantWord = 0)
{
    using AType = MatmulType<TPosition::GM, CubeFormat::ND, AT>;
    using CType = MatmulType<TPosition::GM, CubeFormat::ND, CT>;
    TPipe pipe;
    Matmul<AType, AType, CType> mm;
    REGIST_MATMUL_OBJ(&pipe, GetSysWorkSpacePtr(), mm, tiling);
    const int64_t M = tiling->M, N = tiling->N, K = tiling->Ka;
    const int64_t m0 = GetBlockIdx() * tiling->singleCoreM;
    const int64_t m = M - m0 < tiling->singleCoreM ? M - m0 : tiling->singleCoreM;
    if (m <= 0) {
        return;
    }
    GlobalTensor<AT> ga, gb;
    GlobalTensor<CT> gc;
    ga.SetGlobalBuffer((__gm__ AT*)a, M * K);
    gb.SetGlobalBuffer((__gm__ AT*)b, K * N);
    gc.SetGlobalBuffer((__gm__ CT*)c, M * N);
    mm.SetOrgShape(M, N, K);
    mm.SetSingleShape(m, N, K);
    mm.SetTensorA(transA ? ga[m0] : ga[m0 * K], transA);
    mm.SetTensorB(gb, transB);
    if (quantWord != 0) {
        mm.SetQuantScalar(quantWord);
    }
    if (mode == 0) {
        mm.IterateAll(gc[m0 * N]);
    } else {
        while (mm.Iterate()) {
            mm.GetTensorC(gc[m0 * N]);
        }
    }
    mm.End();
}

// error cases (>= 10): each must throw the status the test expects
void Misuse(int64_t c, GM_ADDR in, GM_ADDR out)
{
    TPipe pipe;
    TQue<TPosition::VECIN, 2> q;
    TBuf<TPosition::VECCALC> buf;
    GlobalTensor<float> x, y;
    x.SetGlobalBuffer((__gm__ float*)in);
    y.SetGlobalBuffer((__gm__ float*)out);
    switch (c) {
        case 10: {  // queue depth 2 exceeded (3 buffers, 3 EnQue without DeQue)
            pipe.InitBuffer(q, 3, 256);
            for (int i = 0; i < 3; ++i) {
                q.EnQue(q.AllocTensor<float>());
            }
            break;
        }
        case 11: {  // DataCopy of 9 floats = 36 bytes
            pipe.InitBuffer(buf, 256);
            DataCopy(buf.Get<float>(), x, 9);
            break;
        }
        case 12: {  // UB overflow
            pipe.InitBuffer(q, 2, 100 * 1024);
            break;
        }
        case 13: {  // use after FreeTensor
            pipe.InitBuffer(q, 2, 256);
            LocalTensor<float> t = q.AllocTensor<float>();
            q.FreeTensor(t);
            Duplicate(t, 1.0f, 8);
            break;
        }
        case 14: {  // GM read beyond the registered input (64 floats)
            pipe.InitBuffer(buf, 1024);
            DataCopy(buf.Get<float>(), x[32], 64);
            break;
        }
        case 15: {  // coverage gap: writes only the first 32 of 64 output floats
            pipe.InitBuffer(buf, 256);
            Duplicate(buf.Get<float>(), 0.0f, 64);
            DataCopy(y, buf.Get<float>(), 32);
            break;
        }
        case 16: {  // vector operand not 32-byte aligned
            pipe.InitBuffer(buf, 256);
            LocalTensor<float> t = buf.Get<float>();
            Add(t, t[1], t, 8);
            break;
        }
        case 17: {  // leaked buffer (AllocTensor without FreeTensor)
            pipe.InitBuffer(q, 2, 256);
            LocalTensor<float> t = q.AllocTensor<float>();
            Duplicate(t, 1.0f, 8);
            break;
        }
        case 18: {  // SyncAll with sequential blocks
            SyncAll();
            break;
        }
        case 19: {  // partial overlap of dst and src
            pipe.InitBuffer(buf, 512);
            LocalTensor<float> t = buf.Get<float>();
            Add(t[8], t, t, 64);
            break;
        }
        case 20: {  // DeQue on an empty queue
            pipe.InitBuffer(q, 2, 256);
            q.DeQue<float>();
            break;
        }
        case 21: {  // write to a read-only input
            pipe.InitBuffer(buf, 256);
            Duplicate(buf.Get<float>(), 0.0f, 8);
            DataCopy(x, buf.Get<float>(), 8);
            break;
        }
        case 22: {  // compute on a tensor still inside its queue
            pipe.InitBuffer(q, 2, 256);
            LocalTensor<float> t = q.AllocTensor<float>();
            q.EnQue(t);
            Duplicate(t, 1.0f, 8);
            break;
        }
        case 23: {  // DataCopyPad blockCount beyond 4095
            pipe.InitBuffer(buf, 160 * 1024);
            DataCopyPad(buf.Get<float>(), x, {4096, 4, 0, 0, 0}, {false, 0, 0, 0});
            break;
        }
        case 24: {  // level-0 bit mask selecting no element
            pipe.InitBuffer(buf, 256);
            LocalTensor<float> t = buf.Get<float>();
            uint64_t none[2] = {0, 0};
            Adds(t, t, 1.0f, none, 1, UnaryRepeatParams(1, 1, 8, 8));
            break;
        }
        case 25: {  // level-0 repeats reaching beyond the tensor (8 repeats of 256 bytes in 256 bytes)
            pipe.InitBuffer(buf, 256);
            LocalTensor<float> t = buf.Get<float>();
            Duplicate(t, 0.0f, 64, 8, 1, 8);
            break;
        }
        case 26: {  // vector operand in L1 (A1), not in UB
            TBuf<TPosition::A1> l1;
            pipe.InitBuffer(l1, 256);
            LocalTensor<float> t = l1.Get<float>();
            Duplicate(t, 0.0f, 8);
            break;
        }
        default: sim::Fail(sim::kInvalidArgument, "selftest: unknown case");
    }
}

}  // namespace

extern "C" {

// Cast n elements from src (dtype code src_dtype) to dst (dst_dtype) with RoundMode round_mode
// (0 NONE, 1 RINT, 2 FLOOR, 3 CEIL, 4 ROUND, 5 TRUNC, 6 ODD). Codes: 0 f16, 1 bf16, 2 f32, 3 i8,
// 4 i32, 5 i16, 6 u8.
int ascend_attn_sim_cast(int64_t src_dtype, int64_t dst_dtype, int64_t round_mode, const void* src, void* dst, int64_t n,
                         char* msg, int64_t msg_len)
{
    return sim::GuardedCall(
        [&](std::string& m) {
            auto kernel = PickCast(src_dtype, dst_dtype);
            if (!kernel || round_mode < 0 || round_mode > 6 || n < 1) {
                m = "ascend_attn_sim_cast: bad dtype code, round mode or n";
                return static_cast<int>(sim::kInvalidArgument);
            }
            sim::Launch launch;
            launch.Input("src", src, static_cast<uint64_t>(n * SizeOf(src_dtype)));
            launch.Output("dst", dst, static_cast<uint64_t>(n * SizeOf(dst_dtype)));
            auto gm = [](const void* p) { return reinterpret_cast<GM_ADDR>(const_cast<void*>(p)); };
            return launch.Run(1, 0, [&] { kernel(gm(src), gm(dst), n, static_cast<RoundMode>(round_mode)); }, &m);
        },
        msg, msg_len);
}

// C = A x B on `blocks` cores. ab_dtype: 0 f16, 1 bf16 (C float32), 3 i8 (C int32), 4 i8 with C
// float16 dequantised by SetQuantScalar(quant_word).
int ascend_attn_sim_matmul(int64_t ab_dtype, const void* a, const void* b, void* c, int64_t M, int64_t N, int64_t K,
                           int64_t trans_a, int64_t trans_b, int64_t base_m, int64_t base_n, int64_t base_k,
                           int64_t iterate_order, int64_t mode, int64_t blocks, uint64_t quant_word, char* msg,
                           int64_t msg_len)
{
    return sim::GuardedCall(
        [&](std::string& m) {
            if (blocks < 1 || M < 1 || N < 1 || K < 1) {
                m = "ascend_attn_sim_matmul: bad sizes";
                return static_cast<int>(sim::kInvalidArgument);
            }
            TCubeTiling t;
            t.M = static_cast<int32_t>(M);
            t.N = static_cast<int32_t>(N);
            t.Ka = t.Kb = static_cast<int32_t>(K);
            t.usedCoreNum = static_cast<int32_t>(blocks);
            t.singleCoreM = static_cast<int32_t>((M + blocks - 1) / blocks);
            t.singleCoreN = static_cast<int32_t>(N);
            t.singleCoreK = static_cast<int32_t>(K);
            t.baseM = static_cast<int32_t>(base_m);
            t.baseN = static_cast<int32_t>(base_n);
            t.baseK = static_cast<int32_t>(base_k);
            t.iterateOrder = static_cast<int32_t>(iterate_order);
            const int64_t ab = ab_dtype >= 3 ? 1 : 2;
            const int64_t cb = ab_dtype == 4 ? 2 : 4;
            sim::Launch launch;
            launch.Input("a", a, static_cast<uint64_t>(M * K * ab));
            launch.Input("b", b, static_cast<uint64_t>(K * N * ab));
            launch.Output("c", c, static_cast<uint64_t>(M * N * cb));
            auto gm = [](const void* p) { return reinterpret_cast<GM_ADDR>(const_cast<void*>(p)); };
            std::function<void()> k;
            switch (ab_dtype) {
                case 0: k = [&] { MatmulKernel<half, float>(gm(a), gm(b), gm(c), &t, mode, trans_a, trans_b); }; break;
                case 1: k = [&] { MatmulKernel<bfloat16_t, float>(gm(a), gm(b), gm(c), &t, mode, trans_a, trans_b); }; break;
                case 3: k = [&] { MatmulKernel<int8_t, int32_t>(gm(a), gm(b), gm(c), &t, mode, trans_a, trans_b); }; break;
                case 4:
                    k = [&] { MatmulKernel<int8_t, half>(gm(a), gm(b), gm(c), &t, mode, trans_a, trans_b, quant_word); };
                    break;
                default: m = "ascend_attn_sim_matmul: ab_dtype must be 0, 1, 3 or 4"; return static_cast<int>(sim::kInvalidArgument);
            }
            const int rc = launch.Run(blocks, 0, k, &m);
            if (rc != sim::kOk) {
                m = std::string(sim::StatusName(rc)) + ": " + m;
            }
            return rc;
        },
        msg, msg_len);
}

// Run self-test case `c` with float input `in` (n_in) and float output `out` (n_out).
int ascend_attn_sim_selftest(int64_t c, const float* in, int64_t n_in, float* out, int64_t n_out, int64_t blocks,
                             char* msg, int64_t msg_len)
{
    return sim::GuardedCall(
        [&](std::string& m) {
            sim::Config cfg;
            cfg.threaded = (c == 3);
            sim::Launch launch(cfg);
            std::vector<float> scratch(static_cast<size_t>(blocks > 0 ? blocks * 8 : 8), 0.0f);
            if (c == 3) {
                launch.Scratch("scratch", scratch.data(), scratch.size() * sizeof(float));
            } else {
                launch.Input("in", in, static_cast<uint64_t>(n_in) * sizeof(float));
            }
            launch.Output("out", out, static_cast<uint64_t>(n_out) * sizeof(float));
            auto gmIn = reinterpret_cast<GM_ADDR>(const_cast<float*>(in));
            auto gmOut = reinterpret_cast<GM_ADDR>(out);
            std::function<void()> k;
            switch (c) {
                case 0: k = [&] { RowBroadcast(gmIn, gmOut); }; break;
                case 1: k = [&] { CompareSelect(gmIn, gmOut); }; break;
                case 2: k = [&] { Reduce(gmIn, gmOut); }; break;
                case 3: k = [&] { SyncPhases(reinterpret_cast<GM_ADDR>(scratch.data()), gmOut); }; break;
                default: k = [&] { Misuse(c, gmIn, gmOut); }; break;
            }
            const int rc = launch.Run(blocks > 0 ? blocks : 1, 0, k, &m);
            if (rc != sim::kOk) {
                m = std::string(sim::StatusName(rc)) + ": " + m;
            }
            return rc;
        },
        msg, msg_len);
}

}  // extern "C"
