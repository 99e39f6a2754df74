// What the Trainer needs from a data set and a sampler; data/ implements both.
#pragma once

#include <cstdint>
#include <vector>

#include <torch/types.h>

namespace dtrain {

/// One mini-batch: inputs [B, features] and int64 class targets [B]. The model's inputs are
/// inputs * input_scale: float32 with scale 1 from get(), and from get_stored() possibly as the
/// source keeps them (uint8 pixels with 1/255), for a step that converts them where it uses them.
struct Batch {
  torch::Tensor inputs;
  torch::Tensor targets;
  double input_scale = 1.0;
  /// From get_stored() possibly: when defined (1-D int64, one per target), the batch's inputs
  /// are these rows of `inputs`, the source's whole stored tensor, left for the step to gather
  /// where it converts them (on the threads that use them rather than before the step).
  torch::Tensor rows = {};

  int64_t size() const { return targets.size(0); }
  /// The inputs as stored, [B, features]: `inputs`, or its rows `rows` gathered.
  torch::Tensor stored_inputs() const {
    return rows.defined() ? inputs.index_select(0, rows) : inputs;
  }
  /// stored_inputs() * input_scale as float32 (inputs themselves when they are that already).
  torch::Tensor float_inputs() const;
};

inline torch::Tensor Batch::float_inputs() const {
  const torch::Tensor stored = stored_inputs();
  if (stored.scalar_type() == torch::kFloat32) {
    return input_scale == 1.0 ? stored : stored.mul(input_scale);
  }
  return stored.to(torch::kFloat32).mul_(input_scale);
}

/// A data set the Trainer draws batches from by index.
class BatchSource {
 public:
  virtual ~BatchSource() = default;
  virtual int64_t size() const = 0;
  /// `indices`: 1-D int64 tensor of sample indices in [0, size()).
  virtual Batch get(const torch::Tensor& indices, const torch::Device& device) const = 0;
  /// The same batch on the CPU with its inputs as stored, if the source keeps them in another
  /// type (see Batch::input_scale), possibly not yet gathered (Batch::rows). The default is get()
  /// on the CPU.
  virtual Batch get_stored(const torch::Tensor& indices) const { return get(indices, torch::kCPU); }
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
