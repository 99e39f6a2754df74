#include <gtest/gtest.h>
#include <torch/types.h>
#include <torch/utils.h>

#include <sys/resource.h>
#include <zlib.h>

#include <fstream>
#include <iostream>

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

TEST(Mnist, StoredBatchIsThePixelsWithTheScaleOfTheFloatBatch) {
  const auto images = torch::randint(0, 256, {30, 784}, torch::kLong).to(torch::kUInt8);
  MnistDataset ds(images, torch::randint(0, 10, {30}, torch::kLong).to(torch::kUInt8));
  const auto indices = torch::tensor({29, 0, 7, 7}, torch::kLong);
  const Batch stored = ds.get_stored(indices);
  const Batch scaled = ds.get(indices, torch::kCPU);
  EXPECT_EQ(stored.inputs.scalar_type(), torch::kUInt8);
  // The rows are left for the step to gather.
  EXPECT_TRUE(torch::equal(stored.rows, indices));
  EXPECT_EQ(stored.size(), 4);
  EXPECT_TRUE(torch::equal(stored.stored_inputs(), images.index_select(0, indices)));
  EXPECT_TRUE(torch::equal(stored.targets, scaled.targets));
  EXPECT_DOUBLE_EQ(stored.input_scale, 1.0 / 255.0);
  EXPECT_TRUE(torch::equal(stored.float_inputs(), scaled.inputs));  // bit for bit
  EXPECT_EQ(scaled.input_scale, 1.0);
  EXPECT_TRUE(scaled.float_inputs().is_same(scaled.inputs));
  // A float batch with a scale is scaled into a new tensor; its own inputs stay as they are.
  const Batch halves{scaled.inputs.clone(), scaled.targets, 0.5};
  EXPECT_TRUE(torch::equal(halves.float_inputs(), scaled.inputs * 0.5));
  EXPECT_TRUE(torch::equal(halves.inputs, scaled.inputs));
}

TEST(Mnist, CountMismatchNamesBothFiles) {
  TempDir dir;
  write_split(dir.path(), "train", 20, 19, false);
  try {
    MnistDataset ds(dir.path(), Split::kTrain);
    FAIL();
  } catch (const DataError& e) {
    const std::string w = e.what();
    EXPECT_NE(w.find("declares 20 images"), std::string::npos) << w;
    EXPECT_NE(w.find("declares 19 labels"), std::string::npos) << w;
    EXPECT_NE(w.find("train-labels-idx1-ubyte"), std::string::npos) << w;
  }
}

TEST(Mnist, SplitsOfDifferentImageShapesAreRefusedNamingBothFiles) {
  TempDir dir;
  write_split(dir.path(), "train", 20, 20, false);
  write_bytes(dir / "t10k-images-idx3-ubyte",
              encode_idx(torch::zeros({10, 20, 20}, torch::kUInt8)));
  write_bytes(dir / "t10k-labels-idx1-ubyte", encode_idx(torch::zeros({10}, torch::kUInt8)));
  try {
    check_mnist_splits(dir.path());
    FAIL() << "expected DataError";
  } catch (const DataError& e) {
    const std::string w = e.what();
    EXPECT_NE(w.find("28x28"), std::string::npos) << w;
    EXPECT_NE(w.find("20x20"), std::string::npos) << w;
    EXPECT_NE(w.find("t10k-images-idx3-ubyte"), std::string::npos) << w;
  }
  write_split(dir.path(), "t10k", 10, 10, true);  // .gz beside the raw ones: raw is preferred
  EXPECT_THROW(check_mnist_splits(dir.path()), DataError);
  std::filesystem::remove(dir / "t10k-images-idx3-ubyte");
  std::filesystem::remove(dir / "t10k-labels-idx1-ubyte");
  EXPECT_NO_THROW(check_mnist_splits(dir.path()));
}

// A gzip bomb: 3 MB of .gz whose header declares 4,000,000 images, followed by 400 MB of
// zeros (not the 3.1 GB promised). Refused without holding what it inflates to.
void write_bomb(const std::filesystem::path& path) {
  std::ofstream out(path, std::ios::binary);
  z_stream zs{};
  ASSERT_EQ(deflateInit2(&zs, 1, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY), Z_OK);
  std::string in = encode_idx(torch::zeros({1, 28, 28}, torch::kUInt8)).substr(0, 16);
  in[4] = 0, in[5] = 0x3d, in[6] = 0x09, in[7] = 0x00;  // 4,000,000 images
  std::vector<char> buf(1 << 20);
  for (int chunk = 0; chunk <= 400; ++chunk) {
    if (chunk > 0) in.assign(1 << 20, '\0');
    zs.next_in = reinterpret_cast<Bytef*>(in.data());
    zs.avail_in = static_cast<uInt>(in.size());
    const int flush = chunk == 400 ? Z_FINISH : Z_NO_FLUSH;
    do {
      zs.next_out = reinterpret_cast<Bytef*>(buf.data());
      zs.avail_out = static_cast<uInt>(buf.size());
      deflate(&zs, flush);
      out.write(buf.data(), static_cast<std::streamsize>(buf.size() - zs.avail_out));
    } while (zs.avail_out == 0);
  }
  deflateEnd(&zs);
}

int64_t peak_rss_kib() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return u.ru_maxrss;
}

TEST(Mnist, GzipBombIsRefusedWithoutInflatingIt) {
  TempDir dir;
  write_bomb(dir / "train-images-idx3-ubyte.gz");
  const int64_t baseline = peak_rss_kib();
  // Labels that disagree: refused from the headers alone.
  write_bytes(dir / "train-labels-idx1-ubyte", encode_idx(torch::zeros({60000}, torch::kUInt8)));
  try {
    MnistDataset ds(dir.path(), Split::kTrain);
    FAIL() << "expected DataError";
  } catch (const DataError& e) {
    EXPECT_NE(std::string(e.what()).find("declares 4000000 images"), std::string::npos) << e.what();
  }
  // Labels that agree: the stream is counted (keeping nothing) and found short.
  write_bytes(dir / "train-labels-idx1-ubyte", encode_idx(torch::zeros({4000000}, torch::kUInt8)));
  try {
    MnistDataset ds(dir.path(), Split::kTrain);
    FAIL() << "expected DataError";
  } catch (const DataError& e) {
    EXPECT_NE(std::string(e.what()).find("(truncated)"), std::string::npos) << e.what();
  }
  const int64_t grew_mib = (peak_rss_kib() - baseline) / 1024;
  std::cout << "peak memory over the baseline while refusing the bomb: " << grew_mib << " MiB\n";
  EXPECT_LT(grew_mib, 100);
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
