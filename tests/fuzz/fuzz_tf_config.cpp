// TF_CONFIG text.
#include <cstdint>
#include <string>

#include "core/errors.h"
#include "distributed/tf_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const auto c = dtrain::distributed::TfConfig::parse(
        std::string(reinterpret_cast<const char*>(data), size), "fuzz");
    c.address();
    c.require_parameter_server_cluster();
  } catch (const dtrain::Error&) {
  }
  return 0;
}
