/*
 * ascend_attn host simulation of AscendC: GlobalTensor and LocalTensor.
 *
 * A LocalTensor is a view (byte offset + element count) into a buffer slot that a TQue or TBuf
 * owns inside the core's on-chip arena. Every emulated API validates through it: the slot must
 * still be live (not FreeTensor'ed, not sitting inside a queue between EnQue and DeQue), the
 * accessed range must lie inside the view, and vector / copy operands must start 32-byte aligned.
 * GlobalTensor accesses are checked against the GM regions the runner registered.
 */
#ifndef ASCEND_ATTN_SIM_TENSOR_H
#define ASCEND_ATTN_SIM_TENSOR_H

#include "ascend_attn_sim/base.h"

namespace AscendC {
namespace sim {

enum class SlotState : uint8_t { kFree, kAllocated, kEnqueued, kDequeued, kFixed };

struct Slot {
    uint8_t* base = nullptr;  // host address of the slot's first byte
    uint64_t addr = 0;        // byte offset inside the physical memory (the "hardware address")
    uint64_t bytes = 0;
    int mem = kUB;
    TPosition pos = TPosition::VECCALC;
    SlotState state = SlotState::kFree;
    uint32_t gen = 0;
    const char* owner = "";   // "TQue" / "TBuf", for messages
};

}  // namespace sim

template <typename T>
class LocalTensor {
public:
    using PrimType = T;

    LocalTensor() = default;
    LocalTensor(sim::Slot* slot, uint64_t byteOffset, uint64_t elems)
        : slot_(slot), gen_(slot ? slot->gen : 0), byteOff_(byteOffset), size_(elems)
    {
    }

    LocalTensor operator[](uint64_t offset) const
    {
        Live("LocalTensor::operator[]");
        if (offset > size_) {
            sim::FailRule(sim::kOutOfBounds, sim::rule::kTensorSize, sim::Str("LocalTensor::operator[](", offset, ") beyond the ", size_,
                                                  " elements of the tensor"));
        }
        LocalTensor r(*this);
        r.byteOff_ += offset * sizeof(T);
        r.size_ -= offset;
        return r;
    }

    T GetValue(uint64_t index) const
    {
        const T* p = Data(index + 1, "LocalTensor::GetValue", false);
        return p[index];
    }
    void SetValue(uint64_t index, const T& value) const
    {
        T* p = Data(index + 1, "LocalTensor::SetValue", true);
        p[index] = value;
    }

    uint32_t GetSize() const { return static_cast<uint32_t>(size_); }
    uint32_t GetLength() const { return static_cast<uint32_t>(size_ * sizeof(T)); }
    void SetSize(uint32_t elems)
    {
        Live("LocalTensor::SetSize");
        if (byteOff_ + static_cast<uint64_t>(elems) * sizeof(T) > slot_->bytes) {
            sim::Fail(sim::kOutOfBounds, sim::Str("LocalTensor::SetSize(", elems, ") exceeds the ", slot_->bytes,
                                                  "-byte buffer"));
        }
        size_ = elems;
    }
    TPosition GetPosition() const { return slot_ ? slot_->pos : TPosition::MAX; }
    // Host address of the first element (the device returns a __ubuf__ pointer; the host arena is
    // 64-byte aligned, so address % 32 is the same as on the device).
    T* GetPhyAddr() const { return slot_ ? reinterpret_cast<T*>(slot_->base + byteOff_) : nullptr; }

    template <typename U>
    LocalTensor<U> ReinterpretCast() const
    {
        Live("LocalTensor::ReinterpretCast");
        LocalTensor<U> r(slot_, byteOff_, size_ * sizeof(T) / sizeof(U));
        r.SimSetGen(gen_);
        return r;
    }

    // ---- simulation helpers (not AscendC API) -------------------------------------------------
    // Validated host pointer to the first element for an access of `count` elements.
    T* Data(uint64_t count, const char* api, bool write) const
    {
        Live(api);
        if (slot_->state == sim::SlotState::kEnqueued) {
            sim::Fail(sim::kQueue, sim::Str(api, ": tensor accessed while it sits in a queue (after EnQue, "
                                                 "before DeQue); DeQue it first"));
        }
        if (count > size_) {
            sim::FailRule(sim::kOutOfBounds, sim::rule::kTensorSize, sim::Str(api, ": ", write ? "writes " : "reads ", count,
                                                  " elements but the tensor holds ", size_, " (", sim::PositionName(slot_->pos),
                                                  " buffer of ", slot_->bytes, " bytes, view at byte ", byteOff_, ")"));
        }
        return reinterpret_cast<T*>(slot_->base + byteOff_);
    }
    uint64_t SimAddr() const { return slot_ ? slot_->addr + byteOff_ : 0; }
    bool SimValid() const { return slot_ != nullptr && slot_->gen == gen_ && slot_->state != sim::SlotState::kFree; }
    const sim::Slot* SimSlot() const { return slot_; }
    uint64_t SimByteOffset() const { return byteOff_; }
    void SimSetGen(uint32_t g) { gen_ = g; }
    void Live(const char* api) const
    {
        if (slot_ == nullptr) {
            sim::Fail(sim::kInvalidArgument, sim::Str(api, ": LocalTensor is not bound to a buffer (AllocTensor / Get missing)"));
        }
        if (slot_->gen != gen_ || slot_->state == sim::SlotState::kFree) {
            sim::Fail(sim::kQueue, sim::Str(api, ": LocalTensor used after FreeTensor (stale handle of a ",
                                            slot_->owner, " buffer)"));
        }
    }

private:
    sim::Slot* slot_ = nullptr;
    uint32_t gen_ = 0;
    uint64_t byteOff_ = 0;
    uint64_t size_ = 0;
};

template <typename T>
class GlobalTensor {
public:
    using PrimType = T;
    static constexpr uint64_t kUnknownSize = ~0ull;

    GlobalTensor() = default;

    void SetGlobalBuffer(__gm__ T* buffer, uint64_t bufferSize)
    {
        addr_ = buffer;
        size_ = bufferSize;
    }
    void SetGlobalBuffer(__gm__ T* buffer)
    {
        addr_ = buffer;
        size_ = kUnknownSize;
    }

    GlobalTensor operator[](uint64_t offset) const
    {
        if (size_ != kUnknownSize && offset > size_) {
            sim::Fail(sim::kOutOfBounds, sim::Str("GlobalTensor::operator[](", offset, ") beyond SetGlobalBuffer size ", size_));
        }
        GlobalTensor r(*this);
        r.addr_ = addr_ + offset;
        if (size_ != kUnknownSize) {
            r.size_ = size_ - offset;
        }
        return r;
    }

    T GetValue(uint64_t index) const
    {
        const T* p = Read(index + 1, "GlobalTensor::GetValue", index);
        return p[index];
    }
    void SetValue(uint64_t index, const T& value) const
    {
        T* p = Write(index + 1, "GlobalTensor::SetValue", index);
        p[index] = value;
    }

    __gm__ T* GetPhyAddr() const { return addr_; }
    __gm__ T* GetPhyAddr(uint64_t offset) const { return addr_ + offset; }
    uint64_t GetSize() const { return size_; }
    void SetL2CacheHint(CacheMode) {}

    // ---- simulation helpers -------------------------------------------------------------------
    // Pointer for reading `count` elements starting at element `from` (checks [from, count)).
    T* Read(uint64_t count, const char* api, uint64_t from = 0) const
    {
        Check(from, count, api, false);
        return addr_;
    }
    T* Write(uint64_t count, const char* api, uint64_t from = 0) const
    {
        Check(from, count, api, true);
        sim::NoteGmWrite(addr_ + from, (count - from) * sizeof(T));
        return addr_;
    }

private:
    void Check(uint64_t from, uint64_t count, const char* api, bool write) const
    {
        if (addr_ == nullptr) {
            sim::Fail(sim::kOutOfBounds, sim::Str(api, ": GlobalTensor has no buffer (SetGlobalBuffer missing or null GM address)"));
        }
        if (size_ != kUnknownSize && count > size_) {
            sim::Fail(sim::kOutOfBounds, sim::Str(api, ": accesses elements up to ", count, " but SetGlobalBuffer gave ",
                                                  size_, " (from this tensor's start)"));
        }
        if (count > from) {
            sim::CheckGm(addr_ + from, (count - from) * sizeof(T), write, api);
        }
    }

    T* addr_ = nullptr;
    uint64_t size_ = kUnknownSize;
};

}  // namespace AscendC

#endif  // ASCEND_ATTN_SIM_TENSOR_H
