// Data layer: IDX readers on the real Fashion-MNIST and on files the test writes (plain and gzipped, intact and
// damaged), data set dispatch and subsets, sharding of the global batch, and epoch permutations.
#include <gtest/gtest.h>
#include <zlib.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <set>
#include <string>
#include <vector>

#include "common/errors.h"
#include "tests/data_test_util.h"
#include "trainer/data/data.h"

namespace tempered {
namespace {

namespace fs = std::filesystem;

const char kFashionMnistDir[] = "/usr/share/datasets/fashion-mnist";

// ---------------------------------------------------------------------------------------------------------------
// Writing IDX files.

void PutBigEndian(std::string* bytes, uint32_t value) {
  for (int shift = 24; shift >= 0; shift -= 8) bytes->push_back(static_cast<char>((value >> shift) & 0xff));
}

// An IDX file: magic, sizes, then `data`.
std::string IdxBytes(uint32_t magic, const std::vector<uint32_t>& sizes, const std::string& data) {
  std::string bytes;
  PutBigEndian(&bytes, magic);
  for (uint32_t size : sizes) PutBigEndian(&bytes, size);
  return bytes + data;
}

// `count` images of rows x cols whose pixel (n, y, x) is (7n + 3y + x) mod 256.
std::string ImagePixels(int count, int rows, int cols) {
  std::string pixels;
  for (int n = 0; n < count; ++n) {
    for (int y = 0; y < rows; ++y) {
      for (int x = 0; x < cols; ++x) pixels.push_back(static_cast<char>((7 * n + 3 * y + x) % 256));
    }
  }
  return pixels;
}

std::string ImagesIdx(int count, int rows = 28, int cols = 28) {
  return IdxBytes(0x803, {uint32_t(count), uint32_t(rows), uint32_t(cols)}, ImagePixels(count, rows, cols));
}

std::string LabelsIdx(const std::vector<int>& labels) {
  std::string data;
  for (int label : labels) data.push_back(static_cast<char>(label));
  return IdxBytes(0x801, {uint32_t(labels.size())}, data);
}

std::string Gzip(const std::string& bytes) {
  uLongf size = compressBound(bytes.size()) + 32;
  std::string out(size, '\0');
  // deflateInit2 with windowBits 16 + 15 writes the gzip wrapper (header and CRC-32 trailer).
  z_stream stream{};
  EXPECT_EQ(deflateInit2(&stream, 9, Z_DEFLATED, 16 + 15, 8, Z_DEFAULT_STRATEGY), Z_OK);
  stream.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(bytes.data()));
  stream.avail_in = static_cast<uInt>(bytes.size());
  stream.next_out = reinterpret_cast<Bytef*>(out.data());
  stream.avail_out = static_cast<uInt>(out.size());
  EXPECT_EQ(deflate(&stream, Z_FINISH), Z_STREAM_END);
  out.resize(stream.total_out);
  deflateEnd(&stream);
  return out;
}

// Writes a Fashion-MNIST-named train split into `dir`.
void WriteFashionMnist(const TempDir& dir, const std::string& images, const std::string& labels) {
  dir.Write("train-images-idx3-ubyte.gz", Gzip(images));
  dir.Write("train-labels-idx1-ubyte.gz", Gzip(labels));
}

// ---------------------------------------------------------------------------------------------------------------
// The real data set.

TEST(FashionMnistTest, LoadsTrainAndTestSplits) {
  const auto start = std::chrono::steady_clock::now();
  const Dataset train = LoadFashionMnist(kFashionMnistDir, /*train=*/true);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::cout << "[ timing   ] 60k Fashion-MNIST training images and labels loaded in " << seconds << " s\n";
  const Dataset test = LoadFashionMnist(kFashionMnistDir, /*train=*/false);

  EXPECT_EQ(train.images.sizes(), (std::vector<int64_t>{60000, 1, 28, 28}));
  EXPECT_EQ(test.images.sizes(), (std::vector<int64_t>{10000, 1, 28, 28}));
  EXPECT_EQ(train.images.dtype(), torch::kUInt8);
  EXPECT_EQ(train.labels.dtype(), torch::kInt64);
  EXPECT_EQ(train.num_classes, 10);
  // Fashion-MNIST is balanced: 6000 training and 1000 test images per class.
  EXPECT_TRUE(torch::equal(torch::bincount(train.labels), torch::full({10}, 6000, torch::kInt64)));
  EXPECT_TRUE(torch::equal(torch::bincount(test.labels), torch::full({10}, 1000, torch::kInt64)));
  // The first images of both splits are ankle boots (class 9); pixel sums computed once with Python's gzip.
  EXPECT_EQ(train.labels[0].item<int64_t>(), 9);
  EXPECT_EQ(test.labels[0].item<int64_t>(), 9);
  EXPECT_EQ(train.images.sum(torch::kInt64).item<int64_t>(), 3431114169);
  EXPECT_EQ(test.images.sum(torch::kInt64).item<int64_t>(), 573469082);
  // Black background: the corners are almost always 0, and every image has some bright pixels.
  EXPECT_GT(train.images.index({torch::indexing::Slice(), 0, 0, 0}).eq(0).sum().item<int64_t>(), 59000);
  EXPECT_TRUE(train.images.amax({1, 2, 3}).gt(100).all().item<bool>());
}

TEST(LoadDatasetTest, DefaultsToDebianFashionMnistAndTakesSubsets) {
  DataConfig config;
  config.set_dataset("fashion_mnist");
  config.set_train_subset(1000);
  config.set_test_subset(300);
  const Dataset train = LoadDataset(config, /*train=*/true);
  const Dataset test = LoadDataset(config, /*train=*/false);
  const Dataset full_test = LoadFashionMnist(kFashionMnistDir, /*train=*/false);
  EXPECT_EQ(train.size(), 1000);
  EXPECT_EQ(test.size(), 300);
  EXPECT_EQ(test.num_classes, 10);
  // The subset is the stratified sample (StratifiedSample), each row's file position kept in file_index.
  const torch::Tensor rows = torch::tensor(StratifiedSample(full_test.labels, 300), torch::kInt64);
  EXPECT_TRUE(torch::equal(test.file_index, rows));
  EXPECT_TRUE(torch::equal(test.images, full_test.images.index_select(0, rows)));
  EXPECT_TRUE(torch::equal(test.labels, full_test.labels.index_select(0, rows)));
  EXPECT_EQ(std::get<0>(torch::_unique(test.labels)).numel(), 10) << "every class";
}

TEST(LoadDatasetTest, RejectsBadNamesDirectoriesAndSubsets) {
  DataConfig config;
  config.set_dataset("imagenet_21k");
  ExpectUserError([&] { LoadDataset(config, true); }, "imagenet_21k",
                  "known: fashion_mnist, cifar10, cifar100, svhn, imagefolder");

  config.set_dataset("fashion_mnist");
  config.set_data_dir("/nonexistent/fmnist");
  ExpectUserError([&] { LoadDataset(config, true); }, "/nonexistent/fmnist", "data.data_dir");

  config.clear_data_dir();
  config.set_test_subset(10001);
  ExpectUserError([&] { LoadDataset(config, false); }, "data.test_subset", "10001");
}

// ---------------------------------------------------------------------------------------------------------------
// IDX files written by the test.

TEST(IdxTest, PlainAndGzippedFilesRoundTrip) {
  TempDir dir;
  const std::string images = ImagesIdx(5, 4, 3);
  const std::string labels = LabelsIdx({3, 1, 4, 1, 5});
  for (bool gzipped : {false, true}) {
    const std::string suffix = gzipped ? ".gz" : "";
    const torch::Tensor read_images = ReadIdxImages(dir.Write("images" + suffix, gzipped ? Gzip(images) : images));
    const torch::Tensor read_labels = ReadIdxLabels(dir.Write("labels" + suffix, gzipped ? Gzip(labels) : labels));
    ASSERT_EQ(read_images.sizes(), (std::vector<int64_t>{5, 1, 4, 3}));
    for (int n = 0; n < 5; ++n) {
      for (int y = 0; y < 4; ++y) {
        for (int x = 0; x < 3; ++x) EXPECT_EQ(read_images[n][0][y][x].item<int>(), (7 * n + 3 * y + x) % 256);
      }
    }
    EXPECT_TRUE(torch::equal(read_labels, torch::tensor({3, 1, 4, 1, 5}, torch::kInt64)));
  }
}

TEST(IdxTest, EmptyFileHasNoItems) {
  TempDir dir;
  EXPECT_EQ(ReadIdxLabels(dir.Write("labels.gz", Gzip(LabelsIdx({})))).numel(), 0);
}

TEST(IdxTest, DamagedFilesThrowUserErrorsNamingTheFile) {
  TempDir dir;
  const std::string images = ImagesIdx(10);
  for (bool gzipped : {false, true}) {
    auto write = [&](const std::string& name, const std::string& bytes) {
      return gzipped ? dir.Write(name + ".gz", Gzip(bytes)) : dir.Write(name, bytes);
    };
    std::string path = write("short_header", images.substr(0, 7));
    ExpectUserError([&] { ReadIdxImages(path); }, path, "expected a 16-byte IDX images header, got 7 bytes");
    path = write("short_data", images.substr(0, 16 + 1000));
    ExpectUserError([&] { ReadIdxImages(path); }, path, "expected 7840 bytes of image data, got 1000");
    path = write("labels_as_images", LabelsIdx({1, 2}));
    ExpectUserError([&] { ReadIdxImages(path); }, path, "magic number 0x00000801, expected 0x00000803");
    path = write("trailing_data", images + "xyz");
    ExpectUserError([&] { ReadIdxImages(path); }, path, "more data than");
    path = write("zero_rows", IdxBytes(0x803, {10, 0, 28}, ""));
    ExpectUserError([&] { ReadIdxImages(path); }, path, "zero images size");
    path = write("huge", IdxBytes(0x803, {0xffffffff, 0xffffffff, 0xffffffff}, ""));
    ExpectUserError([&] { ReadIdxImages(path); }, path, "more than 1 TiB");
  }
  const std::string missing = dir.path() + "/missing.gz";
  ExpectUserError([&] { ReadIdxLabels(missing); }, missing, "No such file or directory");
  ExpectUserError([&] { ReadIdxLabels(dir.path()); }, dir.path(), "is a directory");
}

TEST(IdxTest, CorruptGzipStreamsThrowUserErrors) {
  TempDir dir;
  const std::string gz = Gzip(ImagesIdx(100));
  // Damage the deflate data (after the 10-byte gzip header), and separately cut the stream short.
  std::string corrupt = gz;
  for (size_t i = 40; i < corrupt.size() - 8; i += 97) corrupt[i] = static_cast<char>(corrupt[i] ^ 0x5a);
  const std::string corrupt_path = dir.Write("corrupt.gz", corrupt);
  ExpectUserError([&] { ReadIdxImages(corrupt_path); }, corrupt_path, "");
  const std::string cut_path = dir.Write("cut.gz", gz.substr(0, gz.size() / 2));
  ExpectUserError([&] { ReadIdxImages(cut_path); }, cut_path, "is truncated");
  const std::string no_trailer_path = dir.Write("no_trailer.gz", gz.substr(0, gz.size() - 4));
  ExpectUserError([&] { ReadIdxImages(no_trailer_path); }, no_trailer_path, "gzip stream ends early");
  // A stream whose data is intact but whose CRC-32 is wrong: caught because the reader reads to the very end.
  std::string bad_crc = gz;
  bad_crc[bad_crc.size() - 8] = static_cast<char>(bad_crc[bad_crc.size() - 8] ^ 1);
  const std::string bad_crc_path = dir.Write("bad_crc.gz", bad_crc);
  ExpectUserError([&] { ReadIdxImages(bad_crc_path); }, bad_crc_path, "not a valid gzip stream");
}

// Every prefix of a gzip file and every single-byte corruption either reads the same data (a byte zlib ignores,
// e.g. the header's time stamp) or throws a UserError: never a crash, never silently different data.
TEST(IdxTest, EveryTruncationAndByteFlipIsCaught) {
  TempDir dir;
  const std::string plain = LabelsIdx({1, 2, 3, 4, 5, 6, 7, 8, 9});
  const std::string gz = Gzip(plain);
  const torch::Tensor expected = torch::arange(1, 10, torch::kInt64);
  for (size_t length = 0; length < gz.size(); ++length) {
    const std::string path = dir.Write("prefix.gz", gz.substr(0, length));
    ExpectUserError([&] { ReadIdxLabels(path); }, path, "");
  }
  for (size_t i = 0; i < gz.size(); ++i) {
    std::string flipped = gz;
    flipped[i] = static_cast<char>(flipped[i] ^ 0x10);
    const std::string path = dir.Write("flipped.gz", flipped);
    try {
      EXPECT_TRUE(torch::equal(ReadIdxLabels(path), expected)) << "byte " << i;
    } catch (const UserError& error) {
      EXPECT_NE(std::string(error.what()).find(path), std::string::npos) << error.what();
    }
  }
  const std::string junk_path = dir.Write("junk_after.gz", gz + "junk");
  ExpectUserError([&] { ReadIdxLabels(junk_path); }, junk_path, "");
  // gzip allows concatenated members (`cat a.gz b.gz`): they read as one stream.
  const std::string split_path = dir.Write("two_members.gz", Gzip(plain.substr(0, 11)) + Gzip(plain.substr(11)));
  EXPECT_TRUE(torch::equal(ReadIdxLabels(split_path), expected));
}

TEST(FashionMnistTest, RejectsBadLabelsAndCountMismatches) {
  {
    TempDir dir;
    WriteFashionMnist(dir, ImagesIdx(3), LabelsIdx({0, 10, 2}));
    const std::string labels = dir.path() + "/train-labels-idx1-ubyte.gz";
    ExpectUserError([&] { LoadFashionMnist(dir.path(), true); }, labels, "label 10 at index 1, expected labels in [0, 10)");
  }
  {
    TempDir dir;
    WriteFashionMnist(dir, ImagesIdx(3), LabelsIdx({0, 1}));
    const std::string images = dir.path() + "/train-images-idx3-ubyte.gz";
    const std::string labels = dir.path() + "/train-labels-idx1-ubyte.gz";
    ExpectUserError([&] { LoadFashionMnist(dir.path(), true); }, images, "has 2 labels but");
    ExpectUserError([&] { LoadFashionMnist(dir.path(), true); }, labels, "has 3 images");
  }
  {
    TempDir dir;
    WriteFashionMnist(dir, ImagesIdx(3, 32, 32), LabelsIdx({0, 1, 2}));
    ExpectUserError([&] { LoadFashionMnist(dir.path(), true); }, dir.path(), "expected 28x28");
  }
  {
    TempDir dir;
    const std::string images = dir.Write("train-images-idx3-ubyte.gz", Gzip(ImagesIdx(3)));
    ExpectUserError([&] { LoadFashionMnist(dir.path(), true); }, dir.path() + "/train-labels-idx1-ubyte.gz",
                    "Cannot open");
  }
  ExpectUserError([&] { LoadFashionMnist("/nonexistent/dir", true); }, "/nonexistent/dir", "does not exist");
}

// ---------------------------------------------------------------------------------------------------------------
// Sharding and permutations.

TEST(ShardTest, RanksCoverTheGlobalBatchInContiguousBalancedBlocks) {
  for (int world = 1; world <= 5; ++world) {
    for (int64_t batch : {0, 1, 3, 7, 64, 255, 256}) {
      int64_t next = 0;
      for (int rank = 0; rank < world; ++rank) {
        const Shard shard = ShardOf(batch, rank, world);
        EXPECT_EQ(shard.offset, next) << "batch " << batch << " rank " << rank << "/" << world;
        // The first batch % world ranks take one more row.
        EXPECT_EQ(shard.count, batch / world + (rank < batch % world ? 1 : 0));
        next += shard.count;
      }
      EXPECT_EQ(next, batch) << "batch " << batch << " world " << world;
    }
  }
}

TEST(PermutationTest, IsADeterministicPermutationThatChangesWithEpochAndSeed) {
  const int64_t n = 1000;
  std::vector<int64_t> sorted = EpochPermutation(n, 42, 3);
  std::sort(sorted.begin(), sorted.end());
  std::vector<int64_t> identity(n);
  std::iota(identity.begin(), identity.end(), 0);
  EXPECT_EQ(sorted, identity);

  EXPECT_EQ(EpochPermutation(n, 42, 3), EpochPermutation(n, 42, 3));
  EXPECT_NE(EpochPermutation(n, 42, 3), EpochPermutation(n, 42, 4));
  EXPECT_NE(EpochPermutation(n, 42, 3), EpochPermutation(n, 43, 3));
  EXPECT_NE(EpochPermutation(n, 42, 3), identity);
  EXPECT_TRUE(EpochPermutation(0, 1, 0).empty());
  EXPECT_EQ(EpochPermutation(1, 1, 0), std::vector<int64_t>{0});
  // Golden order: it must not change with the compiler or standard library (mt19937_64 + our own Fisher-Yates).
  EXPECT_EQ(EpochPermutation(10, 42, 0), (std::vector<int64_t>{1, 4, 3, 6, 2, 8, 7, 0, 9, 5}));
}

TEST(StepsPerEpochTest, DropsThePartialLastBatch) {
  EXPECT_EQ(StepsPerEpoch(60000, 256), 234);
  EXPECT_EQ(StepsPerEpoch(512, 256), 2);
  EXPECT_EQ(StepsPerEpoch(255, 256), 0);
  EXPECT_EQ(StepsPerEpoch(0, 7), 0);
}

// Labels stored class by class, as an image folder lists its files: `per_class[c]` images of class c.
torch::Tensor ClassOrderedLabels(const std::vector<int64_t>& per_class) {
  std::vector<int64_t> labels;
  for (size_t c = 0; c < per_class.size(); ++c) labels.insert(labels.end(), per_class[c], static_cast<int64_t>(c));
  return torch::tensor(labels, torch::kInt64);
}

std::vector<int64_t> ClassCounts(const torch::Tensor& labels, const std::vector<int64_t>& rows, int64_t classes) {
  std::vector<int64_t> counts(classes, 0);
  for (int64_t row : rows) ++counts[labels[row].item<int64_t>()];
  return counts;
}

// The curve's and the metrics' samples of a class-ordered folder cover every class in proportion, where the first
// rows held one class.
TEST(StratifiedSample, EveryPrefixHoldsEachClassInProportion) {
  const std::vector<int64_t> per_class = {500, 300, 200, 1000, 7};
  const torch::Tensor labels = ClassOrderedLabels(per_class);
  for (int64_t n : {5, 10, 100, 1000, 2006}) {
    const std::vector<int64_t> rows = StratifiedSample(labels, n);
    ASSERT_EQ(static_cast<int64_t>(rows.size()), n);
    EXPECT_TRUE(std::is_sorted(rows.begin(), rows.end()));
    EXPECT_EQ(std::set<int64_t>(rows.begin(), rows.end()).size(), rows.size()) << "no row twice";
    const std::vector<int64_t> counts = ClassCounts(labels, rows, 5);
    for (size_t c = 0; c < per_class.size(); ++c) {
      const double expected = static_cast<double>(n) * per_class[c] / 2007.0;
      EXPECT_LE(std::abs(counts[c] - expected), 1.0) << "class " << c << " in a sample of " << n;
    }
  }
}

TEST(StratifiedSample, FixedNestedAndWholeWhenLarge) {
  const torch::Tensor labels = ClassOrderedLabels({40, 40, 40});
  EXPECT_EQ(StratifiedSample(labels, 30), StratifiedSample(labels, 30)) << "a fixed seed: the same every call";
  const std::vector<int64_t> small = StratifiedSample(labels, 12), large = StratifiedSample(labels, 60);
  EXPECT_TRUE(std::includes(large.begin(), large.end(), small.begin(), small.end())) << "smaller inside larger";
  std::vector<int64_t> all(120);
  std::iota(all.begin(), all.end(), 0);
  EXPECT_EQ(StratifiedSample(labels, 120), all);
  EXPECT_EQ(StratifiedSample(labels, 500), all);
  const std::vector<int64_t> first = {0, 1, 2, 3, 4, 5};
  EXPECT_NE(StratifiedSample(labels, 6), first) << "not the first rows";
}

TEST(StratifiedSample, SelectRowsKeepsTheFileIndex) {
  Dataset data;
  data.images = torch::arange(6, torch::kUInt8).reshape({6, 1, 1, 1});
  data.labels = ClassOrderedLabels({3, 3});
  data.file_index = torch::arange(6, torch::kInt64);
  data.num_classes = 2;
  const Dataset picked = SelectRows(SelectRows(data, {1, 3, 5}), {0, 2});
  EXPECT_EQ(picked.file_index[0].item<int64_t>(), 1);
  EXPECT_EQ(picked.file_index[1].item<int64_t>(), 5);
  EXPECT_EQ(picked.images[1].item<uint8_t>(), 5);
  EXPECT_EQ(SampleDescription(1000, 10000), "class-stratified 1000 of 10000");
  EXPECT_EQ(SampleDescription(10000, 10000), "all 10000");
}

}  // namespace
}  // namespace tempered
