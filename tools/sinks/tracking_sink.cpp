#include "tools/sinks/tracking_sink.h"

namespace dtrain::sinks {

bool TrackingSink::wants_step(int64_t global_step) {
  return log_every_steps_ > 0 && global_step % log_every_steps_ == 0;
}

void TrackingSink::on_step(const StepProgress& p) {
  if (!wants_step(p.global_step)) return;
  // Buffered and written with the epoch's metrics: one transaction per epoch keeps the training
  // loop off the database (a busy workspace cannot slow the steps down).
  pending_.push_back({"step_loss", p.global_step, p.epoch, p.batch_loss, tracking::now_seconds()});
}

std::vector<tracking::MetricPoint> TrackingSink::epoch_points(const EpochMetrics& m, double time) {
  std::vector<tracking::MetricPoint> points;
  const nlohmann::json j = m.to_json();
  for (const auto& [key, value] : j.items()) {
    if (key == "epoch" || key == "global_step" || !value.is_number()) continue;
    points.push_back({key, m.global_step, m.epoch, value.get<double>(), time});
  }
  return points;
}

void TrackingSink::on_epoch(const EpochMetrics& m, const std::vector<EpochMetrics>&) {
  auto points = epoch_points(m, tracking::now_seconds());
  points.insert(points.begin(), pending_.begin(), pending_.end());
  tracker_.log_metrics(points);
  pending_.clear();
}

}  // namespace dtrain::sinks
