// Picks the GradientSync for a run from --distributed and the launcher's environment.
#pragma once

#include <memory>
#include <optional>

#include <torch/types.h>

#include "core/gradient_sync.h"
#include "core/run_config.h"

namespace dtrain::distributed {

/// "none": a single process. "ps": a worker or the chief of a parameter-server cluster
/// (TF_CONFIG). "ring": allreduce data parallelism over MPI (our ring or
/// MPI_Allreduce per --allreduce), or NCCL when training on CUDA and the build has it; without an
/// MPI launcher it runs as a single rank and says so. Throws ConfigError for what this build
/// cannot do.
std::unique_ptr<GradientSync> make_gradient_sync(const RunConfig& config,
                                                 const torch::Device& device);

/// With --distributed ps and TF_CONFIG naming a ps task: serves as that parameter server until
/// the chief shuts it down and returns the exit code. Otherwise returns nullopt (train).
std::optional<int> serve_if_parameter_server(const RunConfig& config);

/// Called by main() on a fatal error: if this process is one rank of several, ends the whole job
/// with `exit_code` (so no peer waits forever); otherwise returns.
void abort_job(int exit_code);

/// Called by main() before it ends the process without static destructors: finalises MPI if this
/// process started it.
void finish_job();

}  // namespace dtrain::distributed
