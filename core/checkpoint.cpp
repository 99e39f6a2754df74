#include "core/checkpoint.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/nn/module.h>
#include <torch/serialize/input-archive.h>
#include <torch/serialize/output-archive.h>

#include <zlib.h>

#include <algorithm>
#include <cstdio>
#include <mutex>
#include <regex>
#include <tuple>

#include "core/errors.h"
#include "core/file_util.h"
#include "core/optimizers.h"
#include "core/tensor_text.h"

namespace dtrain {
namespace fs = std::filesystem;

namespace {

constexpr const char* kFormat = "dtrain-checkpoint-v1";
constexpr std::uint64_t kMaxCheckpointBytes = std::uint64_t{16} << 30;

// The torch archive is wrapped in a small envelope: LibTorch's zip reader does not verify CRCs,
// so a flipped byte inside a tensor would load silently. Envelope: magic, payload size (u64 LE),
// CRC-32 of the payload (u32 LE), payload.
constexpr char kMagic[12] = {'D', 'T', 'R', 'A', 'I', 'N', '-', 'C', 'K', 'P', 'T', '\n'};
constexpr size_t kEnvelopeBytes = sizeof(kMagic) + 8 + 4;

uint32_t crc_of(const char* data, size_t size) {
  uLong crc = crc32(0L, Z_NULL, 0);
  while (size > 0) {
    const uInt chunk = static_cast<uInt>(std::min<size_t>(size, 1u << 30));
    crc = crc32(crc, reinterpret_cast<const Bytef*>(data), chunk);
    data += chunk;
    size -= chunk;
  }
  return static_cast<uint32_t>(crc);
}

std::string seal(const std::string& payload) {
  std::string out(kMagic, sizeof(kMagic));
  uint64_t size = payload.size();
  uint32_t crc = crc_of(payload.data(), payload.size());
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((size >> (8 * i)) & 0xff));
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((crc >> (8 * i)) & 0xff));
  return out + payload;
}

// Checks the envelope and returns the payload's offset.
size_t unseal(const fs::path& path, const std::string& bytes) {
  if (bytes.size() < kEnvelopeBytes ||
      bytes.compare(0, sizeof(kMagic), kMagic, sizeof(kMagic)) != 0) {
    throw CheckpointError(path.string() + ": not a dtrain checkpoint (no DTRAIN-CKPT header)");
  }
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data() + sizeof(kMagic));
  uint64_t size = 0;
  uint32_t crc = 0;
  for (int i = 0; i < 8; ++i) size |= uint64_t{p[i]} << (8 * i);
  for (int i = 0; i < 4; ++i) crc |= uint32_t{p[8 + i]} << (8 * i);
  if (size != bytes.size() - kEnvelopeBytes) {
    throw CheckpointError(path.string() + ": truncated or padded checkpoint: header says " +
                          std::to_string(size) + " payload bytes, file holds " +
                          std::to_string(bytes.size() - kEnvelopeBytes));
  }
  if (crc_of(bytes.data() + kEnvelopeBytes, size) != crc) {
    throw CheckpointError(path.string() + ": corrupt checkpoint (CRC-32 mismatch)");
  }
  return kEnvelopeBytes;
}

torch::serialize::InputArchive open_archive(const fs::path& path, const std::string& bytes) {
  const size_t offset = unseal(path, bytes);
  torch::serialize::InputArchive archive;
  try {
    archive.load_from(bytes.data() + offset, bytes.size() - offset);
  } catch (const std::exception& e) {
    throw CheckpointError(path.string() + ": not a readable checkpoint (corrupt or truncated): " +
                          std::string(e.what()).substr(0, 200));
  }
  c10::IValue format;
  if (!archive.try_read("dtrain_format", format) || !format.isString() ||
      format.toStringRef() != kFormat) {
    throw CheckpointError(path.string() + ": not a dtrain checkpoint (expected format '" + kFormat +
                          "')");
  }
  return archive;
}

CheckpointMeta parse_meta(const fs::path& path, torch::serialize::InputArchive& archive) {
  c10::IValue text;
  if (!archive.try_read("dtrain_meta", text) || !text.isString()) {
    throw CheckpointError(path.string() + ": checkpoint has no metadata record");
  }
  try {
    auto j = nlohmann::json::parse(text.toStringRef());
    CheckpointMeta meta;
    meta.epoch = j.at("epoch").get<int64_t>();
    meta.config = j.at("config");
    meta.model = j.at("model");
    meta.optimizer = j.at("optimizer").get<std::string>();
    for (const auto& m : j.at("history")) meta.history.push_back(EpochMetrics::from_json(m));
    meta.extra = j.value("extra", nlohmann::json::object());
    if (j.contains("partial_epoch") && !j["partial_epoch"].is_null()) {
      meta.partial_epoch = j["partial_epoch"];
      if (!meta.partial_epoch.is_object()) throw CheckpointError("partial_epoch is not an object");
    }
    if (meta.epoch < 0) throw CheckpointError("negative epoch");
    return meta;
  } catch (const std::exception& e) {
    throw CheckpointError(path.string() + ": malformed checkpoint metadata: " + e.what());
  }
}

}  // namespace

std::string archive_bytes(torch::serialize::OutputArchive& archive) {
  std::string bytes;
  archive.save_to([&bytes](const void* data, size_t size) -> size_t {
    bytes.append(static_cast<const char*>(data), size);
    return size;
  });
  return bytes;
}

std::string checkpoint_file_name(int64_t epoch, int64_t steps) {
  char name[80];
  if (steps > 0) {
    std::snprintf(name, sizeof(name), "ckpt-epoch-%06lld-step-%06lld.pt",
                  static_cast<long long>(epoch), static_cast<long long>(steps));
  } else {
    std::snprintf(name, sizeof(name), "ckpt-epoch-%06lld.pt", static_cast<long long>(epoch));
  }
  return name;
}

std::vector<CheckpointFile> find_checkpoints(const fs::path& dir) {
  static const std::regex pattern(R"(ckpt-epoch-(\d{1,15})(?:-step-(\d{1,15}))?\.pt)");
  std::vector<CheckpointFile> found;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return {};
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    std::smatch m;
    const std::string name = entry.path().filename().string();
    if (entry.is_regular_file() && std::regex_match(name, m, pattern)) {
      found.push_back({entry.path(), std::stoll(m[1]), m[2].matched ? std::stoll(m[2]) : 0});
    }
  }
  std::sort(found.begin(), found.end(), [](const auto& a, const auto& b) {
    return std::tie(a.epoch, a.steps) > std::tie(b.epoch, b.steps);
  });
  return found;
}

std::vector<fs::path> list_checkpoints(const fs::path& dir) {
  std::vector<fs::path> out;
  for (auto& f : find_checkpoints(dir)) out.push_back(std::move(f.path));
  return out;
}

int remove_stale_temp_files(const fs::path& dir) {
  int removed = 0;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return 0;
  std::vector<fs::path> stale;
  for (auto it = fs::recursive_directory_iterator(dir, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (it->is_regular_file() && is_temp_file_name(it->path().filename().string())) {
      stale.push_back(it->path());
    }
  }
  for (const auto& p : stale) removed += fs::remove(p, ec) ? 1 : 0;
  return removed;
}

fs::path resolve_checkpoint(const fs::path& path) {
  std::error_code ec;
  if (fs::is_regular_file(path, ec)) return path;
  if (!fs::is_directory(path, ec)) {
    throw CheckpointError(path.string() + ": no such checkpoint file or folder");
  }
  const auto found = list_checkpoints(path);
  if (found.empty()) {
    throw CheckpointError(path.string() + ": folder holds no checkpoint (ckpt-epoch-NNNNNN.pt)");
  }
  return found.front();
}

void save_checkpoint(const fs::path& path, const torch::nn::Module& module,
                     const Optimizer* optimizer, const CheckpointMeta& meta) {
  torch::serialize::OutputArchive archive;
  nlohmann::json j = {{"epoch", meta.epoch},
                      {"config", meta.config},
                      {"model", meta.model},
                      {"optimizer", meta.optimizer},
                      {"history", nlohmann::json::array()},
                      {"extra", meta.extra}};
  if (!meta.partial_epoch.is_null()) j["partial_epoch"] = meta.partial_epoch;
  for (const auto& m : meta.history) j["history"].push_back(m.to_json());
  archive.write("dtrain_format", c10::IValue(std::string(kFormat)));
  archive.write("dtrain_meta", c10::IValue(j.dump()));
  for (const auto& p : module.named_parameters(/*recurse=*/true)) {
    archive.write("param/" + p.key(), p.value().detach().cpu());
  }
  for (const auto& b : module.named_buffers(/*recurse=*/true)) {
    archive.write("buffer/" + b.key(), b.value().detach().cpu(), /*is_buffer=*/true);
  }
  if (optimizer != nullptr) {
    torch::serialize::OutputArchive opt_archive;
    optimizer->save(opt_archive);
    archive.write("optimizer", opt_archive);
  }
  archive.write("rng_cpu", at::detail::getDefaultCPUGenerator().get_state());

  write_file_atomic(path, seal(archive_bytes(archive)));
}

CheckpointMeta read_checkpoint_meta(const fs::path& path) {
  const std::string bytes = read_file(path, kMaxCheckpointBytes);
  auto archive = open_archive(path, bytes);
  return parse_meta(path, archive);
}

CheckpointMeta load_checkpoint(const fs::path& path, torch::nn::Module& module,
                               Optimizer* optimizer, bool restore_rng) {
  const std::string bytes = read_file(path, kMaxCheckpointBytes);
  auto archive = open_archive(path, bytes);
  CheckpointMeta meta = parse_meta(path, archive);

  torch::NoGradGuard no_grad;
  auto load_tensor = [&](const std::string& key, const std::string& name, torch::Tensor& dst) {
    c10::IValue value;
    if (!archive.try_read(key, value) || !value.isTensor()) {
      throw CheckpointError(
          path.string() + ": has no tensor '" + name +
          "' (the checkpoint is of another model architecture: " + meta.model.dump() + ")");
    }
    torch::Tensor src = value.toTensor();
    if (src.sizes() != dst.sizes() || src.scalar_type() != dst.scalar_type()) {
      throw CheckpointError(
          path.string() + ": tensor '" + name + "' has shape " + shape_string(src) + " " +
          std::string(c10::toString(src.scalar_type())) + " but the model expects " +
          shape_string(dst) + " " + c10::toString(dst.scalar_type()) + " (checkpoint model " +
          meta.model.dump() + ")");
    }
    dst.copy_(src);
  };
  for (auto& p : module.named_parameters(true)) load_tensor("param/" + p.key(), p.key(), p.value());
  for (auto& b : module.named_buffers(true)) load_tensor("buffer/" + b.key(), b.key(), b.value());

  if (optimizer != nullptr) {
    torch::serialize::InputArchive opt_archive;
    if (meta.optimizer.empty() || !archive.try_read("optimizer", opt_archive)) {
      throw CheckpointError(path.string() +
                            ": holds no optimizer state (a weights-only model file cannot be "
                            "resumed from)");
    }
    try {
      optimizer->load(opt_archive);
    } catch (const std::exception& e) {
      throw CheckpointError(path.string() + ": optimizer state does not fit this optimizer: " +
                            std::string(e.what()).substr(0, 200));
    }
  }
  if (restore_rng) {
    c10::IValue rng;
    if (archive.try_read("rng_cpu", rng) && rng.isTensor()) {
      try {
        at::Generator gen = at::detail::getDefaultCPUGenerator();
        std::lock_guard<std::mutex> lock(gen.mutex());
        gen.set_state(rng.toTensor());
      } catch (const std::exception& e) {
        throw CheckpointError(path.string() + ": invalid RNG state: " + e.what());
      }
    }
  }
  return meta;
}

}  // namespace dtrain
