#include "core/device.h"

#include <cerrno>
#include <cstdlib>

#include "core/errors.h"

namespace dtrain {

namespace {

int parse_count(const char* name, const char* text) {
  char* end = nullptr;
  errno = 0;
  const long value = std::strtol(text, &end, 10);
  if (*text == '\0' || *end != '\0' || errno != 0 || value < 0 || value > 1'000'000) {
    throw ConfigError(std::string(name) + ": expected a non-negative integer, got '" + text + "'");
  }
  return static_cast<int>(value);
}

std::string visible_devices_note() {
  const char* v = std::getenv("CUDA_VISIBLE_DEVICES");
  return v == nullptr ? "" : std::string(" (CUDA_VISIBLE_DEVICES=") + v + ")";
}

}  // namespace

LocalPlacement local_placement_from_environment() {
  static const char* const kPairs[][2] = {
      {"OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_SIZE"},
      {"MPI_LOCALRANKID", "MPI_LOCALNRANKS"},
      {"LOCAL_RANK", "LOCAL_WORLD_SIZE"},
  };
  for (const auto& pair : kPairs) {
    const char* rank = std::getenv(pair[0]);
    const char* size = std::getenv(pair[1]);
    if (rank == nullptr && size == nullptr) continue;
    if (rank == nullptr || size == nullptr) {
      throw ConfigError(std::string(rank == nullptr ? pair[1] : pair[0]) + " is set but " +
                        (rank == nullptr ? pair[0] : pair[1]) +
                        " is not: the launcher's environment is incomplete");
    }
    LocalPlacement p{parse_count(pair[0], rank), parse_count(pair[1], size),
                     std::string(pair[0]) + "/" + pair[1]};
    if (p.size < 1 || p.rank >= p.size) {
      throw ConfigError(std::string(pair[0]) + "=" + rank + " and " + pair[1] + "=" + size +
                        ": expected 0 <= local rank < local size");
    }
    return p;
  }
  return {};
}

torch::Device choose_device(const std::string& requested, int visible_gpus,
                            const LocalPlacement& local) {
  if (requested != "auto" && requested != "cpu" && requested != "cuda") {
    throw ConfigError("--device: expected auto, cpu or cuda, got '" + requested + "'");
  }
  if (requested == "cpu" || (requested == "auto" && visible_gpus <= 0)) {
    return torch::Device(torch::kCPU);
  }
  if (visible_gpus <= 0) {
    throw ConfigError("--device cuda: LibTorch sees no CUDA device" + visible_devices_note() +
                      " (a CPU-only LibTorch build sees none either); use --device cpu or auto");
  }
  if (local.size > visible_gpus) {
    throw ConfigError(std::to_string(local.size) + " processes on this host (" +
                      (local.source.empty() ? "local size" : local.source) + ") but " +
                      std::to_string(visible_gpus) + " visible GPU" +
                      (visible_gpus == 1 ? "" : "s") + visible_devices_note() +
                      ": each process needs a GPU of its own; start at most " +
                      std::to_string(visible_gpus) +
                      " per host (mpirun --map-by ppr:N:node) or use --device cpu");
  }
  return torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(local.rank));
}

}  // namespace dtrain
