// Where one training step's time goes: batch gather, forward, loss, backward, optimizer step,
// for the default MLP at batch 50 on MNIST-shaped random data. Prints microseconds per phase.
//   step_breakdown [--threads N] [--steps S]
#include <ATen/Parallel.h>
#include <torch/nn/functional/loss.h>
#include <torch/nn/module.h>
#include <torch/optim/sgd.h>
#include <torch/utils.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>

#include <cxxopts.hpp>

#include "core/optimizers.h"
#include "core/run_config.h"
#include "data/mnist.h"
#include "data/sampler.h"
#include "models/registry.h"

int main(int argc, char** argv) {
  cxxopts::Options options("step_breakdown", "where one training step's time goes");
  options.add_options()("threads", "torch threads", cxxopts::value<int>()->default_value("1"))(
      "steps", "steps per measured phase", cxxopts::value<int>()->default_value("1200"))(
      "h,help", "show this help");
  int threads = 1, steps = 1200;
  try {
    const auto r = options.parse(argc, argv);
    if (r.count("help")) {
      std::printf("%s\n", options.help().c_str());
      return 0;
    }
    threads = r["threads"].as<int>();
    steps = r["steps"].as<int>();
    if (threads < 1 || steps < 3) throw std::invalid_argument("--threads >= 1 and --steps >= 3");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "step_breakdown: %s (see --help)\n", e.what());
    return 2;
  }
  at::set_num_threads(threads);
  torch::manual_seed(0);
  auto images = torch::randint(0, 256, {60000, 784}, torch::kLong).to(torch::kUInt8);
  auto labels = torch::randint(0, 10, {60000}, torch::kLong).to(torch::kUInt8);
  dtrain::data::MnistDataset ds(images, labels);
  dtrain::RunConfig config;
  dtrain::Model model = dtrain::models::build_model(config);
  torch::optim::SGD opt(model.module->parameters(), torch::optim::SGDOptions(0.01).momentum(0.9));
  auto ours = dtrain::make_optimizer({"sgd", 0.01, 0.9, 0.0}, model.module->parameters());
  dtrain::data::ShuffleSampler sampler({60000, 50, 1, 0, 1, true});
  auto batches = sampler.batches(1);

  using Clock = std::chrono::steady_clock;
  // The hand-written train_step against autograd, alternating so noise hits both alike.
  double fused_us = 0, autograd_us = 0, fused_sgd_us = 0;
  for (int round = 0; round < 3; ++round) {
    for (int mode : {0, 1, 2}) {
      const bool fused = mode != 1;
      const auto t0 = Clock::now();
      for (int s = 0; s < steps / 3; ++s) {
        auto b = ds.get(batches[s % batches.size()], torch::kCPU);
        if (fused) {
          model.train_step(b.inputs, b.targets, 1.0, false, {});
        } else {
          opt.zero_grad();
          torch::nn::functional::cross_entropy(model.forward(b.inputs), b.targets).backward();
        }
        if (mode == 2) {
          ours->step();  // dtrain's SGD: one fused pass per parameter
        } else {
          opt.step();
        }
      }
      (mode == 0   ? fused_us
       : mode == 1 ? autograd_us
                   : fused_sgd_us) +=
          std::chrono::duration<double, std::micro>(Clock::now() - t0).count();
    }
  }
  std::printf("# whole step, batch + forward + backward + SGD step (us/step):\n");
  std::printf("  %-32s %10.1f\n  %-32s %10.1f %9.2fx\n  %-32s %10.1f %9.2fx\n", "autograd + SGD",
              autograd_us / steps, "hand-written backward + SGD", fused_us / steps,
              autograd_us / fused_us, "hand-written backward + fused SGD", fused_sgd_us / steps,
              autograd_us / fused_sgd_us);

  double t_batch = 0, t_fwd = 0, t_bwd = 0, t_step = 0;
  auto lap = [](Clock::time_point& t) {
    auto now = Clock::now();
    double us = std::chrono::duration<double, std::micro>(now - t).count();
    t = now;
    return us;
  };
  const auto start = Clock::now();
  for (int s = 0; s < steps; ++s) {
    auto t = Clock::now();
    auto b = ds.get(batches[s % batches.size()], torch::kCPU);
    t_batch += lap(t);
    opt.zero_grad();
    auto loss = torch::nn::functional::cross_entropy(model.forward(b.inputs), b.targets);
    t_fwd += lap(t);
    loss.backward();
    t_bwd += lap(t);
    opt.step();
    t_step += lap(t);
  }
  const double total = std::chrono::duration<double, std::micro>(Clock::now() - start).count();
  std::printf("# step_breakdown: MLP 784-300-100-10, batch 50, threads %d, %d steps\n", threads,
              steps);
  std::printf("# autograd step by phase:\n%-22s %10s %8s\n", "# phase", "us/step", "share");
  const std::pair<const char*, double> rows[] = {{"batch (gather+scale)", t_batch},
                                                 {"zero_grad+forward+loss", t_fwd},
                                                 {"backward", t_bwd},
                                                 {"optimizer step", t_step}};
  for (const auto& [name, us] : rows) {
    std::printf("  %-22s %10.1f %7.1f%%\n", name, us / steps, 100 * us / total);
  }
  std::printf("  %-22s %10.1f\n", "total", total / steps);

  // The optimizer step alone, on the gradients left by the last step: torch::optim::SGD (three
  // passes per parameter) against dtrain's SGD (one fused pass), alternating rounds.
  double torch_us = 0, ours_us = 0;
  for (int round = 0; round < 6; ++round) {
    auto t = Clock::now();
    for (int s = 0; s < steps / 6; ++s) opt.step();
    torch_us += lap(t);
    for (int s = 0; s < steps / 6; ++s) ours->step();
    ours_us += lap(t);
  }
  std::printf("# optimizer step alone (us/step): torch SGD %.1f, dtrain SGD %.1f, ratio %.2fx\n",
              torch_us / steps, ours_us / steps, torch_us / ours_us);
  return 0;
}
