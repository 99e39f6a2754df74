# Optional dependencies: each sets DTRAIN_HAVE_<X> to 0 or 1 for config.h.

find_package(MPI COMPONENTS CXX)
if(MPI_CXX_FOUND)
  set(DTRAIN_HAVE_MPI 1)
else()
  set(DTRAIN_HAVE_MPI 0)
endif()

set(DTRAIN_HAVE_NCCL 0)
if(NOT DTRAIN_WITH_NCCL STREQUAL "OFF")
  find_package(CUDAToolkit QUIET HINTS /usr/local/cuda)
  find_path(NCCL_INCLUDE_DIR nccl.h HINTS /usr/local/cuda/include ${CUDAToolkit_INCLUDE_DIRS})
  find_library(NCCL_LIBRARY nccl HINTS /usr/local/cuda/lib64 /usr/local/cuda/lib ${CUDAToolkit_LIBRARY_DIR})
  if(CUDAToolkit_FOUND AND NCCL_INCLUDE_DIR AND NCCL_LIBRARY AND MPI_CXX_FOUND)
    set(DTRAIN_HAVE_NCCL 1)
    message(STATUS "dtrain: NCCL backend enabled (${NCCL_LIBRARY})")
  elseif(DTRAIN_WITH_NCCL STREQUAL "ON")
    message(FATAL_ERROR "DTRAIN_WITH_NCCL=ON but CUDA Toolkit, NCCL or MPI was not found "
                        "(CUDAToolkit_FOUND=${CUDAToolkit_FOUND} NCCL_INCLUDE_DIR=${NCCL_INCLUDE_DIR} "
                        "NCCL_LIBRARY=${NCCL_LIBRARY} MPI_CXX_FOUND=${MPI_CXX_FOUND})")
  else()
    message(STATUS "dtrain: NCCL backend disabled (CUDA Toolkit or NCCL not found)")
  endif()
endif()

find_package(ONNX QUIET)
if(ONNX_FOUND OR TARGET onnx_proto)
  set(DTRAIN_HAVE_ONNX 1)
else()
  set(DTRAIN_HAVE_ONNX 0)
endif()

find_package(gRPC CONFIG QUIET)
if(gRPC_FOUND)
  set(DTRAIN_HAVE_GRPC 1)
else()
  set(DTRAIN_HAVE_GRPC 0)
endif()
