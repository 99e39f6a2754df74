// The NCCL backend: the Communicator interface on CUDA tensors, one GPU per local rank, with the
// NCCL unique id exchanged over a bootstrap communicator (MPI across hosts; the local one for a
// single process). Compiled when CMake finds the CUDA Toolkit and NCCL.
#pragma once

#include <memory>

#include "distributed/communicator.h"

namespace dtrain::distributed {

/// True if this build has the NCCL backend.
bool nccl_available();

/// Takes over `bootstrap` (used for the unique id, negotiation and barriers). Runs on GPU
/// `device_index`, which must be the bootstrap's local rank (one GPU per process); more local
/// ranks than visible GPUs is a ConfigError naming both counts. Collectives are ordered after
/// the work already issued on LibTorch's current stream, and their results are ordered before
/// later work on it. A collective not finished after `stall.abort_seconds` (or one NCCL reports
/// an asynchronous error for) aborts the NCCL communicator and throws CommError naming the rank.
/// Throws CommError if the build has no NCCL or CUDA/NCCL fail.
std::unique_ptr<Communicator> make_nccl_communicator(std::unique_ptr<Communicator> bootstrap,
                                                     int device_index, StallOptions stall);

}  // namespace dtrain::distributed
