// Sends a run's metrics to its record in the workspace: every epoch's metrics (at the epoch's
// last global step) and the training loss every `log_every_steps` steps (key step_loss).
#pragma once

#include "core/metrics.h"
#include "tools/tracking/run_tracker.h"

namespace dtrain::sinks {

class TrackingSink : public MetricsSink {
 public:
  TrackingSink(tracking::RunTracker& tracker, int64_t log_every_steps)
      : tracker_(tracker), log_every_steps_(log_every_steps) {}
  bool wants_step(int64_t global_step) override;
  void on_step(const StepProgress& p) override;
  void on_epoch(const EpochMetrics& m, const std::vector<EpochMetrics>& history) override;

  /// The metric points one epoch records (keys as in metrics.jsonl).
  static std::vector<tracking::MetricPoint> epoch_points(const EpochMetrics& m, double time);

 private:
  tracking::RunTracker& tracker_;
  int64_t log_every_steps_;
  std::vector<tracking::MetricPoint> pending_;
};

}  // namespace dtrain::sinks
