// IDX files, raw and gzip (the reader picks by the magic bytes), through the file reader.
#include <cstdint>

#include "core/errors.h"
#include "data/idx.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto path = dtrain::fuzz::write("input.idx", data, size);
  try {
    dtrain::data::read_idx_header(path);
    dtrain::data::read_idx(path);
  } catch (const dtrain::Error&) {
  }
  return 0;
}
