// Where one training step's time goes on the Trainer's own path: the batch's labels (its uint8
// rows are left ungathered), gathering and converting the rows and forward+backward (the MLP's
// team step, its layers split across --threads members of a ThreadTeam), and the optimizer step
// (split across the same team), for the default MLP at batch 50 on MNIST-shaped random data; then
// the whole step as the Trainer runs it in one process, the optimizer's update inside the team
// step. For comparison, in the same run: the same step with autograd and torch::optim::SGD.
// Microseconds per step.
//   step_breakdown [--threads N] [--steps S] [--json FILE]
#include <torch/nn/functional/loss.h>
#include <torch/nn/module.h>
#include <torch/optim/sgd.h>
#include <torch/utils.h>

#include <malloc.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <string>
#include <thread>

#include <cxxopts.hpp>

#include "benchmarks/bench_info.h"
#include "core/blas.h"
#include "core/optimizers.h"
#include "core/run_config.h"
#include "core/sharded_step.h"
#include "core/thread_team.h"
#include "data/mnist.h"
#include "data/sampler.h"
#include "models/registry.h"

namespace {

using Clock = std::chrono::steady_clock;

double lap(Clock::time_point& t) {
  const auto now = Clock::now();
  const double us = std::chrono::duration<double, std::micro>(now - t).count();
  t = now;
  return us;
}

}  // namespace

int main(int argc, char** argv) {
  cxxopts::Options options("step_breakdown", "where one training step's time goes");
  options.add_options()("threads", "threads (0: all cores)",
                        cxxopts::value<int>()->default_value("0"))(
      "steps",
      "steps of the Trainer's path (half timed by phase, in alternating blocks of 50; at least "
      "100)",
      cxxopts::value<int>()->default_value("1200"))(
      "json", "also write the results to this file",
      cxxopts::value<std::string>()->default_value(""))("h,help", "show this help");
  int threads = 0, steps = 0;
  std::string json_path;
  try {
    const auto r = dtrain::bench::parse_command_line(options, argc, argv);
    threads = r["threads"].as<int>();
    steps = r["steps"].as<int>();
    json_path = r["json"].as<std::string>();
    if (threads < 0 || threads > 4096 || steps < 100 || steps > 10'000'000) {
      throw std::invalid_argument("--threads 0..4096 and --steps 100..10000000");
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "step_breakdown: %s (see --help)\n", e.what());
    return 2;
  }
  if (threads == 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  // glibc's mmap threshold adapts to what was freed before, so whether autograd's ~1 MiB
  // gradients page-fault in anew every step depended on the phase measured before it (0.8 vs
  // 2 ms a step). Fixed here, for both paths, at the value dtrain's parameter server uses.
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
  dtrain::set_compute_threads(threads);
  torch::manual_seed(0);
  auto images = torch::randint(0, 256, {60000, 784}, torch::kLong).to(torch::kUInt8);
  auto labels = torch::randint(0, 10, {60000}, torch::kLong).to(torch::kUInt8);
  dtrain::data::MnistDataset ds(images, labels);
  dtrain::RunConfig config;
  dtrain::data::ShuffleSampler sampler({60000, 50, 1, 0, 1, true});
  const auto batches = sampler.batches(1);

  // The Trainer's path, phase by phase.
  dtrain::Model model = dtrain::models::build_model(config);
  if (threads > 1) dtrain::set_blas_threads(1);
  dtrain::ShardedStep step(model, threads);
  auto ours = dtrain::make_optimizer({"sgd", 0.01, 0.9, 0.0}, model.module->parameters());
  ours->set_team(step.team());
  double t_batch = 0, t_train = 0, t_opt = 0, t_within = 0;
  for (int s = 0; s < 50; ++s) {  // warm-up
    step.run(ds.get_stored(batches[s]), 1.0, false);
    ours->step();
  }
  // Blocks of 50 steps alternate between the phases timed apart and the Trainer's own
  // single-process path, the optimizer's update run by each member at the end of the team step
  // (Optimizer::begin_member_step), so that machine noise hits both alike.
  int apart = 0, within = 0;
  for (int s = 0; s < steps; ++s) {
    auto t = Clock::now();
    const dtrain::Batch b = ds.get_stored(batches[s % batches.size()]);
    if (s / 50 % 2 == 1) {
      step.run(b, 1.0, false, ours->begin_member_step());
      t_within += lap(t);
      ++within;
      continue;
    }
    t_batch += lap(t);
    step.run(b, 1.0, false);
    t_train += lap(t);
    ours->step();
    t_opt += lap(t);
    ++apart;
  }
  const double total = t_batch + t_train + t_opt;

  // Autograd + torch::optim::SGD, one thread (its GEMMs on OpenBLAS's threads).
  dtrain::set_blas_threads(threads);
  dtrain::Model reference = dtrain::models::build_model(config);
  torch::optim::SGD opt(reference.module->parameters(),
                        torch::optim::SGDOptions(0.01).momentum(0.9));
  auto t = Clock::now();
  for (int s = 0; s < steps; ++s) {
    const dtrain::Batch b = ds.get(batches[s % batches.size()], torch::kCPU);
    opt.zero_grad();
    torch::nn::functional::cross_entropy(reference.forward(b.inputs), b.targets).backward();
    opt.step();
  }
  const double autograd = lap(t);

  std::printf(
      "# step_breakdown: MLP 784-300-100-10, batch 50, %d thread(s), %d steps timed by phase\n",
      threads, apart);
  std::printf("# %-44s %10s %8s\n", "phase", "us/step", "share");
  const std::pair<const char*, double> rows[] = {{"batch (labels; rows left to the step)", t_batch},
                                                 {"gather, to float, forward, backward", t_train},
                                                 {"optimizer step (SGD momentum, fused)", t_opt}};
  nlohmann::json phases = nlohmann::json::object();
  for (const auto& [name, us] : rows) {
    std::printf("  %-44s %10.1f %7.1f%%\n", name, us / apart, 100 * us / total);
    phases[name] = us / apart;
  }
  std::printf("  %-44s %10.1f\n", "total", total / apart);
  std::printf(
      "# the Trainer's path, the optimizer step inside the team step (%d steps between "
      "those): %.1f us/step, %.3fx the phases apart\n",
      within, t_within / within, (t_within / within) / (total / apart));
  std::printf("# autograd + torch::optim::SGD (same batches): %.1f us/step, %.2fx dtrain's\n",
              autograd / steps, (autograd / steps) / (t_within / within));
  if (!json_path.empty()) {
    const nlohmann::json results = {{"threads", threads},
                                    {"steps", steps},
                                    {"us_per_step", phases},
                                    {"total_us_per_step", total / apart},
                                    {"optimizer_within_us_per_step", t_within / within},
                                    {"autograd_us_per_step", autograd / steps}};
    std::ofstream(json_path) << dtrain::bench::report("step_breakdown", argc, argv, results).dump(2)
                             << "\n";
  }
  return 0;
}
