#include "core/run_config.h"

#include <cmath>

#include "core/errors.h"

namespace dtrain {

nlohmann::json RunConfig::model_json() const {
  return {{"model", model}, {"hidden_sizes", hidden_sizes}, {"activation", activation}};
}

nlohmann::json RunConfig::to_json() const {
  return {{"data_dir", data_dir},
          {"output_dir", output_dir},
          {"model", model},
          {"hidden_sizes", hidden_sizes},
          {"activation", activation},
          {"batch_size", batch_size},
          {"learning_rate", learning_rate},
          {"epochs", epochs},
          {"optimizer", optimizer},
          {"momentum", momentum},
          {"weight_decay", weight_decay},
          {"seed", seed},
          {"device", device},
          {"threads", threads},
          {"checkpoint_every", checkpoint_every},
          {"resume_from", resume_from},
          {"distributed", distributed},
          {"allreduce", allreduce},
          {"fusion_threshold_mb", fusion_threshold_mb},
          {"compression", compression},
          {"backward_passes_per_step", backward_passes_per_step},
          {"stall_warning_seconds", stall_warning_seconds},
          {"stall_abort_seconds", stall_abort_seconds},
          {"ps_mode", ps_mode},
          {"connect_timeout_seconds", connect_timeout_seconds},
          {"peer_timeout_seconds", peer_timeout_seconds}};
}

nlohmann::json RunConfig::shared_json() const {
  nlohmann::json j = to_json();
  // Paths and thread counts may differ between hosts; everything else must match.
  for (const char* local : {"data_dir", "output_dir", "resume_from", "threads", "device",
                            "connect_timeout_seconds"}) {
    j.erase(local);
  }
  return j;
}

RunConfig RunConfig::from_json(const nlohmann::json& j) {
  RunConfig c;
  if (!j.is_object()) throw ConfigError("run configuration: expected a JSON object");
  auto get = [&](const char* key, auto& field) {
    auto it = j.find(key);
    if (it == j.end()) return;
    try {
      it->get_to(field);
    } catch (const nlohmann::json::exception& e) {
      throw ConfigError(std::string("run configuration: field '") + key +
                        "' has the wrong type: " + e.what());
    }
  };
  get("data_dir", c.data_dir);
  get("output_dir", c.output_dir);
  get("model", c.model);
  get("hidden_sizes", c.hidden_sizes);
  get("activation", c.activation);
  get("batch_size", c.batch_size);
  get("learning_rate", c.learning_rate);
  get("epochs", c.epochs);
  get("optimizer", c.optimizer);
  get("momentum", c.momentum);
  get("weight_decay", c.weight_decay);
  get("seed", c.seed);
  get("device", c.device);
  get("threads", c.threads);
  get("checkpoint_every", c.checkpoint_every);
  get("resume_from", c.resume_from);
  get("distributed", c.distributed);
  get("allreduce", c.allreduce);
  get("fusion_threshold_mb", c.fusion_threshold_mb);
  get("compression", c.compression);
  get("backward_passes_per_step", c.backward_passes_per_step);
  get("stall_warning_seconds", c.stall_warning_seconds);
  get("stall_abort_seconds", c.stall_abort_seconds);
  get("ps_mode", c.ps_mode);
  get("connect_timeout_seconds", c.connect_timeout_seconds);
  get("peer_timeout_seconds", c.peer_timeout_seconds);
  return c;
}

void RunConfig::validate() const {
  auto fail = [](const std::string& flag, const std::string& expected, const std::string& got) {
    throw ConfigError("--" + flag + ": expected " + expected + ", got " + got);
  };
  if (batch_size <= 0) fail("batch-size", "a positive integer", std::to_string(batch_size));
  if (!std::isfinite(learning_rate) || learning_rate <= 0)
    fail("learning-rate", "a finite number > 0", std::to_string(learning_rate));
  if (epochs <= 0) fail("epochs", "a positive integer", std::to_string(epochs));
  if (optimizer != "sgd" && optimizer != "adam") fail("optimizer", "sgd or adam", optimizer);
  if (!std::isfinite(momentum) || momentum < 0 || momentum >= 1)
    fail("momentum", "a number in [0, 1)", std::to_string(momentum));
  if (!std::isfinite(weight_decay) || weight_decay < 0)
    fail("weight-decay", "a finite number >= 0", std::to_string(weight_decay));
  if (device != "auto" && device != "cpu" && device != "cuda")
    fail("device", "auto, cpu or cuda", device);
  if (threads < 0) fail("threads", "0 (all cores) or a positive integer", std::to_string(threads));
  if (checkpoint_every < 0)
    fail("checkpoint-every", "0 (never) or a positive integer", std::to_string(checkpoint_every));
  if (distributed != "none" && distributed != "ring" && distributed != "ps")
    fail("distributed", "none, ring or ps", distributed);
  if (allreduce != "ring" && allreduce != "mpi") fail("allreduce", "ring or mpi", allreduce);
  if (!std::isfinite(fusion_threshold_mb) || fusion_threshold_mb < 0 || fusion_threshold_mb > 65536)
    fail("fusion-threshold-mb", "0 to 65536 (0: one buffer per tensor)",
         std::to_string(fusion_threshold_mb));
  if (compression != "none" && compression != "fp16") fail("compression", "none or fp16", compression);
  if (backward_passes_per_step < 1 || backward_passes_per_step > 1000000)
    fail("backward-passes-per-step", "1 to 1000000", std::to_string(backward_passes_per_step));
  if (!std::isfinite(stall_warning_seconds) || stall_warning_seconds <= 0)
    fail("stall-warning-seconds", "seconds > 0", std::to_string(stall_warning_seconds));
  if (!std::isfinite(stall_abort_seconds) || stall_abort_seconds < stall_warning_seconds)
    fail("stall-abort-seconds", "seconds >= --stall-warning-seconds",
         std::to_string(stall_abort_seconds));
  if (ps_mode != "sync" && ps_mode != "async") fail("ps-mode", "sync or async", ps_mode);
  if (!std::isfinite(connect_timeout_seconds) || connect_timeout_seconds <= 0 || connect_timeout_seconds > 86400)
    fail("connect-timeout", "seconds in (0, 86400]", std::to_string(connect_timeout_seconds));
  if (!std::isfinite(peer_timeout_seconds) || peer_timeout_seconds < 1 || peer_timeout_seconds > 86400)
    fail("peer-timeout", "seconds in [1, 86400]", std::to_string(peer_timeout_seconds));
  if (hidden_sizes.empty()) fail("hidden-sizes", "at least one hidden layer", "none");
  for (int64_t h : hidden_sizes) {
    if (h <= 0 || h > (1 << 20))
      fail("first-layer-neurons/--second-layer-neurons/--hidden-sizes",
           "layer widths between 1 and 1048576", std::to_string(h));
  }
}

}  // namespace dtrain
