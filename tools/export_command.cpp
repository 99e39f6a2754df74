// dtrain export --checkpoint PATH --onnx PATH: any checkpoint or model folder to ONNX.
#include <spdlog/spdlog.h>

#include "core/errors.h"
#include "models/models.h"
#include "tools/cli_util.h"
#include "tools/commands.h"
#include "tools/workspace_flags.h"

namespace dtrain::cli {

int export_command(int argc, char** argv) {
  cxxopts::Options options("dtrain export", "Export a checkpoint or trained model to ONNX.");
  options.add_options()("checkpoint",
                        "checkpoint file, checkpoints folder (newest), model folder, model.pt, or "
                        "models:/NAME/VERSION, models:/NAME@ALIAS",
                        cxxopts::value<std::string>())(
      "onnx", "where to write the .onnx file", cxxopts::value<std::string>())("h,help",
                                                                              "show this help");
  add_workspace_flag(options);
  cxxopts::ParseResult r;
  if (!parse_or_help(options, argc, argv, r)) return 0;
  if (!r.count("checkpoint")) throw ConfigError("--checkpoint is required");
  if (!r.count("onnx")) throw ConfigError("--onnx is required");
  const ModelPath model_path(r["checkpoint"].as<std::string>(), r);
  models::LoadedModel loaded = models::load_model(model_path.path());
  const std::string out = r["onnx"].as<std::string>();
  models::export_onnx(loaded.model, loaded.config, loaded.metrics, out);
  spdlog::info("wrote {} (opset {})", out, models::kOnnxOpset);
  return 0;
}

}  // namespace dtrain::cli
