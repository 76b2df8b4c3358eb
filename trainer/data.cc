// Data: IDX readers (zlib), CIFAR binary readers, data set dispatch, sharding, epoch permutations and SimCLR
// augmentations. The readers that need other libraries live in datasets_svhn.cc (matio) and
// datasets_imagefolder.cc (OpenCV).
#include "trainer/data.h"

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
#include <filesystem>
#include <functional>
#include <memory>
#include <random>
#include <thread>

#include "trainer/dataset_util.h"
#include "trainer/errors.h"

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

// The first `subset` items (0 = all). The copy releases the memory of the rest.
Dataset TakeFirst(Dataset data, int64_t subset, const std::string& field, const std::string& dataset) {
  if (subset == 0) return data;
  if (subset < 0 || subset > data.size()) {
    throw UserError("data." + field + " must lie in [0, " + std::to_string(data.size()) + "] (the size of this " +
                    dataset + " split), got " + std::to_string(subset) + ".");
  }
  data.images = data.images.narrow(0, 0, subset).clone();
  data.labels = data.labels.narrow(0, 0, subset).clone();
  return data;
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
      {"imagefolder", "", [](const std::string& dir, bool train) { return LoadImageFolder(dir, train); }},
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

// Exact uint8 -> float / 255 (the same division ToFloat does, so an identity augmentation equals ToFloat).
const std::array<float, 256>& ByteToUnit() {
  static const std::array<float, 256> table = [] {
    std::array<float, 256> t{};
    for (int v = 0; v < 256; ++v) t[v] = static_cast<float>(v) / 255.0f;
    return t;
  }();
  return table;
}

// Crops `box` out of src (C, H, W) and resizes it bilinearly to dst (C, H, W), mirrored left-right when `flip`.
// The crop never exceeds the image, so this only ever upsamples: no antialiasing filter is needed.
void ResizeCropInto(const uint8_t* src, int64_t channels, int64_t height, int64_t width, const CropBox& box, bool flip,
                    float* dst) {
  const auto& unit = ByteToUnit();
  const Taps rows = BilinearTaps(box.height, height);
  const Taps cols = BilinearTaps(box.width, width);
  for (int64_t c = 0; c < channels; ++c) {
    const uint8_t* plane = src + c * height * width;
    for (int64_t y = 0; y < height; ++y) {
      const uint8_t* row0 = plane + (box.top + rows.i0[y]) * width + box.left;
      const uint8_t* row1 = plane + (box.top + rows.i1[y]) * width + box.left;
      const float wy = rows.weight[y];
      float* out = dst + (c * height + y) * width;
      for (int64_t x = 0; x < width; ++x) {
        const float top = unit[row0[cols.i0[x]]] + cols.weight[x] * (unit[row0[cols.i1[x]]] - unit[row0[cols.i0[x]]]);
        const float bottom =
            unit[row1[cols.i0[x]]] + cols.weight[x] * (unit[row1[cols.i1[x]]] - unit[row1[cols.i0[x]]]);
        out[flip ? width - 1 - x : x] = top + wy * (bottom - top);
      }
    }
  }
}

float Clamp01(float v) { return std::min(1.0f, std::max(0.0f, v)); }

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
void AugmentImage(const uint8_t* src, int64_t channels, int64_t height, int64_t width, ImageRng& rng,
                  const AugmentOptions& options, float* dst) {
  const CropBox box = SampleCrop(rng, height, width, options);
  const bool flip = rng.Bernoulli(options.flip_prob);
  ResizeCropInto(src, channels, height, width, box, flip, dst);
  ColorJitter(dst, channels, height * width, options.color_jitter, rng);
  if (channels == 3 && rng.Bernoulli(options.grayscale_prob)) ToGrayscale(dst, height * width);
  if (options.blur_prob > 0 && rng.Bernoulli(options.blur_prob)) {
    const auto sigma = static_cast<float>(rng.Uniform(options.blur_sigma_min, options.blur_sigma_max));
    GaussianBlur(dst, channels, height, width, BlurRadius(options, height, width), sigma);
  }
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
  for (int64_t begin = chunk; begin < n; begin += chunk) {
    workers.emplace_back(body, begin, std::min(n, begin + chunk));
  }
  body(0, std::min(n, chunk));
  for (auto& worker : workers) worker.join();
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
    Dataset data = known.load(dir, train);
    return train ? TakeFirst(std::move(data), config.train_subset(), "train_subset", name + " training")
                 : TakeFirst(std::move(data), config.test_subset(), "test_subset", name + " test");
  }
  throw UserError("data.dataset \"" + name + "\" is not a known data set; known: " + known_names + ".");
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
  return options;
}

// Timing (Release, GCC 12, `augment_test --gtest_filter='*Timing*'`): a batch of 256 Fashion-MNIST-sized images
// (1x28x28) with the paper's options costs 0.59 ms of CPU time on 1 thread (wall time was 1.1-1.8 ms on 1 or 2
// threads only because the 2 cores were shared with other builds at the time).
torch::Tensor AugmentBatch(const Dataset& data, const std::vector<int64_t>& indices, uint64_t seed, int64_t epoch,
                           int view, const AugmentOptions& options) {
  CHECK(data.images.dtype() == torch::kUInt8 && data.images.dim() == 4) << "images must be uint8 (N, C, H, W)";
  CHECK(options.crop_scale_min > 0 && options.crop_scale_min <= options.crop_scale_max);
  CHECK(options.crop_ratio_min > 0 && options.crop_ratio_min <= options.crop_ratio_max);
  const torch::Tensor images = data.images.contiguous();
  const int64_t channels = images.size(1), height = images.size(2), width = images.size(3);
  CHECK(channels == 1 || channels == 3) << "augmentations support 1 or 3 channels, got " << channels;
  const int64_t image_size = channels * height * width;
  const int64_t batch = static_cast<int64_t>(indices.size());
  for (int64_t index : indices) CHECK(index >= 0 && index < data.size()) << "image index " << index;

  torch::Tensor out = torch::empty({batch, channels, height, width}, torch::kFloat);
  const uint8_t* src = images.data_ptr<uint8_t>();
  float* dst = out.data_ptr<float>();
  ParallelFor(batch, options.threads, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      const int64_t index = indices[b];
      ImageRng rng(MixSeed(kAugmentDomain, {seed, static_cast<uint64_t>(epoch), static_cast<uint64_t>(index),
                                            static_cast<uint64_t>(view)}));
      AugmentImage(src + index * image_size, channels, height, width, rng, options, dst + b * image_size);
    }
  });
  return out;
}

torch::Tensor ToFloat(const torch::Tensor& uint8_images) {
  CHECK(uint8_images.dtype() == torch::kUInt8) << "ToFloat expects uint8 images";
  return uint8_images.to(torch::kFloat).div_(255.0f);
}

}  // namespace tempered
