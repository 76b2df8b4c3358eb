// The augmentations as batched tensor operations, device-agnostic: the views AugmentBatch makes one image at a time
// on the CPU, made from a uint8 batch with each sample's ViewParams on whichever device holds the batch (a GPU's, so
// the host only gathers bytes). Every step is a linear map or a per-pixel function of the same formula as the
// per-image path, so the views agree with AugmentBatch's to float rounding (augment_test: within 2e-5 in [0, 1]).
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <vector>

#include "trainer/data/augment.h"
#include "trainer/data/data.h"

namespace tempered {

// Views of `images`, uint8 (B, C, H, W) with C 1 or 3, on any device: sample b cropped to params[b].box, resized to
// out_size x out_size (bilinear, antialiased when shrinking), mirrored, colour-jittered, grayscaled and blurred as
// params[b] says. Float (B, C, out_size, out_size) in [0, 1] on the images' device.
torch::Tensor AugmentTensors(const torch::Tensor& images, const std::vector<ViewParams>& params, int64_t out_size,
                             const AugmentOptions& options);

// AugmentBatch's views of an in-memory data set, made by AugmentTensors on `device`: the selected rows are gathered
// on the host (into pinned memory when the device is a GPU) and uploaded without blocking the host.
torch::Tensor AugmentBatchOn(const Dataset& data, const std::vector<int64_t>& indices, uint64_t seed, int64_t epoch,
                             int view, const AugmentOptions& options, torch::Device device);

}  // namespace tempered
