// dtrain train: flags -> RunConfig -> data, model, GradientSync -> Trainer -> outputs/.
#include <spdlog/spdlog.h>
#include <torch/cuda.h>
#include <torch/nn/module.h>
#include <torch/utils.h>
#include <torch/version.h>

#include <chrono>
#include <future>
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
#include "tools/sinks/curves.h"
#include "tools/sinks/progress.h"
#include "tools/sinks/tensorboard.h"
#include "tools/sinks/tracking_sink.h"
#include "tools/tracking/model_registry.h"
#include "tools/tracking/run_tracker.h"

namespace dtrain::cli {
namespace fs = std::filesystem;

namespace {

double best_accuracy(const std::vector<EpochMetrics>& history) {
  double best = 0;
  for (const auto& m : history) best = std::max(best, m.validation_acc);
  return best;
}

/// The process's device (core/device.h), logged with where the choice came from.
torch::Device pick_device(const std::string& requested) {
  const LocalPlacement local = local_placement_from_environment();
  const int gpus = torch::cuda::is_available() ? static_cast<int>(torch::cuda::device_count()) : 0;
  const torch::Device device = choose_device(requested, gpus, local);
  if (device.is_cuda()) {
    spdlog::info("local rank {} of {} on this host uses {} ({} visible GPU{})", local.rank,
                 local.size, device.str(), gpus, gpus == 1 ? "" : "s");
  }
  return device;
}

/// About what one checkpoint of `model` takes: the weights and up to two optimizer moments, as
/// float32, plus metadata.
uint64_t checkpoint_bytes_estimate(const Model& model) {
  uint64_t bytes = 0;
  for (const auto& p : model.module->parameters()) {
    bytes += static_cast<uint64_t>(p.numel()) * static_cast<uint64_t>(p.element_size());
  }
  return 3 * bytes + (uint64_t{1} << 20);
}

/// outputs/model (weights, model.json, model.onnx), run.json and curves.png.
void write_results(const RunConfig& config, Trainer& trainer,
                   const std::vector<EpochMetrics>& history, const torch::Device& device,
                   int threads, const GradientSync& sync, double total, const std::string& run_id) {
  const fs::path out(config.output_dir);
  // The plot (fonts, drawing, PNG compression: ~40 ms) is drawn beside the model's files.
  std::future<void> curves = std::async(std::launch::async, [&] {
    sinks::plot_png(out / "curves.png", sinks::training_curves(history));
  });
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
      {"distribution", sync.describe()},
      {"epochs_completed", trainer.epochs_done()},
      {"final_acc", final_acc},
      {"total_seconds", total},
      {"run_id", run_id},
      {"history", nlohmann::json::array()}};
  for (const auto& m : history) run["history"].push_back(m.to_json());
  if (config.target_accuracy > 0) {
    // MLPerf-style time to train; null when the epoch limit came first.
    const TargetOutcome target = target_outcome(history, config.target_accuracy);
    run["target_accuracy"] = config.target_accuracy;
    run["target_reached"] = target.reached;
    run["epochs_to_target"] = target.reached ? nlohmann::json(target.epochs) : nullptr;
    run["time_to_target_seconds"] = target.reached ? nlohmann::json(target.seconds) : nullptr;
    if (target.reached) {
      spdlog::info("time to {} validation accuracy: {:.2f} s ({} epochs, training + evaluation)",
                   config.target_accuracy, target.seconds, target.epochs);
    } else {
      spdlog::warn("--target-accuracy {} not reached in {} epochs (best {:.4f})",
                   config.target_accuracy, history.size(), best_accuracy(history));
    }
  }
  write_file_atomic(out / "run.json", run.dump(2) + "\n");
  curves.get();
  spdlog::info("done in {:.1f} s: validation accuracy {:.4f}; model in {}", total, final_acc,
               (out / "model").string());
}

/// Registers outputs/model as the next version of --register-model, linked to the run.
void register_final_model(const RunConfig& config, tracking::RunTracker& tracker) {
  tracking::ModelRegistry registry(tracker.workspace());
  tracking::RegisterOptions opts;
  opts.name = config.register_model;
  opts.run_id = tracker.run_id();
  opts.source = "run " + tracker.run_id() + ": model";
  const tracking::RunRecord run = tracker.workspace().get_run(tracker.run_id());
  opts.run_metrics = run.metrics;
  const int64_t version = registry.register_model(fs::path(config.output_dir) / "model", opts);
  spdlog::info("registered the model as {} version {} (models:/{}/{})", opts.name, version,
               opts.name, version);
}

/// The run's params as the workspace records them: run.json's config, values as text.
std::map<std::string, std::string> config_params(const RunConfig& config) {
  std::map<std::string, std::string> params;
  const nlohmann::json config_json = config.to_json();
  for (const auto& [key, value] : config_json.items()) {
    if (key == "tag") continue;  // recorded as tags
    params[key] = value.is_string() ? value.get<std::string>() : value.dump();
  }
  return params;
}

std::map<std::string, std::string> config_tags(const RunConfig& config) {
  std::map<std::string, std::string> tags;
  for (const auto& t : config.tags) {
    const size_t eq = t.find('=');
    tags[t.substr(0, eq)] = t.substr(eq + 1);
  }
  return tags;
}

/// --resume-from auto: the newest checkpoint in `dir` that loads; a corrupt or unusable one is
/// reported loudly and the one before it tried. None at all: a fresh start (said). Checkpoints
/// that exist but none loads: an error, rather than training over them from scratch.
CheckpointMeta resume_auto(Trainer& trainer, const fs::path& dir, bool writer) {
  const auto candidates = list_checkpoints(dir);
  if (candidates.empty()) {
    if (writer)
      spdlog::info("--resume-from auto: no checkpoint in {}; starting fresh", dir.string());
    return {};
  }
  std::string problems;
  for (const auto& path : candidates) {
    try {
      return trainer.resume(path);
    } catch (const CheckpointError& e) {
      spdlog::warn("--resume-from auto: cannot resume from {}: {}; trying the previous checkpoint",
                   path.string(), e.what());
      problems += "\n  " + std::string(e.what());
    }
  }
  throw CheckpointError("--resume-from auto: none of the " + std::to_string(candidates.size()) +
                        " checkpoints in " + dir.string() + " can be resumed:" + problems);
}

/// The tracked run a checkpoint belongs to ("" if none or not a run id).
std::string resumed_run_id(const CheckpointMeta& meta) {
  if (!meta.extra.is_object() || !meta.extra.contains("run_id") ||
      !meta.extra["run_id"].is_string()) {
    return "";
  }
  const std::string id = meta.extra["run_id"].get<std::string>();
  const bool hex = id.size() == 32 && id.find_first_not_of("0123456789abcdef") == std::string::npos;
  if (!hex) spdlog::warn("checkpoint names run '{}', not a run id; starting a new run", id);
  return hex ? id : "";
}

/// Closes the tracked run with the outcome of training when it ends early (an exception).
class RunOutcome {
 public:
  explicit RunOutcome(tracking::RunTracker* tracker) : tracker_(tracker) {}
  ~RunOutcome() {
    if (tracker_ == nullptr || closed_) return;
    try {
      tracker_->finish("failed", "ended without a result");
    } catch (...) {
    }
  }
  /// Records how training ended from the exception in flight, then lets it go on.
  void fail(const std::exception& e) {
    if (tracker_ == nullptr || closed_) return;
    closed_ = true;
    const bool killed = dynamic_cast<const Interrupted*>(&e) != nullptr;
    try {
      tracker_->finish(killed ? "killed" : "failed", e.what());
      spdlog::info("tracking: run {} recorded as {}", tracker_->run_id(),
                   killed ? "killed" : "failed");
    } catch (const std::exception& inner) {
      spdlog::warn("tracking: could not record the run's end: {}", inner.what());
    }
  }
  void complete() {
    if (tracker_ == nullptr || closed_) return;
    closed_ = true;
    tracker_->finish("completed");
  }

 private:
  tracking::RunTracker* tracker_;
  bool closed_ = false;
};

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
  install_stop_signals();
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
  // The workspace is opened and checked before any data is read or epoch runs.
  std::unique_ptr<tracking::RunTracker> tracker;
  if (sync->is_writer() && config.workspace != "none") {
    tracker = std::make_unique<tracking::RunTracker>(config.workspace);
  }

  data::check_mnist_splits(config.data_dir);
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
  const fs::path out(config.output_dir);
  if (sync->is_writer()) check_output_folder(out, checkpoint_bytes_estimate(model), "--output-dir");
  Trainer trainer(config, model, device, sync.get());
  if (sync->is_writer()) {
    if (const int n = remove_stale_temp_files(out)) {
      spdlog::info("removed {} stale temporary file{} (*.tmp.*) left in {} by an interrupted run",
                   n, n == 1 ? "" : "s", out.string());
    }
  }
  CheckpointMeta resumed;
  if (config.resume_from == "auto") {
    resumed = resume_auto(trainer, out / "checkpoints", sync->is_writer());
  } else if (!config.resume_from.empty()) {
    resumed = trainer.resume(config.resume_from);
  }
  RunOutcome outcome(tracker.get());
  if (tracker) {
    tracking::NewRun run;
    run.experiment = config.experiment;
    run.name = config.run_name;
    run.world_size = sync->world_size();
    run.strategy = config.distributed;  // none, ring or ps, as the user names it
    run.output_dir = fs::absolute(out).string();
    run.params = config_params(config);
    run.tags = config_tags(config);
    tracker->start(run, resumed_run_id(resumed), trainer.epochs_done());
    trainer.set_checkpoint_extra({{"run_id", tracker->run_id()}});
  }
  if (sync->is_writer()) {
    if (sinks::progress_wanted(config.progress)) {
      trainer.add_sink(std::make_unique<sinks::ProgressSink>(config.epochs));
    }
    trainer.add_sink(std::make_unique<JsonlSink>(out / "metrics.jsonl"));
    trainer.add_sink(
        std::make_unique<sinks::TensorBoardSink>(out / "tensorboard", config.log_every_steps));
    if (tracker) {
      trainer.add_sink(std::make_unique<sinks::TrackingSink>(*tracker, config.log_every_steps));
    }
    // Last: an epoch's line appears once everything above has recorded the epoch.
    trainer.add_sink(std::make_unique<ConsoleSink>(config.epochs));
  }

  std::vector<EpochMetrics> history;
  try {
    history = trainer.fit(train_set, train_sampler, test_set, test_sampler);
  } catch (const std::exception& e) {
    outcome.fail(e);
    if (dynamic_cast<const Interrupted*>(&e) != nullptr && sync->world_size() > 1) {
      // After an agreed stop every process leaves together, once the writer has recorded it;
      // then, as after training, the strategy is told (a ps cluster's chief shuts it down).
      if (sync->agrees_on_step_control()) sync->sum({0.0});
      try {
        sync->finish();
      } catch (const std::exception& inner) {
        spdlog::warn("after the stop: {}", inner.what());
      }
    }
    throw;
  }
  const double total = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  if (sync->is_writer()) {
    try {
      write_results(config, trainer, history, device, threads, *sync, total,
                    tracker ? tracker->run_id() : "");
      if (tracker) {
        const auto [files, bytes] = tracker->upload_outputs(out, config.track_checkpoints);
        if (!config.register_model.empty()) register_final_model(config, *tracker);
        outcome.complete();
        spdlog::info("tracking: {} files ({:.1f} MB) of {} stored in {}; see: dtrain runs show {}",
                     files, bytes / 1e6, out.string(), config.workspace,
                     tracker->run_id().substr(0, 8));
      }
    } catch (const std::exception& e) {
      outcome.fail(e);
      throw;
    }
  }
  sync->finish();
  return 0;
}

}  // namespace dtrain::cli
