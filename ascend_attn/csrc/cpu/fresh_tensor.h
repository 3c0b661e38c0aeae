// ATen side, shared by the op bindings: output and scratch tensors on fresh memory.
#pragma once

#include <ATen/ATen.h>

#include "common.h"

namespace ascend_attn_cpu {

// An uninitialised tensor that the caller writes in full (zero: zeroed here). Large ones get
// transparent huge pages before their first touch (advise_huge_pages): on this VM a fresh 64 MiB
// buffer took 52 ms to fill with 4 KiB pages and 12 ms with 2 MiB ones, against 6 ms once mapped.
inline at::Tensor fresh_tensor(at::IntArrayRef sizes, const at::TensorOptions& options, bool zero = false) {
  at::Tensor t = at::empty(sizes, options);
  advise_huge_pages(t.data_ptr(), t.nbytes());
  return zero ? t.zero_() : t;
}

}  // namespace ascend_attn_cpu
