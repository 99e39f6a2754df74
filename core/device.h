// The one device decision of a process: CPU, or the GPU of its rank among the processes on its
// host (cuda:<local_rank>), for the model, optimizer state, buffers and communicator alike.
#pragma once

#include <string>

#include <torch/types.h>

namespace dtrain {

/// Where this process sits among the processes of the job on its host.
struct LocalPlacement {
  int rank = 0;
  int size = 1;
  std::string source;  ///< the variables it was read from ("" when none was set)
};

/// The local rank and size the launcher gives: OpenMPI (OMPI_COMM_WORLD_LOCAL_RANK/_SIZE),
/// MPICH/Hydra (MPI_LOCALRANKID/MPI_LOCALNRANKS), torchrun (LOCAL_RANK/LOCAL_WORLD_SIZE);
/// {0, 1} when none is set. Throws ConfigError naming the variable when a value is not an
/// integer, or the rank is not in [0, size).
LocalPlacement local_placement_from_environment();

/// `requested` is --device: "cpu", "cuda" or "auto" (a GPU when one is visible, else the CPU).
/// A GPU choice is cuda:<local.rank>; more processes on the host than `visible_gpus`, or "cuda"
/// with none visible, throws ConfigError naming both counts.
torch::Device choose_device(const std::string& requested, int visible_gpus,
                            const LocalPlacement& local);

}  // namespace dtrain
