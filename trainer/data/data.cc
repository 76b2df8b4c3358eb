// Data: IDX readers (zlib), CIFAR binary readers, data set dispatch, sharding, epoch permutations and SimCLR
// augmentations. The readers that need other libraries live in datasets_svhn.cc (matio) and
// datasets_imagefolder.cc (OpenCV).
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

// ---------------------------------------------------------------------------------------------------------------
// Random numbers. Every stream is derived with splitmix64 from explicit inputs, never from global state, so a
// result depends only on (seed, epoch, image, view), not on threads, ranks or the batch layout.

uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// Folds several values into one 64-bit seed; `domain` separates the streams of different uses of the same inputs.
uint64_t MixSeed(uint64_t domain, std::initializer_list<uint64_t> values) {
  uint64_t h = SplitMix64(domain);
  for (uint64_t v : values) h = SplitMix64(h ^ v);
  return h;
}

constexpr uint64_t kPermutationDomain = 0x7065726d75746521ULL;  // "permute!"
constexpr uint64_t kAugmentDomain = 0x6175676d656e7421ULL;      // "augment!"
constexpr uint64_t kSampleDomain = 0x73616d706c657321ULL;       // "samples!"

// An unbiased integer in [0, bound) from any 64-bit generator: reject the 2^64 mod bound lowest values.
template <typename Generator>
uint64_t UniformBelow(Generator& generator, uint64_t bound) {
  const uint64_t threshold = (0 - bound) % bound;
  while (true) {
    const uint64_t r = generator();
    if (r >= threshold) return r % bound;
  }
}

// A small, fast generator for one image's augmentation: the splitmix64 sequence (passes BigCrush).
class ImageRng {
 public:
  explicit ImageRng(uint64_t seed) : state_(seed) {}
  uint64_t operator()() {
    state_ += 0x9e3779b97f4a7c15ULL;
    return SplitMix64(state_);
  }
  // Uniform in [0, 1) with 53 random bits.
  double Uniform() { return static_cast<double>((*this)() >> 11) * 0x1.0p-53; }
  double Uniform(double lo, double hi) { return lo + (hi - lo) * Uniform(); }
  bool Bernoulli(double p) { return Uniform() < p; }
  // Uniform integer in [lo, hi].
  int64_t Int(int64_t lo, int64_t hi) { return lo + static_cast<int64_t>(UniformBelow(*this, hi - lo + 1)); }

 private:
  uint64_t state_;
};

// ---------------------------------------------------------------------------------------------------------------
// Augmentation of one image, on planar float (C, H, W) buffers.

struct CropBox {
  int64_t top = 0, left = 0, height = 0, width = 0;
};

// torchvision's RandomResizedCrop.get_params: 10 tries of (area scale, log-uniform aspect ratio) that must fit in
// the image, then a centre crop clamped to the ratio range.
CropBox SampleCrop(ImageRng& rng, int64_t height, int64_t width, const AugmentOptions& options) {
  const double area = static_cast<double>(height * width);
  const double log_ratio_min = std::log(options.crop_ratio_min);
  const double log_ratio_max = std::log(options.crop_ratio_max);
  for (int attempt = 0; attempt < 10; ++attempt) {
    const double target_area = area * rng.Uniform(options.crop_scale_min, options.crop_scale_max);
    const double ratio = std::exp(rng.Uniform(log_ratio_min, log_ratio_max));
    const auto w = static_cast<int64_t>(std::round(std::sqrt(target_area * ratio)));
    const auto h = static_cast<int64_t>(std::round(std::sqrt(target_area / ratio)));
    if (0 < w && w <= width && 0 < h && h <= height) {
      return {rng.Int(0, height - h), rng.Int(0, width - w), h, w};
    }
  }
  const double in_ratio = static_cast<double>(width) / height;
  int64_t w = width, h = height;
  if (in_ratio < options.crop_ratio_min) {
    h = static_cast<int64_t>(std::round(w / options.crop_ratio_min));
  } else if (in_ratio > options.crop_ratio_max) {
    w = static_cast<int64_t>(std::round(h * options.crop_ratio_max));
  }
  return {(height - h) / 2, (width - w) / 2, h, w};
}

// Source taps of bilinear resampling from `in` to `out` samples with align_corners = false (torchvision's and
// F.interpolate's convention): output sample i reads in[i0] * (1 - weight) + in[i1] * weight.
struct Taps {
  std::vector<int64_t> i0, i1;
  std::vector<float> weight;
};
Taps BilinearTaps(int64_t in, int64_t out) {
  Taps taps;
  const double scale = static_cast<double>(in) / out;
  for (int64_t i = 0; i < out; ++i) {
    const double src = std::max(0.0, (i + 0.5) * scale - 0.5);
    const auto i0 = std::min(static_cast<int64_t>(src), in - 1);
    taps.i0.push_back(i0);
    taps.i1.push_back(std::min(i0 + 1, in - 1));
    taps.weight.push_back(static_cast<float>(src - i0));
  }
  return taps;
}

float Clamp01(float v) { return std::min(1.0f, std::max(0.0f, v)); }

// Exact uint8 -> float / 255 (the same division ToFloat does, so an identity augmentation equals ToFloat).
const std::array<float, 256>& ByteToUnit() {
  static const std::array<float, 256> table = [] {
    std::array<float, 256> t{};
    for (int v = 0; v < 256; ++v) t[v] = static_cast<float>(v) / 255.0f;
    return t;
  }();
  return table;
}

// Crops `box` out of src (C, H, W) and resizes it bilinearly to dst (C, out_h, out_w), mirrored left-right when
// `flip`. For a box no larger than the output (every crop when the views keep the stored size): only upsampling,
// where bilinear needs no antialiasing filter.
void UpsampleCropInto(const uint8_t* src, int64_t channels, int64_t height, int64_t width, const CropBox& box,
                      int64_t out_h, int64_t out_w, bool flip, float* dst) {
  const auto& unit = ByteToUnit();
  const Taps rows = BilinearTaps(box.height, out_h);
  const Taps cols = BilinearTaps(box.width, out_w);
  for (int64_t c = 0; c < channels; ++c) {
    const uint8_t* plane = src + c * height * width;
    for (int64_t y = 0; y < out_h; ++y) {
      const uint8_t* row0 = plane + (box.top + rows.i0[y]) * width + box.left;
      const uint8_t* row1 = plane + (box.top + rows.i1[y]) * width + box.left;
      const float wy = rows.weight[y];
      float* out = dst + (c * out_h + y) * out_w;
      for (int64_t x = 0; x < out_w; ++x) {
        const float top = unit[row0[cols.i0[x]]] + cols.weight[x] * (unit[row0[cols.i1[x]]] - unit[row0[cols.i0[x]]]);
        const float bottom =
            unit[row1[cols.i0[x]]] + cols.weight[x] * (unit[row1[cols.i1[x]]] - unit[row1[cols.i0[x]]]);
        out[flip ? out_w - 1 - x : x] = top + wy * (bottom - top);
      }
    }
  }
}

// Taps of PyTorch's antialiased bilinear resize (align_corners = false; ATen's _compute_indices_weights_aa, which
// torchvision's Resize and RandomResizedCrop use with antialias=True): a triangle filter widened by the scale
// factor when shrinking, so that every source pixel contributes. Output sample i reads
// sum_k weight[i * span + k] * in[first[i] + k], k < count[i].
struct FilterTaps {
  std::vector<int64_t> first, count;
  std::vector<float> weight;
  int64_t span = 0;
};
FilterTaps TriangleTaps(int64_t in, int64_t out) {
  FilterTaps taps;
  const double scale = static_cast<double>(in) / out;
  const double support = std::max(scale, 1.0);
  const double inverse = 1.0 / support;
  taps.span = 2 * static_cast<int64_t>(std::ceil(support)) + 1;
  taps.weight.assign(out * taps.span, 0.0f);
  for (int64_t i = 0; i < out; ++i) {
    const double center = scale * (i + 0.5);
    const int64_t lo = std::max<int64_t>(static_cast<int64_t>(center - support + 0.5), 0);
    const int64_t hi = std::min<int64_t>(static_cast<int64_t>(center + support + 0.5), in);
    double total = 0;
    for (int64_t j = lo; j < hi; ++j) total += std::max(0.0, 1.0 - std::abs((j - center + 0.5) * inverse));
    for (int64_t j = lo; j < hi; ++j) {
      const double w = std::max(0.0, 1.0 - std::abs((j - center + 0.5) * inverse));
      taps.weight[i * taps.span + (j - lo)] = total > 0 ? static_cast<float>(w / total) : 0.0f;
    }
    taps.first.push_back(lo);
    taps.count.push_back(hi - lo);
  }
  return taps;
}

// UpsampleCropInto for a box larger than the output in some direction: the antialiased resize, separable (rows
// first, into a (box.height, out_w) buffer, then columns).
void ResampleCropInto(const uint8_t* src, int64_t channels, int64_t height, int64_t width, const CropBox& box,
                      int64_t out_h, int64_t out_w, bool flip, float* dst) {
  const auto& unit = ByteToUnit();
  const FilterTaps rows = TriangleTaps(box.height, out_h);
  const FilterTaps cols = TriangleTaps(box.width, out_w);
  std::vector<float> across(box.height * out_w);
  for (int64_t c = 0; c < channels; ++c) {
    const uint8_t* plane = src + c * height * width;
    for (int64_t y = 0; y < box.height; ++y) {
      const uint8_t* row = plane + (box.top + y) * width + box.left;
      for (int64_t x = 0; x < out_w; ++x) {
        const float* w = &cols.weight[x * cols.span];
        float sum = 0;
        for (int64_t k = 0; k < cols.count[x]; ++k) sum += w[k] * unit[row[cols.first[x] + k]];
        across[y * out_w + x] = sum;
      }
    }
    for (int64_t y = 0; y < out_h; ++y) {
      const float* w = &rows.weight[y * rows.span];
      float* out = dst + (c * out_h + y) * out_w;
      for (int64_t x = 0; x < out_w; ++x) {
        float sum = 0;
        for (int64_t k = 0; k < rows.count[y]; ++k) sum += w[k] * across[(rows.first[y] + k) * out_w + x];
        out[flip ? out_w - 1 - x : x] = Clamp01(sum);
      }
    }
  }
}

// The crop `box` of src resized to dst (C, out_h, out_w), by whichever of the two above fits.
void ResizeCropInto(const uint8_t* src, int64_t channels, int64_t height, int64_t width, const CropBox& box,
                    int64_t out_h, int64_t out_w, bool flip, float* dst) {
  if (box.height <= out_h && box.width <= out_w) {
    UpsampleCropInto(src, channels, height, width, box, out_h, out_w, flip, dst);
  } else {
    ResampleCropInto(src, channels, height, width, box, out_h, out_w, flip, dst);
  }
}

// torchvision's rgb_to_grayscale weights (ITU-R 601-2 luma).
float Luma(float r, float g, float b) { return 0.2989f * r + 0.587f * g + 0.114f * b; }

void AdjustBrightness(float* image, int64_t count, float factor) {
  for (int64_t i = 0; i < count; ++i) image[i] = Clamp01(image[i] * factor);
}

// torchvision: blend with the mean of the grayscale image (of the image itself when C = 1).
void AdjustContrast(float* image, int64_t channels, int64_t pixels, float factor) {
  double sum = 0;
  if (channels == 3) {
    for (int64_t i = 0; i < pixels; ++i) sum += Luma(image[i], image[pixels + i], image[2 * pixels + i]);
  } else {
    for (int64_t i = 0; i < pixels; ++i) sum += image[i];
  }
  const float mean_term = (1.0f - factor) * static_cast<float>(sum / pixels);
  for (int64_t i = 0; i < channels * pixels; ++i) image[i] = Clamp01(factor * image[i] + mean_term);
}

// torchvision: blend each pixel with its own grayscale value (RGB only).
void AdjustSaturation(float* image, int64_t pixels, float factor) {
  float* r = image;
  float* g = image + pixels;
  float* b = image + 2 * pixels;
  for (int64_t i = 0; i < pixels; ++i) {
    const float gray_term = (1.0f - factor) * Luma(r[i], g[i], b[i]);
    r[i] = Clamp01(factor * r[i] + gray_term);
    g[i] = Clamp01(factor * g[i] + gray_term);
    b[i] = Clamp01(factor * b[i] + gray_term);
  }
}

// torchvision's tensor adjust_hue, per pixel: RGB -> HSV, h += shift (mod 1), HSV -> RGB. Exact, not simplified.
void ShiftHue(float& r, float& g, float& b, float shift) {
  const float maxc = std::max({r, g, b});
  const float minc = std::min({r, g, b});
  const float chroma = maxc - minc;
  if (chroma == 0) return;  // gray: hue is undefined and the pixel stays as it is
  const float s = chroma / maxc;
  const float rc = (maxc - r) / chroma, gc = (maxc - g) / chroma, bc = (maxc - b) / chroma;
  float h = maxc == r ? bc - gc : maxc == g ? 2.0f + rc - bc : 4.0f + gc - rc;
  h = std::fmod(h / 6.0f + 1.0f + shift, 1.0f);
  if (h < 0) h += 1.0f;
  const float v = maxc;
  const float sector = std::floor(h * 6.0f);
  const float f = h * 6.0f - sector;
  const float p = Clamp01(v * (1.0f - s));
  const float q = Clamp01(v * (1.0f - s * f));
  const float t = Clamp01(v * (1.0f - s * (1.0f - f)));
  switch (static_cast<int>(sector) % 6) {
    case 0: r = v, g = t, b = p; break;
    case 1: r = q, g = v, b = p; break;
    case 2: r = p, g = v, b = t; break;
    case 3: r = p, g = q, b = v; break;
    case 4: r = t, g = p, b = v; break;
    default: r = v, g = p, b = q; break;
  }
}

void AdjustHue(float* image, int64_t pixels, float shift) {
  for (int64_t i = 0; i < pixels; ++i) ShiftHue(image[i], image[pixels + i], image[2 * pixels + i], shift);
}

// Half width of the blur kernel: floor(fraction x size) / 2 taps (SimCLR: 10% of 224 -> 23 taps), at most size - 1
// so that reflect padding stays inside the image.
int64_t BlurRadius(const AugmentOptions& options, int64_t height, int64_t width) {
  const int64_t size = std::min(height, width);
  return std::min(static_cast<int64_t>(options.blur_kernel_fraction * size) / 2, size - 1);
}

// Index of the sample at i in a line of n samples reflect-padded (torchvision/numpy "reflect": -1 -> 1, n -> n - 2).
int64_t Reflect(int64_t i, int64_t n) { return i < 0 ? -i : i >= n ? 2 * (n - 1) - i : i; }

// Separable Gaussian blur of each plane, as torchvision's gaussian_blur on tensors: taps exp(-x^2 / (2 sigma^2))
// for x in [-radius, radius], normalised to sum 1, reflect padding; one pass along rows, one along columns.
void GaussianBlur(float* image, int64_t channels, int64_t height, int64_t width, int64_t radius, float sigma) {
  std::vector<float> taps(2 * radius + 1);
  double total = 0;
  for (int64_t k = -radius; k <= radius; ++k) total += std::exp(-0.5 * (k / sigma) * (k / sigma));
  for (int64_t k = -radius; k <= radius; ++k) {
    taps[k + radius] = static_cast<float>(std::exp(-0.5 * (k / sigma) * (k / sigma)) / total);
  }
  // Blurs n samples spaced `stride` apart in place, through a copy of the line.
  std::vector<float> line(std::max(height, width));
  auto blur_line = [&](float* start, int64_t n, int64_t stride) {
    for (int64_t i = 0; i < n; ++i) line[i] = start[i * stride];
    for (int64_t i = 0; i < n; ++i) {
      float sum = 0;
      for (int64_t k = -radius; k <= radius; ++k) sum += taps[k + radius] * line[Reflect(i + k, n)];
      start[i * stride] = sum;
    }
  };
  for (int64_t c = 0; c < channels; ++c) {
    float* plane = image + c * height * width;
    for (int64_t y = 0; y < height; ++y) blur_line(plane + y * width, width, 1);
    for (int64_t x = 0; x < width; ++x) blur_line(plane + x, height, width);
  }
}

void ToGrayscale(float* image, int64_t pixels) {
  for (int64_t i = 0; i < pixels; ++i) {
    const float gray = Luma(image[i], image[pixels + i], image[2 * pixels + i]);
    image[i] = image[pixels + i] = image[2 * pixels + i] = gray;
  }
}

// torchvision's ColorJitter(s, s, s, min(s, 0.5)) as in InstDisc/CMC (the paper's code base): factors drawn from
// [max(0, 1 - s), 1 + s] (hue shift from [-h, h]), the operations applied in a random order. Grayscale images get
// brightness and contrast only.
void ColorJitter(float* image, int64_t channels, int64_t pixels, float strength, ImageRng& rng) {
  if (strength <= 0) return;
  const int num_ops = channels == 3 ? 4 : 2;
  std::array<int, 4> order = {0, 1, 2, 3};
  for (int i = num_ops - 1; i > 0; --i) std::swap(order[i], order[rng.Int(0, i)]);
  const double lo = std::max(0.0, 1.0 - strength), hi = 1.0 + strength;
  const double hue = std::min(strength, 0.5f);
  const auto brightness = static_cast<float>(rng.Uniform(lo, hi));
  const auto contrast = static_cast<float>(rng.Uniform(lo, hi));
  const auto saturation = static_cast<float>(rng.Uniform(lo, hi));
  const auto hue_shift = static_cast<float>(rng.Uniform(-hue, hue));
  for (int k = 0; k < num_ops; ++k) {
    switch (order[k]) {
      case 0: AdjustBrightness(image, channels * pixels, brightness); break;
      case 1: AdjustContrast(image, channels, pixels, contrast); break;
      case 2: AdjustSaturation(image, pixels, saturation); break;
      default: AdjustHue(image, pixels, hue_shift); break;
    }
  }
}

// The paper's pipeline (InstDisc order): RandomResizedCrop -> ColorJitter -> RandomGrayscale -> HorizontalFlip, with
// SimCLR's Gaussian blur after the grayscale for ImageNet. The flip is folded into the resize: every later step is
// per pixel or a mirror-symmetric filter, so mirroring first gives the same image. The blur draws its numbers last,
// so enabling it leaves every other draw (and the views of data sets without blur) unchanged.
// Everything after the crop and flip, in place on the view dst (C, out_size, out_size).
void FinishView(int64_t channels, int64_t out_size, ImageRng& rng, const AugmentOptions& options, float* dst) {
  const int64_t pixels = out_size * out_size;
  ColorJitter(dst, channels, pixels, options.color_jitter, rng);
  if (channels == 3 && rng.Bernoulli(options.grayscale_prob)) ToGrayscale(dst, pixels);
  if (options.blur_prob > 0 && rng.Bernoulli(options.blur_prob)) {
    const auto sigma = static_cast<float>(rng.Uniform(options.blur_sigma_min, options.blur_sigma_max));
    GaussianBlur(dst, channels, out_size, out_size, BlurRadius(options, out_size, out_size), sigma);
  }
}

void AugmentImage(const uint8_t* src, int64_t channels, int64_t height, int64_t width, int64_t out_size,
                  ImageRng& rng, const AugmentOptions& options, float* dst) {
  const CropBox box = SampleCrop(rng, height, width, options);
  const bool flip = rng.Bernoulli(options.flip_prob);
  ResizeCropInto(src, channels, height, width, box, out_size, out_size, flip, dst);
  FinishView(channels, out_size, rng, options, dst);
}

// Runs body(begin, end) over [0, n) on `threads` threads (0: LibTorch's intra-op pool). The split does not matter
// for the result: every image's output depends on that image alone.
void ParallelFor(int64_t n, int threads, const std::function<void(int64_t, int64_t)>& body) {
  if (threads <= 0) {
    at::parallel_for(0, n, 1, body);
    return;
  }
  const int64_t chunk = (n + threads - 1) / threads;
  std::vector<std::thread> workers;
  std::vector<std::exception_ptr> errors((n + chunk - 1) / std::max<int64_t>(chunk, 1) + 1);
  const auto guarded = [&](size_t slot, int64_t begin, int64_t end) {
    try {
      body(begin, end);
    } catch (...) {
      errors[slot] = std::current_exception();  // rethrown below: an exception must not leave a std::thread
    }
  };
  size_t slot = 1;
  for (int64_t begin = chunk; begin < n; begin += chunk) workers.emplace_back(guarded, slot++, begin, std::min(n, begin + chunk));
  guarded(0, 0, std::min(n, chunk));
  for (auto& worker : workers) worker.join();
  for (const std::exception_ptr& error : errors) {
    if (error) std::rethrow_exception(error);
  }
}

// A streamed image's file, decoded: its original when it is small, or at the smallest JPEG DCT scale whose output
// covers min_height x min_width of the original's pixels. A file that cannot be read throws UserError, or, with
// skip_bad, gives a grey image of the original's size (when known) and is counted.
struct StreamedImage {
  DecodedImage decoded;
  ImageSize original;
  bool replaced = false;  // a grey 64 x 64 stands in for a file that could not be read
};
StreamedImage ReadStreamedImage(const ImageFiles& files, int64_t row,
                                const std::function<ImageSize(const ImageSize&)>& needed) {
  const std::string& path = files.paths[row];
  StreamedImage image;
  try {
    const std::vector<uint8_t> bytes = ReadImageBytes(path);
    image.original = ReadImageSize(bytes, path);
    const ImageSize need = needed(image.original);
    image.decoded = DecodeImage(bytes, path, need.height, need.width);
  } catch (const UserError& e) {
    if (!files.skip_bad) throw;
    if (files.bad.fetch_add(1) < 10) {
      LOG(WARNING) << Utf8Safe(e.what()) << " Replaced by a grey image (data.skip_bad_images).";
    }
    image.original = {64, 64};
    image.decoded = {std::vector<uint8_t>(3 * 64 * 64, 128), 64, 64};
    image.replaced = true;
  }
  return image;
}

// AugmentImage for a streamed image: the crop is drawn on the original's size (the same draws as in memory), then
// only as many pixels are decoded as the crop needs at out_size, and the box is scaled onto them.
void AugmentStreamed(const ImageFiles& files, int64_t row, int64_t out_size, ImageRng& rng,
                     const AugmentOptions& options, float* dst) {
  CropBox box;
  const StreamedImage image = ReadStreamedImage(files, row, [&](const ImageSize& original) {
    box = SampleCrop(rng, original.height, original.width, options);
    return ImageSize{(original.height * out_size + box.height - 1) / box.height,
                     (original.width * out_size + box.width - 1) / box.width};
  });
  if (image.replaced) box = {0, 0, 64, 64};
  const DecodedImage& d = image.decoded;
  const double sy = static_cast<double>(d.height) / image.original.height;
  const double sx = static_cast<double>(d.width) / image.original.width;
  CropBox scaled = box;
  if (sy != 1.0 || sx != 1.0) {
    scaled.top = std::min<int64_t>(std::lround(box.top * sy), d.height - 1);
    scaled.left = std::min<int64_t>(std::lround(box.left * sx), d.width - 1);
    scaled.height = std::clamp<int64_t>(std::lround(box.height * sy), 1, d.height - scaled.top);
    scaled.width = std::clamp<int64_t>(std::lround(box.width * sx), 1, d.width - scaled.left);
  }
  const bool flip = rng.Bernoulli(options.flip_prob);
  ResizeCropInto(d.pixels.data(), 3, d.height, d.width, scaled, out_size, out_size, flip, dst);
  FinishView(3, out_size, rng, options, dst);
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

AugmentOptions AugmentOptionsFrom(const DataConfig& config) {
  // ResolveConfig has filled every field, so a zero here is the user's explicit choice (e.g. no flips).
  AugmentOptions options;
  options.crop_scale_min = config.crop_scale_min();
  options.crop_scale_max = config.crop_scale_max();
  options.color_jitter = config.color_jitter();
  options.grayscale_prob = config.grayscale_prob();
  options.flip_prob = config.flip_prob();
  options.blur_prob = config.dataset() == "imagefolder" ? 0.5f : 0.0f;
  options.threads = config.workers();
  options.out_size = ImageSizeOf(config);
  return options;
}

// Timing (Release, GCC 12, `augment_test --gtest_filter='*Timing*'`): a batch of 256 Fashion-MNIST-sized images
// (1x28x28) with the paper's options costs 0.59 ms of CPU time on 1 thread (wall time was 1.1-1.8 ms on 1 or 2
// threads only because the 2 cores were shared with other builds at the time).
torch::Tensor AugmentBatch(const Dataset& data, const std::vector<int64_t>& indices, uint64_t seed, int64_t epoch,
                           int view, const AugmentOptions& options) {
  CHECK(data.streamed() || (data.images.dtype() == torch::kUInt8 && data.images.dim() == 4))
      << "images must be uint8 (N, C, H, W)";
  CHECK(options.crop_scale_min > 0 && options.crop_scale_min <= options.crop_scale_max);
  CHECK(options.crop_ratio_min > 0 && options.crop_ratio_min <= options.crop_ratio_max);
  const int64_t batch = static_cast<int64_t>(indices.size());
  for (int64_t index : indices) CHECK(index >= 0 && index < data.size()) << "image index " << index;
  const auto stream_of = [&](int64_t index) {
    return ImageRng(MixSeed(kAugmentDomain, {seed, static_cast<uint64_t>(epoch), static_cast<uint64_t>(index),
                                             static_cast<uint64_t>(view)}));
  };
  if (data.streamed()) {
    CHECK_GT(options.out_size, 0) << "views of a streamed folder need AugmentOptions.out_size";
    const int64_t view_floats = 3 * options.out_size * options.out_size;
    torch::Tensor out = torch::empty({batch, 3, options.out_size, options.out_size}, torch::kFloat);
    float* dst = out.data_ptr<float>();
    ParallelFor(batch, options.threads, [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        ImageRng rng = stream_of(indices[b]);
        AugmentStreamed(*data.files, indices[b], options.out_size, rng, options, dst + b * view_floats);
      }
    });
    return out;
  }
  const torch::Tensor images = data.images.contiguous();
  const int64_t channels = images.size(1), height = images.size(2), width = images.size(3);
  CHECK(channels == 1 || channels == 3) << "augmentations support 1 or 3 channels, got " << channels;
  const int64_t out_size = options.out_size > 0 ? options.out_size : height;
  CHECK(options.out_size > 0 || height == width) << "views of non-square images need AugmentOptions.out_size";
  const int64_t image_bytes = channels * height * width, view_floats = channels * out_size * out_size;
  torch::Tensor out = torch::empty({batch, channels, out_size, out_size}, torch::kFloat);
  const uint8_t* src = images.data_ptr<uint8_t>();
  float* dst = out.data_ptr<float>();
  ParallelFor(batch, options.threads, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      ImageRng rng = stream_of(indices[b]);
      AugmentImage(src + indices[b] * image_bytes, channels, height, width, out_size, rng, options,
                   dst + b * view_floats);
    }
  });
  return out;
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
