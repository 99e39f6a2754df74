// Per-epoch metrics and where they go.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace dtrain {

struct EpochMetrics {
  int64_t epoch = 0;  // 1-based
  double train_loss = 0;
  double train_acc = 0;
  double validation_loss = 0;
  double validation_acc = 0;
  double epoch_seconds = 0;
  double samples_per_second = 0;
  int64_t steps = 0;
  int64_t skipped_steps = 0;
  double sync_seconds = 0;   ///< time this process spent in gradient synchronisation
  double learning_rate = 0;  ///< the rate of the epoch's last step (warm-up changes it per step)
  int64_t global_step = 0;   ///< optimizer steps since the run began, at the end of this epoch
  double validation_seconds = 0;  ///< the evaluation after the epoch

  nlohmann::json to_json() const;
  static EpochMetrics from_json(const nlohmann::json& j);
};

/// How a run fared against --target-accuracy (MLPerf-style time to train).
struct TargetOutcome {
  bool reached = false;
  int64_t epochs = 0;  ///< epochs until the first one whose validation accuracy reached it
  double seconds = 0;  ///< their training plus evaluation time
};
/// The first epoch of `history` whose validation accuracy is at least `target`.
TargetOutcome target_outcome(const std::vector<EpochMetrics>& history, double target);

/// Where training is within an epoch, for progress lines and per-step metrics.
struct StepProgress {
  int64_t epoch = 0;           ///< 1-based
  int64_t step = 0;            ///< optimizer steps done in this epoch
  int64_t steps_in_epoch = 0;  ///< optimizer steps this epoch will take
  int64_t global_step = 0;     ///< optimizer steps since the run began
  int64_t samples = 0;         ///< samples this process trained on in this epoch so far
  double batch_loss = 0;       ///< this process's loss on the step's last batch
  double running_loss = 0;     ///< this process's mean loss over the epoch so far
  double elapsed_seconds = 0;  ///< since the epoch began
};

/// Receives every epoch's metrics with the full history so far (the history survives resume),
/// and, when it asks for them, per-step progress.
class MetricsSink {
 public:
  virtual ~MetricsSink() = default;
  virtual void on_epoch_begin(int64_t epoch, int64_t steps_in_epoch) {}
  /// Asked after every optimizer step; the loss is read (a device sync on GPUs) and on_step
  /// called only when some sink says yes.
  virtual bool wants_step(int64_t global_step) { return false; }
  virtual void on_step(const StepProgress& progress) {}
  virtual void on_epoch(const EpochMetrics& latest, const std::vector<EpochMetrics>& history) = 0;
};

/// One line per epoch on the log.
class ConsoleSink : public MetricsSink {
 public:
  explicit ConsoleSink(int64_t total_epochs) : total_epochs_(total_epochs) {}
  void on_epoch(const EpochMetrics& latest, const std::vector<EpochMetrics>& history) override;

 private:
  int64_t total_epochs_;
};

/// metrics.jsonl: one JSON object per epoch. Rewritten atomically from the history each epoch,
/// so a resumed run's file holds exactly the epochs of the run it continues.
class JsonlSink : public MetricsSink {
 public:
  explicit JsonlSink(std::filesystem::path path) : path_(std::move(path)) {}
  void on_epoch(const EpochMetrics& latest, const std::vector<EpochMetrics>& history) override;

 private:
  std::filesystem::path path_;
};

}  // namespace dtrain
