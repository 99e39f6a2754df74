# Process start-up with Debian's LibTorch (issue 13, target 2). Its libtorch_cpu pulls in some 290
# shared libraries (OpenCV, FFmpeg, GDAL, Qt, ...; dtrain loads ~350 in all), and the dynamic
# loader binds each of their ~150k symbol references by searching the loaded libraries in load
# order until one defines the symbol. A library loaded late that binds thousands of references to
# itself (OpenBLAS, Xerces-C, GDAL, GEOS, OpenSSL, ...) pays a search through some 200 libraries
# for each: 19 M hash-table probes for `dtrain --version`, 0.1-0.2 s of every process. Naming the
# libraries that receive the most bindings first among the executables' own dependencies moves
# them to the front of the search (4.7 M probes).
#
# Which libraries is measured here, once per LibTorch: a probe linked with LibTorch, MPI and gRPC
# runs under the loader's LD_DEBUG=bindings, and the libraries that receive at least
# DTRAIN_STARTUP_MIN_BINDINGS bindings are listed, most first. Only the search order changes: a
# symbol defined in several libraries binds to the first in the new order. Measured on Debian 12,
# those are inline functions and template instantiations (which C++ requires to be the same code
# everywhere), copy-relocated variables, OpenBLAS's BLAS/LAPACK entry points (now from
# libopenblas itself instead of its libblas/liblapack wrappers: the same code), three OpenGL entry
# points (libGL's instead of libOpenGL's, both GLVND dispatchers) and a private strlcat in
# libnetcdf; training gives bit-identical results. The result is the interface target
# dtrain_startup_order (empty when turned off, or when the probe cannot run). Full profile only:
# the GPU profile's LibTorch (a pip PyTorch's) is a handful of libraries.

option(DTRAIN_STARTUP_ORDER
       "Link the libraries that receive the most symbol bindings first (faster start-up)" ON)
set(DTRAIN_STARTUP_MIN_BINDINGS 200 CACHE STRING
    "Bindings a library must receive to be moved to the front of the load order")

add_library(dtrain_startup_order INTERFACE)

set(_key "${TORCH_INSTALL_PREFIX};${Torch_VERSION};${DTRAIN_STARTUP_MIN_BINDINGS}")
set(_stale FALSE)
foreach(_path IN LISTS DTRAIN_STARTUP_LIBRARIES)
  if(NOT EXISTS ${_path})  # a system upgrade replaced it: measure again
    set(_stale TRUE)
  endif()
endforeach()
if(DTRAIN_STARTUP_ORDER AND DTRAIN_PROFILE STREQUAL "full" AND CMAKE_SYSTEM_NAME STREQUAL "Linux"
   AND NOT CMAKE_CROSSCOMPILING AND (_stale OR NOT "${DTRAIN_STARTUP_LIBRARIES_KEY}" STREQUAL "${_key}"))
  set(_dir ${CMAKE_BINARY_DIR}/startup-order)
  file(WRITE ${_dir}/probe.cpp "int main() { return 0; }\n")
  set(_probe_libraries ${TORCH_LIBRARIES})
  foreach(_target MPI::MPI_CXX gRPC::grpc++)
    if(TARGET ${_target})
      list(APPEND _probe_libraries ${_target})
    endif()
  endforeach()
  try_compile(_built ${_dir}/build SOURCES ${_dir}/probe.cpp
              LINK_LIBRARIES ${_probe_libraries}
              LINK_OPTIONS "LINKER:--no-as-needed"
              COPY_FILE ${_dir}/probe
              OUTPUT_VARIABLE _log)
  set(_libraries "")
  set(_why "the probe did not link")
  if(_built)
    # "  1234:	binding file A [0] to B [0]: normal symbol `name'": count the B's.
    set(_count [[s/.* to \(.*\) \[[0-9]*\]: normal symbol.*/\1/p]])
    execute_process(
      COMMAND sh -c "LD_DEBUG=bindings \"$0\" 2>&1 >/dev/null | sed -n '${_count}' | sort | uniq -c | sort -rn"
              ${_dir}/probe
      OUTPUT_VARIABLE _counts TIMEOUT 120)
    string(REGEX MATCHALL "[0-9]+ [^\n]+" _rows "${_counts}")
    foreach(_row IN LISTS _rows)
      if(_row MATCHES "^([0-9]+) (.+)$" AND CMAKE_MATCH_1 GREATER_EQUAL DTRAIN_STARTUP_MIN_BINDINGS)
        set(_path "${CMAKE_MATCH_2}")  # (not in the same if(): ${} is expanded before MATCHES runs)
        if(EXISTS "${_path}")
          list(APPEND _libraries ${_path})
        endif()
      endif()
    endforeach()
    set(_why "the probe reported no bindings (LD_DEBUG unsupported?)")
  endif()
  if(_libraries)
    list(LENGTH _libraries _n)
    message(STATUS "dtrain: start-up link order: the ${_n} libraries that receive at least "
                   "${DTRAIN_STARTUP_MIN_BINDINGS} symbol bindings are linked first")
  else()
    message(STATUS "dtrain: start-up link order: libraries keep their own order (${_why})")
  endif()
  set(DTRAIN_STARTUP_LIBRARIES "${_libraries}" CACHE INTERNAL "")
  set(DTRAIN_STARTUP_LIBRARIES_KEY "${_key}" CACHE INTERNAL "")
endif()

if(DTRAIN_STARTUP_ORDER AND DTRAIN_PROFILE STREQUAL "full" AND DTRAIN_STARTUP_LIBRARIES)
  # Link options come before the objects and libraries on the link line, so these are the first
  # entries of every executable's DT_NEEDED that links dtrain_core.
  target_link_options(dtrain_startup_order INTERFACE "LINKER:--push-state,--no-as-needed"
                      ${DTRAIN_STARTUP_LIBRARIES} "LINKER:--pop-state")
endif()
