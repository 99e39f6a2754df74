// A live progress line on a terminal: step / steps, samples/s, running loss, elapsed and ETA,
// redrawn at most 10 times a second and cleared when the epoch ends (the console sink then
// prints the epoch line).
#pragma once

#include <chrono>
#include <cstdio>
#include <string>

#include "core/metrics.h"

namespace dtrain::sinks {

/// Whether `--progress MODE` (auto, always, never) draws on stderr: auto means stderr is a
/// terminal.
bool progress_wanted(const std::string& mode);

/// "1:05" or "1:02:03".
std::string format_duration(double seconds);

class ProgressSink : public MetricsSink {
 public:
  explicit ProgressSink(int64_t total_epochs, std::FILE* out = stderr,
                        double min_interval_seconds = 0.1);
  void on_epoch_begin(int64_t epoch, int64_t steps_in_epoch) override;
  bool wants_step(int64_t global_step) override;
  void on_step(const StepProgress& p) override;
  void on_epoch(const EpochMetrics& m, const std::vector<EpochMetrics>& history) override;

  /// The line for `p` (without the carriage return and clear-line codes).
  std::string line(const StepProgress& p) const;

 private:
  using Clock = std::chrono::steady_clock;
  int64_t total_epochs_;
  std::FILE* out_;
  double min_interval_;
  Clock::time_point last_draw_{};
  bool drawn_ = false;
};

}  // namespace dtrain::sinks
