#include "tools/sinks/tensorboard.h"

// crcutil's headers use the crc32 instruction through inline asm unless told it may use GCC's
// builtins (which need -msse4.2 for the whole file).
#define CRCUTIL_FORCE_ASM_CRC32C 1
#include <crcutil/crc32c_sse4.h>
#include <crcutil/generic_crc.h>
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "core/errors.h"
#include "tensorboard_event.pb.h"
#include "tools/tracking/workspace.h"

namespace dtrain::sinks {

uint32_t crc32c(std::string_view bytes) {
  // The crc32 instruction where the CPU has it (every x86-64 CPU since 2008), crcutil's
  // table-driven generic CRC otherwise.
  static const bool sse42 = crcutil::Crc32cSSE4::IsSSE42Available();
  if (sse42) {
    static const crcutil::Crc32cSSE4 fast(/*canonical=*/true);
    return static_cast<uint32_t>(fast.CrcDefault(bytes.data(), bytes.size(), 0));
  }
  using Generic = crcutil::GenericCrc<uint64_t, uint64_t, uint64_t, 4>;
  static const Generic generic(0x82f63b78, 32, /*canonical=*/true);
  return static_cast<uint32_t>(generic.CrcDefault(bytes.data(), bytes.size(), 0));
}

uint32_t masked_crc32c(std::string_view bytes) {
  const uint32_t crc = crc32c(bytes);
  return ((crc >> 15) | (crc << 17)) + 0xa282ead8u;
}

namespace {

std::string le64(uint64_t v) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>((v >> (8 * i)) & 0xff);
  return s;
}
std::string le32(uint32_t v) {
  std::string s(4, '\0');
  for (int i = 0; i < 4; ++i) s[i] = static_cast<char>((v >> (8 * i)) & 0xff);
  return s;
}

}  // namespace

EventFileWriter::EventFileWriter(const std::filesystem::path& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  const auto seconds = static_cast<int64_t>(tracking::now_seconds());
  path_ = dir / ("events.out.tfevents." + std::to_string(seconds) + "." + tracking::host_name());
  // Append: a run resumed within the same second continues the same file.
  fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd_ < 0) {
    throw IoError("cannot write TensorBoard events to " + path_.string() + ": " +
                  std::strerror(errno));
  }
  tensorboard::Event e;
  e.set_wall_time(tracking::now_seconds());
  e.set_file_version("brain.Event:2");
  write_record(e.SerializeAsString());
}

EventFileWriter::~EventFileWriter() {
  if (fd_ >= 0) ::close(fd_);
}

void EventFileWriter::add_scalar(const std::string& tag, int64_t step, double value) {
  tensorboard::Event e;
  e.set_wall_time(tracking::now_seconds());
  e.set_step(step);
  auto* v = e.mutable_summary()->add_value();
  v->set_tag(tag);
  v->set_simple_value(static_cast<float>(value));
  write_record(e.SerializeAsString());
}

void EventFileWriter::write_record(const std::string& data) {
  const std::string length = le64(data.size());
  const std::string record =
      length + le32(masked_crc32c(length)) + data + le32(masked_crc32c(data));
  // One write per record: a reader never sees half a record from us unless the disk is full.
  size_t done = 0;
  while (done < record.size()) {
    const ssize_t n = ::write(fd_, record.data() + done, record.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      throw IoError("writing TensorBoard events to " + path_.string() + ": " +
                    std::strerror(errno));
    }
    done += static_cast<size_t>(n);
  }
}

TensorBoardSink::TensorBoardSink(const std::filesystem::path& dir, int64_t log_every_steps)
    : writer_(dir), log_every_steps_(log_every_steps) {}

bool TensorBoardSink::wants_step(int64_t global_step) {
  return log_every_steps_ > 0 && global_step % log_every_steps_ == 0;
}

void TensorBoardSink::on_step(const StepProgress& p) {
  if (!wants_step(p.global_step)) return;
  writer_.add_scalar("train/step_loss", p.global_step, p.batch_loss);
}

void TensorBoardSink::on_epoch(const EpochMetrics& m, const std::vector<EpochMetrics>&) {
  writer_.add_scalar("train/loss", m.epoch, m.train_loss);
  writer_.add_scalar("train/accuracy", m.epoch, m.train_acc);
  writer_.add_scalar("validation/loss", m.epoch, m.validation_loss);
  writer_.add_scalar("validation/accuracy", m.epoch, m.validation_acc);
  writer_.add_scalar("learning_rate", m.epoch, m.learning_rate);
  writer_.add_scalar("throughput/samples_per_second", m.epoch, m.samples_per_second);
  writer_.add_scalar("sync/seconds", m.epoch, m.sync_seconds);
}

}  // namespace dtrain::sinks
