#include "core/trainer.h"

#include <spdlog/spdlog.h>
#include <torch/nn/functional/loss.h>
#include <torch/nn/module.h>

#include <chrono>
#include <cmath>
#include <tuple>

#include "core/blas.h"
#include "core/checkpoint.h"
#include "core/errors.h"
#include "core/sharded_step.h"
#include "core/stop_signal.h"
#include "core/thread_team.h"

namespace dtrain {

namespace {

using Clock = std::chrono::steady_clock;

NamedTensors named_parameters(torch::nn::Module& module) {
  NamedTensors out;
  for (auto& p : module.named_parameters(true)) out.emplace_back(p.key(), p.value());
  return out;
}

}  // namespace

Trainer::Trainer(RunConfig config, Model model, torch::Device device, GradientSync* sync)
    : config_(std::move(config)),
      model_(std::move(model)),
      device_(device),
      sync_(sync != nullptr ? sync : &default_sync_) {
  config_.validate();
  model_.module->to(device_);
  optimizer_ = make_optimizer(OptimizerSettings::from(config_), model_.module->parameters());
  if (model_.train_step) {
    // On the CPU every step runs on a team of compute_threads() threads (core/sharded_step.h),
    // each running single-threaded GEMMs.
    const int shards = device_.is_cpu() ? compute_threads() : 1;
    if (shards > 1) set_blas_threads(1);
    step_ = std::make_unique<ShardedStep>(model_, shards);
    optimizer_->set_team(step_->team());
  }
}

Trainer::~Trainer() = default;

void Trainer::add_sink(std::unique_ptr<MetricsSink> sink) { sinks_.push_back(std::move(sink)); }

CheckpointMeta Trainer::resume(const std::filesystem::path& checkpoint) {
  const auto path = resolve_checkpoint(checkpoint);
  const CheckpointMeta meta = read_checkpoint_meta(path);
  if (meta.model != model_.spec) {
    throw CheckpointError(path.string() + ": checkpoint is of model " + meta.model.dump() +
                          " but this run builds " + model_.spec.dump());
  }
  if (meta.optimizer != config_.optimizer) {
    throw CheckpointError(path.string() + ": checkpoint holds '" + meta.optimizer +
                          "' optimizer state but this run uses --optimizer " + config_.optimizer);
  }
  load_checkpoint(path, *model_.module, optimizer_.get(), /*restore_rng=*/true);
  epochs_done_ = meta.epoch;
  history_ = meta.history;
  if (static_cast<int64_t>(history_.size()) > epochs_done_) history_.resize(epochs_done_);
  resume_position_ = meta.partial_epoch;
  if (!resume_position_.is_null()) check_position(path, resume_position_);
  if (is_writer()) {
    if (resume_position_.is_null()) {
      spdlog::info("resumed from {} after epoch {}", path.string(), epochs_done_);
    } else {
      spdlog::info("resumed from {} in epoch {}, after step {} of it", path.string(),
                   epochs_done_ + 1, resume_position_["steps"].get<int64_t>());
    }
  }
  return meta;
}

void Trainer::check_position(const std::filesystem::path& path, const nlohmann::json& p) const {
  const auto field = [&](const char* key) {
    if (!p.contains(key) || !p[key].is_number_integer() || p[key].get<int64_t>() < 0) {
      throw CheckpointError(path.string() + ": partial_epoch." + key +
                            " is missing or not a non-negative integer");
    }
    return p[key].get<int64_t>();
  };
  for (const char* key : {"loss_sum", "sync_seconds", "elapsed_seconds"}) {
    const bool ok = p.contains(key) && p[key].is_number() && std::isfinite(p[key].get<double>()) &&
                    p[key].get<double>() >= 0 && p[key].get<double>() <= 1e12;
    if (!ok) {
      throw CheckpointError(path.string() + ": partial_epoch." + key +
                            " is missing or not a number in [0, 1e12]");
    }
  }
  for (const char* key : {"correct", "samples", "skipped"}) field(key);
  if (field("epoch") != epochs_done_ + 1 || field("batches_done") < 1 || field("steps") < 1) {
    throw CheckpointError(path.string() + ": partial_epoch does not follow epoch " +
                          std::to_string(epochs_done_) + ": " + p.dump());
  }
  // The position counts this run's batches: the same world size and batch layout are needed.
  const int64_t world = field("world_size"), batch = field("batch_size");
  const int64_t passes = field("backward_passes_per_step");
  if (world != sync_->world_size() || batch != config_.batch_size ||
      passes != sync_->backward_passes_per_step()) {
    throw CheckpointError(
        path.string() + ": a mid-epoch checkpoint of " + std::to_string(world) +
        " process(es) at --batch-size " + std::to_string(batch) +
        " and --backward-passes-per-step " + std::to_string(passes) +
        " resumes only with the same (this run: " + std::to_string(sync_->world_size()) + ", " +
        std::to_string(config_.batch_size) + ", " +
        std::to_string(sync_->backward_passes_per_step()) +
        "); resume from an epoch checkpoint (ckpt-epoch-NNNNNN.pt) to change them");
  }
}

double Trainer::learning_rate_at(int64_t global_step, int64_t steps_per_epoch) const {
  const double base = config_.learning_rate;
  const double k = static_cast<double>(sync_->world_size()) *
                   static_cast<double>(sync_->backward_passes_per_step());
  double peak = base;
  if (config_.lr_scaling == "linear") peak = base * k;
  if (config_.lr_scaling == "sqrt") peak = base * std::sqrt(k);
  const double ramp_steps = config_.warmup_epochs * static_cast<double>(steps_per_epoch);
  if (ramp_steps <= 0 || static_cast<double>(global_step) >= ramp_steps) return peak;
  return base + (peak - base) * static_cast<double>(global_step) / ramp_steps;
}

bool Trainer::mid_epoch_checkpoint_due(int64_t global_step) const {
  if (config_.checkpoint_every_steps > 0 && global_step % config_.checkpoint_every_steps == 0) {
    return true;
  }
  return config_.checkpoint_every_minutes > 0 &&
         std::chrono::duration<double>(Clock::now() - last_checkpoint_).count() >=
             config_.checkpoint_every_minutes * 60;
}

std::filesystem::path Trainer::save_checkpoint(const nlohmann::json& partial_epoch) const {
  CheckpointMeta meta;
  meta.epoch = epochs_done_;
  meta.config = config_.to_json();
  meta.model = model_.spec;
  meta.optimizer = config_.optimizer;
  meta.history = history_;
  meta.extra = checkpoint_extra_;
  meta.partial_epoch = partial_epoch;
  const int64_t steps = partial_epoch.is_null() ? 0 : partial_epoch["steps"].get<int64_t>();
  const auto dir = std::filesystem::path(config_.output_dir) / "checkpoints";
  const auto path = dir / checkpoint_file_name(epochs_done_, steps);
  dtrain::save_checkpoint(path, *model_.module, optimizer_.get(), meta);
  // Mid-epoch checkpoints are superseded by the next epoch checkpoint; keep the two newest.
  int kept = 0;
  bool epoch_checkpoint_seen = false;
  std::error_code ec;
  for (const auto& f : find_checkpoints(dir)) {
    if (f.steps == 0) {
      epoch_checkpoint_seen = true;
    } else if (epoch_checkpoint_seen || ++kept > 2) {
      std::filesystem::remove(f.path, ec);
    }
  }
  return path;
}

void Trainer::report_step(const torch::Tensor& batch_loss, const torch::Tensor& loss_sum,
                          int64_t samples, int64_t epoch, int64_t step, int64_t steps_in_epoch,
                          int64_t global_step, double elapsed) {
  std::vector<MetricsSink*> wanting;
  for (auto& sink : sinks_) {
    if (sink->wants_step(global_step)) wanting.push_back(sink.get());
  }
  if (wanting.empty()) return;
  StepProgress p;
  p.epoch = epoch;
  p.step = step;
  p.steps_in_epoch = steps_in_epoch;
  p.global_step = global_step;
  p.samples = samples;
  p.batch_loss = batch_loss.detach().item<double>();
  p.running_loss = samples > 0 ? loss_sum.item<double>() / static_cast<double>(samples) : 0;
  p.elapsed_seconds = elapsed;
  for (auto* sink : wanting) sink->on_step(p);
}

EvalResult Trainer::evaluate(const BatchSource& data, const Sampler& sampler) {
  torch::NoGradGuard no_grad;
  model_.module->eval();
  torch::Tensor loss_sum =
      torch::zeros({}, torch::TensorOptions().dtype(torch::kDouble).device(device_));
  torch::Tensor correct =
      torch::zeros({}, torch::TensorOptions().dtype(torch::kLong).device(device_));
  int64_t samples = 0;
  for (const auto& indices : sampler.batches(0)) {
    Batch b = data.get(indices, device_);
    auto logits = step_ ? step_->forward(b.inputs) : model_.forward(b.inputs);
    loss_sum += torch::nn::functional::cross_entropy(
                    logits, b.targets,
                    torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum))
                    .to(torch::kDouble);
    correct += logits.argmax(1).eq(b.targets).sum();
    samples += b.targets.size(0);
  }
  auto totals = sync_->sum({loss_sum.item<double>(), static_cast<double>(correct.item<int64_t>()),
                            static_cast<double>(samples)});
  EvalResult r;
  r.samples = static_cast<int64_t>(totals[2]);
  if (r.samples > 0) {
    r.loss = totals[0] / totals[2];
    r.accuracy = totals[1] / totals[2];
  }
  return r;
}

std::vector<EpochMetrics> Trainer::fit(const BatchSource& train, const Sampler& train_sampler,
                                       const BatchSource& validation,
                                       const Sampler& validation_sampler) {
  const NamedTensors params = named_parameters(*model_.module);
  nlohmann::json shared = config_.shared_json();
  shared["model"] = model_.spec;
  shared["resumed_after_epoch"] = epochs_done_;
  for (const auto& [name, p] : params) shared["parameters"][name] = p.sizes().vec();
  sync_->check_consistent(shared);
  sync_->broadcast_state(params, *optimizer_);
  sync_->place_gradients(params);
  NamedTensors grads(params.size());
  const int64_t accumulate = sync_->backward_passes_per_step();
  int64_t global_step = 0;
  for (const auto& m : history_) global_step += m.steps;
  const bool observed = is_writer() && !sinks_.empty();
  last_checkpoint_ = Clock::now();
  if (config_.target_accuracy > 0) {
    const TargetOutcome target = target_outcome(history_, config_.target_accuracy);
    if (target.reached) {
      if (is_writer()) {
        spdlog::info("--target-accuracy {} was reached in epoch {} already: nothing to train",
                     config_.target_accuracy, target.epochs);
      }
      return history_;
    }
  }
  double rate = config_.learning_rate;

  for (int64_t epoch = epochs_done_ + 1; epoch <= config_.epochs; ++epoch) {
    auto start = Clock::now();
    model_.module->train();
    auto opts = torch::TensorOptions().device(device_);
    torch::Tensor loss_sum = torch::zeros({}, opts.dtype(torch::kDouble));
    torch::Tensor correct = torch::zeros({}, opts.dtype(torch::kLong));
    int64_t samples = 0, steps = 0, skipped = 0;
    double sync_seconds = 0;

    const std::vector<torch::Tensor> batches = train_sampler.batches(epoch);
    const auto steps_in_epoch = static_cast<int64_t>(
        (batches.size() + static_cast<size_t>(accumulate) - 1) / static_cast<size_t>(accumulate));
    size_t first_batch = 0;
    if (!resume_position_.is_null()) {
      // Continue a mid-epoch checkpoint: its position, and its partial sums (which cover every
      // process when the strategy agreed on the checkpoint) on the writer.
      const nlohmann::json& p = resume_position_;
      first_batch = p["batches_done"].get<size_t>();
      if (first_batch > batches.size()) {
        throw CheckpointError("the mid-epoch checkpoint resumed from is at batch " +
                              std::to_string(first_batch) + " of epoch " + std::to_string(epoch) +
                              ", which has " + std::to_string(batches.size()) + " batches here");
      }
      steps = p["steps"].get<int64_t>();
      skipped = p["skipped"].get<int64_t>();
      sync_seconds = p["sync_seconds"].get<double>();
      start -= std::chrono::duration_cast<Clock::duration>(
          std::chrono::duration<double>(p["elapsed_seconds"].get<double>()));
      global_step += steps;
      if (is_writer()) {
        loss_sum.fill_(p["loss_sum"].get<double>());
        correct.fill_(p["correct"].get<int64_t>());
        samples = p["samples"].get<int64_t>();
      }
      resume_position_ = nullptr;
    }
    if (observed) {
      for (auto& sink : sinks_) sink->on_epoch_begin(epoch, steps_in_epoch);
    }
    for (size_t i = first_batch; i < batches.size(); ++i) {
      // With K backward passes per step, gradients of K batches accumulate (each loss / K, so
      // the step sees their average) before one synchronize() and optimizer step.
      const bool group_start = i % static_cast<size_t>(accumulate) == 0;
      const bool group_end =
          (i + 1) % static_cast<size_t>(accumulate) == 0 || i + 1 == batches.size();
      // The CPU step converts stored (uint8) inputs on the threads that use them.
      Batch b =
          step_ && device_.is_cpu() ? train.get_stored(batches[i]) : train.get(batches[i], device_);
      torch::Tensor loss, batch_correct;
      const auto schedule_rate = [&] {
        const double scheduled = learning_rate_at(global_step, steps_in_epoch);
        if (scheduled != rate) optimizer_->set_learning_rate(rate = scheduled);
      };
      // One process: the optimizer steps inside the last backward pass of a step, each thread on
      // the rows whose gradients it has just written, while they are in its cache.
      MemberStep step_within;
      if (step_ && group_end && sync_->leaves_gradients_alone()) {
        schedule_rate();
        step_within = optimizer_->begin_member_step();
      }
      if (step_) {
        // Hand-written backward: no autograd graph, gradients overwritten at a group's start.
        std::tie(loss, batch_correct) =
            step_->run(b, 1.0 / static_cast<double>(accumulate), !group_start, step_within);
      } else {
        if (group_start) optimizer_->zero_grad();
        const torch::Tensor logits = model_.forward(b.inputs);
        loss = torch::nn::functional::cross_entropy(logits, b.targets);
        (accumulate > 1 ? loss / static_cast<double>(accumulate) : loss).backward();
        batch_correct = logits.detach().argmax(1).eq(b.targets).sum();
      }
      {
        torch::NoGradGuard no_grad;
        const int64_t n = b.targets.size(0);
        if (loss.is_cpu() && batch_correct.is_cpu() && loss_sum.is_cpu()) {
          // The same double arithmetic as the tensor ops below, without their dispatch and
          // allocations (4 us a step, while the other compute threads wait).
          *loss_sum.data_ptr<double>() += loss.item<double>() * static_cast<double>(n);
          *correct.data_ptr<int64_t>() += batch_correct.item<int64_t>();
        } else {  // on a GPU: no synchronisation each step
          loss_sum += loss.detach().to(torch::kDouble) * static_cast<double>(n);
          correct += batch_correct;
        }
        samples += n;
      }
      if (group_end) {
        for (size_t k = 0; k < params.size(); ++k) {
          grads[k] = {params[k].first, params[k].second.mutable_grad()};
        }
        GradientSync::StepControl wish;
        wish.stop_signal = stop_signal();
        wish.checkpoint =
            is_writer() && i + 1 < batches.size() && mid_epoch_checkpoint_due(global_step + 1);
        sync_->propose_step_control(wish);
        const auto sync_start = Clock::now();
        const GradientSync::Outcome outcome = sync_->synchronize(grads);
        sync_seconds += std::chrono::duration<double>(Clock::now() - sync_start).count();
        if (outcome == GradientSync::Outcome::kApply) {
          if (!step_within) {
            schedule_rate();
            optimizer_->step();
          }
        } else if (outcome == GradientSync::Outcome::kSkip) {
          ++skipped;
        }
        ++steps;
        ++global_step;
        if (observed)
          report_step(loss, loss_sum, samples, epoch, steps, steps_in_epoch, global_step,
                      std::chrono::duration<double>(Clock::now() - start).count());
        const GradientSync::StepControl control = sync_->step_control();
        if (control.stop_signal != 0 || control.checkpoint) {
          nlohmann::json position = {
              {"epoch", epoch},
              {"batches_done", i + 1},
              {"steps", steps},
              {"skipped", skipped},
              {"sync_seconds", sync_seconds},
              {"elapsed_seconds", std::chrono::duration<double>(Clock::now() - start).count()},
              {"world_size", sync_->world_size()},
              {"batch_size", config_.batch_size},
              {"backward_passes_per_step", accumulate}};
          std::vector<double> sums = {loss_sum.item<double>(),
                                      static_cast<double>(correct.item<int64_t>()),
                                      static_cast<double>(samples)};
          // Every process is here after the same step only when the strategy agrees on it.
          if (sync_->agrees_on_step_control()) sums = sync_->sum(sums);
          position["loss_sum"] = sums[0];
          position["correct"] = static_cast<int64_t>(sums[1]);
          position["samples"] = static_cast<int64_t>(sums[2]);
          if (is_writer()) {
            sync_->gather_state(params, *optimizer_, false);
            const auto path = save_checkpoint(position);
            last_checkpoint_ = Clock::now();
            spdlog::info("checkpoint written: {} (epoch {}, step {} of {})", path.string(), epoch,
                         steps, steps_in_epoch);
          }
          if (control.stop_signal != 0) {
            if (is_writer()) {
              spdlog::warn(
                  "{}: stopped after step {} of epoch {}; continue with --resume-from auto (or "
                  "this checkpoint)",
                  signal_name(control.stop_signal), steps, epoch);
            }
            // Nobody leaves before the writer's checkpoint is complete.
            if (sync_->agrees_on_step_control()) sync_->sum({0.0});
            throw Interrupted(control.stop_signal);
          }
        }
      }
    }

    auto totals = sync_->sum({loss_sum.item<double>(), static_cast<double>(correct.item<int64_t>()),
                              static_cast<double>(samples)});
    const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
    const auto eval_start = Clock::now();
    EvalResult val = evaluate(validation, validation_sampler);

    EpochMetrics m;
    m.epoch = epoch;
    m.train_loss = totals[2] > 0 ? totals[0] / totals[2] : 0;
    m.train_acc = totals[2] > 0 ? totals[1] / totals[2] : 0;
    m.validation_loss = val.loss;
    m.validation_acc = val.accuracy;
    m.epoch_seconds = seconds;
    m.samples_per_second = seconds > 0 ? totals[2] / seconds : 0;
    m.steps = steps;
    m.skipped_steps = skipped;
    m.sync_seconds = sync_seconds;
    m.learning_rate = learning_rate_at(std::max<int64_t>(0, global_step - 1), steps_in_epoch);
    m.global_step = global_step;
    m.validation_seconds = std::chrono::duration<double>(Clock::now() - eval_start).count();
    history_.push_back(m);
    epochs_done_ = epoch;
    // Every process evaluates the same (summed) accuracy, so all stop after the same epoch.
    const bool target_reached =
        config_.target_accuracy > 0 && m.validation_acc >= config_.target_accuracy;

    if (is_writer()) {
      for (auto& sink : sinks_) sink->on_epoch(m, history_);
      const bool last = epoch == config_.epochs || target_reached;
      const bool due =
          config_.checkpoint_every > 0 && (epoch % config_.checkpoint_every == 0 || last);
      if (due || last) sync_->gather_state(params, *optimizer_, last);
      if (due) {
        spdlog::info("checkpoint written: {}", save_checkpoint().string());
        last_checkpoint_ = Clock::now();
      }
    }
    if (target_reached) {
      if (is_writer()) {
        spdlog::info("--target-accuracy {} reached in epoch {}: validation accuracy {:.4f}",
                     config_.target_accuracy, epoch, m.validation_acc);
      }
      break;
    }
  }
  return history_;
}

}  // namespace dtrain
