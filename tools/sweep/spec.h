// The sweep specification (`dtrain sweep --spec sweep.json`): which `dtrain train` flags to
// sample from which distributions, how to sample, when to stop trials early, and the limits.
// Everything is checked before any trial starts.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/option_table.h"

namespace dtrain::sweep {

/// HyperDrive's distributions. Bounds are values (loguniform [1e-4, 0.3] samples learning rates
/// between 1e-4 and 0.3, log-uniformly); q rounds a sample to a multiple of q.
struct Distribution {
  enum class Kind {
    kChoice,
    kUniform,
    kQUniform,
    kLogUniform,
    kQLogUniform,
    kNormal,
    kQNormal,
    kLogNormal,
    kQLogNormal
  };
  Kind kind = Kind::kChoice;
  std::vector<nlohmann::json> choices;  ///< kChoice
  double a = 0, b = 0;                  ///< low/high, or mu/sigma for the normals
  double q = 0;                         ///< > 0 for the q- kinds
  bool log_scale() const;
  bool is_normal() const;
};

const char* kind_name(Distribution::Kind kind);

struct Parameter {
  std::string flag;
  const ConfigOption* row = nullptr;
  Distribution dist;
  bool integer = false;  ///< the flag takes whole numbers: samples are rounded
};

struct EarlyTermination {
  std::string policy = "none";  ///< none, bandit, median_stopping, truncation_selection
  double slack_factor = 0;
  double slack_amount = 0;
  int64_t evaluation_interval = 1;
  int64_t delay_evaluation = 0;
  double truncation_percentage = 0;
};

struct SweepSpec {
  std::string experiment = "default";
  std::vector<Parameter> parameters;
  std::string sampling = "random";  ///< grid, random, bayesian
  uint64_t seed = 0;
  std::string primary_metric = "validation_acc";
  std::string goal = "maximize";
  int64_t max_total_runs = 10;
  int64_t max_concurrent_runs = 1;
  double max_duration_minutes = 10080;
  EarlyTermination early_termination;
  std::vector<std::string> train_args;
  std::vector<std::string> launcher;

  bool maximize() const { return goal == "maximize"; }

  /// Parses and checks a spec; throws ConfigError "<source>: <key>: expected ..., got ...".
  static SweepSpec parse(const nlohmann::json& j, const std::string& source);
  /// The spec as JSON again (stored with the sweep's run so that --resume can rebuild it).
  nlohmann::json to_json() const;
};

/// The metric keys a trial records every epoch (the primary metric must be one of them).
const std::vector<std::string>& epoch_metric_keys();

/// One sampled value as flag text (integers without a decimal point).
std::string value_text(const nlohmann::json& value);

}  // namespace dtrain::sweep
