// dtrain eval: accuracy of a trained model (or checkpoint) on the MNIST test set.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <iostream>

#include "core/core.h"
#include "data/data.h"
#include "models/models.h"
#include "tools/cli_util.h"
#include "tools/commands.h"
#include "tools/workspace_flags.h"

namespace dtrain::cli {

int eval_command(int argc, char** argv) {
  cxxopts::Options options("dtrain eval", "Evaluate a trained model on the MNIST test set.");
  options.add_options()(
      "model",
      "model folder (outputs/model), model.pt, a checkpoint file/folder, or a registered "
      "model: models:/NAME/VERSION, models:/NAME@ALIAS",
      cxxopts::value<std::string>())("data-dir", "folder with the MNIST files",
                                     cxxopts::value<std::string>())(
      "data-folder", "alias of --data-dir", cxxopts::value<std::string>())(
      "batch-size", "evaluation batch size", cxxopts::value<std::string>()->default_value("1000"))(
      "threads", "CPU threads (0: all cores)", cxxopts::value<std::string>()->default_value("0"))(
      "h,help", "show this help");
  add_workspace_flag(options);
  cxxopts::ParseResult r;
  if (!parse_or_help(options, argc, argv, r)) return 0;
  if (!r.count("model")) throw ConfigError("--model is required");
  const std::string data_dir = data_dir_flag(r);
  if (data_dir.empty()) throw ConfigError("--data-dir (or --data-folder) is required");
  const int64_t batch = int_flag(r, "batch-size");
  if (batch <= 0) throw ConfigError("--batch-size: expected a positive integer");
  configure_threads(static_cast<int>(std::clamp<int64_t>(int_flag(r, "threads"), 0, 4096)));

  const ModelPath model_path(r["model"].as<std::string>(), r);
  models::LoadedModel loaded = models::load_model(model_path.path());
  data::MnistDataset test_set(data_dir, data::Split::kTest);
  if (test_set.features() != loaded.model.spec.value("in_features", int64_t{784})) {
    throw DataError(data_dir + ": images have " + std::to_string(test_set.features()) +
                    " pixels but the model expects " + loaded.model.spec.dump());
  }
  RunConfig config = loaded.config;
  Trainer evaluator(config, loaded.model, torch::Device(torch::kCPU));
  data::ShardSampler sampler(test_set.size(), batch);
  const EvalResult result = evaluator.evaluate(test_set, sampler);
  std::cout << nlohmann::json({{"model", r["model"].as<std::string>()},
                               {"samples", result.samples},
                               {"loss", result.loss},
                               {"accuracy", result.accuracy}})
                   .dump()
            << std::endl;
  return 0;
}

}  // namespace dtrain::cli
