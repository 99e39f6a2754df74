// Picks the GradientSync for a run from --distributed and the launcher's environment.
#pragma once

#include <memory>

#include <torch/types.h>

#include "core/gradient_sync.h"
#include "core/run_config.h"

namespace dtrain::distributed {

/// "none": a single process. "ring": allreduce data parallelism over MPI (our ring or
/// MPI_Allreduce per --allreduce), or NCCL when training on CUDA and the build has it; without an
/// MPI launcher it runs as a single rank and says so. Throws ConfigError for what this build
/// cannot do.
std::unique_ptr<GradientSync> make_gradient_sync(const RunConfig& config, const torch::Device& device);

/// Called by main() on a fatal error: if this process is one rank of several, ends the whole job
/// with `exit_code` (so no peer waits forever); otherwise returns.
void abort_job(int exit_code);

}  // namespace dtrain::distributed
