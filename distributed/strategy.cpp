#include "distributed/strategy.h"

#include <spdlog/spdlog.h>

#include "core/errors.h"
#include "distributed/allreduce_sync.h"
#include "distributed/backend/mpi/mpi_communicator.h"
#include "distributed/backend/nccl/nccl_communicator.h"

namespace dtrain::distributed {

std::unique_ptr<GradientSync> make_gradient_sync(const RunConfig& config, const torch::Device& device) {
  if (config.distributed == "none") return std::make_unique<GradientSync>();
  if (config.distributed != "ring") {
    throw ConfigError("--distributed: '" + config.distributed +
                      "' is not available in this build (expected none or ring)");
  }
  AllreduceSyncOptions options;
  options.fusion_threshold_mb = config.fusion_threshold_mb;
  options.fp16_compression = config.compression == "fp16";
  options.backward_passes_per_step = config.backward_passes_per_step;
  options.fault = FaultInjection::from_environment();
  if (!launched_by_mpi()) {
    spdlog::warn("--distributed ring: no MPI launcher found (no OMPI_COMM_WORLD_SIZE, PMI_* or "
                 "PMIX_RANK in the environment); running as a single rank. Start with "
                 "'mpirun -np N dtrain train --distributed ring ...' for data parallelism.");
    options.algorithm = "local";
    return std::make_unique<AllreduceSync>(make_local_communicator(), options);
  }
  StallOptions stall{config.stall_warning_seconds, config.stall_abort_seconds};
  const auto algorithm = config.allreduce == "mpi" ? AllreduceAlgorithm::kMpi : AllreduceAlgorithm::kRing;
  auto mpi = std::make_unique<MpiCommunicator>(algorithm, stall);
  if (device.is_cuda()) {
    if (!nccl_available()) {
      throw ConfigError("--device cuda with --distributed ring needs the NCCL backend, which this "
                        "build lacks (rebuild with -DDTRAIN_WITH_NCCL=ON)");
    }
    options.algorithm = "nccl";
    return std::make_unique<AllreduceSync>(make_nccl_communicator(std::move(mpi)), options);
  }
  options.algorithm = config.allreduce;
  return std::make_unique<AllreduceSync>(std::move(mpi), options);
}

void abort_job(int exit_code) { abort_mpi_job(exit_code); }

}  // namespace dtrain::distributed
