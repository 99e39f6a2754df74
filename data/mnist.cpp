#include "data/mnist.h"

#include <algorithm>
#include <cstdio>
#include <vector>

#include "core/errors.h"
#include "data/idx.h"

namespace dtrain::data {
namespace fs = std::filesystem;

namespace {

constexpr int64_t kNumClasses = 10;
constexpr int kMaxSearchDepth = 8;

std::string fmt_hex(int v) {
  char buf[8];
  std::snprintf(buf, sizeof(buf), "%02x", v);
  return buf;
}

fs::path find_one(const fs::path& dir, const std::string& base) {
  std::vector<std::pair<int, fs::path>> found;  // (depth * 2 + is_gz, path)
  std::error_code ec;
  auto it =
      fs::recursive_directory_iterator(dir, fs::directory_options::skip_permission_denied, ec);
  if (ec) throw DataError(dir.string() + ": cannot read data folder: " + ec.message());
  for (; it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (ec) break;
    if (it.depth() > kMaxSearchDepth) {
      it.disable_recursion_pending();
      continue;
    }
    const std::string name = it->path().filename().string();
    if (!it->is_regular_file(ec)) continue;
    if (name == base) found.emplace_back(it.depth() * 2, it->path());
    if (name == base + ".gz") found.emplace_back(it.depth() * 2 + 1, it->path());
  }
  if (found.empty()) {
    throw DataError(dir.string() + ": no " + base + " or " + base +
                    ".gz in this folder or below it (get MNIST with: dtrain data fetch mnist "
                    "--into " +
                    dir.string() + ")");
  }
  std::sort(found.begin(), found.end());
  return found.front().second;
}

}  // namespace

MnistFiles find_mnist_files(const fs::path& dir, Split split) {
  std::error_code ec;
  if (dir.empty()) throw DataError("no data folder given (--data-dir)");
  if (!fs::is_directory(dir, ec)) {
    throw DataError(dir.string() + ": data folder does not exist or is not a folder");
  }
  const std::string prefix = split == Split::kTrain ? "train" : "t10k";
  return {find_one(dir, prefix + "-images-idx3-ubyte"),
          find_one(dir, prefix + "-labels-idx1-ubyte")};
}

namespace {

std::string shape_text(const std::vector<int64_t>& dims, size_t from) {
  std::string s;
  for (size_t i = from; i < dims.size(); ++i) s += (i > from ? "x" : "") + std::to_string(dims[i]);
  return s;
}

/// The headers of one split, checked against each other (kinds, dimensions, counts).
std::pair<IdxHeader, IdxHeader> split_headers(const MnistFiles& files) {
  const IdxHeader images = read_idx_header(files.images);
  const IdxHeader labels = read_idx_header(files.labels);
  if (images.type != IdxType::kUInt8 || images.dims.size() < 2) {
    throw DataError(files.images.string() +
                    ": expected unsigned-byte images with at least 2 dimensions (N x rows x "
                    "cols), the header says type 0x" +
                    fmt_hex(static_cast<int>(images.type)) + " with " +
                    std::to_string(images.dims.size()) + " dimension(s)");
  }
  if (labels.type != IdxType::kUInt8 || labels.dims.size() != 1) {
    throw DataError(files.labels.string() +
                    ": expected a 1-dimensional unsigned-byte label file, the header says type "
                    "0x" +
                    fmt_hex(static_cast<int>(labels.type)) + " with " +
                    std::to_string(labels.dims.size()) + " dimension(s)");
  }
  if (images.dims[0] != labels.dims[0]) {
    throw DataError(files.images.string() + " declares " + std::to_string(images.dims[0]) +
                    " images but " + files.labels.string() + " declares " +
                    std::to_string(labels.dims[0]) + " labels (checked before reading either)");
  }
  return {images, labels};
}

}  // namespace

void check_mnist_splits(const fs::path& dir) {
  const MnistFiles train = find_mnist_files(dir, Split::kTrain);
  const MnistFiles test = find_mnist_files(dir, Split::kTest);
  const IdxHeader a = split_headers(train).first;
  const IdxHeader b = split_headers(test).first;
  const std::string sa = shape_text(a.dims, 1), sb = shape_text(b.dims, 1);
  if (sa != sb) {
    throw DataError(train.images.string() + " holds " + sa + " images but " + test.images.string() +
                    " holds " + sb +
                    " images: the training and test splits must have the same image shape");
  }
}

MnistDataset::MnistDataset(const fs::path& dir, Split split) {
  const MnistFiles files = find_mnist_files(dir, split);
  split_headers(files);  // every header checked before any payload is read or inflated
  images_ = read_idx(files.images);
  labels_ = read_idx(files.labels);
  check(files.images.string(), files.labels.string());
}

MnistDataset::MnistDataset(torch::Tensor images, torch::Tensor labels, const std::string& name)
    : images_(std::move(images)), labels_(std::move(labels)) {
  check(name + " images", name + " labels");
}

void MnistDataset::check(const std::string& images_name, const std::string& labels_name) {
  if (images_.scalar_type() != torch::kUInt8 || images_.dim() < 2) {
    throw DataError(images_name +
                    ": expected unsigned-byte images with at least 2 dimensions "
                    "(N x rows x cols), got " +
                    std::string(c10::toString(images_.scalar_type())) + " with " +
                    std::to_string(images_.dim()) + " dimension(s)");
  }
  if (labels_.dim() != 1 ||
      (labels_.scalar_type() != torch::kUInt8 && labels_.scalar_type() != torch::kLong)) {
    throw DataError(labels_name + ": expected a 1-dimensional unsigned-byte label file, got " +
                    std::to_string(labels_.dim()) + " dimension(s) of " +
                    c10::toString(labels_.scalar_type()));
  }
  if (images_.size(0) != labels_.size(0)) {
    throw DataError(images_name + " has " + std::to_string(images_.size(0)) + " images but " +
                    labels_name + " has " + std::to_string(labels_.size(0)) + " labels");
  }
  images_ = images_.reshape({images_.size(0), -1}).contiguous();
  labels_ = labels_.to(torch::kLong).contiguous();
  if (labels_.numel() > 0) {
    const int64_t lo = labels_.min().item<int64_t>();
    const int64_t hi = labels_.max().item<int64_t>();
    if (lo < 0 || hi >= kNumClasses) {
      throw DataError(labels_name + ": labels must be 0-9, found values from " +
                      std::to_string(lo) + " to " + std::to_string(hi));
    }
  }
}

Batch MnistDataset::get_stored(const torch::Tensor& indices) const {
  // The rows are gathered by the step's threads as they convert them (index_select checks the
  // indices here).
  return {images_, labels_.index_select(0, indices), 1.0 / 255.0, indices};
}

Batch MnistDataset::get(const torch::Tensor& indices, const torch::Device& device) const {
  // The uint8 rows first (4x less memory traffic), moved, then scaled to [0, 1] where they are.
  Batch b{images_.index_select(0, indices), labels_.index_select(0, indices), 1.0 / 255.0};
  if (!device.is_cpu()) {
    b.inputs = b.inputs.to(device, /*non_blocking=*/true);
    b.targets = b.targets.to(device, /*non_blocking=*/true);
  }
  return {b.float_inputs(), b.targets};
}

}  // namespace dtrain::data
