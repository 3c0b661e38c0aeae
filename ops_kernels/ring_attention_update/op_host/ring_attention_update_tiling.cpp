/*
 * RingAttentionUpdate host tiling (pure C++; see ring_attention_update_tiling.h).
 *
 * Work unit = one statistics row (one (b, n, s) or (t, n) query row: 8 fp32 lanes of max/sum and
 * D attention elements). Rows are numbered in the memory order of the statistics, which is
 * contiguous for every layout; the cores get contiguous row ranges (the first `remainder` cores
 * one row more). Inside a core the kernel walks its rows in UB iterations of at most rowsPerLoop
 * rows that never cross a "run" of rows whose attention rows have a constant GM stride
 * (SBH: one (b, n); TND/NTD: one (sequence, head); TND/TND: everything). If a single row of D
 * elements does not fit the UB, the head dim is split into column chunks (a multiple of 32 bytes,
 * the last one the tail).
 */
#include "ring_attention_update_tiling.h"

#include <cstring>
#include <limits>

namespace ascend_attn {
namespace rau {
namespace {

int64_t AlignUp(int64_t v, int64_t a) { return (v + a - 1) / a * a; }

std::string Dims(const int64_t* d, int64_t n)
{
    std::string s = "[";
    for (int64_t i = 0; i < n; ++i) {
        s += (i ? ", " : "") + std::to_string(d[i]);
    }
    return s + "]";
}

}  // namespace

bool ComputeRingAttentionUpdateTiling(const RingAttentionUpdateShapeInfo& info, RingAttentionUpdateTilingData& td,
                                      std::string& error)
{
    std::memset(&td, 0, sizeof(td));
    auto fail = [&error](const std::string& m) {
        error = "RingAttentionUpdate tiling: " + m;
        return false;
    };
    if (info.attnDtype != kFloat16 && info.attnDtype != kBFloat16 && info.attnDtype != kFloat32) {
        return fail("attention dtype must be float16, bfloat16 or float32 (got code " + std::to_string(info.attnDtype) + ")");
    }
    const std::string layout = info.inputLayout ? info.inputLayout : "SBH";
    const std::string smLayout = info.softmaxLayout ? info.softmaxLayout : "";
    const int64_t* a = info.attnShape;
    const int64_t* st = info.statsShape;
    const std::string shapes = "attn " + Dims(a, info.attnDimNum) + ", softmax stats " + Dims(st, info.statsDimNum);
    int64_t rows = 0;
    if (layout == "SBH") {
        if (info.attnDimNum != 3 || info.statsDimNum != 4) {
            return fail("input_layout SBH needs attn [S, B, H] and stats [B, N, S, 8]; got " + shapes);
        }
        const int64_t s = a[0], b = a[1], h = a[2], n = st[1];
        if (st[0] != b || st[2] != s || st[3] != 8 || n <= 0 || s < 0 || b < 0 || h <= 0 || h % n != 0) {
            return fail("input_layout SBH needs attn [S, B, H] and stats [B, N, S, 8] with H % N == 0, H > 0; got " + shapes);
        }
        td.layoutMode = kSbh;
        td.batch = b;
        td.seqLen = s;
        td.headNum = n;
        td.headDim = h / n;
        rows = s * b * n;
    } else if (layout == "TND") {
        if (info.attnDimNum != 3 || info.statsDimNum != 3) {
            return fail("input_layout TND needs attn [T, N, D] and stats [T, N, 8]; got " + shapes);
        }
        const int64_t t = a[0], n = a[1], d = a[2];
        if (st[0] != t || st[1] != n || st[2] != 8 || t < 0 || n <= 0 || d <= 0) {
            return fail("input_layout TND needs attn [T, N, D] and stats [T, N, 8]; got " + shapes);
        }
        if (d % 64 != 0 || d > 768 || n > 256) {
            return fail("input_layout TND needs D % 64 == 0, D <= 768 and N <= 256; got D = " + std::to_string(d) +
                        ", N = " + std::to_string(n));
        }
        if (smLayout == "TND") {
            td.layoutMode = kTndTnd;
        } else if (smLayout.empty() || smLayout == "SBH") {
            if (info.actualSeqQlenNum < 2) {
                return fail("input_softmax_layout \"" + smLayout +
                            "\" (per-sequence NTD statistics) needs actual_seq_qlen with a leading 0 (>= 2 elements)");
            }
            td.layoutMode = kTndNtd;
            td.batch = info.actualSeqQlenNum - 1;
        } else {
            return fail("input_softmax_layout must be \"\", \"SBH\" or \"TND\"; got \"" + smLayout + "\"");
        }
        td.seqLen = t;
        td.headNum = n;
        td.headDim = d;
        rows = t * n;
    } else {
        return fail("input_layout must be \"SBH\" or \"TND\"; got \"" + layout + "\"");
    }
    if (info.coreNum < 1) {
        return fail("core count must be >= 1, got " + std::to_string(info.coreNum));
    }
    if (info.ubSize <= 0) {
        return fail("UB size must be positive, got " + std::to_string(info.ubSize));
    }
    td.attnDtype = info.attnDtype;
    td.totalRows = rows;

    // ---- cores: contiguous row ranges ---------------------------------------------------------
    td.usedCoreNum = rows < 1 ? 1 : (rows < info.coreNum ? rows : info.coreNum);
    td.coreRowsBase = rows / td.usedCoreNum;
    td.coreRowsRemainder = rows % td.usedCoreNum;
    const int64_t maxCoreRows = td.coreRowsBase + (td.coreRowsRemainder > 0 ? 1 : 0);

    // ---- UB iterations: rows x column chunk -------------------------------------------------------
    const int64_t dsize = RingAttentionUpdateDtypeSize(td.attnDtype);
    const int64_t blockElems = 32 / dsize;
    const int64_t colBytes = RingAttentionUpdateColBytes(dsize);
    const int64_t d = td.headDim;
    const int64_t ub = info.ubSize;
    if (RingAttentionUpdateUbBytes(1, AlignUp(d, blockElems), dsize) <= ub) {
        td.colsPerLoop = d;
    } else {
        const int64_t cols = ub > kStatRowBytes ? (ub - kStatRowBytes) / colBytes / blockElems * blockElems : 0;
        if (cols < blockElems) {
            return fail("ub_size " + std::to_string(ub) + " bytes cannot hold even one row tile (1 row x " +
                        std::to_string(blockElems) + " elements needs " +
                        std::to_string(RingAttentionUpdateUbBytes(1, blockElems, dsize)) + " bytes of UB)");
        }
        td.colsPerLoop = cols;
    }
    td.colsPerLoopAlign = AlignUp(td.colsPerLoop, blockElems);
    td.colLoops = (d + td.colsPerLoop - 1) / td.colsPerLoop;
    td.colTail = d - (td.colLoops - 1) * td.colsPerLoop;
    int64_t rowsFit = ub / RingAttentionUpdateUbBytes(1, td.colsPerLoopAlign, dsize);
    rowsFit = rowsFit < kMaxRowsPerLoop ? rowsFit : kMaxRowsPerLoop;
    td.rowsPerLoop = maxCoreRows < 1 ? 1 : (maxCoreRows < rowsFit ? maxCoreRows : rowsFit);
    td.ubBytes = RingAttentionUpdateUbBytes(td.rowsPerLoop, td.colsPerLoopAlign, dsize);

    // DataCopyPad: the GM gap between two attention rows of a tile is a uint32 byte count.
    const int64_t rowStride = td.layoutMode == kSbh ? td.batch * td.headNum * d : (td.layoutMode == kTndNtd ? td.headNum * d : d);
    if ((rowStride - td.colTail) * dsize > static_cast<int64_t>(std::numeric_limits<uint32_t>::max())) {
        return fail("attention row stride of " + std::to_string(rowStride) + " elements exceeds DataCopyPad's 4 GiB stride");
    }
    error.clear();
    return true;
}

}  // namespace rau
}  // namespace ascend_attn
