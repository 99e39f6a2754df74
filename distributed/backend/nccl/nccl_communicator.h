// The NCCL backend: the Communicator interface on CUDA tensors, one GPU per local rank, with the
// NCCL unique id broadcast over MPI. Compiled when CMake finds CUDA Toolkit and NCCL.
#pragma once

#include <memory>

#include "distributed/backend/mpi/mpi_communicator.h"

namespace dtrain::distributed {

/// True if this build has the NCCL backend.
bool nccl_available();

/// Takes over `mpi` (used for bootstrap, negotiation and barriers). Throws CommError if the
/// build has no NCCL or NCCL/CUDA fail.
std::unique_ptr<Communicator> make_nccl_communicator(std::unique_ptr<MpiCommunicator> mpi);

}  // namespace dtrain::distributed
