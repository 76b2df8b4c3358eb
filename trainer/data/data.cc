// Data: IDX readers (zlib), CIFAR binary readers, data set dispatch, sharding, epoch permutations, samples and
// evaluation's images. The readers that need other libraries live in datasets_svhn.cc (matio) and
// datasets_imagefolder.cc (OpenCV); the augmentations in augment.cc (per image) and batched_augment.cc (tensors).
#include "trainer/data/data.h"

#include <ATen/Parallel.h>
#include <glog/logging.h>
#include <sys/stat.h>
#include <zlib.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <exception>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <thread>

#include "common/errors.h"
#include "common/utf8.h"
#include "trainer/data/dataset_util.h"
#include "trainer/data/image_decode.h"
#include "trainer/data/image_ops.h"
#include "trainer/data/random.h"

namespace tempered {
namespace {

// ---------------------------------------------------------------------------------------------------------------
// IDX files (http://yann.lecun.com/exdb/mnist/): a big-endian header {magic, dims...} then unsigned bytes.
// The magic is 0x00000800 | (number of dimensions); the 0x08 says "unsigned byte".

constexpr uint32_t kIdxLabelsMagic = 0x00000801;  // 1 dimension: N
constexpr uint32_t kIdxImagesMagic = 0x00000803;  // 3 dimensions: N, rows, cols

// Reads a file that is either gzip (detected by its magic bytes 1f 8b) or plain. The gzip path runs zlib's inflate
// directly rather than gzread: gzread does not report a stream cut short inside its trailer, inflate does.
class ByteStream {
 public:
  explicit ByteStream(const std::string& path) : path_(path) {
    std::error_code ignored;
    if (std::filesystem::is_directory(path, ignored)) throw UserError(path + " is a directory, expected a file.");
    file_ = std::fopen(path.c_str(), "rb");
    if (file_ == nullptr) throw UserError("Cannot open " + path + ": " + std::strerror(errno) + ".");
    uint8_t magic[2] = {0, 0};
    gzip_ = std::fread(magic, 1, 2, file_) == 2 && magic[0] == 0x1f && magic[1] == 0x8b;
    if (std::fseek(file_, 0, SEEK_SET) != 0) throw UserError("Cannot seek in " + path + ".");
    // windowBits 15 + 16: a gzip wrapper (header, CRC-32 and length trailer) around a 32 KiB-window deflate stream.
    if (gzip_) CHECK_EQ(inflateInit2(&stream_, 15 + 16), Z_OK);
  }
  ~ByteStream() {
    if (gzip_) inflateEnd(&stream_);
    std::fclose(file_);
  }
  ByteStream(const ByteStream&) = delete;
  ByteStream& operator=(const ByteStream&) = delete;

  // Reads up to `size` bytes into `dst`, fewer only at the end of the data; returns how many it read. Big reads
  // inflate straight into `dst`. A corrupt gzip stream throws UserError with zlib's reason.
  size_t Read(void* dst, size_t size) { return gzip_ ? Inflate(static_cast<uint8_t*>(dst), size) : Fread(dst, size); }

  // True when no data follows; throws when a gzip stream ends before its trailer (even with all its data there).
  bool AtEnd() {
    uint8_t byte;
    if (Read(&byte, 1) != 0) return false;
    if (gzip_ && !member_done_) throw UserError(path_ + " is truncated: its gzip stream ends early.");
    return true;
  }

  const std::string& path() const { return path_; }
  bool gzip() const { return gzip_; }

  // The most bytes of data the rest of the file can yield: what is left of a plain file; for gzip, deflate's maximum
  // expansion (1032:1) of the whole file. -1 when unknown (not a regular file).
  int64_t MaxDataBytes() const {
    struct stat info;
    if (::fstat(::fileno(file_), &info) != 0 || !S_ISREG(info.st_mode)) return -1;
    if (gzip_) return int64_t{1032} * info.st_size;
    const long at = std::ftell(file_);
    return at < 0 ? -1 : info.st_size - at;
  }

 private:
  size_t Fread(void* dst, size_t size) {
    const size_t got = std::fread(dst, 1, size, file_);
    if (std::ferror(file_)) throw UserError("Cannot read " + path_ + ": " + std::strerror(errno) + ".");
    return got;
  }

  size_t Inflate(uint8_t* dst, size_t size) {
    size_t done = 0;
    while (done < size) {
      if (stream_.avail_in == 0) {
        stream_.avail_in = static_cast<uInt>(Fread(input_.data(), input_.size()));
        stream_.next_in = input_.data();
        if (stream_.avail_in == 0) break;  // end of file
      }
      if (member_done_) {  // more bytes after a complete member: gzip allows concatenated members
        CHECK_EQ(inflateReset(&stream_), Z_OK);
        member_done_ = false;
      }
      const auto chunk = static_cast<uInt>(std::min<size_t>(size - done, 1u << 30));
      stream_.next_out = dst + done;
      stream_.avail_out = chunk;
      const int status = inflate(&stream_, Z_NO_FLUSH);
      done += chunk - stream_.avail_out;
      if (status == Z_STREAM_END) {
        member_done_ = true;
      } else if (status != Z_OK && status != Z_BUF_ERROR) {
        throw UserError(path_ + " is not a valid gzip stream (zlib: " + (stream_.msg ? stream_.msg : "error " +
                        std::to_string(status)) + ").");
      }
    }
    return done;
  }

  std::string path_;
  std::FILE* file_ = nullptr;
  bool gzip_ = false;
  z_stream stream_{};
  bool member_done_ = false;  // the current gzip member ended with a valid trailer
  std::vector<uint8_t> input_ = std::vector<uint8_t>(1 << 16);
};

std::string Hex(uint32_t value) {
  char text[11];
  std::snprintf(text, sizeof(text), "0x%08x", value);
  return text;
}

uint32_t BigEndian32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}

// Reads `count` big-endian 32-bit words of the header; a short read means the header is truncated.
std::vector<uint32_t> ReadHeaderWords(ByteStream& file, int count, int header_words, const std::string& kind) {
  std::vector<uint8_t> bytes(4 * count);
  const size_t got = file.Read(bytes.data(), bytes.size());
  if (got < bytes.size()) {
    const size_t have = 4 * (header_words - count) + got;
    throw UserError(file.path() + " is truncated: expected a " + std::to_string(4 * header_words) + "-byte IDX " +
                    kind + " header, got " + std::to_string(have) + " bytes.");
  }
  std::vector<uint32_t> words;
  for (int i = 0; i < count; ++i) words.push_back(BigEndian32(bytes.data() + 4 * i));
  return words;
}

// Reads the header: the magic (checked first, so a file of the wrong kind says so) then `expected_magic & 0xff`
// sizes. Only the first size, the number of items, may be zero.
std::vector<int64_t> ReadIdxHeader(ByteStream& file, uint32_t expected_magic, const std::string& kind) {
  const int dims = static_cast<int>(expected_magic & 0xff);
  const uint32_t magic = ReadHeaderWords(file, 1, 1 + dims, kind)[0];
  if (magic != expected_magic) {
    throw UserError(file.path() + " has magic number " + Hex(magic) + ", expected " + Hex(expected_magic) +
                    " (IDX " + kind + ").");
  }
  const std::vector<uint32_t> words = ReadHeaderWords(file, dims, 1 + dims, kind);
  const std::vector<int64_t> sizes(words.begin(), words.end());
  for (int i = 1; i < dims; ++i) {
    if (sizes[i] == 0) throw UserError(file.path() + " is malformed: its header declares a zero " + kind + " size.");
  }
  return sizes;
}

// Reads the data that follows the header straight into a new uint8 tensor of `sizes` (no intermediate copy).
torch::Tensor ReadIdxData(ByteStream& file, const std::vector<int64_t>& sizes, const std::string& kind) {
  // A damaged header can declare up to 2^96 bytes: refuse more than 1 TiB before multiplying further.
  constexpr int64_t kMaxBytes = int64_t{1} << 40;
  int64_t declared = 1;
  for (int64_t size : sizes) {
    if (size != 0 && declared > kMaxBytes / size) {
      throw UserError(file.path() + " is malformed: its header declares more than 1 TiB of " + kind + " data.");
    }
    declared *= size;
  }
  // Checked before allocating: a damaged 16-byte header must not allocate hundreds of GB (found by the idx fuzzer).
  const int64_t capacity = file.MaxDataBytes();
  if (capacity >= 0 && declared > capacity) {
    throw UserError(file.path() + " is truncated: expected " + std::to_string(declared) + " bytes of " + kind +
                    " data, " + (file.gzip() ? "more than the compressed file can hold" : "got " +
                    std::to_string(capacity)) + ".");
  }
  torch::Tensor data;
  try {
    data = torch::empty(sizes, torch::kUInt8);
  } catch (const c10::Error&) {
    throw UserError(file.path() + " is malformed: its header declares " + std::to_string(sizes[0]) + " " + kind +
                    ", more than fit in memory.");
  }
  const size_t expected = static_cast<size_t>(data.numel());
  const size_t got = file.Read(data.data_ptr<uint8_t>(), expected);
  if (got < expected) {
    throw UserError(file.path() + " is truncated: expected " + std::to_string(expected) + " bytes of " + kind +
                    " data, got " + std::to_string(got) + ".");
  }
  if (!file.AtEnd()) {
    throw UserError(file.path() + " is malformed: it has more data than the " + std::to_string(expected) + " bytes of " +
                    kind + " its header declares.");
  }
  return data;
}

// ---------------------------------------------------------------------------------------------------------------
// Data sets.

// A stratified sample of `subset` items (0 = all). The copy releases the memory of the rest.
Dataset TakeSubset(Dataset data, int64_t subset, const std::string& field, const std::string& dataset) {
  if (subset == 0) return data;
  if (subset < 0 || subset > data.size()) {
    throw UserError("data." + field + " must lie in [0, " + std::to_string(data.size()) + "] (the size of this " +
                    dataset + " split), got " + std::to_string(subset) + ".");
  }
  return SelectRows(data, StratifiedSample(data.labels, subset));
}

// Reads CIFAR binary files of `record_bytes`-byte records (label bytes, then 3x32x32 pixels) and keeps the label at
// byte `label_byte` of each record. The file size must be a positive multiple of the record size: a truncated
// file, or one of the other CIFAR version (3073 vs 3074 bytes), fails here.
Dataset ReadCifarBinary(const std::vector<std::string>& paths, int64_t record_bytes, int64_t label_byte,
                        int64_t num_classes, const std::string& format) {
  constexpr int64_t kPixelBytes = 3 * 32 * 32;
  std::vector<torch::Tensor> images, labels;
  for (const std::string& path : paths) {
    const int64_t size = FileSize(path);
    if (size == 0 || size % record_bytes != 0) {
      throw UserError(path + " has " + std::to_string(size) + " bytes, not a positive multiple of " + format +
                      "'s " + std::to_string(record_bytes) + "-byte records: it is truncated or not " + format +
                      " (binary version).");
    }
    torch::Tensor records = torch::empty({size / record_bytes, record_bytes}, torch::kUInt8);
    std::unique_ptr<std::FILE, int (*)(std::FILE*)> file(std::fopen(path.c_str(), "rb"), std::fclose);
    if (file == nullptr) throw UserError("Cannot open " + path + ": " + std::strerror(errno) + ".");
    if (std::fread(records.data_ptr<uint8_t>(), 1, size, file.get()) != static_cast<size_t>(size)) {
      throw UserError("Cannot read " + path + ": it is shorter than its size of " + std::to_string(size) + " bytes.");
    }
    labels.push_back(records.select(1, label_byte).to(torch::kInt64));
    CheckLabelRange(labels.back(), num_classes, path);
    images.push_back(records.narrow(1, record_bytes - kPixelBytes, kPixelBytes).reshape({-1, 3, 32, 32}));
  }
  Dataset data;
  data.images = torch::cat(images);
  data.labels = torch::cat(labels);
  data.num_classes = num_classes;
  return data;
}

// data.storage: an image folder in memory (MEMORY, or AUTO within kMemoryStorageBudget) or streamed. `listed`:
// this split, listed already; AUTO lists the other split only to count its files.
bool KeepInMemory(const DataConfig& config, const std::string& dir, bool train, const Dataset& listed) {
  if (config.storage() != DataConfig::AUTO) return config.storage() == DataConfig::MEMORY;
  const int64_t size = ImageFolderOptionsFrom(config).image_size;
  const int64_t images = listed.size() + ListImageFolder(dir, !train).size();
  return images * 3 * size * size <= kMemoryStorageBudget;
}

Dataset LoadImageFolderFor(const std::string& dir, bool train, const DataConfig& config) {
  Dataset data = ListImageFolder(dir, train);
  if (KeepInMemory(config, dir, train, data)) return DecodeImageFolder(std::move(data), ImageFolderOptionsFrom(config));
  std::const_pointer_cast<ImageFiles>(data.files)->skip_bad = config.skip_bad_images();
  return data;
}

struct KnownDataset {
  const char* name;
  const char* default_dir;  // "" = none: data.data_dir must be set
  std::function<Dataset(const std::string& dir, bool train)> load;
};

// The data sets LoadDataset knows.
const std::vector<KnownDataset>& KnownDatasets() {
  static const std::vector<KnownDataset> known = {
      {"fashion_mnist", "/usr/share/datasets/fashion-mnist", LoadFashionMnist},
      {"cifar10", "", LoadCifar10},
      {"cifar100", "", LoadCifar100},
      {"svhn", "", LoadSvhn},
      {"imagefolder", "", nullptr},  // LoadDataset passes the config's sizes
  };
  return known;
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------------

void RequireDirectory(const std::string& dir, const std::string& what) {
  std::error_code error;
  if (!std::filesystem::is_directory(dir, error)) {
    throw UserError(what + " " + dir + " does not exist or is not a directory.");
  }
}

void CheckLabelRange(const torch::Tensor& labels, int64_t num_classes, const std::string& path) {
  const int64_t* label = labels.data_ptr<int64_t>();
  for (int64_t i = 0; i < labels.numel(); ++i) {
    if (label[i] < 0 || label[i] >= num_classes) {
      throw UserError(path + " has label " + std::to_string(label[i]) + " at index " + std::to_string(i) +
                      ", expected labels in [0, " + std::to_string(num_classes) + ").");
    }
  }
}

int64_t FileSize(const std::string& path) {
  std::error_code error;
  const auto status = std::filesystem::status(path, error);
  if (!std::filesystem::exists(status)) throw UserError("Cannot open " + path + ": no such file.");
  if (!std::filesystem::is_regular_file(status)) throw UserError(path + " is not a regular file.");
  return static_cast<int64_t>(std::filesystem::file_size(path, error));
}

torch::Tensor ReadIdxImages(const std::string& path) {
  ByteStream file(path);
  const std::vector<int64_t> sizes = ReadIdxHeader(file, kIdxImagesMagic, "images");
  return ReadIdxData(file, {sizes[0], 1, sizes[1], sizes[2]}, "image");
}

torch::Tensor ReadIdxLabels(const std::string& path) {
  ByteStream file(path);
  const std::vector<int64_t> sizes = ReadIdxHeader(file, kIdxLabelsMagic, "labels");
  return ReadIdxData(file, sizes, "label").to(torch::kInt64);
}

Dataset LoadFashionMnist(const std::string& dir, bool train) {
  RequireDirectory(dir, "The Fashion-MNIST directory");
  const std::string prefix = dir + "/" + (train ? "train" : "t10k");
  const std::string images_path = prefix + "-images-idx3-ubyte.gz";
  const std::string labels_path = prefix + "-labels-idx1-ubyte.gz";
  Dataset data;
  data.images = ReadIdxImages(images_path);
  data.labels = ReadIdxLabels(labels_path);
  data.num_classes = 10;
  if (data.images.size(2) != 28 || data.images.size(3) != 28) {
    throw UserError(images_path + " holds " + std::to_string(data.images.size(2)) + "x" +
                    std::to_string(data.images.size(3)) + " images, expected 28x28 (Fashion-MNIST).");
  }
  if (data.labels.size(0) != data.images.size(0)) {
    throw UserError(labels_path + " has " + std::to_string(data.labels.size(0)) + " labels but " + images_path +
                    " has " + std::to_string(data.images.size(0)) + " images.");
  }
  CheckLabelRange(data.labels, data.num_classes, labels_path);
  return data;
}

Dataset LoadCifar10(const std::string& dir, bool train) {
  RequireDirectory(dir, "The CIFAR-10 directory");
  std::vector<std::string> paths;
  if (train) {
    for (int batch = 1; batch <= 5; ++batch) paths.push_back(dir + "/data_batch_" + std::to_string(batch) + ".bin");
  } else {
    paths.push_back(dir + "/test_batch.bin");
  }
  return ReadCifarBinary(paths, 1 + 3072, 0, 10, "CIFAR-10");
}

Dataset LoadCifar100(const std::string& dir, bool train) {
  RequireDirectory(dir, "The CIFAR-100 directory");
  return ReadCifarBinary({dir + (train ? "/train.bin" : "/test.bin")}, 2 + 3072, 1, 100, "CIFAR-100");
}

Dataset LoadDataset(const DataConfig& config, bool train) {
  // An unset name means the default data set (ResolveConfig normally fills it in).
  const std::string name = config.dataset().empty() ? "fashion_mnist" : config.dataset();
  std::string known_names;
  for (const KnownDataset& known : KnownDatasets()) {
    known_names += (known_names.empty() ? "" : ", ") + std::string(known.name);
    if (name != known.name) continue;
    const std::string dir = config.data_dir().empty() ? known.default_dir : config.data_dir();
    if (dir.empty()) throw UserError("data.data_dir must name the directory of the " + name + " files.");
    RequireDirectory(dir, "data.data_dir");
    Dataset data = known.load ? known.load(dir, train) : LoadImageFolderFor(dir, train, config);
    data.file_index = torch::arange(data.size(), torch::kInt64);
    return train ? TakeSubset(std::move(data), config.train_subset(), "train_subset", name + " training")
                 : TakeSubset(std::move(data), config.test_subset(), "test_subset", name + " test");
  }
  throw UserError("data.dataset \"" + name + "\" is not a known data set; known: " + known_names + ".");
}

ImageFolderOptions ImageFolderOptionsFrom(const DataConfig& config) {
  return {std::lround(ImageSizeOf(config) / EvalCropFractionOf(config))};
}

Shard ShardOf(int64_t global_batch, int rank, int world) {
  CHECK_GT(world, 0);
  CHECK(rank >= 0 && rank < world) << "rank " << rank << " outside a world of " << world;
  CHECK_GE(global_batch, 0);
  const int64_t base = global_batch / world;
  const int64_t extra = global_batch % world;  // the first `extra` ranks take one more row
  return {rank * base + std::min<int64_t>(rank, extra), base + (rank < extra ? 1 : 0)};
}

std::vector<int64_t> EpochPermutation(int64_t n, uint64_t seed, int64_t epoch) {
  CHECK_GE(n, 0);
  // std::mt19937_64's output is fixed by the C++ standard; the shuffle is ours (std::shuffle and the standard
  // distributions differ between library implementations), so the order is the same everywhere.
  std::mt19937_64 generator(MixSeed(kPermutationDomain, {seed, static_cast<uint64_t>(epoch)}));
  std::vector<int64_t> permutation(n);
  for (int64_t i = 0; i < n; ++i) permutation[i] = i;
  for (int64_t i = n - 1; i > 0; --i) {
    std::swap(permutation[i], permutation[UniformBelow(generator, static_cast<uint64_t>(i) + 1)]);
  }
  return permutation;
}

std::vector<int64_t> StratifiedOrder(const torch::Tensor& labels) {
  const torch::Tensor contiguous = labels.to(torch::kInt64).contiguous();
  const int64_t* label = contiguous.data_ptr<int64_t>();
  const int64_t n = contiguous.numel();
  std::map<int64_t, std::vector<int64_t>> by_class;  // rows of each class, in file order
  for (int64_t i = 0; i < n; ++i) by_class[label[i]].push_back(i);
  struct Slot {
    double quantile;
    int64_t label, row;
  };
  std::vector<Slot> slots;
  slots.reserve(n);
  for (auto& [c, rows] : by_class) {
    // The class's rows shuffled by a fixed stream of its own (the same Fisher-Yates as EpochPermutation).
    std::mt19937_64 generator(MixSeed(kSampleDomain, {static_cast<uint64_t>(c)}));
    for (int64_t i = static_cast<int64_t>(rows.size()) - 1; i > 0; --i) {
      std::swap(rows[i], rows[UniformBelow(generator, static_cast<uint64_t>(i) + 1)]);
    }
    const auto count = static_cast<double>(rows.size());
    for (size_t j = 0; j < rows.size(); ++j) slots.push_back({(static_cast<double>(j) + 0.5) / count, c, rows[j]});
  }
  std::sort(slots.begin(), slots.end(), [](const Slot& a, const Slot& b) {
    return a.quantile != b.quantile ? a.quantile < b.quantile : a.label < b.label;
  });
  std::vector<int64_t> order;
  order.reserve(n);
  for (const Slot& slot : slots) order.push_back(slot.row);
  return order;
}

std::vector<int64_t> StratifiedSample(const torch::Tensor& labels, int64_t n) {
  std::vector<int64_t> rows;
  if (n >= labels.numel()) {
    for (int64_t i = 0; i < labels.numel(); ++i) rows.push_back(i);
    return rows;
  }
  const std::vector<int64_t> order = StratifiedOrder(labels);
  rows.assign(order.begin(), order.begin() + std::max<int64_t>(0, n));
  std::sort(rows.begin(), rows.end());
  return rows;
}

Dataset SelectRows(const Dataset& data, const std::vector<int64_t>& rows) {
  const torch::Tensor index = torch::tensor(rows, torch::kInt64);
  Dataset out;
  if (data.streamed()) {
    auto files = std::make_shared<ImageFiles>();
    for (int64_t row : rows) files->paths.push_back(data.files->paths[row]);
    files->skip_bad = data.files->skip_bad;
    out.files = std::move(files);
  } else {
    out.images = data.images.index_select(0, index);
  }
  out.labels = data.labels.index_select(0, index);
  out.file_index = data.file_index.defined() ? data.file_index.index_select(0, index) : index;
  out.num_classes = data.num_classes;
  return out;
}

std::string SampleDescription(int64_t n, int64_t size) {
  if (n >= size) return "all " + std::to_string(size);
  return "class-stratified " + std::to_string(n) + " of " + std::to_string(size);
}

int64_t StepsPerEpoch(int64_t n, int64_t global_batch) {
  CHECK_GT(global_batch, 0);
  return n / global_batch;
}


namespace {

// The shorter side of an eval image resized to image_size / crop_fraction: the resized rows and columns.
ImageSize EvalResize(const ImageSize& size, int64_t image_size, double crop_fraction) {
  const int64_t shorter = std::max<int64_t>(image_size, std::lround(image_size / crop_fraction));
  const double scale = static_cast<double>(shorter) / std::min(size.height, size.width);
  return {std::max<int64_t>(image_size, std::lround(size.height * scale)),
          std::max<int64_t>(image_size, std::lround(size.width * scale))};
}

// One EvalImages image: src (C, H, W) resized by EvalResize, its centre image_size square into dst.
void EvalImageInto(const uint8_t* src, int64_t channels, const ImageSize& size, int64_t image_size,
                   double crop_fraction, torch::Tensor dst) {
  const ImageSize resized_size = EvalResize(size, image_size, crop_fraction);
  torch::Tensor resized = torch::empty({channels, resized_size.height, resized_size.width}, torch::kFloat);
  ResizeCropInto(src, channels, size.height, size.width, {0, 0, size.height, size.width}, resized_size.height,
                 resized_size.width, /*flip=*/false, resized.data_ptr<float>());
  dst.copy_(resized.narrow(1, (resized_size.height - image_size) / 2, image_size)
                .narrow(2, (resized_size.width - image_size) / 2, image_size));
}

}  // namespace

torch::Tensor EvalImages(const torch::Tensor& images, int64_t image_size, double crop_fraction) {
  CHECK(images.dtype() == torch::kUInt8 && images.dim() == 4) << "images must be uint8 (N, C, H, W)";
  const int64_t batch = images.size(0), channels = images.size(1), height = images.size(2), width = images.size(3);
  if (height == image_size && width == image_size && crop_fraction == 1.0) return ToFloat(images);
  const torch::Tensor contiguous = images.contiguous();
  torch::Tensor out = torch::empty({batch, channels, image_size, image_size}, torch::kFloat);
  at::parallel_for(0, batch, 1, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      EvalImageInto(contiguous[b].data_ptr<uint8_t>(), channels, {height, width}, image_size, crop_fraction, out[b]);
    }
  });
  return out;
}

torch::Tensor EvalImagesOf(const Dataset& data, int64_t begin, int64_t end, int64_t image_size,
                           double crop_fraction, int threads) {
  if (!data.streamed()) return EvalImages(data.images.slice(0, begin, end), image_size, crop_fraction);
  torch::Tensor out = torch::empty({end - begin, 3, image_size, image_size}, torch::kFloat);
  ParallelFor(end - begin, threads, [&](int64_t first, int64_t last) {
    for (int64_t i = first; i < last; ++i) {
      const StreamedImage image = ReadStreamedImage(*data.files, begin + i, [&](const ImageSize& original) {
        const ImageSize resized = EvalResize(original, image_size, crop_fraction);
        return ImageSize{std::min(resized.height, original.height), std::min(resized.width, original.width)};
      });
      EvalImageInto(image.decoded.pixels.data(), 3, {image.decoded.height, image.decoded.width}, image_size,
                    crop_fraction, out[i]);
    }
  });
  return out;
}

int64_t ImageSizeOf(const DataConfig& config) {
  if (config.image_size() > 0) return config.image_size();
  const std::string& name = config.dataset();
  if (name == "imagefolder") return 224;
  return name == "fashion_mnist" || name.empty() ? 28 : 32;
}

double EvalCropFractionOf(const DataConfig& config) {
  if (config.eval_crop_fraction() > 0) return config.eval_crop_fraction();
  return config.dataset() == "imagefolder" ? 0.875 : 1.0;
}

torch::Tensor ToFloat(const torch::Tensor& uint8_images) {
  CHECK(uint8_images.dtype() == torch::kUInt8) << "ToFloat expects uint8 images";
  return uint8_images.to(torch::kFloat).div_(255.0f);
}

}  // namespace tempered
