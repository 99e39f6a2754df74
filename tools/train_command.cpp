// dtrain train: flags -> RunConfig -> data, model, GradientSync -> Trainer -> outputs/.
#include <spdlog/spdlog.h>
#include <torch/cuda.h>
#include <torch/nn/module.h>
#include <torch/utils.h>
#include <torch/version.h>

#include <chrono>
#include <iostream>
#include <sstream>

#include "core/option_table.h"

#include "core/core.h"
#include "data/data.h"
#include "distributed/distributed.h"
#include "dtrain/config.h"
#include "models/models.h"
#include "tools/cli_util.h"
#include "tools/commands.h"

namespace dtrain::cli {
namespace fs = std::filesystem;

namespace {

torch::Device pick_device(const std::string& requested) {
  const bool cuda = torch::cuda::is_available();
  if (requested == "cuda" && !cuda) {
    throw ConfigError("--device cuda: LibTorch sees no CUDA device (this LibTorch build " +
                      std::string(cuda ? "has" : "may lack") + " CUDA support)");
  }
  if (requested == "cuda" || (requested == "auto" && cuda)) {
    spdlog::warn(
        "running on CUDA: dtrain's CUDA path is compiled in CI but not tested there "
        "(no GPU on the CI machines)");
    return torch::Device(torch::kCUDA, 0);
  }
  return torch::Device(torch::kCPU);
}

}  // namespace

int train_command(int argc, char** argv) {
  cxxopts::Options options("dtrain train", "Train a model on MNIST.");
  add_option_flags(options, run_options());
  options.add_options()("flags-markdown", "print this flag table as Markdown (for README.md)")(
      "h,help", "show this help");
  cxxopts::ParseResult r;
  if (!parse_or_help(options, argc, argv, r)) return 0;
  if (r.count("flags-markdown")) {
    std::cout << options_markdown(run_options());
    return 0;
  }
  RunConfig config = run_config_from_flags(r);

  if (auto code = distributed::serve_if_parameter_server(config)) return *code;
  const auto t0 = std::chrono::steady_clock::now();
  const torch::Device device = pick_device(config.device);
  auto sync = distributed::make_gradient_sync(config, device);
  if (config.distributed == "ps") {
    setup_logging(sync->describe().value("task", "worker"));
  } else if (sync->world_size() > 1) {
    setup_logging("rank " + std::to_string(sync->rank()) + "/" +
                  std::to_string(sync->world_size()));
  }
  const int threads = configure_threads(config.threads, sync->local_size());
  if (sync->is_writer()) {
    spdlog::info("device: {}, threads per process: {}, strategy: {}, processes: {}", device.str(),
                 threads, sync->describe().dump(), sync->world_size());
  }
  torch::manual_seed(config.seed);

  data::MnistDataset train_set(config.data_dir, data::Split::kTrain);
  data::MnistDataset test_set(config.data_dir, data::Split::kTest);
  data::ShuffleSampler train_sampler(
      {train_set.size(), config.batch_size, config.seed, sync->rank(), sync->world_size(), true});
  data::ShardSampler test_sampler(test_set.size(), 1000, sync->rank(), sync->world_size());

  Model model = models::build_model(config, {train_set.features(), 10});
  if (sync->is_writer()) {
    std::ostringstream arch;
    model.module->pretty_print(arch);
    spdlog::info("model: {}; {} training and {} test samples", arch.str(), train_set.size(),
                 test_set.size());
  }
  Trainer trainer(config, model, device, sync.get());
  const fs::path out(config.output_dir);
  if (sync->is_writer()) {
    trainer.add_sink(std::make_unique<ConsoleSink>(config.epochs));
    trainer.add_sink(std::make_unique<JsonlSink>(out / "metrics.jsonl"));
  }
  if (!config.resume_from.empty()) trainer.resume(config.resume_from);

  const auto history = trainer.fit(train_set, train_sampler, test_set, test_sampler);
  const double total = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  if (sync->is_writer()) {
    nlohmann::json metrics = history.empty() ? nlohmann::json::object() : history.back().to_json();
    const double final_acc = history.empty() ? 0.0 : history.back().validation_acc;
    metrics["final_acc"] = final_acc;
    models::save_model_dir(out / "model", trainer.model(), config, metrics);
    models::export_onnx(trainer.model(), config, metrics, out / "model" / "model.onnx");
    nlohmann::json run = {
        {"config", config.to_json()},
        {"versions",
         {{"dtrain", DTRAIN_VERSION}, {"libtorch", TORCH_VERSION}, {"compiler", __VERSION__}}},
        {"device", device.str()},
        {"threads_per_process", threads},
        {"distribution", sync->describe()},
        {"epochs_completed", trainer.epochs_done()},
        {"final_acc", final_acc},
        {"total_seconds", total},
        {"history", nlohmann::json::array()}};
    for (const auto& m : history) run["history"].push_back(m.to_json());
    write_file_atomic(out / "run.json", run.dump(2) + "\n");
    spdlog::info("done in {:.1f} s: validation accuracy {:.4f}; model in {}", total, final_acc,
                 (out / "model").string());
  }
  sync->finish();
  return 0;
}

}  // namespace dtrain::cli
