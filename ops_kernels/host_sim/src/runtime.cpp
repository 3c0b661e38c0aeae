/*
 * ascend_attn host simulation: per-core context, GM registry, error plumbing, block launcher.
 */
#include "ascend_attn_sim/runtime.h"

#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <thread>

namespace AscendC {
namespace sim {

namespace {

thread_local CoreContext* t_core = nullptr;
Launch* g_launch = nullptr;
std::mutex g_launch_mu;  // one launch at a time
std::mutex g_atomic_mu;  // atomic-add stores in threaded mode

// Barrier for SyncAll in threaded mode; aborts instead of hanging when a block fails or returns
// while others wait.
struct Barrier {
    std::mutex mu;
    std::condition_variable cv;
    int64_t active = 0;
    int64_t waiting = 0;
    uint64_t generation = 0;
    bool aborted = false;
    std::string abortMsg;

    void Wait()
    {
        std::unique_lock<std::mutex> lk(mu);
        if (aborted) {
            throw SimError(kInternal, "aborted: " + abortMsg);
        }
        const uint64_t gen = generation;
        if (++waiting == active) {
            waiting = 0;
            ++generation;
            cv.notify_all();
            return;
        }
        cv.wait(lk, [&] { return generation != gen || aborted; });
        if (aborted) {
            throw SimError(kInternal, "aborted: " + abortMsg);
        }
    }
    void Leave(bool failed, const std::string& why)
    {
        std::lock_guard<std::mutex> lk(mu);
        --active;
        if (failed && !aborted) {
            aborted = true;
            abortMsg = why;
            cv.notify_all();
        } else if (!aborted && waiting > 0 && waiting == active) {
            aborted = true;
            abortMsg = "SyncAll: a block returned while other blocks wait at SyncAll (mismatched SyncAll calls)";
            cv.notify_all();
        }
    }
};
Barrier* g_barrier = nullptr;

std::string Prefix()
{
    if (t_core == nullptr) {
        return std::string();
    }
    return Str("[block ", t_core->blockIdx, "/", t_core->blockNum, "] ");
}

Launch::Region* FindRegion(const void* p, uint64_t bytes)
{
    if (g_launch == nullptr) {
        return nullptr;
    }
    const uint8_t* a = static_cast<const uint8_t*>(p);
    for (auto& r : g_launch->regions()) {
        if (a >= r.base && a + bytes <= r.base + r.bytes && a <= r.base + r.bytes) {
            return &r;
        }
    }
    return nullptr;
}

std::string Describe(const void* p, uint64_t bytes)
{
    const uint8_t* a = static_cast<const uint8_t*>(p);
    for (auto& r : g_launch->regions()) {
        if (a + bytes > r.base && a < r.base + r.bytes + 4096) {
            const int64_t off = static_cast<int64_t>(a - r.base);
            return Str(" (byte offset ", off, " .. ", off + static_cast<int64_t>(bytes), " of '", r.name, "' which has ",
                       r.bytes, " bytes)");
        }
    }
    return " (not near any registered GM buffer)";
}

void RunBlock(const std::function<void()>& kernel, CoreContext& ctx, int& code, std::string& msg)
{
    t_core = &ctx;
    try {
        kernel();
    } catch (const SimError& e) {
        code = e.code();
        msg = e.what();
    } catch (const std::exception& e) {
        code = kInternal;
        msg = Prefix() + "host sim internal error: " + e.what();
    } catch (...) {
        code = kInternal;
        msg = Prefix() + "host sim internal error: unknown exception";
    }
    if (code == kOk && ctx.deferredCode != kOk) {
        code = ctx.deferredCode;
        msg = ctx.deferredMsg;
    }
    t_core = nullptr;
    for (auto& a : ctx.arena) {
        std::free(a);
        a = nullptr;
    }
}

}  // namespace

CoreContext* CurrentCore() { return t_core; }

uint8_t* Arena(CoreContext& core, int mem)
{
    if (core.arena[mem] == nullptr) {
        const uint64_t cap = (core.cfg->capacity[mem] + 63) / 64 * 64;
        void* p = std::aligned_alloc(64, cap == 0 ? 64 : cap);
        if (p == nullptr) {
            throw SimError(kInternal, "host sim: cannot allocate the on-chip arena");
        }
        std::memset(p, core.cfg->poison ? 0xFF : 0x00, cap == 0 ? 64 : cap);
        core.arena[mem] = static_cast<uint8_t*>(p);
    }
    return core.arena[mem];
}

void Fail(int code, const std::string& msg) { throw SimError(code, Prefix() + msg); }
void FailRule(int code, const char* rule, const std::string& msg) { Fail(code, msg + " [rule " + rule + "]"); }

void Defer(int code, const std::string& msg)
{
    if (t_core != nullptr && t_core->deferredCode == kOk) {
        t_core->deferredCode = code;
        t_core->deferredMsg = Prefix() + msg;
    }
}

void CheckGm(const void* p, uint64_t bytes, bool write, const char* what)
{
    if (g_launch == nullptr || bytes == 0) {
        return;
    }
    Launch::Region* r = FindRegion(p, bytes);
    if (r == nullptr) {
        Fail(kOutOfBounds, Str(what, ": GM ", write ? "write" : "read", " of ", bytes, " bytes outside every buffer the runner registered",
                               Describe(p, bytes)));
    }
    if (write && !r->writable) {
        Fail(kOutOfBounds, Str(what, ": kernel writes to the read-only GM input '", r->name, "'"));
    }
}

void NoteGmWrite(const void* p, uint64_t bytes)
{
    if (g_launch == nullptr || bytes == 0) {
        return;
    }
    Launch::Region* r = FindRegion(p, bytes);
    if (r == nullptr || !r->coverage) {
        return;
    }
    const uint64_t off = static_cast<const uint8_t*>(p) - r->base;
    for (uint64_t i = 0; i < bytes; ++i) {
        uint8_t c = r->counts[off + i].load(std::memory_order_relaxed);
        while (c < 255 && !r->counts[off + i].compare_exchange_weak(c, static_cast<uint8_t>(c + 1), std::memory_order_relaxed)) {
        }
    }
}

bool AtomicWriteLock(bool lock)
{
    if (lock) {
        g_atomic_mu.lock();
    } else {
        g_atomic_mu.unlock();
    }
    return true;
}

void SyncAllBlocks()
{
    if (g_barrier == nullptr) {
        Fail(kUnsupported, "SyncAll: the runner launched the blocks sequentially; cross-block barriers need "
                           "Config::threaded = true");
    }
    g_barrier->Wait();
}

// ---- Launch ------------------------------------------------------------------------------------------

Launch::Launch(const Config& cfg) : cfg_(cfg) {}
Launch::~Launch() = default;

void Launch::Add(const char* name, const void* p, uint64_t bytes, bool writable, bool coverage)
{
    if (p == nullptr || bytes == 0) {
        return;  // absent optional input / empty tensor: any access will fail as out of bounds
    }
    Region r;
    r.name = name;
    r.base = static_cast<const uint8_t*>(p);
    r.bytes = bytes;
    r.writable = writable;
    r.coverage = coverage;
    regions_.push_back(std::move(r));
}

void Launch::Input(const char* name, const void* p, uint64_t bytes) { Add(name, p, bytes, false, false); }
void Launch::Output(const char* name, void* p, uint64_t bytes, bool exactlyOnce) { Add(name, p, bytes, true, exactlyOnce); }
void Launch::Scratch(const char* name, void* p, uint64_t bytes) { Add(name, p, bytes, true, false); }

std::string Launch::CheckCoverage()
{
    for (auto& r : regions_) {
        if (!r.coverage) {
            continue;
        }
        for (uint64_t i = 0; i < r.bytes; ++i) {
            const uint8_t c = r.counts[i].load();
            if (c == 1) {
                continue;
            }
            uint64_t j = i;
            while (j < r.bytes && r.counts[j].load() == c) {
                ++j;
            }
            return Str("output '", r.name, "': bytes [", i, ", ", j, ") of ", r.bytes, " written ", static_cast<int>(c),
                       c == 0 ? " times (no block covers them: tiling gap)" : " times (overlapping writes: tiling overlap)");
        }
    }
    return std::string();
}

int Launch::Run(int64_t blockDim, uint64_t tilingKey, const std::function<void()>& kernel, std::string* msg, RunReport* report)
{
    std::lock_guard<std::mutex> guard(g_launch_mu);
    if (blockDim < 1 || blockDim > 65535) {
        if (msg) *msg = Str("launch: blockDim ", blockDim, " outside [1, 65535]");
        return kInvalidArgument;
    }
    for (auto& r : regions_) {
        if (r.coverage) {
            r.counts.reset(new std::atomic<uint8_t>[r.bytes]);
            for (uint64_t i = 0; i < r.bytes; ++i) {
                r.counts[i].store(0, std::memory_order_relaxed);
            }
        }
    }
    g_launch = this;
    int code = kOk;
    std::string text;
    RunReport rep;
    std::vector<CoreContext> ctxs(static_cast<size_t>(blockDim));
    for (int64_t b = 0; b < blockDim; ++b) {
        ctxs[b].blockIdx = b;
        ctxs[b].blockNum = blockDim;
        ctxs[b].tilingKey = tilingKey;
        ctxs[b].cfg = &cfg_;
    }
    auto account = [&](CoreContext& c) {
        for (int m = 0; m < kPhysMemCount; ++m) {
            rep.peak[m] = c.peak[m] > rep.peak[m] ? c.peak[m] : rep.peak[m];
        }
    };
    if (!cfg_.threaded) {
        for (int64_t b = 0; b < blockDim && code == kOk; ++b) {
            RunBlock(kernel, ctxs[b], code, text);
            account(ctxs[b]);
            if (code == kOk) {
                ++rep.blocks;
            }
        }
    } else {
        Barrier barrier;
        barrier.active = blockDim;
        g_barrier = &barrier;
        std::vector<int> codes(static_cast<size_t>(blockDim), kOk);
        std::vector<std::string> texts(static_cast<size_t>(blockDim));
        std::vector<std::thread> threads;
        threads.reserve(static_cast<size_t>(blockDim));
        for (int64_t b = 0; b < blockDim; ++b) {
            threads.emplace_back([&, b] {
                RunBlock(kernel, ctxs[b], codes[b], texts[b]);
                barrier.Leave(codes[b] != kOk, texts[b]);
            });
        }
        for (auto& t : threads) {
            t.join();
        }
        g_barrier = nullptr;
        // report the first real failure (not a consequential abort)
        for (int64_t b = 0; b < blockDim; ++b) {
            account(ctxs[b]);
            const bool currentIsAbort = code != kOk && text.rfind("aborted", 0) == 0;
            if (codes[b] == kOk) {
                ++rep.blocks;
            } else if (code == kOk || (currentIsAbort && texts[b].rfind("aborted", 0) != 0)) {
                code = codes[b];
                text = texts[b];
            }
        }
    }
    if (code == kOk && cfg_.checkCoverage) {
        text = CheckCoverage();
        if (!text.empty()) {
            code = kCoverage;
        }
    }
    g_launch = nullptr;
    for (auto& r : regions_) {
        r.counts.reset();
    }
    if (report) {
        *report = rep;
    }
    if (msg) {
        *msg = text;
    }
    return code;
}

void CopyMessage(const std::string& s, char* buf, int64_t len)
{
    if (buf == nullptr || len <= 0) {
        return;
    }
    const size_t n = s.size() < static_cast<size_t>(len - 1) ? s.size() : static_cast<size_t>(len - 1);
    std::memcpy(buf, s.data(), n);
    buf[n] = '\0';
}

}  // namespace sim
}  // namespace AscendC
