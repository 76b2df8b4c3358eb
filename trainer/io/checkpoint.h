// Checkpoints: everything a run needs to continue exactly where it stopped. The training randomness is a pure
// function of (seed, epoch, image index) — the epoch permutation and every augmentation — so the state is the
// model, the optimiser, the memory bank, the global step and the result so far; no RNG stream needs saving.
#pragma once

#include <torch/torch.h>

#include <string>

#include "proto/tempered.pb.h"
#include "trainer/model/model.h"

namespace tempered {

struct TrainingState {
  int64_t step = 0;      // global steps done
  torch::Tensor bank;    // memory bank (undefined with batch negatives)
  torch::Tensor logit_scale;  // a learnable tau's ln(1 / tau) (undefined for the other tau modes)
  RunResult result;      // step losses and epoch results so far
};

// Writes `path` atomically (temp file, fsync, rename): a crash leaves the previous checkpoint intact.
void SaveCheckpoint(const std::string& path, const RunConfig& config, Encoder& encoder,
                    torch::optim::Optimizer& optimizer, const TrainingState& state);

// Writes a serialized archive to `path` atomically, streamed into the temp file (never held twice in memory).
void SaveArchive(const std::string& path, torch::serialize::OutputArchive& archive);

// The encoder as torch::save writes it (for LibTorch's torch::load and Python's torch.jit.load), atomically.
void SaveModel(const std::string& path, Encoder& encoder);

// Loads `path` into encoder, optimizer and state, every tensor onto `device`: this rank's, not the GPU rank 0 saved
// from (the archive maps CPU and CUDA tensors either way). Throws UserError naming the file when it is unreadable,
// and naming the first differing field when the checkpoint's config would give a different result than `config`
// (only ResultIndependentFields, common/config.h, such as out_dir, threads and logging, may differ; not the
// config's device).
void LoadCheckpoint(const std::string& path, const RunConfig& config, torch::Device device, Encoder& encoder,
                    torch::optim::Optimizer& optimizer, TrainingState* state);

}  // namespace tempered
