/*
 * ascend_attn host simulation of the AscendC Matmul high-level API (CANN doc "Matmul"; subset).
 *
 * The cube unit is emulated synchronously inside the calling core: C = A x B (+ bias) over the
 * sub-problem singleM x singleN x singleK set by SetSingleShape/SetTail (default: the tiling's
 * singleCore* fields), with A [M, Ka] (or [Ka, M] when transposed) and B [Kb, N] (or [N, Kb])
 * addressed in row-major ND through the org shape (SetOrgShape; default the tiling's M/N/Ka).
 * Accumulation is in fp32 in k order for half/bfloat16/float inputs (16-bit products are exact
 * in fp32) and exact int32 for int8; the result is rounded once (RNE) to the C type.
 *
 * Init checks the on-chip budgets the tiling implies (base sizes fractal-aligned; L0A/L0B/L0C
 * with their double-buffer factors; L1 with depthA1/depthB1) against the core's capacities and
 * fails with kUbOverflow naming the buffer.
 *
 * Output layouts of the emulation (ND): IterateAll to GM writes the singleM x singleN block
 * at row pitch N of the org shape (Kc of SetOrgShape(M, N, Ka, Kb, Kc) when non-zero); IterateAll to a LocalTensor writes it densely (pitch singleN);
 * Iterate + GetTensorC writes one baseM x baseN block (tails: the valid part) densely at pitch
 * baseN to a LocalTensor, or at its place in C (pitch N) to GM (enSequentialWrite: densely).
 */
#ifndef ASCEND_ATTN_SIM_MATMUL_INTF_H
#define ASCEND_ATTN_SIM_MATMUL_INTF_H

#include "kernel_operator.h"
#include "kernel_tiling/kernel_tiling.h"

namespace AscendC {
enum class CubeFormat : uint8_t { ND = 0, NZ, ZN, ZZ, NN, ND_ALIGN, SCALAR, VECTOR };
enum class LayoutMode : uint8_t { NONE = 0, BSNGD, SBNGD, BNGS1S2, NORMAL };
enum IterateOrder : int32_t { ORDER_M = 0, ORDER_N, UNDEF };
inline GM_ADDR GetSysWorkSpacePtr() { return nullptr; }
}  // namespace AscendC

namespace matmul {

using AscendC::CubeFormat;
using AscendC::GlobalTensor;
using AscendC::LayoutMode;
using AscendC::LocalTensor;
using AscendC::TPosition;

struct MatmulConfig {
    bool doNorm = true;
    bool doMultiDataLoad = false;
    bool intrinsicsCheck = false;
    bool enableSetBias = true;
};
constexpr MatmulConfig CFG_NORM{true, false, false, true};
constexpr MatmulConfig CFG_MDL{false, true, false, true};
constexpr MatmulConfig CFG_IBSHARE_NORM{true, false, false, true};
constexpr MatmulConfig GetNormalConfig() { return CFG_NORM; }
constexpr MatmulConfig GetMDLConfig() { return CFG_MDL; }

template <TPosition POSITION, CubeFormat FORMAT, typename TYPE, bool ISTRANS = false, LayoutMode LAYOUT = LayoutMode::NONE,
          bool IBSHARE = false>
struct MatmulType {
    constexpr static TPosition pos = POSITION;
    constexpr static CubeFormat format = FORMAT;
    using T = TYPE;
    constexpr static bool isTrans = ISTRANS;
    constexpr static LayoutMode layout = LAYOUT;
    constexpr static bool ibShare = IBSHARE;
};

namespace detail {
template <typename T>
using Acc = std::conditional_t<std::is_integral_v<T>, int64_t, float>;

// Element (r, c) of a row-major matrix view on either GM or a local tensor.
template <typename T>
struct Source {
    const T* base = nullptr;
    bool set = false;
    bool trans = false;
};
}  // namespace detail

template <class A_TYPE, class B_TYPE, class C_TYPE, class BIAS_TYPE = C_TYPE, const auto& MM_CFG = CFG_NORM,
          class... Rest>
class Matmul {
    using SrcAT = typename A_TYPE::T;
    using SrcBT = typename B_TYPE::T;
    using DstT = typename C_TYPE::T;
    using BiasT = typename BIAS_TYPE::T;
    using AccT = detail::Acc<SrcAT>;

public:
    void Init(const TCubeTiling* tiling, AscendC::TPipe* tpipe = nullptr)
    {
        namespace sim = AscendC::sim;
        if (tiling == nullptr) {
            sim::Fail(sim::kInvalidArgument, "Matmul::Init: tiling is null");
        }
        t_ = *tiling;
        const auto& core = sim::Core();
        const int64_t sa = sizeof(SrcAT);
        const int64_t sb = sizeof(SrcBT);
        const int64_t l0c = sizeof(AccT) > 4 ? 4 : sizeof(AccT);
        if (t_.baseM <= 0 || t_.baseN <= 0 || t_.baseK <= 0 || t_.baseM % 16 != 0 || t_.baseN % 16 != 0 ||
            (t_.baseK * sa) % 32 != 0) {
            sim::Fail(sim::kInvalidArgument, sim::Str("Matmul::Init: baseM/baseN must be positive multiples of 16 and baseK a "
                                                      "multiple of 32 bytes; got ", t_.baseM, "/", t_.baseN, "/", t_.baseK));
        }
        auto db = [](int32_t v) { return v > 1 ? 2 : 1; };
        Budget(sim::kL0A, static_cast<int64_t>(t_.baseM) * t_.baseK * sa * db(t_.dbL0A), core, "baseM*baseK*dbL0A");
        Budget(sim::kL0B, static_cast<int64_t>(t_.baseK) * t_.baseN * sb * db(t_.dbL0B), core, "baseK*baseN*dbL0B");
        Budget(sim::kL0C, static_cast<int64_t>(t_.baseM) * t_.baseN * l0c * db(t_.dbL0C), core, "baseM*baseN*dbL0C");
        const int64_t l1 = static_cast<int64_t>(t_.depthA1 > 0 ? t_.depthA1 : 1) * t_.baseM * t_.baseK * sa +
                           static_cast<int64_t>(t_.depthB1 > 0 ? t_.depthB1 : 1) * t_.baseK * t_.baseN * sb;
        Budget(sim::kL1, l1, core, "depthA1*baseM*baseK + depthB1*baseK*baseN");
        orgM_ = t_.M;
        orgN_ = t_.N;
        orgKa_ = t_.Ka;
        orgKb_ = t_.Kb;
        orgKc_ = 0;
        singleM_ = t_.singleCoreM;
        singleN_ = t_.singleCoreN;
        singleK_ = t_.singleCoreK;
        bias_ = t_.isBias != 0;
        init_ = true;
    }
    void SetOrgShape(int orgM, int orgN, int orgK) { SetOrgShape(orgM, orgN, orgK, orgK); }
    void SetOrgShape(int orgM, int orgN, int orgKa, int orgKb, int orgKc = 0)
    {
        orgM_ = orgM;
        orgN_ = orgN;
        orgKa_ = orgKa;
        orgKb_ = orgKb;
        orgKc_ = orgKc;  // C row pitch when non-zero (C's N differs from B's N), else orgN
    }
    void SetSingleShape(int singleM, int singleN, int singleK)
    {
        singleM_ = singleM;
        singleN_ = singleN;
        singleK_ = singleK;
    }
    void SetTail(int tailM = -1, int tailN = -1, int tailK = -1)
    {
        if (tailM > 0) singleM_ = tailM;
        if (tailN > 0) singleN_ = tailN;
        if (tailK > 0) singleK_ = tailK;
    }
    void SetTensorA(const GlobalTensor<SrcAT>& gm, bool isTransposeA = false) { SetA(gm.GetPhyAddr(), isTransposeA); aGm_ = gm; }
    void SetTensorA(const LocalTensor<SrcAT>& lt, bool isTransposeA = false)
    {
        SetA(lt.Data(lt.GetSize(), "Matmul::SetTensorA", false), isTransposeA);
        aLocalSize_ = lt.GetSize();
    }
    void SetTensorB(const GlobalTensor<SrcBT>& gm, bool isTransposeB = false) { SetB(gm.GetPhyAddr(), isTransposeB); bGm_ = gm; }
    void SetTensorB(const LocalTensor<SrcBT>& lt, bool isTransposeB = false)
    {
        SetB(lt.Data(lt.GetSize(), "Matmul::SetTensorB", false), isTransposeB);
        bLocalSize_ = lt.GetSize();
    }
    void SetBias(const GlobalTensor<BiasT>& gm)
    {
        biasPtr_ = gm.Read(static_cast<uint64_t>(singleN_), "Matmul::SetBias");
        bias_ = true;
    }
    void SetBias(const LocalTensor<BiasT>& lt)
    {
        biasPtr_ = lt.Data(static_cast<uint64_t>(singleN_), "Matmul::SetBias", false);
        bias_ = true;
    }
    void DisableBias() { bias_ = false; }
    void ClearBias() { bias_ = false; }
    // Fixpipe dequantisation of an integer accumulator to a float C type (semantics.md 7.7):
    // C = RNE_to_C(fp32(acc) * fp19(word)), fp19 = the float32 in bits 0..31 with its low 13 bits
    // cleared. SetQuantVector takes one word per output column (N). Rounding of the fixpipe is
    // assumed RNE (semantics.md 11.2).
    void SetQuantScalar(const uint64_t quantScalar)
    {
        quantScale_ = Fp19(quantScalar);
        quantVec_ = nullptr;
        quant_ = true;
    }
    void SetQuantVector(const GlobalTensor<uint64_t>& quantTensor)
    {
        quantVec_ = quantTensor.Read(static_cast<uint64_t>(orgN_), "Matmul::SetQuantVector");
        quant_ = true;
    }
    void SetHF32(bool, int32_t = 0) {}
    template <class T>
    void SetWorkspace(T&&, int = 0) {}
    void SetLocalWorkspace(const LocalTensor<uint8_t>&) {}

    template <bool sync = true>
    void IterateAll(const GlobalTensor<DstT>& gm, uint8_t enAtomic = 0, bool enSequentialWrite = false,
                    bool waitIterateAll = false, bool fakeMsg = false)
    {
        Ready("Matmul::IterateAll");
        const int64_t pitch = enSequentialWrite ? singleN_ : PitchC();
        DstT* c = GmRows(gm, 0, singleM_, singleN_, pitch, "Matmul::IterateAll(GM)");
        Compute(0, 0, singleM_, singleN_, c, pitch, enAtomic != 0, true);
    }
    template <bool sync = true>
    void IterateAll(const LocalTensor<DstT>& ub, uint8_t enAtomic = 0)
    {
        Ready("Matmul::IterateAll");
        DstT* c = ub.Data(static_cast<uint64_t>(singleM_) * singleN_, "Matmul::IterateAll(local)", true);
        Compute(0, 0, singleM_, singleN_, c, singleN_, enAtomic != 0, false);
    }
    void WaitIterateAll() {}

    template <bool sync = true>
    bool Iterate(bool enPartialSum = false)
    {
        Ready("Matmul::Iterate");
        const int64_t mBlocks = (singleM_ + t_.baseM - 1) / t_.baseM;
        const int64_t nBlocks = (singleN_ + t_.baseN - 1) / t_.baseN;
        if (iter_ >= mBlocks * nBlocks) {
            iter_ = 0;
            return false;
        }
        if (t_.iterateOrder == 1) {  // N first
            curM_ = iter_ / nBlocks;
            curN_ = iter_ % nBlocks;
        } else {
            curM_ = iter_ % mBlocks;
            curN_ = iter_ / mBlocks;
        }
        ++iter_;
        return true;
    }
    template <bool sync = true>
    void GetTensorC(const LocalTensor<DstT>& c, uint8_t enAtomic = 0, bool enSequentialWrite = false)
    {
        int64_t m0, n0, bm, bn;
        Block(m0, n0, bm, bn);
        DstT* p = c.Data(static_cast<uint64_t>((bm - 1) * t_.baseN + bn), "Matmul::GetTensorC(local)", true);
        Compute(m0, n0, bm, bn, p, t_.baseN, enAtomic != 0, false);
    }
    template <bool sync = true>
    void GetTensorC(const GlobalTensor<DstT>& gm, uint8_t enAtomic = 0, bool enSequentialWrite = false)
    {
        int64_t m0, n0, bm, bn;
        Block(m0, n0, bm, bn);
        const int64_t pitch = enSequentialWrite ? t_.baseN : PitchC();
        const int64_t at = enSequentialWrite ? 0 : m0 * PitchC() + n0;
        DstT* p = GmRows(gm, at, bm, bn, pitch, "Matmul::GetTensorC(GM)");
        Compute(m0, n0, bm, bn, p, pitch, enAtomic != 0, true);
    }
    void End()
    {
        a_ = detail::Source<SrcAT>();
        b_ = detail::Source<SrcBT>();
        iter_ = 0;
    }

private:
    static float Fp19(uint64_t word)
    {
        const uint32_t b = static_cast<uint32_t>(word & 0xFFFFFFFFull) & 0xFFFFE000u;
        float f;
        std::memcpy(&f, &b, 4);
        return f;
    }
    void Budget(int mem, int64_t bytes, const AscendC::sim::CoreContext& core, const char* what)
    {
        namespace sim = AscendC::sim;
        if (static_cast<uint64_t>(bytes) > core.cfg->capacity[mem]) {
            sim::FailRule(sim::kUbOverflow, sim::rule::kBufferSize, sim::Str("Matmul::Init: ", sim::PhysMemName(mem), " overflow: ", what, " = ", bytes,
                                                 " bytes > ", core.cfg->capacity[mem]));
        }
    }
    // checks and notes every written row (rows of a block are not contiguous in C)
    static DstT* GmRows(const GlobalTensor<DstT>& gm, int64_t at, int64_t rows, int64_t cols, int64_t pitch, const char* api)
    {
        for (int64_t i = 0; i < rows; ++i) {
            const uint64_t from = static_cast<uint64_t>(at + i * pitch);
            gm.Write(from + static_cast<uint64_t>(cols), api, from);
        }
        return gm.GetPhyAddr() + at;
    }
    void SetA(const SrcAT* p, bool trans)
    {
        a_.base = p;
        a_.set = true;
        a_.trans = trans || A_TYPE::isTrans;
    }
    void SetB(const SrcBT* p, bool trans)
    {
        b_.base = p;
        b_.set = true;
        b_.trans = trans || B_TYPE::isTrans;
    }
    void Ready(const char* api)
    {
        namespace sim = AscendC::sim;
        if (!init_) {
            sim::Fail(sim::kInvalidArgument, sim::Str(api, ": Matmul used before Init / REGIST_MATMUL_OBJ"));
        }
        if (!a_.set || !b_.set) {
            sim::Fail(sim::kInvalidArgument, sim::Str(api, ": SetTensorA and SetTensorB are required"));
        }
        if (singleM_ <= 0 || singleN_ <= 0 || singleK_ <= 0) {
            sim::Fail(sim::kInvalidArgument, sim::Str(api, ": single shape ", singleM_, "x", singleN_, "x", singleK_, " is empty"));
        }
        // bounds of the A/B views actually read
        const uint64_t aNeed = a_.trans ? static_cast<uint64_t>((singleK_ - 1) * orgM_ + singleM_)
                                        : static_cast<uint64_t>((singleM_ - 1) * orgKa_ + singleK_);
        const uint64_t bNeed = b_.trans ? static_cast<uint64_t>((singleN_ - 1) * orgKb_ + singleK_)
                                        : static_cast<uint64_t>((singleK_ - 1) * orgN_ + singleN_);
        if (aLocalSize_ == 0) {
            aGm_.Read(aNeed, api);
        } else if (aNeed > aLocalSize_) {
            sim::Fail(sim::kOutOfBounds, sim::Str(api, ": A needs ", aNeed, " elements, the local tensor has ", aLocalSize_));
        }
        if (bLocalSize_ == 0) {
            bGm_.Read(bNeed, api);
        } else if (bNeed > bLocalSize_) {
            sim::Fail(sim::kOutOfBounds, sim::Str(api, ": B needs ", bNeed, " elements, the local tensor has ", bLocalSize_));
        }
    }
    void Block(int64_t& m0, int64_t& n0, int64_t& bm, int64_t& bn)
    {
        m0 = curM_ * t_.baseM;
        n0 = curN_ * t_.baseN;
        bm = singleM_ - m0 < t_.baseM ? singleM_ - m0 : t_.baseM;
        bn = singleN_ - n0 < t_.baseN ? singleN_ - n0 : t_.baseN;
    }
    // C[m0 + i, n0 + j] for i < bm, j < bn into out[i * pitch + j]
    void Compute(int64_t m0, int64_t n0, int64_t bm, int64_t bn, DstT* out, int64_t pitch, bool atomic, bool toGm)
    {
        if (toGm && AscendC::sim::Core().atomicMode == 1) {
            atomic = true;
        }
        // atomic adds of several blocks into the same GM addresses: serialised in threaded mode
        struct AtomicGuard {
            bool on;
            explicit AtomicGuard(bool o) : on(o) { if (on) AscendC::sim::AtomicWriteLock(true); }
            ~AtomicGuard() { if (on) AscendC::sim::AtomicWriteLock(false); }
        } atomicGuard(atomic && toGm);
        for (int64_t i = 0; i < bm; ++i) {
            for (int64_t j = 0; j < bn; ++j) {
                const int64_t r = m0 + i;
                const int64_t c = n0 + j;
                AccT acc = 0;
                for (int64_t k = 0; k < singleK_; ++k) {
                    const SrcAT av = a_.trans ? a_.base[k * orgM_ + r] : a_.base[r * orgKa_ + k];
                    const SrcBT bv = b_.trans ? b_.base[c * orgKb_ + k] : b_.base[k * orgN_ + c];
                    if constexpr (std::is_integral_v<SrcAT>) {
                        acc += static_cast<int64_t>(av) * static_cast<int64_t>(bv);
                    } else {
                        acc += static_cast<float>(av) * static_cast<float>(bv);
                    }
                }
                if (bias_ && biasPtr_ != nullptr) {
                    acc += static_cast<AccT>(static_cast<float>(biasPtr_[c]));
                }
                DstT& o = out[i * pitch + j];
                if constexpr (std::is_integral_v<AccT> && !std::is_integral_v<DstT>) {
                    if (quant_) {
                        const float scale = quantVec_ ? Fp19(quantVec_[c]) : quantScale_;
                        const float deq = static_cast<float>(static_cast<int32_t>(acc)) * scale;
                        o = static_cast<DstT>(atomic ? static_cast<float>(o) + deq : deq);
                        continue;
                    }
                }
                if constexpr (std::is_integral_v<DstT>) {
                    o = static_cast<DstT>(atomic ? static_cast<int64_t>(o) + static_cast<int64_t>(acc) : static_cast<int64_t>(acc));
                } else {
                    const float v = atomic ? static_cast<float>(o) + static_cast<float>(acc) : static_cast<float>(acc);
                    o = static_cast<DstT>(v);  // float: exact; half / bfloat16_t: RNE
                }
            }
        }
    }

    TCubeTiling t_{};
    bool init_ = false;
    bool quant_ = false;
    float quantScale_ = 1.0f;
    const uint64_t* quantVec_ = nullptr;
    bool bias_ = false;
    const BiasT* biasPtr_ = nullptr;
    detail::Source<SrcAT> a_;
    detail::Source<SrcBT> b_;
    GlobalTensor<SrcAT> aGm_;
    GlobalTensor<SrcBT> bGm_;
    uint64_t aLocalSize_ = 0;
    uint64_t bLocalSize_ = 0;
    int64_t orgM_ = 0, orgN_ = 0, orgKa_ = 0, orgKb_ = 0;
    int64_t orgKc_ = 0;  // SetOrgShape's Kc: C row pitch when non-zero
    int64_t PitchC() const { return orgKc_ > 0 ? orgKc_ : orgN_; }
    int64_t singleM_ = 0, singleN_ = 0, singleK_ = 0;
    int64_t iter_ = 0, curM_ = 0, curN_ = 0;
};

namespace detail {
inline void Regist() {}
template <class MM, class... Rest>
inline void Regist(MM& mm, const TCubeTiling* tiling, Rest&&... rest)
{
    mm.Init(tiling);
    Regist(std::forward<Rest>(rest)...);
}
}  // namespace detail

}  // namespace matmul

namespace AscendC {
using matmul::Matmul;
using matmul::MatmulConfig;
using matmul::MatmulType;
}  // namespace AscendC

// REGIST_MATMUL_OBJ(&pipe, workspace, mm1, &tiling1[, mm2, &tiling2 ...]): Init every Matmul object.
#define REGIST_MATMUL_OBJ(tpipe, workspace, ...) ::matmul::detail::Regist(__VA_ARGS__)

#endif  // ASCEND_ATTN_SIM_MATMUL_INTF_H
