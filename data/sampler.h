// Samplers: which samples each process sees in which batch.
#pragma once

#include <cstdint>
#include <vector>

#include "core/data_source.h"

namespace dtrain::data {

/// Shuffles every epoch with a generator seeded by (seed, epoch), then deals each global batch
/// of batch_size x world_size consecutive shuffled samples out to the ranks: rank r gets the
/// r-th slice of batch_size. Every rank thus sees a disjoint shard and the union of one step's
/// batches is exactly the global batch a single process at batch_size x world_size would see.
/// With one rank the last partial batch is kept; with several it is dropped (fewer than
/// batch_size x world_size samples) so that every rank takes the same number of steps.
class ShuffleSampler : public Sampler {
 public:
  struct Options {
    int64_t num_samples = 0;
    int64_t batch_size = 1;
    uint64_t seed = 0;
    int rank = 0;
    int world_size = 1;
    bool shuffle = true;
  };
  explicit ShuffleSampler(Options options);
  std::vector<torch::Tensor> batches(int64_t epoch) const override;
  /// The full permutation of `epoch` (all ranks), for tests.
  std::vector<int64_t> permutation(int64_t epoch) const;

 private:
  Options o_;
};

/// Evaluation: rank r takes samples r, r + world, r + 2 world, ... in order, in batches. Every
/// sample is evaluated exactly once across ranks.
class ShardSampler : public Sampler {
 public:
  ShardSampler(int64_t num_samples, int64_t batch_size, int rank = 0, int world_size = 1);
  std::vector<torch::Tensor> batches(int64_t epoch) const override;

 private:
  int64_t num_samples_, batch_size_;
  int rank_, world_size_;
};

}  // namespace dtrain::data
