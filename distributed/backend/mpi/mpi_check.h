// MPI_CHECK: every MPI call goes through it; failures throw CommError with the call, MPI's error
// string, the rank and file:line.
#pragma once

#include <mpi.h>

#include <string>

#include "core/errors.h"

namespace dtrain::distributed::detail {

inline std::string mpi_error_string(int code) {
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(code, text, &len) != MPI_SUCCESS) return "MPI error " + std::to_string(code);
  return std::string(text, static_cast<size_t>(len));
}

inline int world_rank_or_minus_one() {
  int init = 0, fin = 0, rank = -1;
  MPI_Initialized(&init);
  MPI_Finalized(&fin);
  if (init && !fin) MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  return rank;
}

[[noreturn]] inline void throw_mpi_error(const char* call, int code, const char* file, int line) {
  throw CommError(std::string(call) + " failed on rank " +
                  std::to_string(world_rank_or_minus_one()) + ": " + mpi_error_string(code) + " (" +
                  file + ":" + std::to_string(line) + ")");
}

}  // namespace dtrain::distributed::detail

#define MPI_CHECK(call)                                                                          \
  do {                                                                                           \
    const int dtrain_mpi_rc_ = (call);                                                           \
    if (dtrain_mpi_rc_ != MPI_SUCCESS)                                                           \
      ::dtrain::distributed::detail::throw_mpi_error(#call, dtrain_mpi_rc_, __FILE__, __LINE__); \
  } while (0)
