// model.json of a model folder, beside valid weights of a small model.
#include <cstdint>

#include "core/errors.h"
#include "core/run_config.h"
#include "fuzz_util.h"
#include "models/model_io.h"
#include "models/registry.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  dtrain::RunConfig config;
  config.hidden_sizes = {4, 3};
  const dtrain::Model model = dtrain::models::build_model(config, {784, 10});
  dtrain::models::save_model_dir(dtrain::fuzz::scratch() / "model", model, config,
                                 nlohmann::json::object());
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  dtrain::fuzz::write("model/model.json", data, size);
  try {
    dtrain::models::load_model(dtrain::fuzz::scratch() / "model");
  } catch (const dtrain::Error&) {
  }
  return 0;
}
