/*
 * ListTensorDesc (page "ListTensorDesc"): the kernel-side view of a tensor-list input (aclTensorList,
 * e.g. IncreFlashAttention's key / value). The framework passes one GM block:
 *
 *   word 0                 byte offset of the address table from the block start
 *   per tensor i:          one word "dim count (low 32 bits) | i (high 32 bits)", then its dims
 *   address table          one 64-bit GM address per tensor
 *
 * The emulation checks the block's consistency (offset, count, the length / shapeSize arguments
 * when given) and the index of every GetDataPtr; the addresses themselves are checked by the
 * GlobalTensor accesses that use them.
 */
#ifndef ASCEND_ATTN_SIM_LIST_TENSOR_H
#define ASCEND_ATTN_SIM_LIST_TENSOR_H

#include <cstdint>

#include "base.h"

namespace AscendC {

class ListTensorDesc {
public:
    ListTensorDesc() = default;
    explicit ListTensorDesc(__gm__ void* data, uint32_t length = 0xffffffff, uint32_t shapeSize = 0xffffffff)
    {
        Init(data, length, shapeSize);
    }

    void Init(__gm__ void* data, uint32_t length = 0xffffffff, uint32_t shapeSize = 0xffffffff)
    {
        if (data == nullptr) {
            sim::Fail(sim::kInvalidArgument, "ListTensorDesc: null tensor-list descriptor");
        }
        const uint64_t* words = static_cast<const uint64_t*>(data);
        const uint64_t tableOffset = words[0];
        const uint32_t dims = static_cast<uint32_t>(words[1] & 0xffffffffull);
        const uint64_t descWords = dims == 0 ? 2 : 1 + dims;
        if (tableOffset < 8 + 8 * descWords || tableOffset % 8 != 0 || (tableOffset - 8) % (8 * descWords) != 0) {
            sim::Fail(sim::kInvalidArgument, sim::Str("ListTensorDesc: address table offset ", tableOffset,
                                                      " does not follow whole descriptors of ", descWords, " words"));
        }
        count_ = static_cast<uint32_t>((tableOffset - 8) / (8 * descWords));
        if (shapeSize != 0xffffffff && shapeSize != count_) {
            sim::Fail(sim::kInvalidArgument, sim::Str("ListTensorDesc: shapeSize ", shapeSize, " but ", count_, " tensors"));
        }
        if (length != 0xffffffff && length != tableOffset + 8ull * count_) {
            sim::Fail(sim::kInvalidArgument, sim::Str("ListTensorDesc: length ", length, " but the block has ",
                                                      tableOffset + 8ull * count_, " bytes"));
        }
        table_ = words + tableOffset / 8;
    }

    template <class T>
    __gm__ T* GetDataPtr(uint32_t index) const
    {
        if (table_ == nullptr || index >= count_) {
            sim::Fail(sim::kOutOfBounds, sim::Str("ListTensorDesc::GetDataPtr: index ", index, " of ", count_, " tensors"));
        }
        return reinterpret_cast<__gm__ T*>(static_cast<uintptr_t>(table_[index]));
    }

    uint32_t GetSize() const { return count_; }

private:
    const uint64_t* table_ = nullptr;
    uint32_t count_ = 0;
};

}  // namespace AscendC

#endif  // ASCEND_ATTN_SIM_LIST_TENSOR_H
