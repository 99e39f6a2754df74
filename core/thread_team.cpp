#include "core/thread_team.h"

#include "core/blas.h"

#include <ATen/Context.h>
#include <ATen/Parallel.h>
#include <dlfcn.h>
#include <torch/types.h>

#include <chrono>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define DTRAIN_CPU_RELAX() _mm_pause()
#else
#define DTRAIN_CPU_RELAX() std::this_thread::yield()
#endif

namespace dtrain {

namespace {

// How long an idle member spins before it sleeps: longer than the gap between the parallel
// phases of one step (batch gather, optimizer), far shorter than the gap between epochs.
constexpr auto kSpin = std::chrono::microseconds(2000);

std::atomic<int> g_compute_threads{0};

/// The OpenMP runtime LibTorch loaded (libgomp; a renamed copy in pip wheels), looked up at run
/// time: linking one ourselves could bring a second runtime whose settings LibTorch never sees.
struct OpenMp {
  using Set = void (*)(int);
  using Get = int (*)();
  Set set = reinterpret_cast<Set>(dlsym(RTLD_DEFAULT, "omp_set_num_threads"));
  Get get = reinterpret_cast<Get>(dlsym(RTLD_DEFAULT, "omp_get_max_threads"));
};
const OpenMp& openmp() {
  static const OpenMp api;
  return api;
}

/// This thread's OpenMP team size (thread-local in OpenMP); returns the previous one, 0 if there
/// is no OpenMP runtime.
int set_openmp_threads(int threads) {
  const OpenMp& omp = openmp();
  if (omp.set == nullptr || omp.get == nullptr) return 0;
  const int before = omp.get();
  omp.set(threads);
  return before;
}

/// One turn of a spin wait: a pause, and after some 65,000 of them a yield (a system call is dear
/// in a VM), so that with more members than free cores the one waited for gets to run.
void relax(int spins) {
  if (spins < (1 << 16)) {
    DTRAIN_CPU_RELAX();
  } else {
    std::this_thread::yield();
  }
}

}  // namespace

std::pair<int64_t, int64_t> member_rows(const torch::Tensor& t, int member, int members) {
  const int64_t rows = t.dim() == 0 ? 1 : t.size(0);
  const int64_t row = rows == 0 ? 0 : t.numel() / rows;
  const auto [begin, end] = block_of(rows, member, members);
  return {begin * row, end * row};
}

void flush_denormals_on_this_thread() {
  at::globalContext().setFlushDenormal(true);  // (false, and nothing set, where the CPU cannot)
}

void set_compute_threads(int threads) {
  flush_denormals_on_this_thread();
  g_compute_threads.store(std::max(1, threads));
  at::set_num_threads(1);
  set_blas_threads(std::max(1, threads));
}

int compute_threads() { return std::max(1, g_compute_threads.load()); }

ThreadTeam::ThreadTeam(int size) : errors_(static_cast<size_t>(std::max(1, size))) {
  for (int k = 1; k < size; ++k) workers_.emplace_back([this, k] { work(k); });
}

ThreadTeam::~ThreadTeam() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_.store(true);
  }
  wake_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadTeam::run(const std::function<void(int)>& fn) {
  // The members' GEMMs may be oneDNN's, which must not take a signal (core/blas.h); blocked once
  // here rather than around each of the step's GEMMs.
  const AsyncSignalsBlocked signals_wait;
  if (workers_.empty()) {
    fn(0);
    return;
  }
  job_ = &fn;
  for (auto& e : errors_) e = nullptr;
  failed_.store(false, std::memory_order_relaxed);
  arrived_.store(0, std::memory_order_relaxed);  // a failed run may have left arrivals behind
  pending_.store(static_cast<int>(workers_.size()), std::memory_order_relaxed);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    generation_.fetch_add(1, std::memory_order_release);
  }
  wake_.notify_all();                             // cheap when nobody sleeps
  const int omp_threads = set_openmp_threads(1);  // this thread's share is single-threaded too
  try {
    torch::NoGradGuard no_grad;
    fn(0);
  } catch (const TeamAborted&) {  // another member's error is the one to report
  } catch (...) {
    errors_[0] = std::current_exception();
    failed_.store(true, std::memory_order_release);
  }
  if (omp_threads > 0) set_openmp_threads(omp_threads);
  for (int spins = 1; pending_.load(std::memory_order_acquire) != 0; ++spins) relax(spins);
  job_ = nullptr;
  for (auto& e : errors_) {
    if (e) std::rethrow_exception(e);
  }
}

void ThreadTeam::barrier() {
  if (workers_.empty()) return;
  const uint64_t round = barrier_round_.load(std::memory_order_acquire);
  if (arrived_.fetch_add(1, std::memory_order_acq_rel) + 1 == size()) {
    arrived_.store(0, std::memory_order_relaxed);
    barrier_round_.fetch_add(1, std::memory_order_acq_rel);
    return;
  }
  for (int spins = 1; barrier_round_.load(std::memory_order_acquire) == round; ++spins) {
    if (failed_.load(std::memory_order_acquire)) throw TeamAborted();
    relax(spins);
  }
}

void ThreadTeam::work(int member) {
  // Signals are for the other threads (core/blas.h: oneDNN's GEMMs must not take one).
  const AsyncSignalsBlocked never_here;
  // One thread's share of a step is single-threaded: no OpenMP team inside it.
  set_openmp_threads(1);
  flush_denormals_on_this_thread();
  torch::NoGradGuard no_grad;
  uint64_t seen = 0;
  while (true) {
    uint64_t now = generation_.load(std::memory_order_acquire);
    if (now == seen) {
      const auto until = std::chrono::steady_clock::now() + kSpin;
      int spins = 0;
      while ((now = generation_.load(std::memory_order_acquire)) == seen && !stop_.load()) {
        relax(++spins);
        if (spins % 256 == 0 && std::chrono::steady_clock::now() > until) break;
      }
      if (now == seen) {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [&] {
          return stop_.load() || generation_.load(std::memory_order_acquire) != seen;
        });
        now = generation_.load(std::memory_order_acquire);
      }
    }
    if (stop_.load()) return;
    seen = now;
    try {
      (*job_)(member);
    } catch (const TeamAborted&) {
    } catch (...) {
      errors_[static_cast<size_t>(member)] = std::current_exception();
      failed_.store(true, std::memory_order_release);
    }
    pending_.fetch_sub(1, std::memory_order_acq_rel);
  }
}

}  // namespace dtrain
