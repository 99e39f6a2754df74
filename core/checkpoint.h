// Checkpoints: model parameters, optimizer state, RNG state, epoch and config in one file.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/metrics.h"

namespace torch::nn {
class Module;
}
namespace torch::serialize {
class OutputArchive;
}

namespace dtrain {

class Optimizer;

/// What a checkpoint records besides tensors.
struct CheckpointMeta {
  int64_t epoch = 0;      ///< epochs completed when it was written
  nlohmann::json config;  ///< RunConfig::to_json() of the run that wrote it
  nlohmann::json model;   ///< RunConfig::model_json(): compared on load
  std::string optimizer;  ///< "sgd", "adam" or "" for a weights-only file
  std::vector<EpochMetrics> history;
  nlohmann::json extra = nlohmann::json::object();  ///< final metrics of exported models, ...
  /// Null for a checkpoint at an epoch's end. For one written during epoch `epoch + 1`, where it
  /// is (the Trainer's position: batches done, steps, the epoch's partial sums).
  nlohmann::json partial_epoch;
};

/// The bytes LibTorch would write for `archive` (to hash, send or wrap them).
std::string archive_bytes(torch::serialize::OutputArchive& archive);

/// File name of the checkpoint after `epoch` inside a checkpoints folder: ckpt-epoch-NNNNNN.pt,
/// or, `steps` optimizer steps into the next epoch, ckpt-epoch-NNNNNN-step-SSSSSS.pt.
std::string checkpoint_file_name(int64_t epoch, int64_t steps = 0);

/// A checkpoint file in a checkpoints folder and where it stands.
struct CheckpointFile {
  std::filesystem::path path;
  int64_t epoch = 0;  ///< epochs completed
  int64_t steps = 0;  ///< steps into the next epoch (0: at the epoch's end)
};

/// The checkpoint files in folder `dir`, newest (highest epoch, then steps) first; empty when
/// there is none or no such folder.
std::vector<CheckpointFile> find_checkpoints(const std::filesystem::path& dir);

/// Their paths, newest first.
std::vector<std::filesystem::path> list_checkpoints(const std::filesystem::path& dir);

/// Removes leftovers of interrupted atomic writes (`*.tmp.*`) under `dir`; returns how many.
int remove_stale_temp_files(const std::filesystem::path& dir);

/// `path` itself if it is a file; the newest checkpoint (highest epoch) if it is a folder.
/// Throws CheckpointError if there is none.
std::filesystem::path resolve_checkpoint(const std::filesystem::path& path);

/// Writes atomically. `optimizer` may be null (weights only). Saves the CPU RNG state too.
void save_checkpoint(const std::filesystem::path& path, const torch::nn::Module& module,
                     const Optimizer* optimizer, const CheckpointMeta& meta);

/// Reads only the metadata (to build the right model before loading weights).
CheckpointMeta read_checkpoint_meta(const std::filesystem::path& path);

/// Loads into `module` (and `optimizer` if not null; then the file must hold optimizer state
/// of the same kind). Every parameter must be present with the same shape; any mismatch,
/// corruption or truncation throws CheckpointError naming the file and what differs.
/// If `restore_rng`, also restores the CPU RNG state.
CheckpointMeta load_checkpoint(const std::filesystem::path& path, torch::nn::Module& module,
                               Optimizer* optimizer, bool restore_rng);

}  // namespace dtrain
