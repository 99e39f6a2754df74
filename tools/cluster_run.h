// dtrain cluster run: starts a parameter-server cluster on 127.0.0.1.
#pragma once

#include <string>
#include <vector>

namespace dtrain::cli {

struct ClusterRunOptions {
  int ps = 1;
  int workers = 2;
  bool chief = false;
  std::vector<std::string> train_args;  ///< passed to every `dtrain train --distributed ps`
};

/// Picks free ports, gives every task its TF_CONFIG, prefixes each task's output lines with its
/// role, stops everything when one task fails, and returns the first failure's exit code (0 when
/// every task exits 0). SIGINT/SIGTERM/SIGUSR1 are passed to every task (a graceful stop: 128 +
/// the signal when they all stopped).
int cluster_run(const ClusterRunOptions& options);

}  // namespace dtrain::cli
