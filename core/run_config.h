// RunConfig: everything one training run was asked to do.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace dtrain {

/// The full configuration of a run. Filled from flags (tools/), recorded in run.json and in every
/// checkpoint, and compared on resume. Each field is declared once more, with its flag, JSON key,
/// help text and checks, in the option table `run_options()` (core/run_config.cpp): everything
/// else (flags, JSON, validation, the cross-rank check) is derived from that table.
struct RunConfig {
  // Data and outputs.
  std::string data_dir;
  std::string output_dir = "outputs";

  // Model.
  std::string model = "mlp";
  std::vector<int64_t> hidden_sizes = {300, 100};
  std::string activation = "relu";

  // Optimisation. Defaults follow the seed script (batch 50, lr 0.01, 20 epochs); SGD with
  // momentum 0.9 is our default optimiser because plain SGD at lr 0.01 needs several epochs.
  int64_t batch_size = 50;
  double learning_rate = 0.01;
  int64_t epochs = 20;
  std::string optimizer = "sgd";  // sgd | adam
  double momentum = 0.9;
  double weight_decay = 0.0;
  uint64_t seed = 42;
  // Large-batch remedies (Goyal et al.): the rate times k = processes x backward passes per step
  // (global batch / --batch-size), or sqrt(k), reached by a linear ramp over the first epochs.
  std::string lr_scaling = "none";  // none | linear | sqrt
  double warmup_epochs = 0;
  double target_accuracy = 0;  // stop after the first epoch reaching it (0: off)

  // Execution.
  std::string device = "auto";  // auto | cpu | cuda
  int threads = 0;              // 0: all cores (divided among local ranks)
  int64_t checkpoint_every = 2;
  int64_t checkpoint_every_steps = 0;   // mid-epoch checkpoints every N optimizer steps (0: off)
  double checkpoint_every_minutes = 0;  // mid-epoch checkpoints every M minutes (0: off)
  std::string resume_from;

  // Distribution.
  std::string distributed = "none";  // none | ring | ps
  std::string allreduce = "ring";    // ring (ours) | mpi (MPI_Allreduce)
  double fusion_threshold_mb = 128;  // Horovod's default fusion buffer
  std::string compression = "none";  // none | fp16
  int64_t backward_passes_per_step = 1;
  double stall_warning_seconds = 60;
  double stall_abort_seconds = 600;
  std::string ps_mode = "sync";          // sync | async
  double connect_timeout_seconds = 120;  // workers waiting for the ps tasks
  double peer_timeout_seconds = 30;      // a silent peer is declared dead after this
  bool insecure = false;  // a parameter-server cluster without DTRAIN_CLUSTER_TOKEN (warned)
  std::string tls_cert, tls_key, tls_ca;  // PEM files: TLS for the parameter-server traffic

  // Tracking: the run history in a workspace (rank 0 / the PS chief).
  std::string workspace = "dtrain-workspace";  // "none": no tracking
  std::string experiment = "default";
  std::string run_name;           // empty: generated
  std::vector<std::string> tags;  // "key=value"
  int64_t log_every_steps = 100;  // per-step training loss every N steps (0: off)
  bool track_checkpoints = false;
  std::string progress = "auto";  // auto | always | never
  std::string register_model;     // registered model name for the final model ("": none)

  /// The fields every rank of a distributed run must agree on (the table's shared rows).
  nlohmann::json shared_json() const;

  /// The model-defining part, compared when a checkpoint is loaded.
  nlohmann::json model_json() const;
  nlohmann::json to_json() const;
  /// Throws ConfigError naming the field if `j` is not a valid configuration.
  static RunConfig from_json(const nlohmann::json& j);
  /// Runs every row's checks in table order; throws ConfigError naming the flag, what was
  /// expected and what was found.
  void validate() const;
};

/// A registered model name: 1 to 128 letters, digits, '.', '_' or '-', starting with a letter or
/// digit (so it fits models:/NAME/VERSION URIs).
bool valid_model_name(const std::string& name);

}  // namespace dtrain
