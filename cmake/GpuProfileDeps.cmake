# Dependencies of the GPU profile (DTRAIN_PROFILE=gpu): nothing compiled for another ABI.
# fmt and spdlog are used header-only (except in the fuzz build, which has Debian's), JSON is
# header-only, GoogleTest is built from source;
# zlib and OpenSSL's libcrypto are C libraries (no C++ ABI). Each comes from the system when it
# has it, else from DTRAIN_DEPS_DIR, a folder made on a Debian machine by
# `tools/gpu-check.sh --bundle DIR` (for GPU machines with no package manager). When
# DTRAIN_DEPS_DIR is given it is searched first.

set(DTRAIN_DEPS_DIR "" CACHE PATH "Dependency bundle of tools/gpu-check.sh --bundle")
set(dtrain_bundle_hint "make one on a Debian 12 machine with 'bash tools/gpu-check.sh --bundle DIR' "
                       "and pass -DDTRAIN_DEPS_DIR=DIR")
if(DTRAIN_DEPS_DIR AND NOT EXISTS "${DTRAIN_DEPS_DIR}/include")
  message(FATAL_ERROR "DTRAIN_DEPS_DIR=${DTRAIN_DEPS_DIR} has no include/ folder: ${dtrain_bundle_hint}")
endif()

function(dtrain_header_only target header defines)
  string(MAKE_C_IDENTIFIER "DTRAIN_INCLUDE_${header}" var)
  if(DTRAIN_DEPS_DIR)
    find_path(${var} ${header} PATHS "${DTRAIN_DEPS_DIR}/include" NO_DEFAULT_PATH)
  endif()
  find_path(${var} ${header})
  if(NOT ${var})
    message(FATAL_ERROR "GPU profile: ${header} not found (${target}); ${dtrain_bundle_hint}")
  endif()
  add_library(${target} INTERFACE IMPORTED GLOBAL)
  set_target_properties(${target} PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${${var}}"
                                             INTERFACE_COMPILE_DEFINITIONS "${defines}")
endfunction()

# The fuzz build has Debian's compiled fmt and spdlog (CMakeLists.txt: DTRAIN_SYSTEM_FMT):
# header-only spdlog made each source's compile under the sanitizers 41 s instead of 25 s
# (core/trainer.cpp), most of the suite's longest test.
if(NOT DTRAIN_SYSTEM_FMT)
  dtrain_header_only(nlohmann_json::nlohmann_json nlohmann/json.hpp "")
  dtrain_header_only(fmt::fmt fmt/format-inl.h "FMT_HEADER_ONLY=1")
  dtrain_header_only(spdlog::spdlog spdlog/spdlog-inl.h "SPDLOG_HEADER_ONLY;SPDLOG_FMT_EXTERNAL=1")
  set_property(TARGET spdlog::spdlog PROPERTY INTERFACE_LINK_LIBRARIES fmt::fmt)
  # LibTorch 2.x ships its own, newer fmt in its include folder, which would otherwise come
  # first (spdlog 1.10 does not build against fmt 12): a bundle's fmt and spdlog are searched
  # before it. (Not /usr/include: naming it with -isystem breaks the C++ library's
  # #include_next.)
  if(NOT DTRAIN_INCLUDE_fmt_format_inl_h MATCHES "^/usr(/local)?/include/?$")
    include_directories(BEFORE SYSTEM "${DTRAIN_INCLUDE_fmt_format_inl_h}"
                                      "${DTRAIN_INCLUDE_spdlog_spdlog_inl_h}")
  endif()
endif()

if(DTRAIN_DEPS_DIR)
  set(ZLIB_ROOT "${DTRAIN_DEPS_DIR}")
  set(OPENSSL_ROOT_DIR "${DTRAIN_DEPS_DIR}")
  set(OPENSSL_USE_STATIC_LIBS TRUE)
  # Debian's static libraries are not all position-independent.
  set(CMAKE_POSITION_INDEPENDENT_CODE OFF)
  add_link_options(-no-pie)
endif()
find_package(ZLIB)
find_package(OpenSSL COMPONENTS Crypto)
if(NOT ZLIB_FOUND OR NOT OPENSSL_FOUND)
  message(FATAL_ERROR "GPU profile: zlib (found: ${ZLIB_FOUND}) and OpenSSL's libcrypto "
                      "(found: ${OPENSSL_FOUND}) are needed; ${dtrain_bundle_hint}")
endif()
if(DTRAIN_DEPS_DIR)
  # A static libcrypto needs these at link time.
  set_property(TARGET OpenSSL::Crypto APPEND PROPERTY INTERFACE_LINK_LIBRARIES
               ${CMAKE_DL_LIBS} Threads::Threads)
endif()

if(DTRAIN_DEPS_DIR AND EXISTS "${DTRAIN_DEPS_DIR}/googletest/CMakeLists.txt")
  set(dtrain_gtest_src "${DTRAIN_DEPS_DIR}/googletest")
elseif(NOT DTRAIN_DEPS_DIR)
  find_package(GTest QUIET)
  if(NOT GTest_FOUND AND EXISTS /usr/src/googletest/CMakeLists.txt)
    set(dtrain_gtest_src /usr/src/googletest)
  endif()
endif()
if(dtrain_gtest_src)
  set(INSTALL_GTEST OFF CACHE BOOL "" FORCE)
  set(BUILD_GMOCK OFF CACHE BOOL "" FORCE)
  add_subdirectory("${dtrain_gtest_src}" "${CMAKE_BINARY_DIR}/googletest" EXCLUDE_FROM_ALL)
  if(NOT TARGET GTest::gtest)  # GoogleTest 1.11 and later define these themselves
    add_library(GTest::gtest ALIAS gtest)
    add_library(GTest::gtest_main ALIAS gtest_main)
  endif()
elseif(NOT TARGET GTest::gtest)
  message(FATAL_ERROR "GPU profile: GoogleTest not found; ${dtrain_bundle_hint}")
endif()
