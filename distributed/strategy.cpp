#include "distributed/strategy.h"

#include <spdlog/spdlog.h>

#include "core/errors.h"
#include "core/logging.h"
#include "distributed/allreduce_sync.h"
#include "distributed/backend/mpi/mpi_communicator.h"
#include "distributed/backend/nccl/nccl_communicator.h"
#include "distributed/ps/ps_server.h"
#include "distributed/ps/ps_sync.h"
#include "distributed/tf_config.h"

#include <cstdlib>
#include <cstring>

namespace dtrain::distributed {

namespace {

TfConfig ps_cluster() {
  TfConfig c = TfConfig::from_environment();
  c.require_parameter_server_cluster();
  return c;
}

/// DTRAIN_CLUSTER_TOKEN, the secret every task of a parameter-server cluster presents. Without
/// it a task starts only with --insecure, and says so.
std::string cluster_token(const RunConfig& config, const std::string& task) {
  const char* token = std::getenv("DTRAIN_CLUSTER_TOKEN");
  if (token != nullptr && *token != '\0') {
    if (std::strlen(token) < 16 || std::strlen(token) > 4096) {
      throw ConfigError("DTRAIN_CLUSTER_TOKEN: expected a secret of 16 to 4096 characters, got " +
                        std::to_string(std::strlen(token)));
    }
    return token;
  }
  if (!config.insecure) {
    throw ConfigError(
        task +
        ": DTRAIN_CLUSTER_TOKEN is not set: without it any process that reaches the "
        "parameter servers can pull the model, push gradients and shut the cluster down. "
        "Give every task the same secret (e.g. DTRAIN_CLUSTER_TOKEN=$(openssl rand -hex "
        "16)), start the cluster with 'dtrain cluster run' (which makes one), or pass "
        "--insecure");
  }
  spdlog::warn("{}: --insecure: no DTRAIN_CLUSTER_TOKEN, calls are not authenticated", task);
  return "";
}

}  // namespace

std::optional<int> serve_if_parameter_server(const RunConfig& config) {
  if (config.distributed != "ps") return std::nullopt;
  const TfConfig c = ps_cluster();
  if (c.task_type != "ps") return std::nullopt;
  ps::ServerOptions o;
  o.task = "ps:" + std::to_string(c.task_index);
  o.address = c.address();
  o.token = cluster_token(config, o.task);
  for (const auto& [type, tasks] : c.cluster) {
    if (type == "ps") continue;
    for (const auto& [index, address] : tasks)
      o.known_tasks.insert(type + ":" + std::to_string(index));
  }
  o.sync = config.ps_mode == "sync";
  o.tls_cert = config.tls_cert;
  o.tls_key = config.tls_key;
  o.tls_ca = config.tls_ca;
  o.peer_timeout_seconds = config.peer_timeout_seconds;
  o.init_timeout_seconds = config.connect_timeout_seconds * 2;
  setup_logging(o.task);
  return ps::serve(o);
}

std::unique_ptr<GradientSync> make_gradient_sync(const RunConfig& config,
                                                 const torch::Device& device) {
  if (config.distributed == "none") return std::make_unique<SingleProcessSync>();
  if (config.distributed == "ps") {
    ps::PsSyncOptions o;
    o.cluster = ps_cluster();
    if (o.cluster.task_type == "evaluator") {
      throw ConfigError(
          "TF_CONFIG: task type 'evaluator' is not supported by dtrain train (the "
          "chief evaluates every epoch; use dtrain eval on its checkpoints)");
    }
    if (device.is_cuda()) spdlog::warn("parameter-server training moves values through the CPU");
    o.sync = config.ps_mode == "sync";
    o.tls_cert = config.tls_cert;
    o.tls_key = config.tls_key;
    o.tls_ca = config.tls_ca;
    o.token =
        cluster_token(config, o.cluster.task_type + ":" + std::to_string(o.cluster.task_index));
    o.connect_timeout_seconds = config.connect_timeout_seconds;
    o.peer_timeout_seconds = config.peer_timeout_seconds;
    o.optimizer = OptimizerSettings::from(config);
    o.fp16_compression = config.compression == "fp16";
    o.fault = FaultInjection::from_environment();
    return std::make_unique<ps::PsSync>(std::move(o));
  }
  if (config.distributed != "ring") {
    throw ConfigError("--distributed: expected none, ring or ps, got '" + config.distributed + "'");
  }
  AllreduceSyncOptions options;
  options.fusion_threshold_mb = config.fusion_threshold_mb;
  options.fp16_compression = config.compression == "fp16";
  options.backward_passes_per_step = config.backward_passes_per_step;
  options.fault = FaultInjection::from_environment();
  if (!launched_by_mpi()) {
    spdlog::warn(
        "--distributed ring: no MPI launcher found (no OMPI_COMM_WORLD_SIZE, PMI_* or "
        "PMIX_RANK in the environment); running as a single rank. Start with "
        "'mpirun -np N dtrain train --distributed ring ...' for data parallelism.");
    options.algorithm = "local";
    return std::make_unique<AllreduceSync>(make_local_communicator(), options);
  }
  StallOptions stall{config.stall_warning_seconds, config.stall_abort_seconds};
  const auto algorithm =
      config.allreduce == "mpi" ? AllreduceAlgorithm::kMpi : AllreduceAlgorithm::kRing;
  auto mpi = std::make_unique<MpiCommunicator>(algorithm, stall);
  if (device.is_cuda()) {
    if (!nccl_available()) {
      throw ConfigError(
          "--device cuda with --distributed ring needs the NCCL backend, which this "
          "build lacks (rebuild with -DDTRAIN_WITH_NCCL=ON)");
    }
    options.algorithm = "nccl";
    return std::make_unique<AllreduceSync>(
        make_nccl_communicator(std::move(mpi), device.index(), stall), options);
  }
  options.algorithm = config.allreduce;
  return std::make_unique<AllreduceSync>(std::move(mpi), options);
}

void abort_job(int exit_code) { abort_mpi_job(exit_code); }

void finish_job() { finalize_mpi(); }

}  // namespace dtrain::distributed
