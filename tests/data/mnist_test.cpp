#include <gtest/gtest.h>
#include <torch/types.h>
#include <torch/utils.h>

#include "core/errors.h"
#include "data/idx.h"
#include "data/mnist.h"
#include "test_util.h"

namespace dtrain::data {
namespace {

using testing::TempDir;
using testing::write_bytes;

void write_split(const std::filesystem::path& dir, const std::string& prefix, int64_t n,
                 int64_t labels_n, bool gz, int label_value = 3) {
  auto images = torch::randint(0, 256, {n, 28, 28}, torch::kLong).to(torch::kUInt8);
  auto labels = torch::full({labels_n}, label_value, torch::kUInt8);
  std::string ib = encode_idx(images), lb = encode_idx(labels);
  const std::string ext = gz ? ".gz" : "";
  write_bytes(dir / (prefix + "-images-idx3-ubyte" + ext), gz ? gzip_compress(ib) : ib);
  write_bytes(dir / (prefix + "-labels-idx1-ubyte" + ext), gz ? gzip_compress(lb) : lb);
}

TEST(Mnist, FindsGzipFilesInSubfolders) {
  TempDir dir;
  write_split(dir / "a" / "b", "train", 20, 20, true);
  write_split(dir / "c", "t10k", 10, 10, false);
  MnistDataset train(dir.path(), Split::kTrain);
  MnistDataset test(dir.path(), Split::kTest);
  EXPECT_EQ(train.size(), 20);
  EXPECT_EQ(test.size(), 10);
  EXPECT_EQ(train.features(), 784);
  EXPECT_EQ(train.images().scalar_type(), torch::kUInt8);  // kept compact
}

TEST(Mnist, BatchIsScaledFloatAndLabels) {
  auto images = torch::tensor({0, 255, 51, 102}, torch::kUInt8).reshape({2, 2});
  MnistDataset ds(images, torch::tensor({1, 7}, torch::kUInt8));
  Batch b = ds.get(torch::tensor({1, 0}, torch::kLong), torch::kCPU);
  EXPECT_EQ(b.inputs.scalar_type(), torch::kFloat32);
  EXPECT_NEAR(b.inputs[0][0].item<float>(), 0.2f, 1e-6);
  EXPECT_NEAR(b.inputs[1][1].item<float>(), 1.0f, 1e-6);
  EXPECT_EQ(b.targets[0].item<int64_t>(), 7);
}

TEST(Mnist, CountMismatchNamesBothFiles) {
  TempDir dir;
  write_split(dir.path(), "train", 20, 19, false);
  try {
    MnistDataset ds(dir.path(), Split::kTrain);
    FAIL();
  } catch (const DataError& e) {
    const std::string w = e.what();
    EXPECT_NE(w.find("has 20 images"), std::string::npos) << w;
    EXPECT_NE(w.find("has 19 labels"), std::string::npos) << w;
    EXPECT_NE(w.find("train-labels-idx1-ubyte"), std::string::npos) << w;
  }
}

TEST(Mnist, LabelOutOfRange) {
  TempDir dir;
  write_split(dir.path(), "train", 4, 4, false, 12);
  EXPECT_THROW(MnistDataset(dir.path(), Split::kTrain), DataError);
}

TEST(Mnist, MissingFilesSayWhatAndWhere) {
  TempDir dir;
  try {
    MnistDataset ds(dir.path(), Split::kTest);
    FAIL();
  } catch (const DataError& e) {
    EXPECT_NE(std::string(e.what()).find("t10k-images-idx3-ubyte"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find(dir.path().string()), std::string::npos);
  }
  EXPECT_THROW(MnistDataset(dir / "does-not-exist", Split::kTrain), DataError);
}

TEST(Mnist, RealFilesLoad) {
  DTRAIN_REQUIRE_MNIST(mnist);
  MnistDataset train(mnist, Split::kTrain);
  MnistDataset test(mnist, Split::kTest);
  EXPECT_EQ(train.size(), 60000);
  EXPECT_EQ(test.size(), 10000);
  EXPECT_EQ(train.features(), 784);
}

}  // namespace
}  // namespace dtrain::data
