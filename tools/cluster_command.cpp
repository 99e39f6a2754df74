// dtrain cluster check: the cluster TF_CONFIG describes, and this process's role in it.
#include <iostream>
#include <string>

#include "core/errors.h"
#include "distributed/tf_config.h"
#include "tools/cli_util.h"
#include "tools/commands.h"

namespace dtrain::cli {

int cluster_command(int argc, char** argv) {
  if (argc < 2 || std::string(argv[1]) != "check") {
    throw ConfigError("usage: dtrain cluster check [--for-ps-training]   (reads TF_CONFIG)");
  }
  cxxopts::Options options("dtrain cluster check",
                           "Print the cluster TF_CONFIG describes and this process's role.");
  options.add_options()
      ("for-ps-training", "also require what parameter-server training needs (ps and workers)")
      ("h,help", "show this help");
  cxxopts::ParseResult r;
  if (!parse_or_help(options, argc - 1, argv + 1, r)) return 0;
  const auto config = distributed::TfConfig::from_environment();
  if (r.count("for-ps-training")) config.require_parameter_server_cluster();
  std::cout << config.to_json().dump(2) << std::endl;
  return 0;
}

}  // namespace dtrain::cli
