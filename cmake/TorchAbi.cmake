# What the LibTorch found was built with: its C++ ABI (DTRAIN_TORCH_CXX11_ABI, 0 or 1) and whether
# it has CUDA (DTRAIN_TORCH_CUDA). dtrain's own code is compiled with LibTorch's ABI; libraries
# compiled with the other one cannot be linked with it.

set(DTRAIN_TORCH_CXX11_ABI 1)
if(TORCH_CXX_FLAGS MATCHES "_GLIBCXX_USE_CXX11_ABI=([01])")
  set(DTRAIN_TORCH_CXX11_ABI ${CMAKE_MATCH_1})
endif()
add_compile_definitions(_GLIBCXX_USE_CXX11_ABI=${DTRAIN_TORCH_CXX11_ABI})

if(C10_CUDA_LIBRARY OR TARGET c10_cuda)
  set(DTRAIN_TORCH_CUDA 1)
else()
  set(DTRAIN_TORCH_CUDA 0)
endif()
message(STATUS "dtrain: LibTorch ${Torch_VERSION} at ${TORCH_INSTALL_PREFIX}: "
               "_GLIBCXX_USE_CXX11_ABI=${DTRAIN_TORCH_CXX11_ABI}, CUDA=${DTRAIN_TORCH_CUDA}")

if(DTRAIN_PROFILE STREQUAL "full" AND NOT DTRAIN_TORCH_CXX11_ABI)
  message(FATAL_ERROR
    "LibTorch at ${TORCH_INSTALL_PREFIX} was built with the pre-C++11 ABI "
    "(-D_GLIBCXX_USE_CXX11_ABI=0), but Debian's gRPC, protobuf, ONNX, spdlog and fmt use the "
    "C++11 ABI: linking them together fails or corrupts strings at run time. Use a LibTorch "
    "built with the C++11 ABI (the 'cxx11 ABI' LibTorch download; pip PyTorch 2.7 and later), "
    "or build only the GPU profile (-DDTRAIN_PROFILE=gpu, as tools/gpu-check.sh does), which "
    "needs no library compiled with the other ABI.")
endif()
