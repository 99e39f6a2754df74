// dtrain train: flags -> RunConfig -> data, model, GradientSync -> Trainer -> outputs/.
#include <spdlog/spdlog.h>
#include <torch/cuda.h>
#include <torch/nn/module.h>
#include <torch/utils.h>
#include <torch/version.h>

#include <chrono>
#include <sstream>

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

std::vector<int64_t> parse_sizes(const std::string& text) {
  std::vector<int64_t> sizes;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    try {
      size_t used = 0;
      const long long v = std::stoll(item, &used);
      if (used != item.size()) throw std::invalid_argument(item);
      sizes.push_back(v);
    } catch (const std::exception&) {
      throw ConfigError("--hidden-sizes: expected comma-separated positive integers like "
                        "300,100, got '" + text + "'");
    }
  }
  return sizes;
}

void add_train_flags(cxxopts::Options& o) {
  const RunConfig d;
  o.add_options()
      ("data-dir", "folder with the MNIST IDX files (raw or .gz, searched recursively)",
       cxxopts::value<std::string>())
      ("data-folder", "alias of --data-dir", cxxopts::value<std::string>())
      ("output-dir", "where checkpoints, metrics and the model go",
       cxxopts::value<std::string>()->default_value(d.output_dir))
      ("epochs", "epochs to train", cxxopts::value<std::string>()->default_value(std::to_string(d.epochs)))
      ("batch-size", "mini-batch size (per process)",
       cxxopts::value<std::string>()->default_value(std::to_string(d.batch_size)))
      ("learning-rate", "learning rate", cxxopts::value<std::string>()->default_value("0.01"))
      ("model", "model name from the registry", cxxopts::value<std::string>()->default_value(d.model))
      ("first-layer-neurons", "width of the first hidden layer",
       cxxopts::value<std::string>()->default_value("300"))
      ("second-layer-neurons", "width of the second hidden layer",
       cxxopts::value<std::string>()->default_value("100"))
      ("hidden-sizes", "all hidden widths, e.g. 512,256,128 (instead of the two flags above)",
       cxxopts::value<std::string>())
      ("activation", "relu, tanh or sigmoid", cxxopts::value<std::string>()->default_value(d.activation))
      ("optimizer", "sgd (with --momentum) or adam",
       cxxopts::value<std::string>()->default_value(d.optimizer))
      ("momentum", "SGD momentum", cxxopts::value<std::string>()->default_value("0.9"))
      ("weight-decay", "L2 weight decay", cxxopts::value<std::string>()->default_value("0"))
      ("seed", "seed for initialisation and shuffling",
       cxxopts::value<std::string>()->default_value(std::to_string(d.seed)))
      ("device", "auto, cpu or cuda", cxxopts::value<std::string>()->default_value(d.device))
      ("threads", "CPU threads per process (0: cores / local processes)",
       cxxopts::value<std::string>()->default_value("0"))
      ("checkpoint-every", "write a checkpoint every N epochs (0: never)",
       cxxopts::value<std::string>()->default_value(std::to_string(d.checkpoint_every)))
      ("resume-from", "checkpoint file, or folder (newest inside), to continue from",
       cxxopts::value<std::string>())
      ("distributed", "none; ring (data parallel under mpirun: Horovod-style allreduce); ps "
       "(parameter servers and workers from TF_CONFIG)",
       cxxopts::value<std::string>()->default_value(d.distributed))
      ("allreduce", "ring (ours) or mpi (the MPI library's MPI_Allreduce)",
       cxxopts::value<std::string>()->default_value(d.allreduce))
      ("fusion-threshold-mb", "gradient fusion buffer size in MiB (0: one buffer per tensor)",
       cxxopts::value<std::string>()->default_value("128"))
      ("compression", "none or fp16 (allreduce gradients in half precision)",
       cxxopts::value<std::string>()->default_value(d.compression))
      ("backward-passes-per-step", "local batches accumulated per allreduce and step",
       cxxopts::value<std::string>()->default_value("1"))
      ("stall-warning-seconds", "report ranks that have not reached a collective after this long",
       cxxopts::value<std::string>()->default_value("60"))
      ("stall-abort-seconds", "abort the job when a collective stalls this long",
       cxxopts::value<std::string>()->default_value("600"))
      ("ps-mode", "sync (average one gradient per worker per step) or async (apply on arrival)",
       cxxopts::value<std::string>()->default_value(d.ps_mode))
      ("connect-timeout", "seconds a worker waits for the parameter servers",
       cxxopts::value<std::string>()->default_value("120"))
      ("peer-timeout", "seconds after which a silent ps or worker is declared dead",
       cxxopts::value<std::string>()->default_value("30"))
      ("h,help", "show this help");
}

RunConfig config_from(const cxxopts::ParseResult& r) {
  RunConfig c;
  c.data_dir = data_dir_flag(r);
  if (c.data_dir.empty()) throw ConfigError("--data-dir (or --data-folder) is required");
  c.output_dir = r["output-dir"].as<std::string>();
  c.epochs = int_flag(r, "epochs");
  c.batch_size = int_flag(r, "batch-size");
  c.learning_rate = double_flag(r, "learning-rate");
  c.model = r["model"].as<std::string>();
  if (r.count("hidden-sizes")) {
    if (r.count("first-layer-neurons") || r.count("second-layer-neurons")) {
      throw ConfigError("--hidden-sizes replaces --first-layer-neurons/--second-layer-neurons; "
                        "give one or the other");
    }
    c.hidden_sizes = parse_sizes(r["hidden-sizes"].as<std::string>());
  } else {
    c.hidden_sizes = {int_flag(r, "first-layer-neurons"),
                      int_flag(r, "second-layer-neurons")};
  }
  c.activation = r["activation"].as<std::string>();
  c.optimizer = r["optimizer"].as<std::string>();
  c.momentum = double_flag(r, "momentum");
  c.weight_decay = double_flag(r, "weight-decay");
  const int64_t seed = int_flag(r, "seed");
  if (seed < 0) throw ConfigError("--seed: expected a non-negative integer, got " + std::to_string(seed));
  c.seed = static_cast<uint64_t>(seed);
  c.device = r["device"].as<std::string>();
  const int64_t threads = int_flag(r, "threads");
  if (threads < 0 || threads > 4096) throw ConfigError("--threads: expected 0 to 4096, got " + std::to_string(threads));
  c.threads = static_cast<int>(threads);
  c.checkpoint_every = int_flag(r, "checkpoint-every");
  if (r.count("resume-from")) c.resume_from = r["resume-from"].as<std::string>();
  c.distributed = r["distributed"].as<std::string>();
  c.allreduce = r["allreduce"].as<std::string>();
  c.fusion_threshold_mb = double_flag(r, "fusion-threshold-mb");
  c.compression = r["compression"].as<std::string>();
  c.backward_passes_per_step = int_flag(r, "backward-passes-per-step");
  c.stall_warning_seconds = double_flag(r, "stall-warning-seconds");
  c.stall_abort_seconds = double_flag(r, "stall-abort-seconds");
  c.ps_mode = r["ps-mode"].as<std::string>();
  c.connect_timeout_seconds = double_flag(r, "connect-timeout");
  c.peer_timeout_seconds = double_flag(r, "peer-timeout");
  c.validate();
  return c;
}

torch::Device pick_device(const std::string& requested) {
  const bool cuda = torch::cuda::is_available();
  if (requested == "cuda" && !cuda) {
    throw ConfigError("--device cuda: LibTorch sees no CUDA device (this LibTorch build " +
                      std::string(cuda ? "has" : "may lack") + " CUDA support)");
  }
  if (requested == "cuda" || (requested == "auto" && cuda)) {
    spdlog::warn("running on CUDA: dtrain's CUDA path is compiled in CI but not tested there "
                 "(no GPU on the CI machines)");
    return torch::Device(torch::kCUDA, 0);
  }
  return torch::Device(torch::kCPU);
}

}  // namespace

int train_command(int argc, char** argv) {
  cxxopts::Options options("dtrain train", "Train a model on MNIST.");
  add_train_flags(options);
  cxxopts::ParseResult r;
  if (!parse_or_help(options, argc, argv, r)) return 0;
  RunConfig config = config_from(r);

  if (auto code = distributed::serve_if_parameter_server(config)) return *code;
  const auto t0 = std::chrono::steady_clock::now();
  const torch::Device device = pick_device(config.device);
  auto sync = distributed::make_gradient_sync(config, device);
  if (config.distributed == "ps") {
    setup_logging(sync->describe().value("task", "worker"));
  } else if (sync->world_size() > 1) {
    setup_logging("rank " + std::to_string(sync->rank()) + "/" + std::to_string(sync->world_size()));
  }
  const int threads = configure_threads(config.threads, sync->local_size());
  if (sync->is_writer()) {
    spdlog::info("device: {}, threads per process: {}, strategy: {}, processes: {}", device.str(),
                 threads, sync->describe().dump(), sync->world_size());
  }
  torch::manual_seed(config.seed);

  data::MnistDataset train_set(config.data_dir, data::Split::kTrain);
  data::MnistDataset test_set(config.data_dir, data::Split::kTest);
  data::ShuffleSampler train_sampler({train_set.size(), config.batch_size, config.seed,
                                      sync->rank(), sync->world_size(), true});
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
