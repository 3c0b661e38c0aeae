/*
 * ascend_attn host simulation: launching a kernel from a runner (host side, not AscendC API).
 *
 *   AscendC::sim::Config cfg;  cfg.capacity[AscendC::sim::kUB] = ubSize;
 *   AscendC::sim::Launch launch(cfg);
 *   launch.Input("x", x, xBytes);             // GM buffers the kernel may read
 *   launch.Output("y", y, yBytes);            // ... may write; by default exactly once per byte
 *   launch.Input("tiling", &tilingData, sizeof(tilingData));
 *   std::string msg;
 *   int rc = launch.Run(blockDim, tilingKey, [&] { my_kernel(x, y, nullptr, (GM_ADDR)&tilingData); }, &msg);
 *
 * Run executes the kernel entry once per block index (GetBlockIdx() = 0 .. blockDim-1) with a
 * fresh on-chip arena per block, converts any SimError into its status code + message, reports
 * errors found in destructors (leaked queue buffers) and, after the last block, checks that every
 * byte of an exactly-once output was written exactly once (no gaps between the blocks' tiles, no
 * overlapping writes). Only one launch runs at a time per process.
 */
#ifndef ASCEND_ATTN_SIM_RUNTIME_H
#define ASCEND_ATTN_SIM_RUNTIME_H

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "ascend_attn_sim/base.h"

namespace AscendC {
namespace sim {

struct RunReport {
    uint64_t peak[kPhysMemCount] = {};  // largest on-chip usage of any block, bytes
    int64_t blocks = 0;                 // blocks that ran to completion
};

class Launch {
public:
    explicit Launch(const Config& cfg = Config());
    ~Launch();
    Launch(const Launch&) = delete;
    Launch& operator=(const Launch&) = delete;

    void Input(const char* name, const void* p, uint64_t bytes);
    void Output(const char* name, void* p, uint64_t bytes, bool exactlyOnce = true);
    void Scratch(const char* name, void* p, uint64_t bytes);  // read-write workspace, no coverage check

    int Run(int64_t blockDim, uint64_t tilingKey, const std::function<void()>& kernel, std::string* msg,
            RunReport* report = nullptr);

    // used by the runtime
    struct Region {
        std::string name;
        const uint8_t* base = nullptr;
        uint64_t bytes = 0;
        bool writable = false;
        bool coverage = false;
        std::unique_ptr<std::atomic<uint8_t>[]> counts;
    };
    const Config& config() const { return cfg_; }
    std::vector<Region>& regions() { return regions_; }

private:
    void Add(const char* name, const void* p, uint64_t bytes, bool writable, bool coverage);
    std::string CheckCoverage();

    Config cfg_;
    std::vector<Region> regions_;
};

// Copies s into a caller buffer (truncated, NUL-terminated). len <= 0 or buf == null: nothing.
void CopyMessage(const std::string& s, char* buf, int64_t len);

// For runner C ABI functions: runs f(std::string& msg) -> int and maps any escaping exception
// to its status code, writing the message to buf.
template <typename F>
int GuardedCall(F&& f, char* buf, int64_t len)
{
    std::string msg;
    int rc;
    try {
        rc = f(msg);
    } catch (const SimError& e) {
        rc = e.code();
        msg = e.what();
    } catch (const std::exception& e) {
        rc = kInternal;
        msg = std::string("host sim internal error: ") + e.what();
    } catch (...) {
        rc = kInternal;
        msg = "host sim internal error: unknown exception";
    }
    CopyMessage(msg, buf, len);
    return rc;
}

}  // namespace sim
}  // namespace AscendC

#endif  // ASCEND_ATTN_SIM_RUNTIME_H
