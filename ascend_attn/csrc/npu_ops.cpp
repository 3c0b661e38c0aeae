// NPU glue: the ascend_attn::* ops on NPU tensors, through the aclnn API of the ascend_attn
// custom-op package (ops_kernels/, OpTypes prefixed AscendAttn) and of CANN itself. Built only where torch_npu and CANN exist
// (scripts/build_npu_ext.py); ascend_attn/torch_ops/npu.py registers these functions as the
// PrivateUse1 ("npu") kernels of the ops, so validation, fake kernels and autograd stay shared.
//
// EXEC_NPU_CMD (op-plugin) resolves aclnnXxxGetWorkspaceSize / aclnnXxx at run time, converts
// at::Tensor / IntArrayRef / scalars to aclTensor / aclIntArray / ..., allocates the workspace
// and launches on the current stream.
#include <torch/extension.h>
#include "op_plugin/utils/op_api_common.h"

namespace {

using at::Tensor;
using c10::optional;

// Value-dependent int64 tensor inputs of the package's ops (their tilings read them on the host).
optional<Tensor> int64_tensor(optional<at::IntArrayRef> x, const Tensor& like) {
  if (!x.has_value()) return c10::nullopt;
  return at::tensor(*x, at::TensorOptions().dtype(at::kLong)).to(like.device());
}

// RingAttentionUpdate: the ascend_attn package's AscendAttnRingAttentionUpdate (the whole V2 contract)
// where the package is installed, else CANN's RingAttentionUpdateV2 (ascend_attn/aclnn.py: rau_api).
std::tuple<Tensor, Tensor, Tensor> ring_attention_update(
    const Tensor& prev_out, const Tensor& prev_max, const Tensor& prev_sum, const Tensor& cur_out,
    const Tensor& cur_max, const Tensor& cur_sum, optional<at::IntArrayRef> actual_seq_qlen,
    std::string input_layout, std::string input_softmax_layout, bool package) {
  Tensor out = at::empty_like(prev_out), m = at::empty_like(prev_max), s = at::empty_like(prev_sum);
  char* layout = const_cast<char*>(input_layout.c_str());
  char* sm_layout = const_cast<char*>(input_softmax_layout.c_str());
  if (package) {
    EXEC_NPU_CMD(aclnnAscendAttnRingAttentionUpdate, prev_out, prev_max, prev_sum, cur_out, cur_max, cur_sum,
                 int64_tensor(actual_seq_qlen, prev_out), layout, sm_layout, out, m, s);
  } else {
    auto seq = actual_seq_qlen.value_or(at::IntArrayRef{});
    EXEC_NPU_CMD(aclnnRingAttentionUpdateV2, prev_out, prev_max, prev_sum, cur_out, cur_max, cur_sum, seq,
                 layout, sm_layout, out, m, s);
  }
  return {out, m, s};
}

std::tuple<Tensor, Tensor, Tensor> flash_attention_varlen_score(
    const Tensor& q, const Tensor& k, const Tensor& v, int64_t head_num, at::IntArrayRef seq_q,
    at::IntArrayRef seq_kv, const optional<Tensor>& pse, const optional<Tensor>& drop_mask,
    const optional<Tensor>& atten_mask, optional<at::IntArrayRef> prefix, double scale, double keep_prob,
    int64_t pre_tokens, int64_t next_tokens, int64_t inner_precise, int64_t sparse_mode, int64_t pse_type,
    optional<at::IntArrayRef> q_start_idx, optional<at::IntArrayRef> kv_start_idx, std::string softmax_out_layout) {
  Tensor out = at::empty_like(q);
  Tensor m = at::empty({q.size(0), q.size(1), 8}, q.options().dtype(at::kFloat));
  Tensor s = at::empty_like(m), softmax_out = at::empty({0}, q.options());
  char* layout = const_cast<char*>("TND");
  char* sm_layout = const_cast<char*>(softmax_out_layout.c_str());
  EXEC_NPU_CMD(aclnnFlashAttentionVarLenScoreV4, q, k, v, pse, drop_mask, /*padding_mask*/ Tensor(), atten_mask,
               prefix.value_or(at::IntArrayRef{}), seq_q, seq_kv, q_start_idx.value_or(at::IntArrayRef{}),
               kv_start_idx.value_or(at::IntArrayRef{}), scale, keep_prob, pre_tokens, next_tokens, head_num, layout,
               inner_precise, sparse_mode, pse_type, sm_layout, m, s, softmax_out, out);
  return {out, m, s};
}

// FA grad V4: the ascend_attn package's AscendAttnFlashAttentionUnpaddingScoreGradV4 where its kernel
// implements the input (ascend_attn/aclnn.py: fag_api), else CANN's FlashAttentionUnpaddingScoreGradV4.
// Same contract; the package op takes the length lists as int64 tensors, CANN's as host int arrays.
std::tuple<Tensor, Tensor, Tensor, Tensor> flash_attention_unpadding_score_grad(
    const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& dy, int64_t head_num, at::IntArrayRef seq_q,
    at::IntArrayRef seq_kv, const Tensor& softmax_max, const Tensor& softmax_sum, const Tensor& attention_in,
    const optional<Tensor>& pse, const optional<Tensor>& drop_mask, const optional<Tensor>& atten_mask,
    optional<at::IntArrayRef> prefix, double scale, double keep_prob, int64_t pre_tokens, int64_t next_tokens,
    int64_t inner_precise, int64_t sparse_mode, int64_t pse_type, optional<at::IntArrayRef> q_start_idx,
    optional<at::IntArrayRef> kv_start_idx, std::string softmax_in_layout, bool package) {
  Tensor dq = at::empty_like(q), dk = at::empty_like(k), dv = at::empty_like(v), dpse = at::empty({0}, q.options());
  char* layout = const_cast<char*>("TND");
  char* sm_layout = const_cast<char*>(softmax_in_layout.c_str());
  if (package) {
    EXEC_NPU_CMD(aclnnAscendAttnFlashAttentionUnpaddingScoreGradV4, q, k, v, dy, pse, drop_mask,
                 /*padding_mask*/ Tensor(), atten_mask, softmax_max, softmax_sum, /*softmax_in*/ Tensor(), attention_in,
                 int64_tensor(prefix, q), int64_tensor(seq_q, q), int64_tensor(seq_kv, q), int64_tensor(q_start_idx, q),
                 int64_tensor(kv_start_idx, q), scale, keep_prob, pre_tokens, next_tokens, head_num, layout,
                 inner_precise, sparse_mode, pse_type, /*seed*/ int64_t(0), /*offset*/ int64_t(0), sm_layout, dq, dk,
                 dv, dpse);
  } else {
    EXEC_NPU_CMD(aclnnFlashAttentionUnpaddingScoreGradV4, q, k, v, dy, pse, drop_mask, /*padding_mask*/ Tensor(),
                 atten_mask, softmax_max, softmax_sum, /*softmax_in*/ Tensor(), attention_in,
                 prefix.value_or(at::IntArrayRef{}), seq_q, seq_kv, q_start_idx.value_or(at::IntArrayRef{}),
                 kv_start_idx.value_or(at::IntArrayRef{}), scale, keep_prob, pre_tokens, next_tokens, head_num, layout,
                 inner_precise, sparse_mode, pse_type, /*seed*/ int64_t(0), /*offset*/ int64_t(0), sm_layout, dq, dk,
                 dv, dpse);
  }
  return {dq, dk, dv, dpse};
}

// IncreFlashAttention has two entries (ascend_attn/aclnn.py picks one per input): the package's
// own AscendAttnIncreFlashAttentionV2 kernel (BSH / BSND / BNSD, one K/V tensor or tensor lists, float path and
// int8 scenarios A/B/C, flash-decode split) and
// CANN's built-in IncreFlashAttentionV4 for the V4 extensions the package kernel does not implement.
Tensor ifa_output(const Tensor& query, const std::string& out_dtype) {
  auto dtype = out_dtype == "int8" ? at::kChar : (out_dtype == "float16" ? at::kHalf : query.scalar_type());
  return at::empty(query.sizes(), query.options().dtype(dtype));
}

Tensor incre_flash_attention_package(
    const Tensor& query, at::TensorList key, at::TensorList value, const optional<Tensor>& pse_shift,
    const optional<Tensor>& atten_mask, const optional<Tensor>& actual_seq_lengths,
    const optional<Tensor>& dequant_scale1, const optional<Tensor>& quant_scale1,
    const optional<Tensor>& dequant_scale2, const optional<Tensor>& quant_scale2,
    const optional<Tensor>& quant_offset2, int64_t num_heads, double scale_value, std::string input_layout,
    int64_t num_key_value_heads, int64_t block_size, int64_t inner_precise, std::string out_dtype) {
  Tensor out = ifa_output(query, out_dtype);
  char* layout = const_cast<char*>(input_layout.c_str());
  // the package op's IR: key / value DYNAMIC (tensor lists, as CANN's V2), actual_seq_lengths an int64 tensor
  EXEC_NPU_CMD(aclnnAscendAttnIncreFlashAttentionV2, query, key, value, pse_shift, atten_mask, actual_seq_lengths,
               dequant_scale1, quant_scale1, dequant_scale2, quant_scale2, quant_offset2, num_heads, scale_value,
               layout, num_key_value_heads, block_size, inner_precise, out);
  return out;
}

Tensor incre_flash_attention_cann(
    const Tensor& query, at::TensorList key, at::TensorList value, const optional<Tensor>& pse_shift,
    const optional<Tensor>& atten_mask, optional<at::IntArrayRef> actual_seq_lengths,
    const optional<Tensor>& dequant_scale1, const optional<Tensor>& quant_scale1,
    const optional<Tensor>& dequant_scale2, const optional<Tensor>& quant_scale2,
    const optional<Tensor>& quant_offset2, const optional<Tensor>& antiquant_scale,
    const optional<Tensor>& antiquant_offset, const optional<Tensor>& block_table,
    const optional<Tensor>& kv_padding_size, int64_t num_heads, double scale_value, std::string input_layout,
    int64_t num_key_value_heads, int64_t block_size, int64_t inner_precise, std::string out_dtype) {
  Tensor out = ifa_output(query, out_dtype);
  char* layout = const_cast<char*>(input_layout.c_str());
  EXEC_NPU_CMD(aclnnIncreFlashAttentionV4, query, key, value, pse_shift, atten_mask,
               actual_seq_lengths.value_or(at::IntArrayRef{}), dequant_scale1, quant_scale1, dequant_scale2,
               quant_scale2, quant_offset2, antiquant_scale, antiquant_offset, block_table, kv_padding_size,
               num_heads, scale_value, layout, num_key_value_heads, block_size, inner_precise, out);
  return out;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("ring_attention_update", &ring_attention_update);
  m.def("flash_attention_varlen_score", &flash_attention_varlen_score);
  m.def("flash_attention_unpadding_score_grad", &flash_attention_unpadding_score_grad);
  m.def("incre_flash_attention_package", &incre_flash_attention_package);
  m.def("incre_flash_attention_cann", &incre_flash_attention_cann);
}
