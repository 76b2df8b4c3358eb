#include "trainer/train.h"

#include <malloc.h>
#include <sys/stat.h>
#include <unistd.h>

#include <glog/logging.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <mutex>
#include <optional>
#include <sstream>
#include <thread>

#include <google/protobuf/text_format.h>
#include <nlohmann/json.hpp>

#include <ATen/autocast_mode.h>
#include <torch/version.h>

#include "comm/comm.h"
#include "trainer/checkpoint.h"
#include "trainer/config.h"
#include "trainer/data.h"
#include "trainer/eval.h"
#include "trainer/event_writer.h"
#include "trainer/loss.h"
#include "trainer/model.h"
#include "trainer/prefetch.h"
#include "trainer/streaming_loss.h"

namespace tempered {

namespace {

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Runs `fn` on every rank. If it threw on any rank, every rank throws CollectiveError (the lowest failing rank
// reports its own message), so a setup failure on one rank never leaves the others waiting in a collective.
void Collectively(const std::function<void()>& fn) {
  std::string error;
  try {
    fn();
  } catch (const std::exception& e) {
    error = e.what();
    if (error.empty()) error = "unknown error";
  }
  constexpr double kNone = 1e9;
  const double first_failed = -comm::AllReduceMax(error.empty() ? -kNone : -static_cast<double>(comm::Rank()));
  if (first_failed < kNone) {
    throw CollectiveError(error.empty() ? "another rank failed" : error,
                          comm::Rank() == static_cast<int>(first_failed));
  }
}

void MakeDirectory(const std::string& dir) {
  // mkdir -p; each component may already exist.
  for (size_t pos = dir.find('/', 1); ; pos = dir.find('/', pos + 1)) {
    const std::string prefix = dir.substr(0, pos);
    if (::mkdir(prefix.c_str(), 0755) != 0 && errno != EEXIST) {
      throw UserError("cannot create output directory " + dir + ": " + std::strerror(errno));
    }
    if (pos == std::string::npos) break;
  }
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    throw UserError("output directory " + dir + " is not a directory");
  }
}

// Learning rate at global step `step` (0-based): linear warm-up, then cosine, step or constant.
double LearningRate(const OptimConfig& o, int64_t step, int64_t steps_per_epoch, int64_t total_steps) {
  const double warmup = o.warmup_epochs() * static_cast<double>(steps_per_epoch);
  if (step < warmup) return o.lr() * (static_cast<double>(step) + 1) / warmup;
  switch (o.schedule()) {
    case OptimConfig::COSINE: {
      const double progress = (step - warmup) / std::max(1.0, total_steps - warmup);
      return o.lr() * 0.5 * (1 + std::cos(M_PI * progress));
    }
    case OptimConfig::STEP: {
      double lr = o.lr();
      for (int32_t e : o.decay_epochs()) {
        if (step >= static_cast<int64_t>(e) * steps_per_epoch) lr *= o.decay_factor();
      }
      return lr;
    }
    default: return o.lr();
  }
}

int ThreadsPerRank(const RunConfig& config) {
  if (config.threads() > 0) return config.threads();
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  return std::max(1, cores / comm::LocalSize());
}

// The rank's device: CPU, or GPU local_rank % count so that ranks on a node spread over its GPUs.
torch::Device DeviceFor(const RunConfig& config) {
  if (config.device() != "cuda") return torch::kCPU;
  if (!torch::cuda::is_available()) {
    throw UserError("device cuda was requested, but this LibTorch has no CUDA or no GPU is visible");
  }
  return {torch::kCUDA, static_cast<c10::DeviceIndex>(comm::LocalRank() % torch::cuda::device_count())};
}

// Everything one step needs that does not change between steps.
struct Trainer {
  RunConfig config;
  Dataset train, test;
  Encoder encoder{nullptr};
  std::unique_ptr<torch::optim::SGD> optimizer;
  std::unique_ptr<comm::GradientReducer> reducer;
  LossOptions loss;
  AugmentOptions augment;
  torch::Device device{torch::kCPU};
  torch::Tensor bank;  // (N, d) memory bank, identical on every rank (memory_bank negatives only)
  int64_t steps_per_epoch = 0;
  int64_t total_steps = 0;
  // The last step's anchors, candidates, positive and excluded indices, for the similarity histograms (rank 0).
  torch::Tensor anchors, candidates, positive, exclude;
};

// Whether this CPU does bf16 arithmetic natively (AVX512-BF16 or AMX): oneDNN's bf16 convs are then ~1.5-2x its
// fp32 ones; without, it converts in software and bf16 is slower than fp32.
bool CpuHasNativeBf16() {
  std::ifstream cpuinfo("/proc/cpuinfo");
  for (std::string line; std::getline(cpuinfo, line);) {
    if (line.rfind("flags", 0) != 0) continue;
    std::istringstream flags(line);
    for (std::string flag; flags >> flag;) {
      if (flag == "avx512_bf16" || flag == "amx_bf16") return true;
    }
    return false;
  }
  return false;
}

// bf16 autocast on the trainer's device. LibTorch 2.4 replaced the per-device autocast switches with ones that take
// the device; the code builds against both.
void SetAutocast(torch::Device device, bool enabled) {
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
  at::autocast::set_autocast_dtype(device.type(), at::kBFloat16);
  at::autocast::set_autocast_enabled(device.type(), enabled);
#else
  if (device.is_cuda()) {
    at::autocast::set_autocast_gpu_dtype(at::kBFloat16);
    at::autocast::set_enabled(enabled);
  } else {
    at::autocast::set_autocast_cpu_dtype(at::kBFloat16);
    at::autocast::set_cpu_enabled(enabled);
  }
#endif
}

// The encoder's embedding of a batch, in fp32. With bf16 the encoder runs under autocast (the convs and matmuls in
// bf16) while the loss, which needs the range of fp32 at small tau, stays in fp32.
torch::Tensor Embed(Trainer& t, const torch::Tensor& images) {
  if (!t.config.bf16()) return t.encoder->forward(images).embedding;
  SetAutocast(t.device, true);
  torch::Tensor z = t.encoder->forward(images).embedding.to(torch::kFloat32);
  SetAutocast(t.device, false);
  at::autocast::clear_cache();
  return z;
}

// SimCLR with global batch negatives. views (2b, C, H, W) = [view 0; view 1] of this rank's b images; the gathered
// candidates are (2B, d) with rank r's rows at [2 offset_r, 2 offset_r + 2 b_r). Returns the sum of this rank's
// 2b anchor losses.
torch::Tensor BatchNegativesLoss(Trainer& t, const torch::Tensor& views, const Shard& shard) {
  const int64_t b = shard.count;
  const torch::Tensor z = Embed(t, views);                   // (2b, d)
  const torch::Tensor candidates = comm::GatherWithGrad(z);  // (2B, d)
  const torch::Tensor local = torch::arange(2 * b, torch::TensorOptions(torch::kLong).device(t.device));
  const torch::Tensor self = local + 2 * shard.offset;
  const torch::Tensor positive = (local + b).remainder(2 * b) + 2 * shard.offset;  // the other view
  t.anchors = z.detach(), t.candidates = candidates.detach(), t.positive = positive, t.exclude = self;
  return StreamingOrNaiveLoss(z, candidates, positive, self, t.loss).sum();
}

// Memory-bank negatives (Wu et al. 2018): one view; candidates are the bank, the positive is the image's own entry.
torch::Tensor MemoryBankLoss(Trainer& t, const torch::Tensor& view, const std::vector<int64_t>& indices,
                             torch::Tensor* embedding) {
  *embedding = Embed(t, view);  // (b, d)
  const torch::Tensor positive = torch::tensor(indices, torch::kLong).to(t.device);
  const torch::Tensor exclude = torch::full({static_cast<int64_t>(indices.size())}, -1,
                                            torch::TensorOptions(torch::kLong).device(t.device));
  t.anchors = embedding->detach(), t.candidates = t.bank, t.positive = positive, t.exclude = exclude;
  return StreamingOrNaiveLoss(*embedding, t.bank, positive, exclude, t.loss).sum();
}

// bank[i] = normalize(m bank[i] + (1 - m) f(x_i)) for every image of the global batch, applied identically on
// every rank from the all-gathered (index, feature) pairs.
void UpdateBank(Trainer& t, const std::vector<int64_t>& indices, const torch::Tensor& embedding) {
  torch::NoGradGuard no_grad;
  const torch::Tensor index = comm::AllGather(torch::tensor(indices, torch::kLong).to(t.device));
  const torch::Tensor feature = comm::AllGather(embedding.detach().contiguous());
  const double m = t.config.loss().bank_momentum();
  const torch::Tensor mixed = t.bank.index_select(0, index) * m + feature * (1 - m);
  t.bank.index_copy_(0, index, torch::nn::functional::normalize(mixed,
                                   torch::nn::functional::NormalizeFuncOptions().dim(1)));
}

// One global step on this rank's input; returns the mean loss over the global batch's anchors (identical on every
// rank).
double Step(Trainer& t, const StepInput& input, double lr) {
  const int64_t global_batch = t.config.batch_size();
  const bool bank = t.config.loss().negatives() == LossConfig::MEMORY_BANK;
  const int64_t anchors = bank ? global_batch : 2 * global_batch;
  const torch::Tensor views = input.views.to(t.device);  // bank: one view; batch negatives: [view 0; view 1]

  torch::Tensor loss_sum, embedding;
  if (bank) {
    loss_sum = MemoryBankLoss(t, views, input.indices, &embedding);
  } else {
    loss_sum = BatchNegativesLoss(t, views, ShardOf(global_batch, comm::Rank(), comm::Size()));
  }
  // Each rank's share, scaled by the world size: the reducer averages gradients over ranks, so the result is the
  // gradient of the global mean loss, also with uneven shards.
  t.optimizer->zero_grad();
  (loss_sum * (static_cast<double>(comm::Size()) / anchors)).backward();
  t.reducer->Finalize();
  for (auto& group : t.optimizer->param_groups()) {
    static_cast<torch::optim::SGDOptions&>(group.options()).lr(lr);
  }
  t.optimizer->step();
  if (bank) UpdateBank(t, input.indices, embedding);
  return comm::AllReduceSum(loss_sum.item<double>()) / anchors;
}

// Progress of rank 0: on a terminal a bar redrawn in place; otherwise (log files, schedulers) one log line each.
void ReportProgress(const std::string& text, double fraction) {
  static const bool terminal = ::isatty(STDERR_FILENO) == 1;
  if (!terminal) {
    LOG(INFO) << text;
    return;
  }
  constexpr int kWidth = 30;
  const int filled = static_cast<int>(std::clamp(fraction, 0.0, 1.0) * kWidth);
  std::fprintf(stderr, "\r[%s%s] %s\033[K%s", std::string(filled, '#').c_str(),
               std::string(kWidth - filled, '.').c_str(), text.c_str(), fraction >= 1 ? "\n" : "");
  std::fflush(stderr);
}

// out_dir/progress.json, for a person or a script watching the run: best-effort. A failed write (a full or failing
// disk) must not end a run whose checkpoints and result may still be written, so it warns once and training goes on.
void WriteProgress(const RunConfig& config, int64_t step, int64_t total, int64_t epoch, double loss,
                   double images_per_second, double eta) {
  static bool warned = false;  // rank 0 writes it, from the main thread only
  nlohmann::json progress = {
      {"step", step}, {"total_steps", total}, {"epoch", epoch}, {"epochs", config.epochs()}, {"loss", loss}};
  // A rate timed over 0 s is infinite, and so its ETA: JSON has no such number (nlohmann would write null, which
  // launch/sweep_state.cc's reader refuses), and a missing field reads there as not known.
  if (std::isfinite(images_per_second)) progress["images_per_second"] = images_per_second;
  if (std::isfinite(eta)) progress["eta_seconds"] = eta;
  try {
    WriteFileAtomically(config.out_dir() + "/progress.json", progress.dump() + "\n");
  } catch (const std::exception& e) {
    if (!warned) LOG(WARNING) << e.what() << "; training goes on without progress.json";
    warned = true;
  }
}

std::string FormatDuration(double seconds) {
  const int64_t s = static_cast<int64_t>(seconds);
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%ld:%02ld:%02ld", static_cast<long>(s / 3600), static_cast<long>(s / 60 % 60),
                static_cast<long>(s % 60));
  return buf;
}

// result.json, written by rank 0 (a no-op elsewhere). Every write goes through here, so that a failure can be
// recorded over the last result written: from the main thread when an error ends the run, or from comm's watchdog
// thread (the failure hook) while the main thread is stuck in a collective, as when another rank died or stalled.
class ResultFile {
 public:
  explicit ResultFile(const RunConfig& config)
      : path_(config.out_dir() + "/result.json"), rank_zero_(comm::Rank() == 0) {
    if (rank_zero_) comm::SetFailureHook([this](const std::string& error) { Fail(error); });
  }
  ~ResultFile() {
    if (rank_zero_) comm::SetFailureHook(nullptr);
  }
  ResultFile(const ResultFile&) = delete;
  ResultFile& operator=(const ResultFile&) = delete;

  // The slow part (the fsync) runs outside the lock, so that Fail, with mpirun's SIGKILL perhaps a second away,
  // never waits for it. Once a failure is recorded, a RUNNING result no longer replaces it (after a stop request
  // the run either dies or ends INTERRUPTED); a final one (FINISHED, INTERRUPTED) does: the run got to its end.
  void Write(const RunResult& result) {
    if (!rank_zero_) return;
    const std::string staged = StageFile(path_, ToJson(result));
    std::lock_guard<std::mutex> lock(mutex_);
    last_ = result;
    written_ = true;
    if (failed_ && result.status() == RunResult::RUNNING) return DiscardStagedFile(staged);
    CommitStagedFile(staged, path_);
  }

  // The last result written, with status FAILED and `error`. Best effort: the run is failing already, and its error
  // is printed whether or not this write succeeds (a full disk, say). Nothing before the first write: a run that
  // fails in setup leaves what an earlier attempt wrote.
  void Fail(const std::string& error) noexcept {
    if (!rank_zero_) return;
    try {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!written_ || last_.status() != RunResult::RUNNING) return;
      RunResult failed = last_;
      failed.set_status(RunResult::FAILED);
      failed.set_error(error);
      WriteFileAtomically(path_, ToJson(failed), Sync::kFast);  // mpirun's SIGKILL may be a second away
      failed_ = true;
    } catch (...) {
    }
  }

 private:
  const std::string path_;
  const bool rank_zero_;
  std::mutex mutex_;  // Write (main thread) against Fail (possibly the watchdog's thread)
  RunResult last_;
  bool written_ = false;
  bool failed_ = false;  // a failure was recorded
};

// Builds data, model, optimiser and reducer. Collective: a failure on any rank fails every rank.
Trainer Setup(const RunConfig& config) {
  Trainer t;
  t.config = config;
  Collectively([&] {
    if (comm::Rank() == 0) MakeDirectory(config.out_dir());
    t.train = LoadDataset(config.data(), /*train=*/true);
    t.test = LoadDataset(config.data(), /*train=*/false);
    t.steps_per_epoch = StepsPerEpoch(t.train.size(), config.batch_size());
    if (t.steps_per_epoch == 0) {
      throw UserError("batch_size " + std::to_string(config.batch_size()) + " is larger than the " +
                      std::to_string(t.train.size()) + " training images");
    }
    if (config.batch_size() < comm::Size()) {
      throw UserError("batch_size " + std::to_string(config.batch_size()) + " is smaller than the " +
                      std::to_string(comm::Size()) + " ranks: every rank needs at least one image per step");
    }
  });
  t.total_steps = t.steps_per_epoch * config.epochs();
  if (config.max_steps() > 0) t.total_steps = std::min(t.total_steps, config.max_steps());

  t.device = DeviceFor(config);
  if (config.bf16() && t.device.is_cpu() && comm::Rank() == 0 && !CpuHasNativeBf16()) {
    LOG(WARNING) << "bf16 on a CPU without AVX512-BF16 or AMX (/proc/cpuinfo): slower than fp32 here";
  }
  torch::manual_seed(config.seed());  // identical initial parameters on every rank
  t.encoder = Encoder(config.model(), t.train.images.size(1), t.train.images.size(2));  // the stem depends on the size
  t.encoder->to(t.device);
  for (auto& p : t.encoder->parameters()) comm::Broadcast(p, 0);  // and made certain of it
  t.optimizer = std::make_unique<torch::optim::SGD>(
      t.encoder->parameters(), torch::optim::SGDOptions(config.optim().lr())
                                   .momentum(config.optim().momentum())
                                   .weight_decay(config.optim().weight_decay()));
  // Buckets all-reduced during backward, as each fills (the small CNN's ~1 MB of gradients makes 3-4 of 256 KiB).
  const int64_t bucket_kib = config.gradient_bucket_kib() > 0 ? config.gradient_bucket_kib() : 256;
  t.reducer = std::make_unique<comm::GradientReducer>(
      t.encoder->parameters(), comm::ReducerOptions{bucket_kib << 10, comm::ReduceTiming::kDuringBackward});
  if (comm::Rank() == 0 && comm::Size() > 1) {
    LOG(INFO) << "gradients all-reduced in " << t.reducer->bucket_count() << " buckets of about " << bucket_kib
              << " KiB during backward";
  }
  t.loss.name = config.loss().name();
  t.loss.tau = config.loss().tau();
  const bool bank = config.loss().negatives() == LossConfig::MEMORY_BANK;
  t.loss.hard_k = HardK(config.loss(), bank ? t.train.size() - 1 : 2 * config.batch_size() - 2);
  t.augment = AugmentOptionsFrom(config.data());
  if (bank) {
    // Initialised uniform on the sphere from the run's seed: identical on every rank.
    torch::manual_seed(config.seed() + 1);
    t.bank = torch::nn::functional::normalize(torch::randn({t.train.size(), config.model().embed_dim()}),
                                              torch::nn::functional::NormalizeFuncOptions().dim(1))
                 .to(t.device);
  }
  return t;
}

void LogConfig(const RunConfig& config) {
  std::string text;
  google::protobuf::TextFormat::PrintToString(config, &text);
  LOG(INFO) << "tempered-train: " << comm::Size() << " rank(s), " << at::get_num_threads()
            << " thread(s) per rank, resolved config:\n" << text;
}

// Evaluate with a line before and after on rank 0 (evaluation of the full data set takes seconds to minutes).
Metrics EvaluateAndReport(Trainer& t, const std::string& when) {
  const Clock::time_point start = Clock::now();
  BroadcastBuffers(t.encoder);  // one model evaluated, on every rank
  if (comm::Rank() == 0) {
    LOG(INFO) << "evaluating " << when << ": embedding " << t.train.size() << " train and " << t.test.size()
              << " test images, kNN, representation metrics"
              << (t.config.eval().linear_epochs() > 0 ? ", linear classifier" : "");
  }
  Metrics metrics = Evaluate(t.encoder, t.train, t.test, t.config);
  if (comm::Rank() == 0) {
    LOG(INFO) << "evaluated " << when << " in " << FormatDuration(SecondsSince(start)) << ": kNN top-1 "
              << metrics.knn_top1() << "%, linear top-1 " << metrics.linear_top1() << "%, uniformity "
              << metrics.uniformity() << ", tolerance " << metrics.tolerance();
  }
  return metrics;  // Evaluate leaves the encoder in the mode it found it in
}

// The other ranks wait here while rank 0 alone finishes an evaluation (kNN, metrics, linear classifier: minutes to
// hours, by the data set's size), a wait that no collective timeout fits, so theirs is unbounded. Rank 0, which
// arrives last, stays bounded: a rank that stalled meanwhile is still caught. Later collectives are bounded again.
void WaitForRankZero() {
  std::optional<comm::UnboundedWaits> unbounded;
  if (comm::Rank() != 0) unbounded.emplace();
  comm::Barrier();
}

// Set by SIGTERM / SIGINT; every rank checks the maximum over ranks after each step, so all stop together.
std::atomic<bool> g_stop_requested{false};

void RequestStop(int) {
  g_stop_requested = true;
  comm::NoteStopRequested();  // the watchdog records the failure if this rank is stuck in a collective
}

bool StopRequested() { return comm::AllReduceMax(g_stop_requested ? 1.0 : 0.0) > 0; }

// Appends the epoch's summary; its mean loss comes from the step losses, so it is right after a resume too.
void RecordEpoch(const Trainer& t, int64_t epoch, int64_t step, double seconds, int64_t steps_timed, double lr,
                 RunResult* result) {
  const int64_t first = epoch * t.steps_per_epoch;
  double total = 0;
  for (const StepLoss& s : result->step_loss()) {
    if (s.step() > first && s.step() <= step) total += s.loss();
  }
  EpochResult* e = result->add_epochs();
  e->set_epoch(static_cast<int32_t>(epoch + 1));
  e->set_global_step(step);
  e->set_mean_loss(total / std::max<int64_t>(1, step - first));
  e->set_images_per_second(steps_timed * t.config.batch_size() / std::max(seconds, 1e-9));
  e->set_lr(lr);
}

// After an epoch: the weight norm, the convergence curve's bounded evaluation (every epoch, the last included) and
// the full evaluation when eval.every_epochs asks for one before the end (the end's is RunResult.final).
// Collective.
void EvaluateEpoch(Trainer& t, int64_t epoch, int64_t step, EventWriter* events, EpochResult* record) {
  const EvalConfig& eval = t.config.eval();
  record->set_weight_norm(WeightNorm(t.encoder));
  if (events) events->AddScalar("train/weight_norm", step, record->weight_norm());
  const bool curve = eval.curve_train_samples() > 0;
  if (curve) {
    BroadcastBuffers(t.encoder);  // one model evaluated, on every rank (EvaluateAndReport does its own)
    *record->mutable_metrics() = EvaluateCurve(t.encoder, t.train, t.test, t.config);
    if (events) AddMetrics(*events, step, record->metrics(), eval, "curve/");
    if (comm::Rank() == 0) {
      const Metrics& m = record->metrics();
      LOG(INFO) << "epoch " << epoch + 1 << " curve (kNN of " << m.knn_test_samples() << " test images against "
                << m.knn_train_samples() << " train images): kNN top-1 " << m.knn_top1() << "%, uniformity "
                << m.uniformity() << ", tolerance " << m.tolerance() << ", alignment " << m.alignment()
                << ", weight norm " << record->weight_norm();
    }
  }
  const bool full = step < t.total_steps && eval.every_epochs() > 0 && (epoch + 1) % eval.every_epochs() == 0;
  if (full) {
    Metrics* metrics = curve ? record->mutable_full() : record->mutable_metrics();
    *metrics = EvaluateAndReport(t, "after epoch " + std::to_string(epoch + 1));
    if (events) AddMetrics(*events, step, *metrics, eval);
  }
  if (events) events->Flush();
  if (curve || full) WaitForRankZero();
}

// Collective. The checkpoint holds rank 0's running statistics, and so, from here on, does every rank: a run
// resumed from it goes on exactly as this one does.
void Checkpoint(Trainer& t, const TrainingState& state) {
  BroadcastBuffers(t.encoder);
  if (comm::Rank() == 0) {
    SaveCheckpoint(t.config.out_dir() + "/checkpoint.pt", t.config, t.encoder, *t.optimizer, state);
  }
}

// A rank other than 0 must see the checkpoint that rank 0 found; when it does not, the sentence says where to look.
void RequireReadable(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) {
    throw UserError("rank " + std::to_string(comm::Rank()) + " cannot read the checkpoint " + path +
                    " that rank 0 resumes from (" + std::strerror(errno) +
                    "): out_dir must be on a file system that every rank shares");
  }
}

// Loads out_dir/checkpoint.pt when resuming and it exists, as rank 0 decides for every rank: ranks that looked for
// themselves could disagree (a lagging shared file system, an out_dir on each node's own disk) and then enter
// different collectives. Collective: every rank reads the same file, and a rank that cannot fails them all.
TrainingState Restore(Trainer& t, const TrainOptions& options) {
  TrainingState state;
  const std::string path = t.config.out_dir() + "/checkpoint.pt";
  std::error_code ignored;
  torch::Tensor resume = torch::tensor(
      {comm::Rank() == 0 && options.resume && std::filesystem::exists(path, ignored) ? 1 : 0}, torch::kLong);
  comm::Broadcast(resume, 0);
  if (resume.item<int64_t>() == 0) return state;
  Collectively([&] {
    if (comm::Rank() != 0) RequireReadable(path);
    LoadCheckpoint(path, t.config, t.device, t.encoder, *t.optimizer, &state);
  });
  if (state.bank.defined()) t.bank = state.bank.to(t.device);
  if (comm::Rank() == 0) LOG(INFO) << "resumed from " << path << " at global step " << state.step;
  return state;
}

// A non-finite loss ends the run on every rank together (every rank sees the same all-reduced loss). %g-style
// numbers: a tau of 1e-7 must not read as 0.000000.
CollectiveError NonFiniteLoss(double loss, int64_t step, int64_t epoch, double lr, double tau) {
  std::ostringstream message;
  message << "the loss became " << (std::isnan(loss) ? "NaN" : "infinite") << " at global step " << step + 1
          << " (epoch " << epoch + 1 << ", lr " << lr << ", tau " << tau << ")";
  return CollectiveError(message.str(), comm::Rank() == 0);
}

RunResult TrainAndEvaluate(const RunConfig& config, const TrainOptions& options, ResultFile& file) {
  const Clock::time_point run_start = Clock::now();
  at::set_num_threads(ThreadsPerRank(config));
  if (comm::Rank() == 0) LogConfig(config);
  Trainer t = Setup(config);
  TrainingState state = Restore(t, options);
  std::unique_ptr<EventWriter> events;
  if (comm::Rank() == 0) events = std::make_unique<EventWriter>(config.out_dir());
  RunResult& result = state.result;
  const double wall_before = result.wall_seconds();  // of the attempts before a resume
  *result.mutable_config() = config;
  result.set_world_size(comm::Size());
  result.set_status(RunResult::RUNNING);
  file.Write(result);
  if (state.step == 0 && config.eval().at_init()) {
    *result.mutable_initial() = EvaluateAndReport(t, "at initialisation");
  }
  if (state.step == 0 && config.eval().raw_pixel_knn() && comm::Rank() == 0) {
    result.set_raw_pixel_knn_top1(RawPixelKnnTop1(t.train, t.test, config.eval()));
  }
  if (state.step == 0 && (config.eval().at_init() || config.eval().raw_pixel_knn())) WaitForRankZero();
  std::signal(SIGTERM, RequestStop);
  std::signal(SIGINT, RequestStop);

  t.encoder->train();
  const int64_t epochs = (t.total_steps + t.steps_per_epoch - 1) / t.steps_per_epoch;
  const int64_t checkpoint_every = config.checkpoint_every_steps() > 0 ? config.checkpoint_every_steps()
                                                                        : t.steps_per_epoch;
  double train_seconds = result.train_seconds();
  InputOptions input_options;
  input_options.global_batch = config.batch_size();
  input_options.steps_per_epoch = t.steps_per_epoch;
  input_options.rank = comm::Rank();
  input_options.world = comm::Size();
  input_options.seed = config.seed();
  input_options.views = config.loss().negatives() == LossConfig::MEMORY_BANK ? 1 : 2;
  input_options.augment = t.augment;
  Prefetcher inputs(MakeStepInputs(t.train, input_options), state.step, t.total_steps, config.data().prefetch_steps());
  Clock::time_point epoch_start = Clock::now(), window_start = epoch_start;
  int64_t epoch_steps_timed = 0, window_steps = 0;
  double lr = 0;
  for (int64_t& step = state.step; step < t.total_steps;) {
    const int64_t epoch = step / t.steps_per_epoch;
    lr = LearningRate(config.optim(), step, t.steps_per_epoch, t.total_steps);
    const double loss = Step(t, inputs.Next(), lr);
    if (!std::isfinite(loss)) throw NonFiniteLoss(loss, step, epoch, lr, config.loss().tau());
    ++step;
    ++epoch_steps_timed;
    ++window_steps;
    StepLoss* entry = result.add_step_loss();
    entry->set_step(step);
    entry->set_loss(loss);
    if (comm::Rank() == 0 && (step % config.log_every_steps() == 0 || step == t.total_steps)) {
      const double rate = window_steps * config.batch_size() / SecondsSince(window_start);
      const double eta = (t.total_steps - step) * config.batch_size() / rate;
      std::ostringstream line;
      line << "step " << step << "/" << t.total_steps << "  epoch " << epoch + 1 << "/" << epochs << "  loss "
           << loss << "  lr " << lr << "  " << static_cast<int64_t>(rate) << " img/s  ETA " << FormatDuration(eta);
      ReportProgress(line.str(), static_cast<double>(step) / t.total_steps);
      WriteProgress(config, step, t.total_steps, epoch + 1, loss, rate, eta);
      events->AddScalar("train/loss", step, loss);
      events->AddScalar("train/lr", step, lr);
      events->AddScalar("train/tau", step, config.loss().tau());
      events->AddScalar("train/images_per_second", step, rate);
      AddSimilarityHistograms(*events, step, t.anchors, t.candidates, t.positive, t.exclude);
      events->Flush();
      window_start = Clock::now();
      window_steps = 0;
    }
    const bool epoch_done = step % t.steps_per_epoch == 0 || step == t.total_steps;
    if (epoch_done) {
      const double seconds = SecondsSince(epoch_start);
      train_seconds += seconds;
      RecordEpoch(t, epoch, step, seconds, epoch_steps_timed, lr, &result);
      EvaluateEpoch(t, epoch, step, events.get(), result.mutable_epochs(result.epochs_size() - 1));
      epoch_start = Clock::now();
      epoch_steps_timed = 0;
    }
    result.set_global_steps(step);
    result.set_train_seconds(train_seconds + (epoch_done ? 0 : SecondsSince(epoch_start)));
    const bool stop = StopRequested();
    if (stop || step % checkpoint_every == 0 || step == t.total_steps) {
      state.bank = t.bank;
      Checkpoint(t, state);
      file.Write(result);
    }
    if (stop && step < t.total_steps) {
      if (comm::Rank() == 0) LOG(WARNING) << "stopped by a signal at global step " << step << "; checkpoint written";
      result.set_status(RunResult::INTERRUPTED);
      result.set_wall_seconds(wall_before + SecondsSince(run_start));
      file.Write(result);
      return result;
    }
  }

  *result.mutable_final() = EvaluateAndReport(t, "at the end");
  if (!result.epochs().empty() && config.eval().curve_train_samples() == 0) {
    *result.mutable_epochs()->rbegin()->mutable_metrics() = result.final();
  }
  if (events) {
    AddMetrics(*events, result.global_steps(), result.final(), config.eval());
    events->Flush();
  }
  // The evaluated model: EvaluateAndReport gave every rank rank 0's running statistics.
  if (comm::Rank() == 0) torch::save(t.encoder, config.out_dir() + "/model.pt");
  result.set_train_seconds(train_seconds);
  result.set_images_per_second(result.global_steps() * config.batch_size() / std::max(train_seconds, 1e-9));
  result.set_wall_seconds(wall_before + SecondsSince(run_start));
  result.set_status(RunResult::FINISHED);
  file.Write(result);
  return result;
}

}  // namespace

RunResult Train(const RunConfig& config, const TrainOptions& options) {
  comm::SetCollectiveTimeout(config.collective_timeout_seconds() > 0 ? config.collective_timeout_seconds()
                                                                     : comm::kDefaultCollectiveTimeoutSeconds);
  ResultFile file(config);
  try {
    return TrainAndEvaluate(config, options, file);
  } catch (const std::exception& e) {
    // Rank 0 records the failure (a non-finite loss, an error of its own) before the error reaches main.
    file.Fail(e.what());
    throw;
  }
}

void TuneAllocator() {
  mallopt(M_MMAP_MAX, 0);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
}

}  // namespace tempered
