// Early termination with HyperDrive's semantics, evaluated each time a trial logs its primary
// metric (every epoch): bandit, median stopping, truncation selection.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "tools/sweep/spec.h"

namespace dtrain::sweep {

/// trial -> epoch -> primary metric as logged (not sign-adjusted).
using MetricStreams = std::map<int64_t, std::map<int64_t, double>>;

struct Decision {
  bool cancel = false;
  std::string reason;  ///< why, with the numbers, when cancel
};

class TerminationPolicy {
 public:
  TerminationPolicy(EarlyTermination config, bool maximize, std::string metric)
      : c_(std::move(config)), maximize_(maximize), metric_(std::move(metric)) {}

  /// Whether `trial`, having just logged `epoch`, is cancelled given every trial's stream
  /// (finished trials included). Policies apply at epochs that are multiples of
  /// evaluation_interval, from delay_evaluation on.
  Decision evaluate(int64_t trial, int64_t epoch, const MetricStreams& streams) const;

 private:
  bool better(double a, double b) const { return maximize_ ? a > b : a < b; }

  EarlyTermination c_;
  bool maximize_;
  std::string metric_;
};

}  // namespace dtrain::sweep
