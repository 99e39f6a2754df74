// The training loop.
#pragma once

#include <chrono>
#include <filesystem>
#include <memory>
#include <vector>

#include "core/checkpoint.h"
#include "core/data_source.h"
#include "core/gradient_sync.h"
#include "core/metrics.h"
#include "core/model.h"
#include "core/optimizers.h"
#include "core/run_config.h"

namespace dtrain {

class ShardedStep;

struct EvalResult {
  double loss = 0;
  double accuracy = 0;
  int64_t samples = 0;
};

/// Trains a Model with mini-batch SGD/Adam and cross-entropy, synchronising gradients through a
/// GradientSync, evaluating every epoch and checkpointing into <output_dir>/checkpoints.
class Trainer {
 public:
  /// `sync` must outlive the Trainer; null means single-process.
  Trainer(RunConfig config, Model model, torch::Device device, GradientSync* sync = nullptr);
  ~Trainer();

  /// Only the writer process should add sinks.
  void add_sink(std::unique_ptr<MetricsSink> sink);

  /// Loads a checkpoint (file, or folder: newest inside) into the model and optimizer; training
  /// then continues after the checkpoint's epoch. Call before fit(). Returns what it recorded.
  CheckpointMeta resume(const std::filesystem::path& checkpoint);

  /// Saved in every checkpoint's metadata from now on (e.g. the tracked run's id).
  void set_checkpoint_extra(nlohmann::json extra) { checkpoint_extra_ = std::move(extra); }

  /// Trains from the current epoch to config.epochs. Returns the full metrics history. After a
  /// stop signal (core/stop_signal.h) throws Interrupted at the next step boundary.
  std::vector<EpochMetrics> fit(const BatchSource& train, const Sampler& train_sampler,
                                const BatchSource& validation, const Sampler& validation_sampler);

  /// Loss and accuracy over the sampler's batches, summed across processes.
  EvalResult evaluate(const BatchSource& data, const Sampler& sampler);

  /// Writes <output_dir>/checkpoints/ckpt-epoch-N.pt (call on the writer only); with
  /// `partial_epoch` (see CheckpointMeta) a mid-epoch one, ckpt-epoch-N-step-S.pt, after which
  /// only the two newest mid-epoch checkpoints newer than the last epoch checkpoint are kept.
  std::filesystem::path save_checkpoint(const nlohmann::json& partial_epoch = nullptr) const;

  int64_t epochs_done() const { return epochs_done_; }
  Model& model() { return model_; }
  Optimizer& optimizer() { return *optimizer_; }
  const std::vector<EpochMetrics>& history() const { return history_; }

 private:
  bool is_writer() const { return sync_->is_writer(); }
  /// True when a mid-epoch checkpoint is due after `global_step` (--checkpoint-every-steps,
  /// --checkpoint-every-minutes).
  bool mid_epoch_checkpoint_due(int64_t global_step) const;
  /// The learning rate of the step after `global_step` steps: --learning-rate scaled by
  /// --lr-scaling, ramped up to over --warmup-epochs. A function of the step alone, so a resumed
  /// run follows the same schedule.
  double learning_rate_at(int64_t global_step, int64_t steps_per_epoch) const;
  /// Throws CheckpointError unless `position` (a checkpoint's partial_epoch) fits this run.
  void check_position(const std::filesystem::path& path, const nlohmann::json& position) const;
  void report_step(const torch::Tensor& batch_loss, const torch::Tensor& loss_sum, int64_t samples,
                   int64_t epoch, int64_t step, int64_t steps_in_epoch, int64_t global_step,
                   double elapsed);

  RunConfig config_;
  Model model_;
  torch::Device device_;
  SingleProcessSync default_sync_;
  GradientSync* sync_;
  std::unique_ptr<Optimizer> optimizer_;
  std::unique_ptr<ShardedStep> step_;  // set when the model has a hand-written train_step
  std::vector<std::unique_ptr<MetricsSink>> sinks_;
  std::vector<EpochMetrics> history_;
  int64_t epochs_done_ = 0;
  nlohmann::json resume_position_;  // the partial_epoch of a mid-epoch checkpoint resumed from
  std::chrono::steady_clock::time_point last_checkpoint_ = std::chrono::steady_clock::now();
  nlohmann::json checkpoint_extra_ = nlohmann::json::object();
};

}  // namespace dtrain
