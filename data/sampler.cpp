#include "data/sampler.h"

#include <numeric>
#include <random>

#include "core/errors.h"

namespace dtrain::data {

ShuffleSampler::ShuffleSampler(Options options) : o_(options) {
  if (o_.batch_size <= 0) throw ConfigError("sampler: batch size must be positive");
  if (o_.world_size <= 0 || o_.rank < 0 || o_.rank >= o_.world_size)
    throw ConfigError("sampler: rank " + std::to_string(o_.rank) + " outside world size " +
                      std::to_string(o_.world_size));
}

std::vector<int64_t> ShuffleSampler::permutation(int64_t epoch) const {
  std::vector<int64_t> perm(static_cast<size_t>(o_.num_samples));
  std::iota(perm.begin(), perm.end(), int64_t{0});
  if (!o_.shuffle) return perm;
  // seed_seq over (seed, epoch) so epochs are independent streams; Fisher-Yates with our own
  // bounded draw so the order is the same with any standard library.
  std::seed_seq seq{static_cast<uint32_t>(o_.seed), static_cast<uint32_t>(o_.seed >> 32),
                    static_cast<uint32_t>(epoch), static_cast<uint32_t>(epoch >> 32)};
  std::mt19937_64 gen(seq);
  for (size_t i = perm.size(); i > 1; --i) {
    // Rejection sampling: an unbiased index in [0, i).
    const uint64_t bound = static_cast<uint64_t>(i);
    const uint64_t limit =
        std::numeric_limits<uint64_t>::max() - std::numeric_limits<uint64_t>::max() % bound;
    uint64_t r;
    do r = gen();
    while (r >= limit);
    std::swap(perm[i - 1], perm[static_cast<size_t>(r % bound)]);
  }
  return perm;
}

std::vector<torch::Tensor> ShuffleSampler::batches(int64_t epoch) const {
  const std::vector<int64_t> perm = permutation(epoch);
  const int64_t global = o_.batch_size * o_.world_size;
  const int64_t n = static_cast<int64_t>(perm.size());
  std::vector<torch::Tensor> out;
  auto all = torch::from_blob(const_cast<int64_t*>(perm.data()), {n}, torch::kLong);
  for (int64_t start = 0; start < n; start += global) {
    int64_t begin = start + o_.rank * o_.batch_size;
    int64_t end = std::min(begin + o_.batch_size, n);
    if (start + global > n && o_.world_size > 1) break;  // ranks must take equal steps
    if (begin >= end) break;
    out.push_back(all.slice(0, begin, end).clone());
  }
  return out;
}

ShardSampler::ShardSampler(int64_t num_samples, int64_t batch_size, int rank, int world_size)
    : num_samples_(num_samples), batch_size_(batch_size), rank_(rank), world_size_(world_size) {
  if (batch_size <= 0) throw ConfigError("sampler: batch size must be positive");
  if (world_size <= 0 || rank < 0 || rank >= world_size)
    throw ConfigError("sampler: rank outside world size");
}

std::vector<torch::Tensor> ShardSampler::batches(int64_t) const {
  std::vector<torch::Tensor> out;
  std::vector<int64_t> mine;
  for (int64_t i = rank_; i < num_samples_; i += world_size_) mine.push_back(i);
  for (size_t s = 0; s < mine.size(); s += static_cast<size_t>(batch_size_)) {
    const size_t e = std::min(mine.size(), s + static_cast<size_t>(batch_size_));
    out.push_back(torch::tensor(std::vector<int64_t>(mine.begin() + static_cast<long>(s),
                                                     mine.begin() + static_cast<long>(e)),
                                torch::kLong));
  }
  return out;
}

}  // namespace dtrain::data
