// Compiled instead of nccl_communicator.cpp when CMake found no CUDA Toolkit or NCCL.
#include "core/errors.h"
#include "distributed/backend/nccl/nccl_communicator.h"

namespace dtrain::distributed {

bool nccl_available() { return false; }

std::unique_ptr<Communicator> make_nccl_communicator(std::unique_ptr<Communicator>, int,
                                                     StallOptions) {
  throw CommError(
      "this dtrain was built without NCCL (CMake found no CUDA Toolkit/NCCL; "
      "configure with -DDTRAIN_WITH_NCCL=ON -DCUDAToolkit_ROOT=...)");
}

}  // namespace dtrain::distributed
