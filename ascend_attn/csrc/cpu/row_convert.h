// Whole rows between a tensor's own dtype and float32, shared by the FA and IFA kernels: inputs are
// read in their dtype and converted row by row (never as whole tensors first), outputs are rounded
// onto the dtype's grid by the spec's rule and narrowed as they are written.
#pragma once

#include <cstdint>

#include "decode_simd.h"

namespace ascend_attn_cpu {

// n elements of a row of `type` (fp32 / fp16 / bf16; int8 rows are converted where they are read,
// with their antiquant) starting at element `offset` of src, as float32 (exact).
void load_row(const void* src, ElemType type, int64_t offset, int64_t n, float* dst);

// `rows` such rows, row r starting at element offset + r * stride, into dst + r * dst_ld. The rows of
// one head are N * D elements apart (2-4 KiB: each on its own page, where the hardware prefetchers
// lose them), so the rows a few ahead are prefetched: 3-4 % of a fp16 / bf16 FA forward, none for fp32.
void load_rows(const void* src, ElemType type, int64_t offset, int64_t stride, int64_t rows, int64_t n, float* dst,
               int64_t dst_ld);

// src[0 .. n) into a row of `type` at element `offset` of dst: fp16 rounded to nearest with ties away
// from zero, bf16 to nearest even (semantics.md §0.5; NaN stays NaN), fp32 copied.
void store_row(const float* src, int64_t n, ElemType type, void* dst, int64_t offset);

}  // namespace ascend_attn_cpu
