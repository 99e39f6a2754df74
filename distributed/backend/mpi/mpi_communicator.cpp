#include "distributed/backend/mpi/mpi_communicator.h"

#include <fmt/ranges.h>
#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>

#include <sys/statvfs.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <thread>
#include <type_traits>

#include "core/errors.h"
#include "core/thread_team.h"
#include "distributed/backend/mpi/mpi_check.h"
#include "distributed/detail.h"

namespace dtrain::distributed {

namespace {

constexpr int kTagSignature = 1;
constexpr int kTagVerdict = 2;
constexpr int kTagReduceScatter = 3;
constexpr int kTagAllgather = 4;

using Clock = std::chrono::steady_clock;

struct MpiRuntime {
  bool initialized_here = false;
  ~MpiRuntime() { finalize(); }
  void finalize() const {
    int init = 0, fin = 0;
    MPI_Initialized(&init);
    MPI_Finalized(&fin);
    if (initialized_here && init && !fin) MPI_Finalize();
  }
};

MpiRuntime& runtime() {
  static MpiRuntime r;
  return r;
}

void check_tensor(const torch::Tensor& t, const char* call, bool bytes_ok = false) {
  if (!t.defined() || !t.is_contiguous() || !t.device().is_cpu()) {
    throw CommError(std::string(call) + ": the MPI backend needs a defined, contiguous CPU tensor");
  }
  switch (t.scalar_type()) {
    case torch::kFloat:
    case torch::kDouble:
    case torch::kHalf:
    case torch::kInt:
    case torch::kLong:
      return;
    case torch::kByte:
      if (bytes_ok) return;
      break;
    default:
      throw CommError(std::string(call) + ": unsupported dtype " +
                      std::string(c10::toString(t.scalar_type())) +
                      " (expected float32, float16, float64, int32 or int64)");
  }
}

// Sum of halves for MPI_Allreduce (MPI has no half type).
void half_sum(void* in, void* inout, int* len, MPI_Datatype*) {
  detail::add_halves(inout, in, *len);
}

MPI_Op half_sum_op() {
  static MPI_Op op = [] {
    MPI_Op o;
    MPI_CHECK(MPI_Op_create(&half_sum, /*commute=*/1, &o));
    return o;
  }();
  return op;
}

MPI_Datatype mpi_type(torch::ScalarType t) {
  switch (t) {
    case torch::kFloat:
      return MPI_FLOAT;
    case torch::kDouble:
      return MPI_DOUBLE;
    case torch::kHalf:
      return MPI_UINT16_T;
    case torch::kInt:
      return MPI_INT32_T;
    case torch::kLong:
      return MPI_INT64_T;
    default:
      throw CommError("no MPI type for " + std::string(c10::toString(t)));
  }
}

// dst[i] += src[i]. A plain loop the compiler vectorises: wrapping each segment in tensors and
// calling add_ cost several microseconds per segment, which dominated small allreduces.
template <typename T>
void add_loop(void* dst, const void* src, int64_t n) {
  T* __restrict d = static_cast<T*>(dst);
  const T* __restrict s = static_cast<const T*>(src);
  for (int64_t i = 0; i < n; ++i) d[i] += s[i];
}

void add_into(void* dst, const void* src, int64_t n, torch::ScalarType type) {
  switch (type) {
    case torch::kFloat:
      return add_loop<float>(dst, src, n);
    case torch::kDouble:
      return add_loop<double>(dst, src, n);
    case torch::kInt:
      return add_loop<int32_t>(dst, src, n);
    case torch::kLong:
      return add_loop<int64_t>(dst, src, n);
    case torch::kHalf:
      return detail::add_halves(dst, src, n);
    default: {
      auto d = torch::from_blob(dst, {n}, type);
      d.add_(torch::from_blob(const_cast<void*>(src), {n}, type));
    }
  }
}

// Put before a loop whose output may be one of its inputs, element for element: there is no
// dependence between elements, so it vectorises without the run-time overlap check that would
// send it down the scalar path.
#if defined(__clang__)
#define DTRAIN_ELEMENTWISE_LOOP _Pragma("clang loop vectorize(assume_safety)")
#elif defined(__GNUC__)
#define DTRAIN_ELEMENTWISE_LOOP _Pragma("GCC ivdep")
#else
#define DTRAIN_ELEMENTWISE_LOOP
#endif

// out[i] = finish(a[i] + b[i]) for i < m, where `out` may be `a` or `b`; returns whether every
// result is finite (always for integers).
template <typename T, typename Finish>
bool add_finish(const T* a, const T* b, T* out, int64_t m, Finish finish) {
  if constexpr (std::is_floating_point_v<T>) {
    decltype(detail::nonfinite_bit(T{})) bad = 0;
    DTRAIN_ELEMENTWISE_LOOP
    for (int64_t i = 0; i < m; ++i) {
      const T x = finish(a[i] + b[i]);
      bad |= detail::nonfinite_bit(x);
      out[i] = x;
    }
    return bad == 0;
  } else {
    DTRAIN_ELEMENTWISE_LOOP
    for (int64_t i = 0; i < m; ++i) out[i] = finish(a[i] + b[i]);
    return true;
  }
}

// Elements [lo, hi) of the range at byte `offset` of every slot (two or more): summed across the
// slots in slot order (averaged: divided by their number, integers truncating) into slot `mine`,
// checked for NaN/Inf. Returns whether every result is finite. One pass over each element: the
// last addition, the average and the check happen as the result is stored, and the partial sums
// of more than two slots stay in a chunk in L1. (A pass for each of these through such a chunk
// took 85 us a step where this takes 30, for the default MLP's 1 MiB on 2 ranks.)
template <typename T>
bool reduce_slots(const std::vector<char*>& slots, size_t mine, size_t offset, int64_t lo,
                  int64_t hi, bool average) {
  constexpr int64_t kChunk = 2048;
  alignas(64) T acc[kChunk];
  const size_t n = slots.size();
  auto at = [&](size_t k, int64_t i) { return reinterpret_cast<T*>(slots[k] + offset) + i; };
  const auto same = [](T x) { return x; };
  const auto reduce = [&](auto finish) {
    bool finite = true;
    for (int64_t c = lo; c < hi; c += kChunk) {
      const int64_t m = std::min(kChunk, hi - c);
      const T* partial = at(0, c);
      if (n > 2) {
        add_finish(partial, at(1, c), acc, m, same);
        for (size_t k = 2; k + 1 < n; ++k) add_finish(acc, at(k, c), acc, m, same);
        partial = acc;
      }
      finite = add_finish(partial, at(n - 1, c), at(mine, c), m, finish) && finite;
    }
    return finite;
  };
  if (!average) return reduce(same);
  return detail::with_division_by<T>(static_cast<int64_t>(n), reduce);
}

// A window of `bytes` (rounded up to whole pages) per rank of `comm`, every rank's slot mapped
// here, locked for the window's lifetime (MPI_Win_lock_all). Throws CommError if the ranks asked
// for different sizes.
MPI_Win allocate_shared(MPI_Comm comm, size_t bytes, std::vector<char*>& slots) {
  const size_t padded = (bytes + 4095) / 4096 * 4096;  // own pages: no false sharing
  MPI_Info info;
  MPI_CHECK(MPI_Info_create(&info));
  MPI_CHECK(MPI_Info_set(info, "alloc_shared_noncontig", "true"));
  char* mine = nullptr;
  MPI_Win win = MPI_WIN_NULL;
  const int rc = MPI_Win_allocate_shared(static_cast<MPI_Aint>(padded), 1, info, comm, &mine, &win);
  MPI_Info_free(&info);
  MPI_CHECK(rc);
  int size = 0, rank = 0;
  MPI_CHECK(MPI_Comm_size(comm, &size));
  MPI_CHECK(MPI_Comm_rank(comm, &rank));
  std::string mismatch;
  slots.clear();
  for (int k = 0; k < size; ++k) {
    MPI_Aint got = 0;
    int disp = 0;
    void* base = nullptr;
    MPI_CHECK(MPI_Win_shared_query(win, k, &got, &disp, &base));
    if (static_cast<size_t>(got) != padded && mismatch.empty()) {
      mismatch = "shared-memory buffer: rank " + std::to_string(k) + " asked for " +
                 std::to_string(got) + " bytes where rank " + std::to_string(rank) + " asked for " +
                 std::to_string(padded) + " (every rank must ask the same)";
    }
    slots.push_back(static_cast<char*>(base));
  }
  if (!mismatch.empty()) {
    MPI_Win_free(&win);
    throw CommError(mismatch);
  }
  MPI_CHECK(MPI_Win_lock_all(MPI_MODE_NOCHECK, win));
  std::memset(mine, 0, padded);
  return win;
}

// Where Open MPI's shared windows live (a tmpfs).
std::string shared_memory_directory() {
  const char* dir = std::getenv("OMPI_MCA_osc_sm_backing_directory");
  return dir != nullptr && *dir != '\0' ? dir : "/dev/shm";
}

double free_bytes_in(const std::string& dir) {
  struct statvfs fs {};
  if (::statvfs(dir.c_str(), &fs) != 0) return 0;
  return static_cast<double>(fs.f_bavail) * static_cast<double>(fs.f_frsize);
}

// True on every rank of `comm` if `mine` is true on all (so they all decide alike).
bool all_true(bool mine, MPI_Comm comm) {
  int all = mine ? 1 : 0;
  MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &all, 1, MPI_INT, MPI_MIN, comm));
  return all != 0;
}

void free_shared(MPI_Win& win) {
  MPI_Win_unlock_all(win);
  MPI_Win_free(&win);
}

bool shareable_type(torch::ScalarType type) {
  return type == torch::kFloat || type == torch::kDouble || type == torch::kInt ||
         type == torch::kLong;
}

std::string rank_list(const std::vector<int>& ranks) {
  return fmt::format("{}", fmt::join(ranks, ", "));
}

std::string ranks_text(const std::vector<int>& ranks) {
  if (ranks.empty() || ranks.front() < 0) return "the other ranks";
  return "rank(s) " + rank_list(ranks);
}

// Calls `progress` (which tests requests without blocking and returns true once everything is
// done) until it returns true. Warns every warning_seconds naming `missing()`, the peers not
// heard from, and throws CommError after abort_seconds (plus `grace`: how much later than the
// coordinator a waiting rank gives up; the message quotes the configured limit). No MPI wait in
// a collective blocks without this bound.
void poll_with_stall_check(const std::function<bool()>& progress,
                           const std::function<std::vector<int>()>& missing,
                           const StallOptions& stall, const std::string& what, int my_rank,
                           double grace = 0) {
  const double abort_after = stall.abort_seconds + grace;
  const auto start = Clock::now();
  auto next_warning = start + std::chrono::duration<double>(stall.warning_seconds);
  while (!progress()) {
    const auto now = Clock::now();
    if (now >= next_warning) {
      const double waited = std::chrono::duration<double>(now - start).count();
      if (waited >= abort_after) {
        throw CommError(what + ": stalled for " + std::to_string(static_cast<int>(waited)) +
                        " s on rank " + std::to_string(my_rank) + " waiting for " +
                        ranks_text(missing()) + " (--stall-abort-seconds " +
                        std::to_string(static_cast<int>(stall.abort_seconds)) +
                        "); aborting the job");
      }
      spdlog::warn("{}: stalled for {:.0f} s on rank {}: waiting for {} (abort after {:.0f} s)",
                   what, waited, my_rank, ranks_text(missing()), abort_after);
      next_warning = std::min(now + std::chrono::duration<double>(stall.warning_seconds),
                              start + std::chrono::duration<double>(abort_after));
    }
    // Busy-poll like a blocking MPI call for the first 100 ms (peers usually arrive within a
    // step's compute time; sleeping here cost ~3 ms a step in sleep/wake latency), then back off.
    if (now - start > std::chrono::milliseconds(100)) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }
}

// Waits for all of `reqs`; `rank_of(i)` names the peer of request i (-1: not known).
void wait_with_stall_check(std::vector<MPI_Request>& reqs,
                           const std::function<int(size_t)>& rank_of, const StallOptions& stall,
                           const std::string& what, int my_rank, double grace = 0) {
  std::vector<bool> done(reqs.size(), false);
  std::vector<int> indices(reqs.size());
  size_t remaining = reqs.size();
  poll_with_stall_check(
      [&] {
        if (remaining == 0) return true;
        int outcount = 0;
        MPI_CHECK(MPI_Testsome(static_cast<int>(reqs.size()), reqs.data(), &outcount,
                               indices.data(), MPI_STATUSES_IGNORE));
        if (outcount != MPI_UNDEFINED) {
          for (int k = 0; k < outcount; ++k) done[static_cast<size_t>(indices[k])] = true;
          remaining -= static_cast<size_t>(outcount);
        }
        return remaining == 0;
      },
      [&] {
        std::vector<int> missing;
        for (size_t i = 0; i < done.size(); ++i)
          if (!done[i]) missing.push_back(rank_of(i));
        return missing;
      },
      stall, what, my_rank, grace);
}

}  // namespace

bool launched_by_mpi() {
  for (const char* var : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "PMI_RANK",
                          "MPI_LOCALNRANKS", "SLURM_PROCID"}) {
    if (std::getenv(var) != nullptr) return true;
  }
  return false;
}

void ensure_mpi_initialized() {
  int init = 0;
  MPI_CHECK(MPI_Initialized(&init));
  if (init) return;
  int provided = 0;
  MPI_CHECK(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided));
  runtime().initialized_here = true;
  // Errors come back as return codes (checked by MPI_CHECK), not as MPI's default abort.
  MPI_CHECK(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
}

void finalize_mpi() { runtime().finalize(); }

void abort_mpi_job(int exit_code) {
  int init = 0, fin = 0, size = 1;
  MPI_Initialized(&init);
  MPI_Finalized(&fin);
  if (!init || fin) return;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  if (size <= 1) return;
  // MPI_Abort may never return when the ranks it must reach are cut off: end this side anyway.
  std::thread([exit_code] {
    std::this_thread::sleep_for(std::chrono::seconds(5));
    std::fprintf(stderr, "dtrain: MPI_Abort did not end the job in 5 s; exiting\n");
    std::_Exit(exit_code);
  }).detach();
  MPI_Abort(MPI_COMM_WORLD, exit_code);
}

MpiCommunicator::MpiCommunicator(AllreduceAlgorithm algorithm, StallOptions stall)
    : algorithm_(algorithm), stall_(stall) {
  ensure_mpi_initialized();
  MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &rank_));
  MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &size_));
  MPI_CHECK(MPI_Comm_dup(MPI_COMM_WORLD, &ring_comm_));
  MPI_CHECK(MPI_Comm_dup(MPI_COMM_WORLD, &coord_comm_));
  MPI_CHECK(MPI_Comm_set_errhandler(ring_comm_, MPI_ERRORS_RETURN));
  MPI_CHECK(MPI_Comm_set_errhandler(coord_comm_, MPI_ERRORS_RETURN));
  MPI_Comm local;
  MPI_CHECK(
      MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &local));
  MPI_CHECK(MPI_Comm_rank(local, &local_rank_));
  MPI_CHECK(MPI_Comm_size(local, &local_size_));
  if (local_size_ == size_ && size_ > 1) {
    // Every rank on this host: negotiation and reduce buffers go through shared memory.
    window_comm_ = local;
    MPI_CHECK(MPI_Comm_set_errhandler(window_comm_, MPI_ERRORS_RETURN));
    // A page each; without the room (checked, as a full tmpfs answers with SIGBUS), negotiation
    // goes through messages.
    if (all_true(free_bytes_in(shared_memory_directory()) >= 4096.0 * size_ + (1 << 20),
                 window_comm_)) {
      std::vector<char*> pages;
      control_win_ = allocate_shared(window_comm_, sizeof(RankControl), pages);
      for (char* page : pages) control_.push_back(reinterpret_cast<RankControl*>(page));
      MPI_CHECK(MPI_Barrier(window_comm_));  // every page is zeroed before anyone reads one
    }
  } else {
    MPI_CHECK(MPI_Comm_free(&local));
  }
}

MpiCommunicator::~MpiCommunicator() {
  int fin = 0;
  MPI_Finalized(&fin);
  if (fin) return;
  // Freeing a window is collective: during unwinding (this rank failed alone) it could wait for
  // ranks that never come, so the windows are left to the job's end (the caller aborts the job).
  if (std::uncaught_exceptions() == 0) {
    for (auto& w : windows_) free_shared(w.win);
    if (control_win_ != MPI_WIN_NULL) free_shared(control_win_);
    if (window_comm_ != MPI_COMM_NULL) MPI_Comm_free(&window_comm_);
  }
  if (ring_comm_ != MPI_COMM_NULL) MPI_Comm_free(&ring_comm_);
  if (coord_comm_ != MPI_COMM_NULL) MPI_Comm_free(&coord_comm_);
}

void MpiCommunicator::allreduce(torch::Tensor& tensor, ReduceOp op) {
  check_tensor(tensor, "allreduce");
  if (const SharedWindow* window = window_of(tensor)) {
    shared_allreduce(*window, tensor, op);  // averages too
    return;
  }
  if (size_ > 1 && tensor.numel() > 0) {
    if (algorithm_ == AllreduceAlgorithm::kRing) {
      // Below 512 KiB, 2 log2 p steps beat the ring's 2 (p - 1) (4 ranks here: 72 against 90 us
      // at 64 KiB); from 1 MiB the ring was faster (434 against 453 us). Two ranks: the same.
      const bool power_of_two = (size_ & (size_ - 1)) == 0;
      if (power_of_two && size_ >= 4 && tensor.numel() * tensor.element_size() < (512 << 10)) {
        halving_doubling_allreduce(tensor);
      } else {
        ring_allreduce(tensor);
      }
    } else {
      mpi_allreduce(tensor);
    }
  }
  if (op == ReduceOp::kAverage && size_ > 1) {
    if (tensor.is_floating_point()) {
      tensor.div_(size_);
    } else {
      tensor.div_(size_, "trunc");
    }
  }
}

void MpiCommunicator::mpi_allreduce(torch::Tensor& tensor) {
  const MPI_Datatype type = mpi_type(tensor.scalar_type());
  const MPI_Op op = tensor.scalar_type() == torch::kHalf ? half_sum_op() : MPI_SUM;
  char* data = static_cast<char*>(tensor.data_ptr());
  const size_t elem = tensor.element_size();
  for (int64_t done = 0; done < tensor.numel();) {
    const int n = static_cast<int>(std::min<int64_t>(tensor.numel() - done, INT_MAX / 8));
    MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, data + done * elem, n, type, op, MPI_COMM_WORLD));
    done += n;
  }
}

std::vector<MpiCommunicator::Span> MpiCommunicator::chunks(int64_t count, int n) {
  std::vector<Span> out(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) {
    out[static_cast<size_t>(i)].count = count / n + (i < count % n ? 1 : 0);
    out[static_cast<size_t>(i)].start =
        i == 0 ? 0 : out[static_cast<size_t>(i - 1)].start + out[static_cast<size_t>(i - 1)].count;
  }
  return out;
}

void MpiCommunicator::exchange(char* data, const Span& out, int to, const Span& in, int from,
                               bool reduce, torch::ScalarType dtype, int tag, const char* what) {
  const size_t elem = c10::elementSize(dtype);
  const int64_t seg = std::max<int64_t>(1, static_cast<int64_t>(segment_bytes_ / elem));
  if (reduce && scratch_.size() < static_cast<size_t>(in.count) * elem) {
    scratch_.resize(static_cast<size_t>(in.count) * elem);
  }
  char* const recv_base = reduce ? scratch_.data() : data + in.start * elem;
  std::vector<MPI_Request> sends, recvs;
  for (int64_t o = 0; o < in.count; o += seg) {
    const int c = static_cast<int>(std::min(seg, in.count - o) * static_cast<int64_t>(elem));
    recvs.emplace_back();
    MPI_CHECK(MPI_Irecv(recv_base + o * elem, c, MPI_BYTE, from, tag, ring_comm_, &recvs.back()));
  }
  for (int64_t o = 0; o < out.count; o += seg) {
    const int c = static_cast<int>(std::min(seg, out.count - o) * static_cast<int64_t>(elem));
    sends.emplace_back();
    MPI_CHECK(
        MPI_Isend(data + (out.start + o) * elem, c, MPI_BYTE, to, tag, ring_comm_, &sends.back()));
  }
  if (reduce) {  // each segment is added as it arrives, while the next are still in flight
    size_t received = 0;
    poll_with_stall_check(
        [&] {
          while (received < recvs.size()) {
            int idx = MPI_UNDEFINED, flag = 0;
            MPI_CHECK(MPI_Testany(static_cast<int>(recvs.size()), recvs.data(), &idx, &flag,
                                  MPI_STATUS_IGNORE));
            if (!flag || idx == MPI_UNDEFINED) return false;
            const int64_t o = static_cast<int64_t>(idx) * seg;
            add_into(data + (in.start + o) * elem, scratch_.data() + o * elem,
                     std::min(seg, in.count - o), dtype);
            ++received;
          }
          return true;
        },
        [&] { return std::vector<int>{from}; }, stall_, what, rank_);
  } else {
    wait_with_stall_check(
        recvs, [&](size_t) { return from; }, stall_, what, rank_);
  }
  wait_with_stall_check(
      sends, [&](size_t) { return to; }, stall_, what, rank_);
}

// Ring allreduce: reduce-scatter then allgather over size() chunks (chunk i: elements
// [start_i, start_i + len_i), the first count % size chunks one longer), 2 (size - 1) steps,
// each moving one chunk to the right-hand neighbour. After the reduce-scatter rank r holds the
// total of chunk (r + 1) % size, summed by it alone, so every rank ends with bitwise identical
// results.
void MpiCommunicator::ring_allreduce(torch::Tensor& tensor) {
  const int n = size_;
  const std::vector<Span> chunk = chunks(tensor.numel(), n);
  char* data = static_cast<char*>(tensor.data_ptr());
  const int right = (rank_ + 1) % n, left = (rank_ - 1 + n) % n;
  for (int s = 0; s < n - 1; ++s) {
    exchange(data, chunk[static_cast<size_t>(((rank_ - s) % n + n) % n)], right,
             chunk[static_cast<size_t>(((rank_ - s - 1) % n + n) % n)], left, /*reduce=*/true,
             tensor.scalar_type(), kTagReduceScatter, "ring allreduce (reduce-scatter)");
  }
  for (int s = 0; s < n - 1; ++s) {
    exchange(data, chunk[static_cast<size_t>(((rank_ + 1 - s) % n + n) % n)], right,
             chunk[static_cast<size_t>(((rank_ - s) % n + n) % n)], left, /*reduce=*/false,
             tensor.scalar_type(), kTagAllgather, "ring allreduce (allgather)");
  }
}

// Rabenseifner's allreduce for a power-of-two size p: a reduce-scatter by recursive halving
// (log2 p steps; at step `mask` = p/2, p/4, ..., 1 each rank keeps the half of its current chunk
// range on its side of bit `mask` and swaps the other half with rank ^ mask, adding what it gets)
// then an allgather by recursive doubling (the same partners in reverse, each sending its whole
// range). The same bytes as the ring (2 (p-1)/p of the buffer each way) in 2 log2 p steps instead
// of 2 (p-1): fewer latencies, which is what medium messages pay for. Rank r ends the
// reduce-scatter owning chunk r, summed by it alone, so every rank ends with bitwise identical
// results.
void MpiCommunicator::halving_doubling_allreduce(torch::Tensor& tensor) {
  const int p = size_;
  const std::vector<Span> chunk = chunks(tensor.numel(), p);
  auto range = [&](int lo, int hi) {  // chunks [lo, hi) as one span (they are contiguous)
    return Span{chunk[static_cast<size_t>(lo)].start, chunk[static_cast<size_t>(hi - 1)].start +
                                                          chunk[static_cast<size_t>(hi - 1)].count -
                                                          chunk[static_cast<size_t>(lo)].start};
  };
  char* data = static_cast<char*>(tensor.data_ptr());
  int lo = 0, hi = p;
  for (int mask = p / 2; mask >= 1; mask /= 2) {
    const int mid = lo + (hi - lo) / 2;
    const bool upper = (rank_ & mask) != 0;
    const Span keep = upper ? range(mid, hi) : range(lo, mid);
    const Span give = upper ? range(lo, mid) : range(mid, hi);
    exchange(data, give, rank_ ^ mask, keep, rank_ ^ mask, /*reduce=*/true, tensor.scalar_type(),
             kTagReduceScatter, "allreduce (reduce-scatter by recursive halving)");
    (upper ? lo : hi) = mid;
  }
  for (int mask = 1; mask < p; mask *= 2) {
    const int width = hi - lo;
    const bool upper = (rank_ & mask) != 0;
    const int other_lo = upper ? lo - width : hi;
    exchange(data, range(lo, hi), rank_ ^ mask, range(other_lo, other_lo + width), rank_ ^ mask,
             /*reduce=*/false, tensor.scalar_type(), kTagAllgather,
             "allreduce (allgather by recursive doubling)");
    lo = std::min(lo, other_lo);
    hi = lo + 2 * width;
  }
}

bool MpiCommunicator::allreduce_all_finite(torch::Tensor& tensor, ReduceOp op) {
  check_tensor(tensor, "allreduce");
  if (const SharedWindow* window = window_of(tensor)) return shared_allreduce(*window, tensor, op);
  allreduce(tensor, op);
  return detail::all_finite(tensor);
}

torch::Tensor MpiCommunicator::reduce_buffer(int64_t numel, torch::ScalarType type) {
  // The same decision on every rank: the host layout and algorithm are the job's, the arguments
  // the same by contract.
  if (window_comm_ == MPI_COMM_NULL || algorithm_ != AllreduceAlgorithm::kRing || numel <= 0 ||
      !shareable_type(type)) {
    return Communicator::reduce_buffer(numel, type);
  }
  SharedWindow w;
  w.type = type;
  w.bytes = static_cast<size_t>(numel) * c10::elementSize(type);
  // The window is a file in Open MPI's backing directory (tmpfs); touching a page past its free
  // space is SIGBUS, not an error code (Docker gives /dev/shm 64 MiB by default). So check first,
  // and decide together.
  const std::string backing = shared_memory_directory();
  const double need = static_cast<double>(w.bytes + 4096) * size_ + (16 << 20);
  const double free_bytes = free_bytes_in(backing);
  // (Without the control pages, which were decided together, there is no shared allreduce.)
  if (control_.empty() || !all_true(free_bytes >= need, window_comm_)) {
    if (rank_ == 0) {
      spdlog::warn(
          "shared memory: {} has {:.0f} MiB free where {} ranks' reduce buffers need {:.0f} MiB; "
          "reducing through messages instead (slower; give the host or container more shared "
          "memory, e.g. docker run --shm-size)",
          backing, free_bytes / (1 << 20), size_, need / (1 << 20));
    }
    return Communicator::reduce_buffer(numel, type);
  }
  w.win = allocate_shared(window_comm_, w.bytes, w.slots);
  windows_.push_back(w);
  return torch::from_blob(w.slots[static_cast<size_t>(local_rank_)], {numel},
                          torch::TensorOptions().dtype(type));
}

const MpiCommunicator::SharedWindow* MpiCommunicator::window_of(const torch::Tensor& tensor) const {
  if (size_ == 1 || tensor.numel() == 0 || algorithm_ != AllreduceAlgorithm::kRing) return nullptr;
  const char* begin = static_cast<const char*>(tensor.data_ptr());
  const size_t bytes = static_cast<size_t>(tensor.numel()) * tensor.element_size();
  for (const auto& w : windows_) {
    const char* slot = w.slots[static_cast<size_t>(local_rank_)];
    if (tensor.scalar_type() == w.type && begin >= slot && begin + bytes <= slot + w.bytes) {
      return &w;
    }
  }
  return nullptr;
}

void MpiCommunicator::shared_barrier(const std::string& what) {
  const double grace = rank_ == 0 ? 0.0 : 1.0;
  const uint64_t target = ++barriers_;
  __atomic_store_n(&control_[static_cast<size_t>(local_rank_)]->barriers, target, __ATOMIC_RELEASE);
  auto arrived = [&](const RankControl* c) {
    return __atomic_load_n(&c->barriers, __ATOMIC_ACQUIRE) >= target;
  };
  poll_with_stall_check(
      [&] {
        for (const RankControl* c : control_) {
          if (!arrived(c)) {
            std::this_thread::yield();  // more ranks than cores: let the others run
            return false;
          }
        }
        return true;
      },
      [&] {
        std::vector<int> missing;
        for (size_t k = 0; k < control_.size(); ++k)
          if (!arrived(control_[k])) missing.push_back(static_cast<int>(k));
        return missing;
      },
      stall_, what, rank_, grace);
}

// Block k of the range belongs to rank k: it sums the block into its own slot; after a barrier
// every rank copies the other blocks from their owners' slots. Each rank reads every other slot's
// data once and writes only its own slot (writing the sums into the others' slots too cost a
// third more cross-core cache traffic, measured: 150 vs 120 us a step for 1 MiB on 2 ranks).
bool MpiCommunicator::shared_allreduce(const SharedWindow& window, torch::Tensor& tensor,
                                       ReduceOp op) {
  const auto me = static_cast<size_t>(local_rank_);
  const auto offset =
      static_cast<size_t>(static_cast<const char*>(tensor.data_ptr()) - window.slots[me]);
  const size_t elem = tensor.element_size();
  const bool average = op == ReduceOp::kAverage;
  shared_barrier("shared-memory allreduce (waiting for every rank's values)");
  const auto [lo, hi] = block_of(tensor.numel(), local_rank_, size_);
  bool finite = true;
  switch (window.type) {
    case torch::kFloat:
      finite = reduce_slots<float>(window.slots, me, offset, lo, hi, average);
      break;
    case torch::kDouble:
      finite = reduce_slots<double>(window.slots, me, offset, lo, hi, average);
      break;
    case torch::kInt:
      reduce_slots<int32_t>(window.slots, me, offset, lo, hi, average);
      break;
    default:
      reduce_slots<int64_t>(window.slots, me, offset, lo, hi, average);
      break;
  }
  control_[me]->nonfinite = finite ? 0 : 1;
  shared_barrier("shared-memory allreduce (waiting for every rank's sums)");
  for (int k = 0; k < size_; ++k) {
    const RankControl* c = control_[static_cast<size_t>(k)];
    finite = finite && c->nonfinite == 0;
    if (k == local_rank_) continue;
    const auto [klo, khi] = block_of(tensor.numel(), k, size_);
    const size_t at = offset + static_cast<size_t>(klo) * elem;
    std::memcpy(window.slots[me] + at, window.slots[static_cast<size_t>(k)] + at,
                static_cast<size_t>(khi - klo) * elem);
  }
  // A third barrier: no rank may change its slot (the next step's gradients) before the others
  // have copied their blocks out of it.
  shared_barrier("shared-memory allreduce (waiting for every rank's copies)");
  return finite;
}

void MpiCommunicator::broadcast(torch::Tensor& tensor, int root) {
  check_tensor(tensor, "broadcast", true);
  if (root < 0 || root >= size_)
    throw CommError("broadcast: root " + std::to_string(root) + " out of range");
  char* data = static_cast<char*>(tensor.data_ptr());
  const int64_t bytes = tensor.numel() * static_cast<int64_t>(tensor.element_size());
  for (int64_t done = 0; done < bytes;) {
    const int n = static_cast<int>(std::min<int64_t>(bytes - done, INT_MAX));
    std::vector<MPI_Request> req(1);
    MPI_CHECK(MPI_Ibcast(data + done, n, MPI_BYTE, root, ring_comm_, req.data()));
    wait_with_stall_check(
        req, [&](size_t) { return rank_ == root ? -1 : root; }, stall_, "broadcast", rank_);
    done += n;
  }
}

torch::Tensor MpiCommunicator::allgather(const torch::Tensor& tensor) {
  check_tensor(tensor, "allgather", true);
  std::vector<int64_t> shape = {size_};
  for (int64_t d : tensor.sizes()) shape.push_back(d);
  torch::Tensor out = torch::empty(shape, tensor.options());
  const int64_t bytes = tensor.numel() * static_cast<int64_t>(tensor.element_size());
  if (bytes > INT_MAX) throw CommError("allgather: tensors over 2 GiB are not supported");
  if (bytes > 0) {
    std::vector<MPI_Request> req(1);
    MPI_CHECK(MPI_Iallgather(tensor.data_ptr(), static_cast<int>(bytes), MPI_BYTE, out.data_ptr(),
                             static_cast<int>(bytes), MPI_BYTE, ring_comm_, req.data()));
    wait_with_stall_check(
        req, [](size_t) { return -1; }, stall_, "allgather", rank_);
  }
  return out;
}

void MpiCommunicator::barrier() {
  // A barrier is an agreement on nothing: it gets the same stall reporting.
  agree(
      0, [] { return std::string("{}"); }, "barrier");
}

std::string MpiCommunicator::agree(uint64_t signature, const std::function<std::string()>& describe,
                                   const std::string& what) {
  if (size_ == 1) return "";
  if (!control_.empty()) {
    // Each rank's signature in its own page, then a shared barrier: every rank sees every
    // signature and reaches the same verdict. By the barrier's parity, so a rank already in the
    // next agree() does not overwrite what a slower one is still reading.
    const size_t parity = (barriers_ + 1) % 2;
    control_[static_cast<size_t>(local_rank_)]->signature[parity] = signature;
    shared_barrier(what);
    bool differ = false;
    for (const RankControl* c : control_) differ = differ || c->signature[parity] != signature;
    return differ ? gather_mismatch(describe(), what) : "";
  }
  uint64_t verdict = 0;
  if (rank_ == 0) {
    std::vector<uint64_t> sigs(static_cast<size_t>(size_), 0);
    std::vector<MPI_Request> reqs(static_cast<size_t>(size_ - 1));
    for (int r = 1; r < size_; ++r) {
      MPI_CHECK(MPI_Irecv(&sigs[static_cast<size_t>(r)], 1, MPI_UINT64_T, r, kTagSignature,
                          coord_comm_, &reqs[static_cast<size_t>(r - 1)]));
    }
    wait_with_stall_check(
        reqs, [](size_t i) { return static_cast<int>(i) + 1; }, stall_, what, rank_);
    for (int r = 1; r < size_; ++r) verdict |= sigs[static_cast<size_t>(r)] != signature;
    std::vector<MPI_Request> sends(static_cast<size_t>(size_ - 1));
    for (int r = 1; r < size_; ++r) {
      MPI_CHECK(MPI_Isend(&verdict, 1, MPI_UINT64_T, r, kTagVerdict, coord_comm_,
                          &sends[static_cast<size_t>(r - 1)]));
    }
    wait_with_stall_check(
        sends, [](size_t i) { return static_cast<int>(i) + 1; }, stall_, what, rank_);
  } else {
    MPI_Request reqs[2];
    MPI_CHECK(MPI_Isend(&signature, 1, MPI_UINT64_T, 0, kTagSignature, coord_comm_, &reqs[0]));
    MPI_CHECK(MPI_Irecv(&verdict, 1, MPI_UINT64_T, 0, kTagVerdict, coord_comm_, &reqs[1]));
    std::vector<MPI_Request> v(reqs, reqs + 2);
    // Rank 0 names the missing ranks and aborts the job at the limit; the others give it one
    // second more, so that a stalled rank 0 is still reported within a second of the limit.
    wait_with_stall_check(
        v, [](size_t) { return 0; }, stall_, what + " (rank 0 coordinates)", rank_,
        /*grace=*/1.0);
  }
  return verdict ? gather_mismatch(describe(), what) : "";
}

std::string MpiCommunicator::gather_mismatch(const std::string& mine, const std::string& what) {
  int len = static_cast<int>(mine.size());
  std::vector<int> lens(static_cast<size_t>(size_)), displs(static_cast<size_t>(size_));
  MPI_CHECK(MPI_Gather(&len, 1, MPI_INT, lens.data(), 1, MPI_INT, 0, coord_comm_));
  std::string all;
  if (rank_ == 0) {
    int total = 0;
    for (int r = 0; r < size_; ++r)
      displs[static_cast<size_t>(r)] = total, total += lens[static_cast<size_t>(r)];
    all.resize(static_cast<size_t>(total));
  }
  MPI_CHECK(MPI_Gatherv(mine.data(), len, MPI_CHAR, all.data(), lens.data(), displs.data(),
                        MPI_CHAR, 0, coord_comm_));
  std::string message;
  if (rank_ == 0) {
    auto parse = [](const std::string& text) {
      auto j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
      return j.is_discarded() ? nlohmann::json(text) : j;
    };
    const nlohmann::json ref = parse(all.substr(0, static_cast<size_t>(lens[0])));
    for (int r = 1; r < size_; ++r) {
      const auto j = parse(all.substr(static_cast<size_t>(displs[static_cast<size_t>(r)]),
                                      static_cast<size_t>(lens[static_cast<size_t>(r)])));
      const std::string d = detail::diff_json(j, ref, "");
      if (!d.empty()) message += "\n  rank " + std::to_string(r) + " vs rank 0: " + d;
    }
    if (message.empty()) message = "\n  (signatures differ but descriptions match)";
    message = what + ": ranks disagree (rank N's value vs rank 0's):" + message.substr(0, 4000);
  }
  int mlen = static_cast<int>(message.size());
  MPI_CHECK(MPI_Bcast(&mlen, 1, MPI_INT, 0, coord_comm_));
  message.resize(static_cast<size_t>(mlen));
  MPI_CHECK(MPI_Bcast(message.data(), mlen, MPI_CHAR, 0, coord_comm_));
  return message;
}

}  // namespace dtrain::distributed
