// dtrain cluster check: the cluster TF_CONFIG describes, and this process's role in it.
#include <iostream>
#include <string>

#include "core/errors.h"
#include "distributed/tf_config.h"
#include "tools/cli_util.h"
#include "tools/cluster_run.h"
#include "tools/commands.h"

namespace dtrain::cli {

namespace {

int run_command(int argc, char** argv) {
  // Everything after "--" goes to `dtrain train`.
  int split = argc;
  for (int i = 0; i < argc; ++i) {
    if (std::string(argv[i]) == "--") {
      split = i;
      break;
    }
  }
  cxxopts::Options options(
      "dtrain cluster run",
      "Start a parameter-server cluster on 127.0.0.1: dtrain cluster run --ps P "
      "--workers W [--chief] -- <dtrain train flags>");
  options.add_options()("ps", "parameter-server tasks",
                        cxxopts::value<std::string>()->default_value("1"))(
      "workers", "worker tasks", cxxopts::value<std::string>()->default_value("2"))(
      "chief", "add a chief task (else worker 0 is the chief)")("h,help", "show this help");
  cxxopts::ParseResult r;
  if (!parse_or_help(options, split, argv, r)) return 0;
  ClusterRunOptions o;
  o.ps = static_cast<int>(int_flag(r, "ps"));
  o.workers = static_cast<int>(int_flag(r, "workers"));
  o.chief = r.count("chief") > 0;
  for (int i = split + 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--distributed" || a.rfind("--distributed=", 0) == 0) {
      throw ConfigError("dtrain cluster run sets --distributed ps itself; remove " + a);
    }
    o.train_args.push_back(a);
  }
  return cluster_run(o);
}

}  // namespace

int cluster_command(int argc, char** argv) {
  if (argc >= 2 && std::string(argv[1]) == "run") return run_command(argc - 1, argv + 1);
  if (argc < 2 || std::string(argv[1]) != "check") {
    throw ConfigError(
        "usage: dtrain cluster check [--for-ps-training]   (reads TF_CONFIG)\n"
        "       dtrain cluster run --ps P --workers W [--chief] -- <train flags>");
  }
  cxxopts::Options options("dtrain cluster check",
                           "Print the cluster TF_CONFIG describes and this process's role.");
  options.add_options()("for-ps-training",
                        "also require what parameter-server training needs (ps and workers)")(
      "h,help", "show this help");
  cxxopts::ParseResult r;
  if (!parse_or_help(options, argc - 1, argv + 1, r)) return 0;
  const auto config = distributed::TfConfig::from_environment();
  if (r.count("for-ps-training")) config.require_parameter_server_cluster();
  std::cout << config.to_json().dump(2) << std::endl;
  return 0;
}

}  // namespace dtrain::cli
