#include "core/metrics.h"

#include <spdlog/spdlog.h>

#include "core/file_util.h"

namespace dtrain {

nlohmann::json EpochMetrics::to_json() const {
  return {{"epoch", epoch},
          {"train_loss", train_loss},
          {"train_acc", train_acc},
          {"validation_loss", validation_loss},
          {"validation_acc", validation_acc},
          {"epoch_seconds", epoch_seconds},
          {"samples_per_second", samples_per_second},
          {"steps", steps},
          {"skipped_steps", skipped_steps},
          {"sync_seconds", sync_seconds},
          {"learning_rate", learning_rate},
          {"global_step", global_step},
          {"validation_seconds", validation_seconds}};
}

EpochMetrics EpochMetrics::from_json(const nlohmann::json& j) {
  EpochMetrics m;
  m.epoch = j.at("epoch").get<int64_t>();
  m.train_loss = j.at("train_loss").get<double>();
  m.train_acc = j.at("train_acc").get<double>();
  m.validation_loss = j.value("validation_loss", 0.0);
  m.validation_acc = j.at("validation_acc").get<double>();
  m.epoch_seconds = j.at("epoch_seconds").get<double>();
  m.samples_per_second = j.at("samples_per_second").get<double>();
  m.steps = j.value("steps", int64_t{0});
  m.skipped_steps = j.value("skipped_steps", int64_t{0});
  m.sync_seconds = j.value("sync_seconds", 0.0);
  m.learning_rate = j.value("learning_rate", 0.0);
  m.global_step = j.value("global_step", int64_t{0});
  m.validation_seconds = j.value("validation_seconds", 0.0);
  return m;
}

TargetOutcome target_outcome(const std::vector<EpochMetrics>& history, double target) {
  TargetOutcome out;
  for (const auto& m : history) {
    out.seconds += m.epoch_seconds + m.validation_seconds;
    if (m.validation_acc >= target) {
      out.reached = true;
      out.epochs = m.epoch;
      return out;
    }
  }
  return {};
}

void ConsoleSink::on_epoch(const EpochMetrics& m, const std::vector<EpochMetrics>&) {
  spdlog::info(
      "epoch {}/{}: train_loss {:.4f} train_acc {:.4f} validation_loss {:.4f} "
      "validation_acc {:.4f} ({:.2f} s, {:.0f} samples/s{}{})",
      m.epoch, total_epochs_, m.train_loss, m.train_acc, m.validation_loss, m.validation_acc,
      m.epoch_seconds, m.samples_per_second,
      m.sync_seconds >= 0.005 ? fmt::format(", {:.2f} s in gradient sync", m.sync_seconds) : "",
      m.skipped_steps ? ", " + std::to_string(m.skipped_steps) + " steps skipped" : "");
}

void JsonlSink::on_epoch(const EpochMetrics&, const std::vector<EpochMetrics>& history) {
  std::string text;
  for (const auto& m : history) text += m.to_json().dump() + "\n";
  write_file_atomic(path_, text);
}

}  // namespace dtrain
