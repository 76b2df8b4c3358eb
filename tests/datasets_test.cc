// The native data set formats on files the test writes: CIFAR-10/100 binary records by hand, SVHN .mat files with
// matio, image folders with OpenCV's encoders. Shapes, labels, pixel values, dispatch through LoadDataset, and a
// UserError naming the file for every truncated, corrupt or wrong-sized input.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "common/errors.h"
#include "tests/data_test_util.h"
#include "trainer/data/augment.h"
#include "trainer/data/data.h"

#if TEMPERED_DATASETS
#include <matio.h>

#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#endif

namespace tempered {
namespace {

// ---------------------------------------------------------------------------------------------------------------
// CIFAR, binary version: records of label byte(s) then 3072 pixels (planes R, G, B of 32x32, row-major).

// Pixel byte j of image n: a pattern that differs between images, channels, rows and columns.
uint8_t CifarPixel(int n, int j) { return static_cast<uint8_t>((11 * n + 7 * j + j / 1024) % 256); }

// Records for images first .. first + count - 1; `labels(n)` gives each record's label bytes.
template <typename Labels>
std::string CifarRecords(int first, int count, Labels labels) {
  std::string bytes;
  for (int n = first; n < first + count; ++n) {
    bytes += labels(n);
    for (int j = 0; j < 3072; ++j) bytes.push_back(static_cast<char>(CifarPixel(n, j)));
  }
  return bytes;
}

std::string Cifar10Label(int n) { return std::string(1, static_cast<char>(n % 10)); }
// Coarse label n % 20, fine label (37 n) % 100: the reader must take the second byte.
std::string Cifar100Labels(int n) { return {static_cast<char>(n % 20), static_cast<char>((37 * n) % 100)}; }

void ExpectCifarImages(const Dataset& data, int count) {
  ASSERT_EQ(data.images.sizes(), (std::vector<int64_t>{count, 3, 32, 32}));
  ASSERT_EQ(data.images.dtype(), torch::kUInt8);
  const torch::Tensor flat = data.images.reshape({count, 3072});
  for (int n = 0; n < count; ++n) {
    std::vector<uint8_t> expected(3072);
    for (int j = 0; j < 3072; ++j) expected[j] = CifarPixel(n, j);
    EXPECT_TRUE(torch::equal(flat[n], torch::from_blob(expected.data(), {3072}, torch::kUInt8))) << "image " << n;
  }
  // Channel 0 is red: the first 1024 bytes of the record, row by row.
  EXPECT_EQ(data.images[1][0][0][1].item<int>(), CifarPixel(1, 1));
  EXPECT_EQ(data.images[1][2][31][31].item<int>(), CifarPixel(1, 3071));
}

// CIFAR-10: the five training batches in order (uneven sizes), and the test batch.
void WriteCifar10(const TempDir& dir, int test_count = 4) {
  const int sizes[5] = {3, 2, 1, 2, 2};
  int first = 0;
  for (int b = 0; b < 5; ++b) {
    dir.Write("data_batch_" + std::to_string(b + 1) + ".bin", CifarRecords(first, sizes[b], Cifar10Label));
    first += sizes[b];
  }
  dir.Write("test_batch.bin", CifarRecords(0, test_count, Cifar10Label));
}

TEST(CifarTest, Cifar10ReadsTheFiveTrainingBatchesInOrderAndTheTestBatch) {
  TempDir dir;
  WriteCifar10(dir);
  const Dataset train = LoadCifar10(dir.path(), /*train=*/true);
  ExpectCifarImages(train, 10);
  EXPECT_TRUE(torch::equal(train.labels, torch::arange(10, torch::kInt64)));
  EXPECT_EQ(train.num_classes, 10);
  const Dataset test = LoadCifar10(dir.path(), /*train=*/false);
  ExpectCifarImages(test, 4);
  EXPECT_TRUE(torch::equal(test.labels, torch::arange(4, torch::kInt64)));
}

TEST(CifarTest, Cifar100UsesTheFineLabel) {
  TempDir dir;
  dir.Write("train.bin", CifarRecords(0, 6, Cifar100Labels));
  dir.Write("test.bin", CifarRecords(0, 3, Cifar100Labels));
  const Dataset train = LoadCifar100(dir.path(), /*train=*/true);
  ExpectCifarImages(train, 6);
  EXPECT_TRUE(torch::equal(train.labels, torch::tensor({0, 37, 74, 11, 48, 85}, torch::kInt64)));
  EXPECT_EQ(train.num_classes, 100);
  EXPECT_EQ(LoadCifar100(dir.path(), /*train=*/false).size(), 3);
}

TEST(CifarTest, BadFilesThrowUserErrorsNamingTheFile) {
  {
    TempDir dir;
    WriteCifar10(dir);
    const std::string path = dir.Write("data_batch_3.bin", CifarRecords(0, 2, Cifar10Label).substr(0, 3073 + 100));
    ExpectUserError([&] { LoadCifar10(dir.path(), true); }, path,
                    "has 3173 bytes, not a positive multiple of CIFAR-10's 3073-byte records");
    dir.Write("data_batch_3.bin", "");
    ExpectUserError([&] { LoadCifar10(dir.path(), true); }, path, "has 0 bytes");
    std::filesystem::remove(path);
    ExpectUserError([&] { LoadCifar10(dir.path(), true); }, path, "Cannot open");
  }
  {
    TempDir dir;
    WriteCifar10(dir);
    const auto label_n = [](int n) { return std::string(1, static_cast<char>(n)); };
    const std::string path = dir.Write("test_batch.bin", CifarRecords(0, 12, label_n));
    ExpectUserError([&] { LoadCifar10(dir.path(), false); }, path,
                    "has label 10 at index 10, expected labels in [0, 10)");
  }
  {
    // CIFAR-100 records (3074 bytes) are not CIFAR-10 records, and the other way round.
    TempDir dir;
    const std::string path = dir.Write("test.bin", CifarRecords(0, 3, Cifar10Label));
    ExpectUserError([&] { LoadCifar100(dir.path(), false); }, path, "CIFAR-100's 3074-byte records");
    const std::string fine = dir.Write("train.bin", CifarRecords(0, 2, [](int) { return std::string("\x01\x64"); }));
    ExpectUserError([&] { LoadCifar100(dir.path(), true); }, fine,
                    "has label 100 at index 0, expected labels in [0, 100)");
  }
}

TEST(CifarTest, LoadDatasetDispatchesAndNeedsADataDir) {
  TempDir dir;
  WriteCifar10(dir, 8);
  DataConfig config;
  config.set_dataset("cifar10");
  ExpectUserError([&] { LoadDataset(config, true); }, "data.data_dir", "cifar10");
  config.set_data_dir(dir.path());
  config.set_train_subset(7);
  const Dataset train = LoadDataset(config, true);
  EXPECT_EQ(train.size(), 7);
  EXPECT_TRUE(torch::equal(train.labels, torch::arange(7, torch::kInt64)));
  EXPECT_EQ(LoadDataset(config, false).size(), 8);
  // No augmentation change for CIFAR: Gaussian blur is ImageNet's only.
  EXPECT_EQ(AugmentOptionsFrom(config).blur_prob, 0.0f);
}

#if TEMPERED_DATASETS

// ---------------------------------------------------------------------------------------------------------------
// SVHN: X is uint8 32x32x3xN in MATLAB's column-major order, y holds labels 1..10 (10 = digit 0).

struct SvhnFile {
  torch::Tensor images;         // uint8 (N, 3, 32, 32)
  std::vector<int64_t> labels;  // 1..10 as stored
  matio_classes label_class = MAT_C_UINT8;
  std::vector<size_t> x_dims;   // default {32, 32, 3, N}
};

SvhnFile RandomSvhn(int64_t count, uint64_t seed) {
  torch::manual_seed(seed);
  SvhnFile file;
  file.images = torch::randint(0, 256, {count, 3, 32, 32}, torch::kUInt8);
  for (int64_t n = 0; n < count; ++n) file.labels.push_back(1 + (3 * n) % 10);
  return file;
}

// Writes `file` with matio as MAT v5 (compressed or not) or v7.3 (HDF5); returns false where matio cannot.
bool WriteSvhn(const std::string& path, const SvhnFile& file, mat_ft version, matio_compression compression) {
  mat_t* mat = Mat_CreateVer(path.c_str(), nullptr, version);
  if (mat == nullptr) return false;
  const int64_t count = file.images.size(0);
  // Row-major (N, 3, W, H) is column-major H x W x 3 x N.
  torch::Tensor x = file.images.transpose(2, 3).contiguous();
  std::vector<size_t> x_dims = file.x_dims.empty() ? std::vector<size_t>{32, 32, 3, size_t(count)} : file.x_dims;
  matvar_t* x_var = Mat_VarCreate("X", MAT_C_UINT8, MAT_T_UINT8, static_cast<int>(x_dims.size()), x_dims.data(),
                                  x.data_ptr<uint8_t>(), 0);
  size_t y_dims[2] = {file.labels.size(), 1};
  std::vector<uint8_t> y8(file.labels.begin(), file.labels.end());
  std::vector<double> y64(file.labels.begin(), file.labels.end());
  matvar_t* y_var = file.label_class == MAT_C_UINT8
                        ? Mat_VarCreate("y", MAT_C_UINT8, MAT_T_UINT8, 2, y_dims, y8.data(), 0)
                        : Mat_VarCreate("y", MAT_C_DOUBLE, MAT_T_DOUBLE, 2, y_dims, y64.data(), 0);
  const bool ok = x_var && y_var && Mat_VarWrite(mat, x_var, compression) == 0 &&
                  Mat_VarWrite(mat, y_var, compression) == 0;
  Mat_VarFree(x_var);
  Mat_VarFree(y_var);
  Mat_Close(mat);
  return ok;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

TEST(SvhnTest, ReadsImagesInRowMajorOrderAndMapsLabelTenToZero) {
  struct Case {
    const char* name;
    mat_ft version;
    matio_compression compression;
    matio_classes label_class;
  };
  for (const Case& c : {Case{"v5", MAT_FT_MAT5, MAT_COMPRESSION_NONE, MAT_C_UINT8},
                        Case{"v5 zlib", MAT_FT_MAT5, MAT_COMPRESSION_ZLIB, MAT_C_UINT8},
                        Case{"v5 double labels", MAT_FT_MAT5, MAT_COMPRESSION_ZLIB, MAT_C_DOUBLE},
                        Case{"v7.3", MAT_FT_MAT73, MAT_COMPRESSION_NONE, MAT_C_UINT8}}) {
    SCOPED_TRACE(c.name);
    TempDir dir;
    SvhnFile train = RandomSvhn(12, 1), test = RandomSvhn(5, 2);
    train.label_class = c.label_class;
    if (!WriteSvhn(dir.path() + "/train_32x32.mat", train, c.version, c.compression)) {
      ASSERT_EQ(c.version, MAT_FT_MAT73) << "matio could not write the file";
      std::cout << "[ skipped  ] this matio cannot write MAT v7.3\n";
      continue;
    }
    ASSERT_TRUE(WriteSvhn(dir.path() + "/test_32x32.mat", test, c.version, c.compression));
    const Dataset data = LoadSvhn(dir.path(), /*train=*/true);
    EXPECT_TRUE(torch::equal(data.images, train.images));
    EXPECT_EQ(data.num_classes, 10);
    std::vector<int64_t> digits;
    for (int64_t label : train.labels) digits.push_back(label % 10);
    EXPECT_EQ(std::vector<int64_t>(data.labels.data_ptr<int64_t>(), data.labels.data_ptr<int64_t>() + 12), digits);
    EXPECT_EQ(data.labels[3].item<int64_t>(), 0);  // stored as 10
    EXPECT_TRUE(torch::equal(LoadSvhn(dir.path(), /*train=*/false).images, test.images));
  }
}

TEST(SvhnTest, ASingleImageFileDropsTheTrailingDimension) {
  TempDir dir;
  SvhnFile file = RandomSvhn(1, 3);
  file.x_dims = {32, 32, 3};
  ASSERT_TRUE(WriteSvhn(dir.path() + "/test_32x32.mat", file, MAT_FT_MAT5, MAT_COMPRESSION_NONE));
  EXPECT_TRUE(torch::equal(LoadSvhn(dir.path(), false).images, file.images));
}

TEST(SvhnTest, BadFilesThrowUserErrorsNamingTheFile) {
  TempDir dir;
  const std::string path = dir.path() + "/train_32x32.mat";
  ExpectUserError([&] { LoadSvhn(dir.path(), true); }, path, "Cannot open");
  dir.Write("train_32x32.mat", "this is not a MAT file at all, but it is long enough to have a header............"
                               "..................................................................................");
  ExpectUserError([&] { LoadSvhn(dir.path(), true); }, path, "is not a MAT file");

  SvhnFile bad_label = RandomSvhn(4, 4);
  bad_label.labels[2] = 11;
  ASSERT_TRUE(WriteSvhn(path, bad_label, MAT_FT_MAT5, MAT_COMPRESSION_NONE));
  ExpectUserError([&] { LoadSvhn(dir.path(), true); }, path, "has label 11 at index 2 of y, expected labels in 1..10");
  bad_label.labels[2] = 0;
  ASSERT_TRUE(WriteSvhn(path, bad_label, MAT_FT_MAT5, MAT_COMPRESSION_NONE));
  ExpectUserError([&] { LoadSvhn(dir.path(), true); }, path, "has label 0 at index 2");

  SvhnFile short_y = RandomSvhn(4, 5);
  short_y.labels.pop_back();
  ASSERT_TRUE(WriteSvhn(path, short_y, MAT_FT_MAT5, MAT_COMPRESSION_NONE));
  ExpectUserError([&] { LoadSvhn(dir.path(), true); }, path, "has y of 3x1 elements but X holds 4 images");

  SvhnFile wrong_size = RandomSvhn(2, 6);
  wrong_size.images = torch::zeros({2, 3, 28, 28}, torch::kUInt8);
  wrong_size.x_dims = {28, 28, 3, 2};
  ASSERT_TRUE(WriteSvhn(path, wrong_size, MAT_FT_MAT5, MAT_COMPRESSION_NONE));
  ExpectUserError([&] { LoadSvhn(dir.path(), true); }, path, "has X of 28x28x3x2 elements");
}

// Every cut of a valid file, compressed or not, either fails with a UserError naming the file or (when it only cuts
// the padding after the last value, or a zlib checksum) reads the same data: never a crash, never silently fewer or
// different images. Cuts that lose data must fail.
TEST(SvhnTest, TruncatedFilesThrowUserErrors) {
  for (matio_compression compression : {MAT_COMPRESSION_NONE, MAT_COMPRESSION_ZLIB}) {
    SCOPED_TRACE(compression ? "zlib" : "uncompressed");
    TempDir dir;
    const SvhnFile file = RandomSvhn(3, 7);
    const std::string path = dir.path() + "/train_32x32.mat";
    ASSERT_TRUE(WriteSvhn(path, file, MAT_FT_MAT5, compression));
    const std::string bytes = ReadFile(path);
    size_t longest_failing = 0;
    // Every 61st length, and every one near the end (a load of a damaged file takes ~3 ms: matio then tries HDF5).
    for (size_t length = 0; length < bytes.size(); length += length + 64 < bytes.size() ? 61 : 1) {
      dir.Write("train_32x32.mat", bytes.substr(0, length));
      try {
        const Dataset data = LoadSvhn(dir.path(), true);
        EXPECT_TRUE(torch::equal(data.images, file.images)) << "cut to " << length;
        EXPECT_EQ(data.size(), 3);
      } catch (const UserError& error) {
        EXPECT_NE(std::string(error.what()).find(path), std::string::npos) << error.what();
        longest_failing = length;
      }
    }
    EXPECT_GE(longest_failing, bytes.size() - 8) << "of " << bytes.size() << " bytes";
  }
}

TEST(SvhnTest, LoadDatasetDispatches) {
  TempDir dir;
  ASSERT_TRUE(WriteSvhn(dir.path() + "/train_32x32.mat", RandomSvhn(6, 8), MAT_FT_MAT5, MAT_COMPRESSION_ZLIB));
  DataConfig config;
  config.set_dataset("svhn");
  config.set_data_dir(dir.path());
  config.set_train_subset(4);
  EXPECT_EQ(LoadDataset(config, true).images.sizes(), (std::vector<int64_t>{4, 3, 32, 32}));
}

// ---------------------------------------------------------------------------------------------------------------
// Image folders: root/train/<class>/<image>, root/val/<class>/<image>.

// A (rows, cols) image of one BGR colour, encoded by OpenCV as `extension` (".png" is lossless).
std::string SolidImage(int rows, int cols, cv::Scalar bgr, const std::string& extension,
                       const std::vector<int>& params = {}) {
  std::vector<uint8_t> bytes;
  EXPECT_TRUE(cv::imencode(extension, cv::Mat(rows, cols, CV_8UC3, bgr), bytes, params));
  return std::string(bytes.begin(), bytes.end());
}

// A noisy colour image that JPEG cannot compress to almost nothing.
std::string NoisyJpeg(int rows, int cols, const std::vector<int>& params = {}) {
  cv::Mat image(rows, cols, CV_8UC3);
  cv::randu(image, 0, 256);
  std::vector<uint8_t> bytes;
  EXPECT_TRUE(cv::imencode(".jpg", image, bytes, params));
  return std::string(bytes.begin(), bytes.end());
}

// Classes ant (0), cat (1) and dog (2), written out of order; files of any size, colour, format and extension case.
void WriteFolders(const TempDir& dir) {
  dir.Write("train/dog/b.jpg", SolidImage(40, 60, {10, 20, 200}, ".jpg"));
  dir.Write("train/dog/a.PNG", SolidImage(20, 30, {1, 2, 3}, ".png"));  // enlarged to 16x16
  dir.Write("train/ant/x.jpeg", SolidImage(256, 300, {200, 100, 50}, ".jpg"));  // decoded at 1/8 scale
  dir.Write("train/cat/1.png", SolidImage(16, 16, {0, 255, 128}, ".png"));
  dir.Write("train/cat/README.txt", "not an image: skipped");
  dir.Write("train/cat/.hidden.jpg", "hidden: skipped");
  dir.Write("val/cat/v.png", SolidImage(32, 32, {5, 6, 7}, ".png"));
  dir.Write("val/ant/w.jpg", NoisyJpeg(64, 64, {cv::IMWRITE_JPEG_PROGRESSIVE, 1}));
}

TEST(ImageFolderTest, ClassesAndFilesInNameOrderPixelsInRgb) {
  TempDir dir;
  WriteFolders(dir);
  const Dataset train = LoadImageFolder(dir.path(), /*train=*/true, {16});
  // ant/x.jpeg, cat/1.png, dog/a.PNG, dog/b.jpg; README.txt and .hidden.jpg skipped.
  ASSERT_EQ(train.images.sizes(), (std::vector<int64_t>{4, 3, 16, 16}));
  EXPECT_EQ(train.images.dtype(), torch::kUInt8);
  EXPECT_EQ(train.num_classes, 3);
  EXPECT_TRUE(torch::equal(train.labels, torch::tensor({0, 1, 2, 2}, torch::kInt64)));
  // Solid colours stay solid, in RGB order: exact for PNG, within JPEG's rounding for JPEG.
  const std::vector<std::vector<int>> rgb = {{50, 100, 200}, {128, 255, 0}, {3, 2, 1}, {200, 20, 10}};
  const std::vector<int> tolerance = {3, 0, 0, 3};
  for (int n = 0; n < 4; ++n) {
    for (int c = 0; c < 3; ++c) {
      const torch::Tensor plane = train.images[n][c].to(torch::kInt);
      EXPECT_LE((plane - rgb[n][c]).abs().max().item<int>(), tolerance[n]) << "image " << n << " channel " << c;
    }
  }
  const Dataset val = LoadImageFolder(dir.path(), /*train=*/false, {16});
  EXPECT_EQ(val.images.sizes(), (std::vector<int64_t>{2, 3, 16, 16}));
  EXPECT_TRUE(torch::equal(val.labels, torch::tensor({0, 1}, torch::kInt64)));  // val/ant, val/cat: train's labels
  EXPECT_EQ(val.num_classes, 3);
}

// Streamed and in-memory storage give the same views where memory holds the originals (CIFAR-10's 32 x 32 at
// image_size 32): the crop is drawn on the same size from the same stream and cut from the same decoded pixels.
TEST(StreamedImageFolderTest, SameViewsAsMemoryWhenTheStoredSizeIsTheSources) {
  TempDir dir;
  for (int i = 0; i < 6; ++i) dir.Write("train/c" + std::to_string(i % 2) + "/" + std::to_string(i) + ".jpg",
                                        NoisyJpeg(32, 32));
  dir.Write("train/c0/p.png", SolidImage(32, 32, {10, 200, 30}, ".png"));
  const Dataset memory = LoadImageFolder(dir.path(), /*train=*/true, {32});
  const Dataset streamed = ListImageFolder(dir.path(), /*train=*/true);
  ASSERT_TRUE(streamed.streamed());
  EXPECT_TRUE(torch::equal(memory.labels, streamed.labels));
  DataConfig config;
  config.set_dataset("imagefolder");
  config.set_image_size(32);
  config.set_eval_crop_fraction(1);
  config.set_crop_scale_min(0.2f);
  config.set_crop_scale_max(1.0f);
  config.set_color_jitter(0.4f);
  config.set_grayscale_prob(0.2f);
  config.set_flip_prob(0.5f);
  const AugmentOptions options = AugmentOptionsFrom(config);  // blur included (imagefolder)
  const std::vector<int64_t> indices = {6, 0, 3, 5, 1};
  for (int view : {0, 1}) {
    EXPECT_TRUE(torch::equal(AugmentBatch(memory, indices, 7, 2, view, options),
                             AugmentBatch(streamed, indices, 7, 2, view, options))) << "view " << view;
  }
  EXPECT_TRUE(torch::equal(EvalImagesOf(memory, 1, 6, 32, 1.0), EvalImagesOf(streamed, 1, 6, 32, 1.0)));
}

// Large originals: the view is cut from a JPEG decoded at a DCT scale (here 1/4 or less of 512 x 384 for a 32-px
// view of a whole-image crop), and evaluation resizes the shorter side then crops the centre.
TEST(StreamedImageFolderTest, LargeImagesGiveViewsOfTheRequestedSize) {
  TempDir dir;
  dir.Write("train/a/1.jpg", NoisyJpeg(384, 512));
  dir.Write("train/b/2.jpg", SolidImage(375, 500, {0, 0, 255}, ".jpg"));  // red
  const Dataset streamed = ListImageFolder(dir.path(), true);
  AugmentOptions options;
  options.out_size = 48;
  options.color_jitter = 0;
  options.grayscale_prob = 0;
  const torch::Tensor views = AugmentBatch(streamed, {0, 1}, 1, 0, 0, options);
  ASSERT_EQ(views.sizes(), (std::vector<int64_t>{2, 3, 48, 48}));
  EXPECT_NEAR(views[1][0].mean().item<double>(), 1.0, 0.02);  // the red image stays red
  EXPECT_NEAR(views[1][2].mean().item<double>(), 0.0, 0.02);
  const torch::Tensor eval = EvalImagesOf(streamed, 0, 2, 32, 0.875);
  EXPECT_EQ(eval.sizes(), (std::vector<int64_t>{2, 3, 32, 32}));
}

// Bad files found while training: one sentence naming the file, or with data.skip_bad_images a grey image, counted.
TEST(StreamedImageFolderTest, BadFilesNameTheFileOrAreReplacedAndCounted) {
  TempDir dir;
  dir.Write("train/a/good.jpg", NoisyJpeg(40, 40));
  const std::string jpeg = NoisyJpeg(40, 40);
  const std::string truncated = dir.Write("train/a/truncated.jpg", jpeg.substr(0, jpeg.size() / 2));
  const std::string text = dir.Write("train/b/text.jpg", "not an image at all");
  // A decompression bomb: a small JPEG whose frame header declares 20,000 x 20,000 pixels.
  std::string bomb = NoisyJpeg(16, 16);
  const size_t sof = bomb.find("\xff\xc0");
  ASSERT_NE(sof, std::string::npos);
  for (size_t at : {sof + 5, sof + 7}) bomb[at] = static_cast<char>(20000 >> 8), bomb[at + 1] = static_cast<char>(20000 & 0xff);
  const std::string bomb_path = dir.Write("train/b/bomb.jpg", bomb);
  Dataset streamed = ListImageFolder(dir.path(), true);  // a/good, a/truncated, b/bomb, b/text
  AugmentOptions options;
  options.out_size = 16;
  EXPECT_EQ(AugmentBatch(streamed, {0}, 1, 0, 0, options).size(0), 1);
  ExpectUserError([&] { AugmentBatch(streamed, {0, 1}, 1, 0, 0, options); }, truncated, "is truncated");
  ExpectUserError([&] { AugmentBatch(streamed, {2}, 1, 0, 0, options); }, bomb_path, "decompression bomb");
  ExpectUserError([&] { AugmentBatch(streamed, {3}, 1, 0, 0, options); }, text, "cannot be decoded as an image");
  ExpectUserError([&] { EvalImagesOf(streamed, 0, 4, 16, 1.0); }, truncated, "is truncated");
  auto files = std::make_shared<ImageFiles>();
  files->paths = streamed.files->paths;
  files->skip_bad = true;
  streamed.files = files;
  std::filesystem::remove(dir.path() + "/train/a/good.jpg");  // missing since it was listed
  const torch::Tensor views = AugmentBatch(streamed, {0, 1, 2, 3}, 1, 0, 0, options);
  EXPECT_EQ(files->bad.load(), 4);
  options.color_jitter = 0;
  options.grayscale_prob = 0;
  EXPECT_NEAR(AugmentBatch(streamed, {1}, 1, 0, 0, options).mean().item<double>(), 128.0 / 255, 1e-6);
}

// CIFAR-10's JPEG releases name the validation split test/: it is read where there is no val/, and val/ wins where
// both exist.
TEST(ImageFolderTest, TestFolderIsTheValidationSplitWhenThereIsNoVal) {
  TempDir dir;
  dir.Write("train/ant/a.png", SolidImage(8, 8, {0, 0, 0}, ".png"));
  dir.Write("train/cat/c.png", SolidImage(8, 8, {0, 0, 0}, ".png"));
  dir.Write("test/cat/t.png", SolidImage(8, 8, {9, 9, 9}, ".png"));
  const Dataset test = LoadImageFolder(dir.path(), /*train=*/false, {8});
  EXPECT_TRUE(torch::equal(test.labels, torch::tensor({1}, torch::kInt64)));
  EXPECT_EQ(test.images[0][0][0][0].item<uint8_t>(), 9);
  dir.Write("val/ant/v.png", SolidImage(8, 8, {5, 5, 5}, ".png"));
  EXPECT_TRUE(torch::equal(LoadImageFolder(dir.path(), false, {8}).labels, torch::tensor({0}, torch::kInt64)));
}

// A 32x64 PNG whose blue is 4x and green 8y, at size 16: the shorter side halves (2x2 box averages: blue 8x + 2,
// green 16y + 4) to 16x32 and the centre 16 columns (8..23) are kept.
TEST(ImageFolderTest, ShorterSideResizedByAreaAveragingThenCentreCropped) {
  TempDir dir;
  cv::Mat image(32, 64, CV_8UC3);
  for (int y = 0; y < 32; ++y) {
    for (int x = 0; x < 64; ++x) image.at<cv::Vec3b>(y, x) = cv::Vec3b(4 * x, 8 * y, 0);
  }
  std::vector<uint8_t> png;
  ASSERT_TRUE(cv::imencode(".png", image, png));
  dir.Write("train/only/gradient.png", std::string(png.begin(), png.end()));
  const torch::Tensor loaded = LoadImageFolder(dir.path(), true, {16}).images[0].to(torch::kInt);
  const torch::Tensor row = torch::arange(16, torch::kInt).view({16, 1}).expand({16, 16});
  const torch::Tensor col = torch::arange(16, torch::kInt).view({1, 16}).expand({16, 16});
  EXPECT_TRUE(torch::equal(loaded[0], torch::zeros({16, 16}, torch::kInt)));  // red
  EXPECT_TRUE(torch::equal(loaded[1], 16 * row + 4));                          // green
  EXPECT_TRUE(torch::equal(loaded[2], 8 * (col + 8) + 2));                     // blue
}

// In memory (AUTO: a small folder) at image_size / eval_crop_fraction: 224 / 0.875 = 256 by default, 64 when asked;
// streamed when asked; blur on for image folders.
TEST(ImageFolderTest, LoadDatasetStoresAtTheEvaluationSizeOrStreams) {
  TempDir dir;
  WriteFolders(dir);
  DataConfig config;
  config.set_dataset("imagefolder");
  config.set_data_dir(dir.path());
  EXPECT_EQ(LoadDataset(config, true).images.sizes(), (std::vector<int64_t>{4, 3, 256, 256}));
  config.set_image_size(56);
  config.set_eval_crop_fraction(0.875f);
  EXPECT_EQ(LoadDataset(config, true).images.sizes(), (std::vector<int64_t>{4, 3, 64, 64}));
  EXPECT_EQ(LoadDataset(config, false).size(), 2);
  EXPECT_EQ(AugmentOptionsFrom(config).blur_prob, 0.5f);
  config.set_storage(DataConfig::STREAM);
  config.set_skip_bad_images(true);
  const Dataset streamed = LoadDataset(config, true);
  ASSERT_TRUE(streamed.streamed());
  EXPECT_FALSE(streamed.images.defined());
  EXPECT_EQ(streamed.size(), 4);
  EXPECT_TRUE(streamed.files->skip_bad);
  config.set_train_subset(2);
  EXPECT_EQ(LoadDataset(config, true).files->paths.size(), 2u) << "a streamed subset keeps only its files";
}

// Every proper prefix of a JPEG (baseline, progressive, with restart markers) is caught as truncated or undecodable;
// the complete files decode.
TEST(ImageFolderTest, EveryTruncatedJpegThrowsAUserError) {
  const std::vector<std::vector<int>> variants = {
      {}, {cv::IMWRITE_JPEG_PROGRESSIVE, 1}, {cv::IMWRITE_JPEG_RST_INTERVAL, 1}};
  for (const std::vector<int>& params : variants) {
    TempDir dir;
    const std::string jpeg = NoisyJpeg(16, 16, params);
    const std::string path = dir.Write("train/c/i.jpg", jpeg);
    EXPECT_EQ(LoadImageFolder(dir.path(), true, {8}).size(), 1);
    int truncated = 0;
    for (size_t length = 0; length < jpeg.size(); ++length) {
      dir.Write("train/c/i.jpg", jpeg.substr(0, length));
      try {
        LoadImageFolder(dir.path(), true, {8});
        ADD_FAILURE() << "no UserError for a prefix of " << length << " of " << jpeg.size() << " bytes";
      } catch (const UserError& error) {
        EXPECT_NE(std::string(error.what()).find(path), std::string::npos) << error.what();
        truncated += std::string(error.what()).find("is truncated") != std::string::npos;
      }
    }
    EXPECT_GE(truncated, static_cast<int>(jpeg.size()) - 3);  // all but the empty and too-short prefixes
  }
}

TEST(ImageFolderTest, BadFilesAndFoldersThrowUserErrorsNamingThem) {
  {
    TempDir dir;
    WriteFolders(dir);
    const std::string path = dir.Write("train/cat/2.jpg", "\x89PNG but not really an image");
    ExpectUserError([&] { LoadImageFolder(dir.path(), true, {16}); }, path, "cannot be decoded as an image");
    dir.Write("train/cat/2.jpg", "");
    ExpectUserError([&] { LoadImageFolder(dir.path(), true, {16}); }, path, "is empty");
  }
  {
    TempDir dir;
    WriteFolders(dir);
    std::filesystem::create_directories(dir.path() + "/train/emu");
    dir.Write("train/emu/notes.txt", "no images here");
    ExpectUserError([&] { LoadImageFolder(dir.path(), true, {16}); }, dir.path() + "/train/emu", "has no image files");
  }
  {
    TempDir dir;
    WriteFolders(dir);
    dir.Write("val/zebra/z.png", SolidImage(8, 8, {0, 0, 0}, ".png"));
    ExpectUserError([&] { LoadImageFolder(dir.path(), false, {16}); }, dir.path() + "/val/zebra",
                    "is a class folder that " + dir.path() + "/train does not have");
  }
  {
    TempDir dir;
    dir.Write("cat/1.png", SolidImage(8, 8, {0, 0, 0}, ".png"));  // root/<class>/*: not ImageNet's layout
    ExpectUserError([&] { LoadImageFolder(dir.path(), true, {16}); }, dir.path() + "/train",
                    "root/train/<class>/<image>");
    std::filesystem::create_directories(dir.path() + "/train");
    ExpectUserError([&] { LoadImageFolder(dir.path(), true, {16}); }, dir.path() + "/train", "has no class folders");
    dir.Write("train/cat/1.png", SolidImage(8, 8, {0, 0, 0}, ".png"));
    ExpectUserError([&] { LoadImageFolder(dir.path(), false, {16}); }, dir.path() + "/val", "root/val/<class>/<image>");
  }
}

// Not a check (run with --gtest_also_run_disabled_tests): decoding speed of ImageNet-sized JPEGs (500x375, smooth
// content at quality 90) to 64x64, the number behind the load-time estimate in the report.
TEST(ImageFolderTimingTest, DISABLED_Decode500x375JpegsTo64) {
  TempDir dir;
  cv::Mat image(375, 500, CV_8UC3);
  for (int i = 0; i < 200; ++i) {
    cv::randu(image, 0, 256);
    cv::GaussianBlur(image, image, cv::Size(0, 0), 3);  // natural-image-like spectrum (noise does not compress)
    std::vector<uint8_t> jpeg;
    cv::imencode(".jpg", image, jpeg, {cv::IMWRITE_JPEG_QUALITY, 90});
    dir.Write("train/c" + std::to_string(i % 4) + "/" + std::to_string(i) + ".jpg",
              std::string(jpeg.begin(), jpeg.end()));
  }
  for (int size : {64, 224}) {
    const auto start = std::chrono::steady_clock::now();
    const Dataset data = LoadImageFolder(dir.path(), true, {size});
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::cout << "[ timing   ] 200 JPEGs 500x375 decoded to " << size << "x" << size << " on " << at::get_num_threads()
              << " thread(s): " << 200 / s << " images/s\n";
  }
}

#endif  // TEMPERED_DATASETS

}  // namespace
}  // namespace tempered
