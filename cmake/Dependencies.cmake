# Optional dependencies: each sets DTRAIN_HAVE_<X> to 0 or 1 for config.h.

if(NOT DTRAIN_PROFILE STREQUAL "gpu")
  find_package(MPI COMPONENTS CXX)
endif()
if(MPI_CXX_FOUND)
  set(DTRAIN_HAVE_MPI 1)
else()
  set(DTRAIN_HAVE_MPI 0)
endif()

set(DTRAIN_HAVE_NCCL 0)
if(NOT DTRAIN_WITH_NCCL STREQUAL "OFF")
  if(NOT CUDAToolkit_ROOT AND EXISTS /usr/local/cuda)
    set(CUDAToolkit_ROOT /usr/local/cuda)
  endif()
  find_package(CUDAToolkit QUIET)
  # NCCL_ROOT: an NCCL outside the toolkit, e.g. the nvidia-nccl-cu13 wheel's nvidia/nccl
  # folder (whose lib/ has only libnccl.so.2).
  find_path(NCCL_INCLUDE_DIR nccl.h HINTS ${NCCL_ROOT}/include $ENV{NCCL_ROOT}/include
            /usr/local/cuda/include ${CUDAToolkit_INCLUDE_DIRS})
  find_library(NCCL_LIBRARY NAMES nccl libnccl.so.2
               HINTS ${NCCL_ROOT}/lib $ENV{NCCL_ROOT}/lib /usr/local/cuda/lib64 /usr/local/cuda/lib
                     ${CUDAToolkit_LIBRARY_DIR})
  if(CUDAToolkit_FOUND AND NCCL_INCLUDE_DIR AND NCCL_LIBRARY)
    set(DTRAIN_HAVE_NCCL 1)
    message(STATUS "dtrain: NCCL backend enabled (${NCCL_LIBRARY})")
  elseif(DTRAIN_WITH_NCCL STREQUAL "ON")
    message(FATAL_ERROR "DTRAIN_WITH_NCCL=ON but the CUDA Toolkit or NCCL was not found "
                        "(CUDAToolkit_FOUND=${CUDAToolkit_FOUND} NCCL_INCLUDE_DIR=${NCCL_INCLUDE_DIR} "
                        "NCCL_LIBRARY=${NCCL_LIBRARY}; give -DCUDAToolkit_ROOT=... -DNCCL_ROOT=...)")
  else()
    message(STATUS "dtrain: NCCL backend disabled (CUDA Toolkit or NCCL not found)")
  endif()
endif()

set(DTRAIN_HAVE_ONNX 0)
set(DTRAIN_HAVE_GRPC 0)
if(DTRAIN_PROFILE STREQUAL "gpu")
  return()  # the GPU profile uses neither
endif()

find_package(ONNX QUIET)
if(ONNX_FOUND OR TARGET onnx_proto)
  set(DTRAIN_HAVE_ONNX 1)
endif()

find_package(gRPC CONFIG QUIET)
if(gRPC_FOUND)
  set(DTRAIN_HAVE_GRPC 1)
endif()
