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
  double sync_seconds = 0;  ///< time this process spent in gradient synchronisation

  nlohmann::json to_json() const;
  static EpochMetrics from_json(const nlohmann::json& j);
};

/// Receives every epoch's metrics with the full history so far (the history survives resume).
class MetricsSink {
 public:
  virtual ~MetricsSink() = default;
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
