// TensorBoard event files: TFRecord framing (length, masked CRC-32C of the length, data, masked
// CRC-32C of the data) around serialized Event protos, so `tensorboard --logdir outputs` shows
// a run's scalars.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

#include "core/metrics.h"

namespace dtrain::sinks {

/// CRC-32C (Castagnoli) of `bytes` (crcutil: the SSE4.2 instruction where the CPU has it).
uint32_t crc32c(std::string_view bytes);
/// TFRecord's masked CRC: rotate right by 15, add 0xa282ead8.
uint32_t masked_crc32c(std::string_view bytes);

/// Appends events to `<dir>/events.out.tfevents.<seconds>.<host>`; the first is the file
/// version. Throws IoError naming the file if it cannot be written.
class EventFileWriter {
 public:
  explicit EventFileWriter(const std::filesystem::path& dir);
  ~EventFileWriter();
  EventFileWriter(const EventFileWriter&) = delete;
  EventFileWriter& operator=(const EventFileWriter&) = delete;

  void add_scalar(const std::string& tag, int64_t step, double value);
  const std::filesystem::path& path() const { return path_; }

 private:
  void write_record(const std::string& data);

  std::filesystem::path path_;
  int fd_ = -1;
};

/// Writes each epoch's metrics (at step = epoch) and the training loss every `log_every_steps`
/// global steps (tag train/step_loss) as TensorBoard scalars.
class TensorBoardSink : public MetricsSink {
 public:
  TensorBoardSink(const std::filesystem::path& dir, int64_t log_every_steps);
  bool wants_step(int64_t global_step) override;
  void on_step(const StepProgress& p) override;
  void on_epoch(const EpochMetrics& m, const std::vector<EpochMetrics>& history) override;

 private:
  EventFileWriter writer_;
  int64_t log_every_steps_;
};

}  // namespace dtrain::sinks
