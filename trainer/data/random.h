// The data layer's random streams (private to trainer/data/).
#pragma once

#include <cstdint>
#include <initializer_list>

namespace tempered {

// Random numbers. Every stream is derived with splitmix64 from explicit inputs, never from global state, so a
// result depends only on (seed, epoch, image, view), not on threads, ranks or the batch layout.

inline uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// Folds several values into one 64-bit seed; `domain` separates the streams of different uses of the same inputs.
inline uint64_t MixSeed(uint64_t domain, std::initializer_list<uint64_t> values) {
  uint64_t h = SplitMix64(domain);
  for (uint64_t v : values) h = SplitMix64(h ^ v);
  return h;
}

inline constexpr uint64_t kPermutationDomain = 0x7065726d75746521ULL;  // "permute!"
inline constexpr uint64_t kAugmentDomain = 0x6175676d656e7421ULL;      // "augment!"
inline constexpr uint64_t kSampleDomain = 0x73616d706c657321ULL;       // "samples!"

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

}  // namespace tempered
