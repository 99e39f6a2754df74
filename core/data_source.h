// What the Trainer needs from a data set and a sampler; data/ implements both.
#pragma once

#include <cstdint>
#include <vector>

#include <torch/types.h>

namespace dtrain {

/// One mini-batch: float inputs [B, features] and int64 class targets [B].
struct Batch {
  torch::Tensor inputs;
  torch::Tensor targets;
};

/// A data set the Trainer draws batches from by index.
class BatchSource {
 public:
  virtual ~BatchSource() = default;
  virtual int64_t size() const = 0;
  /// `indices`: 1-D int64 tensor of sample indices in [0, size()).
  virtual Batch get(const torch::Tensor& indices, const torch::Device& device) const = 0;
};

/// Decides which samples this process sees, batch by batch, in one epoch.
class Sampler {
 public:
  virtual ~Sampler() = default;
  /// The batches of `epoch` for this process, each a 1-D int64 tensor of indices.
  /// Must be a pure function of the epoch (and construction arguments) so that a resumed run
  /// sees exactly the batches an uninterrupted one would.
  virtual std::vector<torch::Tensor> batches(int64_t epoch) const = 0;
};

}  // namespace dtrain
