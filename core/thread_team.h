// ThreadTeam: a fixed team of threads that run one function per member, with wake-up latency of
// a few microseconds (members spin briefly before they sleep). Used to split one training step
// across cores (core/sharded_step.h), where a step lasts a fraction of a millisecond and
// OpenMP's sleeping workers cost a futex wake-up per parallel region.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include <torch/types.h>

namespace dtrain {

class ThreadTeam {
 public:
  /// `size` members: the calling thread of run() and size - 1 worker threads. Workers run with
  /// LibTorch's intra-op parallelism off and autograd off (their work is single-threaded, and
  /// gradients are written by hand).
  explicit ThreadTeam(int size);
  ~ThreadTeam();
  ThreadTeam(const ThreadTeam&) = delete;
  ThreadTeam& operator=(const ThreadTeam&) = delete;

  int size() const { return static_cast<int>(workers_.size()) + 1; }

  /// Runs fn(0) .. fn(size() - 1) at once, fn(0) on this thread; returns when all have returned,
  /// rethrowing the first exception any of them threw. Every member runs single-threaded (no
  /// OpenMP team) with autograd off and asynchronous signals blocked (AsyncSignalsBlocked, core/
  /// blas.h): a signal sent meanwhile waits for run() to return or goes to another thread. Not
  /// reentrant.
  void run(const std::function<void(int)>& fn);

  /// Inside run(): waits until every member has reached this barrier (each must, the same number
  /// of times). Spins like the members do between runs. When another member has thrown, throws
  /// (TeamAborted) instead of waiting for a member that will never come; run() then rethrows the
  /// first member's own error.
  void barrier();

  /// What barrier() throws in the members left behind by one that failed.
  struct TeamAborted : std::exception {
    const char* what() const noexcept override { return "another team member failed"; }
  };

 private:
  void work(int member);

  std::vector<std::thread> workers_;
  const std::function<void(int)>* job_ = nullptr;
  std::vector<std::exception_ptr> errors_;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> pending_{0};
  std::atomic<bool> stop_{false};
  std::atomic<bool> failed_{false};  // a member threw during this run
  std::atomic<int> arrived_{0};
  std::atomic<uint64_t> barrier_round_{0};
  std::mutex mutex_;
  std::condition_variable wake_;
};

/// [begin, end) of block `k` when `n` items are split into `parts` contiguous blocks that differ
/// in size by at most one: how every team divides its work.
inline std::pair<int64_t, int64_t> block_of(int64_t n, int k, int parts) {
  return {n * k / parts, n * (k + 1) / parts};
}

/// Elements [begin, end) of `member`'s block of whole rows (dim 0) of `t` when a team of
/// `members` splits it: how Model::team_step and the optimizer divide parameters.
std::pair<int64_t, int64_t> member_rows(const torch::Tensor& t, int member, int members);

/// Work on member `member` of `members`' share (member_rows' blocks) of every parameter, run by
/// that member: an optimizer step split across a team (Optimizer::begin_member_step).
using MemberStep = std::function<void(int member, int members)>;

/// The threads one process computes with on the CPU (--threads, resolved by the command; 1 until
/// set). The Trainer splits each batch across that many (core/sharded_step.h); elsewhere OpenBLAS
/// runs GEMMs on that many. LibTorch's own OpenMP intra-op teams are kept to one thread: their
/// spinning workers fought OpenBLAS's threads and ours for the cores (an epoch took 4x longer),
/// and the only cure for that inside libgomp, OMP_WAIT_POLICY, is read once when it loads.
void set_compute_threads(int threads);
int compute_threads();

/// Denormal floats read and written as zero (DAZ and FTZ) on the calling thread, as TensorFlow
/// runs its compute threads. Momentum of weights whose gradient stays zero (MNIST's border
/// pixels) decays into the denormal range, where arithmetic is slow: epochs after the first took
/// 6-20 % longer. set_compute_threads() sets it on the calling thread, ThreadTeam on its members.
/// A no-op on a CPU without these modes.
void flush_denormals_on_this_thread();

}  // namespace dtrain
