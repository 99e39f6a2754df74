// Typed errors thrown by dtrain's libraries; main() maps them to exit codes.
#pragma once

#include <stdexcept>
#include <string>

namespace dtrain {

/// Base of all dtrain errors. exit_code() is what the CLI returns for it.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
  virtual int exit_code() const { return 1; }
};

/// A bad flag, environment variable or configuration file (exit 2).
class ConfigError : public Error {
 public:
  using Error::Error;
  int exit_code() const override { return 2; }
};

/// Missing or malformed input data: IDX files, checkpoints, models (exit 2).
class DataError : public Error {
 public:
  using Error::Error;
  int exit_code() const override { return 2; }
};

/// A checkpoint that is corrupt or does not fit the model being trained (exit 2).
class CheckpointError : public DataError {
 public:
  using DataError::DataError;
};

/// A failure while talking to peers: a rank died, a collective mismatched or stalled (exit 1).
class CommError : public Error {
 public:
  using Error::Error;
};

/// A failure reading or writing files at run time (exit 1).
class IoError : public Error {
 public:
  using Error::Error;
};

}  // namespace dtrain
