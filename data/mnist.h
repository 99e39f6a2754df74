// The MNIST data set: four IDX files, found anywhere under a folder, raw or gzip-compressed.
#pragma once

#include <filesystem>
#include <string>

#include "core/data_source.h"

namespace dtrain::data {

enum class Split { kTrain, kTest };

/// The two files of one split.
struct MnistFiles {
  std::filesystem::path images;
  std::filesystem::path labels;
};

/// Finds `<prefix>-images-idx3-ubyte[.gz]` and `<prefix>-labels-idx1-ubyte[.gz]` in `dir` or any
/// folder below it (prefix "train" or "t10k"). Throws DataError naming the folder and the
/// missing file; prefers the shallowest match, raw over .gz.
MnistFiles find_mnist_files(const std::filesystem::path& dir, Split split);

/// Reads the four headers under `dir` (see find_mnist_files) and cross-checks them before any
/// payload is read: image and label counts of each split, element types, and the image shape of
/// the training split against the test split's. Throws DataError naming the files.
void check_mnist_splits(const std::filesystem::path& dir);

/// Images kept as uint8 [N, rows*cols]; batches are converted to float in [0, 1] on demand, so
/// memory stays near the size of the files.
class MnistDataset : public BatchSource {
 public:
  /// Loads and validates one split from `dir` (see find_mnist_files).
  MnistDataset(const std::filesystem::path& dir, Split split);
  /// From already-loaded tensors: images uint8 [N, H, W] or [N, F], labels uint8 or int64 [N].
  MnistDataset(torch::Tensor images, torch::Tensor labels, const std::string& name = "memory");

  int64_t size() const override { return images_.size(0); }
  int64_t features() const { return images_.size(1); }
  Batch get(const torch::Tensor& indices, const torch::Device& device) const override;
  /// The uint8 rows, with input_scale 1/255.
  Batch get_stored(const torch::Tensor& indices) const override;

  const torch::Tensor& images() const { return images_; }
  const torch::Tensor& labels() const { return labels_; }

 private:
  void check(const std::string& images_name, const std::string& labels_name);

  torch::Tensor images_;  // uint8 [N, F]
  torch::Tensor labels_;  // int64 [N]
};

}  // namespace dtrain::data
