#include "tools/sinks/progress.h"

#include <fmt/format.h>
#include <unistd.h>

#include <cmath>

namespace dtrain::sinks {

bool progress_wanted(const std::string& mode) {
  if (mode == "always") return true;
  if (mode == "never") return false;
  return ::isatty(STDERR_FILENO) == 1;
}

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const auto s = static_cast<int64_t>(seconds + 0.5);
  if (s >= 3600) return fmt::format("{}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60);
  return fmt::format("{}:{:02}", s / 60, s % 60);
}

ProgressSink::ProgressSink(int64_t total_epochs, std::FILE* out, double min_interval_seconds)
    : total_epochs_(total_epochs), out_(out), min_interval_(min_interval_seconds) {}

void ProgressSink::on_epoch_begin(int64_t, int64_t) { drawn_ = false; }

bool ProgressSink::wants_step(int64_t) {
  return !drawn_ ||
         std::chrono::duration<double>(Clock::now() - last_draw_).count() >= min_interval_;
}

std::string ProgressSink::line(const StepProgress& p) const {
  const double rate = p.elapsed_seconds > 0 ? p.samples / p.elapsed_seconds : 0;
  const double eta = p.step > 0
                         ? p.elapsed_seconds * static_cast<double>(p.steps_in_epoch - p.step) /
                               static_cast<double>(p.step)
                         : NAN;
  const int pct = p.steps_in_epoch > 0 ? static_cast<int>(100 * p.step / p.steps_in_epoch) : 0;
  return fmt::format(
      "epoch {}/{} step {}/{} ({:3}%) {:.0f} samples/s loss {:.4f} {} elapsed, ETA {}", p.epoch,
      total_epochs_, p.step, p.steps_in_epoch, pct, rate, p.running_loss,
      format_duration(p.elapsed_seconds), format_duration(eta));
}

void ProgressSink::on_step(const StepProgress& p) {
  std::fprintf(out_, "\r\x1b[K%s", line(p).c_str());
  std::fflush(out_);
  last_draw_ = Clock::now();
  drawn_ = true;
}

void ProgressSink::on_epoch(const EpochMetrics&, const std::vector<EpochMetrics>&) {
  if (!drawn_) return;
  std::fprintf(out_, "\r\x1b[K");
  std::fflush(out_);
  drawn_ = false;
}

}  // namespace dtrain::sinks
