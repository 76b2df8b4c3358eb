// tempered-train: one contrastive training run. Launched by mpirun (or alone for one rank):
//   mpirun -np N tempered-train --config run.pbtxt [--tau 0.1 ...] --out_dir DIR
// main() only parses flags, builds the config and makes one call (STYLE.md).

#include <gflags/gflags.h>
#include <glog/logging.h>

#include <cstdio>
#include <map>
#include <string>
#include <utility>

#include "comm/comm.h"
#include "trainer/config.h"
#include "trainer/train.h"

DEFINE_string(config, "", "RunConfig in protobuf text format (proto/tempered.proto); unset fields take defaults");

// Overrides of RunConfig fields: a flag given on the command line replaces the field at its path. They are strings
// so that one parser (SetFieldByPath) validates every value and names the flag in its error.
#define TEMPERED_OVERRIDE(flag, path) DEFINE_string(flag, "", "overrides RunConfig." path)
TEMPERED_OVERRIDE(tau, "loss.tau (temperature, > 0)");
TEMPERED_OVERRIDE(loss, "loss.name: infonce|simple|hard|hard_simple|nearest");
TEMPERED_OVERRIDE(hard_k, "loss.hard_k (hardest negatives per anchor; 0 = hard_fraction)");
TEMPERED_OVERRIDE(negatives, "loss.negatives: batch|memory_bank");
TEMPERED_OVERRIDE(epochs, "epochs");
TEMPERED_OVERRIDE(max_steps, "max_steps (global steps; 0 = no limit)");
TEMPERED_OVERRIDE(batch_size, "batch_size (the GLOBAL batch over all ranks)");
TEMPERED_OVERRIDE(lr, "optim.lr");
TEMPERED_OVERRIDE(model, "model.arch: small_cnn|resnet18");
TEMPERED_OVERRIDE(norm, "model.norm: none|batch|sync");
TEMPERED_OVERRIDE(dataset, "data.dataset");
TEMPERED_OVERRIDE(data_dir, "data.data_dir");
TEMPERED_OVERRIDE(train_subset, "data.train_subset (first N training images; 0 = all)");
TEMPERED_OVERRIDE(test_subset, "data.test_subset (first N test images; 0 = all)");
TEMPERED_OVERRIDE(prefetch_steps,
                  "data.prefetch_steps (steps of views made ahead on a background thread: 0-2; default 1 on cuda, "
                  "0 on cpu)");
TEMPERED_OVERRIDE(seed, "seed");
TEMPERED_OVERRIDE(threads, "threads (intra-op threads per rank; 0 = cores / ranks on the node)");
TEMPERED_OVERRIDE(out_dir, "out_dir");
TEMPERED_OVERRIDE(log_every_steps, "log_every_steps");
TEMPERED_OVERRIDE(eval_every_epochs, "eval.every_epochs");
TEMPERED_OVERRIDE(linear_epochs, "eval.linear_epochs (0 = no linear evaluation)");
TEMPERED_OVERRIDE(curve_train_samples,
                  "eval.curve_train_samples (training images in the per-epoch convergence curve's kNN; 0 = no curve)");
TEMPERED_OVERRIDE(weight_decay, "optim.weight_decay");
TEMPERED_OVERRIDE(warmup_epochs, "optim.warmup_epochs (linear lr warm-up, fractional epochs allowed)");
TEMPERED_OVERRIDE(checkpoint_every_steps, "checkpoint_every_steps (0 = every epoch)");
TEMPERED_OVERRIDE(device, "device: cpu|cuda");
TEMPERED_OVERRIDE(collective_timeout_seconds,
                  "collective_timeout_seconds (a rank waiting longer in one collective ends the job; 0 = 600)");
TEMPERED_OVERRIDE(eval_timeout_seconds,
                  "eval_timeout_seconds (the other ranks' wait for rank 0's evaluation; 0 = 86400)");
TEMPERED_OVERRIDE(gradient_bucket_kib,
                  "gradient_bucket_kib (gradients are all-reduced in buckets of about this size during backward; "
                  "0 = 256)");
#undef TEMPERED_OVERRIDE
DEFINE_bool(eval_at_init, false, "also evaluate the randomly initialised model (RunResult.initial)");
DEFINE_bool(raw_pixel_knn, false, "also report kNN accuracy on raw pixels (RunResult.raw_pixel_knn_top1)");
DEFINE_bool(bf16, false,
            "run the encoder under bf16 autocast (cuda; cpu with AVX512-BF16 or AMX); the loss stays fp32");
DEFINE_bool(resume, false, "continue from out_dir/checkpoint.pt if it exists (a fresh run otherwise)");

// Exit status of a run stopped by SIGTERM/SIGINT after writing its checkpoint (128 + SIGTERM, as a shell reports).
constexpr int kExitInterrupted = 143;

namespace {

const std::pair<const char*, const char*> kOverrides[] = {
    {"tau", "loss.tau"}, {"loss", "loss.name"}, {"hard_k", "loss.hard_k"}, {"negatives", "loss.negatives"},
    {"epochs", "epochs"}, {"max_steps", "max_steps"}, {"batch_size", "batch_size"}, {"lr", "optim.lr"},
    {"model", "model.arch"}, {"norm", "model.norm"}, {"dataset", "data.dataset"}, {"data_dir", "data.data_dir"},
    {"train_subset", "data.train_subset"}, {"test_subset", "data.test_subset"},
    {"prefetch_steps", "data.prefetch_steps"}, {"seed", "seed"},
    {"threads", "threads"}, {"out_dir", "out_dir"}, {"log_every_steps", "log_every_steps"},
    {"eval_every_epochs", "eval.every_epochs"}, {"linear_epochs", "eval.linear_epochs"},
    {"curve_train_samples", "eval.curve_train_samples"}, {"weight_decay", "optim.weight_decay"},
    {"warmup_epochs", "optim.warmup_epochs"},
    {"checkpoint_every_steps", "checkpoint_every_steps"}, {"device", "device"},
    {"collective_timeout_seconds", "collective_timeout_seconds"}, {"gradient_bucket_kib", "gradient_bucket_kib"},
    {"eval_timeout_seconds", "eval_timeout_seconds"},
};

tempered::RunConfig ConfigFromFlags() {
  tempered::RunConfig config;
  tempered::FieldLines lines;  // of the config file
  if (!FLAGS_config.empty()) config = tempered::ReadRunConfig(FLAGS_config, &lines);
  std::map<std::string, std::string> flag_of;  // field path -> the flag that set it
  for (const auto& [flag, path] : kOverrides) {
    std::string value;
    gflags::GetCommandLineOption(flag, &value);
    if (gflags::GetCommandLineFlagInfoOrDie(flag).is_default) continue;
    try {
      tempered::SetFieldByPath(&config, path, value);
    } catch (const tempered::UserError& e) {
      throw tempered::UserError("--" + std::string(flag) + ": " + e.what());
    }
    flag_of[path] = flag;
  }
  if (FLAGS_eval_at_init) config.mutable_eval()->set_at_init(true);
  if (FLAGS_raw_pixel_knn) config.mutable_eval()->set_raw_pixel_knn(true);
  if (FLAGS_bf16) config.set_bf16(true);
  config = tempered::ResolveConfig(config);
  try {
    tempered::ValidateConfig(config);
  } catch (const tempered::InvalidFieldError& e) {
    // Say where the invalid value came from: the flag, or the config file's line (a flag overrides the file).
    if (const auto flag = flag_of.find(e.field()); flag != flag_of.end()) {
      throw tempered::UserError("--" + flag->second + ": " + e.what());
    }
    if (const auto line = lines.find(e.field()); line != lines.end()) {
      throw tempered::UserError(FLAGS_config + " line " + std::to_string(line->second) + ": " + e.what());
    }
    throw;
  }
  return config;
}

}  // namespace

int main(int argc, char** argv) {
  tempered::TuneAllocator();
  gflags::SetUsageMessage("mpirun -np N tempered-train --config run.pbtxt [--flag overrides] --out_dir DIR");
  gflags::ParseCommandLineFlags(&argc, &argv, /*remove_flags=*/true);
  FLAGS_logtostderr = true;
  google::InitGoogleLogging(argv[0]);
  tempered::comm::Init(&argc, &argv);
  int status = 0;
  try {
    if (argc > 1) throw tempered::UserError(std::string("unexpected argument '") + argv[1] + "'");
    tempered::RunConfig config;
    std::string error;
    try {
      config = ConfigFromFlags();
    } catch (const tempered::UserError& e) {
      error = e.what();
    }
    // Every rank parses the same flags, but a config file can be on one node's disk and not another's: the ranks
    // agree before going on, or those that parsed it would wait in Train's first collective forever for one that
    // gave up (a hang found by bad_input_test.py). The lowest failing rank speaks for all.
    constexpr double kNone = 1e9;
    const int rank = tempered::comm::Rank();
    const double first_failed = -tempered::comm::AllReduceMax(error.empty() ? -kNone : -static_cast<double>(rank));
    if (first_failed < kNone) {
      throw tempered::CollectiveError(error.empty() ? "another rank failed" : error, rank == first_failed);
    }
    tempered::TrainOptions options;
    options.resume = FLAGS_resume;
    if (tempered::Train(config, options).status() == tempered::RunResult::INTERRUPTED) status = kExitInterrupted;
  } catch (const tempered::CollectiveError& e) {
    if (e.report()) std::fprintf(stderr, "tempered-train: error: %s\n", e.what());
    status = 1;
  } catch (const std::exception& e) {
    // One rank failed alone: the others may be inside a collective, so take the whole job down.
    std::fprintf(stderr, "tempered-train: error on rank %d: %s\n", tempered::comm::Rank(), e.what());
    if (tempered::comm::Size() > 1) tempered::comm::Abort(e.what());
    status = 1;
  }
  tempered::comm::Finalize();
  return status;
}
