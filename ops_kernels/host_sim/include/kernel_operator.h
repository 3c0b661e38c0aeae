/*
 * ascend_attn host simulation of AscendC — the kernel-side entry header.
 *
 * Kernels include "kernel_operator.h" exactly as on the device; in the host-sim build this file
 * (not CANN's) is found first on the include path. It emulates the AscendC API subset listed in
 * ops_kernels/host_sim/README.md and enforces the hardware limits that matter for correctness:
 * on-chip buffer capacity (UB 192 KiB default), DataCopy 32-byte alignment, queue depth and the
 * buffer protocol, tensor bounds, supported dtypes.
 */
#ifndef ASCEND_ATTN_SIM_KERNEL_OPERATOR_H
#define ASCEND_ATTN_SIM_KERNEL_OPERATOR_H

#include "ascend_attn_sim/base.h"
#include "ascend_attn_sim/cast.h"
#include "ascend_attn_sim/data_copy.h"
#include "ascend_attn_sim/kernel.h"
#include "ascend_attn_sim/list_tensor.h"
#include "ascend_attn_sim/pipe.h"
#include "ascend_attn_sim/tensor.h"
#include "ascend_attn_sim/vec.h"

#endif  // ASCEND_ATTN_SIM_KERNEL_OPERATOR_H
