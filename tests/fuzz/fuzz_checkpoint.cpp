// Checkpoint files, loaded into a small model and its optimizer.
#include <torch/nn/module.h>

#include <cstdint>

#include "core/checkpoint.h"
#include "core/errors.h"
#include "core/optimizers.h"
#include "core/run_config.h"
#include "fuzz_util.h"
#include "models/registry.h"

namespace {
dtrain::RunConfig small() {
  dtrain::RunConfig c;
  c.hidden_sizes = {4, 3};
  return c;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static dtrain::Model model = dtrain::models::build_model(small(), {784, 10});
  static auto optimizer =
      dtrain::make_optimizer(dtrain::OptimizerSettings::from(small()), model.module->parameters());
  const auto path = dtrain::fuzz::write("ckpt.pt", data, size);
  try {
    dtrain::read_checkpoint_meta(path);
    dtrain::load_checkpoint(path, *model.module, optimizer.get(), false);
  } catch (const dtrain::Error&) {
  }
  return 0;
}
