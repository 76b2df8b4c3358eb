// Private to trainer/data/: the pixel work that the augmentations (augment.cc) and evaluation's images (data.cc)
// share: cropping with resizing as torchvision does it, a thread split, and reading one streamed file.
#pragma once

#include <cstdint>
#include <functional>

#include "trainer/data/augment.h"
#include "trainer/data/data.h"
#include "trainer/data/image_decode.h"

namespace tempered {

// The crop `box` of src (uint8, C, H, W) resized to dst (float in [0, 1], C, out_h, out_w), mirrored left-right
// when `flip`: bilinear with align_corners = false when the box is no larger than the output (only upsampling, where
// bilinear needs no antialiasing filter), else PyTorch's antialiased bilinear resize (a triangle filter widened by
// the scale factor), as torchvision's RandomResizedCrop and Resize with antialias=True.
void ResizeCropInto(const uint8_t* src, int64_t channels, int64_t height, int64_t width, const CropBox& box,
                    int64_t out_h, int64_t out_w, bool flip, float* dst);

float Clamp01(float v);

// Runs body(begin, end) over [0, n) on `threads` threads (0: LibTorch's intra-op pool). The split does not matter
// for the result when every item's output depends on that item alone.
void ParallelFor(int64_t n, int threads, const std::function<void(int64_t, int64_t)>& body);

// A streamed image's file, decoded: its original when it is small, or at the smallest JPEG DCT scale whose output
// covers min_height x min_width of the original's pixels. A file that cannot be read throws UserError, or, with
// skip_bad, gives a grey image of the original's size (when known) and is counted.
struct StreamedImage {
  DecodedImage decoded;
  ImageSize original;
  bool replaced = false;  // a grey 64 x 64 stands in for a file that could not be read
};
StreamedImage ReadStreamedImage(const ImageFiles& files, int64_t row,
                                const std::function<ImageSize(const ImageSize&)>& needed);

}  // namespace tempered
