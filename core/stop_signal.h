// Graceful stop on SIGINT, SIGTERM and SIGUSR1 (what schedulers send before they kill a job):
// the handler only records the signal; the training loop checks at each step boundary and
// unwinds with Interrupted, so the run's records are closed properly. A second signal of the
// same kind ends the process at once (the default action).
#pragma once

#include <string>

#include "core/errors.h"

namespace dtrain {

/// Installs the handlers (idempotent). Call once the process is about to train.
void install_stop_signals();

/// The signal received since install_stop_signals(), or 0.
int stop_signal();

/// Thrown at a step boundary after a stop signal. Exit code 128 + signal, as a shell reports it.
class Interrupted : public Error {
 public:
  explicit Interrupted(int signal);
  int signal() const { return signal_; }
  int exit_code() const override { return 128 + signal_; }

 private:
  int signal_;
};

/// "SIGTERM", "SIGINT", ...
std::string signal_name(int signal);

}  // namespace dtrain
