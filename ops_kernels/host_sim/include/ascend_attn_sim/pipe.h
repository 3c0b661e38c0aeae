/*
 * ascend_attn host simulation of AscendC: TPipe, TQue / TQueBind and TBuf.
 *
 * TPipe::InitBuffer carves buffers out of the core's physical memory of the queue position
 * (UB for VECIN/VECOUT/VECCALC, L1 for A1/B1, L0A/L0B/L0C for A2/B2/CO1). The running total is
 * checked against the configured capacity (UB 192 KiB by default): exceeding it throws
 * kUbOverflow, which is how an over-large tiling fails in simulation.
 *
 * Queues enforce the buffer protocol: AllocTensor needs a free buffer, EnQue may hold at most
 * `depth` tensors, DeQue needs an enqueued tensor, FreeTensor only takes a tensor of this queue
 * that is not inside it. Tensors still allocated when the queue dies are reported as a leak.
 */
#ifndef ASCEND_ATTN_SIM_PIPE_H
#define ASCEND_ATTN_SIM_PIPE_H

#include <deque>
#include <memory>

#include "ascend_attn_sim/tensor.h"

namespace AscendC {

class TPipe;

namespace sim {

inline uint64_t AlignUp(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

class BufferOwner {
public:
    BufferOwner() = default;
    BufferOwner(const BufferOwner&) = delete;
    BufferOwner& operator=(const BufferOwner&) = delete;

protected:
    friend class AscendC::TPipe;
    std::vector<std::unique_ptr<Slot>> slots_;
    bool initialised_ = false;
};

class QueueBase : public BufferOwner {
public:
    ~QueueBase()
    {
        if (!initialised_ || CurrentCore() == nullptr) {
            return;
        }
        int busy = 0;
        for (auto& s : slots_) {
            if (s->state != SlotState::kFree) {
                ++busy;
            }
        }
        if (busy != 0) {
            Defer(kQueue, Str("TQue<", PositionName(pos_), ", depth ", depth_, "> destroyed with ", busy,
                              " buffer(s) not returned by FreeTensor"));
        }
    }

protected:
    Slot* Alloc(const char* api)
    {
        Ready(api);
        for (auto& s : slots_) {
            if (s->state == SlotState::kFree) {
                s->state = SlotState::kAllocated;
                ++s->gen;
                return s.get();
            }
        }
        Fail(kQueue, Str(api, ": all ", slots_.size(), " buffers of TQue<", PositionName(pos_),
                         "> are in use (a FreeTensor is missing, or InitBuffer num is too small)"));
    }
    void Enque(const Slot* slot, const char* api)
    {
        Ready(api);
        Slot* s = Own(slot, api);
        if (s->state != SlotState::kAllocated) {
            Fail(kQueue, Str(api, ": tensor is not freshly allocated (state ", static_cast<int>(s->state),
                             "); EnQue takes the result of AllocTensor once"));
        }
        if (static_cast<int32_t>(fifo_.size()) >= depth_) {
            Fail(kQueue, Str(api, ": TQue<", PositionName(pos_), "> depth ", depth_,
                             " exceeded (", fifo_.size(), " tensors already in the queue; DeQue before the next EnQue)"));
        }
        s->state = SlotState::kEnqueued;
        fifo_.push_back(s);
    }
    Slot* Deque(const char* api)
    {
        Ready(api);
        if (fifo_.empty()) {
            Fail(kQueue, Str(api, ": TQue<", PositionName(pos_), "> is empty (DeQue without a matching EnQue)"));
        }
        Slot* s = fifo_.front();
        fifo_.pop_front();
        s->state = SlotState::kDequeued;
        return s;
    }
    void Free(const Slot* slot, uint32_t gen, const char* api)
    {
        Ready(api);
        Slot* s = Own(slot, api);
        if (s->state == SlotState::kFree || s->gen != gen) {
            Fail(kQueue, Str(api, ": double FreeTensor (or a stale tensor handle)"));
        }
        if (s->state == SlotState::kEnqueued) {
            Fail(kQueue, Str(api, ": tensor is still inside the queue (EnQue'd but not DeQue'd)"));
        }
        s->state = SlotState::kFree;
        ++s->gen;
    }
    void Ready(const char* api) const
    {
        if (!initialised_) {
            Fail(kInvalidArgument, Str(api, ": queue used before TPipe::InitBuffer"));
        }
    }
    Slot* Own(const Slot* slot, const char* api)
    {
        for (auto& s : slots_) {
            if (s.get() == slot) {
                return s.get();
            }
        }
        Fail(kQueue, Str(api, ": tensor does not belong to this queue"));
    }

    friend class AscendC::TPipe;
    std::deque<Slot*> fifo_;
    int32_t depth_ = 1;
    TPosition pos_ = TPosition::VECIN;
};

}  // namespace sim

template <TPosition src, TPosition dst, int32_t depth, auto mask = 0>
class TQueBind : public sim::QueueBase {
    static_assert(depth >= 1, "ascend_attn host sim: queue depth must be >= 1");

public:
    TQueBind()
    {
        depth_ = depth;
        pos_ = src;
    }

    template <typename T>
    LocalTensor<T> AllocTensor()
    {
        sim::Slot* s = Alloc("TQue::AllocTensor");
        return LocalTensor<T>(s, 0, s->bytes / sizeof(T));
    }
    template <typename T>
    void AllocTensor(LocalTensor<T>& t)
    {
        t = AllocTensor<T>();
    }
    template <typename T>
    bool EnQue(const LocalTensor<T>& t)
    {
        t.Live("TQue::EnQue");
        Enque(t.SimSlot(), "TQue::EnQue");
        return true;
    }
    template <typename T>
    LocalTensor<T> DeQue()
    {
        sim::Slot* s = Deque("TQue::DeQue");
        return LocalTensor<T>(s, 0, s->bytes / sizeof(T));
    }
    template <typename T>
    void DeQue(LocalTensor<T>& t)
    {
        t = DeQue<T>();
    }
    template <typename T>
    void FreeTensor(LocalTensor<T>& t)
    {
        if (t.SimSlot() == nullptr) {
            sim::Fail(sim::kQueue, "TQue::FreeTensor: tensor is not bound to a buffer");
        }
        Free(t.SimSlot(), SimGen(t), "TQue::FreeTensor");
    }
    bool VacantInQue() const { return static_cast<int32_t>(fifo_.size()) < depth_; }
    bool HasTensorInQue() const { return !fifo_.empty(); }
    int32_t GetTensorCountInQue() const { return static_cast<int32_t>(fifo_.size()); }
    bool HasIdleBuffer() const
    {
        for (auto& s : slots_) {
            if (s->state == sim::SlotState::kFree) {
                return true;
            }
        }
        return false;
    }
    static constexpr TPosition srcPosition = src;
    static constexpr TPosition dstPosition = dst;

private:
    template <typename T>
    static uint32_t SimGen(const LocalTensor<T>& t)
    {
        // the handle's generation: valid handles match the slot's generation
        return t.SimValid() ? t.SimSlot()->gen : t.SimSlot()->gen + 1;
    }
};

template <TPosition pos, int32_t depth, auto mask = 0>
class TQue : public TQueBind<pos, pos, depth, mask> {
};

template <TPosition pos = TPosition::VECCALC>
class TBuf : public sim::BufferOwner {
public:
    template <typename T>
    LocalTensor<T> Get()
    {
        sim::Slot* s = Slot0("TBuf::Get");
        return LocalTensor<T>(s, 0, s->bytes / sizeof(T));
    }
    template <typename T>
    LocalTensor<T> Get(uint32_t len)
    {
        sim::Slot* s = Slot0("TBuf::Get");
        if (static_cast<uint64_t>(len) * sizeof(T) > s->bytes) {
            sim::Fail(sim::kOutOfBounds, sim::Str("TBuf::Get(", len, "): ", len * sizeof(T), " bytes exceed the ", s->bytes,
                                                  "-byte buffer"));
        }
        return LocalTensor<T>(s, 0, len);
    }
    // bufOffset in bytes; AscendC requires it 32-byte aligned.
    template <typename T>
    LocalTensor<T> GetWithOffset(uint32_t size, uint32_t bufOffset)
    {
        sim::Slot* s = Slot0("TBuf::GetWithOffset");
        if (bufOffset % ONE_BLK_SIZE != 0) {
            sim::FailRule(sim::kAlignment, sim::rule::kAddrAlign, sim::Str("TBuf::GetWithOffset: bufOffset ", bufOffset, " is not 32-byte aligned"));
        }
        if (bufOffset + static_cast<uint64_t>(size) * sizeof(T) > s->bytes) {
            sim::Fail(sim::kOutOfBounds, sim::Str("TBuf::GetWithOffset(", size, ", ", bufOffset, ") exceeds the ", s->bytes,
                                                  "-byte buffer"));
        }
        return LocalTensor<T>(s, bufOffset, size);
    }
    static constexpr TPosition position = pos;

private:
    sim::Slot* Slot0(const char* api)
    {
        if (!initialised_) {
            sim::Fail(sim::kInvalidArgument, sim::Str(api, ": TBuf used before TPipe::InitBuffer"));
        }
        return slots_[0].get();
    }
};

class TPipe {
public:
    TPipe() : core_(&sim::Core())
    {
        for (int m = 0; m < sim::kPhysMemCount; ++m) {
            base_[m] = core_->used[m];
        }
        prevPipe_ = core_->pipe;
        core_->pipe = this;
    }
    ~TPipe()
    {
        if (sim::CurrentCore() == core_) {
            Release();
            core_->pipe = prevPipe_;
        }
    }
    TPipe(const TPipe&) = delete;
    TPipe& operator=(const TPipe&) = delete;

    template <TPosition src, TPosition dst, int32_t depth, auto mask>
    bool InitBuffer(TQueBind<src, dst, depth, mask>& que, uint8_t num, uint32_t len)
    {
        if (num == 0 || len == 0) {
            sim::Fail(sim::kInvalidArgument, sim::Str("TPipe::InitBuffer(TQue<", sim::PositionName(src), ">, num=", num,
                                                      ", len=", len, "): num and len must be positive"));
        }
        Carve(que, src, num, len, "TQue", sim::SlotState::kFree);
        return true;
    }
    template <TPosition pos>
    bool InitBuffer(TBuf<pos>& buf, uint32_t len)
    {
        if (len == 0) {
            sim::Fail(sim::kInvalidArgument, sim::Str("TPipe::InitBuffer(TBuf<", sim::PositionName(pos), ">, len=0)"));
        }
        Carve(buf, pos, 1, len, "TBuf", sim::SlotState::kFixed);
        return true;
    }
    void Reset() { Release(); }
    void Destroy() { Release(); }

    template <HardEvent evt>
    TEventID FetchEventID() { return EVENT_ID0; }
    TEventID FetchEventID(HardEvent) { return EVENT_ID0; }
    template <HardEvent evt>
    TEventID AllocEventID() { return EVENT_ID0; }
    template <HardEvent evt>
    void ReleaseEventID(TEventID) {}

    // bytes this pipe holds in physical memory `mem` (simulation helper)
    uint64_t SimUsed(int mem) const { return core_->used[mem] - base_[mem]; }

private:
    void Carve(sim::BufferOwner& owner, TPosition pos, uint32_t num, uint32_t len, const char* kind, sim::SlotState st)
    {
        const int mem = sim::PhysOf(pos);
        const std::string what = sim::Str("TPipe::InitBuffer(", kind, "<", sim::PositionName(pos), ">, num=", num, ", len=", len, ")");
        if (mem >= sim::kPhysMemCount) {
            sim::Fail(sim::kUnsupported, what + ": position has no on-chip buffer in the simulation");
        }
        if (owner.initialised_) {
            sim::Fail(sim::kInvalidArgument, what + ": buffer initialised twice");
        }
        const uint64_t each = sim::AlignUp(len, ONE_BLK_SIZE);
        const uint64_t total = each * num;
        const uint64_t cap = core_->cfg->capacity[mem];
        if (core_->used[mem] + total > cap) {
            sim::FailRule(sim::kUbOverflow, sim::rule::kBufferSize, sim::Str(what, " needs ", total, " bytes but ", sim::PhysMemName(mem), " already holds ",
                                                 core_->used[mem], " of its ", cap, " bytes (", sim::PhysMemName(mem),
                                                 " overflow: the tiling asks for more on-chip memory than the core has)"));
        }
        uint8_t* arena = sim::Arena(*core_, mem);
        for (uint32_t i = 0; i < num; ++i) {
            auto s = std::make_unique<sim::Slot>();
            s->addr = core_->used[mem];
            s->base = arena + s->addr;
            s->bytes = each;
            s->mem = mem;
            s->pos = pos;
            s->state = st;
            s->owner = kind;
            core_->used[mem] += each;
            owner.slots_.push_back(std::move(s));
        }
        if (core_->used[mem] > core_->peak[mem]) {
            core_->peak[mem] = core_->used[mem];
        }
        owner.initialised_ = true;
    }
    void Release()
    {
        for (int m = 0; m < sim::kPhysMemCount; ++m) {
            core_->used[m] = base_[m];
        }
    }

    sim::CoreContext* core_;
    uint64_t base_[sim::kPhysMemCount] = {};
    void* prevPipe_ = nullptr;
};

inline TPipe* GetTPipePtr() { return static_cast<TPipe*>(sim::Core().pipe); }

}  // namespace AscendC

#endif  // ASCEND_ATTN_SIM_PIPE_H
