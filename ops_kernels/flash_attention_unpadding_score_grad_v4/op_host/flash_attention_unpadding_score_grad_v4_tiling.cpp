/*
 * FlashAttentionUnpaddingScoreGradV4 — pure host tiling (see the header for the decomposition).
 * No CANN types: the CANN TilingFunc (flash_attention_unpadding_score_grad_v4.cpp) and the host
 * simulation runner both call ComputeFagV4Tiling.
 */
#include "flash_attention_unpadding_score_grad_v4_tiling.h"

#include <algorithm>
#include <vector>

namespace fag_v4 {
namespace {

constexpr uint64_t kBlock = 32;        // bytes of one UB data block
constexpr uint64_t kWsAlign = 512;     // workspace region alignment
constexpr uint32_t kDefaultS1 = 128;   // cube M of one CV block (CANN FAG: 128 x 1024 CV blocks)
constexpr uint32_t kDefaultS2 = 512;
constexpr uint32_t kMinBlock = 16;
constexpr uint32_t kMaxPostRows = 1024;
constexpr uint64_t kL0ABytes = 64 * 1024, kL0CBytes = 128 * 1024;

uint64_t AlignUp(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }
uint64_t CeilDiv(uint64_t x, uint64_t a) { return (x + a - 1) / a; }

FagV4TilingResult Refuse(const char* msg)
{
    FagV4TilingResult r;
    r.status = 1;
    r.message = msg;
    return r;
}

// A TCubeTiling for C[M, N] = A[M, K] * B[K, N] on one core, base blocks sized for L0A/L0B/L0C.
void FillCube(AscendC::tiling::TCubeTiling& t, uint32_t m, uint32_t n, uint32_t k, uint32_t inBytes)
{
    t = AscendC::tiling::TCubeTiling{};
    const uint32_t kAlign = inBytes == 4 ? 8 : 16;
    t.usedCoreNum = 1;
    t.M = static_cast<int32_t>(m);
    t.N = static_cast<int32_t>(n);
    t.Ka = static_cast<int32_t>(k);
    t.Kb = static_cast<int32_t>(k);
    t.singleCoreM = t.M;
    t.singleCoreN = t.N;
    t.singleCoreK = t.Ka;
    uint32_t baseM = static_cast<uint32_t>(std::min<uint64_t>(128, AlignUp(m, 16)));
    uint32_t baseN = static_cast<uint32_t>(std::min<uint64_t>(128, AlignUp(n, 16)));
    // L0A/L0B double buffered: base * baseK * inBytes * 2 <= 64 KiB
    uint64_t maxK = kL0ABytes / (2ull * inBytes * std::max(baseM, baseN));
    uint32_t baseK = static_cast<uint32_t>(std::min<uint64_t>(AlignUp(k, kAlign), maxK / kAlign * kAlign));
    baseK = std::max(baseK, kAlign);
    // L0C (fp32) double buffered: baseM * baseN * 4 * 2 <= 128 KiB
    while (2ull * baseM * baseN * 4 > kL0CBytes && baseN > 16) {
        baseN /= 2;
    }
    t.baseM = static_cast<int32_t>(baseM);
    t.baseN = static_cast<int32_t>(baseN);
    t.baseK = static_cast<int32_t>(baseK);
    t.depthA1 = 2;
    t.depthB1 = 2;
    t.stepM = 1;
    t.stepN = 1;
    t.stepKa = 1;
    t.stepKb = 1;
    t.isBias = 0;
    t.iterateOrder = 0;
    t.dbL0A = 2;
    t.dbL0B = 2;
    t.dbL0C = 1;
}

// Contiguous unit ranges [start[c], start[c + 1]) for `cores` cores, balanced by cost; while units
// remain, every core gets at least one.
void SplitByCost(const std::vector<uint64_t>& cost, uint32_t cores, uint64_t* start)
{
    const uint64_t units = cost.size();
    uint64_t total = 0;
    for (uint64_t c : cost) {
        total += c;
    }
    start[0] = 0;
    uint64_t acc = 0, u = 0;
    for (uint32_t c = 0; c < cores; ++c) {
        const uint64_t target = total * (c + 1) / cores;
        const uint64_t maxEnd = units - std::min<uint64_t>(units, cores - 1 - c);  // one unit per remaining core
        while (u < maxEnd && (acc + cost[u] <= target || u == start[c])) {
            acc += cost[u];
            ++u;
        }
        if (c == cores - 1) {
            u = units;
        }
        start[c + 1] = u;
    }
}

}  // namespace

void FagV4RowRange(const FagV4TilingData& t, uint32_t b, int64_t r, int64_t s1, int64_t s2, int64_t prefixB,
                   int64_t& start, int64_t& end)
{
    const int64_t delta = s2 - s1;
    start = 0;
    end = s2;
    switch (t.maskKind) {
        case kMaskLeftUp: end = r + 1; break;
        case kMaskRightDown: end = r + delta + 1; break;
        case kMaskBand:
            start = r + delta - t.preTokens;
            end = r + delta + t.nextTokens + 1;
            break;
        case kMaskRightDownBand: end = r + delta + (b == t.bandLast ? t.nextTokens : 0) + 1; break;
        case kMaskBandLeftUp:
            end = (b == t.bandFirst) ? r + s2 - std::max<int64_t>(s1 - t.nextTokens, 0) + 1 : r + 1;
            break;
        case kMaskPrefix: end = std::max<int64_t>(r + delta + 1, prefixB); break;
        case kMaskFullBand:
            start = r - t.preTokens;
            end = r + t.nextTokens + 1;
            break;
        default: break;
    }
    start = std::min(std::max<int64_t>(start, 0), s2);
    end = std::min(std::max(end, start), s2);
}

uint64_t FagV4FeatureUbBytes(const FagV4TilingData& t, uint32_t s2Stride, uint32_t dtypeBytes)
{
    uint64_t bytes = 0;
    if (t.maskKind == kMaskFull || t.maskKind == kMaskFullBand) {
        // mask row bytes, as half, as compare bits
        bytes += AlignUp(s2Stride, kBlock) + AlignUp(2ull * s2Stride, kBlock) + AlignUp(s2Stride / 8, kBlock);
    }
    if (t.pseForm != kPseNone) {
        bytes += AlignUp(4ull * s2Stride, kBlock);  // fp32 bias row
        if (t.pseForm == kPseSlopes) {
            bytes += AlignUp(4ull * s2Stride, kBlock);  // column index ramp 0, 1, 2, ...
        } else if (dtypeBytes != 4) {
            bytes += AlignUp(static_cast<uint64_t>(dtypeBytes) * s2Stride, kBlock);  // pse row in the input dtype
        }
    }
    if (t.hasDrop) {
        bytes += AlignUp(s2Stride / 8 + 2, kBlock) + AlignUp(s2Stride / 8 + 1, kBlock);  // bytes read, bits aligned
    }
    return bytes;
}

uint64_t FagV4MainUbBytes(uint32_t s1Block, uint32_t s2Stride, uint32_t vecRows, uint32_t dAlignIn,
                          uint32_t dAlignF, uint32_t dtypeBytes, uint64_t featureBytes)
{
    const uint64_t tileF = AlignUp(static_cast<uint64_t>(vecRows) * s2Stride * 4, kBlock);
    const uint64_t tileT = AlignUp(static_cast<uint64_t>(vecRows) * s2Stride * dtypeBytes, kBlock);
    uint64_t bytes = 0;
    bytes += 2 * 2 * tileF;                                    // S and dP chunks, double buffered (VECIN)
    bytes += 2 * 2 * tileT;                                    // P and dS chunks, double buffered (VECOUT)
    bytes += 2 * AlignUp(static_cast<uint64_t>(s1Block) * 8 * 4, kBlock);  // softmax max / sum of the unit
    bytes += AlignUp(static_cast<uint64_t>(s1Block) * 4, kBlock);          // D_r = rowsum(dO * O)
    bytes += 2 * AlignUp(static_cast<uint64_t>(vecRows) * dAlignIn * dtypeBytes, kBlock);  // dO, O rows
    bytes += 2 * AlignUp(static_cast<uint64_t>(vecRows) * dAlignIn * 4, kBlock);          // fp32 copies / product
    bytes += AlignUp(static_cast<uint64_t>(dAlignF) * 4, kBlock) + kBlock;                // reduce work, result
    return bytes + featureBytes;
}

uint64_t FagV4PostUbBytes(uint32_t postRows, uint32_t d, uint32_t dtypeBytes)
{
    const uint64_t elems = static_cast<uint64_t>(postRows) * d;
    return 2 * AlignUp(elems * 4, kBlock) + 2 * AlignUp(elems * dtypeBytes, kBlock);
}

namespace {
// Scores the index rule keeps in rows [r0, r1) and key columns [j0, j1) of sequence b.
uint64_t KeptScores(const FagV4TilingData& t, uint32_t b, int64_t r0, int64_t r1, int64_t s1, int64_t s2,
                    int64_t prefixB, int64_t j0, int64_t j1)
{
    uint64_t kept = 0;
    for (int64_t r = r0; r < r1; ++r) {
        int64_t c0, c1;
        FagV4RowRange(t, b, r, s1, s2, prefixB, c0, c1);
        kept += static_cast<uint64_t>(std::max<int64_t>(0, std::min(c1, j1) - std::max(c0, j0)));
    }
    return kept;
}
}  // namespace

FagV4TilingResult ComputeFagV4Tiling(const FagV4TilingInput& in, FagV4TilingData& t)
{
    t = FagV4TilingData{};
    // ---- what the kernel supports ----------------------------------------------------------------
    if (in.n1 <= 0 || in.n2 <= 0 || in.n1 % in.n2 != 0 || in.n1 > 256) {
        return Refuse("head counts: need 0 < N1 <= 256 and N1 % N2 == 0");
    }
    if (in.d < 1 || in.d > 768) {
        return Refuse("head dim must be in [1, 768]");
    }
    if (in.dtypeBytes != 2 && in.dtypeBytes != 4) {
        return Refuse("dtype must be fp16, bf16 or fp32");
    }
    if (in.batch == 0 || in.batch > kMaxBatch || in.cumQ == nullptr || in.cumKv == nullptr) {
        return Refuse("actual_seq_qlen / actual_seq_kvlen: 1 to 2048 entries needed");
    }
    if (in.hasDropMask && !(in.keepProb > 0.0f && in.keepProb <= 1.0f)) {
        return Refuse("keep_prob must be in (0, 1] with a drop_mask");
    }
    if (!in.hasDropMask && in.keepProb != 1.0f) {
        return Refuse("keep_prob < 1 needs a drop_mask");
    }
    if (in.hasPse) {
        const bool slopes = in.pseForm == kPseSlopes;
        if (in.pseType < 0 || in.pseType > 3 || in.pseForm < kPseFull || in.pseForm > kPseSlopes ||
            slopes != (in.pseType >= 2)) {
            return Refuse("pse: pse_type 0/1 take the full, row or compressed form, 2/3 the slopes");
        }
        if (in.pseForm == kPseAlibi && (in.pseSRef <= 0 || (in.pseBatch != 1 && in.pseBatch != in.batch))) {
            return Refuse("pse: compressed form [B|1, N1, 1024, maxS2] expected");
        }
        if (slopes && in.pseBatch != 1 && in.pseBatch != in.batch) {
            return Refuse("pse: slopes [N1] or [B, N1] expected");
        }
    }
    uint32_t kind = kMaskNone;
    if (in.hasAttenMask) {
        switch (in.sparseMode) {
            case 0:
            case 1:
                if ((in.maskForm != 1 && in.maskForm != 2) || in.maskCols <= 0) {
                    return Refuse("sparse_mode 0 / 1 need a full mask, local [maxS1, maxS2] or global [T1, T2]");
                }
                kind = in.sparseMode == 0 ? kMaskFullBand : kMaskFull;
                break;
            case 2: kind = kMaskLeftUp; break;
            case 3: kind = kMaskRightDown; break;
            case 4: kind = kMaskBand; break;
            case 7: kind = kMaskRightDownBand; break;
            case 8: kind = kMaskBandLeftUp; break;
            case 6:
                if (in.prefix == nullptr) {
                    return Refuse("sparse_mode 6 needs prefix");
                }
                kind = kMaskPrefix;
                break;
            default:
                return Refuse("sparse_mode must be 0-4 or 6-8");
        }
    }
    if (in.ubSize < 8 * 1024 || in.coreNum == 0) {
        return Refuse("platform: UB size or core count too small");
    }

    // ---- sequences -----------------------------------------------------------------------------------
    std::vector<int64_t> s1(in.batch), s2(in.batch);
    int64_t prevQ = 0, prevK = 0, sumQ = 0, sumK = 0, maxS1 = 0, maxS2 = 0;
    for (uint32_t b = 0; b < in.batch; ++b) {
        s1[b] = std::max<int64_t>(0, in.cumQ[b] - prevQ);
        s2[b] = std::max<int64_t>(0, in.cumKv[b] - prevK);
        prevQ = in.cumQ[b];
        prevK = in.cumKv[b];
        sumQ += s1[b];
        sumK += s2[b];
        maxS1 = std::max(maxS1, s1[b]);
        maxS2 = std::max(maxS2, s2[b]);
    }
    if (sumQ > in.t1 || sumK > in.t2) {
        return Refuse("sum of sequence lengths exceeds T1 / T2");
    }

    t.t1 = in.t1;
    t.t2 = in.t2;
    t.n1 = static_cast<uint32_t>(in.n1);
    t.n2 = static_cast<uint32_t>(in.n2);
    t.g = t.n1 / t.n2;
    t.d = static_cast<uint32_t>(in.d);
    t.batch = in.batch;
    t.maskKind = kind;
    t.softmaxTnd = in.softmaxTnd ? 1u : 0u;
    t.scale = in.scale;
    t.preTokens = in.preTokens;
    t.nextTokens = in.nextTokens;
    t.bandFirst = 0;
    t.bandLast = 0;
    t.maskLocal = in.maskForm == 1 ? 1u : 0u;
    t.maskCols = in.maskCols;
    t.pseForm = in.hasPse ? in.pseForm : static_cast<uint32_t>(kPseNone);
    t.pseType = static_cast<uint32_t>(in.pseType);
    t.pseSlopesPerBatch = (in.hasPse && in.pseForm == kPseSlopes && in.pseBatch != 1) ? 1u : 0u;
    t.pseSRef = in.pseSRef;
    t.pseBatchStride = (in.hasPse && in.pseForm == kPseAlibi && in.pseBatch != 1) ? in.n1 * 1024 * in.pseSRef : 0;
    t.qStart = in.qStartIdx;
    t.kvStart = in.kvStartIdx;
    t.hasDrop = in.hasDropMask ? 1u : 0u;
    t.keepScale = in.hasDropMask ? 1.0f / in.keepProb : 1.0f;
    t.deterministic = in.deterministic ? 1u : 0u;
    bool anyRows = false;
    for (uint32_t b = 0; b < in.batch; ++b) {
        if (s1[b] > 0) {
            t.bandFirst = anyRows ? t.bandFirst : b;
            t.bandLast = b;
            anyRows = true;
        }
    }
    const uint32_t sz = in.dtypeBytes;
    t.dAlignIn = static_cast<uint32_t>(AlignUp(t.d, kBlock / sz));
    t.dAlignF = static_cast<uint32_t>(AlignUp(t.d, kBlock / 4));

    // ---- block sizes ---------------------------------------------------------------------------------
    uint32_t s1Block = in.s1BlockHint;
    if (s1Block == 0) {
        s1Block = static_cast<uint32_t>(
            std::min<uint64_t>(kDefaultS1, AlignUp(std::max<int64_t>(maxS1, 1), kMinBlock)));
        // Spread small problems over more cores: halve the query block while cores stay idle.
        auto units = [&](uint32_t blk) {
            uint64_t u = 0;
            for (uint32_t b = 0; b < in.batch; ++b) {
                u += CeilDiv(static_cast<uint64_t>(s1[b]), blk) * t.n1;
            }
            return u;
        };
        while (s1Block > 2 * kMinBlock && units(s1Block) < in.coreNum) {
            s1Block /= 2;
        }
    }
    uint32_t s2Block = in.s2BlockHint;
    const bool s2Forced = s2Block != 0;
    if (s2Block == 0) {
        s2Block = static_cast<uint32_t>(
            std::min<uint64_t>(kDefaultS2, AlignUp(std::max<int64_t>(maxS2, 1), kMinBlock)));
    }
    uint32_t vecRows = in.vecRowsHint;
    uint32_t s2Stride = static_cast<uint32_t>(AlignUp(s2Block, kMinBlock));
    if (vecRows == 0) {
        for (;;) {
            s2Stride = static_cast<uint32_t>(AlignUp(s2Block, kMinBlock));
            uint32_t best = 0;
            for (uint32_t r = 1; r <= s1Block; ++r) {
                if (FagV4MainUbBytes(s1Block, s2Stride, r, t.dAlignIn, t.dAlignF, sz,
                                     FagV4FeatureUbBytes(t, s2Stride, sz)) <= in.ubSize) {
                    best = r;
                } else {
                    break;
                }
            }
            if (best > 0) {
                vecRows = best >= 8 ? best / 8 * 8 : best;
                break;
            }
            if (s2Forced || s2Block <= kMinBlock) {
                return Refuse("the requested blocks do not fit into UB");
            }
            s2Block = static_cast<uint32_t>(AlignUp(s2Block / 2, kMinBlock));
        }
    }
    t.s1Block = s1Block;
    t.s2Block = s2Block;
    t.s2Stride = s2Stride;
    t.vecRows = vecRows;
    t.ubPlannedBytes = FagV4MainUbBytes(s1Block, s2Stride, vecRows, t.dAlignIn, t.dAlignF, sz,
                                        FagV4FeatureUbBytes(t, s2Stride, sz));

    uint32_t postRows = 0;
    for (uint32_t r = 1; r <= kMaxPostRows; r *= 2) {
        if (FagV4PostUbBytes(r, t.d, sz) <= in.ubSize) {
            postRows = r;
        }
    }
    if (postRows == 0) {
        return Refuse("UB too small for the cast phase");
    }
    t.postRows = postRows;

    // ---- units and their split over cores -------------------------------------------------------------
    std::vector<uint64_t> cost;
    for (uint32_t b = 0; b < in.batch; ++b) {
        const uint64_t nBlk = CeilDiv(static_cast<uint64_t>(s1[b]), s1Block);
        for (uint32_t h = 0; h < t.n1; ++h) {
            for (uint64_t i = 0; i < nBlk; ++i) {
                const int64_t r0 = static_cast<int64_t>(i * s1Block);
                const int64_t r1 = std::min<int64_t>(s1[b], r0 + s1Block);
                // score elements + the row-wise D_r work: keeps the split close to the real load
                const uint64_t kept = KeptScores(t, b, r0, r1, s1[b], s2[b], kind == kMaskPrefix ? in.prefix[b] : 0,
                                                 0, s2[b]);
                cost.push_back(kept + static_cast<uint64_t>(r1 - r0) * t.d);
            }
        }
    }
    t.totalUnits = cost.size();
    const uint32_t cores = static_cast<uint32_t>(std::min<uint64_t>(
        std::min<uint32_t>(in.coreNum, kMaxCores), std::max<uint64_t>(1, t.totalUnits)));
    SplitByCost(cost, cores, t.unitStart);
    t.usedCoreNum = cores;

    // ---- deterministic pass: kv-major units (b, g, key block), cost = kept scores of the group --------
    if (t.deterministic) {
        std::vector<uint64_t> kvCost;
        for (uint32_t b = 0; b < in.batch; ++b) {
            if (s1[b] == 0) {
                continue;  // kv rows of a sequence without queries get no gradient (zeros)
            }
            const uint64_t nBlk = CeilDiv(static_cast<uint64_t>(s2[b]), s2Block);
            for (uint32_t g = 0; g < t.n2; ++g) {
                for (uint64_t i = 0; i < nBlk; ++i) {
                    const int64_t j0 = static_cast<int64_t>(i * s2Block);
                    const int64_t j1 = std::min<int64_t>(s2[b], j0 + s2Block);
                    const uint64_t kept = KeptScores(t, b, 0, s1[b], s1[b], s2[b],
                                                     kind == kMaskPrefix ? in.prefix[b] : 0, j0, j1);
                    kvCost.push_back(kept * t.g + static_cast<uint64_t>(j1 - j0) * t.d);
                }
            }
        }
        t.totalKvUnits = kvCost.size();
        SplitByCost(kvCost, cores, t.kvUnitStart);
    }

    // ---- workspace -------------------------------------------------------------------------------------
    uint64_t off = 0;
    t.wsDqOffset = off;
    off += AlignUp(static_cast<uint64_t>(in.t1) * t.n1 * t.d * 4, kWsAlign);
    t.wsDkOffset = off;
    off += AlignUp(static_cast<uint64_t>(in.t2) * t.n2 * t.d * 4, kWsAlign);
    t.wsDvOffset = off;
    off += AlignUp(static_cast<uint64_t>(in.t2) * t.n2 * t.d * 4, kWsAlign);
    t.wsCoreOffset = off;
    t.wsCoreBytes = AlignUp(static_cast<uint64_t>(s1Block) * s2Stride * (4 + 4 + sz + sz), kWsAlign);
    off += t.wsCoreBytes * cores;
    t.wsSizeUser = off;

    // ---- cube tilings ----------------------------------------------------------------------------------
    FillCube(t.mmScore, s1Block, s2Block, t.d, sz);
    FillCube(t.mmDq, s1Block, t.d, s2Block, sz);
    FillCube(t.mmDkv, s2Block, t.d, s1Block, sz);

    FagV4TilingResult r;
    r.tilingKey = sz == 4 ? kKeyFp32 : (in.bf16 ? kKeyBf16 : kKeyFp16);
    r.blockDim = cores;
    r.workspaceUser = t.wsSizeUser;
    return r;
}

}  // namespace fag_v4
