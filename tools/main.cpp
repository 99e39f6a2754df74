// dtrain: the command-line entry point. Maps errors to exit codes (2 usage/config/data, 1 runtime).
#include <c10/util/Exception.h>
#include <spdlog/spdlog.h>

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <string>
#include <thread>

#include "core/errors.h"
#include "core/logging.h"
#include "core/stop_signal.h"
#include "core/thread_team.h"
#include "distributed/strategy.h"
#include "dtrain/config.h"
#include "tools/commands.h"

namespace {

constexpr const char* kUsage =
    "usage: dtrain <command> [flags]\n"
    "\n"
    "commands:\n"
    "  train       train a model (single process, or distributed)\n"
    "  eval        evaluate a trained model on the MNIST test set\n"
    "  export      export a checkpoint or model to ONNX\n"
    "  data fetch  get MNIST, verified by SHA-256\n"
    "  cluster check  show the cluster and role TF_CONFIG describes\n"
    "  cluster run    start a parameter-server cluster on 127.0.0.1\n"
    "  runs        list, show, compare, delete, restore and download tracked runs\n"
    "  model       register, list, show, alias, tag, delete and download models\n"
    "  sweep       hyperparameter sweeps of train trials (--spec FILE, or --resume ID)\n"
    "  launch      run a command, restarting it when it fails (--max-restarts N -- COMMAND...)\n"
    "\n"
    "Run 'dtrain <command> --help' for a command's flags.\n";

int dispatch(int argc, char** argv) {
  if (argc < 2) {
    std::cerr << kUsage;
    return 2;
  }
  const std::string cmd = argv[1];
  if (cmd == "--help" || cmd == "-h" || cmd == "help") {
    std::cout << kUsage;
    return 0;
  }
  if (cmd == "--version") {
    std::cout << "dtrain " << DTRAIN_VERSION << std::endl;
    return 0;
  }
  if (cmd == "train") return dtrain::cli::train_command(argc - 1, argv + 1);
  if (cmd == "eval") return dtrain::cli::eval_command(argc - 1, argv + 1);
  if (cmd == "data") return dtrain::cli::data_command(argc - 1, argv + 1);
  if (cmd == "export") return dtrain::cli::export_command(argc - 1, argv + 1);
  if (cmd == "cluster") return dtrain::cli::cluster_command(argc - 1, argv + 1);
  if (cmd == "runs") return dtrain::cli::runs_command(argc - 1, argv + 1);
  if (cmd == "model") return dtrain::cli::model_command(argc - 1, argv + 1);
  if (cmd == "sweep") return dtrain::cli::sweep_command(argc - 1, argv + 1);
  if (cmd == "launch") return dtrain::cli::launch_command(argc - 1, argv + 1);
  std::cerr << "dtrain: unknown command '" << cmd << "'\n\n" << kUsage;
  return 2;
}

// One rank failing alone must not leave its peers waiting in a collective: end the whole job.
int fail(int exit_code) {
  spdlog::default_logger()->flush();
  dtrain::distributed::abort_job(exit_code);
  return exit_code;
}

int run(int argc, char** argv) {
  try {
    return dispatch(argc, argv);
  } catch (const dtrain::Interrupted& e) {
    // Every rank stopped after the same step (they agree on it): no MPI_Abort, which would kill
    // the others before they finish; the launcher sees 128 + signal from each.
    spdlog::error("{}", e.what());
    spdlog::default_logger()->flush();
    return e.exit_code();
  } catch (const dtrain::Error& e) {
    spdlog::error("{}", e.what());
    return fail(e.exit_code());
  } catch (const c10::Error& e) {
    spdlog::error("LibTorch error: {}", e.what_without_backtrace());
    return fail(1);
  } catch (const std::exception& e) {
    spdlog::error("{}", e.what());
    return fail(1);
  }
}

}  // namespace

int main(int argc, char** argv) {
  // All cores by default (train and eval size it from --threads); no OpenMP teams (see there).
  dtrain::set_compute_threads(static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
  dtrain::setup_logging();
  const int exit_code = run(argc, argv);
  // Every file a command writes is closed when it returns. What is left are the static destructors
  // of LibTorch (it deregisters its thousands of operators one by one) and of the ~350 libraries
  // it loads: ~60 ms of every run, skipped. MPI is the one that must be told.
  dtrain::distributed::finish_job();
  std::cout.flush();
  spdlog::shutdown();
  std::fflush(nullptr);
  std::_Exit(exit_code);
}
