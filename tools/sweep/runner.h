// The sweep controller: samples trials, runs each as a `dtrain train` process (behind an optional
// launcher such as mpirun or srun), watches their metrics in the workspace, cancels the hopeless
// ones, and reports the best. The sweep is a parent run; each trial a child run tagged with the
// sweep id and its parameters.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "tools/sweep/sampler.h"
#include "tools/sweep/spec.h"

namespace dtrain::sweep {

struct SweepOptions {
  std::filesystem::path workspace;
  std::filesystem::path output_dir;  ///< empty: sweeps/<sweep id prefix>
  std::string dtrain_binary;         ///< the trial program
  std::string register_best;         ///< register the best trial's model under this name
  std::string resume_id;             ///< continue this sweep (its parent run id)
  int cores = 0;                     ///< 0: this machine's
  double poll_seconds = 0.25;
};

struct Trial {
  int64_t index = 0;
  Assignment params;
  std::string run_id;
  std::string status;                ///< running, completed, failed, cancelled
  std::string reason;                ///< failure line or cancellation reason
  std::map<int64_t, double> metric;  ///< epoch -> primary metric
  double start = 0, end = 0;
  double finish_order = 0;  ///< when it finished (for the plot's time axis)
};

class SweepRunner {
 public:
  SweepRunner(SweepSpec spec, SweepOptions options);
  /// Runs to the end; returns the process exit code (0, or 128 + signal when stopped).
  int run();
  const std::vector<Trial>& trials() const { return trials_; }

 private:
  struct Impl;
  SweepSpec spec_;
  SweepOptions options_;
  std::vector<Trial> trials_;
};

/// The spec stored with a sweep's parent run (for --resume).
SweepSpec stored_spec(const std::filesystem::path& workspace, const std::string& sweep_id);

}  // namespace dtrain::sweep
