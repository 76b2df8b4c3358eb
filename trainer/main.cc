// tempered-train: one contrastive training run. Launched by mpirun (or alone for one rank):
//   mpirun -np N tempered-train --config run.pbtxt [--tau 0.1 ...] --out_dir DIR
// main() only parses flags, builds the config and makes one call (docs/contributing.md).

#include <gflags/gflags.h>
#include <glog/logging.h>

#include <cstdio>
#include <iterator>
#include <map>
#include <string>
#include <utility>

#include "comm/comm.h"
#include "comm/fail_together.h"
#include "common/config.h"
#include "common/flag_help.h"
#include "common/utf8.h"
#include "trainer/train.h"

DEFINE_string(config, "", "RunConfig in protobuf text format (proto/tempered.proto); unset fields take the defaults "
                          "shown here");

// Overrides of RunConfig fields (kTrainFlags names each one's field): a flag given on the command line replaces the
// field. They are strings so that one parser (SetFieldByPath) validates every value and names the flag in its error;
// their defaults, shown by --help, are RunConfig's (DefaultRunConfig).
DEFINE_string(tau, "", "temperature, > 0");
DEFINE_string(loss, "", "infonce|simple|hard|hard_simple|nearest");
DEFINE_string(tau_mode, "", "constant|learnable|cosine|adaptive: how tau evolves (parameters: loss.tau_*)");
DEFINE_string(hard_k, "", "hardest negatives per anchor for hard and hard_simple (0 = loss.hard_fraction of them)");
DEFINE_string(negatives, "", "batch|memory_bank");
DEFINE_string(epochs, "", "epochs");
DEFINE_string(max_steps, "", "global steps (0 = no limit)");
DEFINE_string(batch_size, "", "the GLOBAL batch over all ranks");
DEFINE_string(lr, "", "base learning rate (SGD with momentum; optim.schedule, cosine by default)");
DEFINE_string(model, "", "small_cnn|resnet18|resnet50");
DEFINE_string(norm, "", "none|batch|sync (sync: batch statistics over the global batch)");
DEFINE_string(dataset, "", "fashion_mnist|cifar10|cifar100|svhn|imagefolder");
DEFINE_string(data_dir, "", "the data set's directory (unset: its Debian package's, where there is one)");
DEFINE_string(train_subset, "", "N training images, a fixed class-stratified sample (0 = all)");
DEFINE_string(test_subset, "", "N test images, a fixed class-stratified sample (0 = all)");
DEFINE_string(image_size, "", "views' resolution in px (0 = the data set's own; imagefolder: 224)");
DEFINE_string(storage, "", "auto|memory|stream: an image folder decoded once into memory, or read each step");
DEFINE_string(workers, "", "threads per rank that decode and augment the views (0 = the intra-op threads)");
DEFINE_string(eval_crop_fraction, "",
              "evaluation's centre crop of the resized image (0 = 0.875 for imagefolder, 1 otherwise)");
DEFINE_string(augmentation, "",
              "per_image|batched: views made per image on the CPU, or as tensors on the step's device (unset: "
              "batched on cuda for data in memory)");
DEFINE_string(prefetch_steps, "",
              "steps of views made ahead on a background thread: 0-2 (unset: 1 on cuda, 0 on cpu)");
DEFINE_string(seed, "", "seed of the initialisation, the shuffling and the augmentations");
DEFINE_string(threads, "", "intra-op threads per rank (0 = the rank's CPU affinity shared by the ranks on it)");
DEFINE_string(out_dir, "", "where result.json, progress.json, checkpoints and TensorBoard events go");
DEFINE_string(log_every_steps, "", "a log line and progress.json every N steps");
DEFINE_string(eval_every_epochs, "", "full evaluation every N epochs (0 = only at the end)");
DEFINE_string(linear_epochs, "", "epochs of linear evaluation (0 = none)");
DEFINE_string(curve_train_samples, "",
              "training images in the per-epoch convergence curve's kNN (0 = no curve)");
DEFINE_string(weight_decay, "", "weight decay");
DEFINE_string(warmup_epochs, "", "linear lr warm-up, fractional epochs allowed");
DEFINE_string(checkpoint_every_steps, "", "checkpoint every N steps (0 = every epoch)");
DEFINE_string(device, "", "cpu|cuda");
DEFINE_string(collective_timeout_seconds, "",
              "a rank waiting longer in one collective ends the job (0 = 600)");
DEFINE_string(eval_timeout_seconds, "",
              "the other ranks' wait for rank 0's evaluation before they end the job (0 = 86400)");
DEFINE_string(gradient_bucket_kib, "",
              "gradients are all-reduced in buckets of about this size during backward (0 = 256)");
DEFINE_string(host_sync_every_steps, "",
              "steps between the host's reads of the losses and stop requests (0 = 1 on cpu, 10 on cuda)");
DEFINE_bool(eval_at_init, false, "also evaluate the randomly initialised model (RunResult.initial)");
DEFINE_bool(raw_pixel_knn, false, "also report kNN accuracy on raw pixels (RunResult.raw_pixel_knn_top1)");
DEFINE_bool(save_embeddings, false,
            "at the end also write DIR/embeddings/{train,test}_{features,embeddings,labels,indices}.npy, what the "
            "final evaluation embedded");
DEFINE_bool(bf16, false,
            "run the encoder under bf16 autocast (cuda; cpu with AVX512-BF16 or AMX); the loss stays fp32");
DEFINE_bool(resume, false, "continue from out_dir/checkpoint.pt if it exists (a fresh run otherwise)");
DEFINE_double(pause_at_fraction, 0,
              "pause at this fraction of the steps (0 = never): checkpoint, evaluate, status PAUSED; --resume goes on");

// Exit status of a run stopped by SIGTERM/SIGINT after writing its checkpoint (128 + SIGTERM, as a shell reports).
constexpr int kExitInterrupted = 143;

namespace {

// Every flag of this file: its --help group and the RunConfig field it overrides ("" for none). ConfigFromFlags
// applies the fields, --help shows them, and tests/help_test.py checks that every DEFINE above is listed here.
const tempered::FlagDoc kTrainFlags[] = {
    {"dataset", "data", "data.dataset"},
    {"data_dir", "data", "data.data_dir"},
    {"train_subset", "data", "data.train_subset"},
    {"test_subset", "data", "data.test_subset"},
    {"image_size", "data", "data.image_size"},
    {"eval_crop_fraction", "data", "data.eval_crop_fraction"},
    {"storage", "data", "data.storage"},
    {"workers", "data", "data.workers"},
    {"prefetch_steps", "data", "data.prefetch_steps"},
    {"augmentation", "data", "data.augmentation"},
    {"model", "model", "model.arch"},
    {"norm", "model", "model.norm"},
    {"bf16", "model", "bf16"},
    {"loss", "loss", "loss.name"},
    {"tau", "loss", "loss.tau"},
    {"tau_mode", "loss", "loss.tau_mode"},
    {"hard_k", "loss", "loss.hard_k"},
    {"negatives", "loss", "loss.negatives"},
    {"batch_size", "optimiser", "batch_size"},
    {"epochs", "optimiser", "epochs"},
    {"max_steps", "optimiser", "max_steps"},
    {"lr", "optimiser", "optim.lr"},
    {"weight_decay", "optimiser", "optim.weight_decay"},
    {"warmup_epochs", "optimiser", "optim.warmup_epochs"},
    {"eval_every_epochs", "evaluation", "eval.every_epochs"},
    {"linear_epochs", "evaluation", "eval.linear_epochs"},
    {"curve_train_samples", "evaluation", "eval.curve_train_samples"},
    {"eval_at_init", "evaluation", "eval.at_init"},
    {"raw_pixel_knn", "evaluation", "eval.raw_pixel_knn"},
    {"save_embeddings", "evaluation", "eval.save_embeddings"},
    {"config", "run", ""},
    {"out_dir", "run", "out_dir"},
    {"resume", "run", ""},
    {"pause_at_fraction", "run", ""},
    {"seed", "run", "seed"},
    {"device", "run", "device"},
    {"threads", "run", "threads"},
    {"log_every_steps", "run", "log_every_steps"},
    {"checkpoint_every_steps", "run", "checkpoint_every_steps"},
    {"collective_timeout_seconds", "run", "collective_timeout_seconds"},
    {"eval_timeout_seconds", "run", "eval_timeout_seconds"},
    {"gradient_bucket_kib", "run", "gradient_bucket_kib"},
    {"host_sync_every_steps", "run", "host_sync_every_steps"},
};

tempered::FlagHelp TrainHelp() {
  static const tempered::RunConfig defaults = tempered::DefaultRunConfig();
  tempered::FlagHelp help;
  help.summary = "one contrastive training run, on one rank or many (mpirun).";
  help.usage = "[mpirun -np N] tempered-train [--config run.pbtxt] [--flag=value ...] --out_dir DIR";
  help.defined_in = "trainer/main.cc";
  help.groups = {"data", "model", "loss", "optimiser", "evaluation", "run"};
  help.flags.assign(std::begin(kTrainFlags), std::end(kTrainFlags));
  help.config_name = "RunConfig";
  help.defaults = &defaults;
  help.examples = {
      "tempered-train --epochs 1 --max_steps 40 --out_dir run1      # a quick look, one process",
      "mpirun -np 2 tempered-train --threads 1 --epochs 2 --loss hard --tau 0.5 --out_dir run2",
      "tempered-train --config run.pbtxt --out_dir run2 --resume   # continue run2 from its checkpoint",
  };
  return help;
}

tempered::RunConfig ConfigFromFlags() {
  tempered::RunConfig config;
  tempered::FieldLines lines;  // of the config file
  if (!FLAGS_config.empty()) config = tempered::ReadRunConfig(FLAGS_config, &lines);
  std::map<std::string, std::string> flag_of;  // field path -> the flag that set it
  for (const tempered::FlagDoc& doc : kTrainFlags) {
    const gflags::CommandLineFlagInfo flag = gflags::GetCommandLineFlagInfoOrDie(doc.flag.c_str());
    if (doc.field.empty() || flag.is_default) continue;
    try {
      tempered::SetFieldByPath(&config, doc.field, flag.current_value);
    } catch (const tempered::UserError& e) {
      throw tempered::UserError("--" + doc.flag + ": " + e.what());
    }
    flag_of[doc.field] = doc.flag;
  }
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
  tempered::ParseFlagsWithHelp(TrainHelp(), &argc, &argv);
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
      if (!(FLAGS_pause_at_fraction >= 0 && FLAGS_pause_at_fraction <= 1)) {
        throw tempered::UserError("--pause_at_fraction must be in [0, 1], got " +
                                  gflags::GetCommandLineFlagInfoOrDie("pause_at_fraction").current_value);
      }
    } catch (const tempered::UserError& e) {
      error = e.what();
    }
    // Every rank parses the same flags, but a config file can be on one node's disk and not another's: the ranks
    // agree before going on, or those that parsed it would wait in Train's first collective forever for one that
    // gave up (a hang found by bad_input_test.py). The lowest failing rank speaks for all.
    tempered::comm::FailTogether(error);
    tempered::TrainOptions options;
    options.resume = FLAGS_resume;
    options.pause_at_fraction = FLAGS_pause_at_fraction;
    if (tempered::Train(config, options).status() == tempered::RunResult::INTERRUPTED) status = kExitInterrupted;
  } catch (const tempered::CollectiveError& e) {
    if (e.report()) std::fprintf(stderr, "tempered-train: error: %s\n", tempered::Utf8Safe(e.what()).c_str());
    status = 1;
  } catch (const std::exception& e) {
    // One rank failed alone: the others may be inside a collective, so take the whole job down.
    std::fprintf(stderr, "tempered-train: error on rank %d: %s\n", tempered::comm::Rank(),
                 tempered::Utf8Safe(e.what()).c_str());
    if (tempered::comm::Size() > 1) tempered::comm::Abort(e.what());
    status = 1;
  }
  tempered::comm::Finalize();
  return status;
}
